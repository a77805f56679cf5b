//! Which part this agent plays in fetching a URL, decided from what the origin and the tracker
//! answered, one answer at a time. Pure: the caller asks, acts and logs.
//!
//! 1. The origin's probe failed: [`origin_is_down`] says whether the swarm may stand in for it.
//! 2. The tracker's lookup of the URL version: [`after_lookup`] (a mapped content, a swarm to
//!    create, or the origin alone). A mapping counts only if it [`fits`] this agent's own
//!    probe of the origin: the tracker's word, or its publisher's, is not trusted alone.
//! 3. The tracker's answer to creating the swarm: [`after_create`] (lead, follow, or alone).
//! 4. While following, the leader published nothing new for a while:
//!    [`wait_before_take_over`] (when to ask to take over the lead), then the tracker's answer
//!    to that: [`after_take_over`] (lead from now on, or go on following).
//! 5. A member's swarm did not finish: [`fall_back_after_follow`] (the origin, unless the
//!    fetch was cancelled or failed outside the download), which happens only when no member
//!    could take over (the tracker is down, say), or the origin is gone: then the fallback
//!    waits no longer ([`fallback_wait`]), and if it fails too, the swarm's error, naming the
//!    pieces missing, is the one told ([`swarm_error_stands`]).
//!
//! An agent without a tracker fetches alone ([`Alone::NoTracker`]) without asking.

use std::time::Duration;

use shoal_core::wire::{AgentId, SwarmInfo, UrlKey, UrlMapping};
use shoal_core::ContentId;
use shoal_engine::{DownloadError, ErrorKind};
use tokio::time::Instant;

use super::AgentFetchError;
use crate::tracker::TrackerError;

/// The part an agent plays in fetching one version of a URL.
#[derive(Debug)]
pub(super) enum Role {
    /// The tracker maps the URL version to this content: fetch it by id from the peers that
    /// hold it, with the origin as a capped fallback.
    Mapped(ContentId),
    /// This agent leads the URL swarm: it fetches from the origin and publishes each piece's
    /// digest.
    Lead(SwarmInfo),
    /// Another agent leads the URL swarm: fetch from it and the other followers.
    Follow(SwarmInfo),
    /// Fetch from the origin without a swarm, hashing pieces as they complete.
    Alone(Alone),
}

/// Why an agent fetches a URL from the origin alone.
#[derive(Debug)]
pub(super) enum Alone {
    /// The agent was started without a tracker.
    NoTracker,
    /// The tracker did not answer; the agent goes on without it.
    TrackerDown(TrackerError),
    /// An empty file has no pieces to share.
    Empty,
}

/// What the tracker's answer to "which content has this URL version" leads to.
#[derive(Debug)]
pub(super) enum AfterLookup {
    /// [`Role::Mapped`].
    Mapped(ContentId),
    /// Nobody published the URL version yet: ask the tracker to create its swarm (or join the
    /// one running), then [`after_create`].
    CreateSwarm,
    /// [`Role::Alone`].
    Alone(Alone),
}

/// Whether the origin's failure to say which version it serves means it is down, so that the
/// newest version the tracker knows may be fetched from peers instead: it could not be reached,
/// or answered with a server error. Any other answer (a 404, a refusal) is the URL's own answer
/// and stands.
pub(super) fn origin_is_down(error: &DownloadError) -> bool {
    matches!(error, DownloadError::Network { .. })
        || matches!(error, DownloadError::HttpStatus { status, .. } if *status >= 500)
}

/// Whether a mapping was published for the version this agent's own probe (`probe`) found:
/// the same size, `ETag` and `Last-Modified`, each present or absent alike. The tracker looks
/// mappings up by exactly those, so a mapping that does not fit comes from a tracker (or
/// store) that cannot be trusted, and is ignored.
pub(super) fn fits(probe: &UrlKey, mapping: &UrlMapping) -> bool {
    let seen = &mapping.key;
    seen.size == probe.size && seen.etag == probe.etag && seen.last_modified == probe.last_modified
}

/// Decides from the tracker's lookup of the URL version `probe` (the mapping it has for it),
/// a mapping that does not [`fit`](fits) the probe counting as none. A tracker that refuses
/// fails the fetch.
pub(super) fn after_lookup(
    lookup: Result<UrlMapping, TrackerError>,
    probe: &UrlKey,
) -> Result<AfterLookup, TrackerError> {
    let size = probe.size;
    match lookup {
        Ok(mapping) if fits(probe, &mapping) => Ok(AfterLookup::Mapped(mapping.content)),
        Ok(_) if size == 0 => Ok(AfterLookup::Alone(Alone::Empty)),
        Ok(_) => Ok(AfterLookup::CreateSwarm),
        Err(e) if e.is_not_found() && size == 0 => Ok(AfterLookup::Alone(Alone::Empty)),
        Err(e) if e.is_not_found() => Ok(AfterLookup::CreateSwarm),
        Err(e) if e.is_unreachable() => Ok(AfterLookup::Alone(Alone::TrackerDown(e))),
        Err(e) => Err(e),
    }
}

