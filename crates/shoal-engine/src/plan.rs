//! What a download will do, decided before a byte is written: a [`Plan`]. A probe of the URL
//! and its mirrors (or a Metalink's) gives one; a swarm's manifest gives another. Both say the
//! same things (where the file goes, its size, the sources and how to treat them, what the
//! resume state must match), and one runner (`crate::download`) carries out any plan.

use std::path::PathBuf;

use reqwest::Response;
use shoal_core::Bitfield;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use url::Url;

use crate::error::DownloadError;
use crate::events::{Event, EventSender, SourceUsage};
use crate::http::{self, FetchError, HttpClient, Probe, RangeSource};
use crate::naming;
use crate::options::{
    Digests, DownloadOptions, OriginUse, Output, Resume, SwarmOptions, BLOCK, MAX_SIZE,
};
use crate::resume::{self, State};
use crate::retry::Backoff;
use crate::sample;
use crate::source::{Policy, Reach, Source};
use shoal_core::redact::redacted;
use shoal_core::SafeUrl;

/// One download, planned.
pub(crate) struct Plan {
    /// Where the file goes.
    pub path: PathBuf,
    /// The URL the user is shown (the final one after redirects), redacted.
    pub shown_url: SafeUrl,
    pub size: Option<u64>,
    /// Whether the sources honour byte ranges, so more than one connection can be used.
    pub ranges: bool,
    /// What the resume state of this version of the file records (its `done` is empty).
    pub record: State,
    /// Whether a previous run's part file may be continued.
    pub resumable: bool,
    pub fetch: Fetch,
    /// URLs left out while planning, for the summary.
    pub unused: Vec<SourceUsage>,
}

/// How the bytes are fetched.
pub(crate) enum Fetch {
    /// Ranges from `sources`, over many connections; `first` is the probe's response and the
    /// offset it streams from.
    Ranges {
        sources: Vec<Source>,
        first: Option<(Response, u64)>,
    },
    /// One stream from byte 0: the server does not do ranges, or does not say the size.
    Stream { probe: Box<Probe> },
    /// Nothing: the file is empty. `connections` is what the summary reports.
    Nothing { connections: u32 },
}

impl Plan {
    /// The plan for a URL (and its mirrors): probe them, name the file.
    pub(crate) async fn probe(
        client: &HttpClient,
        options: &DownloadOptions,
        events: &EventSender,
        cancel: &CancellationToken,
    ) -> Result<Self, DownloadError> {
        let Probed {
            probe,
            mut mirrors,
            mut dropped,
        } = probe_sources(client, options, events, cancel).await?;
        if let (Some(limit), Some(size)) = (options.max_filesize, probe.size) {
            if size > limit {
                return Err(DownloadError::TooLarge {
                    url: SafeUrl::new(probe.url),
                    limit,
                    size: Some(size),
                });
            }
        }
        let path = output_path(options, probe.content_disposition.as_deref(), &probe.url)?;
        info!(url = %redacted(&probe.url), size = ?probe.size, ranges = probe.ranges, "probed");
        let record = State {
            url_hash: resume::url_hash(&options.url),
            size: probe.size.unwrap_or(0),
            block: BLOCK,
            etag: probe.etag.clone(),
            last_modified: probe.last_modified.clone(),
            done: Bitfield::new(0),
        };
        let (shown_url, size, ranges) = (SafeUrl::new(probe.url.clone()), probe.size, probe.ranges);
        let fetch = match (probe.ranges, probe.size) {
            (true, Some(size)) if size > 0 => {
                let primary = RangeSource {
                    client: probe.client.clone(),
                    url: probe.url.clone().into(),
                    size,
                    validator: probe.validator.clone(),
                };
                if needs_sample(&primary, &mirrors, options) {
                    let (same, other) = sample::compare_mirrors(
                        &primary,
                        std::mem::take(&mut mirrors),
                        size,
                        options,
                        events,
                        cancel,
                    )
                    .await?;
                    mirrors = same;
                    dropped.extend(other.into_iter().map(|(url, reason)| SourceUsage {
                        url,
                        bytes: 0,
                        dropped: Some(reason),
                    }));
                }
                let alone = mirrors.is_empty();
                let sources = std::iter::once(primary)
                    .chain(mirrors)
                    .map(|range| Source::new(range, Reach::Whole, Policy::server(options, alone)))
                    .collect();
                Fetch::Ranges {
                    sources,
                    first: Some((probe.response, probe.start)),
                }
            }
            // An empty file: the probe's 416 body is an error page, not content.
            (_, Some(0)) => Fetch::Nothing { connections: 1 },
            _ => Fetch::Stream {
                probe: Box::new(probe),
            },
        };
        Ok(Self {
            path,
            shown_url,
            size,
            ranges,
            resumable: ranges && size.is_some_and(|size| size > 0),
            record,
            fetch,
            unused: dropped,
        })
    }

