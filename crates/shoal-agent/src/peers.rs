//! The peers of one download, as the engine's swarm sources see them: named by the tracker
//! (asked again every [`REFRESH`]), and each one's bitfield then followed at the peer itself
//! (`GET /v1/pieces/{id}/have`, which answers as soon as the peer verified more), so a piece a
//! peer verifies is fetched from it within a round trip instead of after the tracker heard;
//! a peer that stops answering (it restarted) is followed again when the tracker next names it.
//! A tracker that stops answering leaves the peers known in place, with a warning; the
//! download then asks a few known peers each [`REFRESH`] for the members of the swarm they
//! know (peer exchange), so peers that joined meanwhile are found without the tracker. Every
//! peer known is kept in the content's catalog entry, for other agents that ask this one.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_core::wire::peer::{self, HaveQuery, KnownPeer, PeerHave};
use shoal_core::wire::{AgentId, PeersQuery};
use shoal_core::{Bitfield, ContentId, Layout};
use shoal_engine::ca::{self, ExtraRoots};
use shoal_engine::{CancellationToken, PeerSource};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use url::Url;

use crate::catalog::Catalog;
use crate::exchange::Exchange;
use crate::tracker::{TrackerClient, TrackerError};

/// How often the tracker is asked for peers while a download runs: for peers that join, since
/// known peers' bitfields are followed at the peers.
pub const REFRESH: Duration = Duration::from_secs(1);
/// ... in its first seconds, when the others starting with it join ([`JOINING`]) ...
const JOIN_REFRESH: Duration = Duration::from_millis(100);
const JOINING: Duration = Duration::from_secs(3);
/// ... and while no peer is known yet: a swarm that starts together finds itself fast.
const FIRST_REFRESH: Duration = Duration::from_millis(50);
/// Known peers asked for the peers they know, each [`REFRESH`] while the tracker fails.
const EXCHANGE_WITH: usize = 3;

/// What to follow.
pub struct Watch {
    /// The tracker to ask for peers; `None` in an agent without one, so no peers are found.
    pub tracker: Option<TrackerClient>,
    /// This agent, left out of the peers answers.
    pub me: AgentId,
    /// The content (or swarm id) whose peers to follow.
    pub content: ContentId,
    /// Its file size and piece size, to read the peers' bitfields.
    pub layout: Layout,
    /// A URL swarm's leader as it is now (another member takes over when it dies), marked as
    /// a seed for the scheduler.
    pub leader: Option<watch::Receiver<AgentId>>,
    /// The fleet token peers want.
    pub token: String,
    /// CAs trusted besides the system's, for peers that serve HTTPS.
    pub ca: Option<ExtraRoots>,
    /// Where the content's entry records the peers known, for peers that ask this agent.
    pub catalog: Catalog,
}

/// Starts following the peers of `watch.content`: the first list is in the receiver before
/// this returns (otherwise every piece would look held by no one, and an origin fallback would
/// take them all). Runs until `stop` fires; await the handle after.
pub async fn follow(
    watch: Watch,
    stop: CancellationToken,
) -> (watch::Receiver<Vec<PeerSource>>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(Vec::new());
    let book = Arc::new(Book {
        known: Mutex::default(),
        polled: Mutex::default(),
        tx,
        http: ca::client_builder(watch.ca.as_ref())
            .connect_timeout(Duration::from_secs(3))
            .timeout(peer::HAVE_WAIT + Duration::from_secs(5))
            .no_proxy()
            .build()
            .expect("a client of certificates already parsed builds"),
        exchange: Exchange::new(watch.token.clone(), watch.ca.as_ref()),
        asked: AtomicUsize::new(0),
        exchanged: Mutex::default(),
        watch,
        stop,
    });
    if let Some(tracker) = &book.watch.tracker {
        if let Ok(peers) = peers_of(tracker, &book.watch).await {
            book.take(peers);
        }
    }
    let handle = tokio::spawn(refresh(book));
    (rx, handle)
}

struct Book {
    /// The latest of every peer, by name.
    known: Mutex<BTreeMap<String, PeerSource>>,
    /// Peers whose bitfield is followed at the peer.
    polled: Mutex<HashSet<String>>,
    tx: watch::Sender<Vec<PeerSource>>,
    http: reqwest::Client,
    exchange: Exchange,
    /// Exchange requests made, to ask other peers each round.
    asked: AtomicUsize,
    /// When peers were last asked: at most once a [`REFRESH`], however often the tracker is.
    exchanged: Mutex<Option<tokio::time::Instant>>,
    watch: Watch,
    stop: CancellationToken,
}

