//! One download from start to rename: probe, choose the path, run the connections, verify.

use std::path::Path;
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use url::Url;

use shoal_core::Bitfield;

use crate::checkpoint::Checkpoint;
use crate::error::DownloadError;
use crate::events::{Event, EventSender, SourceUsage, Summary};
use crate::http::{self, FetchError, Probe, RangeSource};
use crate::naming;
use crate::options::{
    Digests, DownloadOptions, Existing, OriginUse, Output, Resume, SwarmOptions, BLOCK,
};
use crate::redact::redacted;
use crate::resume::{self, State};
use crate::retry::Backoff;
use crate::segments::Segments;
use crate::single;
use crate::storage::{self, ExistingPart, PartFile};
use crate::transfer::{self, Role, Transfer};
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
    let client = http::client(&options.http).map_err(|e| network(&options.url, &e, 1))?;
    if let Some(swarm) = &options.swarm {
        return run_swarm(&options, swarm, client, &events, &cancel, started).await;
    }
    let Probed {
        probe,
        mirrors,
        dropped: mut unused,
    } = probe_sources(&client, &options, &events, &cancel).await?;
    let path = match &options.output {
        Output::File(path) => path.clone(),
        Output::Dir(dir) => {
            // As wget -P and aria2c -d do: a directory that does not exist yet is made.
            std::fs::create_dir_all(dir)
                .map_err(|e| DownloadError::io(dir, "create directory", e))?;
            dir.join(naming::file_name(
                probe.content_disposition.as_deref(),
                &probe.url,
            ))
        }
    };
    refuse_existing(&path, options.existing)?;
    info!(url = %redacted(&probe.url), size = ?probe.size, ranges = probe.ranges, "probed");
    let _ = events.send(Event::Started {
        url: redacted(&probe.url),
        path: path.clone(),
        size: probe.size,
        ranges: probe.ranges,
    });
    let state_path = resume::state_path(&path);
    let attempt = Attempt {
        options: &options,
        client: &client,
        events: &events,
        cancel: &cancel,
        path: &path,
        state_path: &state_path,
    };
    let (part, outcome) = match attempt.run(probe, mirrors, options.resume).await {
        // `If-Range` kept the new version out of the `.part`; the old bytes are worthless now.
        // Once: a file that keeps changing is better fetched later than chased.
        Err(DownloadError::Changed { .. }) => {
            let reason = format!(
                "the file on the server changed while downloading; starting {} over",
                storage::part_path(&path).display()
            );
            info!(%reason);
            let _ = events.send(Event::Restarted { reason });
            let again = probe_sources(&client, &options, &events, &cancel).await?;
            unused = again.dropped;
            let (probe, mirrors) = (again.probe, again.mirrors);
            let _ = events.send(Event::Started {
                url: redacted(&probe.url),
                path: path.clone(),
                size: probe.size,
                ranges: probe.ranges,
            });
            attempt.run(probe, mirrors, Resume::Never).await?
        }
        other => other?,
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
            // The bytes are known to be wrong: nothing of them is worth resuming.
            let _ = resume::remove(&state_path);
            return Err(DownloadError::ChecksumMismatch {
                path: path.clone(),
                algo: algo.to_string(),
                expected: expected.hex(),
                actual,
                sources: outcome
                    .sources
                    .iter()
                    .filter(|s| s.bytes > 0)
                    .map(|s| s.url.clone())
                    .collect(),
            });
        }
    }
    let path = commit(part, options.existing, &state_path)?;
    Ok(Summary {
        path,
        size: outcome.size,
        elapsed: started.elapsed(),
        max_connections: outcome.max_connections,
        fetched: outcome.fetched,
        sources: outcome.sources.into_iter().chain(unused).collect(),
    })
}

