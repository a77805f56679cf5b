//! Swarm downloads: peers as sources of the same scheduler, each asked only for the pieces it
//! holds, every piece verified against the manifest. Test origins stand in for peers' piece
//! servers (both answer range requests the same way).

mod common;

use std::time::Duration;

use bytes::Bytes;
use shoal_core::Manifest;
use shoal_engine::{
    Connections, DownloadError, DownloadOptions, Event, OriginUse, Output, PeerSource,
};
use shoal_testkit::{random_bytes, Origin, OriginConfig, Peer, PeerConfig};
use tokio::sync::watch;
use url::Url;

use common::swarm::{
    asked_within, assert_out, bits, options, peer, peers_only, server, PIECE, SIZE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieces_come_from_the_peers_that_hold_them() {
    let data = random_bytes(SIZE, 1);
    let manifest = Manifest::of_bytes(&data, PIECE).unwrap();
    let n = manifest.layout().piece_count();
    let (a, b, c) = (
        server(data.clone()),
        server(data.clone()),
        server(data.clone()),
    );
    let (a_has, b_has) = ([0, 1, 2], [3, 4]);
    let (_tx, rx) = watch::channel(vec![
        peer("a", &a, Some(bits(n, &a_has))),
        peer("b", &b, Some(bits(n, &b_has))),
        peer("c", &c, Some(bits(n, &[6]))),
    ]);
    // Piece 5 only arrives later, with a fourth peer.
    let d = server(data.clone());
    let dir = tempfile::tempdir().unwrap();
    let o = peers_only(dir.path(), &manifest, rx);
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = _tx.send(vec![peer("d", &d, None)]);
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(d);
    });
    let (result, events) = common::get(o).await;
    let summary = result.unwrap();
    late.abort();
    assert_out(dir.path(), &data);
    asked_within(&a, &a_has);
    asked_within(&b, &b_has);
    asked_within(&c, &[6]);
    let verified: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::PieceVerified { index } => Some(index.get()),
            _ => None,
        })
        .collect();
    let mut sorted = verified.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "each piece once");
    assert_eq!(
        summary.sources.iter().map(|s| s.bytes).sum::<u64>(),
        SIZE as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_bad_bytes_is_dropped_and_named() {
    let data = random_bytes(SIZE, 2);
    let manifest = Manifest::of_bytes(&data, PIECE).unwrap();
    let mut bad = data.to_vec();
    for i in (0..bad.len()).step_by(4096) {
        bad[i] ^= 0xff;
    }
    let liar = server(Bytes::from(bad));
    let honest = server(data.clone());
    let (_tx, rx) = watch::channel(vec![
        peer("liar", &liar, None),
        peer("honest", &honest, None),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let o = peers_only(dir.path(), &manifest, rx);
    let (result, events) = common::get(o).await;
    result.unwrap();
    assert_out(dir.path(), &data);
    if liar.bytes_sent() > 0 {
        assert!(events.iter().any(|e| matches!(
            e,
            Event::BadPiece { peer: Some(p), .. } if p == "liar"
        )));
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::SourceDropped { url, .. } if url.to_string().contains(&liar.addr().port().to_string()))));
    }
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::BadPiece { peer: Some(p), .. } if p == "honest")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_serves_only_what_no_peer_holds() {
    let data = random_bytes(SIZE, 3);
    let manifest = Manifest::of_bytes(&data, PIECE).unwrap();
    let n = manifest.layout().piece_count();
    let p = server(data.clone());
    let origin = server(data.clone());
    let held: Vec<u32> = (0..n).filter(|i| i % 2 == 0).collect();
    let (_tx, rx) = watch::channel(vec![peer("p", &p, Some(bits(n, &held)))]);
    let dir = tempfile::tempdir().unwrap();
    let o = options(
        dir.path(),
        &origin.url("/file"),
        &manifest,
        rx,
        OriginUse::Fallback {
            connections: Connections::new(2).unwrap(),
            validator: None,
        },
    );
    let (result, _) = common::get(o).await;
    result.unwrap();
    assert_out(dir.path(), &data);
    asked_within(&p, &held);
    // Odd pieces come from the origin; even ones too only when racing a slow peer at the end,
    // which loopback peers never are for a second.
    let odd: Vec<u32> = (0..n).filter(|i| i % 2 == 1).collect();
    asked_within(&origin, &odd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_peer_is_replaced_by_others() {
    let data = random_bytes(SIZE, 4);
    let manifest = Manifest::of_bytes(&data, PIECE).unwrap();
    let gone = server(data.clone());
    let gone_url = gone.url("/v1/pieces/x");
    drop(gone);
    let alive = server(data.clone());
    let (_tx, rx) = watch::channel(vec![
        PeerSource {
            name: "gone".into(),
            url: Url::parse(&gone_url).unwrap(),
            have: None,
            seed: false,
        },
        peer("alive", &alive, None),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let o = peers_only(dir.path(), &manifest, rx);
    let (result, events) = common::get(o).await;
    let summary = result.unwrap();
    assert_out(dir.path(), &data);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::SourceDropped { url, .. } if url.to_string() == gone_url)),
        "{events:?}"
    );
    let alive_bytes: u64 = summary
        .sources
        .iter()
        .filter(|s| s.url.to_string().contains(&alive.addr().port().to_string()))
        .map(|s| s.bytes)
        .sum();
    assert_eq!(alive_bytes, SIZE as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_source_for_a_piece_fails_after_the_idle_limit() {
    let data = random_bytes(SIZE, 5);
    let manifest = Manifest::of_bytes(&data, PIECE).unwrap();
    let n = manifest.layout().piece_count();
    let p = server(data.clone());
    let (_tx, rx) = watch::channel(vec![peer("p", &p, Some(bits(n, &[0, 1])))]);
    let dir = tempfile::tempdir().unwrap();
    let mut o = peers_only(dir.path(), &manifest, rx);
    o.stall_timeout = Duration::from_millis(500);
    let (result, _) = common::get(o).await;
    let err = result.unwrap_err();
    let text = err.to_string();
    let DownloadError::Unserved { missing, .. } = err else {
        panic!("not the error naming what is missing: {text}");
    };
    assert_eq!(missing.pieces(), vec![(2, n as u64 - 1)], "{text}");
    assert!(
        text.contains("(5 of 7 pieces: 2-6) still missing"),
        "{text}"
    );
    assert!(dir.path().join("out.part").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_origin_down_peers_serve_what_they_hold_and_the_origin_the_rest_once_back() {
    let data = random_bytes(SIZE, 15);
    let manifest = Manifest::of_bytes(&data, PIECE).unwrap();
    let n = manifest.layout().piece_count();
    let p = server(data.clone());
    let origin = server(data.clone());
    origin.go_down();
    let held: Vec<u32> = (0..n).filter(|i| i % 2 == 0).collect();
    let (_tx, rx) = watch::channel(vec![peer("p", &p, Some(bits(n, &held)))]);
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(
        dir.path(),
        &origin.url("/file"),
        &manifest,
        rx,
        OriginUse::Fallback {
            connections: Connections::new(2).unwrap(),
            validator: None,
        },
    );
    o.max_tries = 2;
    o.max_wait = Some(Duration::from_secs(60));
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let run = tokio::spawn(shoal_engine::download(
        o,
        tx,
        shoal_engine::CancellationToken::new(),
    ));
    // Every piece the peer holds is verified while the origin is down, and the origin's
    // connections wait past their tries instead of being given up.
    let (mut verified, mut waits) = (0, 0);
    while verified < held.len() || waits < 4 {
        let event = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .expect("events within a minute")
            .expect("the download waits for the origin instead of ending");
        match event {
            Event::PieceVerified { index } => {
                assert!(
                    held.contains(&index.get()),
                    "piece {index} without an origin"
                );
                verified += 1;
            }
            Event::Retry { attempt, .. } if attempt > 2 => waits += 1,
            _ => {}
        }
    }
    assert_eq!(origin.requests().len(), 0);
    origin.come_back();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("completes within a minute of the origin's return")
        .expect("no panic")
        .expect("completes");
    assert_out(dir.path(), &data);
    asked_within(&p, &held);
    let odd: Vec<u32> = (0..n).filter(|i| i % 2 == 1).collect();
    asked_within(&origin, &odd);
}

/// A URL swarm's leader fetches in file order, a chunk per request, so pieces are complete one
/// after another from the start: every byte still comes once, and hashes to the origin's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_order_fetches_every_chunk_once_front_to_back() {
    let data = random_bytes(SIZE, 8);
    let origin = server(data.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut o = DownloadOptions::new(
        Url::parse(&origin.url("/f")).unwrap(),
        Output::File(dir.path().join("out")),
    );
    let chunk = 4 * shoal_engine::BLOCK;
    o.in_order = Some(chunk);
    o.endgame = shoal_engine::Endgame::Never;
    o.connections = shoal_engine::Connections::new(4).unwrap();
    let (result, _) = common::get(o).await;
    result.unwrap();
    assert_out(dir.path(), &data);
    let mut starts: Vec<u64> = origin
        .requests()
        .iter()
        .filter_map(|r| r.parsed_range.map(|(start, _)| start))
        .collect();
    // The probe asks for `bytes=0-` and is cut after its first chunk; every other request is
    // one chunk, and none is asked twice.
    let n = starts.len();
    starts.sort_unstable();
    starts.dedup();
    assert_eq!(starts.len(), n, "a chunk was asked for twice");
    let expected: Vec<u64> = (0..SIZE as u64).step_by(chunk as usize).collect();
    assert_eq!(starts, expected);
}

/// A seed's upload is for first copies, whole pieces each: a downloader keeps one request open
/// to it at a time, however many it may open to other peers, and still gets every byte right.
/// (The HTTP pool may still open a second TCP connection when a request follows the previous
/// body's last byte before that connection is back in the pool: the count of requests at once
/// is what the seed feels.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_gets_one_connection() {
    let data = random_bytes(SIZE, 9);
    let manifest = Manifest::of_bytes(&data, PIECE).unwrap();
    let seed = server(data.clone());
    let (_tx, peers) = watch::channel(vec![peer("seed", &seed, None)]);
    let dir = tempfile::tempdir().unwrap();
    let (result, _) = common::get(peers_only(dir.path(), &manifest, peers)).await;
    result.unwrap();
    assert_out(dir.path(), &data);
    assert_eq!(
        seed.requests().len(),
        manifest.digests().len(),
        "one request per piece"
    );
    assert_eq!(seed.most_at_once(), 1);
}

/// A liar and an honest peer both write piece 0: the liar sends half of it (wrong) and stalls,
/// and the honest peer finishes it. The piece does not match; each writer is asked for it
/// alone, and only the liar is named and dropped. The honest peer keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liar_sharing_a_piece_with_an_honest_peer_is_the_only_one_blamed() {
    let data = random_bytes(2 * PIECE as usize, 10);
    let manifest = Manifest::of_bytes(&data, PIECE).unwrap();
    let n = manifest.layout().piece_count();
    let liar = Peer::start(PeerConfig {
        content: data.clone(),
        piece_size: PIECE,
        lies: vec![0],
        token: None,
        origin: OriginConfig {
            stall_after: Some(PIECE / 2),
            ..OriginConfig::default()
        },
    });
    let honest = server(data.clone());
    let liar_source = PeerSource {
        name: "liar".to_string(),
        url: Url::parse(&liar.url(&manifest.id())).unwrap(),
        have: Some(bits(n, &[0])),
        seed: false,
    };
    // Not a seed (a seed is asked only for first copies, which piece 0 is not).
    let honest_source = peer("honest", &honest, Some(bits(n, &[0, 1])));
    let (_tx, rx) = watch::channel(vec![liar_source, honest_source]);
    let dir = tempfile::tempdir().unwrap();
    let mut o = peers_only(dir.path(), &manifest, rx);
    o.swarm.as_mut().unwrap().per_peer = Connections::new(1).unwrap();
    o.stall_timeout = Duration::from_secs(1);
    let (result, events) = common::get(o).await;
    let summary = result.unwrap();
    assert_out(dir.path(), &data);
    // Piece 0 had two writers: the honest peer was asked for the rest of it.
    let rest_of_0 = honest.requests().iter().any(|r| {
        let (start, _) = r.parsed_range.unwrap();
        start > 0 && start < PIECE
    });
    assert!(
        rest_of_0,
        "{:?}\n{:?}\n{events:?}",
        honest.requests(),
        liar.origin().requests()
    );
    let blamed: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::BadPiece { peer, .. } => peer.as_deref(),
            _ => None,
        })
        .collect();
    assert!(!blamed.is_empty(), "the liar is named: {events:?}");
    assert!(blamed.iter().all(|&p| p == "liar"), "{blamed:?}");
    let port = |origin: &Origin| format!(":{}/", origin.addr().port());
    let dropped: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::SourceDropped { url, .. } => Some(url.to_string()),
            _ => None,
        })
        .collect();
    assert!(
        dropped.iter().all(|u| u.contains(&port(liar.origin()))) && !dropped.is_empty(),
        "{dropped:?}"
    );
    let honest_usage = summary
        .sources
        .iter()
        .find(|s| s.url.to_string().contains(&port(&honest)))
        .unwrap();
    assert!(honest_usage.dropped.is_none(), "{honest_usage:?}");
    assert!(honest_usage.bytes >= PIECE, "{honest_usage:?}");
}

