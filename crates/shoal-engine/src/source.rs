//! A source of the file's bytes and its policy. Every place bytes come from (the URL asked
//! for, a mirror, a peer, the origin of a swarm) is one [`Source`]: a server answering range
//! requests, plus data saying how the one scheduler treats it. The transfer loop never asks
//! what kind a source is; it asks the source how many connections it takes, which ranges it
//! may be given, what a failure means and what to do when it has no work.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use shoal_core::{ByteRange, SafeUrl};

use crate::http::{FetchError, RangeSource};
use crate::options::{DownloadOptions, OriginUse};
use crate::segments::{Segments, WorkerId};
use crate::swarm::PeerState;

/// How long a connection to a peer waits for work before it closes.
const PEER_IDLE: Duration = Duration::from_secs(2);
/// Consecutive failures after which a peer is not asked any more.
const PEER_TRIES: u32 = 2;
/// Connections to a seed (a peer holding everything, or a URL swarm's leader): each
/// downloader takes only first copies from it, whole pieces, and a piece is passed on only once
/// complete, so fewer pieces in flight at once from its uplink means each arrives sooner.
const SEED_CONNECTIONS: u32 = 1;
/// Connections to a swarm's origin when the caller does not say: it is the fallback, not the
/// main source.
const SWARM_ORIGIN_CONNECTIONS: u32 = 4;

/// Which ranges a source may be given.
pub(crate) enum Reach {
    /// Anything: pending work first, then stealing from the slowest, then racing the tail as
    /// the download's [`crate::Endgame`] allows (a server of the whole file: the URL, a mirror).
    Whole,
    /// Whole pieces the peer has verified, in the order [`crate::swarm::order`] gives, and
    /// racing only once nothing is pending. Whole pieces, not shares of one: a piece that does
    /// not match is blamed on whoever wrote it, and with two writers an honest peer would be
    /// blamed with a lying one.
    Held(PeerState),
    /// Pieces no live peer holds; once none is pending, racing slow peers anywhere in the file
    /// (the origin of a swarm download).
    Unheld,
}

/// How the scheduler treats a source: the same loop, different data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// The most connections to it (a seed gets fewer, see [`Source::cap`]).
    pub cap: u32,
    /// Consecutive failures after which it is dropped.
    pub tries: u32,
    /// A failed range goes back to the others at once, since another source can take it now;
    /// an answer asking to slow down means this connection leaves and the source is asked
    /// again later.
    pub gives_back: bool,
    /// A refused connection means it has gone away (an agent that stopped): dropped at once.
    pub gone_when_refused: bool,
    /// With no work for it, a connection waits this long for news (a piece verified, work
    /// given back) before it closes; `None`: it closes at once, as nothing new will come.
    pub idle: Option<Duration>,
    /// Its bytes are the file's (the origin of a swarm's leader): a piece it wrote whole needs
    /// no published digest; its digest is learned instead.
    pub trusted: bool,
    /// Failures of a source that is down are waited out past `tries` (an origin, with
    /// [`DownloadOptions::max_wait`]); the download's idle limit ends the wait.
    pub outlasts_outages: bool,
}

impl Policy {
    /// The URL asked for, or a mirror of it. Alone it may take every connection; beside
    /// mirrors, at most `--max-connections-per-server`.
    pub(crate) fn server(options: &DownloadOptions, alone: bool) -> Self {
        Self {
            cap: if alone {
                u32::MAX
            } else {
                options.per_server.get()
            },
            tries: options.max_tries,
            gives_back: false,
            gone_when_refused: false,
            idle: None,
            trusted: false,
            outlasts_outages: options.max_wait.is_some(),
        }
    }

