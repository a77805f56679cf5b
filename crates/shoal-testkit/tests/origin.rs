//! The origin's knobs, checked byte for byte with a raw client.

mod common;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{get, Client};
use shoal_testkit::{random_bytes, sha256_hex, Origin, OriginConfig};

const SIZE: usize = 300_000;

fn file() -> Bytes {
    random_bytes(SIZE, 7)
}

async fn start(config: OriginConfig) -> Origin {
    Origin::start(OriginConfig {
        content: file(),
        ..config
    })
    .await
}

#[test]
fn random_bytes_are_deterministic_and_sha256_is_standard() {
    assert_eq!(random_bytes(1000, 1), random_bytes(1000, 1));
    assert_ne!(random_bytes(1000, 1), random_bytes(1000, 2));
    assert_eq!(random_bytes(13, 3).len(), 13);
    assert_eq!(random_bytes(10, 3)[..], random_bytes(20, 3)[..10]);
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    // Every 1 KiB piece differs, so a block written at the wrong offset is always caught.
    let big = random_bytes(1 << 20, 4);
    let mut pieces: Vec<_> = big.chunks(1024).collect();
    pieces.sort();
    pieces.dedup();
    assert_eq!(pieces.len(), 1024);
}

#[tokio::test]
async fn serves_the_file_with_validators_on_keep_alive() {
    let origin = start(OriginConfig::default()).await;
    assert!(origin.url("/a/file.bin").starts_with("http://127.0.0.1:"));
    assert!(origin
        .url("file.bin")
        .ends_with(&format!("{}/file.bin", origin.addr().port())));
    let mut client = Client::connect(&origin).await;

    let full = client.request("GET", "/a/file.bin", &[]).await;
    assert_eq!(full.status, 200);
    assert_eq!(full.end, Ok(()));
    assert_eq!(full.body, file());
    let etag = full.header("etag").unwrap().to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 10,
        "{etag}"
    );
    assert_eq!(Some(etag.clone()), origin.etag());
    assert!(full.header("last-modified").unwrap().ends_with(" GMT"));
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    assert_eq!(full.header("content-length"), Some("300000"));

    let head = client.request("HEAD", "/other.iso", &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("300000"));
    assert_eq!(head.header("etag"), Some(etag.as_str()));
    assert!(head.body.is_empty());

    let again = client.request("GET", "/x?y=1", &[]).await;
    assert_eq!(again.body, file());

    assert_eq!(origin.connections(), 1);
    let log = origin.requests();
    let seen: Vec<_> = log
        .iter()
        .map(|r| {
            (
                r.connection,
                r.method.as_str(),
                r.path.as_str(),
                r.status,
                r.body_bytes,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (0, "GET", "/a/file.bin", 200, SIZE as u64),
            (0, "HEAD", "/other.iso", 200, 0),
            (0, "GET", "/x?y=1", 200, SIZE as u64),
        ]
    );
    assert_eq!(log[0].headers["host"], "127.0.0.1");
    assert_eq!(origin.bytes_sent(), 2 * SIZE as u64);
}

#[tokio::test]
async fn answers_single_ranges_and_refuses_unsatisfiable_ones() {
    let origin = start(OriginConfig::default()).await;
    let content = file();
    let mut client = Client::connect(&origin).await;

    let mid = client
        .request("GET", "/f", &[("Range", "bytes=100-199")])
        .await;
    assert_eq!(mid.status, 206);
    assert_eq!(mid.header("content-range"), Some("bytes 100-199/300000"));
    assert_eq!(mid.header("content-length"), Some("100"));
    assert_eq!(mid.body, content[100..200]);

    let open = client
        .request("GET", "/f", &[("Range", "bytes=299990-")])
        .await;
    assert_eq!(open.status, 206);
    assert_eq!(
        open.header("content-range"),
        Some("bytes 299990-299999/300000")
    );
    assert_eq!(open.body, content[299_990..]);

    let clamped = client
        .request("GET", "/f", &[("Range", "bytes=299999-400000")])
        .await;
    assert_eq!(
        clamped.header("content-range"),
        Some("bytes 299999-299999/300000")
    );

    let suffix = client.request("GET", "/f", &[("Range", "bytes=-5")]).await;
    assert_eq!(
        suffix.header("content-range"),
        Some("bytes 299995-299999/300000")
    );
    assert_eq!(suffix.body, content[299_995..]);

    let past = client
        .request("GET", "/f", &[("Range", "bytes=300000-")])
        .await;
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), Some("bytes */300000"));

    let bogus = client.request("GET", "/f", &[("Range", "bytes=9-3")]).await;
    assert_eq!(bogus.status, 200);
    assert_eq!(bogus.body.len(), SIZE);

    let log = origin.requests();
    let parsed: Vec<_> = log.iter().map(|r| r.parsed_range).collect();
    assert_eq!(
        parsed,
        [
            Some((100, Some(199))),
            Some((299_990, None)),
            Some((299_999, Some(400_000))),
            None,
            Some((300_000, None)),
            None,
        ]
    );
    assert_eq!(log[0].range.as_deref(), Some("bytes=100-199"));
    assert_eq!(log[0].body_bytes, 100);
    assert_eq!(log[4].body_bytes, 0);
    assert_eq!(origin.connections(), 1);
}

