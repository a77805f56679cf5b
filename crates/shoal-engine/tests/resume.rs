//! Resume at the engine level: a download cancelled mid-way continues with only the missing
//! blocks; every kind of damaged or stale state is reported and the download starts over with
//! the right bytes. Partial downloads are either real (cancelled through the token) or laid
//! down by hand with `resume::save`, which makes each damage exact.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use shoal_core::Bitfield;
use shoal_engine::naming::part_path;
use shoal_engine::resume::{self, State};
use shoal_engine::{
    Connections, DownloadError, DownloadOptions, Event, MinSplit, Output, Resume, BLOCK,
};
use shoal_testkit::{random_bytes, sha256_hex, Origin, OriginConfig};
use url::Url;

mod common;
use common::{get, get_until};

const MIB: usize = 1 << 20;
const CONNS: u64 = 4;

fn options(url: &str, out: &Path) -> DownloadOptions {
    let mut o = DownloadOptions::new(Url::parse(url).unwrap(), Output::File(out.to_path_buf()));
    o.min_split = MinSplit::new(256 * 1024).unwrap();
    o.connections = Connections::new(CONNS).unwrap();
    o.stall_timeout = Duration::from_secs(2);
    o
}

fn hash(path: &Path) -> String {
    sha256_hex(&std::fs::read(path).unwrap())
}

fn state_path(out: &Path) -> PathBuf {
    resume::state_path(out)
}

fn restarted(events: &[Event]) -> Option<&str> {
    events.iter().find_map(|e| match e {
        Event::Restarted { reason } => Some(reason.as_str()),
        _ => None,
    })
}

fn resumed(events: &[Event]) -> Option<(u64, bool)> {
    events.iter().find_map(|e| match e {
        Event::Resumed { done, verified, .. } => Some((*done, *verified)),
        _ => None,
    })
}

/// A `.part` holding the first `done_blocks` blocks of `content` (the rest zeros) and a state
/// saying so, as a run interrupted there would leave.
fn lay_down(origin: &Origin, url: &str, out: &Path, content: &Bytes, done_blocks: u32) {
    let size = content.len() as u64;
    let mut part = vec![0u8; content.len()];
    let done_len = (u64::from(done_blocks) * BLOCK).min(size) as usize;
    part[..done_len].copy_from_slice(&content[..done_len]);
    std::fs::write(part_path(out), &part).unwrap();
    let mut done = Bitfield::new(size.div_ceil(BLOCK) as u32);
    for b in 0..done_blocks {
        done.set(b);
    }
    let state = State {
        url_hash: resume::url_hash(&Url::parse(url).unwrap()),
        size,
        block: BLOCK,
        etag: origin.etag(),
        last_modified: origin.last_modified(),
        done,
    };
    resume::save(&state_path(out), &state).unwrap();
}

struct Setup {
    origin: Origin,
    content: Bytes,
    url: String,
    _dir: tempfile::TempDir,
    out: PathBuf,
}

async fn setup(len: usize, seed: u64, config: OriginConfig) -> Setup {
    let content = random_bytes(len, seed);
    let origin = Origin::start(OriginConfig {
        content: content.clone(),
        ..config
    })
    .await;
    let url = origin.url("/f.bin");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.bin");
    Setup {
        origin,
        content,
        url,
        _dir: dir,
        out,
    }
}

