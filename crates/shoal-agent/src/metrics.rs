//! The agent's `/metrics` (Prometheus text format) and `/healthz`, on its listener beside the
//! piece server's routes. Both read what is kept as things happen (counters of the piece
//! server, the fetcher, the object store and the tracker client; the data directory's last
//! check), so a scrape costs the same during a download as at rest and does no I/O. Like the
//! tracker's, they take no token: they say how much moved, not what.
//!
//! `/healthz` answers 200 `ok` while the agent can do its job, and 503 with one line per
//! reason when it cannot: its data directory does not take writes, or its tracker has not
//! answered for longer than the lease it granted (the agent's holdings have lapsed there, so
//! no peer finds its pieces).

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use shoal_core::metrics::{Exposition, Kind, CONTENT_TYPE};
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, Provenance};
use crate::fetch::Fetcher;
use crate::objects::Objects;
use crate::serve::PieceServer;
use crate::tracker::TrackerClient;

/// How often the data directory is checked for writes.
pub const DATA_CHECK_EVERY: Duration = Duration::from_secs(10);
/// The file the check writes and removes in the data directory.
const PROBE_FILE: &str = ".healthz-probe";

/// Whether the data directory takes writes, as last checked; cheap to clone.
#[derive(Clone)]
pub struct DataCheck {
    dir: PathBuf,
    /// Why the last check failed; `None` when it passed.
    problem: Arc<Mutex<Option<String>>>,
}

impl DataCheck {
    /// A check of `dir`, healthy until first checked.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            problem: Arc::default(),
        }
    }

    /// Writes, syncs and removes a small file in the directory, off the async threads.
    pub async fn check(&self) {
        let dir = self.dir.clone();
        let result = tokio::task::spawn_blocking(move || {
            let path = dir.join(PROBE_FILE);
            let written = std::fs::File::create(&path)
                .and_then(|mut file| {
                    file.write_all(b"ok\n")?;
                    file.sync_data()
                })
                .and_then(|()| std::fs::remove_file(&path));
            written.map_err(|e| {
                format!(
                    "the data directory {} cannot be written ({e}); fix its permissions or \
                     free space there",
                    dir.display()
                )
            })
        })
        .await
        .unwrap_or_else(|e| Err(format!("checking the data directory failed: {e}")));
        if let Err(problem) = &result {
            tracing::warn!("{problem}");
        }
        *self.problem.lock().unwrap_or_else(PoisonError::into_inner) = result.err();
    }

    /// Checks every [`DATA_CHECK_EVERY`] until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(DATA_CHECK_EVERY) => self.check().await,
            }
        }
    }

    fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What `/metrics` and `/healthz` read.
#[derive(Clone)]
pub struct Observed {
    /// Bytes sent to peers, uploads in progress.
    pub server: PieceServer,
    /// Bytes received, pieces checked, downloads in progress.
    pub fetcher: Fetcher,
    /// Evictions.
    pub objects: Objects,
    /// Fetched contents held, for the cache's size.
    pub catalog: Catalog,
    /// Request latency and failures, and how long it has been unreachable; `None` without a
    /// tracker.
    pub tracker: Option<TrackerClient>,
    /// Whether the data directory takes writes.
    pub data: DataCheck,
}

/// The `/metrics` and `/healthz` routes, to merge beside the piece server's.
pub fn app(observed: Observed) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(Arc::new(observed))
}

async fn metrics(State(o): State<Arc<Observed>>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&o)).into_response()
}

