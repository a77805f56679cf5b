//! Property tests of request decoding and validation: arbitrary bytes, and arbitrary but
//! request-shaped JSON sent through the real server, must only ever get well-formed 2xx or
//! 4xx answers: no panic, no 500, and every error names itself in JSON.
//!
//! The default case count keeps `cargo test` quick; for a long run:
//! `PROPTEST_CASES=200000 cargo test --release -p shoal-tracker --test fuzz_decode`.

mod common;

use common::*;
use proptest::prelude::*;
use reqwest::Method;
use serde_json::{json, Value};
use shoal_core::wire::{
    AnnounceRequest, CreateSwarmRequest, PublishDigestsRequest, PublishUrlRequest, RegisterRequest,
    ReportRequest, UrlKey,
};
use shoal_core::Manifest;
use shoal_tracker::extract::{decode_json, decode_query};
use shoal_tracker::ApiError;

/// `PROPTEST_CASES` when set (for long runs), else a count that keeps `cargo test` quick.
fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig::with_cases(cases)
}

fn assert_bad_request<T>(result: Result<T, ApiError>) {
    if let Err(e) = result {
        assert!(matches!(e, ApiError::BadRequest { .. }), "{e:?}");
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        assert_bad_request(decode_json::<RegisterRequest>(&bytes));
        assert_bad_request(decode_json::<AnnounceRequest>(&bytes));
        assert_bad_request(decode_json::<Manifest>(&bytes));
        assert_bad_request(decode_json::<PublishUrlRequest>(&bytes));
        assert_bad_request(decode_json::<CreateSwarmRequest>(&bytes));
        assert_bad_request(decode_json::<PublishDigestsRequest>(&bytes));
        assert_bad_request(decode_json::<ReportRequest>(&bytes));
        if let Ok(text) = std::str::from_utf8(&bytes) {
            assert_bad_request(decode_query::<shoal_core::wire::PeersQuery>(text));
            assert_bad_request(decode_query::<shoal_core::wire::UrlKey>(text));
        }
    }
}

fn hex_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{64}",
        "[0-9a-fA-F]{0,70}",
        "[0-9a-f]{0,8}",
        ".{0,8}",
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u64..100).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(json!(1u64 << 63)),
        Just(json!((1u64 << 63) + 1)),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!(1.5)),
        Just(json!(1e30)),
        Just(json!("7")),
        Just(Value::Null),
        prop_oneof![Just(1u64), Just(2), Just(4), Just(1 << 20), Just(1 << 40)]
            .prop_map(Value::from),
    ]
}

/// Content ids mostly from a small set, so requests refer to each other.
fn content_id() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0u8..4).prop_map(|n| json!(hex::repeat(n))),
        1 => hex_string().prop_map(Value::from),
    ]
}

mod hex {
    pub(crate) fn repeat(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }
}

fn layout() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0u64..200).prop_map(|size| json!({"size": size, "piece_size": 16})),
        1 => (number(), number()).prop_map(|(size, piece_size)| json!({"size": size, "piece_size": piece_size})),
        1 => Just(json!({"size": 10})),
    ]
}

fn holding() -> impl Strategy<Value = Value> {
    (
        content_id(),
        ".{0,12}",
        layout(),
        proptest::option::of(hex_string()),
    )
        .prop_map(|(content, name, layout, pieces)| {
            let mut h = json!({"content": content, "name": name, "layout": layout});
            if let Some(p) = pieces {
                h["pieces"] = json!(p);
            }
            h
        })
}

/// `.` and `..` are left out: URL clients resolve them as path segments before sending, so they
/// never reach the server (and the tracker refuses them as ids).
fn agent_id() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-c]", 1 => "[a-z0-9._-]{1,70}"]
        .prop_filter("dot segment", |id| id != "." && id != "..")
}

#[derive(Debug, Clone)]
enum Call {
    Register(String, Value),
    Announce(String, Value),
    Heartbeat(String, Value),
    Peers(Value, String),
    Manifest(Value, Value),
    Url(Value),
    Swarm(Value),
    Digests(String, Value),
    Report(Value, Value),
    Raw(u8, Vec<u8>),
}

/// The swarm of `https://h/{n}` at 64 bytes, which [`Call::Swarm`] mostly creates.
fn swarm_id(n: u8) -> String {
    UrlKey {
        url: format!("https://h/{n}"),
        size: 64,
        etag: None,
        last_modified: None,
    }
    .swarm_id()
    .to_string()
}