/// A swarm download: the manifest gives the size, so nothing is probed; peers (and the origin,
/// as a fallback) are sources of one segmented transfer in which every piece is verified.
async fn run_swarm(
    options: &DownloadOptions,
    swarm: &SwarmOptions,
    client: reqwest::Client,
    events: &EventSender,
    cancel: &CancellationToken,
    started: Instant,
) -> Result<Summary, DownloadError> {
    let size = swarm.layout.size();
    let path = match &options.output {
        Output::File(path) => path.clone(),
        Output::Dir(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| DownloadError::io(dir, "create directory", e))?;
            dir.join(naming::file_name(None, &options.url))
        }
    };
    refuse_existing(&path, options.existing)?;
    let options = options.clone();
    let _ = events.send(Event::Started {
        url: redacted(&options.url),
        path: path.clone(),
        size: Some(size),
        ranges: true,
    });
    let state_path = resume::state_path(&path);
    let record = State {
        url_hash: resume::url_hash(&options.url),
        size,
        block: BLOCK,
        // The digests name the bytes: a state for other bytes never matches.
        etag: Some(swarm_tag(swarm)),
        last_modified: None,
        done: Bitfield::new(0),
    };
    let previous = match options.resume {
        Resume::Auto if size > 0 => previous_run(&path, &state_path, &record, &options, events)?,
        Resume::Auto | Resume::Never => None,
    };
    let (part, done) = match previous {
        Some((part, done)) => (part, done),
        None => {
            resume::remove(&state_path).map_err(|e| DownloadError::io(&state_path, "remove", e))?;
            resume::sync_dir(&state_path);
            (
                PartFile::create(&path, Some(size))?,
                Bitfield::new(block_count(size)),
            )
        }
    };
    let part = Arc::new(part);
    let outcome = if size == 0 {
        transfer::Outcome {
            size: 0,
            max_connections: 0,
            fetched: 0,
            sources: Vec::new(),
        }
    } else {
        let origin = match &swarm.origin {
            OriginUse::Never => Vec::new(),
            OriginUse::Fallback { validator, .. } => vec![(
                RangeSource {
                    client,
                    url: options.url.clone(),
                    size,
                    validator: validator.clone(),
                },
                Role::SwarmOrigin,
            )],
        };
        let checkpoint = Checkpoint::new(
            part.clone(),
            state_path.clone(),
            State {
                done: done.clone(),
                ..record
            },
        );
        let transfer = Transfer {
            options: Arc::new(options.clone()),
            part: part.clone(),
            events: events.clone(),
            cancel: cancel.clone(),
        };
        transfer::segmented(transfer, size, origin, None, done, checkpoint).await?
    };
    part.finish(size)?;
    let path = commit(part, options.existing, &state_path)?;
    Ok(Summary {
        path,
        size,
        elapsed: started.elapsed(),
        max_connections: outcome.max_connections,
        fetched: outcome.fetched,
        sources: outcome.sources,
    })
}

/// What the resume state of a swarm download records as its validator: the content id, or
/// for a swarm still learning its digests, its layout (the URL hash names the version).
fn swarm_tag(swarm: &SwarmOptions) -> String {
    match &swarm.digests {
        Digests::Manifest(m) => m.id().to_string(),
        Digests::Published(_) => format!(
            "swarm:{}:{}",
            swarm.layout.size(),
            swarm.layout.piece_size()
        ),
    }
}

/// Gives the complete, verified `.part` its final name, then drops its resume state.
fn commit(
    part: Arc<PartFile>,
    existing: Existing,
    state_path: &Path,
) -> Result<std::path::PathBuf, DownloadError> {
    let part = Arc::try_unwrap(part).expect("every connection has stopped");
    let path = part.commit(existing)?;
    resume::remove(state_path).map_err(|e| DownloadError::io(state_path, "remove", e))?;
    resume::sync_dir(state_path);
    Ok(path)
}

/// What one attempt at the bytes needs: an attempt is repeated from scratch when the file
/// changes on the server mid-way.
struct Attempt<'a> {
    options: &'a DownloadOptions,
    client: &'a reqwest::Client,
    events: &'a EventSender,
    cancel: &'a CancellationToken,
    path: &'a Path,
    state_path: &'a Path,
}

