//! Which pieces of a swarm download to ask which peer for: the piece policy of the one
//! scheduler when its sources are peers.
//!
//! Rarest first, random among equals, so peers that start together fetch different pieces and
//! can trade them. On top of that, the upload of a *seed* (a peer holding everything, or a URL
//! swarm's leader, which is ahead of everyone) is kept for first copies: a piece only seeds
//! hold is taken from a seed by one downloader alone, the one the piece is *designated* to
//! (round robin over the downloaders still progressing, in name order: the same choice on
//! every agent, and an equal share for each), and the others fetch it from that downloader once it has it. A piece some other peer
//! holds is never taken from a seed. So each piece leaves the seed about once, as in
//! BitTorrent's super-seeding, and the downloaders' uplinks carry the rest. A downloader whose
//! bitfield has not grown for [`PROGRESSING`] is no longer designated anything, so a dead or
//! stuck one holds nobody up for long.
//!
//! A peer measured far slower than the typical one (see [`judge_speeds`]) is asked only for pieces
//! no faster peer holds, and its holdings do not keep a seed from serving a piece: what it
//! holds is fetched from faster holders instead of through its narrow uplink. A URL swarm's
//! leader is asked for its first copies however it is measured.
//!
//! A URL swarm's leader asks its origin for more only while it owes its downloaders few first
//! copies (see [`owes_first_copies`]): its uplink has no more room than its origin link, so
//! what it fetches ahead of handing it out only waits there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use shoal_core::{Bitfield, ByteRange, Layout, PieceIndex};
use tokio::time::Instant;

use crate::options::PeerSource;

/// A downloader counts as progressing while its bitfield grew (or it appeared) this recently.
pub(crate) const PROGRESSING: Duration = Duration::from_secs(3);
/// A peer whose measured speed per connection is this many times below the typical peer's is
/// slow. Peers' speeds per connection differ by their connection count and by how many others
/// they serve, a factor of two or so in a healthy swarm; an uplink capped at a tenth of the
/// others' is well past this.
pub(crate) const SLOW_PEER: f64 = 4.0;

/// What the scheduler knows of one peer.
pub(crate) struct PeerState {
    pub name: String,
    /// `None` when it holds every piece.
    have: RwLock<Option<Bitfield>>,
    /// The caller says its upload is for first copies (a URL swarm's leader).
    leader: AtomicBool,
    /// When its bitfield last changed.
    changed_at: Mutex<Instant>,
    /// Measured far slower than the typical peer (see [`judge_speeds`]).
    slow: AtomicBool,
}

impl PeerState {
    pub(crate) fn new(peer: &PeerSource) -> Self {
        Self {
            name: peer.name.clone(),
            have: RwLock::new(peer.have.clone()),
            leader: AtomicBool::new(peer.seed),
            changed_at: Mutex::new(Instant::now()),
            slow: AtomicBool::new(false),
        }
    }

    /// Takes in what the peer holds now.
    pub(crate) fn update(&self, peer: &PeerSource) {
        let mut have = self.have.write().expect("have lock");
        if *have != peer.have {
            *have = peer.have.clone();
            *self.changed_at.lock().expect("changed lock") = Instant::now();
        }
        self.leader.store(peer.seed, Ordering::Relaxed);
    }

    /// Its upload is for first copies: it holds every piece, or leads a URL swarm.
    pub(crate) fn is_seed(&self) -> bool {
        self.leader.load(Ordering::Relaxed) || self.have.read().expect("have lock").is_none()
    }

    fn progressing(&self, now: Instant) -> bool {
        now.duration_since(*self.changed_at.lock().expect("changed lock")) < PROGRESSING
    }

    /// Whether it stopped counting as progressing after `before` and by `now`.
    pub(crate) fn stopped_progressing(&self, before: Instant, now: Instant) -> bool {
        let until = *self.changed_at.lock().expect("changed lock") + PROGRESSING;
        before < until && until <= now
    }

    /// Whether the caller says it leads a URL swarm.
    pub(crate) fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Whether it was last measured far slower than the typical peer.
    pub(crate) fn is_slow(&self) -> bool {
        self.slow.load(Ordering::Relaxed)
    }
}