    /// The plan for a swarm download: the manifest (or the swarm's layout) gives the size, so
    /// nothing is probed; peers (and the origin, as a fallback) are the sources, and every
    /// piece is verified.
    pub(crate) fn swarm(
        client: &HttpClient,
        options: &DownloadOptions,
        swarm: &SwarmOptions,
    ) -> Result<Self, DownloadError> {
        let size = swarm.layout.size();
        if size > MAX_SIZE {
            let detail = format!(
                "the swarm's file is {size} bytes, more than the {MAX_SIZE} (256 TiB) shoal can download"
            );
            return Err(DownloadError::fetch(
                &options.url,
                FetchError::Protocol(detail),
                1,
            ));
        }
        let path = output_path(options, None, &options.url)?;
        let record = State {
            url_hash: resume::url_hash(&options.url),
            size,
            block: BLOCK,
            // The digests name the bytes: a state for other bytes never matches.
            etag: Some(swarm_tag(swarm)),
            last_modified: None,
            done: Bitfield::new(0),
        };
        let fetch = if size == 0 {
            Fetch::Nothing { connections: 0 }
        } else {
            let sources = match &swarm.origin {
                OriginUse::Never => Vec::new(),
                OriginUse::Fallback { validator, .. } | OriginUse::Lead { validator, .. } => {
                    vec![Source::new(
                        RangeSource {
                            client: client.owned_by(&options.url),
                            url: options.url.clone().into(),
                            size,
                            validator: validator.clone(),
                        },
                        Reach::Unheld,
                        Policy::swarm_origin(options),
                    )]
                }
            };
            Fetch::Ranges {
                sources,
                first: None,
            }
        };
        Ok(Self {
            path,
            shown_url: SafeUrl::new(options.url.clone()),
            size: Some(size),
            ranges: true,
            record,
            resumable: size > 0,
            fetch,
            unused: Vec::new(),
        })
    }
}

/// Whether the mirrors' bytes must be compared with the primary's before they get work: a size
/// alone does not tell two files apart. Not when the result is checked anyway (`--checksum`,
/// a Metalink's piece hashes, which also find the mirror that lied), nor when every mirror
/// sends the primary's own `If-Range` validator (the same strong `ETag`, or with none, the same
/// `Last-Modified`: mirrors copied with their dates, as rsync does, of one file).
fn needs_sample(primary: &RangeSource, mirrors: &[RangeSource], options: &DownloadOptions) -> bool {
    if mirrors.is_empty() || options.checksum.is_some() || options.pieces.is_some() {
        return false;
    }
    primary.validator.is_none() || mirrors.iter().any(|m| m.validator != primary.validator)
}

/// Where the file goes: `-o`, or `-d` (made when missing, as wget -P and aria2c -d do) with a
/// name from the response or the URL; `-` for a stream.
fn output_path(
    options: &DownloadOptions,
    content_disposition: Option<&str>,
    url: &Url,
) -> Result<PathBuf, DownloadError> {
    match &options.output {
        Output::File(path) => Ok(path.clone()),
        Output::Dir(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| DownloadError::io(dir, "create directory", e))?;
            let path = dir.join(naming::file_name(content_disposition, url));
            Ok(match &options.names {
                Some(names) => names.claim(&path),
                None => path,
            })
        }
        Output::Stream(_) => Ok(PathBuf::from("-")),
    }
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
        Output::Stream(_) => return 0,
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

/// Probes the URL and every mirror at once. The first URL, in the order given, that answers
/// becomes the primary: its response streams as the first segment and names the file. Mirrors
/// that fail, serve another size than most, or cannot do ranges are dropped with a
/// [`Event::SourceDropped`]; the rest become range sources beside the primary.
async fn probe_sources(
    client: &HttpClient,
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
            return Err(DownloadError::fetch(
                &options.url,
                FetchError::Protocol(detail),
                1,
            ));
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
            url: SafeUrl::new(url.clone()),
            reason: reason.clone(),
        });
        dropped.push(SourceUsage {
            url: SafeUrl::new(url.clone()),
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
                client: probe.client.clone(),
                url: probe.url.clone().into(),
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
                let probe =
                    probe_with_retries(client, first.url.as_url(), options, events, cancel).await?;
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
    client: &HttpClient,
    url: &Url,
    options: &DownloadOptions,
    events: &EventSender,
    cancel: &CancellationToken,
) -> Result<Probe, DownloadError> {
    let from = resume_offset(options);
    let mut backoff = Backoff::default();
    let mut outage = Backoff::outage();
    let mut tries = 0;
    let first_failure = tokio::time::Instant::now();
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
        // With `max_wait`, a server that is down is waited for past the tries, as the
        // transfer's connections wait for it (see `source::Verdict::Wait`).
        let waiting = options
            .max_wait
            .is_some_and(|max| error.is_outage() && first_failure.elapsed() < max);
        if error.is_fatal() || (tries >= options.max_tries && !waiting) {
            return Err(DownloadError::fetch(url, error, tries));
        }
        let wait = if tries >= options.max_tries {
            outage.next(error.slow_down().flatten())
        } else {
            backoff.next(error.slow_down().flatten())
        };
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
