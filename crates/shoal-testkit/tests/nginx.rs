//! A real nginx, started and stopped by the test.

mod common;

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use common::Client;
use shoal_testkit::{random_bytes, sha256_hex, Nginx, NginxConfig};

#[tokio::test]
async fn serves_a_file_at_the_configured_rate() {
    let root = tempfile::tempdir().unwrap();
    let content = random_bytes(1 << 20, 21);
    std::fs::write(root.path().join("data.bin"), &content).unwrap();
    let nginx = Nginx::start(NginxConfig {
        root: root.path().to_owned(),
        limit_rate: Some("512k".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        nginx.url("/data.bin"),
        format!("http://127.0.0.1:{}/data.bin", nginx.port())
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], nginx.port()));
    let mut client = Client::open(addr, None).await;

    let started = Instant::now();
    let full = client.request("GET", "/data.bin", &[]).await;
    let elapsed = started.elapsed();
    assert_eq!(full.status, 200);
    assert_eq!(sha256_hex(&full.body), sha256_hex(&content));
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    // 1 MiB at 512 KiB/s is 2 s; nginx grants the first second's bytes at once, so >= 1 s.
    assert!(elapsed.as_millis() >= 900, "took only {elapsed:?}");

    let part = client
        .request("GET", "/data.bin", &[("Range", "bytes=1000-1999")])
        .await;
    assert_eq!(part.status, 206);
    assert_eq!(
        part.header("content-range"),
        Some("bytes 1000-1999/1048576")
    );
    assert_eq!(part.body, content[1000..2000]);
    assert_eq!(nginx.access_log().lines().count(), 2);

    let port = nginx.port();
    drop(nginx);
    let refused = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
}

#[test]
fn start_reports_what_is_wrong() {
    let root = tempfile::tempdir().unwrap();
    let missing = Nginx::start(NginxConfig {
        root: root.path().to_owned(),
        binary: Some("/nonexistent/nginx".into()),
        ..Default::default()
    })
    .err()
    .unwrap();
    assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    assert!(missing.to_string().contains("nginx-light"), "{missing}");

    let no_root = Nginx::start(NginxConfig {
        root: root.path().join("absent"),
        ..Default::default()
    })
    .err()
    .unwrap();
    assert!(no_root.to_string().contains("absent"), "{no_root}");

    let bad = Nginx::start(NginxConfig {
        root: root.path().to_owned(),
        extra_server: Some("no_such_directive on;".into()),
        ..Default::default()
    })
    .err()
    .unwrap();
    assert!(bad.to_string().contains("no_such_directive"), "{bad}");
}
