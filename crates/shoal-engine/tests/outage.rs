//! An origin that goes down mid-download (its listener closed, its connections cut, as when
//! the server dies): with `max_wait` the download waits for it with back-off and completes
//! with the right bytes when it returns, and fails naming what is missing once it has waited
//! that long; without, it fails after `max_tries` as before.

use std::path::Path;
use std::time::Duration;

use shoal_engine::{
    download, CancellationToken, Connections, DownloadError, DownloadOptions, ErrorKind, Event,
    MinSplit, Output, Summary, BLOCK,
};
use shoal_testkit::{random_bytes, sha256_hex, Origin, OriginConfig, RequestRecord};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use url::Url;

const MIB: usize = 1 << 20;
const SIZE: usize = 4 * MIB;
/// Guards against hangs only; nothing is judged by time.
const DEADLINE: Duration = Duration::from_secs(90);

fn options(origin: &Origin, out: &Path, max_wait: Option<Duration>) -> DownloadOptions {
    let url = Url::parse(&origin.url("/f.bin")).unwrap();
    let mut o = DownloadOptions::new(url, Output::File(out.to_path_buf()));
    o.min_split = MinSplit::new(256 * 1024).unwrap();
    o.connections = Connections::new(4).unwrap();
    o.stall_timeout = Duration::from_secs(2);
    o.max_tries = 2;
    o.max_wait = max_wait;
    o
}

/// An origin slow enough that the download is still running when it goes down.
fn slow_origin() -> Origin {
    Origin::start_blocking(OriginConfig {
        content: random_bytes(SIZE, 14),
        rate_limit: Some(256 * 1024),
        ..OriginConfig::default()
    })
}

type Run = JoinHandle<Result<Summary, DownloadError>>;

fn start(o: DownloadOptions) -> (Run, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tokio::spawn(download(o, tx, CancellationToken::new())), rx)
}

/// Waits (bounded) until the origin has sent `bytes`, then takes it down.
async fn down_after(origin: &Origin, bytes: u64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while origin.bytes_sent() < bytes {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the origin never sent {bytes} bytes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    origin.go_down();
}

/// Reads events until `n` retries past `max_tries` (waits for a source that is down) were
/// said; panics if the download ends first.
async fn waits_seen(rx: &mut mpsc::UnboundedReceiver<Event>, max_tries: u32, n: usize) {
    let mut seen = 0;
    while seen < n {
        let event = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("events within the deadline")
            .expect("the download waits instead of ending while the origin is down");
        if matches!(event, Event::Retry { attempt, .. } if attempt > max_tries) {
            seen += 1;
        }
    }
}

async fn finish(run: Run) -> Result<Summary, DownloadError> {
    tokio::time::timeout(DEADLINE, run)
        .await
        .expect("the download ends within the deadline")
        .expect("no panic")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_dies_is_waited_for_and_the_download_completes_when_it_returns() {
    let origin = slow_origin();
    let content = origin.content();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.bin");
    let (run, mut rx) = start(options(&origin, &out, Some(Duration::from_secs(60))));
    down_after(&origin, MIB as u64).await;
    let before = origin.requests().len();
    // Every connection is refused past its tries, and none gives up.
    waits_seen(&mut rx, 2, 6).await;
    assert!(!run.is_finished());
    origin.come_back();
    let summary = finish(run)
        .await
        .expect("completes once the origin is back");
    assert_eq!(
        sha256_hex(&std::fs::read(&out).unwrap()),
        sha256_hex(&content)
    );
    assert_eq!(summary.size, SIZE as u64);
    // It went on from where it was: what the origin sent before the outage arrived (a closed
    // connection delivers what it had sent), and is not asked for again beyond the partial
    // 64 KiB block at the end of each connection's share.
    let requests = origin.requests();
    assert!(requests.len() > before);
    let sent_span = |r: &RequestRecord| {
        let start = r.parsed_range.map_or(0, |(start, _)| start);
        start..start + r.body_bytes
    };
    for early in requests[..before].iter().map(sent_span) {
        let again: u64 = requests[before..]
            .iter()
            .map(sent_span)
            .map(|late| {
                late.end
                    .min(early.end)
                    .saturating_sub(late.start.max(early.start))
            })
            .sum();
        assert!(again < BLOCK, "{again} bytes of {early:?} sent again");
    }
    // Nor is much else fetched twice: the endgame races only a connection it outpaces.
    let sent = origin.bytes_sent();
    assert!(sent <= (SIZE + MIB / 2) as u64, "sent {sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_stays_down_fails_the_download_naming_what_is_missing() {
    let origin = slow_origin();
    let content = origin.content();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.bin");
    let wait = Duration::from_secs(3);
    let (run, _rx) = start(options(&origin, &out, Some(wait)));
    down_after(&origin, MIB as u64).await;
    let err = finish(run).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Network, "{text}");
    let DownloadError::Unserved {
        url,
        missing,
        waited,
        last_failure,
    } = err
    else {
        panic!("not the error naming what is missing: {text}");
    };
    assert_eq!(url.to_string(), origin.url("/f.bin"));
    assert_eq!(waited, wait);
    let last = last_failure.expect("the last failure is said");
    assert!(last.starts_with(&origin.url("/f.bin")), "{last}");
    assert_eq!(missing.total, SIZE as u64);
    assert!(
        missing.bytes > 0 && missing.bytes < SIZE as u64,
        "{missing:?}"
    );
    assert_eq!(
        missing.bytes,
        missing.ranges.iter().map(|r| r.len()).sum::<u64>()
    );
    assert!(
        text.starts_with(&format!(
            "{}: no source sent anything for 3s, and {missing} still missing",
            origin.url("/f.bin")
        )),
        "{text}"
    );
    // What arrived is kept, and every byte outside the missing ranges is the origin's.
    let mut part = std::fs::read(dir.path().join("f.bin.part")).unwrap();
    let mut want = content.to_vec();
    for range in &missing.ranges {
        let range = range.start() as usize..range.end() as usize;
        part[range.clone()].fill(0);
        want[range].fill(0);
    }
    assert!(
        part == want,
        "bytes outside the missing ranges differ from the origin's"
    );
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_max_wait_an_origin_down_fails_after_its_tries_as_before() {
    let origin = slow_origin();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.bin");
    let (run, _rx) = start(options(&origin, &out, None));
    down_after(&origin, MIB as u64).await;
    let err = finish(run).await.unwrap_err();
    assert!(
        matches!(err, DownloadError::Network { tries: 2, .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_max_wait_an_origin_down_at_the_start_is_waited_for_by_the_probe() {
    let origin = slow_origin();
    let content = origin.content();
    origin.go_down();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.bin");
    let (run, mut rx) = start(options(&origin, &out, Some(Duration::from_secs(60))));
    // The probe is refused past its tries and asks again instead of failing.
    waits_seen(&mut rx, 2, 2).await;
    assert!(!run.is_finished());
    origin.come_back();
    finish(run)
        .await
        .expect("completes once the origin is back");
    assert_eq!(
        sha256_hex(&std::fs::read(&out).unwrap()),
        sha256_hex(&content)
    );
}