impl Book {
    /// Takes in peers named by the tracker or a peer; a peer's own bitfield, when newer, is
    /// kept.
    fn take(self: &Arc<Self>, peers: Vec<(KnownPeer, PeerSource)>) {
        if let Some(entry) = self.watch.catalog.get(&self.watch.content) {
            entry.meet(peers.iter().map(|(known, _)| known.clone()));
        }
        {
            let mut known = self.known.lock().expect("known lock");
            for (_, mut peer) in peers {
                if let Some(old) = known.get(&peer.name) {
                    peer.have = union(&old.have, &peer.have);
                }
                known.insert(peer.name.clone(), peer);
            }
        }
        self.publish();
        let names: Vec<(String, Url)> = self
            .known
            .lock()
            .expect("known lock")
            .values()
            .filter(|p| p.have.is_some())
            .map(|p| (p.name.clone(), p.url.clone()))
            .collect();
        for (name, url) in names {
            if self
                .polled
                .lock()
                .expect("polled lock")
                .insert(name.clone())
            {
                tokio::spawn(poll(self.clone(), name, url));
            }
        }
    }

    /// Asks a few known peers for the members of the swarm they know, and takes in those
    /// not known yet (their bitfields are then followed at them).
    async fn exchange(self: &Arc<Self>) {
        let Some(entry) = self.watch.catalog.get(&self.watch.content) else {
            return;
        };
        let members = entry.peers();
        if members.is_empty() {
            return;
        }
        {
            let mut last = self.exchanged.lock().expect("exchanged lock");
            if last.is_some_and(|at| at.elapsed() < REFRESH) {
                return;
            }
            *last = Some(tokio::time::Instant::now());
        }
        let first = self.asked.fetch_add(EXCHANGE_WITH, Ordering::Relaxed);
        let asked =
            (0..EXCHANGE_WITH.min(members.len())).map(|i| &members[(first + i) % members.len()]);
        let mut found = Vec::new();
        for known in asked {
            match self.exchange.peers(known, &self.watch.content).await {
                Ok(list) => found.extend(list.peers),
                Err(e) => debug!(content = %self.watch.content, "{e}"),
            }
        }
        let new: Vec<(KnownPeer, PeerSource)> = {
            let known = self.known.lock().expect("known lock");
            let pieces = self.watch.layout.piece_count();
            found
                .into_iter()
                .filter(|p| p.id != self.watch.me && !known.contains_key(p.id.as_str()))
                .filter_map(|p| {
                    // Nothing is known of what it holds until its bitfield is asked.
                    let source = source(&self.watch, &p, Some(Bitfield::new(pieces)))?;
                    Some((p, source))
                })
                .collect()
        };
        if !new.is_empty() {
            info!(
                content = %self.watch.content,
                peers = new.len(),
                "found peers through other peers while the tracker does not answer"
            );
            self.take(new);
        }
    }

    fn update(&self, name: &str, have: Option<Bitfield>) {
        if let Some(peer) = self.known.lock().expect("known lock").get_mut(name) {
            peer.have = union(&peer.have, &have);
        }
        self.publish();
    }

    fn publish(&self) {
        let peers: Vec<PeerSource> = self
            .known
            .lock()
            .expect("known lock")
            .values()
            .cloned()
            .collect();
        self.tx.send_if_modified(|old| {
            let changed = *old != peers;
            *old = peers;
            changed
        });
    }
}

/// What both say a peer holds: pieces are only ever added, so the union is the newer view.
fn union(a: &Option<Bitfield>, b: &Option<Bitfield>) -> Option<Bitfield> {
    match (a, b) {
        (Some(a), Some(b)) if a.len() == b.len() => {
            let mut both = a.clone();
            b.ones().for_each(|p| both.set(p));
            Some(both)
        }
        (Some(_), Some(b)) => Some(b.clone()),
        _ => None,
    }
}

