//! One download from start to rename: probe, choose the path, run the connections, verify.

use std::path::Path;
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::error::DownloadError;
use crate::events::{Event, EventSender, Summary};
use crate::http::{self, FetchError, Probe, RangeSource};
use crate::naming;
use crate::options::{DownloadOptions, Existing, Output};
use crate::redact::redacted;
use crate::retry::Backoff;
use crate::storage::PartFile;
use crate::transfer::{self, Transfer};
use crate::verify;

pub async fn run(
    options: DownloadOptions,
    events: EventSender,
    cancel: CancellationToken,
) -> Result<Summary, DownloadError> {
    let started = Instant::now();
    if let Output::File(path) = &options.output {
        refuse_existing(path, options.existing)?;
    }
    let client = http::client(&options.http).map_err(|e| network(&options, &e, 1))?;
    let probe = probe_with_retries(&client, &options, &cancel).await?;
    let path = match &options.output {
        Output::File(path) => path.clone(),
        Output::Dir(dir) => dir.join(naming::file_name(
            probe.content_disposition.as_deref(),
            &probe.url,
        )),
    };
    refuse_existing(&path, options.existing)?;
    info!(url = %redacted(&probe.url), size = ?probe.size, ranges = probe.ranges, "probed");
    let _ = events.send(Event::Started {
        url: redacted(&probe.url),
        path: path.clone(),
        size: probe.size,
        ranges: probe.ranges,
    });
    let part = Arc::new(PartFile::create(&path, probe.size)?);
    let transfer = || Transfer {
        options: Arc::new(options.clone()),
        part: part.clone(),
        events: events.clone(),
        cancel: cancel.clone(),
    };
    let outcome = match (probe.ranges, probe.size) {
        (true, Some(size)) if size > 0 => {
            let source = RangeSource {
                client: client.clone(),
                url: probe.url.clone(),
                size,
                validator: probe.validator.clone(),
            };
            transfer::segmented(transfer(), source, probe.response).await?
        }
        // An empty file: the probe's 416 body is an error page, not content.
        (_, Some(0)) => transfer::Outcome {
            size: 0,
            max_connections: 0,
            fetched: 0,
        },
        _ => transfer::single(transfer(), client, probe).await?,
    };
    part.finish(outcome.size)?;
    if let Some(expected) = &options.checksum {
        let _ = events.send(Event::Verifying {
            algo: expected.algo().to_string(),
        });
        let part_path = part.part().to_path_buf();
        let algo = expected.algo();
        let actual = tokio::task::spawn_blocking(move || verify::hash_file(&part_path, algo))
            .await
            .expect("hashing does not panic")?;
        if actual != expected.hex() {
            return Err(DownloadError::ChecksumMismatch {
                path: path.clone(),
                part: part.part().to_path_buf(),
                algo: algo.to_string(),
                expected: expected.hex(),
                actual,
            });
        }
    }
    let part = Arc::try_unwrap(part).expect("every connection has stopped");
    let path = part.commit(options.existing)?;
    Ok(Summary {
        path,
        size: outcome.size,
        elapsed: started.elapsed(),
        max_connections: outcome.max_connections,
        fetched: outcome.fetched,
    })
}

fn refuse_existing(path: &Path, existing: Existing) -> Result<(), DownloadError> {
    if existing == Existing::Refuse && path.exists() {
        return Err(DownloadError::OutputExists {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

async fn probe_with_retries(
    client: &reqwest::Client,
    options: &DownloadOptions,
    cancel: &CancellationToken,
) -> Result<Probe, DownloadError> {
    let mut backoff = Backoff::default();
    let mut tries = 0;
    loop {
        tries += 1;
        let result = tokio::select! {
            _ = cancel.cancelled() => return Err(DownloadError::Cancelled),
            r = http::probe(client, &options.url) => r,
        };
        let error = match result {
            Ok(probe) => return Ok(probe),
            Err(e) => e,
        };
        if error.is_fatal() || tries >= options.max_tries {
            return Err(network(options, &error, tries));
        }
        let wait = backoff.next(error.slow_down().flatten());
        debug!(tries, ?wait, error = %error.describe(), "probe failed, retrying");
        tokio::select! {
            _ = cancel.cancelled() => return Err(DownloadError::Cancelled),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The error a user sees for a request that failed for good.
pub(crate) fn network(options: &DownloadOptions, error: &FetchError, tries: u32) -> DownloadError {
    let url = redacted(&options.url);
    match error {
        FetchError::Status { status, .. } => DownloadError::HttpStatus {
            url,
            status: status.as_u16(),
        },
        other => DownloadError::Network {
            url,
            detail: other.describe(),
            tries,
        },
    }
}