impl Attempt<'_> {
    /// Continues a previous run's `.part` when `resume` allows and it is usable, else starts a
    /// new one, and fetches what is missing.
    async fn run(
        &self,
        probe: Probe,
        mirrors: Vec<RangeSource>,
        resume: Resume,
    ) -> Result<(Arc<PartFile>, transfer::Outcome), DownloadError> {
        let (options, path, state_path) = (self.options, self.path, self.state_path);
        let record = State {
            url_hash: resume::url_hash(&options.url),
            size: probe.size.unwrap_or(0),
            block: BLOCK,
            etag: probe.etag.clone(),
            last_modified: probe.last_modified.clone(),
            done: Bitfield::new(0),
        };
        let resumable = probe.ranges && probe.size.is_some_and(|size| size > 0);
        let previous = match resume {
            Resume::Auto if resumable => {
                previous_run(path, state_path, &record, options, self.events)?
            }
            Resume::Auto | Resume::Never => None,
        };
        let (part, done) = match previous {
            Some((part, done)) => (part, Some(done)),
            None => {
                // The old state goes first: a crash before the new `.part` has its own state
                // leaves a `.part` without one, which is never trusted.
                resume::remove(state_path)
                    .map_err(|e| DownloadError::io(state_path, "remove", e))?;
                resume::sync_dir(state_path);
                (PartFile::create(path, probe.size)?, None)
            }
        };
        let part = Arc::new(part);
        let transfer = Transfer {
            options: Arc::new(options.clone()),
            part: part.clone(),
            events: self.events.clone(),
            cancel: self.cancel.clone(),
        };
        let outcome = match (probe.ranges, probe.size) {
            (true, Some(size)) if size > 0 => {
                let source = RangeSource {
                    client: self.client.clone(),
                    url: probe.url.clone(),
                    size,
                    validator: probe.validator.clone(),
                };
                let done = done.unwrap_or_else(|| Bitfield::new(block_count(size)));
                let record = State {
                    done: done.clone(),
                    ..record
                };
                let checkpoint = Checkpoint::new(part.clone(), state_path.to_path_buf(), record);
                let sources = std::iter::once(source)
                    .chain(mirrors)
                    .map(|s| (s, Role::Whole))
                    .collect();
                transfer::segmented(
                    transfer,
                    size,
                    sources,
                    Some((probe.response, probe.start)),
                    done,
                    checkpoint,
                )
                .await?
            }
            // An empty file: the probe's 416 body is an error page, not content.
            (_, Some(0)) => transfer::Outcome {
                size: 0,
                max_connections: 1,
                fetched: 0,
                sources: Vec::new(),
            },
            _ => single::run(transfer, self.client.clone(), probe).await?,
        };
        Ok((part, outcome))
    }
}

/// Where the probe should start: the first missing byte of a previous run's `.part`, when its
/// state is there for this URL (checked in full only after the probe, by `previous_run`), else
/// 0. With `-d`, the name the URL gives is assumed; a `Content-Disposition` name that differs
/// only costs the probe's response.
fn resume_offset(options: &DownloadOptions) -> u64 {
    if options.resume == Resume::Never {
        return 0;
    }
    let path = match &options.output {
        Output::File(path) => path.clone(),
        Output::Dir(dir) => dir.join(naming::file_name(None, &options.url)),
    };
    match resume::load(&resume::state_path(&path)) {
        Ok(Some(state)) if state.url_hash == resume::url_hash(&options.url) => {
            (0..state.done.len())
                .find(|&block| !state.done.get(block))
                .map_or(0, |block| u64::from(block) * state.block)
        }
        _ => 0,
    }
}

fn block_count(size: u64) -> u32 {
    u32::try_from(size.div_ceil(BLOCK)).expect("files up to 2^63 bytes have < 2^32 blocks")
}