async fn refresh(book: Arc<Book>) {
    let Some(tracker) = book.watch.tracker.clone() else {
        return;
    };
    let mut warned = false;
    let started = tokio::time::Instant::now();
    loop {
        let every = if book.tx.borrow().is_empty() {
            FIRST_REFRESH
        } else if started.elapsed() < JOINING {
            JOIN_REFRESH
        } else {
            REFRESH
        };
        tokio::select! {
            _ = book.stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match peers_of(&tracker, &book.watch).await {
            Ok(peers) => {
                warned = false;
                book.take(peers);
            }
            // Nobody announced it yet (a swarm whose leader has not registered it), or a
            // tracker back from a restart has not heard from the others yet.
            Err(e) if e.is_not_found() => book.exchange().await,
            Err(e) => {
                if !warned {
                    warn!(
                        content = %book.watch.content,
                        "{e}; going on with the {} peers known (and the origin, if any), \
                         asking them for the others",
                        book.tx.borrow().len()
                    );
                    warned = true;
                }
                book.exchange().await;
            }
        }
    }
}

/// Follows one peer's bitfield at the peer until it holds everything, stops answering, or
/// the download ends. A peer that stops answering (it restarted, or refused for a moment) is
/// followed again once the tracker names it again, at the next refresh.
async fn poll(book: Arc<Book>, name: String, pieces_url: Url) {
    if follow_bitfield(&book, &name, pieces_url).await == Followed::Lost {
        book.polled.lock().expect("polled lock").remove(&name);
    }
}

/// How following a peer's bitfield ended.
#[derive(PartialEq, Eq)]
enum Followed {
    /// It holds everything, or the download ended.
    Done,
    /// It did not answer, or answered something unreadable.
    Lost,
}

/// [`poll`]'s loop.
async fn follow_bitfield(book: &Book, name: &str, pieces_url: Url) -> Followed {
    let Ok(url) = pieces_url.join(&peer::path::have(&book.watch.content)) else {
        return Followed::Done;
    };
    let pieces = book.watch.layout.piece_count();
    let mut after: Option<u32> = None;
    loop {
        let mut asked = url.clone();
        if after.is_some() {
            let query = serde_urlencoded::to_string(HaveQuery { after });
            asked.set_query(Some(&query.expect("a query serializes")));
        }
        let request = book.http.get(asked).bearer_auth(&book.watch.token).send();
        let answer = tokio::select! {
            _ = book.stop.cancelled() => return Followed::Done,
            answer = request => answer,
        };
        let have: PeerHave = match answer.and_then(|r| r.error_for_status()) {
            Ok(response) => match response.json().await {
                Ok(have) => have,
                Err(e) => {
                    debug!(peer = %name, "unreadable bitfield: {e}");
                    return Followed::Lost;
                }
            },
            Err(e) => {
                debug!(peer = %name, "stopped following its bitfield for now: {e}");
                return Followed::Lost;
            }
        };
        let bits = match have.to_bitfield(pieces) {
            Ok(bits) => bits,
            Err(e) => {
                debug!(peer = %name, "bad bitfield: {e}");
                return Followed::Lost;
            }
        };
        let complete = bits.is_none();
        book.update(name, bits);
        if complete {
            return Followed::Done;
        }
        after = Some(have.count);
    }
}

/// `known` as a source of `watch.content`'s pieces `have` (`None`: all of them), over HTTPS
/// when it serves that.
fn source(watch: &Watch, known: &KnownPeer, have: Option<Bitfield>) -> Option<PeerSource> {
    let id = &known.id;
    let url = Url::parse(&format!(
        "{}{}",
        known.scheme.base(known.addr),
        peer::path::pieces(&watch.content)
    ))
    .ok()?;
    Some(PeerSource {
        // The leader as it is when the peer is named: after a takeover, the new one.
        seed: watch.leader.as_ref().is_some_and(|l| *l.borrow() == *id),
        name: id.to_string(),
        url,
        have,
    })
}

/// The peers the tracker names, as sources of the pieces their bitfields say.
async fn peers_of(
    tracker: &TrackerClient,
    watch: &Watch,
) -> Result<Vec<(KnownPeer, PeerSource)>, TrackerError> {
    let query = PeersQuery {
        k: Some(50),
        agent: Some(watch.me.clone()),
    };
    let answer = tracker.peers(&watch.content, &query).await?;
    let pieces = watch.layout.piece_count();
    Ok(answer
        .peers
        .into_iter()
        .filter(|p| p.id != watch.me)
        .filter_map(|p| {
            let have = match p.pieces {
                Some(bits) => Some(bits.to_bitfield(pieces).ok()?),
                None => None,
            };
            let known = KnownPeer {
                id: p.id,
                addr: p.addr,
                scheme: p.scheme,
            };
            let source = source(watch, &known, have)?;
            Some((known, source))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use shoal_core::wire::peer::KnownPeer;
    use shoal_core::wire::Scheme;

    use super::*;
    use crate::catalog::Entry;
    use crate::testing::{self, TOKEN};

    /// A catalog holding a provisional entry of `content` that knows `peers`.
    fn catalog_knowing(content: ContentId, layout: Layout, peers: Vec<KnownPeer>) -> Catalog {
        let catalog = Catalog::new();
        let entry = Entry::provisional(content, layout, "f".into(), "/nowhere".into());
        entry.meet(peers);
        catalog.insert(Arc::new(entry));
        catalog
    }

    /// Agent `b` following `content`'s peers, named by the tracker at `tracker`.
    fn watch_as_b(tracker: Url, content: ContentId, layout: Layout, catalog: Catalog) -> Watch {
        Watch {
            tracker: Some(TrackerClient::new(tracker, TOKEN.into())),
            me: AgentId::new("b").unwrap(),
            content,
            layout,
            leader: None,
            token: TOKEN.into(),
            ca: None,
            catalog,
        }
    }

    fn known(id: &str, addr: SocketAddr) -> KnownPeer {
        KnownPeer {
            id: AgentId::new(id).unwrap(),
            addr,
            scheme: Scheme::Http,
        }
    }

    #[tokio::test]
    async fn while_the_tracker_is_down_known_peers_name_the_others() {
        let content = ContentId::from_bytes([4; 32]);
        let layout = Layout::new(10 << 20, 1 << 20).unwrap();
        // Peer "a" knows "c", which this agent has not heard of.
        let c_addr = SocketAddr::from(([127, 0, 0, 1], 9));
        let a_catalog = catalog_knowing(content, layout, vec![known("c", c_addr)]);
        let stop = CancellationToken::new();
        let a_addr = testing::serve_pieces(a_catalog, &stop).await;
        let dead = testing::refusing_url();

        let me = catalog_knowing(content, layout, vec![known("a", a_addr)]);
        let (mut peers, task) =
            follow(watch_as_b(dead, content, layout, me.clone()), stop.clone()).await;
        let found = tokio::time::timeout(
            Duration::from_secs(30),
            peers.wait_for(|list| list.iter().any(|p| p.name == "c")),
        )
        .await
        .expect("no peer named c within 30 s")
        .unwrap()
        .clone();
        let c = found.iter().find(|p| p.name == "c").unwrap();
        assert_eq!(c.url.port(), Some(9));
        assert_eq!(c.have.as_ref().map(Bitfield::count_ones), Some(0));
        // And this agent now tells others of it too.
        let entry = me.get(&content).unwrap();
        assert_eq!(
            entry.peer(&AgentId::new("c").unwrap()).map(|p| p.addr),
            Some(c_addr)
        );
        stop.cancel();
        task.await.unwrap();
    }

    /// A tracker on loopback naming one peer, `a` at `addr`, holding nothing of `content`.
    async fn tracker_naming_a(
        content: ContentId,
        layout: Layout,
        addr: SocketAddr,
        stop: &CancellationToken,
    ) -> Url {
        use shoal_core::wire::{PackedBits, Peer, PeersResponse};
        let answer = PeersResponse {
            content,
            layout,
            peers: vec![Peer {
                id: AgentId::new("a").unwrap(),
                addr,
                scheme: Scheme::Http,
                upload_capacity: 0,
                load: 0,
                complete: false,
                pieces: Some(PackedBits::of(&Bitfield::new(layout.piece_count()))),
            }],
        };
        testing::answering(answer, stop).await
    }

    #[tokio::test]
    async fn a_peer_that_did_not_answer_is_followed_again_once_it_does() {
        let content = ContentId::from_bytes([5; 32]);
        let layout = Layout::new(4 << 20, 1 << 20).unwrap();
        // Peer "a" is named before it listens (an agent restarting): its first bitfield
        // request is refused.
        let a_addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let stop = CancellationToken::new();
        let tracker = tracker_naming_a(content, layout, a_addr, &stop).await;
        let watch = watch_as_b(tracker, content, layout, Catalog::new());
        let (mut peers, task) = follow(watch, stop.clone()).await;
        assert!(peers.borrow().iter().any(|p| p.name == "a"));
        tokio::time::sleep(Duration::from_millis(300)).await;

        // Now it listens, holding piece 2, which only its own bitfield tells.
        let a_catalog = Catalog::new();
        let entry = Entry::provisional(content, layout, "f".into(), "/nowhere".into());
        entry.mark(layout.piece(2).unwrap());
        a_catalog.insert(Arc::new(entry));
        let server = crate::serve::PieceServer::new(
            a_catalog,
            crate::serve::ServeOptions {
                tokens: vec![TOKEN.into()],
                ..crate::serve::ServeOptions::default()
            },
        );
        let listener = tokio::net::TcpListener::bind(a_addr).await.unwrap();
        let serving = stop.clone();
        tokio::spawn(crate::serve::run(listener, server, async move {
            serving.cancelled().await
        }));
        let holds_2 = |list: &Vec<PeerSource>| {
            list.iter()
                .any(|p| p.name == "a" && p.have.as_ref().is_some_and(|h| h.get(2)))
        };
        tokio::time::timeout(Duration::from_secs(30), peers.wait_for(holds_2))
            .await
            .expect("peer a's bitfield was not followed again within 30 s")
            .unwrap();
        stop.cancel();
        task.await.unwrap();
    }

    #[test]
    fn the_union_of_two_views_is_the_newer() {
        let mut a = Bitfield::new(4);
        a.set(0);
        let mut b = Bitfield::new(4);
        b.set(2);
        let both = union(&Some(a.clone()), &Some(b)).unwrap();
        assert_eq!(both.ones().collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(union(&Some(a.clone()), &None), None);
        assert_eq!(union(&None, &Some(a)), None);
    }
}