/// A peer whose upload is far slower than the others' (a tenth) must not hold up the swarm:
/// once measured, the pieces it holds are fetched from faster holders (the leader, which
/// otherwise keeps its upload for pieces no downloader holds) or raced by them. Run twice:
/// with the fast holder a URL swarm's leader, and an ordinary peer holding every piece.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_peer_serves_only_a_small_share() {
    const PIECES: u32 = 16;
    let data = random_bytes(PIECES as usize * PIECE as usize, 11);
    let manifest = Manifest::of_bytes(&data, PIECE).unwrap();
    let paced = |rate: u64| {
        Origin::start_blocking(OriginConfig {
            content: data.clone(),
            etag: false,
            last_modified: false,
            rate_limit: Some(rate),
            ..OriginConfig::default()
        })
    };
    let all: Vec<u32> = (0..PIECES).collect();
    // The slow peer holds half the pieces as a downloader does: the leader keeps those for
    // it, and gives this downloader the other half (designated to it: see `swarm::order`).
    let odd: Vec<u32> = (0..PIECES).filter(|i| i % 2 == 1).collect();
    for (fast_is_leader, slow_has) in [(true, &odd), (false, &all)] {
        // Per connection: the fast holder's 4 MB/s against the slow one's 256 kB/s (two
        // connections each, at most, as `per_peer` allows).
        let (fast, slow) = (paced(4 << 20), paced(256 << 10));
        let (_tx, rx) = watch::channel(vec![
            PeerSource {
                seed: fast_is_leader,
                ..peer("fast", &fast, Some(bits(PIECES, &all)))
            },
            peer("slow", &slow, Some(bits(PIECES, slow_has))),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let (result, events) = common::get(peers_only(dir.path(), &manifest, rx)).await;
        result.unwrap_or_else(|e| panic!("leader {fast_is_leader}: {e}; {events:?}"));
        assert_out(dir.path(), &data);
        asked_within(&slow, slow_has);
        let size = data.len() as u64;
        // Unthrottled by the slow peer, it would have served about a tenth; never asked again
        // once measured, it serves what it had in flight, at most a piece per connection.
        assert!(
            slow.bytes_sent() <= 2 * PIECE + PIECE / 2,
            "leader {fast_is_leader}: the slow peer sent {} of {size} bytes, the fast one {}",
            slow.bytes_sent(),
            fast.bytes_sent()
        );
        assert!(fast.bytes_sent() >= size - slow.bytes_sent());
    }
}
