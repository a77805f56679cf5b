//! Register, announce, query and lease flows through the real server.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn register_announce_and_query_peers() {
    let server = start(Setup::default()).await;
    let (_, x) = content(3, 40);
    let lease = json!({"lease_ms": LEASE.as_millis() as u64, "reads_served": true});

    let seeder = json!({"addr": "127.0.0.1:7001", "upload_capacity": 1000,
        "holdings": [holding(&x, "ubuntu.iso", 40, None)]});
    assert_eq!(
        server.register(AGENT, "seeder", seeder).await,
        (StatusCode::OK, lease.clone())
    );
    let leecher = json!({"addr": "127.0.0.1:7002",
        "holdings": [holding(&x, "ubuntu.iso", 40, Some("f000"))]});
    assert_eq!(
        server.register(AGENT, "leecher", leecher).await,
        (StatusCode::OK, lease.clone())
    );
    let asker = json!({"addr": "127.0.0.1:7003",
        "holdings": [holding(&x, "ubuntu.iso", 40, Some("0000"))]});
    assert_eq!(
        server.register(AGENT2, "asker", asker).await,
        (StatusCode::OK, lease.clone())
    );

    let layout = json!({"size": 40, "piece_size": 4});
    let seeder_peer = json!({"id": "seeder", "addr": "127.0.0.1:7001", "upload_capacity": 1000,
        "load": 0, "complete": true});
    let leecher_peer = |bits: &str| {
        json!({"id": "leecher", "addr": "127.0.0.1:7002",
        "upload_capacity": 0, "load": 0, "complete": false, "pieces": bits})
    };
    let (status, body) = server
        .get(&format!("/v1/content/{x}/peers?agent=asker"), AGENT2)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"content": x, "layout": layout,
        "peers": [seeder_peer.clone(), leecher_peer("f000")]})
    );

    // The leecher verifies two more pieces: a small delta.
    let delta = json!({"pieces": [{"content": x, "have": [4, 5]}]});
    assert_eq!(
        server.announce(AGENT, "leecher", delta).await,
        (StatusCode::OK, lease.clone())
    );
    let (_, body) = server
        .get(&format!("/v1/content/{x}/peers?agent=asker&k=1"), AGENT2)
        .await;
    assert_eq!(body["peers"], json!([seeder_peer.clone()]));
    // A complete asker needs nothing; an anonymous one gets every holder, the empty last.
    let (_, body) = server
        .get(&format!("/v1/content/{x}/peers?agent=seeder"), AGENT)
        .await;
    assert_eq!(body["peers"], json!([]));
    let (_, body) = server.get(&format!("/v1/content/{x}/peers"), READER).await;
    let empty = json!({"id": "asker", "addr": "127.0.0.1:7003", "upload_capacity": 0,
        "load": 0, "complete": false, "pieces": "0000"});
    assert_eq!(
        body["peers"],
        json!([seeder_peer, leecher_peer("fc00"), empty])
    );

    // Completing every piece turns the leecher into a complete holder.
    let rest = json!({"pieces": [{"content": x, "have": [6, 7, 8, 9]}]});
    server.announce(AGENT, "leecher", rest).await;
    let (_, body) = server.get(&format!("/v1/content/{x}"), READER).await;
    assert_eq!(
        body,
        json!({"id": x, "name": "ubuntu.iso", "layout": layout, "manifest": false,
        "complete_holders": 2, "partial_holders": 1})
    );

    // Removing a holding, and deregistering, take agents out of answers.
    server
        .announce(AGENT, "leecher", json!({"removed": [x]}))
        .await;
    let (status, _) = server
        .call(Method::DELETE, "/v1/agents/seeder", Some(AGENT), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, body) = server.get(&format!("/v1/content/{x}/peers"), READER).await;
    let ids = peer_ids(&body);
    assert_eq!(ids, ["asker"]);
    server.stop().await;
}

