//! The store test suite, written once against the `Store` trait. A backend runs all of it with
//! one line:
//! `store_suite!(name, |clock: Clock, swarms: SwarmLimits| async move { (store, guard) });`
//! The clock is the one the store's leases follow; the suite moves it forward. `swarms` are the
//! swarm limits the store must use ([`swarm_limits`]). The guard lives as long as the case
//! (e.g. the Redis server the store talks to); `()` when none is needed.

mod takeover;

use std::sync::Arc;
use std::time::Duration;

use shoal_core::wire::{
    AgentId, AnnounceRequest, HeartbeatRequest, Holding, PackedBits, PieceDelta, Scheme, SwarmInfo,
    UrlKey,
};
use shoal_core::{Bitfield, ContentId, Layout, Manifest};
use shoal_tracker::store::{AgentPage, Caller, ContentSearch, NewSwarm, PeerQuery, Registration};
use shoal_tracker::{Clock, Store, StoreError, SwarmLimits};

mod listing;
mod retention;
pub(crate) use listing::*;
pub(crate) use retention::unheld_contents_go_after_the_retention;
mod schemes;
mod swarms;
pub(crate) use schemes::an_agent_serving_tls_is_named_with_https;
pub(crate) use swarms::*;

pub(crate) const LEASE: Duration = Duration::from_secs(10);
pub(crate) const SWARM_TTL: Duration = Duration::from_secs(3600);
pub(crate) const MAX_SWARMS: usize = 3;
/// The stores' `max_holdings` in the suite.
pub(crate) const MAX_HOLDINGS: usize = 3;
/// The stores' `retention` in the suite.
pub(crate) const RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

mod reports;
pub(crate) use reports::*;
pub(crate) use takeover::*;

pub(crate) fn swarm_limits() -> SwarmLimits {
    SwarmLimits {
        ttl: SWARM_TTL,
        max: MAX_SWARMS,
    }
}

/// Expands to a module named `$backend` with one `#[tokio::test]` per case of the suite. Each
/// case calls `$make(clock, swarm_limits)` with a fresh manual clock and the suite's swarm
/// limits; it returns the store to test and a guard the case keeps alive (a Redis server).
#[macro_export]
macro_rules! store_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::store_suite as suite;
            #[allow(unused_imports)] // Whatever `$make` names from the invoking module.
            use super::*;

            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test]
                    async fn $name() {
                        let clock = shoal_tracker::Clock::manual();
                        let (store, _guard) = ($make)(clock.clone(), suite::swarm_limits()).await;
                        suite::$name(store, clock).await;
                    }
                };
            }

            case!(register_replaces_holdings);
            case!(announce_applies_whole_or_not_at_all);
            case!(deltas_complete_a_holding);
            case!(leases_lapse_and_heartbeats_renew);
            case!(agents_belong_to_their_token);
            case!(a_live_id_is_held_by_one_address);
            case!(peers_skip_the_asker_and_rank_holders);
            case!(manifests_fix_the_layout);
            case!(first_url_mapping_wins);
            case!(search_list_stats_and_sweep);
            case!(swarms_are_created_once_per_key);
            case!(first_digest_wins_and_only_the_creator_publishes);
            case!(swarms_lapse_and_are_bounded);
            case!(reports_hide_a_peer_for_one_content);
            case!(reports_need_corroboration);
            case!(url_reports_withdraw_a_mapping_on_corroboration);
            case!(holdings_per_agent_are_capped);
            case!(unheld_contents_go_after_the_retention);
            case!(a_stalled_leader_is_taken_over_by_the_first_to_ask);
            case!(a_gone_leader_is_taken_over_at_once);
            case!(publishing_follows_the_leader);
            case!(an_agent_serving_tls_is_named_with_https);
            case!(running_swarms_are_listed_newest_first);
            case!(heartbeats_report_uploads);
        }
    };
}

fn caller(token: &str) -> Caller {
    Caller {
        token: Arc::from(token),
        admin: false,
    }
}

fn admin() -> Caller {
    Caller {
        token: Arc::from("ops"),
        admin: true,
    }
}

