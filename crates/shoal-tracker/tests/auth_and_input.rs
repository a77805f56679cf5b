//! Authentication, roles, rate limits and every class of bad input, through the real server.

mod common;

use common::*;
use reqwest::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::json;
use shoal_tracker::RateLimit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn register_body(x: &str) -> serde_json::Value {
    json!({"addr": "127.0.0.1:1", "holdings": [holding(x, "f", 40, None)]})
}

#[tokio::test]
async fn missing_and_wrong_tokens_are_401() {
    let server = start(Setup::default()).await;
    let response = server
        .request(Method::GET, "/v1/agents", None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        error(
            "missing bearer token: send `Authorization: Bearer <secret>`",
            None
        )
    );
    let (status, body) = server.get("/v1/agents", "not-a-token-at-all").await;
    assert_eq!(
        (status, body),
        (StatusCode::UNAUTHORIZED, error("unknown token", None))
    );
    let basic = server
        .client
        .get(format!("{}/v1/agents", server.base))
        .basic_auth("u", Some(READER))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    // Public routes need no token.
    for path in ["/healthz", "/metrics", "/v1/openapi.json"] {
        let response = server
            .request(Method::GET, path, None)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_per_agent_token_acts_for_its_agent_only() {
    let server = start(Setup::default()).await;
    let (_, x) = content(1, 40);
    let wrong = |asked: &str, field: &str| {
        error(
            &format!(
                "token agent:web1 may act for agent web1 only, not for agent {asked}: give \
                 agent {asked} its own token, named agent:{asked}"
            ),
            Some(field),
        )
    };
    let (status, body) = server.register(WEB1, "web2", register_body(&x)).await;
    assert_eq!((status, body), (StatusCode::FORBIDDEN, wrong("web2", "id")));
    let (status, _) = server.register(WEB1, "web1", register_body(&x)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.register(WEB2, "web2", register_body(&x)).await;
    assert_eq!(status, StatusCode::OK);
    // Another agent's lease, holdings and swarms are out of reach, however they were registered.
    let (status, body) = server.heartbeat(WEB1, "web2").await;
    assert_eq!((status, body), (StatusCode::FORBIDDEN, wrong("web2", "id")));
    let announce = json!({"pieces": []});
    let (status, body) = server.announce(WEB1, "web2", announce.clone()).await;
    assert_eq!((status, body), (StatusCode::FORBIDDEN, wrong("web2", "id")));
    let (status, _) = server
        .call(Method::DELETE, "/v1/agents/web2", Some(WEB1), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let swarm = json!({"key": {"url": "https://h/f", "size": 40},
        "layout": {"size": 40, "piece_size": 4}, "agent": "web2"});
    let (status, body) = server.post("/v1/swarms", WEB1, swarm).await;
    assert_eq!(
        (status, body),
        (StatusCode::FORBIDDEN, wrong("web2", "agent"))
    );
    let (status, _) = server.announce(WEB1, "web1", announce).await;
    assert_eq!(status, StatusCode::OK);
    // The fleet token still acts for any agent it registers (the weaker setup).
    for id in ["a", "b"] {
        let (status, _) = server.register(AGENT, id, register_body(&x)).await;
        assert_eq!(status, StatusCode::OK, "{id}");
    }
    server.stop().await;
}

#[tokio::test]
async fn roles_limit_what_a_token_does() {
    let server = start(Setup::default()).await;
    let (_, x) = content(1, 40);
    let (status, body) = server.register(READER, "a", register_body(&x)).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::FORBIDDEN,
            error("role reader may not announce", None)
        )
    );
    let (status, body) = server.get("/v1/agents", AGENT).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::FORBIDDEN,
            error("role agent may not list", None)
        )
    );
    let (status, _) = server.get("/v1/content?name=f", AGENT).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Every role may query.
    assert_eq!(
        server.register(AGENT, "a", register_body(&x)).await.0,
        StatusCode::OK
    );
    for token in [AGENT, AGENT2, READER, ADMIN] {
        let (status, _) = server.get(&format!("/v1/content/{x}/peers"), token).await;
        assert_eq!(status, StatusCode::OK);
    }

    // An agent acts only for the ids its token registered; an admin for any.
    let taken = error("agent a is registered by another token", Some("id"));
    assert_eq!(
        server.heartbeat(AGENT2, "a").await,
        (StatusCode::FORBIDDEN, taken.clone())
    );
    assert_eq!(
        server.announce(AGENT2, "a", json!({})).await,
        (StatusCode::FORBIDDEN, taken.clone())
    );
    assert_eq!(
        server.register(AGENT2, "a", register_body(&x)).await,
        (StatusCode::FORBIDDEN, taken.clone())
    );
    let (status, _) = server
        .call(Method::DELETE, "/v1/agents/a", Some(AGENT2), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(server.heartbeat(ADMIN, "a").await.0, StatusCode::OK);
    assert_eq!(server.get("/v1/agents", ADMIN).await.0, StatusCode::OK);
    // Once the lease lapses the id is free for another token.
    server.clock.advance(LEASE * 2);
    assert_eq!(
        server.register(AGENT2, "a", register_body(&x)).await.0,
        StatusCode::OK
    );
    server.stop().await;
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let server = start(Setup {
        rate_limit: RateLimit {
            per_second: 1,
            burst: 3,
        },
        ..Setup::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(server.get("/v1/agents", READER).await.0, StatusCode::OK);
    }
    let response = server
        .request(Method::GET, "/v1/agents", Some(READER))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[RETRY_AFTER], "1");
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        error("too many requests for this token; retry in 1 s", None)
    );
    // Other tokens have their own bucket; time refills this one.
    assert_eq!(server.get("/v1/agents", ADMIN).await.0, StatusCode::OK);
    server.clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(server.get("/v1/agents", READER).await.0, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let server = start(Setup {
        body_limit: 1024,
        ..Setup::default()
    })
    .await;
    let expected = error("request body is over the limit of 1024 bytes", None);
    let big = json!({"addr": "127.0.0.1:1", "holdings": [holding(&"a".repeat(64), &"n".repeat(2000), 40, None)]});
    assert_eq!(
        server.register(AGENT, "a", big).await,
        (StatusCode::PAYLOAD_TOO_LARGE, expected.clone())
    );
    // Without a Content-Length the limit still holds while the body streams in.
    let addr = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let chunk = format!("320\r\n{}\r\n", " ".repeat(800));
    let request = format!(
        "PUT /v1/agents/a HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {AGENT}\r\n\
         transfer-encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0; 12];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 413");
    // Manifests have their own, larger limit (4 KiB here).
    let (manifest, x) = content(3, 200); // 50 pieces: about 3.3 KiB of JSON
    let path = format!("/v1/content/{x}/manifest");
    let (status, _) = server
        .call(
            Method::PUT,
            &path,
            Some(AGENT),
            Some(serde_json::to_value(&manifest).unwrap()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests_are_400_naming_the_field() {
    let server = start(Setup::default()).await;
    let (_, x) = content(5, 40); // 10 pieces: 2 bitfield bytes
    let reg = |h: serde_json::Value| json!({"addr": "127.0.0.1:1", "holdings": [h]});
    let cases = [
        (json!("not an object"), None),
        (json!({"addr": "nowhere", "holdings": []}), Some("addr")),
        (json!({"addr": "127.0.0.1:1", "colour": 1}), Some("colour")),
        (
            reg(json!({"content": "abcd", "name": "f", "layout": {"size": 40, "piece_size": 4}})),
            Some("holdings[0].content"),
        ),
        (
            reg(holding(&x, "f", 40, Some("ffc000"))),
            Some("holdings[0].pieces"),
        ),
        (
            reg(holding(&x, "f", 40, Some("ffe0"))),
            Some("holdings[0].pieces"),
        ),
        (
            reg(holding(&x, "f", 40, Some("zz"))),
            Some("holdings[0].pieces"),
        ),
        (
            reg(
                json!({"content": x, "name": "f", "layout": {"size": 9223372036854775809_u64, "piece_size": 4}}),
            ),
            Some("holdings[0].layout"),
        ),
        (
            reg(
                json!({"content": x, "name": "f", "layout": {"size": 18446744073709551616.0, "piece_size": 4}}),
            ),
            Some("holdings[0].layout.size"),
        ),
        (
            reg(json!({"content": x, "name": "f", "layout": {"size": 40, "piece_size": 3}})),
            Some("holdings[0].layout"),
        ),
        (
            json!({"addr": "127.0.0.1:1", "holdings": [holding(&x, "f", 40, None), holding(&x, "g", 40, None)]}),
            Some("holdings[1].content"),
        ),
        (
            json!({"addr": "127.0.0.1:1", "upload_capacity": -1}),
            Some("upload_capacity"),
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = server.register(AGENT, "a", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(
            answer.get("field").and_then(|f| f.as_str()),
            field,
            "{body}: {answer}"
        );
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let (status, answer) = server
        .register(AGENT, "a", reg(holding(&x, "f", 40, Some("ffc000"))))
        .await;
    assert_eq!(
        (status, answer),
        (
            StatusCode::BAD_REQUEST,
            error(
                "bitfield is 3 bytes but 10 pieces take 2",
                Some("holdings[0].pieces")
            )
        )
    );

    // Not JSON at all, and trailing bytes.
    for raw in ["{", "{\"addr\": \"127.0.0.1:1\"} x", ""] {
        let response = server
            .request(Method::PUT, "/v1/agents/a", Some(AGENT))
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{raw:?}");
    }
    // Bad ids in paths and queries.
    let (status, answer) = server
        .register(AGENT, "bad%20id", json!({"addr": "127.0.0.1:1"}))
        .await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );
    let (status, answer) = server.get("/v1/content/xyz/peers", READER).await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );
    for (query, field) in [
        ("k=0", "k"),
        ("k=201", "k"),
        ("k=ten", "k"),
        ("agent=a%2Fb", "agent"),
        ("colour=red", "colour"),
    ] {
        let (status, answer) = server
            .get(&format!("/v1/content/{x}/peers?{query}"), READER)
            .await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{query}: {answer}"
        );
    }
    let (status, answer) = server.get("/v1/content?id=xyz", READER).await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );

    // Deltas: out-of-range pieces, and contents the agent does not hold.
    assert_eq!(
        server
            .register(AGENT, "a", reg(holding(&x, "f", 40, Some("8000"))))
            .await
            .0,
        StatusCode::OK
    );
    let (status, answer) = server
        .announce(
            AGENT,
            "a",
            json!({"pieces": [{"content": x, "have": [1, 10]}]}),
        )
        .await;
    assert_eq!(
        (status, answer),
        (
            StatusCode::BAD_REQUEST,
            error(
                "piece 10 is out of range: the content has 10 pieces",
                Some("pieces[0].have[1]")
            )
        )
    );
    let (_, y) = content(6, 40);
    let (status, answer) = server
        .announce(AGENT, "a", json!({"pieces": [{"content": y, "have": [1]}]}))
        .await;
    assert_eq!(
        (status, answer),
        (
            StatusCode::NOT_FOUND,
            error(
                &format!("agent does not hold content {y}: announce the holding first"),
                Some("pieces[0].content")
            )
        )
    );
    // A rejected announce changed nothing.
    let (_, peers) = server.get(&format!("/v1/content/{x}/peers"), READER).await;
    assert_eq!(peers["peers"][0]["pieces"], "8000");

    // A layout that contradicts the catalog.
    let (status, answer) = server
        .register(AGENT, "b", reg(holding(&x, "f", 44, None)))
        .await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("holdings[0].layout"))
    );

    // URL keys: sizes over 2^63, bad URLs.
    let url = |u: &str, size: u64| json!({"key": {"url": u, "size": size}, "content": x});
    for (body, field) in [
        (url("https://h/f", (1 << 63) + 1), "key.size"),
        (url("ftp://h/f", 1), "key.url"),
        (url("::", 1), "key.url"),
    ] {
        let (status, answer) = server
            .call(Method::POST, "/v1/urls", Some(AGENT), Some(body))
            .await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field))
        );
    }
    // A manifest whose digests do not match its layout.
    let bad = json!({"size": 40, "piece_size": 4, "digests": "00"});
    let (status, _) = server
        .call(
            Method::PUT,
            &format!("/v1/content/{x}/manifest"),
            Some(AGENT),
            Some(bad),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test]
async fn unknown_ids_and_routes_are_404() {
    let server = start(Setup::default()).await;
    let (_, x) = content(7, 40);
    let unknown = error(&format!("content {x} is not known"), None);
    assert_eq!(
        server.get(&format!("/v1/content/{x}"), READER).await,
        (StatusCode::NOT_FOUND, unknown.clone())
    );
    assert_eq!(
        server.get(&format!("/v1/content/{x}/peers"), READER).await,
        (StatusCode::NOT_FOUND, unknown)
    );
    assert_eq!(
        server.heartbeat(AGENT, "ghost").await.0,
        StatusCode::NOT_FOUND
    );
    let (status, _) = server
        .call(Method::DELETE, "/v1/agents/ghost", Some(AGENT), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        server.get("/v1/nothing", READER).await,
        (StatusCode::NOT_FOUND, error("no such route", None))
    );
    server.stop().await;
}