    /// The origin of a swarm download: a capped fallback, or the leader's trusted source.
    pub(crate) fn swarm_origin(options: &DownloadOptions) -> Self {
        let (cap, trusted) = match options.swarm.as_ref().map(|s| &s.origin) {
            Some(OriginUse::Fallback { connections, .. }) => (connections.get(), false),
            Some(OriginUse::Lead { connections, .. }) => (connections.get(), true),
            _ => (SWARM_ORIGIN_CONNECTIONS, false),
        };
        Self {
            cap,
            trusted,
            // A leader's origin is held back while the leader owes first copies (see
            // `swarm::owes_first_copies`): its connections wait for a downloader's news
            // instead of closing, and go on over the same connection.
            idle: trusted.then_some(PEER_IDLE),
            ..Self::server(options, true)
        }
    }

    /// A peer agent: a few connections, given up on quickly, kept open while it may verify
    /// more.
    pub(crate) fn peer(per_peer: u32) -> Self {
        Self {
            cap: per_peer,
            tries: PEER_TRIES,
            gives_back: true,
            gone_when_refused: true,
            idle: Some(PEER_IDLE),
            trusted: false,
            // A peer that went away is another peer's job: only the origin is waited for.
            outlasts_outages: false,
        }
    }
}

/// What a failed range means for the connection that fetched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The source is busy: this connection leaves; the source is asked again later.
    Busy,
    /// The source is not to be used any more.
    Drop,
    /// Try again after a backoff.
    Retry,
    /// The source is down: this connection gives its work to the others and asks again
    /// after the outage back-off, however many tries it took.
    Wait,
}

/// One server of the file, its policy and how it is doing.
pub(crate) struct Source {
    pub range: RangeSource,
    pub reach: Reach,
    pub policy: Policy,
    /// Connections to it right now.
    pub connections: AtomicU32,
    pub bytes: AtomicU64,
    /// Bytes per second per connection, as an `f64`'s bits; 0 until measured.
    pub speed: AtomicU64,
    /// Why it is no longer used, once it is not.
    dropped: Mutex<Option<String>>,
}

impl Source {
    pub(crate) fn new(range: RangeSource, reach: Reach, policy: Policy) -> Self {
        Self {
            range,
            reach,
            policy,
            connections: AtomicU32::new(0),
            bytes: AtomicU64::new(0),
            speed: AtomicU64::new(0),
            dropped: Mutex::new(None),
        }
    }

    /// The most connections to it now: a seed gets fewer (see [`SEED_CONNECTIONS`]).
    pub(crate) fn cap(&self) -> u32 {
        match &self.reach {
            Reach::Held(peer) if peer.is_seed() => self.policy.cap.min(SEED_CONNECTIONS),
            _ => self.policy.cap,
        }
    }

    /// The peer behind it, when it is one.
    pub(crate) fn peer(&self) -> Option<&PeerState> {
        match &self.reach {
            Reach::Held(peer) => Some(peer),
            Reach::Whole | Reach::Unheld => None,
        }
    }

    pub(crate) fn is_dropped(&self) -> bool {
        self.dropped.lock().expect("source lock").is_some()
    }

    /// Marks it dropped for `reason`; false when it already was.
    pub(crate) fn mark_dropped(&self, reason: &str) -> bool {
        let mut dropped = self.dropped.lock().expect("source lock");
        if dropped.is_some() {
            return false;
        }
        *dropped = Some(reason.to_string());
        true
    }

    pub(crate) fn drop_reason(&self) -> Option<String> {
        self.dropped.lock().expect("source lock").clone()
    }

    /// Measured bytes per second per connection, if measured.
    pub(crate) fn measured_speed(&self) -> Option<f64> {
        Some(f64::from_bits(self.speed.load(Ordering::Relaxed))).filter(|&s| s > 0.0)
    }

    /// Whether a new connection to it would find work now; `allowed` is what it may be asked
    /// for (ignored for a server of the whole file).
    pub(crate) fn has_work(&self, segments: &Segments, allowed: &[ByteRange]) -> bool {
        match self.reach {
            Reach::Whole => segments.has_work(),
            Reach::Held(_) | Reach::Unheld => segments.has_work_within(allowed),
        }
    }

