//! Prometheus metrics in the text exposition format, and the middleware that records every
//! request (count by route, method and status; latency histogram by route) and logs it. Counts
//! are per process: Prometheus sums them over tracker replicas.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::store::{Store, StoreStats};
use crate::AppState;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Debug, Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_secs: f64,
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
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            stats.buckets[i] += 1;
        }
        stats.count += 1;
        stats.sum_secs += secs;
    }

    /// The Prometheus text exposition of every counter, plus the store's gauges from `store`.
    pub fn render(&self, store: StoreStats) -> String {
        let mut out = String::new();
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
            let _ = writeln!(out, "# HELP shoal_tracker_{name} {help}");
            let _ = writeln!(out, "# TYPE shoal_tracker_{name} gauge");
            let _ = writeln!(out, "shoal_tracker_{name} {value}");
        }
        out.push_str(
            "# HELP shoal_tracker_reports_total Reports of peers that served a bad piece.\n",
        );
        out.push_str("# TYPE shoal_tracker_reports_total counter\n");
        let _ = writeln!(
            out,
            "shoal_tracker_reports_total {}",
            self.reports.load(Ordering::Relaxed)
        );
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sorted: Vec<_> = routes.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));

        out.push_str("# HELP shoal_tracker_requests_total Requests by route, method and status.\n");
        out.push_str("# TYPE shoal_tracker_requests_total counter\n");
        for (route, methods) in &sorted {
            for (method, stats) in methods.iter() {
                for (status, n) in &stats.by_status {
                    let _ = writeln!(
                        out,
                        "shoal_tracker_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        }
        out.push_str("# HELP shoal_tracker_request_duration_seconds Request latency.\n");
        out.push_str("# TYPE shoal_tracker_request_duration_seconds histogram\n");
        for (route, methods) in &sorted {
            for (method, stats) in methods.iter() {
                let labels = format!("route=\"{route}\",method=\"{method}\"");
                let mut cumulative = 0;
                for (bound, n) in BUCKETS.iter().zip(stats.buckets) {
                    cumulative += n;
                    let _ = writeln!(
                        out,
                        "shoal_tracker_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    out,
                    "shoal_tracker_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    stats.count
                );
                let _ = writeln!(
                    out,
                    "shoal_tracker_request_duration_seconds_sum{{{labels}}} {}",
                    stats.sum_secs
                );
                let _ = writeln!(
                    out,
                    "shoal_tracker_request_duration_seconds_count{{{labels}}} {}",
                    stats.count
                );
            }
        }
        out
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
