//! One download from start to rename, whatever its plan: set up the part file (continuing a
//! previous run's when it can), run the transfer, verify, commit.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use shoal_core::{Bitfield, SafeUrl};

use crate::checkpoint::Checkpoint;
use crate::error::DownloadError;
use crate::events::{Event, EventSender, SourceUsage, Summary};
use crate::http::{self, RangeSource};
use crate::naming::part_path;
use crate::options::{DownloadOptions, Existing, Output, Resume, BLOCK};
use crate::plan::{Fetch, Plan};
use crate::resume::{self, State};
use crate::sample::{self, PartCheck};
use crate::segments::{block_count, Segments};
use crate::storage::{ExistingPart, PartFile, PartLock, Store};
use crate::stream::Ring;
use crate::transfer::{self, single, Outcome, Transfer};
use crate::verify;

pub(crate) async fn run(
    options: DownloadOptions,
    events: EventSender,
    cancel: CancellationToken,
) -> Result<Summary, DownloadError> {
    let started = Instant::now();
    if let Output::File(path) = &options.output {
        refuse_existing(path, options.existing)?;
    }
    if let Output::Stream(sink) = &options.output {
        let ring = sink.ring().clone();
        let result = stream(&options, &ring, &events, &cancel).await;
        // The reader's end: EOF after the last byte, or the failure after what was written.
        ring.finish(result.as_ref().map(|_| ()).map_err(ToString::to_string));
        return result.map(|outcome| Summary {
            path: PathBuf::from("-"),
            size: outcome.size,
            elapsed: started.elapsed(),
            max_connections: outcome.max_connections,
            fetched: outcome.fetched,
            sources: outcome.sources,
        });
    }
    let client =
        http::client(&options.http).map_err(|e| DownloadError::fetch(&options.url, e, 1))?;
    let plan = match &options.swarm {
        Some(swarm) => Plan::swarm(&client, &options, swarm)?,
        None => Plan::probe(&client, &options, &events, &cancel).await?,
    };
    let runner = Runner {
        options: &options,
        events: &events,
        cancel: &cancel,
    };
    let path = plan.path.clone();
    let (part, outcome, unused) = match runner.fetch(plan, options.resume).await {
        // `If-Range` kept the new version out of the `.part`; the old bytes are worthless now.
        // Once: a file that keeps changing is better fetched later than chased. (A swarm's
        // bytes are named by their digests and never change.)
        Err(DownloadError::Changed { .. }) if options.swarm.is_none() => {
            let reason = format!(
                "the file on the server changed while downloading; starting {} over",
                part_path(&path).display()
            );
            info!(%reason);
            let _ = events.send(Event::Restarted { reason });
            let plan = Plan::probe(&client, &options, &events, &cancel).await?;
            runner.fetch(Plan { path, ..plan }, Resume::Never).await?
        }
        other => other?,
    };
    // Syncing a whole file and renaming it with a directory sync block for as long as the
    // disk takes: on a blocking thread, not on the runtime's.
    let finishing = part.clone();
    let size = outcome.size;
    tokio::task::spawn_blocking(move || finishing.finish(size))
        .await
        .expect("syncing does not panic")?;
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
            let _ = resume::remove(&resume::state_path(part.path()));
            return Err(DownloadError::ChecksumMismatch {
                path: part.path().to_path_buf(),
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
    let existing = options.existing;
    let path = tokio::task::spawn_blocking(move || commit(part, existing))
        .await
        .expect("committing does not panic")?;
    Ok(Summary {
        path,
        size: outcome.size,
        elapsed: started.elapsed(),
        max_connections: outcome.max_connections,
        fetched: outcome.fetched,
        sources: outcome.sources.into_iter().chain(unused).collect(),
    })
}

/// A download into a stream's ring: probed and fetched as any other, without a part file or
/// resume state, front to back so that the reader's next bytes come first; done once the
/// reader has taken the last byte, and the checksum checked over what it took.
async fn stream(
    options: &DownloadOptions,
    ring: &Arc<Ring>,
    events: &EventSender,
    cancel: &CancellationToken,
) -> Result<Outcome, DownloadError> {
    let url = SafeUrl::new(options.url.clone());
    let unstreamable = |what| DownloadError::Unstreamable {
        url: url.clone(),
        what,
    };
    if options.swarm.is_some() {
        return Err(unstreamable("a swarm download"));
    }
    if options.pieces.is_some() || options.learn_pieces.is_some() {
        return Err(unstreamable("a download checked piece by piece"));
    }
    let client =
        http::client(&options.http).map_err(|e| DownloadError::fetch(&options.url, e, 1))?;
    let plan = Plan::probe(&client, options, events, cancel).await?;
    if !ring.start(plan.size, options.checksum.as_ref().map(|c| c.algo())) {
        return Err(unstreamable("a second download into one stream"));
    }
    let _ = events.send(Event::Started {
        url: plan.shown_url.clone(),
        path: plan.path.clone(),
        size: plan.size,
        ranges: plan.ranges,
    });
    let mut ordered = options.clone();
    ordered.in_order = Some(in_order_chunk(ring.window(), options.connections.get()));
    let transfer = Transfer {
        options: Arc::new(ordered),
        store: Store::Stream(ring.clone()),
        events: events.clone(),
        cancel: cancel.clone(),
    };
    let mut outcome = match plan.fetch {
        Fetch::Ranges { sources, first } => {
            let size = plan.size.expect("a ranged plan knows its size");
            let done = Bitfield::new(block_count(size));
            transfer::run(transfer, size, sources, first, done, None).await?
        }
        Fetch::Stream { probe } => single::run(transfer, *probe).await?,
        Fetch::Nothing { connections } => Outcome::empty(connections),
    };
    ring.set_end(outcome.size);
    let digest = tokio::select! {
        _ = cancel.cancelled() => return Err(DownloadError::Cancelled),
        digest = ring.drained() => digest.map_err(|_| DownloadError::StreamClosed {
            url: url.clone(),
            sent: ring.sent(),
        })?,
    };
    if let (Some(expected), Some(actual)) = (&options.checksum, digest) {
        if actual != expected.hex() {
            return Err(DownloadError::StreamMismatch {
                url,
                algo: expected.algo().to_string(),
                expected: expected.hex(),
                actual,
                sent: outcome.size,
                sources: outcome
                    .sources
                    .iter()
                    .filter(|s| s.bytes > 0)
                    .map(|s| s.url.clone())
                    .collect(),
            });
        }
    }
    outcome.sources.extend(plan.unused);
    Ok(outcome)
}

/// How much a connection of a stream asks for at a time: the window shared among the
/// connections, so that together they fetch what the reader needs next.
fn in_order_chunk(window: u64, connections: u32) -> u64 {
    let share = window / u64::from(connections) / BLOCK * BLOCK;
    share.clamp(BLOCK, MAX_STREAM_CHUNK)
}

/// The most one request of a stream asks for: more only delays the stealing of a slow
/// connection's share.
const MAX_STREAM_CHUNK: u64 = 16 << 20;

/// What running a plan needs; a plan is run again from scratch when the file changes on the
/// server mid-way.
struct Runner<'a> {
    options: &'a DownloadOptions,
    events: &'a EventSender,
    cancel: &'a CancellationToken,
}

impl Runner<'_> {
    /// Continues a previous run's `.part` when `resume` and the plan allow and it is usable,
    /// else starts a new one, and fetches what is missing.
    async fn fetch(
        &self,
        plan: Plan,
        resume: Resume,
    ) -> Result<(Arc<PartFile>, Outcome, Vec<SourceUsage>), DownloadError> {
        let (options, path) = (self.options, plan.path.as_path());
        refuse_existing(path, options.existing)?;
        let lock = PartLock::acquire(path)?;
        let _ = self.events.send(Event::Started {
            url: plan.shown_url.clone(),
            path: path.to_path_buf(),
            size: plan.size,
            ranges: plan.ranges,
        });
        let state_path = resume::state_path(path);
        let previous = match resume {
            Resume::Auto if plan.resumable => {
                self.previous_run(
                    &lock,
                    &state_path,
                    &plan.record,
                    sample_from(&plan, options),
                )
                .await?
            }
            Resume::Auto | Resume::Never => None,
        };
        let (part, done) = match previous {
            Some((part, done)) => (part, Some(done)),
            None => {
                // The old state goes first: a crash before the new `.part` has its own state
                // leaves a `.part` without one, which is never trusted.
                resume::remove(&state_path)
                    .map_err(|e| DownloadError::io(&state_path, "remove", e))?;
                resume::sync_dir(&state_path);
                (PartFile::create(&lock, plan.size)?, None)
            }
        };
        let part = Arc::new(part);
        let transfer = Transfer {
            options: Arc::new(options.clone()),
            store: Store::Part(part.clone()),
            events: self.events.clone(),
            cancel: self.cancel.clone(),
        };
        let outcome = match plan.fetch {
            Fetch::Ranges { sources, first } => {
                let size = plan.size.expect("a ranged plan knows its size");
                let done = done.unwrap_or_else(|| Bitfield::new(block_count(size)));
                let record = State {
                    done: done.clone(),
                    ..plan.record
                };
                let checkpoint = Some(Checkpoint::new(part.clone(), state_path, record));
                transfer::run(transfer, size, sources, first, done, checkpoint).await?
            }
            Fetch::Stream { probe } => single::run(transfer, *probe).await?,
            Fetch::Nothing { connections } => Outcome::empty(connections),
        };
        Ok((part, outcome, plan.unused))
    }

    /// What a previous run left, if it can be continued: the open `.part` and its done blocks.
    /// Anything else is reported as [`Event::Restarted`] with the reason, and the download starts
    /// over; a state that fails any check is never trusted. With `sample_from`, a block of the
    /// `.part` must also match what that server sends for it ([`sample::compare_part`]).
    async fn previous_run(
        &self,
        lock: &PartLock,
        state_path: &Path,
        now: &State,
        sample_from: Option<&RangeSource>,
    ) -> Result<Option<(PartFile, Bitfield)>, DownloadError> {
        let (options, events) = (self.options, self.events);
        let part_path = lock.part();
        let restart = |reason: String| {
            info!(%reason, "starting over");
            let _ = events.send(Event::Restarted { reason });
            Ok(None)
        };
        let state = match resume::load(state_path) {
            Ok(Some(state)) => state,
            Ok(None) if !lock.created() => {
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
        let part = match PartFile::open_existing(lock, state.size) {
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
            Err(ExistingPart::Failed(e)) => return Err(*e),
        };
        if let (Some(server), Some(block)) = (sample_from, sample::resume_block(&state.done)) {
            let check =
                sample::compare_part(&part, state.size, block, server, options, self.cancel)
                    .await?;
            if let PartCheck::Changed { reason } = check {
                return restart(reason);
            }
        }
        let has_validators = state.etag.is_some() || state.last_modified.is_some();
        let done_bytes =
            Segments::resume(state.size, options.min_split.get(), state.done.clone()).done_bytes();
        info!(done = done_bytes, has_validators, "resuming");
        let _ = events.send(Event::Resumed {
            done: done_bytes,
            total: state.size,
            verified: has_validators || options.checksum.is_some(),
            kept: state.done.clone(),
        });
        Ok(Some((part, state.done)))
    }
}

/// Gives the complete, verified `.part` its final name, then drops its resume state.
/// Blocking: call from a blocking thread.
fn commit(part: Arc<PartFile>, existing: Existing) -> Result<PathBuf, DownloadError> {
    let part = Arc::try_unwrap(part).expect("every connection has stopped");
    let state_path = resume::state_path(part.path());
    let path = part.commit(existing)?;
    resume::remove(&state_path).map_err(|e| DownloadError::io(&state_path, "remove", e))?;
    resume::sync_dir(&state_path);
    Ok(path)
}

/// The server a resume's `.part` is compared with before it is continued: the primary, when
/// nothing else could tell another version of the file from this one (the server sends
/// neither `ETag` nor `Last-Modified`, and no `--checksum` checks the result).
fn sample_from<'p>(plan: &'p Plan, options: &DownloadOptions) -> Option<&'p RangeSource> {
    let validated = plan.record.etag.is_some() || plan.record.last_modified.is_some();
    match &plan.fetch {
        Fetch::Ranges { sources, .. } if !validated && options.checksum.is_none() => {
            sources.first().map(|s| &s.range)
        }
        _ => None,
    }
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