#[tokio::test]
async fn if_range_serves_the_whole_new_file_once_it_changed() {
    let origin = start(OriginConfig::default()).await;
    let etag = origin.etag().unwrap();
    let modified = origin.last_modified().unwrap();
    let range = ("Range", "bytes=10-19");

    let by_etag = get(&origin, "/f", &[range, ("If-Range", &etag)]).await;
    assert_eq!(by_etag.status, 206);
    let by_date = get(&origin, "/f", &[range, ("If-Range", &modified)]).await;
    assert_eq!(by_date.status, 206);
    let stale = get(&origin, "/f", &[range, ("If-Range", "\"nope\"")]).await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, file());

    let new = random_bytes(1000, 99);
    origin.set_content(new.clone());
    assert_eq!(origin.content(), new);
    assert_ne!(origin.etag().unwrap(), etag);
    assert_ne!(origin.last_modified().unwrap(), modified);
    for validator in [&etag, &modified] {
        let changed = get(&origin, "/f", &[range, ("If-Range", validator)]).await;
        assert_eq!(changed.status, 200);
        assert_eq!(changed.body, new);
        assert_eq!(changed.header("etag"), origin.etag().as_deref());
    }
    assert_eq!(origin.requests()[2].if_range.as_deref(), Some("\"nope\""));
}

#[tokio::test]
async fn without_ranges_or_length_the_whole_body_is_sent() {
    let no_ranges = start(OriginConfig {
        ranges: false,
        ..Default::default()
    })
    .await;
    let reply = get(&no_ranges, "/f", &[("Range", "bytes=0-9")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("accept-ranges"), None);
    assert_eq!(reply.header("content-length"), Some("300000"));
    assert_eq!(reply.body, file());

    let chunked = start(OriginConfig {
        content_length: false,
        ..Default::default()
    })
    .await;
    let mut client = Client::connect(&chunked).await;
    for _ in 0..2 {
        let reply = client.request("GET", "/f", &[("Range", "bytes=0-9")]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
        assert_eq!(reply.header("content-length"), None);
        assert_eq!(reply.header("accept-ranges"), None);
        assert_eq!(reply.end, Ok(()));
        assert_eq!(reply.body, file());
    }
    assert_eq!(chunked.bytes_sent(), 2 * SIZE as u64);
}

#[tokio::test]
async fn redirects_hop_by_hop_before_serving() {
    let origin = start(OriginConfig {
        redirects: 2,
        ..Default::default()
    })
    .await;
    let mut client = Client::connect(&origin).await;
    let first = client.request("GET", "/d/f.bin?k=v", &[]).await;
    assert_eq!(first.status, 302);
    let location = first.header("location").unwrap().to_owned();
    assert_eq!(location, origin.url("/d/f.bin?k=v&hop=1"));
    let second = client.request("GET", "/d/f.bin?k=v&hop=1", &[]).await;
    assert_eq!(second.status, 302);
    assert_eq!(
        second.header("location"),
        Some(origin.url("/d/f.bin?k=v&hop=2").as_str())
    );
    let last = client.request("GET", "/d/f.bin?k=v&hop=2", &[]).await;
    assert_eq!(last.status, 200);
    assert_eq!(last.body, file());
    let statuses: Vec<_> = origin.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [302, 302, 200]);
}

#[tokio::test]
async fn first_requests_fail_then_the_file_is_served() {
    let origin = start(OriginConfig {
        fail_first: 2,
        retry_after: Some(7),
        ..Default::default()
    })
    .await;
    let mut client = Client::connect(&origin).await;
    for _ in 0..2 {
        let reply = client.request("GET", "/f", &[]).await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header("retry-after"), Some("7"));
    }
    let ok = client.request("GET", "/f", &[]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("retry-after"), None);

    let teapot = start(OriginConfig {
        fail_first: 1,
        fail_status: 500,
        ..Default::default()
    })
    .await;
    assert_eq!(get(&teapot, "/f", &[]).await.status, 500);
    assert_eq!(get(&teapot, "/f", &[]).await.status, 200);
}

