//! One file from several test origins at once: every test checks the bytes on disk, what each
//! mirror contributed, and which mirrors were dropped and why.

use std::path::Path;
use std::time::Duration;

use shoal_engine::{
    Connections, DownloadError, DownloadOptions, ErrorKind, Event, MinSplit, Output,
};
use shoal_testkit::{random_bytes, sha256_hex, Origin, OriginConfig};
use url::Url;

mod common;
use common::get;

const MIB: usize = 1 << 20;

fn options(urls: &[String], out: &Path) -> DownloadOptions {
    let mut o = DownloadOptions::new(
        Url::parse(&urls[0]).unwrap(),
        Output::File(out.to_path_buf()),
    );
    o.mirrors = urls[1..].iter().map(|u| Url::parse(u).unwrap()).collect();
    o.min_split = MinSplit::new(256 * 1024).unwrap();
    o.connections = Connections::new(12).unwrap();
    o.per_server = Connections::new(4).unwrap();
    o.stall_timeout = Duration::from_secs(2);
    o.max_tries = 3;
    o
}

fn paced(content: &bytes::Bytes, rate: u64) -> OriginConfig {
    OriginConfig {
        content: content.clone(),
        rate_limit: Some(rate),
        ..OriginConfig::default()
    }
}

fn dropped(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::SourceDropped { url, reason } => Some((url.to_string(), reason.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_mirrors_share_the_work_by_speed() {
    let content = random_bytes(12 * MIB, 30);
    let fast = Origin::start(paced(&content, 2 * MIB as u64)).await;
    let also_fast = Origin::start(paced(&content, 2 * MIB as u64)).await;
    let slow = Origin::start(paced(&content, 200 * 1024)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f");
    let urls = [fast.url("/f"), also_fast.url("/f"), slow.url("/f")];
    let summary = get(options(&urls, &out)).await.0.unwrap();
    assert_eq!(
        sha256_hex(&std::fs::read(&out).unwrap()),
        sha256_hex(&content)
    );
    assert_eq!(summary.sources.len(), 3);
    let bytes: Vec<u64> = summary.sources.iter().map(|s| s.bytes).collect();
    assert!(
        bytes.iter().all(|&b| b > 0),
        "every mirror helped: {bytes:?}"
    );
    // Ten times slower: its share shrinks well below a third.
    assert!(
        bytes[2] * 5 < bytes[0] + bytes[1],
        "slow mirror's share: {bytes:?}"
    );
    assert!(summary.max_connections <= 12);
    for origin in [&fast, &also_fast, &slow] {
        assert!(
            origin.requests().iter().all(|r| r.status == 206),
            "only range requests"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_mirrors_are_dropped_and_the_download_completes() {
    let content = random_bytes(8 * MIB, 31);
    let good = Origin::start(paced(&content, 2 * MIB as u64)).await;
    let missing = Origin::start(OriginConfig {
        status: Some(404),
        ..OriginConfig::default()
    })
    .await;
    let resetting = Origin::start(OriginConfig {
        reset_after: Some(100_000),
        reset_count: 1000,
        ..paced(&content, 2 * MIB as u64)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f");
    let urls = [good.url("/f"), missing.url("/f"), resetting.url("/f")];
    let (result, events) = get(options(&urls, &out)).await;
    let summary = result.unwrap();
    assert_eq!(
        sha256_hex(&std::fs::read(&out).unwrap()),
        sha256_hex(&content)
    );
    let dropped = dropped(&events);
    assert!(
        dropped
            .iter()
            .any(|(url, why)| *url == missing.url("/f") && why.contains("404")),
        "{dropped:?}"
    );
    assert!(
        dropped.iter().any(|(url, _)| *url == resetting.url("/f")),
        "a mirror that always resets is dropped after --max-tries: {dropped:?}"
    );
    assert_eq!(missing.requests().len(), 1, "a 404 is not retried");
    let missing_usage = summary
        .sources
        .iter()
        .find(|s| s.url.to_string() == missing.url("/f"))
        .expect("every URL is in the summary");
    assert!(missing_usage.dropped.is_some());
    assert_eq!(missing_usage.bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_with_another_size_is_never_used() {
    let content = random_bytes(4 * MIB, 32);
    let a = Origin::start(paced(&content, 2 * MIB as u64)).await;
    let b = Origin::start(paced(&content, 2 * MIB as u64)).await;
    let other = Origin::start(paced(&random_bytes(4 * MIB + 1, 33), 2 * MIB as u64)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f");
    // The odd one out is listed first: the majority still decides.
    let urls = [other.url("/f"), a.url("/f"), b.url("/f")];
    let (result, events) = get(options(&urls, &out)).await;
    result.unwrap();
    assert_eq!(
        sha256_hex(&std::fs::read(&out).unwrap()),
        sha256_hex(&content)
    );
    let dropped = dropped(&events);
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(dropped[0].0, other.url("/f"));
    assert!(dropped[0].1.contains("4194305"), "{dropped:?}");
    assert_eq!(other.requests().len(), 1, "only the probe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_serving_other_bytes_is_named_by_the_checksum_error() {
    let content = random_bytes(4 * MIB, 34);
    let honest = Origin::start(paced(&content, 2 * MIB as u64)).await;
    let liar = Origin::start(paced(&random_bytes(4 * MIB, 35), 2 * MIB as u64)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f");
    let urls = [honest.url("/f"), liar.url("/f")];
    let mut o = options(&urls, &out);
    o.checksum = Some(format!("sha256={}", sha256_hex(&content)).parse().unwrap());
    let err = get(o).await.0.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Checksum);
    let text = err.to_string();
    assert!(
        text.contains(&honest.url("/f")) && text.contains(&liar.url("/f")),
        "{text}"
    );
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_mirror_fails_the_first_error_is_reported() {
    let missing = Origin::start(OriginConfig {
        status: Some(404),
        ..OriginConfig::default()
    })
    .await;
    let gone = Origin::start(OriginConfig {
        status: Some(410),
        ..OriginConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let urls = [missing.url("/f"), gone.url("/f")];
    let err = get(options(&urls, &dir.path().join("f")))
        .await
        .0
        .unwrap_err();
    assert!(
        matches!(err, DownloadError::HttpStatus { status: 404, .. }),
        "{err}"
    );
}

fn piece_hashes(content: &[u8], length: usize) -> shoal_engine::metalink::PieceHashes {
    use sha2::Digest;
    shoal_engine::metalink::PieceHashes {
        algo: shoal_core::ChecksumAlgo::Sha256,
        length: length as u64,
        hashes: content
            .chunks(length)
            .map(|piece| sha2::Sha256::digest(piece).to_vec())
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piece_hashes_catch_a_lying_mirror_and_refetch_its_pieces() {
    let content = random_bytes(6 * MIB, 36);
    let honest = Origin::start(paced(&content, 2 * MIB as u64)).await;
    let liar = Origin::start(paced(&random_bytes(6 * MIB, 37), 2 * MIB as u64)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f");
    let urls = [honest.url("/f"), liar.url("/f")];
    let mut o = options(&urls, &out);
    o.pieces = Some(piece_hashes(&content, 256 * 1024));
    o.checksum = Some(format!("sha256={}", sha256_hex(&content)).parse().unwrap());
    let (result, events) = get(o).await;
    let summary = result.unwrap();
    assert_eq!(
        sha256_hex(&std::fs::read(&out).unwrap()),
        sha256_hex(&content)
    );
    let dropped = dropped(&events);
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(dropped[0].0, liar.url("/f"));
    assert!(dropped[0].1.contains("hash of piece"), "{dropped:?}");
    assert!(
        liar.bytes_sent() > 0,
        "the liar was used before it was caught"
    );
    assert!(summary.sources[1].dropped.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_piece_from_the_only_source_fails_the_download() {
    let content = random_bytes(2 * MIB, 38);
    let origin = Origin::start(paced(&random_bytes(2 * MIB, 39), 4 * MIB as u64)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f");
    let mut o = options(&[origin.url("/f")], &out);
    o.pieces = Some(piece_hashes(&content, 512 * 1024));
    let err = get(o).await.0.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Checksum);
    assert!(matches!(err, DownloadError::PieceMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&origin.url("/f")), "{err}");
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_size_rules_out_a_server_with_another_size() {
    let content = random_bytes(MIB, 40);
    let origin = Origin::start(paced(&content, 4 * MIB as u64)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&[origin.url("/f")], &dir.path().join("f"));
    o.expected_size = Some(MIB as u64 + 1);
    let err = get(o).await.0.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Network);
    assert!(err.to_string().contains("1048577"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nginx_mirrors_with_different_caps() {
    use shoal_testkit::{Nginx, NginxConfig};
    let content = random_bytes(12 * MIB, 41);
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("f.bin"), &content).unwrap();
    let start = |rate: &str| {
        Nginx::start(NginxConfig {
            root: root.path().to_path_buf(),
            limit_rate: Some(rate.into()),
            ..NginxConfig::default()
        })
        .expect("nginx starts (scripts/test installs nginx-light)")
    };
    let (slow, fast) = (start("256k"), start("2m"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.bin");
    let urls = [slow.url("/f.bin"), fast.url("/f.bin")];
    let summary = get(options(&urls, &out)).await.0.unwrap();
    assert_eq!(
        sha256_hex(&std::fs::read(&out).unwrap()),
        sha256_hex(&content)
    );
    let (from_slow, from_fast) = (summary.sources[0].bytes, summary.sources[1].bytes);
    assert!(from_slow > 0 && from_fast > 0, "{:?}", summary.sources);
    assert!(from_fast > 2 * from_slow, "{:?}", summary.sources);
}

/// Test origins sending neither `ETag` nor `Last-Modified`.
fn unvalidated(content: &bytes::Bytes) -> OriginConfig {
    OriginConfig {
        etag: false,
        last_modified: false,
        ..paced(content, 2 * MIB as u64)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_validators_a_mirror_of_another_file_of_the_same_size_is_dropped() {
    let content = random_bytes(4 * MIB, 42);
    let primary = Origin::start(unvalidated(&content)).await;
    let same = Origin::start(unvalidated(&content)).await;
    let other = Origin::start(unvalidated(&random_bytes(4 * MIB, 43))).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f");
    let urls = [primary.url("/f"), other.url("/f"), same.url("/f")];
    let (result, events) = get(options(&urls, &out)).await;
    let summary = result.unwrap();
    assert_eq!(
        sha256_hex(&std::fs::read(&out).unwrap()),
        sha256_hex(&content)
    );
    let dropped = dropped(&events);
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(dropped[0].0, other.url("/f"));
    assert!(
        dropped[0].1.contains("sends other bytes at bytes ")
            && dropped[0].1.contains(&primary.url("/f")),
        "{dropped:?}"
    );
    // The probe and the sample, nothing after.
    assert_eq!(other.requests().len(), 2, "{:?}", other.requests());
    let usage = |url: String| {
        summary
            .sources
            .iter()
            .find(|s| s.url.to_string() == url)
            .cloned()
            .expect("every URL is in the summary")
    };
    assert!(usage(other.url("/f")).dropped.is_some());
    assert!(usage(same.url("/f")).bytes > 0, "{:?}", summary.sources);
}