/// Marks slow each peer whose measured speed per connection is [`SLOW_PEER`] times below the
/// typical peer's (the upper median), and not slow the others; `peers` are the live ones with
/// their measured bytes per second per connection (`None`: not measured yet, left as they
/// are). The median, not the fastest: in a healthy swarm one peer's connection may have the
/// downloader's link to itself for a moment (a leader serving its designated pieces), and
/// measured against that the busy others all looked slow. Returns the peers newly found slow.
pub(crate) fn judge_speeds<'a>(peers: &[(&'a PeerState, Option<f64>)]) -> Vec<&'a PeerState> {
    let mut speeds: Vec<f64> = peers.iter().filter_map(|(_, speed)| *speed).collect();
    speeds.sort_unstable_by(f64::total_cmp);
    let Some(&typical) = speeds.get(speeds.len() / 2) else {
        return Vec::new();
    };
    let mut newly = Vec::new();
    for &(peer, speed) in peers {
        let Some(speed) = speed else { continue };
        let slow = speed * SLOW_PEER < typical;
        if peer.slow.swap(slow, Ordering::Relaxed) != slow && slow {
            newly.push(peer);
        }
    }
    newly
}

/// Bytes of first copies a URL swarm's leader may owe beyond one piece per downloader, before
/// its origin waits (see [`owes_first_copies`]): pieces verified while the news of the last
/// ones travels (a few round trips), so more of them when they are small.
const FIRST_COPIES_SLACK: u64 = 2 << 20;

/// Whether a URL swarm's leader that verified `verified` owes its downloaders more first
/// copies than they take in: pieces that no other peer (not slow) holds yet, more than one per
/// downloader still progressing and [`FIRST_COPIES_SLACK`]'s worth. Its origin then waits.
/// The leader's uplink sends each piece about once, as fast as the origin sends them: with
/// links alike it has no slack, and a piece waiting there holds up every downloader behind
/// it, so fetching further ahead only lengthens that queue (6 × 200 Mbit, 1 MiB pieces: the
/// followers ended 1–3 s after the leader). With no downloader progressing there is nobody
/// to wait for.
pub(crate) fn owes_first_copies(layout: Layout, peers: &[&PeerState], verified: &Bitfield) -> bool {
    let now = Instant::now();
    let seen: Vec<Seen<'_>> = peers.iter().map(|&peer| Seen::of(peer)).collect();
    let progressing = seen
        .iter()
        .filter(|s| !s.seed && s.peer.progressing(now))
        .count();
    if progressing == 0 {
        return false;
    }
    let holders: Vec<&Seen<'_>> = seen.iter().filter(|s| !s.slow).collect();
    let owed = layout
        .pieces()
        .filter(|&p| verified.get(p.get()) && !holders.iter().any(|s| s.holds(p)))
        .count();
    let slack = FIRST_COPIES_SLACK.div_ceil(layout.piece_size()) as usize;
    owed > progressing + slack
}

/// Who is asked.
pub(crate) enum Asked<'a> {
    Peer(&'a PeerState),
    /// The origin of the swarm: only pieces no live peer holds.
    Origin,
}

/// One peer as [`order`] sees it, read once.
struct Seen<'a> {
    peer: &'a PeerState,
    have: Option<Bitfield>,
    seed: bool,
    slow: bool,
}

impl<'a> Seen<'a> {
    fn of(peer: &'a PeerState) -> Self {
        // One read of the lock: a second one while the first is held would deadlock against
        // a waiting writer.
        let have = peer.have.read().expect("have lock").clone();
        let seed = peer.leader.load(Ordering::Relaxed) || have.is_none();
        Seen {
            peer,
            have,
            seed,
            slow: peer.is_slow(),
        }
    }

    fn holds(&self, piece: PieceIndex) -> bool {
        self.have.as_ref().is_none_or(|bits| bits.get(piece.get()))
    }
}