/// What a previous run left, if it can be continued: the open `.part` and its done blocks.
/// Anything else is reported as [`Event::Restarted`] with the reason, and the download starts
/// over; a state that fails any check is never trusted.
fn previous_run(
    path: &Path,
    state_path: &Path,
    now: &State,
    options: &DownloadOptions,
    events: &EventSender,
) -> Result<Option<(PartFile, Bitfield)>, DownloadError> {
    let part_path = storage::part_path(path);
    let restart = |reason: String| {
        info!(%reason, "starting over");
        let _ = events.send(Event::Restarted { reason });
        Ok(None)
    };
    let state = match resume::load(state_path) {
        Ok(Some(state)) => state,
        Ok(None) if part_path.exists() => {
            return restart(format!(
                "{} has no resume state ({}), so its bytes cannot be trusted; starting over",
                part_path.display(),
                state_path.display()
            ))
        }
        Ok(None) => return Ok(None),
        Err(damaged) => {
            return restart(format!(
                "the resume state {} {damaged}; starting over",
                state_path.display()
            ))
        }
    };
    if let Some(why) = mismatch(&state, now) {
        return restart(format!("{why}; starting {} over", part_path.display()));
    }
    let part = match PartFile::open_existing(path, state.size) {
        Ok(part) => part,
        Err(ExistingPart::Missing) => {
            return restart(format!(
                "the resume state {} has no {} beside it; starting over",
                state_path.display(),
                part_path.display()
            ))
        }
        Err(ExistingPart::WrongLength { len }) => {
            return restart(format!(
                "{} is {len} bytes, not the {} its resume state records; starting over",
                part_path.display(),
                state.size
            ))
        }
        Err(ExistingPart::Failed(e)) => return Err(e),
    };
    let has_validators = state.etag.is_some() || state.last_modified.is_some();
    let done_bytes =
        Segments::resume(state.size, options.min_split.get(), state.done.clone()).done_bytes();
    info!(done = done_bytes, has_validators, "resuming");
    let _ = events.send(Event::Resumed {
        done: done_bytes,
        total: state.size,
        verified: has_validators || options.checksum.is_some(),
    });
    Ok(Some((part, state.done)))
}

/// Why the state on disk does not describe the file the server has now, if it does not.
fn mismatch(old: &State, now: &State) -> Option<String> {
    if old.url_hash != now.url_hash {
        return Some("the resume state is for another URL".to_string());
    }
    if old.block != now.block {
        return Some(format!(
            "the resume state counts blocks of {} bytes, this shoal {}",
            old.block, now.block
        ));
    }
    if old.size != now.size {
        return Some(format!(
            "the file on the server changed size (was {} bytes, now {})",
            old.size, now.size
        ));
    }
    if old.etag != now.etag || old.last_modified != now.last_modified {
        return Some(format!(
            "the file on the server changed (ETag {} → {}, Last-Modified {} → {})",
            shown(&old.etag),
            shown(&now.etag),
            shown(&old.last_modified),
            shown(&now.last_modified)
        ));
    }
    None
}

fn shown(validator: &Option<String>) -> &str {
    validator.as_deref().unwrap_or("none")
}