/// Decides from the tracker's answer to creating the URL swarm, which names its leader: this
/// agent (`me`) leads only when the tracker says so. A tracker that refuses (another layout
/// already running, a bad token) fails the fetch.
pub(super) fn after_create(
    created: Result<SwarmInfo, TrackerError>,
    me: &AgentId,
) -> Result<Role, TrackerError> {
    match created {
        Ok(swarm) if swarm.leader == *me => Ok(Role::Lead(swarm)),
        Ok(swarm) => Ok(Role::Follow(swarm)),
        Err(e) if e.is_unreachable() => Ok(Role::Alone(Alone::TrackerDown(e))),
        Err(e) => Err(e),
    }
}

/// How long a follower waits before asking to take over the lead, when its leader has published
/// nothing new, and not changed, for `quiet_for`: `None` once that reaches `stall` (the swarm's
/// [`leader_stall_limit`](shoal_core::wire::leader_stall_limit)), when it asks now. It asks
/// even when every digest is published, as it still lacks pieces (its download runs): the
/// tracker grants a takeover then only if the leader's lease lapsed.
pub(super) fn wait_before_take_over(quiet_for: Duration, stall: Duration) -> Option<Duration> {
    stall.checked_sub(quiet_for).filter(|left| !left.is_zero())
}

/// What the tracker's answer to a takeover means for this agent (`me`).
#[derive(Debug)]
pub(super) enum AfterTakeOver {
    /// It leads the swarm now: fetch from the origin what no peer holds, and publish.
    Lead(SwarmInfo),
    /// It goes on following, for this reason (the leader is live, another member took over
    /// first, the tracker did not answer); it may ask again after another quiet spell.
    Follow(String),
}

/// Decides from the tracker's answer to a takeover: this agent leads only when the swarm the
/// tracker answers names it.
pub(super) fn after_take_over(
    answer: Result<SwarmInfo, TrackerError>,
    me: &AgentId,
) -> AfterTakeOver {
    match answer {
        Ok(swarm) if swarm.leader == *me => AfterTakeOver::Lead(swarm),
        Ok(swarm) => AfterTakeOver::Follow(format!("{} leads it", swarm.leader)),
        Err(e) => AfterTakeOver::Follow(e.to_string()),
    }
}

/// A follower whose swarm did not finish (its leader vanished, its peers stalled or kept
/// sending bad pieces) fetches from the origin alone: `Ok` with why the swarm's download
/// failed. A cancelled fetch, or one that failed outside the download, stays failed.
pub(super) fn fall_back_after_follow(
    error: AgentFetchError,
) -> Result<DownloadError, AgentFetchError> {
    match error {
        AgentFetchError::Download(e) if e.kind() != ErrorKind::Cancelled => Ok(e),
        other => Err(other),
    }
}

/// How long a member whose swarm failed with `error` waits for the origin when it fetches
/// alone: not again when its swarm waited `max_wait` already with nothing arriving (the origin
/// was down for its leader too, or no one could lead), the whole `max_wait` otherwise.
pub(super) fn fallback_wait(error: &DownloadError, max_wait: Duration) -> Option<Duration> {
    match error {
        DownloadError::Unserved { .. } => None,
        _ => Some(max_wait),
    }
}

/// Whether a swarm's failure, rather than that of the fetch alone that followed it, is what
/// the user is told: when it names the pieces no one could serve, which says more than the
/// origin's refusal of the fallback does.
pub(super) fn swarm_error_stands(error: &DownloadError) -> bool {
    matches!(error, DownloadError::Unserved { .. })
}

/// The least wait a URL swarm member's next part gets, however little of `--max-wait` is left:
/// time to ask its sources once.
const PART_WAIT_FLOOR: Duration = Duration::from_secs(1);

/// How long a URL swarm's member has waited for its next piece, across the parts it plays:
/// its `--max-wait` runs from the last piece it got, not from its last change of role. While
/// the origin is down, two members take the lead from each other whenever the other stalls,
/// and with a wait started over at every change neither would ever give up.
pub(super) struct Waiting {
    max: Duration,
    since: Instant,
    held: u32,
}