fn id(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

fn content(n: u8) -> ContentId {
    ContentId::from_bytes([n; 32])
}

fn layout() -> Layout {
    Layout::new(40, 4).unwrap() // 10 pieces
}

fn holding(n: u8, pieces: Option<&[u32]>) -> Holding {
    Holding {
        content: content(n),
        name: format!("file-{n}"),
        layout: layout(),
        pieces: pieces.map(|ones| {
            let mut field = Bitfield::new(10);
            ones.iter().for_each(|&p| field.set(p));
            PackedBits::of(&field)
        }),
    }
}

fn reg(agent: &str, holdings: Vec<Holding>) -> Registration {
    Registration {
        id: id(agent),
        addr: "127.0.0.1:9".parse().unwrap(),
        scheme: Scheme::Http,
        upload_capacity: 0,
        holdings,
    }
}

async fn peer_ids<S: Store>(store: &S, n: u8, asker: Option<&str>) -> Vec<String> {
    let query = PeerQuery {
        k: 20,
        asker: asker.map(id),
    };
    let answer = store.peers(content(n), query).await.unwrap();
    answer.peers.iter().map(|p| p.id.to_string()).collect()
}

pub(crate) async fn register_replaces_holdings<S: Store>(store: S, _: Clock) {
    let grant = store
        .register(
            caller("t"),
            reg("a", vec![holding(1, None), holding(2, None)]),
        )
        .await
        .unwrap();
    assert_eq!(grant.lease_ms, LEASE.as_millis() as u64);
    assert_eq!(peer_ids(&store, 1, None).await, ["a"]);
    store
        .register(caller("t"), reg("a", vec![holding(2, None)]))
        .await
        .unwrap();
    assert!(peer_ids(&store, 1, None).await.is_empty());
    assert_eq!(peer_ids(&store, 2, None).await, ["a"]);
}

pub(crate) async fn announce_applies_whole_or_not_at_all<S: Store>(store: S, _: Clock) {
    store
        .register(caller("t"), reg("a", vec![holding(1, Some(&[0]))]))
        .await
        .unwrap();
    let bad = AnnounceRequest {
        removed: vec![content(1)],
        holdings: vec![holding(2, None)],
        pieces: vec![PieceDelta {
            content: content(1),
            have: vec![1],
        }],
    };
    // Piece deltas for a content removed in the same announce are refused, and nothing of
    // the announce is applied.
    let err = store.announce(caller("t"), id("a"), bad).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotHeld { ref field, .. } if field == "pieces[0].content"),
        "{err:?}"
    );
    assert_eq!(peer_ids(&store, 1, None).await, ["a"]);
    assert!(matches!(
        store
            .peers(content(2), PeerQuery { k: 5, asker: None })
            .await,
        Err(StoreError::UnknownContent(_))
    ));

    let out_of_range = AnnounceRequest {
        pieces: vec![PieceDelta {
            content: content(1),
            have: vec![10],
        }],
        ..AnnounceRequest::default()
    };
    let err = store
        .announce(caller("t"), id("a"), out_of_range)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { ref field, .. } if field == "pieces[0].have[0]"));

    let good = AnnounceRequest {
        removed: vec![content(1)],
        holdings: vec![holding(2, Some(&[]))],
        pieces: vec![PieceDelta {
            content: content(2),
            have: vec![3],
        }],
    };
    store.announce(caller("t"), id("a"), good).await.unwrap();
    assert!(peer_ids(&store, 1, None).await.is_empty());
    let peers = store
        .peers(content(2), PeerQuery { k: 5, asker: None })
        .await
        .unwrap();
    assert_eq!(
        peers.peers[0].pieces.as_ref().unwrap().as_bytes(),
        &[0x10, 0]
    );
}

