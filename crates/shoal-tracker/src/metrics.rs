//! Prometheus metrics in the text exposition format, and the middleware that records every
//! request (count by route, method and status; latency histogram by route) and logs it. Counts
//! are per process: Prometheus sums them over tracker replicas.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use shoal_core::metrics::{Exposition, Histogram, Kind};
use tracing::Instrument;

use crate::store::{Store, StoreStats};
use crate::AppState;

#[derive(Debug, Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    latency: Histogram,
}

/// The counters `/metrics` reports for this process: requests by route, method and status,
/// latencies by route, and accepted reports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// route → method → stats; routes are the matched patterns, so the label set is bounded.
    routes: Mutex<HashMap<String, BTreeMap<String, RouteStats>>>,
    /// Accepted reports of peers that served a bad piece.
    reports: AtomicU64,
}

impl Metrics {
    /// Counts one accepted report of a peer that served a bad piece.
    pub fn count_report(&self) {
        self.reports.fetch_add(1, Ordering::Relaxed);
    }

    fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let methods = match routes.get_mut(route) {
            Some(methods) => methods,
            None => routes.entry(route.to_string()).or_default(),
        };
        let stats = match methods.get_mut(method) {
            Some(stats) => stats,
            None => methods.entry(method.to_string()).or_default(),
        };
        *stats.by_status.entry(status).or_default() += 1;
        stats.latency.observe(elapsed);
    }

    /// The Prometheus text exposition of every counter, plus the store's gauges from `store`.
    pub fn render(&self, store: StoreStats) -> String {
        let mut out = Exposition::new();
        let gauges = [
            (
                "agents",
                "Agents registered, until a sweep drops lapsed ones.",
                Some(store.agents),
            ),
            ("contents", "Contents in the catalog.", Some(store.contents)),
            ("manifests", "Published manifests.", Some(store.manifests)),
            ("holdings", "Holdings of registered agents.", store.holdings),
            (
                "swarms",
                "URL swarms, until a sweep drops lapsed ones.",
                Some(store.swarms),
            ),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            out.single(&format!("shoal_tracker_{name}"), Kind::Gauge, help, value);
        }
        out.single(
            "shoal_tracker_reports_total",
            Kind::Counter,
            "Reports of peers that served a bad piece.",
            self.reports.load(Ordering::Relaxed),
        );
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sorted: Vec<_> = routes.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));

        let requests = "shoal_tracker_requests_total";
        out.family(
            requests,
            Kind::Counter,
            "Requests by route, method and status.",
        );
        for (route, methods) in &sorted {
            for (method, stats) in methods.iter() {
                for (status, n) in &stats.by_status {
                    let status = status.to_string();
                    let labels = [
                        ("route", route.as_str()),
                        ("method", method),
                        ("status", &status),
                    ];
                    out.sample(requests, &labels, n);
                }
            }
        }
        let latency = "shoal_tracker_request_duration_seconds";
        out.family(latency, Kind::Histogram, "Request latency.");
        for (route, methods) in &sorted {
            for (method, stats) in methods.iter() {
                let labels = [("route", route.as_str()), ("method", method.as_str())];
                out.histogram(latency, &labels, &stats.latency);
            }
        }
        out.finish()
    }
}

/// Records and logs every request. The log line carries the route pattern and the token's
/// name, never the token or the query string.
pub async fn track<S: Store>(
    State(state): State<AppState<S>>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = request.method().clone();
    let span = tracing::debug_span!("request", %method, route, token = tracing::field::Empty);
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    state
        .shared
        .metrics
        .record(route, method.as_str(), status, elapsed);
    span.in_scope(|| {
        tracing::debug!(status, micros = elapsed.as_micros() as u64, "served");
    });
    response
}
