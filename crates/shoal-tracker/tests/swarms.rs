//! URL swarms and reports of bad peers through the real server: create, join, conflicts,
//! digests, lifetimes and limits; reports hiding a peer; both shared by Redis replicas.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shoal_core::hex;
use shoal_core::wire::{PieceDigestEntry, PublishDigestsRequest, SwarmInfo, UrlKey};
use shoal_testkit::Redis;
use shoal_tracker::{Clock, SwarmLimits, TrackerOptions};

const SWARMS: &str = "/v1/swarms";

fn create(url: &str, size: u64, piece_size: u64, agent: &str) -> Value {
    json!({"key": {"url": url, "size": size, "etag": "\"v1\""},
        "layout": {"size": size, "piece_size": piece_size}, "agent": agent})
}

/// The id of the swarm of `url` (already normalized), 40 bytes, etag `"v1"`.
fn swarm_id(url: &str) -> String {
    UrlKey {
        url: url.into(),
        size: 40,
        etag: Some("\"v1\"".into()),
        last_modified: None,
    }
    .swarm_id()
    .to_string()
}

fn digest(n: u8) -> String {
    hex::encode(&[n; 32])
}

fn publish(pieces: &[(u32, String)]) -> Value {
    let pieces: Vec<Value> = pieces
        .iter()
        .map(|(index, digest)| json!({"index": index, "digest": digest}))
        .collect();
    json!({ "pieces": pieces })
}

