//! `shoal_serve::serve_tls` through real sockets on 127.0.0.1: a client that trusts the
//! server's CA gets answers; one that does not is refused, naming the certificate problem.

use std::error::Error as _;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use shoal_serve::{serve_tls, ServeLimits, ServerTls};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How long a request may take before the test calls it hung.
const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn tls_is_served_to_clients_that_trust_the_ca_only() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let tls = ServerTls::from_pem_files(&cert, &key).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}/hello",
        listener.local_addr().unwrap().port()
    );
    let router = Router::new().route("/hello", get(|| async { "hello over tls" }));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_tls(
        listener,
        router,
        ServeLimits::default(),
        Some(tls),
        async move {
            let _ = stopped.await;
        },
    ));

    let ca = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    let trusting = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let answer = trusting.get(&url).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "hello over tls");

    let stranger = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let error = stranger.get(&url).send().await.unwrap_err();
    let mut chain = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        chain.push_str(&format!(": {e}"));
        cause = e.source();
    }
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");

    // Plain HTTP to a TLS listener gets no answer.
    let plain = url.replacen("https", "http", 1);
    assert!(reqwest::Client::new().get(&plain).send().await.is_err());

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[test]
fn a_missing_or_empty_pem_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let missing = dir.path().join("missing.pem");
    for (cert, key) in [(&missing, &empty), (&empty, &empty)] {
        let err = ServerTls::from_pem_files(cert, key)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&cert.display().to_string()) && err.contains("PEM"),
            "{err}"
        );
    }
}
