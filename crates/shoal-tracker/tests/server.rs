//! Restart persistence, the OpenAPI document, health, metrics and shutdown.

mod common;

use std::collections::BTreeSet;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn durable_state_survives_a_restart_and_agents_re_announce() {
    let dir = tempfile::tempdir().unwrap();
    let setup = || Setup {
        data: Some(dir.path().to_path_buf()),
        ..Setup::default()
    };
    let (manifest, x) = content(21, 40);
    let server = start(setup()).await;
    let reg = json!({"addr": "127.0.0.1:1", "holdings": [holding(&x, "ubuntu.iso", 40, None)]});
    server.register(AGENT, "a", reg.clone()).await;
    let manifest_json = serde_json::to_value(&manifest).unwrap();
    server
        .call(
            Method::PUT,
            &format!("/v1/content/{x}/manifest"),
            Some(AGENT),
            Some(manifest_json.clone()),
        )
        .await;
    let publish = json!({"key": {"url": "https://example.com/u.iso", "size": 40}, "content": x});
    let (_, mapping) = server
        .call(Method::POST, "/v1/urls", Some(AGENT), Some(publish))
        .await;
    server.stop().await;

    let server = start(setup()).await;
    // Manifests, the URL map and content names are back...
    assert_eq!(
        server
            .get(&format!("/v1/content/{x}/manifest"), READER)
            .await,
        (StatusCode::OK, manifest_json)
    );
    let lookup = "/v1/urls?url=https%3A%2F%2Fexample.com%2Fu.iso&size=40";
    assert_eq!(server.get(lookup, READER).await, (StatusCode::OK, mapping));
    let (_, found) = server.get("/v1/content?name=ubuntu", READER).await;
    assert_eq!(found["contents"][0]["id"], json!(x));
    assert_eq!(found["contents"][0]["manifest"], true);
    // ...but leases and holdings are soft: the agent learns so from its next heartbeat, and
    // registers again with its full list.
    let (_, peers) = server.get(&format!("/v1/content/{x}/peers"), READER).await;
    assert_eq!(peers["peers"], json!([]));
    assert_eq!(server.heartbeat(AGENT, "a").await.0, StatusCode::NOT_FOUND);
    assert_eq!(server.register(AGENT, "a", reg).await.0, StatusCode::OK);
    let (_, peers) = server.get(&format!("/v1/content/{x}/peers"), READER).await;
    assert_eq!(peers["peers"][0]["id"], "a");
    server.stop().await;
}

#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let server = start(Setup::default()).await;
    let response = server
        .request(Method::GET, "/v1/openapi.json", None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let doc: serde_json::Value = response.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = shoal_tracker::api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, routed);

    // Every $ref points at a schema that exists.
    let text = doc.to_string();
    for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &piece[..piece.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "missing schema {name}"
        );
    }

    // And every route answers through the router (not the no-such-route fallback).
    let (_, x) = content(1, 8);
    for (method, path) in shoal_tracker::api::ROUTES {
        let path = path.replace("{id}", if path.contains("content") { &x } else { "a" });
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let response = server
            .request(method.clone(), &path, Some(ADMIN))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_ne!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let body = response.text().await.unwrap();
        assert_ne!(body, r#"{"error":"no such route"}"#, "{method} {path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn health_and_metrics() {
    let server = start(Setup::default()).await;
    let response = server
        .request(Method::GET, "/healthz", None)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (response.status(), response.text().await.unwrap()),
        (StatusCode::OK, "ok\n".to_string())
    );

    let (_, x) = content(2, 40);
    let reg = json!({"addr": "127.0.0.1:1", "holdings": [holding(&x, "f", 40, None)]});
    server.register(AGENT, "a", reg).await;
    server.get(&format!("/v1/content/{x}/peers"), READER).await;
    server.get(&format!("/v1/content/{x}/peers"), READER).await;
    server.get("/v1/agents", AGENT).await;

    let response = server
        .request(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    for line in [
        "shoal_tracker_agents 1",
        "shoal_tracker_contents 1",
        "shoal_tracker_holdings 1",
        "shoal_tracker_requests_total{route=\"/v1/content/{id}/peers\",method=\"GET\",status=\"200\"} 2",
        "shoal_tracker_requests_total{route=\"/v1/agents\",method=\"GET\",status=\"403\"} 1",
        "shoal_tracker_requests_total{route=\"/v1/agents/{id}\",method=\"PUT\",status=\"200\"} 1",
        "shoal_tracker_request_duration_seconds_count{route=\"/v1/content/{id}/peers\",method=\"GET\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(
        !text.contains(AGENT) && !text.contains(READER),
        "metrics must not leak tokens"
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_and_stops_listening() {
    let server = start(Setup::default()).await;
    let base = server.base.clone();
    assert_eq!(server.get("/v1/agents", READER).await.0, StatusCode::OK);
    server.stop().await;
    let addr = base.trim_start_matches("http://");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_tracker_with_a_certificate_serves_tls_only_to_clients_that_trust_it() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let store = shoal_tracker::SqliteStore::open(
        shoal_tracker::SqliteLocation::Memory,
        shoal_tracker::StoreOptions::default(),
    )
    .await
    .unwrap();
    let options = shoal_tracker::TrackerOptions {
        tls: Some(shoal_tracker::ServerTls::from_pem_files(&cert, &key).unwrap()),
        ..shoal_tracker::TrackerOptions::default()
    };
    let state = shoal_tracker::AppState::new(store, tokens(), options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(shoal_tracker::run(listener, state, async {
        let _ = stopped.await;
    }));

    let ca = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    let trusting = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let (_, x) = content(1, 40);
    let reg = json!({"addr": "127.0.0.1:1", "holdings": [holding(&x, "f", 40, None)]});
    let registered = trusting
        .put(format!("{base}/v1/agents/a"))
        .bearer_auth(AGENT)
        .json(&reg)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::OK);

    let error = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap_err();
    let mut chain = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(e) = cause {
        chain.push_str(&format!(": {e}"));
        cause = e.source();
    }
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
