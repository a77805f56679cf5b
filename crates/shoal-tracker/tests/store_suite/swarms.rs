//! URL swarms in the store: created once per key, digests first-wins from the creator, and
//! swarms that lapse, bounded in number.

use super::*;

pub(crate) async fn swarms_are_created_once_per_key<S: Store>(store: S, _: Clock) {
    let created = store
        .create_swarm(caller("t"), new_swarm(1, "a"))
        .await
        .unwrap();
    assert!(created.created);
    assert_eq!(created.id, url_key(1).swarm_id());
    assert_eq!(
        (&created.key, created.layout, created.leader.as_str()),
        (&url_key(1), layout(), "a")
    );
    assert_eq!(digests(&created), vec![None; 10]);

    // Another agent (of another token) asking for the same URL version joins it.
    let joined = store
        .create_swarm(caller("u"), new_swarm(1, "b"))
        .await
        .unwrap();
    assert_eq!(
        joined,
        SwarmInfo {
            created: false,
            ..created.clone()
        }
    );
    assert_eq!(store.swarm(created.id).await.unwrap(), joined);

    let mut other = new_swarm(1, "b");
    other.layout = Layout::new(40, 8).unwrap();
    let err = store.create_swarm(caller("u"), other).await.unwrap_err();
    assert!(
        matches!(err, StoreError::SwarmLayout { id, layout: l } if id == created.id && l == layout()),
        "{err:?}"
    );
    assert!(matches!(
        store.swarm(url_key(2).swarm_id()).await,
        Err(StoreError::UnknownSwarm(_))
    ));
    assert_eq!(store.stats().await.unwrap().swarms, 1);
}

pub(crate) async fn first_digest_wins_and_only_the_creator_publishes<S: Store>(store: S, _: Clock) {
    let swarm = store
        .create_swarm(caller("t"), new_swarm(1, "a"))
        .await
        .unwrap()
        .id;
    let err = store
        .publish_digests(caller("u"), swarm, vec![(0, [1; 32])])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotPublisher(id) if id == swarm),
        "{err:?}"
    );

    let published = store
        .publish_digests(caller("t"), swarm, vec![(0, [1; 32]), (9, [9; 32])])
        .await
        .unwrap();
    assert!(published.ignored.is_empty());
    let mut expected = vec![None; 10];
    expected[0] = Some([1; 32]);
    expected[9] = Some([9; 32]);
    assert_eq!(digests(&published.swarm), expected);

    // Validated whole before anything is recorded.
    let err = store
        .publish_digests(caller("t"), swarm, vec![(1, [2; 32]), (10, [2; 32])])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid { ref field, .. } if field == "pieces[1].index"),
        "{err:?}"
    );

    // A different digest for a known piece is ignored; the same one again is not a conflict.
    let published = store
        .publish_digests(
            admin(),
            swarm,
            vec![(0, [7; 32]), (9, [9; 32]), (3, [3; 32]), (3, [4; 32])],
        )
        .await
        .unwrap();
    assert_eq!(published.ignored, [0, 3]);
    expected[3] = Some([3; 32]);
    assert_eq!(digests(&published.swarm), expected);
    assert!(!published.swarm.created);
    assert_eq!(digests(&store.swarm(swarm).await.unwrap()), expected);
    assert!(matches!(
        store
            .publish_digests(caller("t"), url_key(2).swarm_id(), vec![])
            .await,
        Err(StoreError::UnknownSwarm(_))
    ));
}

pub(crate) async fn swarms_lapse_and_are_bounded<S: Store>(store: S, clock: Clock) {
    for n in 1..=3 {
        store
            .create_swarm(caller("t"), new_swarm(n, "a"))
            .await
            .unwrap();
    }
    let err = store
        .create_swarm(caller("t"), new_swarm(4, "a"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::TooManySwarms { max: MAX_SWARMS }),
        "{err:?}"
    );

    // Publishing and joining keep a swarm alive; nothing else does.
    clock.advance(SWARM_TTL / 2);
    let one = url_key(1).swarm_id();
    store
        .publish_digests(caller("t"), one, vec![(0, [1; 32])])
        .await
        .unwrap();
    store
        .create_swarm(caller("u"), new_swarm(2, "b"))
        .await
        .unwrap();
    store.swarm(url_key(3).swarm_id()).await.unwrap();
    clock.advance(SWARM_TTL / 2);
    let three = url_key(3).swarm_id();
    assert!(matches!(
        store.swarm(three).await,
        Err(StoreError::UnknownSwarm(_))
    ));
    assert!(matches!(
        store
            .publish_digests(caller("t"), three, vec![(0, [1; 32])])
            .await,
        Err(StoreError::UnknownSwarm(_))
    ));
    assert!(digests(&store.swarm(one).await.unwrap())[0].is_some());

    // A lapsed swarm counts against the limit until a sweep drops it...
    assert!(matches!(
        store.create_swarm(caller("t"), new_swarm(4, "a")).await,
        Err(StoreError::TooManySwarms { .. })
    ));
    let swept = store.sweep().await.unwrap();
    assert_eq!((swept.agents, swept.swarms), (0, 1));
    assert_eq!(store.stats().await.unwrap().swarms, 2);
    store
        .create_swarm(caller("t"), new_swarm(4, "a"))
        .await
        .unwrap();

    // ...and its key starts afresh, with a new leader and publisher and no digests.
    clock.advance(SWARM_TTL);
    let again = store
        .create_swarm(caller("u"), new_swarm(1, "c"))
        .await
        .unwrap();
    assert!(again.created);
    assert_eq!(again.leader.as_str(), "c");
    assert_eq!(digests(&again), vec![None; 10]);
    assert!(matches!(
        store
            .publish_digests(caller("t"), one, vec![(0, [1; 32])])
            .await,
        Err(StoreError::NotPublisher(_))
    ));
    assert_eq!(store.sweep().await.unwrap().swarms, 2);
    assert_eq!(store.stats().await.unwrap().swarms, 1);
}