    /// The next range for `worker`, taken for it in `segments`: what it still owns, else new
    /// work as its reach allows. `allowed` is what it may be asked for, in order; `whole` the
    /// entire file; `in_order` the chunk size when the file is fetched front to back.
    pub(crate) fn take(
        &self,
        segments: &mut Segments,
        worker: WorkerId,
        speed: Option<f64>,
        allowed: &[ByteRange],
        in_order: Option<u64>,
    ) -> Option<ByteRange> {
        if let Some(range) = segments.owned_by(worker).filter(|r| !r.is_empty()) {
            return Some(range);
        }
        match self.reach {
            Reach::Whole => match in_order {
                Some(chunk) => segments.assign_front(worker, chunk, speed),
                None => segments.assign_at(worker, speed),
            },
            // A connection with nothing pending races a peer far slower than itself.
            Reach::Held(_) => segments.assign_within(worker, allowed).or_else(|| {
                let below = speed? / crate::swarm::SLOW_PEER;
                segments.race_within(worker, allowed, Some(below))
            }),
            Reach::Unheld => {
                let taken = match in_order {
                    // A swarm leader's origin: front to back, the connections sharing a piece
                    // or two, so its pieces complete (and are passed on) one after another.
                    Some(chunk) => {
                        let mut front = allowed.to_vec();
                        front.sort_unstable_by_key(|r| r.start());
                        segments.assign_within_by(worker, &front, chunk)
                    }
                    None => segments.assign_within(worker, allowed),
                };
                taken.or_else(|| segments.race_outpaced(worker, speed))
            }
        }
    }

    /// What the failure of a range means after `tries` consecutive failures.
    pub(crate) fn judge(&self, error: &FetchError, tries: u32) -> Verdict {
        if self.policy.gives_back && error.slow_down().is_some() {
            return Verdict::Busy;
        }
        let gone = self.policy.gone_when_refused && matches!(error, FetchError::Connect { .. });
        if error.is_fatal() || gone {
            Verdict::Drop
        } else if tries < self.policy.tries {
            Verdict::Retry
        } else if self.policy.outlasts_outages && error.is_outage() {
            Verdict::Wait
        } else {
            Verdict::Drop
        }
    }