pub(crate) async fn deltas_complete_a_holding<S: Store>(store: S, _: Clock) {
    store
        .register(
            caller("t"),
            reg("a", vec![holding(1, Some(&[0, 1, 2, 3, 4]))]),
        )
        .await
        .unwrap();
    let summary = store.content(content(1)).await.unwrap();
    assert_eq!((summary.complete_holders, summary.partial_holders), (0, 1));
    let delta = AnnounceRequest {
        pieces: vec![PieceDelta {
            content: content(1),
            have: vec![5, 6, 7, 8, 9],
        }],
        ..AnnounceRequest::default()
    };
    store.announce(caller("t"), id("a"), delta).await.unwrap();
    let summary = store.content(content(1)).await.unwrap();
    assert_eq!((summary.complete_holders, summary.partial_holders), (1, 0));
    let peers = store
        .peers(content(1), PeerQuery { k: 5, asker: None })
        .await
        .unwrap();
    assert!(peers.peers[0].complete && peers.peers[0].pieces.is_none());
}

pub(crate) async fn leases_lapse_and_heartbeats_renew<S: Store>(store: S, clock: Clock) {
    store
        .register(caller("t"), reg("a", vec![holding(1, None)]))
        .await
        .unwrap();
    store
        .register(caller("t"), reg("b", vec![holding(1, None)]))
        .await
        .unwrap();
    clock.advance(LEASE / 2);
    store
        .heartbeat(
            caller("t"),
            id("a"),
            HeartbeatRequest {
                load: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    clock.advance(LEASE / 2 + Duration::from_millis(1));
    assert_eq!(peer_ids(&store, 1, None).await, ["a"]);
    let err = store
        .heartbeat(caller("t"), id("b"), HeartbeatRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownAgent(_)));
    clock.advance(LEASE);
    assert!(peer_ids(&store, 1, None).await.is_empty());
    assert!(store
        .agents(AgentPage {
            after: None,
            limit: 10
        })
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.content(content(1)).await.unwrap().complete_holders, 0);
}

pub(crate) async fn agents_belong_to_their_token<S: Store>(store: S, clock: Clock) {
    store.register(caller("t"), reg("a", vec![])).await.unwrap();
    let err = store
        .register(caller("u"), reg("a", vec![]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotOwner(_)));
    let err = store
        .announce(caller("u"), id("a"), AnnounceRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotOwner(_)));
    assert!(matches!(
        store.deregister(caller("u"), id("a")).await,
        Err(StoreError::NotOwner(_))
    ));
    store
        .heartbeat(admin(), id("a"), HeartbeatRequest::default())
        .await
        .unwrap();
    clock.advance(LEASE);
    store.register(caller("u"), reg("a", vec![])).await.unwrap();
    store.deregister(caller("u"), id("a")).await.unwrap();
    assert!(matches!(
        store.deregister(caller("u"), id("a")).await,
        Err(StoreError::UnknownAgent(_))
    ));
}

pub(crate) async fn a_live_id_is_held_by_one_address<S: Store>(store: S, clock: Clock) {
    let from = |addr: &str| Registration {
        addr: addr.parse().unwrap(),
        ..reg("a", vec![holding(1, None)])
    };
    store
        .register(caller("t"), from("10.0.0.1:7701"))
        .await
        .unwrap();
    // A clone with the same id (and the same token) elsewhere is refused, naming both.
    let err = store
        .register(caller("t"), from("10.0.0.2:7701"))
        .await
        .unwrap_err();
    let StoreError::IdInUse {
        id: held_id,
        held,
        asked,
    } = &err
    else {
        panic!("expected IdInUse, got {err:?}");
    };
    assert_eq!(held_id.as_str(), "a");
    assert_eq!(held.to_string(), "10.0.0.1:7701");
    assert_eq!(asked.to_string(), "10.0.0.2:7701");
    let text = err.to_string();
    assert!(
        text.contains("a") && text.contains("10.0.0.1:7701") && text.contains("10.0.0.2:7701"),
        "{text}"
    );
    assert_eq!(peer_ids(&store, 1, None).await, ["a"]);
    // The agent itself, restarted at its address, takes the id back at once.
    store
        .register(caller("t"), from("10.0.0.1:7701"))
        .await
        .unwrap();
    // Once the holder's lease lapses, the id is free for another address.
    clock.advance(LEASE);
    store
        .register(caller("t"), from("10.0.0.2:7701"))
        .await
        .unwrap();
    let agents = store
        .agents(AgentPage {
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].addr.to_string(), "10.0.0.2:7701");
}