fn call() -> impl Strategy<Value = Call> {
    let addr = prop_oneof![
        Just(json!("127.0.0.1:1")),
        Just(json!("[::1]:80")),
        ".{0,10}".prop_map(Value::from)
    ];
    prop_oneof![
        (
            agent_id(),
            addr,
            number(),
            proptest::collection::vec(holding(), 0..4)
        )
            .prop_map(|(id, addr, cap, hs)| {
                Call::Register(
                    id,
                    json!({"addr": addr, "upload_capacity": cap, "holdings": hs}),
                )
            }),
        (
            agent_id(),
            proptest::collection::vec(content_id(), 0..2),
            proptest::collection::vec(holding(), 0..2),
            proptest::collection::vec(
                (
                    content_id(),
                    proptest::collection::vec(prop_oneof![0u32..20, any::<u32>()], 0..6)
                ),
                0..3
            ),
        )
            .prop_map(|(id, removed, holdings, pieces)| {
                let pieces: Vec<Value> = pieces
                    .into_iter()
                    .map(|(c, have)| json!({"content": c, "have": have}))
                    .collect();
                Call::Announce(
                    id,
                    json!({"removed": removed, "holdings": holdings, "pieces": pieces}),
                )
            }),
        (agent_id(), number()).prop_map(|(id, load)| Call::Heartbeat(id, json!({"load": load}))),
        (content_id(), "(k=[0-9]{1,4}&)?(agent=[a-c])?").prop_map(|(c, q)| Call::Peers(c, q)),
        (content_id(), number(), number(), hex_string()).prop_map(|(c, size, ps, digests)| {
            Call::Manifest(
                c,
                json!({"size": size, "piece_size": ps, "digests": digests}),
            )
        }),
        (".{0,30}", number(), content_id()).prop_map(|(url, size, c)| {
            Call::Url(json!({"key": {"url": url, "size": size}, "content": c}))
        }),
        (
            0u8..2,
            prop_oneof![4 => Just(json!({"size": 64, "piece_size": 16})), 1 => layout()],
            agent_id()
        )
            .prop_map(|(n, layout, agent)| {
                Call::Swarm(json!({"key": {"url": format!("https://h/{n}"), "size": 64},
                    "layout": layout, "agent": agent}))
            }),
        (
            0u8..3,
            proptest::collection::vec((prop_oneof![0u32..6, any::<u32>()], hex_string()), 0..5)
        )
            .prop_map(|(n, pieces)| {
                let pieces: Vec<Value> = pieces
                    .into_iter()
                    .map(|(index, digest)| json!({"index": index, "digest": digest}))
                    .collect();
                Call::Digests(swarm_id(n), json!({ "pieces": pieces }))
            }),
        (content_id(), agent_id(), number(), ".{0,20}").prop_map(|(c, agent, piece, reason)| {
            Call::Report(c, json!({"agent": agent, "piece": piece, "reason": reason}))
        }),
        (0u8..4, proptest::collection::vec(any::<u8>(), 0..200))
            .prop_map(|(route, bytes)| Call::Raw(route, bytes)),
    ]
}

/// The id as a path segment, percent-encoded so that it stays one segment (`.` and `..` are
/// resolved by URL clients even when encoded, so they get a suffix).
fn id_text(v: &Value) -> String {
    let mut text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
    if text == "." || text == ".." {
        text.push('x');
    }
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn request_shaped_json_gets_clean_answers(calls in proptest::collection::vec(call(), 1..12)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let server = start(Setup::default()).await;
            for c in calls {
                let (method, path, body) = match &c {
                    Call::Register(id, b) => (Method::PUT, format!("/v1/agents/{id}"), Some(b.to_string().into_bytes())),
                    Call::Announce(id, b) => (Method::POST, format!("/v1/agents/{id}/announce"), Some(b.to_string().into_bytes())),
                    Call::Heartbeat(id, b) => (Method::POST, format!("/v1/agents/{id}/heartbeat"), Some(b.to_string().into_bytes())),
                    Call::Peers(cid, q) => (Method::GET, format!("/v1/content/{}/peers?{q}", id_text(cid)), None),
                    Call::Manifest(cid, b) => (Method::PUT, format!("/v1/content/{}/manifest", id_text(cid)), Some(b.to_string().into_bytes())),
                    Call::Url(b) => (Method::POST, "/v1/urls".to_string(), Some(b.to_string().into_bytes())),
                    Call::Swarm(b) => (Method::POST, "/v1/swarms".to_string(), Some(b.to_string().into_bytes())),
                    Call::Digests(id, b) => (Method::POST, format!("/v1/swarms/{id}/digests"), Some(b.to_string().into_bytes())),
                    Call::Report(cid, b) => (Method::POST, format!("/v1/content/{}/reports", id_text(cid)), Some(b.to_string().into_bytes())),
                    Call::Raw(route, bytes) => {
                        let path = ["/v1/agents/a", "/v1/agents/a/announce", "/v1/urls", "/v1/agents/b/heartbeat"][*route as usize];
                        let method = if *route == 0 { Method::PUT } else { Method::POST };
                        (method, path.to_string(), Some(bytes.clone()))
                    }
                };
                let mut request = server.request(method, &path, Some(AGENT));
                if let Some(body) = body {
                    request = request.body(body);
                }
                let response = request.send().await.expect("the server answers every request");
                let status = response.status().as_u16();
                let text = response.text().await.unwrap();
                assert!(matches!(status, 200 | 201 | 202 | 204 | 400 | 403 | 404 | 409 | 413), "{c:?} -> {status} {text}");
                if status >= 400 {
                    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{c:?} -> {text}"));
                    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{c:?} -> {text}");
                }
            }
            // Whatever happened, every catalogued content still answers consistently.
            let (status, list) = server.get("/v1/content?limit=1000", ADMIN).await;
            assert_eq!(status.as_u16(), 200);
            for content in list["contents"].as_array().unwrap() {
                let id = content["id"].as_str().unwrap();
                let (status, peers) = server.get(&format!("/v1/content/{id}/peers?k=200"), READER).await;
                assert_eq!(status.as_u16(), 200);
                let pieces = peers["layout"]["size"].as_u64().unwrap().div_ceil(peers["layout"]["piece_size"].as_u64().unwrap());
                for peer in peers["peers"].as_array().unwrap() {
                    if let Some(bits) = peer["pieces"].as_str() {
                        assert_eq!(bits.len() as u64, pieces.div_ceil(8) * 2, "{peers}");
                    }
                }
            }
            server.stop().await;
        });
    }
}