async fn healthz(State(o): State<Arc<Observed>>) -> Response {
    let problems = problems(&o, Instant::now());
    if problems.is_empty() {
        return (StatusCode::OK, "ok\n").into_response();
    }
    let mut text = String::from("unhealthy\n");
    for problem in problems {
        text.push_str(&problem);
        text.push('\n');
    }
    (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
}

/// Why the agent cannot do its job now, if it cannot.
fn problems(o: &Observed, now: Instant) -> Vec<String> {
    let mut problems: Vec<String> = o.data.problem().into_iter().collect();
    if let Some(tracker) = &o.tracker {
        let (since, lease) = tracker.stats(|s| (s.unreachable_since, s.lease));
        let lease = lease.unwrap_or(DEFAULT_LEASE);
        if let Some(down) = since.map(|since| now.saturating_duration_since(since)) {
            if down > lease {
                problems.push(format!(
                    "the tracker {} has not answered for {}s, longer than its {}s lease: peers \
                     no longer find this agent's pieces; check that the tracker runs and is \
                     reachable",
                    tracker.base(),
                    down.as_secs(),
                    lease.as_secs()
                ));
            }
        }
    }
    problems
}

/// The lease assumed before the tracker granted one: the tracker's default.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);

fn render(o: &Observed) -> String {
    let mut out = Exposition::new();
    out.single(
        "shoal_agent_served_bytes_total",
        Kind::Counter,
        "Body bytes sent to peers.",
        o.server.bytes_served(),
    );
    let tally = o.fetcher.tally();
    let received = "shoal_agent_received_bytes_total";
    out.family(
        received,
        Kind::Counter,
        "Body bytes received by downloads, by source: origin (origins and mirrors) or peer.",
    );
    out.sample(received, &[("source", "origin")], tally.origin_bytes());
    out.sample(received, &[("source", "peer")], tally.peer_bytes());
    out.single(
        "shoal_agent_pieces_verified_total",
        Kind::Counter,
        "Pieces that matched their digest, or whose digest was learned from the origin.",
        tally.pieces_verified(),
    );
    out.single(
        "shoal_agent_pieces_rejected_total",
        Kind::Counter,
        "Pieces that did not match their digest and were fetched again.",
        tally.pieces_rejected(),
    );
    out.single(
        "shoal_agent_active_uploads",
        Kind::Gauge,
        "Uploads to peers in progress.",
        o.server.load(),
    );
    out.single(
        "shoal_agent_active_downloads",
        Kind::Gauge,
        "Fetches in progress, including those waiting for another's download of the same content.",
        o.fetcher.active(),
    );
    let cached: u64 = o
        .catalog
        .entries()
        .iter()
        .filter(|e| e.provenance == Provenance::Fetched && e.manifest().is_some())
        .map(|e| e.size())
        .sum();
    out.single(
        "shoal_agent_cache_bytes",
        Kind::Gauge,
        "Bytes of fetched contents kept in the data directory.",
        cached,
    );
    out.single(
        "shoal_agent_cache_evictions_total",
        Kind::Counter,
        "Contents evicted to stay within --cache-size.",
        o.objects.evictions(),
    );
    if let Some(tracker) = &o.tracker {
        tracker.stats(|stats| {
            let latency = "shoal_agent_tracker_request_duration_seconds";
            out.family(
                latency,
                Kind::Histogram,
                "Latency of requests the tracker answered, by method and route.",
            );
            for ((method, route), histogram) in &stats.latency {
                let labels = [("method", method.as_str()), ("route", route.as_str())];
                out.histogram(latency, &labels, histogram);
            }
            let errors = "shoal_agent_tracker_request_errors_total";
            out.family(
                errors,
                Kind::Counter,
                "Tracker requests that failed, by method, route and kind (unreachable, \
                 not_found, refused, id_in_use, rejected).",
            );
            for ((method, route, kind), n) in &stats.errors {
                let labels = [
                    ("method", method.as_str()),
                    ("route", route.as_str()),
                    ("kind", kind),
                ];
                out.sample(errors, &labels, n);
            }
            let down = stats
                .unreachable_since
                .map_or(0.0, |since| since.elapsed().as_secs_f64());
            out.single(
                "shoal_agent_tracker_unreachable_seconds",
                Kind::Gauge,
                "How long the tracker has not been reachable; 0 while it answers.",
                down,
            );
        });
    }
    out.finish()
}