pub(crate) async fn peers_skip_the_asker_and_rank_holders<S: Store>(store: S, _: Clock) {
    let t = || caller("t");
    store
        .register(t(), reg("me", vec![holding(1, Some(&[0, 1]))]))
        .await
        .unwrap();
    store
        .register(t(), reg("full", vec![holding(1, None)]))
        .await
        .unwrap();
    store
        .register(t(), reg("many", vec![holding(1, Some(&[0, 1, 2, 3, 4]))]))
        .await
        .unwrap();
    store
        .register(t(), reg("few", vec![holding(1, Some(&[1, 2]))]))
        .await
        .unwrap();
    store
        .register(t(), reg("none", vec![holding(1, Some(&[0, 1]))]))
        .await
        .unwrap();
    assert_eq!(
        peer_ids(&store, 1, Some("me")).await,
        ["full", "many", "few", "none"]
    );
    let k1 = store
        .peers(
            content(1),
            PeerQuery {
                k: 1,
                asker: Some(id("me")),
            },
        )
        .await
        .unwrap();
    assert_eq!(k1.peers.len(), 1);
    assert_eq!(k1.layout, layout());
    assert!(matches!(
        store
            .peers(content(9), PeerQuery { k: 1, asker: None })
            .await,
        Err(StoreError::UnknownContent(_))
    ));
}

pub(crate) async fn manifests_fix_the_layout<S: Store>(store: S, _: Clock) {
    let data = vec![1u8; 48];
    let manifest = Manifest::of_bytes(&data, 16).unwrap();
    let cid = manifest.id();
    // An agent announced the content with a layout the manifest then contradicts.
    let mut wrong = holding(0, None);
    wrong.content = cid;
    store
        .register(caller("t"), reg("a", vec![wrong]))
        .await
        .unwrap();
    assert!(matches!(
        store.manifest(cid).await,
        Err(StoreError::NoManifest(_))
    ));

    let published = store
        .put_manifest(manifest.clone(), "t".into())
        .await
        .unwrap();
    assert!(published.created);
    assert!(
        !store
            .put_manifest(manifest.clone(), "t".into())
            .await
            .unwrap()
            .created
    );
    assert_eq!(store.manifest(cid).await.unwrap(), manifest);
    let summary = store.content(cid).await.unwrap();
    assert_eq!(
        (summary.layout, summary.manifest),
        (manifest.layout(), true)
    );
    assert_eq!(summary.name, "file-0");
    assert!(store
        .peers(cid, PeerQuery { k: 5, asker: None })
        .await
        .unwrap()
        .peers
        .is_empty());
}

pub(crate) async fn first_url_mapping_wins<S: Store>(store: S, _: Clock) {
    let m1 = Manifest::of_bytes(b"one", 4).unwrap();
    let m2 = Manifest::of_bytes(b"two", 4).unwrap();
    let key = UrlKey {
        url: "https://example.com/f".into(),
        size: 3,
        etag: Some("\"e\"".into()),
        last_modified: None,
    };
    assert!(matches!(
        store.publish_url(key.clone(), m1.id(), "t".into()).await,
        Err(StoreError::NoManifest(_))
    ));
    store.put_manifest(m1.clone(), "t".into()).await.unwrap();
    store.put_manifest(m2.clone(), "t".into()).await.unwrap();
    let (first, created) = store
        .publish_url(key.clone(), m1.id(), "t".into())
        .await
        .unwrap();
    assert!(created);
    assert_eq!((first.content, first.publisher.as_str()), (m1.id(), "t"));
    let (again, created) = store
        .publish_url(key.clone(), m2.id(), "u".into())
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again, first);
    assert_eq!(store.lookup_url(key.clone()).await.unwrap(), first);
    assert_eq!(store.latest_url(key.url.clone()).await.unwrap(), first);
    let other = UrlKey {
        etag: None,
        ..key.clone()
    };
    assert!(matches!(
        store.lookup_url(other.clone()).await,
        Err(StoreError::UnknownUrl)
    ));
    // A newer version of the same URL is what `latest_url` answers from then on.
    let (newer, _) = store
        .publish_url(other.clone(), m2.id(), "t".into())
        .await
        .unwrap();
    let latest = store.latest_url(key.url.clone()).await.unwrap();
    assert_eq!((latest.key, latest.content), (other, m2.id()));
    assert_eq!(newer.content, m2.id());
    assert!(matches!(
        store.latest_url("https://example.com/none".into()).await,
        Err(StoreError::UnknownUrl)
    ));
}

