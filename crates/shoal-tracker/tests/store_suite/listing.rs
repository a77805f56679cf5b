//! What the tracker's page lists: running swarms without their digests, and each agent's
//! upload counter and rate from its heartbeats.

use std::time::Duration;

use shoal_core::wire::HeartbeatRequest;
use shoal_tracker::store::AgentPage;
use shoal_tracker::{Clock, Store};

use super::{caller, id, new_swarm, reg, url_key, SWARM_TTL};

pub(crate) async fn running_swarms_are_listed_newest_first<S: Store>(store: S, clock: Clock) {
    assert!(store.swarms(10).await.unwrap().is_empty());
    let first = store
        .create_swarm(caller("t"), new_swarm(1, "a"))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    store
        .create_swarm(caller("t"), new_swarm(2, "b"))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    store
        .publish_digests(caller("t"), first.id, vec![(0, [1; 32]), (3, [3; 32])])
        .await
        .unwrap();
    let listed = store.swarms(10).await.unwrap();
    let shown: Vec<_> = listed
        .iter()
        .map(|s| (s.id, s.leader.as_str(), s.published))
        .collect();
    assert_eq!(
        shown,
        [(first.id, "a", 2), (url_key(2).swarm_id(), "b", 0)],
        "the swarm touched last comes first, with its count of published digests"
    );
    assert_eq!(listed[0].key, first.key);
    assert_eq!(listed[0].layout, first.layout);
    assert_eq!(store.swarms(1).await.unwrap().len(), 1);
    clock.advance(SWARM_TTL);
    assert!(
        store.swarms(10).await.unwrap().is_empty(),
        "lapsed swarms are not listed"
    );
}

pub(crate) async fn heartbeats_report_uploads<S: Store>(store: S, clock: Clock) {
    let grant = store.register(caller("t"), reg("a", vec![])).await.unwrap();
    assert!(grant.reads_served);
    let beat = |served| HeartbeatRequest { load: 1, served };
    store
        .heartbeat(caller("t"), id("a"), beat(1000))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2));
    store
        .heartbeat(caller("t"), id("a"), beat(5000))
        .await
        .unwrap();
    clock.advance(Duration::from_millis(1500));
    let page = AgentPage {
        after: None,
        limit: 10,
    };
    let agents = store.agents(page.clone()).await.unwrap();
    let a = &agents[0];
    assert_eq!(
        (a.served, a.upload_rate, a.last_seen_ms),
        (5000, 2000, 1500)
    );
    // An agent that restarted counts from zero again: no rate until its next heartbeat.
    store
        .heartbeat(caller("t"), id("a"), beat(10))
        .await
        .unwrap();
    let a = &store.agents(page).await.unwrap()[0];
    assert_eq!((a.served, a.upload_rate, a.last_seen_ms), (10, 0, 0));
}