impl Waiting {
    /// A member allowed to wait `max`, that holds `held` pieces now.
    pub(super) fn new(max: Duration, held: u32) -> Self {
        Self {
            max,
            since: Instant::now(),
            held,
        }
    }

    /// Takes in how many pieces the member holds now: more than before starts the wait over.
    pub(super) fn held(&mut self, held: u32) {
        if held > self.held {
            self.held = held;
            self.since = Instant::now();
        }
    }

    /// What the next part may wait: the rest of `max`, and at least [`PART_WAIT_FLOOR`].
    pub(super) fn left(&self) -> Duration {
        self.max
            .saturating_sub(self.since.elapsed())
            .max(PART_WAIT_FLOOR)
    }

    /// `error` as the member's: a part that gave up with nothing served waited only what was
    /// left, and the member waited since its last piece.
    pub(super) fn restate(&self, error: DownloadError) -> DownloadError {
        match error {
            DownloadError::Unserved {
                url,
                missing,
                waited,
                last_failure,
            } => DownloadError::Unserved {
                url,
                missing,
                waited: waited.max(self.since.elapsed()),
                last_failure,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use shoal_core::wire::SwarmDigests;
    use shoal_core::Layout;

    use super::*;
    use crate::objects::ObjectsError;

    fn me() -> AgentId {
        AgentId::new("me").unwrap()
    }

    fn content() -> ContentId {
        ContentId::from_bytes([7; 32])
    }

    fn swarm(leader: &str) -> SwarmInfo {
        let key = UrlKey {
            url: url::Url::parse("https://origin.example/big.iso")
                .unwrap()
                .into(),
            size: 10,
            etag: Some("\"v1\"".into()),
            last_modified: None,
        };
        let layout = Layout::new(10, 4).unwrap();
        SwarmInfo {
            id: key.swarm_id(),
            key,
            layout,
            leader: AgentId::new(leader).unwrap(),
            created: false,
            digests: SwarmDigests::of(&[None; 3]),
        }
    }

    fn unreachable() -> TrackerError {
        TrackerError::Unreachable {
            url: "http://tracker".into(),
            detail: "connection refused".into(),
        }
    }

    fn not_found() -> TrackerError {
        TrackerError::NotFound {
            url: "http://tracker".into(),
            what: "mapping for this URL".into(),
        }
    }

    fn refused() -> TrackerError {
        TrackerError::Refused {
            url: "http://tracker".into(),
            status: 403,
            message: "unknown token".into(),
        }
    }

    fn rejected(status: u16) -> TrackerError {
        TrackerError::Rejected {
            url: "http://tracker".into(),
            status,
            message: "no".into(),
        }
    }

    fn network() -> DownloadError {
        DownloadError::Network {
            url: url::Url::parse("https://origin.example/big.iso")
                .unwrap()
                .into(),
            cause: shoal_engine::FetchError::CutShort("connection reset".into()),
            tries: 3,
        }
    }

    fn status(status: u16) -> DownloadError {
        DownloadError::HttpStatus {
            url: url::Url::parse("https://origin.example/big.iso")
                .unwrap()
                .into(),
            status,
        }
    }

    #[test]
    fn the_origin_is_down_when_unreachable_or_failing_not_when_it_refuses() {
        assert!(origin_is_down(&network()));
        assert!(origin_is_down(&status(500)));
        assert!(origin_is_down(&status(503)));
        assert!(!origin_is_down(&status(404)));
        assert!(!origin_is_down(&status(403)));
        assert!(!origin_is_down(&DownloadError::Changed {
            url: url::Url::parse("https://origin.example/big.iso")
                .unwrap()
                .into()
        }));
        assert!(!origin_is_down(&DownloadError::Cancelled));
    }

    fn probe(size: u64) -> UrlKey {
        UrlKey {
            url: "https://origin.example/big.iso".into(),
            size,
            etag: Some("\"v1\"".into()),
            last_modified: Some("Tue, 01 Dec 2026 10:00:00 GMT".into()),
        }
    }

    fn mapping(key: UrlKey) -> UrlMapping {
        UrlMapping {
            key,
            content: content(),
            publisher: "fleet".into(),
            published_at: 0,
        }
    }

    #[test]
    fn a_mapped_url_is_fetched_by_its_content_whatever_its_size() {
        for size in [0, 10] {
            let decided = after_lookup(Ok(mapping(probe(size))), &probe(size)).unwrap();
            assert!(
                matches!(decided, AfterLookup::Mapped(c) if c == content()),
                "{decided:?}"
            );
        }
    }

    #[test]
    fn a_mapping_whose_validators_differ_from_the_probe_counts_as_none() {
        let changes: [fn(&mut UrlKey); 5] = [
            |k| k.size += 1,
            |k| k.etag = Some("\"v2\"".into()),
            |k| k.etag = None,
            |k| k.last_modified = Some("Wed, 02 Dec 2026 10:00:00 GMT".into()),
            |k| k.last_modified = None,
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut seen = probe(10);
            change(&mut seen);
            assert!(!fits(&probe(10), &mapping(seen.clone())), "change {i}");
            let decided = after_lookup(Ok(mapping(seen)), &probe(10)).unwrap();
            assert!(
                matches!(decided, AfterLookup::CreateSwarm),
                "{i}: {decided:?}"
            );
        }
        // The URL's spelling is the tracker's to normalize; the version is what must agree.
        let mut respelled = probe(10);
        respelled.url = "https://ORIGIN.example:443/big.iso".into();
        assert!(fits(&probe(10), &mapping(respelled)));
        let mut empty = probe(0);
        empty.etag = None;
        let decided = after_lookup(Ok(mapping(empty)), &probe(0)).unwrap();
        assert!(
            matches!(decided, AfterLookup::Alone(Alone::Empty)),
            "{decided:?}"
        );
    }

    #[test]
    fn an_unknown_url_makes_a_swarm_unless_it_is_empty() {
        let decided = after_lookup(Err(not_found()), &probe(10)).unwrap();
        assert!(matches!(decided, AfterLookup::CreateSwarm), "{decided:?}");
        let decided = after_lookup(Err(not_found()), &probe(0)).unwrap();
        assert!(
            matches!(decided, AfterLookup::Alone(Alone::Empty)),
            "{decided:?}"
        );
    }

    #[test]
    fn a_lookup_without_a_tracker_goes_alone_and_a_refusal_fails() {
        for size in [0, 10] {
            let decided = after_lookup(Err(unreachable()), &probe(size)).unwrap();
            assert!(
                matches!(decided, AfterLookup::Alone(Alone::TrackerDown(_))),
                "{decided:?}"
            );
        }
        assert!(matches!(
            after_lookup(Err(refused()), &probe(10)),
            Err(TrackerError::Refused { .. })
        ));
        assert!(matches!(
            after_lookup(Err(rejected(400)), &probe(10)),
            Err(TrackerError::Rejected { status: 400, .. })
        ));
    }

    #[test]
    fn the_agent_the_tracker_names_leads_and_the_others_follow() {
        let led = after_create(Ok(swarm("me")), &me()).unwrap();
        assert!(matches!(&led, Role::Lead(s) if s.leader == me()), "{led:?}");
        let followed = after_create(Ok(swarm("first")), &me()).unwrap();
        assert!(
            matches!(&followed, Role::Follow(s) if s.leader.as_str() == "first"),
            "{followed:?}"
        );
        // A leader id that merely starts like this agent's is another agent.
        let other = after_create(Ok(swarm("me-2")), &me()).unwrap();
        assert!(matches!(other, Role::Follow(_)), "{other:?}");
    }

    #[test]
    fn a_swarm_the_tracker_cannot_create_goes_alone_or_fails() {
        let alone = after_create(Err(unreachable()), &me()).unwrap();
        assert!(
            matches!(alone, Role::Alone(Alone::TrackerDown(_))),
            "{alone:?}"
        );
        // A swarm running with another layout (409) or a bad token is not worked around.
        assert!(matches!(
            after_create(Err(rejected(409)), &me()),
            Err(TrackerError::Rejected { status: 409, .. })
        ));
        assert!(matches!(
            after_create(Err(refused()), &me()),
            Err(TrackerError::Refused { .. })
        ));
        assert!(matches!(
            after_create(Err(not_found()), &me()),
            Err(TrackerError::NotFound { .. })
        ));
    }

    #[test]
    fn a_follower_asks_to_take_over_once_the_leader_is_quiet_for_the_stall_limit() {
        let stall = Duration::from_millis(5500);
        assert_eq!(
            wait_before_take_over(Duration::ZERO, stall),
            Some(stall),
            "a leader that just published"
        );
        assert_eq!(
            wait_before_take_over(Duration::from_secs(5), stall),
            Some(Duration::from_millis(500))
        );
        assert_eq!(wait_before_take_over(stall, stall), None);
        assert_eq!(wait_before_take_over(Duration::from_secs(60), stall), None);
        // The limit grows with the piece: a 16 MiB piece takes longer on a slow link.
        let small = shoal_core::wire::leader_stall_limit(Layout::new(1 << 30, 1 << 20).unwrap());
        let big = shoal_core::wire::leader_stall_limit(Layout::new(1 << 36, 16 << 20).unwrap());
        assert_eq!(small, Duration::from_millis(5500));
        assert_eq!(big, Duration::from_secs(13));
        assert!(wait_before_take_over(small, big).is_some());
    }

    #[test]
    fn only_the_member_the_tracker_names_takes_over() {
        assert!(matches!(
            after_take_over(Ok(swarm("me")), &me()),
            AfterTakeOver::Lead(s) if s.leader == me()
        ));
        // Another member won first.
        assert!(matches!(
            after_take_over(Ok(swarm("other")), &me()),
            AfterTakeOver::Follow(why) if why.contains("other")
        ));
        // The leader is live and publishing, or the tracker is away: keep following.
        assert!(matches!(
            after_take_over(Err(rejected(409)), &me()),
            AfterTakeOver::Follow(_)
        ));
        assert!(matches!(
            after_take_over(Err(unreachable()), &me()),
            AfterTakeOver::Follow(_)
        ));
        assert!(matches!(
            after_take_over(Err(refused()), &me()),
            AfterTakeOver::Follow(_)
        ));
    }

    fn unserved(waited: Duration) -> DownloadError {
        DownloadError::Unserved {
            url: url::Url::parse("https://origin.example/big.iso")
                .unwrap()
                .into(),
            missing: shoal_engine::Missing {
                bytes: 4,
                total: 10,
                ranges: vec![shoal_core::ByteRange::new(6, 10).unwrap()],
                piece_size: Some(4),
            },
            waited,
            last_failure: None,
        }
    }

    #[test]
    fn after_a_swarm_that_waited_for_the_origin_the_fallback_waits_no_more() {
        let unserved = unserved(Duration::from_secs(30));
        let max_wait = Duration::from_secs(30);
        assert_eq!(fallback_wait(&unserved, max_wait), None);
        assert!(swarm_error_stands(&unserved));
        // A swarm that failed otherwise (its peers kept failing) leaves the whole wait.
        assert_eq!(fallback_wait(&network(), max_wait), Some(max_wait));
        assert!(!swarm_error_stands(&network()));
    }

    /// The wait runs from the last piece across parts, never below the floor, and a part that
    /// gave up is told as having waited since that piece.
    #[tokio::test(start_paused = true)]
    async fn a_members_wait_runs_from_its_last_piece_across_its_parts() {
        let mut waiting = Waiting::new(Duration::from_secs(30), 3);
        tokio::time::advance(Duration::from_secs(10)).await;
        waiting.held(3);
        assert_eq!(waiting.left(), Duration::from_secs(20), "no new piece");
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(waiting.left(), Duration::from_secs(5));
        let told = waiting.restate(unserved(Duration::from_secs(5)));
        assert!(
            told.to_string().contains("no source sent anything for 25s"),
            "{told}"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(waiting.left(), PART_WAIT_FLOOR);
        waiting.held(4);
        assert_eq!(waiting.left(), Duration::from_secs(30), "a piece came");
        assert!(matches!(
            waiting.restate(network()),
            DownloadError::Network { .. }
        ));
    }

    #[test]
    fn a_follower_whose_swarm_failed_takes_the_origin_unless_cancelled() {
        // The leader vanished: the download stalled.
        let stalled = fall_back_after_follow(AgentFetchError::Download(network())).unwrap();
        assert!(matches!(stalled, DownloadError::Network { .. }));
        let bad = fall_back_after_follow(AgentFetchError::Download(status(502))).unwrap();
        assert!(matches!(bad, DownloadError::HttpStatus { status: 502, .. }));

        let cancelled = fall_back_after_follow(AgentFetchError::Download(DownloadError::Cancelled));
        assert!(matches!(
            cancelled,
            Err(AgentFetchError::Download(DownloadError::Cancelled))
        ));
        let tracker = fall_back_after_follow(AgentFetchError::Tracker(refused()));
        assert!(matches!(tracker, Err(AgentFetchError::Tracker(_))));
        let local = fall_back_after_follow(AgentFetchError::Objects(ObjectsError {
            path: PathBuf::from("/data/objects/x"),
            op: "move into place",
            source: std::io::Error::other("disk full"),
        }));
        assert!(matches!(local, Err(AgentFetchError::Objects(_))));
        let none = fall_back_after_follow(AgentFetchError::NoTracker("a swarm".into()));
        assert!(matches!(none, Err(AgentFetchError::NoTracker(_))));
    }
}