impl Setup {
    fn assert_complete(&self) {
        assert_eq!(hash(&self.out), sha256_hex(&self.origin.content()));
        assert!(!part_path(&self.out).exists(), "the .part is renamed");
        assert!(!state_path(&self.out).exists(), "the state is removed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_download_resumes_with_the_missing_blocks_only() {
    let s = setup(
        8 * MIB,
        21,
        OriginConfig {
            rate_limit: Some(512 * 1024),
            ..OriginConfig::default()
        },
    )
    .await;
    let size = s.content.len() as u64;
    let (first, _) = get_until(
        options(&s.url, &s.out),
        |e| matches!(e, Event::Progress(p) if p.done >= size / 3),
    )
    .await;
    assert!(matches!(first, Err(DownloadError::Cancelled)), "{first:?}");
    let state = resume::load(&state_path(&s.out)).unwrap().expect("state");
    let saved = u64::from(state.done.count_ones()) * BLOCK;
    assert!(
        saved >= size / 3,
        "the state holds what was written: {saved}"
    );
    let served_first = s.origin.bytes_sent();

    let (second, events) = get(options(&s.url, &s.out)).await;
    let summary = second.unwrap();
    let (done, verified) = resumed(&events).expect("resumed");
    assert!(verified && done == saved.min(size), "{done} vs {saved}");
    s.assert_complete();
    // A clean stop writes every byte it received before the final state, so little beyond
    // a block per connection is fetched twice.
    let waste = s.origin.bytes_sent() - size;
    assert!(
        waste <= CONNS * 2 * BLOCK,
        "served {} in all ({served_first} in the first run), fetched {} in the second, for {size}",
        s.origin.bytes_sent(),
        summary.fetched
    );
    // The second run's probe asked from its first missing byte; every other range request
    // carried If-Range with the strong ETag. (A probe's own validators are compared with the
    // state's before its bytes are used.)
    let etag = s.origin.etag().unwrap();
    let probes: Vec<_> = s
        .origin
        .requests()
        .iter()
        .filter_map(|r| r.parsed_range.filter(|(_, end)| end.is_none()))
        .collect();
    let first_missing = (0..state.done.len())
        .find(|&b| !state.done.get(b))
        .map(|b| u64::from(b) * BLOCK)
        .unwrap();
    assert_eq!(probes, [(0, None), (first_missing, None)]);
    for r in s.origin.requests() {
        if r.parsed_range.is_some_and(|(_, end)| end.is_some()) {
            assert_eq!(r.if_range.as_deref(), Some(etag.as_str()), "{:?}", r.range);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn laid_down_half_is_not_fetched_again() {
    let s = setup(4 * MIB, 22, OriginConfig::default()).await;
    let half = (s.content.len() as u64 / BLOCK / 2) as u32;
    lay_down(&s.origin, &s.url, &s.out, &s.content, half);
    let (result, events) = get(options(&s.url, &s.out)).await;
    result.unwrap();
    assert_eq!(resumed(&events), Some((u64::from(half) * BLOCK, true)));
    s.assert_complete();
    let below_half = s
        .origin
        .requests()
        .iter()
        .filter_map(|r| r.parsed_range)
        .filter(|&(start, end)| end.is_some() && start < u64::from(half) * BLOCK)
        .count();
    assert_eq!(below_half, 0, "no range below the done half was asked for");
}

/// Damages a laid-down state with `damage`, downloads, and checks that the download started
/// over with a reason containing `expected`, and ended with the right bytes.
async fn starts_over(seed: u64, damage: impl FnOnce(&Setup), expected: &str) {
    let s = setup(2 * MIB, seed, OriginConfig::default()).await;
    lay_down(&s.origin, &s.url, &s.out, &s.content, 8);
    // The laid-down half is garbage where it counts: a resume that trusted damaged state
    // would keep it and fail the hash.
    let mut part = std::fs::read(part_path(&s.out)).unwrap();
    part[..8 * BLOCK as usize].fill(0xAA);
    std::fs::write(part_path(&s.out), &part).unwrap();
    damage(&s);
    let (result, events) = get(options(&s.url, &s.out)).await;
    result.unwrap();
    let reason = restarted(&events).expect("a reason to start over");
    assert!(reason.contains(expected), "{reason:?} lacks {expected:?}");
    assert!(reason.contains("starting"), "{reason}");
    assert!(resumed(&events).is_none());
    s.assert_complete();
}

#[tokio::test]
async fn truncated_state_starts_over() {
    starts_over(
        31,
        |s| {
            let bytes = std::fs::read(state_path(&s.out)).unwrap();
            std::fs::write(state_path(&s.out), &bytes[..bytes.len() / 2]).unwrap();
        },
        "is truncated",
    )
    .await;
}

#[tokio::test]
async fn random_bytes_as_state_start_over() {
    starts_over(
        32,
        |s| std::fs::write(state_path(&s.out), random_bytes(300, 99)).unwrap(),
        "is not a shoal state file",
    )
    .await;
}

#[tokio::test]
async fn flipped_byte_in_state_starts_over() {
    starts_over(
        33,
        |s| {
            let mut bytes = std::fs::read(state_path(&s.out)).unwrap();
            let n = bytes.len();
            bytes[n - 40] ^= 0x10;
            std::fs::write(state_path(&s.out), &bytes).unwrap();
        },
        "fails its checksum",
    )
    .await;
}

#[tokio::test]
async fn wrong_version_starts_over() {
    starts_over(
        34,
        |s| {
            let mut bytes = std::fs::read(state_path(&s.out)).unwrap();
            bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
            std::fs::write(state_path(&s.out), &bytes).unwrap();
        },
        "has format version 7",
    )
    .await;
}

#[tokio::test]
async fn state_without_its_part_starts_over() {
    starts_over(
        35,
        |s| std::fs::remove_file(part_path(&s.out)).unwrap(),
        "f.bin.part beside it",
    )
    .await;
}

#[tokio::test]
async fn part_shorter_than_recorded_starts_over() {
    starts_over(
        36,
        |s| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(part_path(&s.out))
                .unwrap();
            file.set_len(BLOCK * 3).unwrap();
        },
        "is 196608 bytes, not the 2097152",
    )
    .await;
}

#[tokio::test]
async fn part_without_state_starts_over() {
    starts_over(
        37,
        |s| std::fs::remove_file(state_path(&s.out)).unwrap(),
        "has no resume state",
    )
    .await;
}

#[tokio::test]
async fn changed_file_on_the_server_starts_over() {
    starts_over(
        38,
        |s| s.origin.set_content(random_bytes(2 * MIB, 138)),
        "the file on the server changed (ETag",
    )
    .await;
}

#[tokio::test]
async fn resized_file_on_the_server_starts_over() {
    starts_over(
        39,
        |s| s.origin.set_content(random_bytes(3 * MIB, 139)),
        "changed size (was 2097152 bytes, now 3145728)",
    )
    .await;
}

#[tokio::test]
async fn state_for_another_url_starts_over() {
    starts_over(
        40,
        |s| {
            let mut state = resume::load(&state_path(&s.out)).unwrap().unwrap();
            state.url_hash = resume::url_hash(&Url::parse("http://elsewhere/f.bin").unwrap());
            resume::save(&state_path(&s.out), &state).unwrap();
        },
        "for another URL",
    )
    .await;
}

#[tokio::test]
async fn no_resume_ignores_the_state() {
    let s = setup(2 * MIB, 41, OriginConfig::default()).await;
    lay_down(&s.origin, &s.url, &s.out, &s.content, 16);
    let mut o = options(&s.url, &s.out);
    o.resume = Resume::Never;
    let (result, events) = get(o).await;
    assert!(result.unwrap().fetched >= s.content.len() as u64);
    assert!(resumed(&events).is_none() && restarted(&events).is_none());
    s.assert_complete();
}

#[tokio::test]
async fn without_validators_resume_is_unverified_unless_checksummed() {
    let s = setup(
        2 * MIB,
        42,
        OriginConfig {
            etag: false,
            last_modified: false,
            ..OriginConfig::default()
        },
    )
    .await;
    lay_down(&s.origin, &s.url, &s.out, &s.content, 8);
    let (result, events) = get(options(&s.url, &s.out)).await;
    result.unwrap();
    assert_eq!(resumed(&events), Some((8 * BLOCK, false)));
    s.assert_complete();

    std::fs::remove_file(&s.out).unwrap();
    lay_down(&s.origin, &s.url, &s.out, &s.content, 8);
    let mut o = options(&s.url, &s.out);
    o.checksum = Some(
        format!("sha256={}", sha256_hex(&s.content))
            .parse()
            .unwrap(),
    );
    let (result, events) = get(o).await;
    result.unwrap();
    assert_eq!(resumed(&events), Some((8 * BLOCK, true)));
    s.assert_complete();
}

#[tokio::test]
async fn checksum_mismatch_drops_the_state_and_keeps_the_part() {
    let s = setup(2 * MIB, 43, OriginConfig::default()).await;
    let mut o = options(&s.url, &s.out);
    o.checksum = Some(format!("sha256={}", "0".repeat(64)).parse().unwrap());
    let (result, _) = get(o).await;
    assert!(matches!(
        result,
        Err(DownloadError::ChecksumMismatch { .. })
    ));
    assert!(part_path(&s.out).exists());
    assert!(!state_path(&s.out).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_changing_mid_download_restarts_once_then_gives_up() {
    // Each probe's response stalls after 128 KiB; only after the stall timeout does the one
    // connection ask for the rest with a range request. The file is changed in that window,
    // right after each probe, so each range request meets a new version: the first time the
    // download starts over, the second time it gives up.
    let s = setup(
        2 * MIB,
        44,
        OriginConfig {
            stall_after: Some(128 * 1024),
            stall_count: 10,
            ..OriginConfig::default()
        },
    )
    .await;
    let origin = &s.origin;
    let versions = std::sync::atomic::AtomicU64::new(0);
    let mut o = options(&s.url, &s.out);
    o.connections = Connections::new(1).unwrap();
    o.stall_timeout = Duration::from_millis(500);
    let (result, events) = get_until(o, |e| {
        if matches!(e, Event::Started { .. }) {
            let n = versions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            origin.set_content(random_bytes(2 * MIB, 144 + n));
        }
        false
    })
    .await;
    let err = result.unwrap_err();
    assert!(matches!(err, DownloadError::Changed { .. }), "{err}");
    assert!(
        err.to_string().contains("changed on the server again"),
        "{err}"
    );
    assert!(restarted(&events).is_some_and(|r| r.contains("changed while downloading")));
    assert!(
        !s.out.exists(),
        "no mix of versions is ever given the final name"
    );
}

/// An origin that sends neither `ETag` nor `Last-Modified`.
fn unvalidated() -> OriginConfig {
    OriginConfig {
        etag: false,
        last_modified: false,
        ..OriginConfig::default()
    }
}

/// The ranges the origin was asked for that start before `offset`.
fn ranges_before(origin: &Origin, offset: u64) -> Vec<(u64, Option<u64>)> {
    origin
        .requests()
        .iter()
        .filter_map(|r| r.parsed_range)
        .filter(|&(start, _)| start < offset)
        .collect()
}

#[tokio::test]
async fn without_validators_a_changed_file_is_caught_by_the_sample_and_started_over() {
    let s = setup(2 * MIB, 45, unvalidated()).await;
    lay_down(&s.origin, &s.url, &s.out, &s.content, 8);
    // Same size, no validator: only the bytes can tell.
    s.origin.set_content(random_bytes(2 * MIB, 145));
    let (result, events) = get(options(&s.url, &s.out)).await;
    result.unwrap();
    let reason = restarted(&events).expect("a reason to start over");
    assert!(
        reason.contains("f.bin.part: ")
            && reason.contains(&s.url)
            && reason.contains("sends other bytes at bytes 458752-524287")
            && reason.contains("starting over"),
        "{reason}"
    );
    assert!(resumed(&events).is_none(), "{events:?}");
    s.assert_complete();
}

#[tokio::test]
async fn without_validators_the_same_file_resumes_after_one_sample() {
    let s = setup(2 * MIB, 46, unvalidated()).await;
    lay_down(&s.origin, &s.url, &s.out, &s.content, 8);
    let (result, events) = get(options(&s.url, &s.out)).await;
    result.unwrap();
    assert!(restarted(&events).is_none(), "{events:?}");
    assert_eq!(resumed(&events), Some((8 * BLOCK, false)));
    s.assert_complete();
    // One block before the resume point (the one the resumed bytes join), then only what was
    // missing.
    assert_eq!(
        ranges_before(&s.origin, 8 * BLOCK),
        [(7 * BLOCK, Some(8 * BLOCK - 1))]
    );
}

#[tokio::test]
async fn with_validators_no_sample_is_fetched() {
    let s = setup(2 * MIB, 47, OriginConfig::default()).await;
    lay_down(&s.origin, &s.url, &s.out, &s.content, 8);
    let (result, events) = get(options(&s.url, &s.out)).await;
    result.unwrap();
    assert_eq!(resumed(&events), Some((8 * BLOCK, true)));
    s.assert_complete();
    assert_eq!(ranges_before(&s.origin, 8 * BLOCK), []);
}
