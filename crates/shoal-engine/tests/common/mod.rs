//! Running a download from tests: with a deadline, collecting every event it sent.

#![allow(dead_code)] // Each test file uses its own part of this module.

pub(crate) mod swarm;

use std::time::Duration;

use shoal_engine::{download, CancellationToken, DownloadError, DownloadOptions, Event, Summary};
use tokio::sync::mpsc;

pub(crate) async fn get(o: DownloadOptions) -> (Result<Summary, DownloadError>, Vec<Event>) {
    get_until(o, |_| false).await
}

/// Runs a download, cancelling it once `stop` says so about a progress event.
pub(crate) async fn get_until(
    o: DownloadOptions,
    stop: impl Fn(&Event) -> bool,
) -> (Result<Summary, DownloadError>, Vec<Event>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let run = tokio::spawn(download(o, tx, cancel.clone()));
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if stop(&event) {
            cancel.cancel();
        }
        events.push(event);
    }
    let result = tokio::time::timeout_at(deadline, run)
        .await
        .expect("download finished within a minute")
        .expect("no panic");
    (result, events)
}
