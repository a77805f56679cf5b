//! Tracker replicas sharing one real Redis: any replica answers any request, a replica that
//! goes away loses nothing, and Redis going away is a 503 that heals by itself.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use shoal_testkit::Redis;
use shoal_tracker::Clock;

fn setup(clock: &Clock) -> Setup {
    Setup {
        clock: clock.clone(),
        ..Setup::default()
    }
}

#[tokio::test]
async fn any_replica_answers_and_a_stopped_one_loses_nothing() {
    let redis = Redis::start().unwrap();
    let clock = Clock::manual();
    let one = start_redis(&redis.url(0), setup(&clock)).await;
    let two = start_redis(&redis.url(0), setup(&clock)).await;
    let (manifest, x) = content(3, 40);

    let seeder = json!({"addr": "127.0.0.1:7001", "upload_capacity": 1000,
        "holdings": [holding(&x, "ubuntu.iso", 40, None)]});
    assert_eq!(
        one.register(AGENT, "seeder", seeder).await.0,
        StatusCode::OK
    );
    let leecher = json!({"addr": "127.0.0.1:7002",
        "holdings": [holding(&x, "ubuntu.iso", 40, Some("0000"))]});
    assert_eq!(
        two.register(AGENT2, "leecher", leecher).await.0,
        StatusCode::OK
    );
    let path = format!("/v1/content/{x}/manifest");
    let (status, _) = one
        .call(
            reqwest::Method::PUT,
            &path,
            Some(AGENT),
            Some(serde_json::to_value(&manifest).unwrap()),
        )
        .await;
    assert!(status.is_success(), "manifest publish: {status}");

    let seeder_peer = json!({"id": "seeder", "addr": "127.0.0.1:7001", "upload_capacity": 1000,
        "load": 0, "complete": true});
    let peers = format!("/v1/content/{x}/peers?agent=leecher");
    let (status, body) = two.get(&peers, AGENT2).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["peers"], json!([seeder_peer.clone()]));
    assert_eq!(two.get(&path, READER).await.0, StatusCode::OK);

    // Replica one goes away; two keeps serving everything one recorded.
    one.stop().await;
    assert_eq!(two.heartbeat(AGENT, "seeder").await.0, StatusCode::OK);
    assert_eq!(
        two.get(&peers, AGENT2).await.1["peers"],
        json!([seeder_peer])
    );

    // Leases follow the shared clock: lapsed agents are not served as live.
    clock.advance(LEASE + Duration::from_millis(1));
    assert_eq!(two.get(&peers, AGENT2).await.1["peers"], json!([]));
    two.stop().await;
}

#[tokio::test]
async fn redis_down_is_a_503_and_the_tracker_recovers_by_itself() {
    let mut redis = Redis::start().unwrap();
    let clock = Clock::manual();
    let tracker = start_redis(&redis.url(0), setup(&clock)).await;
    let (_, x) = content(3, 40);
    let seeder = json!({"addr": "127.0.0.1:7001",
        "holdings": [holding(&x, "ubuntu.iso", 40, None)]});
    assert_eq!(
        tracker.register(AGENT, "seeder", seeder.clone()).await.0,
        StatusCode::OK
    );

    redis.stop();
    // A replica started while Redis is down serves 503s too, and heals with the others.
    let late = start_redis(&redis.url(0), setup(&clock)).await;
    let message = format!(
        "the tracker's store (redis://127.0.0.1:{}/0) is unreachable; retrying",
        redis.port()
    );
    let (status, body) = tracker.heartbeat(AGENT, "seeder").await;
    assert_eq!(
        (status, body),
        (StatusCode::SERVICE_UNAVAILABLE, error(&message, None))
    );
    let (status, body) = tracker.get(&format!("/v1/content/{x}/peers"), AGENT).await;
    assert_eq!(
        (status, body),
        (StatusCode::SERVICE_UNAVAILABLE, error(&message, None))
    );

    // Redis comes back (empty: it persists nothing); the tracker reconnects without a restart
    // and the agent's re-registration, as after any lost lease, succeeds.
    redis.restart().unwrap();
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    // Bounded: the connection is re-established within a few hundred milliseconds.
    for _ in 0..100 {
        status = tracker.register(AGENT, "seeder", seeder.clone()).await.0;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tracker.heartbeat(AGENT, "seeder").await.0, StatusCode::OK);
    let (status, body) = late.get(&format!("/v1/content/{x}/peers"), AGENT2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["peers"][0]["id"], "seeder");
    tracker.stop().await;
    late.stop().await;
}

#[tokio::test]
async fn health_answers_without_the_store() {
    let mut redis = Redis::start().unwrap();
    let clock = Clock::manual();
    let tracker = start_redis(&redis.url(0), setup(&clock)).await;
    for n in 0..50u8 {
        let (_, x) = content(n, 40);
        let reg = json!({"addr": format!("127.0.0.1:{}", 7000 + u16::from(n)),
            "holdings": [holding(&x, "f", 40, None)]});
        let (status, _) = tracker.register(AGENT, &format!("agent-{n}"), reg).await;
        assert_eq!(status, StatusCode::OK);
    }
    // With the store gone, only a check that touches it could fail.
    redis.stop();
    let response = tracker
        .request(reqwest::Method::GET, "/healthz", None)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (response.status(), response.text().await.unwrap()),
        (StatusCode::OK, "ok\n".to_string())
    );
    tracker.stop().await;
}