#[tokio::test]
async fn peers_rank_by_useful_pieces_then_load() {
    let server = start(Setup::default()).await;
    let (_, x) = content(5, 64); // 16 pieces
    let reg = |addr: &str, bits: &str| json!({"addr": addr, "holdings": [holding(&x, "f", 64, Some(bits))]});
    server
        .register(AGENT, "me", reg("127.0.0.1:1", "ff00"))
        .await;
    // Has 8 pieces, all of which "me" already has: listed last, as a fellow downloader.
    server
        .register(AGENT, "same", reg("127.0.0.1:2", "ff00"))
        .await;
    server
        .register(AGENT, "few", reg("127.0.0.1:3", "0100"))
        .await; // piece 7, which "me" has
    server
        .register(AGENT, "two", reg("127.0.0.1:4", "00c0"))
        .await; // pieces 8, 9
    server
        .register(AGENT, "busy", reg("127.0.0.1:5", "00f0"))
        .await; // pieces 8..12
    server
        .register(AGENT, "idle", reg("127.0.0.1:6", "00f0"))
        .await;
    let beat = json!({"load": 5});
    server
        .call(
            Method::POST,
            "/v1/agents/busy/heartbeat",
            Some(AGENT),
            Some(beat),
        )
        .await;

    let (_, body) = server
        .get(&format!("/v1/content/{x}/peers?agent=me"), AGENT)
        .await;
    let ids = peer_ids(&body);
    assert_eq!(&ids[..3], ["idle", "busy", "two"]);
    let mut last = ids[3..].to_vec();
    last.sort_unstable();
    assert_eq!(last, ["few", "same"]);
    server.stop().await;
}

#[tokio::test]
async fn lapsed_leases_leave_every_answer() {
    let server = start(Setup::default()).await;
    let (_, x) = content(7, 8);
    let reg = json!({"addr": "127.0.0.1:1", "holdings": [holding(&x, "a", 8, None)]});
    server.register(AGENT, "a", reg.clone()).await;
    server.register(AGENT, "b", reg.clone()).await;

    // "a" heartbeats in time, "b" does not.
    server.clock.advance(LEASE * 6 / 10);
    assert_eq!(server.heartbeat(AGENT, "a").await.0, StatusCode::OK);
    server.clock.advance(LEASE * 6 / 10);
    let (_, body) = server.get(&format!("/v1/content/{x}/peers"), READER).await;
    assert_eq!(body["peers"].as_array().unwrap().len(), 1);
    assert_eq!(body["peers"][0]["id"], "a");
    let (_, agents) = server.get("/v1/agents", READER).await;
    assert_eq!(agents["agents"].as_array().unwrap().len(), 1);
    assert_eq!(
        agents["agents"][0]["lease_remaining_ms"],
        json!(LEASE.as_millis() as u64 * 4 / 10)
    );
    let (_, one) = server.get(&format!("/v1/content/{x}"), READER).await;
    assert_eq!(one["complete_holders"], 1);

    // A lapsed agent's heartbeat and announce say: register again.
    let (status, body) = server.heartbeat(AGENT, "b").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        error(
            "agent b is not registered (or its lease lapsed): register again",
            Some("id")
        )
    );
    assert_eq!(
        server.announce(AGENT, "b", json!({})).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.register(AGENT, "b", reg).await.0, StatusCode::OK);

    server.clock.advance(LEASE * 2);
    let (_, body) = server.get(&format!("/v1/content/{x}/peers"), READER).await;
    assert_eq!(body["peers"], json!([]));
    let (_, agents) = server.get("/v1/agents", READER).await;
    assert_eq!(agents["agents"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn manifests_are_checked_against_their_id() {
    let server = start(Setup::default()).await;
    let (manifest, x) = content(9, 40);
    let body = serde_json::to_value(&manifest).unwrap();
    let path = format!("/v1/content/{x}/manifest");

    let (status, answer) = server
        .call(Method::PUT, &path, Some(AGENT), Some(body.clone()))
        .await;
    assert_eq!(
        (status, answer),
        (StatusCode::CREATED, json!({"content": x, "created": true}))
    );
    let (status, answer) = server
        .call(Method::PUT, &path, Some(AGENT), Some(body.clone()))
        .await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({"content": x, "created": false}))
    );
    assert_eq!(
        server.get(&path, READER).await,
        (StatusCode::OK, body.clone())
    );

    let (_, other) = content(10, 40);
    let (status, answer) = server
        .call(
            Method::PUT,
            &format!("/v1/content/{other}/manifest"),
            Some(AGENT),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer,
        error(
            &format!("the manifest's BLAKE3 is {x}, not the content id {other}"),
            Some("id")
        )
    );
    let (status, answer) = server
        .get(&format!("/v1/content/{other}/manifest"), READER)
        .await;
    assert_eq!(
        (status, answer),
        (
            StatusCode::NOT_FOUND,
            error(
                &format!("no manifest is published for content {other}"),
                None
            )
        )
    );

    let (_, summary) = server.get(&format!("/v1/content/{x}"), READER).await;
    assert_eq!(summary["manifest"], true);
    server.stop().await;
}