#[tokio::test]
async fn a_fixed_status_answers_everything() {
    let origin = start(OriginConfig {
        status: Some(404),
        ..Default::default()
    })
    .await;
    for _ in 0..3 {
        let reply = get(&origin, "/f", &[("Range", "bytes=0-1")]).await;
        assert_eq!(reply.status, 404);
        assert_eq!(reply.body, b"404 Not Found\n");
    }
    assert_eq!(origin.bytes_sent(), 0);
}

#[tokio::test]
async fn resets_cut_bodies_after_exact_byte_counts() {
    let origin = start(OriginConfig {
        reset_after: Some(100_000),
        reset_count: 2,
        ..Default::default()
    })
    .await;
    // Too short to be cut: does not use up a reset.
    let short = get(&origin, "/f", &[("Range", "bytes=0-999")]).await;
    assert_eq!(short.end, Ok(()));
    for _ in 0..2 {
        let cut = get(&origin, "/f", &[]).await;
        assert_eq!(cut.status, 200);
        assert_eq!(cut.end, Err(io::ErrorKind::ConnectionReset));
        assert_eq!(cut.body, file()[..100_000]);
    }
    let whole = get(&origin, "/f", &[]).await;
    assert_eq!(whole.end, Ok(()));
    assert_eq!(whole.body, file());
    let sent: Vec<_> = origin.requests().iter().map(|r| r.body_bytes).collect();
    assert_eq!(sent, [1000, 100_000, 100_000, SIZE as u64]);
}

#[tokio::test]
async fn stalls_keep_the_socket_open_and_silent() {
    let origin = start(OriginConfig {
        stall_after: Some(70_000),
        ..Default::default()
    })
    .await;
    let mut stalled = Client::connect(&origin).await;
    stalled.read_timeout = Duration::from_millis(300);
    let reply = stalled
        .request("GET", "/f", &[("Range", "bytes=1000-")])
        .await;
    assert_eq!(reply.status, 206);
    assert_eq!(reply.end, Err(io::ErrorKind::TimedOut));
    assert_eq!(reply.body, file()[1000..71_000]);
    // Recorded while the stall is still going on.
    assert_eq!(origin.requests()[0].body_bytes, 70_000);

    let other = get(&origin, "/f", &[("Range", "bytes=1000-")]).await;
    assert_eq!(other.end, Ok(()));
    assert_eq!(other.body.len(), SIZE - 1000);

    // Stopping the origin closes the stalled connection.
    drop(origin);
    stalled.read_timeout = Duration::from_secs(5);
    assert_ne!(stalled.wait_closed().await, io::ErrorKind::TimedOut);
}