#[tokio::test]
async fn swarms_are_created_joined_and_fed_digests() {
    let server = start(Setup::default()).await;
    let id = swarm_id("https://example.com/f.iso");
    let url = "HTTPS://user:pw@Example.COM:443/a/../f.iso";

    let (status, created) = server
        .post(SWARMS, AGENT, create(url, 40, 4, "leader"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let expected = json!({"id": id,
        "key": {"url": "https://example.com/f.iso", "size": 40, "etag": "\"v1\""},
        "layout": {"size": 40, "piece_size": 4}, "leader": "leader", "created": true,
        "digests": {"known": "0000", "digests": ""}});
    assert_eq!(created, expected);

    // Another spelling of the URL, another token, another agent: the same swarm.
    let (status, joined) = server
        .post(
            SWARMS,
            AGENT2,
            create("https://example.com/f.iso#x", 40, 4, "follower"),
        )
        .await;
    let mut running = expected.clone();
    running["created"] = json!(false);
    assert_eq!((status, joined), (StatusCode::OK, running.clone()));
    let path = format!("/v1/swarms/{id}");
    assert_eq!(
        server.get(&path, READER).await,
        (StatusCode::OK, running.clone())
    );

    let (status, body) = server
        .post(SWARMS, AGENT2, create(url, 40, 8, "follower"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body,
        error(
            &format!("swarm {id} runs with size 40 and piece size 4"),
            Some("layout")
        )
    );

    // The leader publishes digests as pieces complete; only its token may.
    let digests = format!("{path}/digests");
    let (status, body) = server
        .post(&digests, AGENT2, publish(&[(0, digest(1))]))
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::FORBIDDEN,
            error(
                &format!("only the token of the agent leading swarm {id} may publish its digests"),
                Some("id")
            )
        )
    );
    let (status, body) = server
        .post(&digests, AGENT, publish(&[(0, digest(1)), (2, digest(3))]))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut fed = running.clone();
    fed["digests"] = json!({"known": "a000", "digests": format!("{}{}", digest(1), digest(3))});
    assert_eq!(body, fed);
    // A different digest for a known piece is ignored (and logged), not refused.
    let (status, body) = server
        .post(&digests, AGENT, publish(&[(0, digest(9))]))
        .await;
    assert_eq!((status, body), (StatusCode::OK, fed.clone()));
    let (_, body) = server.get(&path, AGENT2).await;
    let info: SwarmInfo = serde_json::from_value(body).unwrap();
    let known = info.digests.to_digests(10).unwrap();
    assert_eq!(
        (known[0], known[1], known[2]),
        (Some([1; 32]), None, Some([3; 32]))
    );
    // A follower that knows the digests before piece 1 is sent only the later ones; a
    // leader that wants none back says so on its publish.
    let (status, body) = server.get(&format!("{path}?digests_from=1"), READER).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["digests"],
        json!({"known": "2000", "digests": digest(3)})
    );
    let (status, body) = server
        .post(
            &format!("{digests}?digests_from=10"),
            AGENT,
            publish(&[(4, digest(5))]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["digests"], json!({"known": "0000", "digests": ""}));
    let (_, body) = server.get(&format!("{path}?digests_from=3"), READER).await;
    assert_eq!(
        body["digests"],
        json!({"known": "0800", "digests": digest(5)})
    );
    let (status, body) = server.get(&format!("{path}?digests_from=x"), READER).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The swarm id is the content id for the holdings machinery.
    let follower = json!({"addr": "127.0.0.1:7002",
        "holdings": [holding(&id, "f.iso", 40, Some("8000"))]});
    assert_eq!(
        server.register(AGENT2, "follower", follower).await.0,
        StatusCode::OK
    );
    let (_, peers) = server.get(&format!("/v1/content/{id}/peers"), AGENT).await;
    assert_eq!(peers["peers"][0]["id"], "follower");

    // Nothing touched it for the lifetime: gone.
    server.clock.advance(SwarmLimits::default().ttl);
    let (status, _) = server.get(&path, READER).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn swarm_requests_are_checked() {
    let server = start(Setup::default()).await;
    let id = swarm_id("https://example.com/f.iso");
    let ok = create("https://example.com/f.iso", 40, 4, "leader");

    let (status, body) = server.post(SWARMS, READER, ok.clone()).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::FORBIDDEN,
            error("role reader may not announce", None)
        )
    );
    let cases = [
        (
            create("ftp://example.com/f", 40, 4, "a"),
            "key.url",
            "url must be an http or https URL with a host",
        ),
        (
            json!({"key": {"url": "https://h/f", "size": 40},
                "layout": {"size": 41, "piece_size": 4}, "agent": "a"}),
            "layout.size",
            "layout.size is 41 but key.size is 40",
        ),
        (
            create("https://h/f", 1 << 40, 1 << 19, "a"),
            "layout.piece_size",
            "a swarm has at most 1048576 pieces, this layout 2097152: use a larger piece size",
        ),
    ];
    for (body, field, message) in cases {
        let (status, answer) = server.post(SWARMS, AGENT, body).await;
        assert_eq!(
            (status, answer),
            (StatusCode::BAD_REQUEST, error(message, Some(field)))
        );
    }
    let (status, body) = server
        .post(SWARMS, AGENT, create("https://h/f", 40, 4, "a/b"))
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("agent"))
    );

    let (status, body) = server.get(&format!("/v1/swarms/{id}"), READER).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["field"], "id");
    let (status, body) = server.get("/v1/swarms/xyz", READER).await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("id"))
    );
    let digests = format!("/v1/swarms/{id}/digests");
    let (status, _) = server
        .post(&digests, AGENT, publish(&[(0, digest(1))]))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    assert_eq!(server.post(SWARMS, AGENT, ok).await.0, StatusCode::CREATED);
    let (status, body) = server
        .post(
            &digests,
            AGENT,
            publish(&[(0, digest(1)), (1, "abc".into())]),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            error(
                "a digest is 64 hex digits: the BLAKE3 of the piece",
                Some("pieces[1].digest")
            )
        )
    );
    let (status, body) = server
        .post(&digests, AGENT, publish(&[(10, digest(1))]))
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            error(
                "piece 10 is out of range: the swarm has 10 pieces",
                Some("pieces[0].index")
            )
        )
    );
    let (status, body) = server
        .post(&digests, AGENT, json!({"pieces": [], "extra": 1}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Nothing of the refused publishes was recorded.
    let (_, body) = server.get(&format!("/v1/swarms/{id}"), READER).await;
    assert_eq!(body["digests"], json!({"known": "0000", "digests": ""}));
    server.stop().await;
}

#[tokio::test]
async fn the_swarm_table_is_bounded() {
    let server = start(Setup {
        swarms: SwarmLimits {
            max: 1,
            ..SwarmLimits::default()
        },
        ..Setup::default()
    })
    .await;
    let one = create("https://example.com/1", 40, 4, "a");
    assert_eq!(
        server.post(SWARMS, AGENT, one.clone()).await.0,
        StatusCode::CREATED
    );
    assert_eq!(server.post(SWARMS, AGENT2, one).await.0, StatusCode::OK);
    let (status, body) = server
        .post(SWARMS, AGENT, create("https://example.com/2", 40, 4, "a"))
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            error(
                "the tracker runs its maximum of 1 swarms; fetch from the origin, or retry later",
                None
            )
        )
    );
    let response = server
        .request(reqwest::Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(
        text.lines().any(|l| l == "shoal_tracker_swarms 1"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_publish_of_65536_pieces_fits_the_default_body_limit() {
    const PIECES: u32 = 1 << 16;
    let body = PublishDigestsRequest {
        pieces: (0..PIECES)
            .map(|i| PieceDigestEntry::new(i, &[0xff; 32]))
            .collect(),
    };
    let bytes = serde_json::to_vec(&body).unwrap();
    assert!(
        bytes.len() < TrackerOptions::default().manifest_body_limit,
        "{} bytes",
        bytes.len()
    );

    // The same through a server whose limit is as large as the default one.
    let server = start(Setup {
        body_limit: TrackerOptions::default().manifest_body_limit / 4,
        ..Setup::default()
    })
    .await;
    let size = u64::from(PIECES) * 4;
    let (status, created) = server
        .post(
            SWARMS,
            AGENT,
            create("https://example.com/big", size, 4, "a"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap();
    let response = server
        .request(
            reqwest::Method::POST,
            &format!("/v1/swarms/{id}/digests"),
            Some(AGENT),
        )
        .header("content-type", "application/json")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let info: SwarmInfo = response.json().await.unwrap();
    let digests = info.digests.to_digests(PIECES).unwrap();
    assert!(digests.iter().all(|d| *d == Some([0xff; 32])));
    server.stop().await;
}

#[tokio::test]
async fn reports_hide_a_peer_from_peers_of_that_content() {
    let server = start(Setup::default()).await;
    let (_, x) = content(3, 40);
    let (_, y) = content(4, 40);
    let bad = json!({"addr": "127.0.0.1:7001",
        "holdings": [holding(&x, "x", 40, None), holding(&y, "y", 40, None)]});
    server.register(AGENT, "bad", bad).await;
    let good = json!({"addr": "127.0.0.1:7002", "holdings": [holding(&x, "x", 40, None)]});
    server.register(AGENT, "good", good).await;
    let ids = |peers: &Value| -> Vec<String> {
        peers["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect()
    };

    let reports = format!("/v1/content/{x}/reports");
    let by = |reporter: &str| json!({"agent": "bad", "piece": 2, "reason": "BLAKE3 mismatch", "reporter": reporter});
    let report = by("r1");
    // One agent's word is not enough, however often it is said.
    for _ in 0..2 {
        assert_eq!(
            server.post(&reports, AGENT2, report.clone()).await,
            (StatusCode::ACCEPTED, json!({}))
        );
        let (_, peers) = server.get(&format!("/v1/content/{x}/peers"), READER).await;
        let mut offered = ids(&peers);
        offered.sort();
        assert_eq!(offered, ["bad", "good"]);
    }
    // A fleet token must say which agent reports; a per-agent token reports as its agent only.
    let anonymous = json!({"agent": "bad", "piece": 2, "reason": ""});
    assert_eq!(
        server.post(&reports, AGENT2, anonymous.clone()).await,
        (
            StatusCode::BAD_REQUEST,
            error(
                "reporter is required with a fleet token: the id of the reporting agent",
                Some("reporter")
            )
        )
    );
    let (status, body) = server.post(&reports, WEB1, by("web2")).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::FORBIDDEN, Some("reporter"))
    );
    // A second agent corroborates (here a per-agent token, which implies its reporter).
    assert_eq!(
        server.post(&reports, WEB1, anonymous).await,
        (StatusCode::ACCEPTED, json!({}))
    );
    let (_, peers) = server.get(&format!("/v1/content/{x}/peers"), READER).await;
    assert_eq!(ids(&peers), ["good"]);
    let (_, peers) = server.get(&format!("/v1/content/{y}/peers"), READER).await;
    assert_eq!(ids(&peers), ["bad"]);
    // Reporting an agent that does not hold the content is accepted and changes nothing.
    let nobody = json!({"agent": "good", "piece": 0, "reason": "?", "reporter": "r1"});
    assert_eq!(
        server
            .post(&format!("/v1/content/{y}/reports"), AGENT2, nobody)
            .await
            .0,
        StatusCode::ACCEPTED
    );

    let long = json!({"agent": "bad", "piece": 2, "reason": "x".repeat(1025)});
    assert_eq!(
        server.post(&reports, AGENT2, long).await,
        (
            StatusCode::BAD_REQUEST,
            error("reason is over 1024 bytes", Some("reason"))
        )
    );
    let past = json!({"agent": "bad", "piece": 10, "reason": "", "reporter": "r1"});
    assert_eq!(
        server.post(&reports, AGENT2, past).await,
        (
            StatusCode::BAD_REQUEST,
            error(
                "piece 10 is out of range: the content has 10 pieces",
                Some("piece")
            )
        )
    );
    let (_, unknown) = content(5, 40);
    let (status, _) = server
        .post(
            &format!("/v1/content/{unknown}/reports"),
            AGENT2,
            report.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server.post(&reports, READER, report).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let text = server
        .request(reqwest::Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines().any(|l| l == "shoal_tracker_reports_total 4"),
        "{text}"
    );

    // Ten minutes later the agent is offered again (its lease lapsed meanwhile: it registers).
    server.clock.advance(Duration::from_secs(600));
    let back = json!({"addr": "127.0.0.1:7001", "holdings": [holding(&x, "x", 40, None)]});
    server.register(AGENT, "bad", back).await;
    let (_, peers) = server.get(&format!("/v1/content/{x}/peers"), READER).await;
    assert_eq!(ids(&peers), ["bad"]);
    server.stop().await;
}

#[tokio::test]
async fn replicas_share_swarms_and_reports() {
    let redis = Redis::start().unwrap();
    let clock = Clock::manual();
    let setup = || Setup {
        clock: clock.clone(),
        ..Setup::default()
    };
    let one = start_redis(&redis.url(0), setup()).await;
    let two = start_redis(&redis.url(0), setup()).await;
    let url = "https://example.com/f.iso";
    let id = swarm_id(url);

    assert_eq!(
        one.post(SWARMS, AGENT, create(url, 40, 4, "leader"))
            .await
            .0,
        StatusCode::CREATED
    );
    let (status, joined) = two
        .post(SWARMS, AGENT2, create(url, 40, 4, "follower"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (joined["leader"].clone(), joined["created"].clone()),
        (json!("leader"), json!(false))
    );
    assert_eq!(
        two.post(SWARMS, AGENT2, create(url, 40, 8, "follower"))
            .await
            .0,
        StatusCode::CONFLICT
    );
    let digests = format!("/v1/swarms/{id}/digests");
    assert_eq!(
        two.post(&digests, AGENT2, publish(&[(0, digest(1))]))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        two.post(&digests, AGENT, publish(&[(0, digest(1))]))
            .await
            .0,
        StatusCode::OK
    );
    let (_, body) = one
        .post(&digests, AGENT, publish(&[(0, digest(2)), (9, digest(3))]))
        .await;
    assert_eq!(
        body["digests"],
        json!({"known": "8040", "digests": format!("{}{}", digest(1), digest(3))})
    );
    let (_, seen) = two.get(&format!("/v1/swarms/{id}"), READER).await;
    assert_eq!(seen["digests"], body["digests"]);

    // A report through one replica hides the peer in the other's answers.
    let leader =
        json!({"addr": "127.0.0.1:7001", "holdings": [holding(&id, "f.iso", 40, Some("8040"))]});
    one.register(AGENT, "leader", leader).await;
    let other =
        json!({"addr": "127.0.0.1:7003", "holdings": [holding(&id, "f.iso", 40, Some("8000"))]});
    one.register(AGENT, "other", other).await;
    // Two agents' reports through two replicas corroborate each other.
    for (replica, reporter) in [(&one, "r1"), (&two, "r2")] {
        let report = json!({"agent": "leader", "piece": 0, "reason": "BLAKE3 mismatch",
            "reporter": reporter});
        assert_eq!(
            replica
                .post(&format!("/v1/content/{id}/reports"), AGENT2, report)
                .await
                .0,
            StatusCode::ACCEPTED
        );
    }
    let (_, peers) = two.get(&format!("/v1/content/{id}/peers"), READER).await;
    assert_eq!(peers["peers"].as_array().unwrap().len(), 1);
    assert_eq!(peers["peers"][0]["id"], "other");

    clock.advance(SwarmLimits::default().ttl);
    assert_eq!(
        one.get(&format!("/v1/swarms/{id}"), READER).await.0,
        StatusCode::NOT_FOUND
    );
    one.stop().await;
    two.stop().await;
}