#[tokio::test]
async fn first_url_mapping_wins_and_urls_are_normalized() {
    let server = start(Setup::default()).await;
    let (m1, x) = content(11, 40);
    let (m2, y) = content(12, 40);
    for (m, id) in [(&m1, &x), (&m2, &y)] {
        let body = serde_json::to_value(m).unwrap();
        server
            .call(
                Method::PUT,
                &format!("/v1/content/{id}/manifest"),
                Some(AGENT),
                Some(body),
            )
            .await;
    }
    let publish = |url: &str, content: &str| json!({"key": {"url": url, "size": 40, "etag": "\"v1\""}, "content": content});
    let (status, first) = server
        .call(
            Method::POST,
            "/v1/urls",
            Some(AGENT),
            Some(publish("https://user:pw@Example.com:443/a/../f.iso#x", &x)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        first["key"],
        json!({"url": "https://example.com/f.iso", "size": 40, "etag": "\"v1\""})
    );
    assert_eq!(first["content"], json!(x));
    assert_eq!(first["publisher"], "fleet");

    let (status, second) = server
        .call(
            Method::POST,
            "/v1/urls",
            Some(AGENT2),
            Some(publish("https://example.com/f.iso", &y)),
        )
        .await;
    assert_eq!((status, &second), (StatusCode::OK, &first));

    let lookup = "/v1/urls?url=https%3A%2F%2FEXAMPLE.com%2Ff.iso&size=40&etag=%22v1%22";
    assert_eq!(server.get(lookup, READER).await, (StatusCode::OK, first));
    let other_version = "/v1/urls?url=https%3A%2F%2Fexample.com%2Ff.iso&size=40&etag=%22v2%22";
    assert_eq!(
        server.get(other_version, READER).await,
        (
            StatusCode::NOT_FOUND,
            error("no content is published for this URL version", None)
        )
    );

    let (_, z) = content(13, 40);
    let (status, body) = server
        .call(
            Method::POST,
            "/v1/urls",
            Some(AGENT),
            Some(publish("https://example.com/g", &z)),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::NOT_FOUND,
            error(
                &format!("no manifest is published for content {z}"),
                Some("content")
            )
        )
    );
    server.stop().await;
}

#[tokio::test]
async fn search_and_list_for_people() {
    let server = start(Setup::default()).await;
    let (_, x) = content(1, 8);
    let (_, y) = content(2, 8);
    let reg = json!({"addr": "127.0.0.1:1", "upload_capacity": 5,
        "holdings": [holding(&x, "Ubuntu-24.04.iso", 8, None), holding(&y, "debian.iso", 8, Some("80"))]});
    server.register(AGENT, "web-1", reg).await;

    let (status, body) = server.get("/v1/content?name=ubuntu", READER).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"contents": [{"id": x, "name": "Ubuntu-24.04.iso",
        "layout": {"size": 8, "piece_size": 4}, "manifest": false, "complete_holders": 1, "partial_holders": 0}]})
    );
    let (_, body) = server
        .get(
            &format!("/v1/content?id={}", &y[..6].to_uppercase()),
            READER,
        )
        .await;
    assert_eq!(body["contents"][0]["name"], "debian.iso");
    let (_, body) = server.get("/v1/content?limit=1", ADMIN).await;
    assert_eq!(body["contents"].as_array().unwrap().len(), 1);

    let (_, body) = server.get("/v1/agents", READER).await;
    assert_eq!(
        body,
        json!({"agents": [{"id": "web-1", "addr": "127.0.0.1:1", "upload_capacity": 5,
        "load": 0, "holdings": 2, "complete_holdings": 1, "lease_remaining_ms": LEASE.as_millis() as u64,
        "last_seen_ms": 0, "served": 0, "upload_rate": 0}]})
    );
    let (_, body) = server.get("/v1/agents?after=web-1", READER).await;
    assert_eq!(body, json!({"agents": []}));
    server.stop().await;
}

/// The ids in a peers answer, in its order.
fn peer_ids(body: &serde_json::Value) -> Vec<&str> {
    body["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect()
}