fn refuse_existing(path: &Path, existing: Existing) -> Result<(), DownloadError> {
    if existing == Existing::Refuse && path.exists() {
        return Err(DownloadError::OutputExists {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Probes the URL and every mirror at once. The first URL, in the order given, that answers
/// becomes the primary: its response streams as the first segment and names the file. Mirrors
/// that fail, serve another size than most, or cannot do ranges are dropped with a
/// [`Event::SourceDropped`]; the rest become range sources beside the primary.
async fn probe_sources(
    client: &reqwest::Client,
    options: &DownloadOptions,
    events: &EventSender,
    cancel: &CancellationToken,
) -> Result<Probed, DownloadError> {
    if options.mirrors.is_empty() {
        let probe = probe_with_retries(client, &options.url, options, events, cancel).await?;
        if let Some(expected) = options.expected_size.filter(|&e| probe.size != Some(e)) {
            let served = probe
                .size
                .map_or("an unknown number of".to_string(), |s| s.to_string());
            let detail = format!("serves {served} bytes where {expected} were expected");
            return Err(network(&options.url, &FetchError::Protocol(detail), 1));
        }
        return Ok(Probed {
            probe,
            mirrors: Vec::new(),
            dropped: Vec::new(),
        });
    }
    let urls: Vec<Url> = std::iter::once(options.url.clone())
        .chain(options.mirrors.iter().cloned())
        .collect();
    let mut probes = tokio::task::JoinSet::new();
    for (i, url) in urls.iter().cloned().enumerate() {
        let (client, options, events, cancel) = (
            client.clone(),
            options.clone(),
            events.clone(),
            cancel.clone(),
        );
        probes.spawn(async move {
            let r = probe_with_retries(&client, &url, &options, &events, &cancel).await;
            (i, r)
        });
    }
    let mut results: Vec<Option<Result<Probe, DownloadError>>> =
        urls.iter().map(|_| None).collect();
    while let Some(joined) = probes.join_next().await {
        let (i, r) = joined.expect("probes do not panic");
        results[i] = Some(r);
    }
    let results: Vec<Result<Probe, DownloadError>> = results
        .into_iter()
        .map(|r| r.expect("every probe reported"))
        .collect();
    if results
        .iter()
        .any(|r| matches!(r, Err(DownloadError::Cancelled)))
    {
        return Err(DownloadError::Cancelled);
    }
    // The size given (from a Metalink), else the one most mirrors agree on; on a tie, the
    // earliest URL's.
    let sizes: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().filter(|p| p.ranges).and_then(|p| p.size))
        .collect();
    let size = options.expected_size.or_else(|| {
        sizes.iter().copied().max_by_key(|s| {
            (
                sizes.iter().filter(|t| *t == s).count(),
                std::cmp::Reverse(sizes.iter().position(|t| t == s)),
            )
        })
    });
    let mut dropped = Vec::new();
    let mut drop_source = |url: &Url, reason: String| {
        info!(url = %redacted(url), %reason, "mirror dropped");
        let _ = events.send(Event::SourceDropped {
            url: redacted(url),
            reason: reason.clone(),
        });
        dropped.push(SourceUsage {
            url: redacted(url),
            bytes: 0,
            dropped: Some(reason),
        });
    };
    let mut primary: Option<Probe> = None;
    let mut mirrors = Vec::new();
    let mut first_error = None;
    for (url, result) in urls.iter().zip(results) {
        let probe = match result {
            Ok(probe) => probe,
            Err(e) => {
                drop_source(url, e.to_string());
                first_error.get_or_insert(e);
                continue;
            }
        };
        match (probe.ranges, probe.size, size) {
            (true, Some(s), Some(agreed)) if s != agreed => {
                drop_source(
                    url,
                    format!("serves {s} bytes where the others serve {agreed}"),
                );
            }
            (true, Some(s), _) if primary.is_some() => mirrors.push(RangeSource {
                client: client.clone(),
                url: probe.url.clone(),
                size: s,
                validator: probe.validator.clone(),
            }),
            _ if primary.is_none() => primary = Some(probe),
            _ => drop_source(url, "does not serve byte ranges".to_string()),
        }
    }
    match primary {
        Some(probe) => {
            if !probe.ranges && !mirrors.is_empty() {
                drop_source(&probe.url, "does not serve byte ranges".to_string());
                // A mirror that does ranges is worth more than a primary that does not.
                let first = mirrors.remove(0);
                let probe = probe_with_retries(client, &first.url, options, events, cancel).await?;
                return Ok(Probed {
                    probe,
                    mirrors,
                    dropped,
                });
            }
            Ok(Probed {
                probe,
                mirrors,
                dropped,
            })
        }
        None => Err(first_error.expect("no primary means every probe failed")),
    }
}

/// What probing found: the primary, the mirrors beside it, and the URLs left out.
struct Probed {
    probe: Probe,
    mirrors: Vec<RangeSource>,
    dropped: Vec<SourceUsage>,
}

async fn probe_with_retries(
    client: &reqwest::Client,
    url: &Url,
    options: &DownloadOptions,
    events: &EventSender,
    cancel: &CancellationToken,
) -> Result<Probe, DownloadError> {
    let from = resume_offset(options);
    let mut backoff = Backoff::default();
    let mut tries = 0;
    loop {
        tries += 1;
        let result = tokio::select! {
            _ = cancel.cancelled() => return Err(DownloadError::Cancelled),
            r = http::probe(client, url, from) => r,
        };
        let error = match result {
            Ok(probe) => return Ok(probe),
            Err(e) => e,
        };
        if error.is_fatal() || tries >= options.max_tries {
            return Err(network(url, &error, tries));
        }
        let wait = backoff.next(error.slow_down().flatten());
        debug!(tries, ?wait, error = %error.describe(), "probe failed, retrying");
        let _ = events.send(Event::Retry {
            attempt: tries,
            reason: error.describe(),
            after: wait,
        });
        tokio::select! {
            _ = cancel.cancelled() => return Err(DownloadError::Cancelled),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The error a user sees for a request that failed for good.
pub(crate) fn network(url: &Url, error: &FetchError, tries: u32) -> DownloadError {
    let url = redacted(url);
    match error {
        FetchError::Changed => DownloadError::Changed { url },
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
