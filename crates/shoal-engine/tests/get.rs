//! `download()` against the test kit's fault-injecting origin and a real nginx: every test checks
//! the bytes on disk against what the server holds, or the exact error, and what the server saw.

use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_engine::{
    Connections, DownloadError, DownloadOptions, ErrorKind, Event, Existing, MinSplit, Output,
};
use shoal_testkit::{random_bytes, sha256_hex, Nginx, NginxConfig, Origin, OriginConfig};
use url::Url;

mod common;
use common::get;

const MIB: usize = 1 << 20;

fn options(url: &str, out: &Path) -> DownloadOptions {
    let mut o = DownloadOptions::new(Url::parse(url).unwrap(), Output::File(out.to_path_buf()));
    o.min_split = MinSplit::new(256 * 1024).unwrap();
    o.connections = Connections::new(8).unwrap();
    o.stall_timeout = Duration::from_secs(2);
    o
}

fn hash(path: &Path) -> String {
    sha256_hex(&std::fs::read(path).unwrap())
}

fn throttled(content: bytes::Bytes) -> OriginConfig {
    OriginConfig {
        content,
        rate_limit: Some(2 * MIB as u64),
        ..OriginConfig::default()
    }
}

/// Range requests after the probe, as `(start, inclusive end)`.
fn ranges(origin: &Origin) -> Vec<(u64, Option<u64>)> {
    origin
        .requests()
        .iter()
        .filter_map(|r| r.parsed_range)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segmented_download_uses_many_connections_and_fetches_each_byte_once() {
    let content = random_bytes(8 * MIB, 1);
    let origin = Origin::start(throttled(content.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.bin");
    let (result, events) = get(options(&origin.url("/f.bin"), &out)).await;
    let summary = result.unwrap();
    assert_eq!(hash(&out), sha256_hex(&content));
    assert_eq!(summary.size, content.len() as u64);
    assert!(summary.max_connections > 1, "{summary:?}");
    assert!(origin.connections() > 1);
    assert!(!dir.path().join("f.bin.part").exists());
    // The probe asks for everything from 0; every other request is a closed range.
    let asked = ranges(&origin);
    assert_eq!(asked[0], (0, None));
    assert!(asked[1..]
        .iter()
        .all(|(s, e)| e.is_some() && s % 65536 == 0));
    // Outside the endgame nothing is fetched twice: the server sent the file plus at most
    // the buffers in flight when ranges were stolen.
    let sent = origin.bytes_sent();
    assert!(sent <= content.len() as u64 + 8 * 256 * 1024, "sent {sent}");
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Started { ranges: true, .. })));
    assert!(events.iter().any(|e| matches!(e, Event::Progress(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_carries_if_range_with_the_etag() {
    let content = random_bytes(4 * MIB, 2);
    let origin = Origin::start(throttled(content.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    get(options(&origin.url("/x"), &out)).await.0.unwrap();
    let requests = origin.requests();
    let etag = requests[0].headers.get("if-range");
    assert!(etag.is_none(), "the probe has nothing to compare yet");
    for r in &requests[1..] {
        let v = r.if_range.as_deref().unwrap();
        assert!(v.starts_with('"'), "strong ETag expected, got {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_without_ranges_gets_one_stream() {
    let content = random_bytes(3 * MIB + 5, 3);
    let origin = Origin::start(OriginConfig {
        content: content.clone(),
        ranges: false,
        ..OriginConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plain");
    let (result, events) = get(options(&origin.url("/plain"), &out)).await;
    assert_eq!(result.unwrap().max_connections, 1);
    assert_eq!(hash(&out), sha256_hex(&content));
    assert_eq!(origin.requests().len(), 1);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Started { ranges: false, .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_response_without_length_streams_to_eof() {
    let content = random_bytes(2 * MIB + 77, 4);
    let origin = Origin::start(OriginConfig {
        content: content.clone(),
        content_length: false,
        ..OriginConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("chunked");
    let summary = get(options(&origin.url("/chunked"), &out)).await.0.unwrap();
    assert_eq!(summary.size, content.len() as u64);
    assert_eq!(hash(&out), sha256_hex(&content));
    assert_eq!(origin.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_and_every_connection_uses_the_final_url() {
    let content = random_bytes(4 * MIB, 5);
    let origin = Origin::start(OriginConfig {
        redirects: 3,
        ..throttled(content.clone())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    get(options(&origin.url("/r"), &out)).await.0.unwrap();
    assert_eq!(hash(&out), sha256_hex(&content));
    let requests = origin.requests();
    assert_eq!(requests.iter().filter(|r| r.status == 302).count(), 3);
    for r in requests.iter().skip(3) {
        assert_eq!(r.path, "/r?hop=3", "range requests skip the redirect chain");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_redirects_is_a_network_error() {
    let origin = Origin::start(OriginConfig {
        redirects: 11,
        content: random_bytes(1000, 6),
        ..OriginConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&origin.url("/r"), &dir.path().join("r"));
    o.max_tries = 1;
    let err = get(o).await.0.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Network);
    assert!(err.to_string().contains("redirects"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_unavailable_with_retry_after_is_waited_out() {
    let content = random_bytes(2 * MIB, 7);
    let origin = Origin::start(OriginConfig {
        fail_first: 2,
        retry_after: Some(1),
        ..throttled(content.clone())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("u");
    get(options(&origin.url("/u"), &out)).await.0.unwrap();
    assert_eq!(hash(&out), sha256_hex(&content));
    let statuses: Vec<u16> = origin.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        &statuses[..3],
        &[503, 503, 206],
        "the probe waited out both 503s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connections_resume_their_remainder() {
    let content = random_bytes(6 * MIB, 8);
    let origin = Origin::start(OriginConfig {
        reset_after: Some(300_000),
        reset_count: 3,
        ..throttled(content.clone())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("reset");
    let (result, events) = get(options(&origin.url("/reset"), &out)).await;
    result.unwrap();
    assert_eq!(hash(&out), sha256_hex(&content));
    assert!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Retry { .. }))
            .count()
            >= 3,
        "each reset is retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connection_loses_its_range_to_others() {
    let content = random_bytes(4 * MIB, 9);
    let origin = Origin::start(OriginConfig {
        stall_after: Some(100_000),
        stall_count: 1,
        ..throttled(content.clone())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stall");
    let mut o = options(&origin.url("/stall"), &out);
    o.stall_timeout = Duration::from_millis(800);
    let (result, events) = get(o).await;
    result.unwrap();
    assert_eq!(hash(&out), sha256_hex(&content));
    assert!(events.iter().any(|e| matches!(e, Event::Stalled { .. })));
    // The stalled request sent 100 000 bytes; its remainder was asked for again later.
    let requests = origin.requests();
    let stalled = requests
        .iter()
        .position(|r| r.body_bytes == 100_000)
        .expect("one response stalled");
    let (start, _) = requests[stalled].parsed_range.unwrap();
    let resume_at = (start + 100_000) / 65536 * 65536;
    assert!(
        requests[stalled + 1..].iter().any(|r| r
            .parsed_range
            .is_some_and(|(s, _)| s <= resume_at && s > start)),
        "stalled remainder was requested again: {:?}",
        ranges(&origin)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_range_is_never_written() {
    let content = random_bytes(8 * MIB, 10);
    let origin = Origin::start(OriginConfig {
        wrong_content_range: true,
        ..throttled(content.clone())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("wrong");
    let mut o = options(&origin.url("/wrong"), &out);
    o.max_tries = 2;
    let err = get(o).await.0.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Network);
    assert!(err.to_string().contains("Content-Range"), "{err}");
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_body_answer_to_a_range_request_is_never_written() {
    let content = random_bytes(8 * MIB, 11);
    let origin = Origin::start(OriginConfig {
        full_on_ranges_after: Some(1),
        ..throttled(content.clone())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("full");
    let mut o = options(&origin.url("/full"), &out);
    o.max_tries = 2;
    let err = get(o).await.0.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Network);
    assert!(err.to_string().contains("200"), "{err}");
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_file_is_never_spliced() {
    let content = random_bytes(8 * MIB, 12);
    let after = random_bytes(8 * MIB, 13);
    let origin = Origin::start(OriginConfig {
        etag_changes_after: Some(2),
        content_after: after.clone(),
        ..throttled(content)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("changed");
    // The change is noticed through If-Range and the download starts over, once, with the
    // new file: never a mix of the two.
    let (result, events) = get(options(&origin.url("/changed"), &out)).await;
    result.unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Restarted { reason }
        if reason.contains("changed while downloading"))));
    assert_eq!(hash(&out), sha256_hex(&after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_first_byte_is_fine() {
    let content = random_bytes(2 * MIB, 14);
    let origin = Origin::start(OriginConfig {
        first_byte_delay: Duration::from_millis(300),
        ..throttled(content.clone())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("slow");
    get(options(&origin.url("/slow"), &out)).await.0.unwrap();
    assert_eq!(hash(&out), sha256_hex(&content));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_https_needs_insecure() {
    let content = random_bytes(2 * MIB, 15);
    let origin = Origin::start(OriginConfig {
        tls: true,
        ..throttled(content.clone())
    })
    .await;
    assert!(origin.url("/t").starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t");
    let mut o = options(&origin.url("/t"), &out);
    o.max_tries = 1;
    let err = get(o.clone()).await.0.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Network);
    assert!(err.to_string().contains("certificate"), "{err}");
    o.http.insecure = true;
    get(o).await.0.unwrap();
    assert_eq!(hash(&out), sha256_hex(&content));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_error_statuses_fail_at_once() {
    for status in [401u16, 403, 404, 410] {
        let origin = Origin::start(OriginConfig {
            status: Some(status),
            ..OriginConfig::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("missing");
        let err = get(options(&origin.url("/missing"), &out))
            .await
            .0
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::HttpStatus);
        assert!(matches!(err, DownloadError::HttpStatus { status: s, .. } if s == status));
        assert!(err.to_string().contains(&origin.url("/missing")), "{err}");
        assert_eq!(origin.requests().len(), 1, "no retry for {status}");
        assert!(!out.exists() && !dir.path().join("missing.part").exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_a_network_error_after_retries() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&format!("http://127.0.0.1:{port}/x"), &dir.path().join("x"));
    o.max_tries = 2;
    let err = get(o).await.0.unwrap_err();
    assert!(
        matches!(err, DownloadError::Network { tries: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("could not connect"), "{err}");
}

/// A server claiming a file too large to count in blocks is an error naming the size, not a
/// panic (the resume state counts 64 KiB blocks in a u32: 256 TiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_claiming_an_impossible_size_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = socket.read(&mut head).await;
                let response = "HTTP/1.1 206 Partial Content\r\n\
                    Content-Range: bytes 0-0/18446744073709551615\r\n\
                    Content-Length: 1\r\n\r\nx";
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&format!("http://127.0.0.1:{port}/x"), &dir.path().join("x"));
    o.max_tries = 1;
    let err = get(o).await.0.unwrap_err();
    assert!(matches!(err, DownloadError::Network { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("says the file is 18446744073709551615 bytes, more than the"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_comes_from_content_disposition_then_url() {
    let content = random_bytes(100_000, 16);
    let origin = Origin::start(OriginConfig {
        content_disposition: Some("attachment; filename=\"../../evil name.tar\"".into()),
        content: content.clone(),
        ..OriginConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&origin.url("/download?id=1"), dir.path());
    o.output = Output::Dir(dir.path().to_path_buf());
    let summary = get(o).await.0.unwrap();
    assert_eq!(summary.path, dir.path().join("evil name.tar"));
    assert_eq!(hash(&summary.path), sha256_hex(&content));

    let plain = Origin::start(OriginConfig {
        content: content.clone(),
        ..OriginConfig::default()
    })
    .await;
    let mut o = options(&plain.url("/a/b%20c.iso"), dir.path());
    o.output = Output::Dir(dir.path().to_path_buf());
    assert_eq!(get(o).await.0.unwrap().path, dir.path().join("b c.iso"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_output_is_refused_untouched_unless_overwrite() {
    let content = random_bytes(300_000, 17);
    let origin = Origin::start(OriginConfig {
        content: content.clone(),
        ..OriginConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keep");
    std::fs::write(&out, b"precious").unwrap();
    let err = get(options(&origin.url("/keep"), &out))
        .await
        .0
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutputExists);
    assert!(err.to_string().contains("--overwrite"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    assert!(origin.requests().is_empty(), "nothing was fetched");
    let mut o = options(&origin.url("/keep"), &out);
    o.existing = Existing::Overwrite;
    get(o).await.0.unwrap();
    assert_eq!(hash(&out), sha256_hex(&content));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_headers_reach_every_request() {
    let content = random_bytes(4 * MIB, 18);
    let origin = Origin::start(OriginConfig {
        basic_auth: Some(("alice".into(), "s3cret".into())),
        required_header: Some(("x-token".into(), "abc".into())),
        ..throttled(content.clone())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("auth");
    let url = origin
        .url("/auth")
        .replace("http://", "http://alice:s3cret@");
    let mut o = options(&url, &out);
    o.http
        .headers
        .insert("x-token", reqwest::header::HeaderValue::from_static("abc"));
    get(o.clone()).await.0.unwrap();
    assert_eq!(hash(&out), sha256_hex(&content));
    assert!(origin
        .requests()
        .iter()
        .all(|r| r.status == 200 || r.status == 206));
    assert!(origin.requests().len() > 1);

    let wrong = url.replace("s3cret", "nope");
    let mut o = options(&wrong, &dir.path().join("denied"));
    o.http = DownloadOptions::new(Url::parse(&wrong).unwrap(), Output::Dir(PathBuf::new())).http;
    let err = get(o).await.0.unwrap_err();
    assert!(matches!(err, DownloadError::HttpStatus { status: 401, .. }));
    assert!(
        !err.to_string().contains("nope"),
        "password redacted: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_is_verified_before_the_rename() {
    let content = random_bytes(MIB + 3, 19);
    let origin = Origin::start(OriginConfig {
        content: content.clone(),
        ..OriginConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sum");
    let mut o = options(&origin.url("/sum"), &out);
    o.checksum = Some(format!("sha256={}", sha256_hex(&content)).parse().unwrap());
    get(o.clone()).await.0.unwrap();
    assert_eq!(hash(&out), sha256_hex(&content));

    let out = dir.path().join("bad");
    o.output = Output::File(out.clone());
    o.checksum = Some(format!("sha256={}", "0".repeat(64)).parse().unwrap());
    let err = get(o).await.0.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Checksum);
    assert!(!out.exists());
    assert_eq!(hash(&dir.path().join("bad.part")), sha256_hex(&content));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_file_downloads_as_empty() {
    let origin = Origin::start(OriginConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("empty");
    let summary = get(options(&origin.url("/empty"), &out)).await.0.unwrap();
    assert_eq!(summary.size, 0);
    assert_eq!(std::fs::read(&out).unwrap(), b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_still_delivers_the_file() {
    let content = random_bytes(MIB, 20);
    let origin = Origin::start(OriginConfig {
        content: content.clone(),
        ..OriginConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("limited");
    let mut o = options(&origin.url("/limited"), &out);
    o.limit_rate = Some(shoal_engine::Rate::parse("4M").unwrap());
    get(o).await.0.unwrap();
    assert_eq!(hash(&out), sha256_hex(&content));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_errors_name_the_path() {
    let origin = Origin::start(OriginConfig {
        content: random_bytes(1000, 21),
        ..OriginConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"").unwrap();
    // A path under a regular file cannot be created, even by root.
    let out = blocker.join("x");
    let err = get(options(&origin.url("/x"), &out)).await.0.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LocalIo);
    assert!(
        err.to_string().contains(&*blocker.to_string_lossy()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nginx_with_eight_connections() {
    let content = random_bytes(16 * MIB, 22);
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("big.bin"), &content).unwrap();
    let nginx = Nginx::start(NginxConfig {
        root: root.path().to_path_buf(),
        limit_rate: Some("2m".into()),
        ..NginxConfig::default()
    })
    .expect("nginx starts (scripts/test installs nginx-light)");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("big.bin");
    let mut o = options(&nginx.url("/big.bin"), &out);
    o.connections = Connections::new(8).unwrap();
    o.min_split = MinSplit::default();
    let summary = get(o).await.0.unwrap();
    assert_eq!(hash(&out), sha256_hex(&content));
    assert!(summary.max_connections > 1, "{summary:?}");
}