#[tokio::test]
async fn ranges_of_some_length_are_held_until_released() {
    let origin = Arc::new(
        start(OriginConfig {
            hold_ranges_of: Some(1000),
            ..Default::default()
        })
        .await,
    );
    let held = tokio::spawn({
        let origin = origin.clone();
        async move { get(&origin, "/f", &[("Range", "bytes=1000-1999")]).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin.requests().is_empty() {
        assert!(Instant::now() < deadline, "the held request never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Logged; answered only once released. Shorter ranges, open ones and whole files are
    // not held.
    assert_eq!(origin.requests()[0].parsed_range, Some((1000, Some(1999))));
    let short = get(&origin, "/f", &[("Range", "bytes=0-998")]).await;
    assert_eq!(short.body, file()[..999]);
    let open = get(&origin, "/f", &[("Range", "bytes=1000-")]).await;
    assert_eq!(open.body, file()[1000..]);
    assert_eq!(get(&origin, "/f", &[]).await.body, file());
    assert!(!held.is_finished());
    origin.release();
    let reply = held.await.unwrap();
    assert_eq!(reply.status, 206);
    assert_eq!(reply.body, file()[1000..2000]);
    let later = get(&origin, "/f", &[("Range", "bytes=0-9")]).await;
    assert_eq!(later.body, file()[..10]);
}

#[tokio::test]
async fn going_down_refuses_and_cuts_until_it_comes_back() {
    let origin = start(OriginConfig {
        stall_after: Some(70_000),
        ..Default::default()
    })
    .await;
    let mut open = Client::connect(&origin).await;
    open.read_timeout = Duration::from_millis(300);
    let reply = open.request("GET", "/f", &[]).await;
    assert_eq!(reply.end, Err(io::ErrorKind::TimedOut));
    assert!(origin.is_up());

    origin.go_down();
    assert!(!origin.is_up());
    // The open connection is closed, and new ones are refused, as when the server died.
    open.read_timeout = Duration::from_secs(5);
    assert_ne!(open.wait_closed().await, io::ErrorKind::TimedOut);
    let refused = tokio::net::TcpStream::connect(origin.addr()).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionRefused)
    );
    origin.go_down();

    origin.come_back();
    origin.come_back();
    assert!(origin.is_up());
    let whole = get(&origin, "/f", &[("Range", "bytes=1000-")]).await;
    assert_eq!(whole.status, 206);
    assert_eq!(whole.body, file()[1000..]);
    // The log goes on across the outage.
    assert_eq!(origin.requests().len(), 2);
}

#[tokio::test]
async fn wrong_content_range_shifts_all_but_the_first_block() {
    let origin = start(OriginConfig {
        wrong_content_range: true,
        ..Default::default()
    })
    .await;
    let start = get(&origin, "/f", &[("Range", "bytes=0-99")]).await;
    assert_eq!(start.header("content-range"), Some("bytes 0-99/300000"));
    let later = get(&origin, "/f", &[("Range", "bytes=100000-100099")]).await;
    assert_eq!(later.status, 206);
    assert_eq!(
        later.header("content-range"),
        Some("bytes 165536-165635/300000")
    );
    assert_eq!(later.body, file()[100_000..100_100]);
}

#[tokio::test]
async fn ranges_are_ignored_after_some_requests() {
    let origin = start(OriginConfig {
        full_on_ranges_after: Some(1),
        ..Default::default()
    })
    .await;
    assert_eq!(
        get(&origin, "/f", &[("Range", "bytes=0-9")]).await.status,
        206
    );
    let full = get(&origin, "/f", &[("Range", "bytes=0-9")]).await;
    assert_eq!(full.status, 200);
    assert_eq!(full.body, file());
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
}

#[tokio::test]
async fn content_changes_after_some_requests() {
    let after = random_bytes(5000, 8);
    let origin = start(OriginConfig {
        etag_changes_after: Some(1),
        content_after: after.clone(),
        ..Default::default()
    })
    .await;
    let first = get(&origin, "/f", &[("Range", "bytes=0-")]).await;
    assert_eq!(first.status, 206);
    let old = first.header("etag").unwrap().to_owned();
    let second = get(&origin, "/f", &[("Range", "bytes=10-"), ("If-Range", &old)]).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body, after);
    let new = second.header("etag").unwrap().to_owned();
    assert_ne!(new, old);
    let third = get(&origin, "/f", &[("Range", "bytes=10-"), ("If-Range", &new)]).await;
    assert_eq!(third.status, 206);
    assert_eq!(third.body, after[10..]);
}

#[tokio::test]
async fn headers_can_be_delayed_and_disposition_set() {
    let origin = start(OriginConfig {
        first_byte_delay: Duration::from_millis(300),
        content_disposition: Some("attachment; filename=\"report.pdf\"".into()),
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let reply = get(&origin, "/f", &[]).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        reply.header("content-disposition"),
        Some("attachment; filename=\"report.pdf\"")
    );
}

#[tokio::test]
async fn basic_auth_and_required_headers_gate_the_file() {
    let origin = start(OriginConfig {
        basic_auth: Some(("alice".into(), "s3cret".into())),
        ..Default::default()
    })
    .await;
    let none = get(&origin, "/f", &[]).await;
    assert_eq!(none.status, 401);
    assert_eq!(
        none.header("www-authenticate"),
        Some("Basic realm=\"shoal-testkit\"")
    );
    let wrong = get(
        &origin,
        "/f",
        &[("Authorization", "Basic YWxpY2U6bm9wZQ==")],
    )
    .await;
    assert_eq!(wrong.status, 401);
    // base64("alice:s3cret")
    let right = get(
        &origin,
        "/f",
        &[("Authorization", "Basic YWxpY2U6czNjcmV0")],
    )
    .await;
    assert_eq!(right.status, 200);

    let gated = start(OriginConfig {
        required_header: Some(("X-Token".into(), "t0k".into())),
        ..Default::default()
    })
    .await;
    assert_eq!(get(&gated, "/f", &[]).await.status, 403);
    assert_eq!(get(&gated, "/f", &[("X-Token", "bad")]).await.status, 403);
    assert_eq!(get(&gated, "/f", &[("x-token", "t0k")]).await.status, 200);
}

#[tokio::test]
async fn validators_can_be_left_out() {
    let origin = start(OriginConfig {
        etag: false,
        last_modified: false,
        ..Default::default()
    })
    .await;
    let plain = get(&origin, "/f", &[("Range", "bytes=0-9")]).await;
    assert_eq!(plain.status, 206);
    assert_eq!(plain.header("etag"), None);
    assert_eq!(plain.header("last-modified"), None);
    assert_eq!(origin.etag(), None);
    let guarded = get(
        &origin,
        "/f",
        &[("Range", "bytes=0-9"), ("If-Range", "\"x\"")],
    )
    .await;
    assert_eq!(guarded.status, 200);
}

#[tokio::test]
async fn rate_limit_paces_each_connection() {
    const RATE: u64 = 1 << 20;
    let size = 3 * RATE as usize / 2;
    let origin = Origin::start(OriginConfig {
        content: random_bytes(size, 5),
        rate_limit: Some(RATE),
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let (a, b) = tokio::join!(get(&origin, "/f", &[]), get(&origin, "/f", &[]));
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(a.body.len() + b.body.len(), 2 * size);
    // Each connection is paced on its own: two together take as long as one.
    let rate = size as f64 / elapsed;
    assert!(
        (0.85 * RATE as f64..1.05 * RATE as f64).contains(&rate),
        "{rate} B/s per connection, want {RATE}"
    );
}

#[tokio::test]
async fn tls_serves_the_same_file() {
    let origin = start(OriginConfig {
        tls: true,
        ..Default::default()
    })
    .await;
    assert!(origin.url("/f").starts_with("https://127.0.0.1:"));
    assert!(origin.ca_cert_pem().unwrap().contains("BEGIN CERTIFICATE"));
    let mut client = Client::connect(&origin).await;
    let full = client.request("GET", "/f", &[]).await;
    assert_eq!(full.body, file());
    let part = client.request("GET", "/f", &[("Range", "bytes=5-9")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, file()[5..10]);
    assert_eq!(origin.connections(), 1);
}

#[tokio::test]
async fn tls_resets_after_exact_byte_counts() {
    let origin = start(OriginConfig {
        tls: true,
        reset_after: Some(50_000),
        ..Default::default()
    })
    .await;
    let cut = get(&origin, "/f", &[]).await;
    assert_ne!(cut.end, Ok(()));
    assert_eq!(cut.body, file()[..50_000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_fetch_disjoint_ranges() {
    const PARTS: usize = 16;
    let content = random_bytes(64 << 20, 11);
    let origin = Arc::new(
        Origin::start(OriginConfig {
            content: content.clone(),
            ..Default::default()
        })
        .await,
    );
    let part = content.len() / PARTS;
    let tasks: Vec<_> = (0..PARTS)
        .map(|i| {
            let range = format!("bytes={}-{}", i * part, (i + 1) * part - 1);
            let origin = origin.clone();
            tokio::spawn(async move { get(&origin, "/big.bin", &[("Range", &range)]).await })
        })
        .collect();
    let mut joined = Vec::with_capacity(content.len());
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, 206);
        joined.extend_from_slice(&reply.body);
    }
    assert_eq!(sha256_hex(&joined), sha256_hex(&content));
    assert_eq!(origin.bytes_sent(), content.len() as u64);
    assert_eq!(origin.connections(), PARTS as u64);
}

#[test]
fn start_blocking_serves_tests_without_a_runtime() {
    let origin = Origin::start_blocking(OriginConfig {
        content: Bytes::from_static(b"hello"),
        ..Default::default()
    });
    let mut tcp = std::net::TcpStream::connect(origin.addr()).unwrap();
    use std::io::{Read, Write};
    tcp.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    tcp.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.contains("\r\nConnection: close\r\n"));
    assert!(reply.ends_with("\r\n\r\nhello"));
}