pub(crate) async fn search_list_stats_and_sweep<S: Store>(store: S, clock: Clock) {
    let mut named = holding(1, None);
    named.name = "Ubuntu-24.04.iso".into();
    store
        .register(caller("t"), reg("b", vec![named, holding(2, Some(&[1]))]))
        .await
        .unwrap();
    store
        .register(caller("t"), reg("a", vec![holding(2, None)]))
        .await
        .unwrap();

    let search = |name: Option<&str>, prefix: Option<String>| ContentSearch {
        name: name.map(String::from),
        id_prefix: prefix,
        limit: 10,
    };
    let found = store.search(search(Some("UBUNTU"), None)).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, content(1));
    let found = store
        .search(search(None, Some("0202".into())))
        .await
        .unwrap();
    assert_eq!(found[0].id, content(2));
    assert_eq!(
        (found[0].complete_holders, found[0].partial_holders),
        (1, 1)
    );

    let page = store
        .agents(AgentPage {
            after: None,
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id.as_str(), "a");
    let next = store
        .agents(AgentPage {
            after: Some(id("a")),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!((next[0].holdings, next[0].complete_holdings), (2, 1));

    let stats = store.stats().await.unwrap();
    assert_eq!((stats.agents, stats.contents), (2, 2));
    // Counted where the store keeps a count of them (not on Redis).
    assert!(stats.holdings.is_none_or(|h| h == 3), "{stats:?}");
    clock.advance(LEASE);
    assert_eq!(store.sweep().await.unwrap().agents, 2);
    assert_eq!(store.sweep().await.unwrap().agents, 0);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.agents, stats.holdings.unwrap_or(0)), (0, 0));
    assert_eq!(
        store.stats().await.unwrap().contents,
        2,
        "the catalog outlives agents"
    );
}

fn url_key(n: u8) -> UrlKey {
    UrlKey {
        url: format!("https://example.com/{n}.iso"),
        size: 40,
        etag: Some("\"v1\"".into()),
        last_modified: None,
    }
}

fn new_swarm(n: u8, leader: &str) -> NewSwarm {
    NewSwarm {
        key: url_key(n),
        layout: layout(),
        leader: id(leader),
    }
}

fn digests(info: &SwarmInfo) -> Vec<Option<[u8; 32]>> {
    info.digests.to_digests(info.layout.piece_count()).unwrap()
}

pub(crate) async fn holdings_per_agent_are_capped<S: Store>(store: S, _: Clock) {
    let over = |err: StoreError| {
        matches!(
            err,
            StoreError::TooManyHoldings {
                count: 4,
                max: 3,
                ..
            }
        )
    };
    let four = (1..=4).map(|n| holding(n, None)).collect();
    let err = store
        .register(caller("t"), reg("a", four))
        .await
        .unwrap_err();
    assert!(over(err));
    store
        .register(
            caller("t"),
            reg("a", vec![holding(1, None), holding(2, None)]),
        )
        .await
        .unwrap();
    let announce = |removed: Vec<ContentId>, holdings: Vec<Holding>| AnnounceRequest {
        removed,
        holdings,
        ..AnnounceRequest::default()
    };
    // A third fits; a fourth does not, unless one goes with it. A holding announced again
    // counts once.
    let third = announce(vec![], vec![holding(3, None), holding(2, None)]);
    store.announce(caller("t"), id("a"), third).await.unwrap();
    let fourth = announce(vec![], vec![holding(4, None)]);
    let err = store
        .announce(caller("t"), id("a"), fourth)
        .await
        .unwrap_err();
    assert!(over(err));
    let swap = announce(vec![content(1)], vec![holding(4, None)]);
    store.announce(caller("t"), id("a"), swap).await.unwrap();
    assert_eq!(peer_ids(&store, 4, None).await, ["a"]);
    assert!(peer_ids(&store, 1, None).await.is_empty());
}