/// The pieces `asked` may be given, in the order to ask for them; `peers` are the live ones
/// (not dropped), `me` this downloader's name.
pub(crate) fn order(
    layout: Layout,
    me: &str,
    peers: &[&PeerState],
    asked: Asked<'_>,
) -> Vec<ByteRange> {
    let count = layout.piece_count() as usize;
    let now = Instant::now();
    let seen: Vec<Seen<'_>> = peers.iter().map(|&peer| Seen::of(peer)).collect();
    let mut holders = vec![0u32; count];
    // Holders that are not slow, and those of them that are downloaders: a piece only a slow
    // downloader holds is still a first copy for a seed to give.
    let mut by_fast = vec![0u32; count];
    let mut by_downloaders = vec![0u32; count];
    for s in &seen {
        for p in layout.pieces() {
            if s.holds(p) {
                holders[p.get() as usize] += 1;
                if !s.slow {
                    by_fast[p.get() as usize] += 1;
                    if !s.seed {
                        by_downloaders[p.get() as usize] += 1;
                    }
                }
            }
        }
    }
    // Downloaders that may be designated pieces, by name; I am one of them.
    let mut downloaders: Vec<&Seen<'_>> = seen
        .iter()
        .filter(|s| !s.seed && s.peer.progressing(now) && s.peer.name.as_str() != me)
        .collect();
    downloaders.sort_by(|a, b| a.peer.name.cmp(&b.peer.name));
    // Round robin over those lacking the piece, in name order: every agent with the same view
    // makes the same choice, and each downloader gets an equal share of first copies (an
    // uneven share would make the busiest one's uplink everyone's bottleneck).
    let designated_to_me = |p: PieceIndex| {
        let lacking: Vec<&str> = downloaders
            .iter()
            .filter(|d| !d.holds(p))
            .map(|d| d.peer.name.as_str())
            .collect();
        let mine = lacking.partition_point(|&name| name < me);
        p.get() as usize % (lacking.len() + 1) == mine
    };
    let asked = match asked {
        Asked::Origin => None,
        Asked::Peer(peer) => Some(Seen::of(peer)),
    };
    let allowed = |p: PieceIndex| match &asked {
        None => holders[p.get() as usize] == 0,
        Some(peer) if !peer.holds(p) => false,
        // Never the leader: its pieces are first copies, and a peer that only claims to hold
        // them (a liar claiming everything, fast because its claims cost it nothing) would
        // leave the swarm with no source for them.
        Some(peer) if peer.slow && !peer.peer.is_leader() && by_fast[p.get() as usize] > 0 => false,
        Some(peer) if peer.seed => by_downloaders[p.get() as usize] == 0 && designated_to_me(p),
        Some(_) => true,
    };
    let mut order: Vec<(u32, u32, PieceIndex)> = layout
        .pieces()
        .filter(|&p| allowed(p))
        .map(|p| (holders[p.get() as usize], rand::random::<u32>(), p))
        .collect();
    order.sort_unstable();
    order.into_iter().map(|(_, _, p)| layout.range(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    fn peer(name: &str, have: Option<&[u32]>, seed: bool) -> PeerState {
        PeerState::new(&PeerSource {
            name: name.into(),
            url: Url::parse("http://127.0.0.1:1/").unwrap(),
            have: have.map(|ones| {
                let mut bits = Bitfield::new(8);
                ones.iter().for_each(|&p| bits.set(p));
                bits
            }),
            seed,
        })
    }

    /// The moment a downloader stops counting as progressing is seen once, by the tick
    /// whose interval holds it, and news of its bitfield starts the count again.
    #[tokio::test(start_paused = true)]
    async fn a_peer_stops_progressing_once_news_of_it_is_too_old() {
        let step = Duration::from_millis(100);
        let p = peer("b", Some(&[0]), false);
        let mut before = Instant::now();
        let mut stopped = Vec::new();
        for tick in 1..=40u32 {
            tokio::time::advance(step).await;
            let now = Instant::now();
            if p.stopped_progressing(before, now) {
                stopped.push(tick);
            }
            before = now;
        }
        assert_eq!(stopped, [30], "at PROGRESSING after its news, once");
        assert!(!p.progressing(Instant::now()));

        p.update(&PeerSource {
            name: "b".into(),
            url: Url::parse("http://127.0.0.1:1/").unwrap(),
            have: Some(Bitfield::new(8)),
            seed: false,
        });
        let news = Instant::now();
        assert!(p.progressing(news));
        tokio::time::advance(PROGRESSING).await;
        assert!(p.stopped_progressing(news, Instant::now()));
    }

    fn bits(count: u32, ones: impl IntoIterator<Item = u32>) -> Bitfield {
        let mut bits = Bitfield::new(count);
        ones.into_iter().for_each(|p| bits.set(p));
        bits
    }

    fn downloader(name: &str, have: Bitfield) -> PeerState {
        PeerState::new(&PeerSource {
            name: name.into(),
            url: Url::parse("http://127.0.0.1:1/").unwrap(),
            have: Some(have),
            seed: false,
        })
    }

    /// Two downloaders of 1 MiB pieces may be owed 2 + 2 first copies; a fifth holds the
    /// origin back, until a downloader has one of them. With 256 KiB pieces, 2 + 8.
    #[tokio::test(start_paused = true)]
    async fn a_leader_owing_many_first_copies_holds_its_origin_back() {
        let layout = Layout::new(32 << 20, 1 << 20).unwrap();
        let a = downloader("a", bits(32, [0, 1]));
        let b = downloader("b", bits(32, [0]));
        let four = bits(32, 0..6);
        let five = bits(32, 0..7);
        assert!(!owes_first_copies(layout, &[&a, &b], &four));
        assert!(owes_first_copies(layout, &[&a, &b], &five));
        let small = Layout::new(8 << 20, 256 << 10).unwrap();
        assert!(!owes_first_copies(small, &[&a, &b], &bits(32, 0..12)));
        assert!(owes_first_copies(small, &[&a, &b], &bits(32, 0..13)));

        b.update(&PeerSource {
            name: "b".into(),
            url: Url::parse("http://127.0.0.1:1/").unwrap(),
            have: Some(bits(32, [0, 2])),
            seed: false,
        });
        assert!(!owes_first_copies(layout, &[&a, &b], &five));

        // A holder measured slow does not count: its copy is not one to fetch.
        b.slow.store(true, Ordering::Relaxed);
        assert!(owes_first_copies(layout, &[&a, &b], &five));
        b.slow.store(false, Ordering::Relaxed);

        // A peer holding everything holds every first copy.
        let seed = peer("s", None, false);
        assert!(!owes_first_copies(layout, &[&a, &seed], &bits(32, 0..32)));

        // Nobody progressing: nobody to wait for.
        tokio::time::advance(PROGRESSING).await;
        assert!(!owes_first_copies(layout, &[&a, &b], &bits(32, 0..32)));
    }

    fn pieces(layout: Layout, ranges: Vec<ByteRange>) -> Vec<u32> {
        let mut out: Vec<u32> = ranges
            .iter()
            .map(|r| layout.piece_at(r.start()).unwrap().get())
            .collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn a_seeds_pieces_are_shared_out_among_the_downloaders() {
        let layout = Layout::new(8 << 20, 1 << 20).unwrap();
        let seed = peer("seed", None, false);
        let (a, b, c) = (
            peer("a", Some(&[]), false),
            peer("b", Some(&[]), false),
            peer("c", Some(&[]), false),
        );
        let mut seen = Vec::new();
        for me in ["a", "b", "c"] {
            let others: Vec<&PeerState> = [&seed, &a, &b, &c]
                .into_iter()
                .filter(|p| p.name != me)
                .collect();
            seen.extend(pieces(
                layout,
                order(layout, me, &others, Asked::Peer(&seed)),
            ));
        }
        seen.sort_unstable();
        // Every piece is designated to exactly one of the three.
        assert_eq!(seen, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn a_piece_a_downloader_holds_is_never_taken_from_the_seed() {
        let layout = Layout::new(8 << 20, 1 << 20).unwrap();
        let leader = peer("leader", Some(&[0, 1, 2, 3]), true);
        let b = peer("b", Some(&[0, 1]), false);
        let from_leader = pieces(
            layout,
            order(layout, "a", &[&leader, &b], Asked::Peer(&leader)),
        );
        assert!(
            from_leader.iter().all(|p| [2, 3].contains(p)),
            "{from_leader:?}"
        );
        let from_b = pieces(layout, order(layout, "a", &[&leader, &b], Asked::Peer(&b)));
        assert_eq!(from_b, vec![0, 1]);
        let from_origin = pieces(layout, order(layout, "a", &[&leader, &b], Asked::Origin));
        assert_eq!(from_origin, vec![4, 5, 6, 7]);
    }

    #[test]
    fn a_slow_peers_pieces_go_to_faster_holders() {
        let layout = Layout::new(8 << 20, 1 << 20).unwrap();
        let leader = peer("leader", Some(&[0, 1, 2, 3]), true);
        let slow = peer("slow", Some(&[0, 1, 4]), false);
        let judged = judge_speeds(&[(&leader, Some(4e6)), (&slow, Some(2e5))]);
        assert_eq!(judged.len(), 1);
        assert!(slow.is_slow() && !leader.is_slow());
        // Found slow once: said once.
        assert!(judge_speeds(&[(&leader, Some(4e6)), (&slow, Some(2e5))]).is_empty());
        let peers = [&leader, &slow];
        // The leader gives what only the slow downloader holds (and piece 2, designated to
        // me; 3 is the slow one's to take first); the slow one keeps only what no faster peer
        // holds.
        let from_leader = pieces(layout, order(layout, "a", &peers, Asked::Peer(&leader)));
        assert_eq!(from_leader, vec![0, 1, 2]);
        let from_slow = pieces(layout, order(layout, "a", &peers, Asked::Peer(&slow)));
        assert_eq!(from_slow, vec![4]);
        // Measured fast again, it is an ordinary downloader again.
        assert!(judge_speeds(&[(&leader, Some(4e6)), (&slow, Some(3e6))]).is_empty());
        assert!(!slow.is_slow());
        let from_leader = pieces(layout, order(layout, "a", &peers, Asked::Peer(&leader)));
        assert_eq!(from_leader, vec![2]);
    }

    #[test]
    fn busy_peers_are_not_slow_beside_one_that_has_the_link_to_itself() {
        let names = ["leader", "b", "c", "d", "e", "narrow"];
        let peers: Vec<PeerState> = names.iter().map(|n| peer(n, Some(&[]), false)).collect();
        // The leader's one connection has the link to itself; b..e share theirs among many
        // downloaders; the narrow one's uplink is a tenth of theirs.
        let speeds = [12e6, 2.5e6, 2e6, 3e6, 2.2e6, 2e5];
        let measured: Vec<(&PeerState, Option<f64>)> = peers
            .iter()
            .zip(speeds)
            .map(|(p, s)| (p, Some(s)))
            .collect();
        let judged: Vec<&str> = judge_speeds(&measured)
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(judged, vec!["narrow"]);
    }

    #[test]
    fn a_leader_measured_slow_still_gives_first_copies_beside_a_peer_claiming_everything() {
        let layout = Layout::new(8 << 20, 1 << 20).unwrap();
        // The leader shares its uplink with a liar that claims every piece and answers fast.
        let leader = peer("leader", Some(&[0, 1, 2, 3]), true);
        let liar = peer("liar", None, false);
        let (b, c) = (peer("b", Some(&[]), false), peer("c", Some(&[]), false));
        let judged = judge_speeds(&[
            (&leader, Some(1e5)),
            (&liar, Some(4e6)),
            (&b, Some(4e6)),
            (&c, Some(4e6)),
        ]);
        assert_eq!(judged.len(), 1);
        assert!(leader.is_slow());
        let peers = [&leader, &liar, &b, &c];
        // My share of the first copies (round robin over a, b and c), as without the liar.
        let from_leader = pieces(layout, order(layout, "a", &peers, Asked::Peer(&leader)));
        assert_eq!(from_leader, vec![0, 3]);
    }

    #[test]
    fn alone_with_a_seed_everything_is_mine() {
        let layout = Layout::new(8 << 20, 1 << 20).unwrap();
        let seed = peer("seed", None, false);
        let stuck = peer("stuck", Some(&[]), false);
        *stuck.changed_at.lock().unwrap() = Instant::now() - PROGRESSING;
        let all = pieces(
            layout,
            order(layout, "a", &[&seed, &stuck], Asked::Peer(&seed)),
        );
        assert_eq!(all, (0..8).collect::<Vec<_>>());
    }
}
