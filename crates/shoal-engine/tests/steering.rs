//! How many connections a long download keeps. Extra connections that do not add throughput
//! are closed after a trial that pauses half of them; connections that do add are kept, and
//! the trial wastes nothing because paused connections read on afterwards.

use shoal_engine::{Connections, DownloadOptions, Event, MinSplit, Output, Rate};
use shoal_testkit::{random_bytes, sha256_hex, Origin, OriginConfig};
use url::Url;

mod common;

const MIB: usize = 1 << 20;

async fn run(
    origin: &Origin,
    limit: Option<Rate>,
) -> (Vec<Event>, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f");
    let mut o = DownloadOptions::new(
        Url::parse(&origin.url("/f")).unwrap(),
        Output::File(out.clone()),
    );
    o.connections = Connections::new(8).unwrap();
    o.min_split = MinSplit::new(256 * 1024).unwrap();
    o.limit_rate = limit;
    let (result, events) = common::get(o).await;
    result.unwrap();
    (events, out, dir)
}

fn lowered(events: &[Event]) -> Option<u32> {
    events.iter().find_map(|e| match e {
        Event::ConnectionsLowered { to, .. } => Some(*to),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_share_one_bottleneck_are_closed() {
    // The bottleneck is the download's own rate limit: however many connections, 2 MiB/s.
    let content = random_bytes(32 * MIB, 60);
    let origin = Origin::start(OriginConfig {
        content: content.clone(),
        ..OriginConfig::default()
    })
    .await;
    let (events, out, _dir) = run(&origin, Some(Rate::parse("2M").unwrap())).await;
    assert_eq!(
        sha256_hex(&std::fs::read(&out).unwrap()),
        sha256_hex(&content)
    );
    let notable: Vec<_> = events
        .iter()
        .filter(|e| !matches!(e, Event::Progress(_)))
        .collect();
    let to =
        lowered(&events).unwrap_or_else(|| panic!("connections were not lowered: {notable:?}"));
    assert!(to < 8, "kept {to}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_capped_one_by_one_are_all_kept_and_nothing_is_fetched_twice() {
    // Each connection is capped at 320 KiB/s: eight together are eight times faster.
    let content = random_bytes(24 * MIB, 61);
    let origin = Origin::start(OriginConfig {
        content: content.clone(),
        rate_limit: Some(320 * 1024),
        ..OriginConfig::default()
    })
    .await;
    let (events, out, _dir) = run(&origin, None).await;
    assert_eq!(
        sha256_hex(&std::fs::read(&out).unwrap()),
        sha256_hex(&content)
    );
    assert_eq!(lowered(&events), None, "every connection added throughput");
    let most = origin.most_at_once();
    assert!(most >= 8, "eight connections read at once, not {most}");
    // The paused half read on after the trial: beyond the file, only what stealing costs.
    let sent = origin.bytes_sent();
    assert!(sent <= content.len() as u64 + 8 * 256 * 1024, "sent {sent}");
}
