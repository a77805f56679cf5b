//! Taking over a URL swarm's lead: who may, when, and who publishes after.

use shoal_core::wire::{leader_stall_limit, HeartbeatRequest};
use shoal_tracker::{Clock, Store, StoreError};

use super::{caller, digests, id, layout, new_swarm, reg, url_key};

/// Registers `agent` under `token`, with nothing held.
async fn live<S: Store>(store: &S, token: &str, agent: &str) {
    store
        .register(caller(token), reg(agent, vec![]))
        .await
        .unwrap();
}

/// Renews the leases of `agents`, each under its token.
async fn beat<S: Store>(store: &S, agents: &[(&str, &str)]) {
    for &(token, agent) in agents {
        store
            .heartbeat(caller(token), id(agent), HeartbeatRequest::default())
            .await
            .unwrap();
    }
}

fn is_live_leader(err: StoreError, leader: &str) -> bool {
    matches!(err, StoreError::LeaderLive { leader: l, .. } if l.as_str() == leader)
}

pub(crate) async fn a_stalled_leader_is_taken_over_by_the_first_to_ask<S: Store>(
    store: S,
    clock: Clock,
) {
    for (token, agent) in [("t", "a"), ("u", "b"), ("v", "c")] {
        live(&store, token, agent).await;
    }
    let swarm = store
        .create_swarm(caller("t"), new_swarm(1, "a"))
        .await
        .unwrap()
        .id;
    // A live leader that has just started, or just published, keeps the lead.
    let err = store
        .take_over_swarm(caller("u"), swarm, id("b"))
        .await
        .unwrap_err();
    assert!(is_live_leader(err, "a"));
    let stall = leader_stall_limit(layout());
    clock.advance(stall / 2);
    store
        .publish_digests(caller("t"), swarm, vec![(0, [1; 32])])
        .await
        .unwrap();
    clock.advance(stall - stall / 2);
    let err = store
        .take_over_swarm(caller("u"), swarm, id("b"))
        .await
        .unwrap_err();
    assert!(is_live_leader(err, "a"), "a published {:?} ago", stall / 2);
    // A digest already known is no progress.
    store
        .publish_digests(caller("t"), swarm, vec![(0, [1; 32])])
        .await
        .unwrap();
    clock.advance(stall / 2);
    beat(&store, &[("t", "a"), ("u", "b"), ("v", "c")]).await;

    // Stalled: the first to ask leads, the next finds it live.
    let taken = store
        .take_over_swarm(caller("u"), swarm, id("b"))
        .await
        .unwrap();
    assert_eq!(taken.leader, id("b"));
    assert_eq!(taken.key, url_key(1));
    let err = store
        .take_over_swarm(caller("v"), swarm, id("c"))
        .await
        .unwrap_err();
    assert!(is_live_leader(err, "b"));
    assert_eq!(store.swarm(swarm).await.unwrap().leader, id("b"));
    // Asking again when leading already is answered with the swarm.
    let again = store
        .take_over_swarm(caller("u"), swarm, id("b"))
        .await
        .unwrap();
    assert_eq!(again.leader, id("b"));

    // A swarm whose digests are all known has nothing to stall on.
    let full = store
        .create_swarm(caller("t"), new_swarm(2, "a"))
        .await
        .unwrap()
        .id;
    let all = (0..layout().piece_count()).map(|i| (i, [7; 32])).collect();
    store.publish_digests(caller("t"), full, all).await.unwrap();
    clock.advance(stall + stall / 2);
    beat(&store, &[("t", "a"), ("v", "c")]).await;
    let err = store
        .take_over_swarm(caller("v"), full, id("c"))
        .await
        .unwrap_err();
    assert!(is_live_leader(err, "a"));
}

pub(crate) async fn a_gone_leader_is_taken_over_at_once<S: Store>(store: S, clock: Clock) {
    for (token, agent) in [("t", "a"), ("u", "b"), ("v", "c")] {
        live(&store, token, agent).await;
    }
    let swarm = store
        .create_swarm(caller("t"), new_swarm(1, "a"))
        .await
        .unwrap()
        .id;
    store
        .publish_digests(caller("t"), swarm, vec![(0, [1; 32])])
        .await
        .unwrap();
    // Only for a live agent of the caller's own token.
    let err = store
        .take_over_swarm(caller("v"), swarm, id("b"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotOwner(_)), "{err:?}");
    let err = store
        .take_over_swarm(caller("u"), swarm, id("nobody"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownAgent(_)), "{err:?}");
    let err = store
        .take_over_swarm(caller("u"), url_key(9).swarm_id(), id("b"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownSwarm(_)), "{err:?}");

    // The leader deregistered: no stall to wait for.
    store.deregister(caller("t"), id("a")).await.unwrap();
    let taken = store
        .take_over_swarm(caller("u"), swarm, id("b"))
        .await
        .unwrap();
    assert_eq!(taken.leader, id("b"));
    assert_eq!(digests(&taken)[0], Some([1; 32]), "published digests stay");

    // The new leader's lease lapses (killed): the next takes over at once.
    clock.advance(super::LEASE / 2);
    beat(&store, &[("v", "c")]).await;
    clock.advance(super::LEASE / 2);
    let taken = store
        .take_over_swarm(caller("v"), swarm, id("c"))
        .await
        .unwrap();
    assert_eq!(taken.leader, id("c"));
}

pub(crate) async fn publishing_follows_the_leader<S: Store>(store: S, clock: Clock) {
    for (token, agent) in [("t", "a"), ("u", "b")] {
        live(&store, token, agent).await;
    }
    let swarm = store
        .create_swarm(caller("t"), new_swarm(1, "a"))
        .await
        .unwrap()
        .id;
    store
        .publish_digests(caller("t"), swarm, vec![(0, [1; 32])])
        .await
        .unwrap();
    clock.advance(leader_stall_limit(layout()));
    beat(&store, &[("t", "a"), ("u", "b")]).await;
    store
        .take_over_swarm(caller("u"), swarm, id("b"))
        .await
        .unwrap();
    // The creator's token may publish no more; the new leader's may, and the first digest of
    // a piece still wins.
    let err = store
        .publish_digests(caller("t"), swarm, vec![(1, [2; 32])])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotPublisher(id) if id == swarm));
    let published = store
        .publish_digests(caller("u"), swarm, vec![(0, [9; 32]), (1, [3; 32])])
        .await
        .unwrap();
    assert_eq!(published.ignored, vec![0]);
    let known = digests(&store.swarm(swarm).await.unwrap());
    assert_eq!(known[..3], [Some([1; 32]), Some([3; 32]), None]);
    // Publishing is progress: the new leader is not stalled.
    clock.advance(leader_stall_limit(layout()) / 2);
    beat(&store, &[("t", "a")]).await;
    let err = store
        .take_over_swarm(caller("t"), swarm, id("a"))
        .await
        .unwrap_err();
    assert!(is_live_leader(err, "b"));
}