    pub(crate) fn shown_url(&self) -> SafeUrl {
        self.range.shown_url()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Connections;
    use reqwest::StatusCode;
    use url::Url;

    fn source(policy: Policy) -> Source {
        let range = RangeSource {
            client: crate::http::client(&crate::HttpOptions::default()).unwrap(),
            url: Url::parse("http://127.0.0.1:1/f").unwrap().into(),
            size: 1 << 20,
            validator: None,
        };
        Source::new(range, Reach::Whole, policy)
    }

    fn status(code: u16) -> FetchError {
        FetchError::Status {
            status: StatusCode::from_u16(code).unwrap(),
            retry_after: None,
        }
    }

    #[test]
    fn a_server_retries_until_its_tries_run_out() {
        let mut options = DownloadOptions::new(
            Url::parse("http://127.0.0.1:1/f").unwrap(),
            crate::Output::Dir(".".into()),
        );
        options.max_tries = 3;
        options.per_server = Connections::new(4).unwrap();
        let s = source(Policy::server(&options, false));
        assert_eq!(s.cap(), 4);
        assert_eq!(source(Policy::server(&options, true)).cap(), u32::MAX);
        assert_eq!(s.judge(&FetchError::Stalled, 1), Verdict::Retry);
        assert_eq!(s.judge(&FetchError::Stalled, 3), Verdict::Drop);
        // A server asking to slow down is waited for, not left.
        assert_eq!(s.judge(&status(503), 1), Verdict::Retry);
        assert_eq!(s.judge(&status(404), 1), Verdict::Drop);
        assert_eq!(s.judge(&FetchError::Changed, 1), Verdict::Drop);
    }

    #[test]
    fn with_max_wait_a_server_that_is_down_is_waited_for() {
        let mut options = DownloadOptions::new(
            Url::parse("http://127.0.0.1:1/f").unwrap(),
            crate::Output::Dir(".".into()),
        );
        options.max_tries = 2;
        options.max_wait = Some(Duration::from_secs(60));
        let refused = FetchError::CutShort("connection closed".into());
        for s in [
            source(Policy::server(&options, true)),
            source(Policy::swarm_origin(&options)),
        ] {
            assert_eq!(s.judge(&refused, 1), Verdict::Retry);
            assert_eq!(s.judge(&refused, 2), Verdict::Wait);
            assert_eq!(s.judge(&FetchError::Stalled, 9), Verdict::Wait);
            assert_eq!(s.judge(&status(502), 9), Verdict::Wait);
            // What asking again cannot cure still ends it.
            assert_eq!(s.judge(&status(404), 1), Verdict::Drop);
            assert_eq!(s.judge(&FetchError::Protocol("x".into()), 2), Verdict::Drop);
        }
        let peer = source(Policy::peer(2));
        assert_eq!(peer.judge(&refused, PEER_TRIES), Verdict::Drop);
        assert_eq!(peer.judge(&FetchError::Stalled, PEER_TRIES), Verdict::Drop);
    }

    #[test]
    fn a_peer_is_left_when_busy_and_dropped_soon() {
        let s = source(Policy::peer(2));
        assert_eq!(s.judge(&status(503), 1), Verdict::Busy);
        assert_eq!(s.judge(&status(429), 1), Verdict::Busy);
        assert_eq!(s.judge(&FetchError::Stalled, 1), Verdict::Retry);
        assert_eq!(s.judge(&FetchError::Stalled, PEER_TRIES), Verdict::Drop);
        assert_eq!(s.policy.idle, Some(PEER_IDLE));
    }

    #[test]
    fn the_swarm_origin_is_capped() {
        let options = DownloadOptions::new(
            Url::parse("http://127.0.0.1:1/f").unwrap(),
            crate::Output::Dir(".".into()),
        );
        let s = source(Policy::swarm_origin(&options));
        assert_eq!(s.cap(), SWARM_ORIGIN_CONNECTIONS);
        assert_eq!(s.policy.idle, None);
        assert!(!s.policy.trusted);
    }

    #[test]
    fn a_leaders_origin_is_trusted_and_a_fallback_is_not() {
        let mut options = DownloadOptions::new(
            Url::parse("http://127.0.0.1:1/f").unwrap(),
            crate::Output::Dir(".".into()),
        );
        let swarm = |origin| crate::SwarmOptions {
            me: "me".into(),
            layout: shoal_core::Layout::new(1 << 20, 1 << 20).unwrap(),
            digests: crate::Digests::Manifest(std::sync::Arc::new(
                shoal_core::Manifest::new(
                    shoal_core::Layout::new(1 << 20, 1 << 20).unwrap(),
                    vec![[0; 32]],
                )
                .unwrap(),
            )),
            peers: tokio::sync::watch::channel(Vec::new()).1,
            peer_http: crate::HttpOptions::default(),
            per_peer: Connections::new(2).unwrap(),
            origin,
        };
        let connections = Connections::new(3).unwrap();
        options.swarm = Some(swarm(OriginUse::Lead {
            connections,
            validator: None,
        }));
        let lead = Policy::swarm_origin(&options);
        assert!(lead.trusted);
        assert_eq!(lead.cap, 3);
        assert_eq!(lead.idle, Some(PEER_IDLE));
        options.swarm = Some(swarm(OriginUse::Fallback {
            connections,
            validator: None,
        }));
        assert!(!Policy::swarm_origin(&options).trusted);
        assert_eq!(Policy::swarm_origin(&options).idle, None);
        assert!(!Policy::peer(2).trusted);
    }

    #[test]
    fn dropping_is_said_once() {
        let s = source(Policy::peer(2));
        assert!(s.mark_dropped("gone"));
        assert!(!s.mark_dropped("again"));
        assert_eq!(s.drop_reason().as_deref(), Some("gone"));
        assert!(s.is_dropped());
    }
}
