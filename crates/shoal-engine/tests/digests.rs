//! Swarm downloads checked against published digests, which arrive while the download runs:
//! pieces wait for theirs, a leader learns those of pieces its trusted origin sent, and a
//! follower asks for a digest it lacks.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shoal_core::Manifest;
use shoal_engine::{
    Connections, Digests, DownloadOptions, Event, OriginUse, Output, PeerSource, PublishedDigests,
};
use shoal_testkit::{random_bytes, Origin, OriginConfig, Peer, PeerConfig};
use tokio::sync::watch;
use url::Url;

use common::swarm::{
    asked_within, assert_out, bits, options, peer, peers_only, server, PIECE, SIZE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_digests_hold_pieces_back_until_known() {
    let data = random_bytes(SIZE, 6);
    let manifest = Manifest::of_bytes(&data, PIECE).unwrap();
    let n = manifest.layout().piece_count() as usize;
    let p = server(data.clone());
    let (_tx, rx) = watch::channel(vec![PeerSource {
        seed: true,
        ..peer("leader", &p, None)
    }]);
    let mut known: Vec<Option<[u8; 32]>> = manifest.digests().iter().copied().map(Some).collect();
    known[1] = None;
    let (digests_tx, digests) = watch::channel(known.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut o = peers_only(dir.path(), &manifest, rx.clone());
    o.stall_timeout = Duration::from_millis(500);
    let wanted = std::sync::Arc::new(tokio::sync::Notify::new());
    o.swarm.as_mut().unwrap().digests = Digests::Published(PublishedDigests {
        known: digests.clone(),
        wanted: wanted.clone(),
    });
    // Without piece 1's digest its bytes never count.
    let (result, events) = common::get(o.clone()).await;
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("digests of some pieces were not published"),
        "{err}"
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::PieceVerified { index } if index.get() == 1)));
    // It asked for the missing digest rather than waiting for a routine refresh.
    tokio::time::timeout(Duration::from_secs(1), wanted.notified())
        .await
        .expect("the engine asked for the missing digest");
    // Published, it does: the resumed download checks piece 1 and finishes.
    known[1] = Some(manifest.digests()[1]);
    digests_tx.send(known).unwrap();
    let (result, events) = common::get(o).await;
    result.unwrap();
    assert_out(dir.path(), &data);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::PieceVerified { index } if index.get() == 1)));
    assert!(n > 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learning_reports_every_piece_digest() {
    let data = random_bytes(SIZE, 7);
    let manifest = Manifest::of_bytes(&data, PIECE).unwrap();
    let origin = server(data.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut o = DownloadOptions::new(
        Url::parse(&origin.url("/f")).unwrap(),
        Output::File(dir.path().join("out")),
    );
    o.learn_pieces = Some(PIECE);
    let (result, events) = common::get(o).await;
    result.unwrap();
    let mut learned: Vec<Option<[u8; 32]>> = vec![None; manifest.digests().len()];
    for e in &events {
        if let Event::PieceHashed { index, digest } = e {
            assert!(
                learned[index.get() as usize].replace(*digest).is_none(),
                "once"
            );
        }
    }
    let expected: Vec<Option<[u8; 32]>> = manifest.digests().iter().copied().map(Some).collect();
    assert_eq!(learned, expected);
}

/// A member that took over a URL swarm's lead: pieces whose digest the dead leader published
/// are checked against it, wherever they come from; the others come from the origin alone,
/// which is trusted, and their digests are learned and reported before they count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaders_origin_is_trusted_for_pieces_without_a_digest() {
    let data = random_bytes(SIZE, 9);
    let manifest = Manifest::of_bytes(&data, PIECE).unwrap();
    let n = manifest.layout().piece_count();
    let even: Vec<u32> = (0..n).filter(|i| i % 2 == 0).collect();
    let odd: Vec<u32> = (0..n).filter(|i| i % 2 == 1).collect();
    // The dead leader published the even pieces' digests, and a peer holds those pieces.
    let known: Vec<Option<[u8; 32]>> = manifest
        .digests()
        .iter()
        .enumerate()
        .map(|(i, d)| (i % 2 == 0).then_some(*d))
        .collect();
    let (_digests_tx, digests) = watch::channel(known);
    let run = |dir: &std::path::Path, p: &Origin, origin: &Origin, use_origin: OriginUse| {
        let (tx, rx) = watch::channel(vec![peer("p", p, Some(bits(n, &even)))]);
        let mut o = options(dir, &origin.url("/file"), &manifest, rx, use_origin);
        o.stall_timeout = Duration::from_millis(500);
        o.swarm.as_mut().unwrap().digests = Digests::Published(PublishedDigests {
            known: digests.clone(),
            wanted: Arc::new(tokio::sync::Notify::new()),
        });
        (o, tx)
    };
    let connections = Connections::new(2).unwrap();

    // A follower's fallback origin is not trusted: the odd pieces wait for digests forever.
    let fallback = tempfile::tempdir().unwrap();
    let (p, origin) = (server(data.clone()), server(data.clone()));
    let (o, _peers) = run(
        fallback.path(),
        &p,
        &origin,
        OriginUse::Fallback {
            connections,
            validator: None,
        },
    );
    let (result, _) = common::get(o).await;
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("digests of some pieces were not published"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let (p, origin) = (server(data.clone()), server(data.clone()));
    let (o, _peers) = run(
        dir.path(),
        &p,
        &origin,
        OriginUse::Lead {
            connections,
            validator: None,
        },
    );
    let (result, events) = common::get(o).await;
    result.unwrap();
    assert_out(dir.path(), &data);
    asked_within(&p, &even);
    asked_within(&origin, &odd);
    // Each odd piece's digest is learned once, right, and reported before the piece counts.
    let mut learned: Vec<Option<[u8; 32]>> = vec![None; n as usize];
    for e in &events {
        match e {
            Event::PieceHashed { index, digest } => {
                assert!(learned[index.get() as usize].replace(*digest).is_none());
            }
            Event::PieceVerified { index } if index.get() % 2 == 1 => {
                assert!(
                    learned[index.get() as usize].is_some(),
                    "{index} before its digest"
                );
            }
            _ => {}
        }
    }
    let expected: Vec<Option<[u8; 32]>> = manifest
        .digests()
        .iter()
        .enumerate()
        .map(|(i, d)| (i % 2 == 1).then_some(*d))
        .collect();
    assert_eq!(learned, expected);
}

/// A peer claiming every piece of `manifest` and sending wrong bytes for each, and its source.
fn liar_of_every_piece(data: &Bytes, manifest: &Manifest) -> (Peer, PeerSource) {
    let liar = Peer::start(PeerConfig {
        content: data.clone(),
        piece_size: PIECE,
        lies: (0..manifest.layout().piece_count()).collect(),
        token: None,
        origin: OriginConfig::default(),
    });
    let source = PeerSource {
        name: "liar".to_string(),
        url: Url::parse(&liar.url(&manifest.id())).unwrap(),
        have: None,
        seed: false,
    };
    (liar, source)
}

/// A URL swarm's leader beside a liar that claims every piece before any digest is published:
/// a piece without a digest comes from the leader's trusted origin, whoever claims it (the
/// liar's copy could not be checked, and waiting for a digest only the leader can publish
/// would hold the swarm up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_takes_unpublished_pieces_from_its_origin_not_a_peer_claiming_them() {
    let data = random_bytes(SIZE, 12);
    let manifest = Manifest::of_bytes(&data, PIECE).unwrap();
    let n = manifest.layout().piece_count();
    let (liar, liar_source) = liar_of_every_piece(&data, &manifest);
    let origin = server(data.clone());
    let (_tx, rx) = watch::channel(vec![liar_source]);
    let (_digests_tx, digests) = watch::channel(vec![None; n as usize]);
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(
        dir.path(),
        &origin.url("/file"),
        &manifest,
        rx,
        OriginUse::Lead {
            connections: Connections::new(2).unwrap(),
            validator: None,
        },
    );
    o.stall_timeout = Duration::from_millis(500);
    o.swarm.as_mut().unwrap().digests = Digests::Published(PublishedDigests {
        known: digests,
        wanted: Arc::new(tokio::sync::Notify::new()),
    });
    let (result, _) = common::get(o).await;
    result.unwrap();
    assert_out(dir.path(), &data);
    assert_eq!(liar.origin().bytes_sent(), 0);
}

/// A follower beside its leader and a liar claiming every piece, before the leader published
/// any digest: pieces without a digest are asked of the leader only, so the liar is asked once
/// the digests are in, sends one bad piece, and is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_asks_only_the_leader_for_pieces_without_a_digest() {
    let data = random_bytes(SIZE, 13);
    let manifest = Manifest::of_bytes(&data, PIECE).unwrap();
    let n = manifest.layout().piece_count();
    let (_liar, liar_source) = liar_of_every_piece(&data, &manifest);
    let leader = server(data.clone());
    let (_tx, rx) = watch::channel(vec![
        PeerSource {
            seed: true,
            ..peer("leader", &leader, None)
        },
        liar_source,
    ]);
    let (digests_tx, digests) = watch::channel(vec![None; n as usize]);
    let dir = tempfile::tempdir().unwrap();
    let mut o = peers_only(dir.path(), &manifest, rx);
    o.swarm.as_mut().unwrap().digests = Digests::Published(PublishedDigests {
        known: digests,
        wanted: Arc::new(tokio::sync::Notify::new()),
    });
    let publish = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let all: Vec<Option<[u8; 32]>> = manifest.digests().iter().copied().map(Some).collect();
        let _ = digests_tx.send(all);
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    let (result, events) = common::get(o).await;
    publish.abort();
    result.unwrap();
    assert_out(dir.path(), &data);
    let bad = events
        .iter()
        .filter(|e| matches!(e, Event::BadPiece { peer: Some(p), .. } if p == "liar"))
        .count();
    assert!(bad <= 2, "the liar was sent for {bad} pieces");
}

/// A follower whose peer holds a piece with no digest yet asks for that digest at once
/// (followers poll only for the digests they lack, when the engine wants one), and takes the
/// piece from that peer once the digest comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_a_peer_lacks_is_asked_for_and_its_piece_taken_once_it_comes() {
    let data = random_bytes(SIZE, 14);
    let manifest = Manifest::of_bytes(&data, PIECE).unwrap();
    let n = manifest.layout().piece_count();
    let p = server(data.clone());
    let every: Vec<u32> = (0..n).collect();
    let (_tx, rx) = watch::channel(vec![peer("p", &p, Some(bits(n, &every)))]);
    let mut known: Vec<Option<[u8; 32]>> = manifest.digests().iter().copied().map(Some).collect();
    known[1] = None;
    let (digests_tx, digests) = watch::channel(known);
    let wanted = Arc::new(tokio::sync::Notify::new());
    let dir = tempfile::tempdir().unwrap();
    let mut o = peers_only(dir.path(), &manifest, rx);
    o.swarm.as_mut().unwrap().per_peer = Connections::new(1).unwrap();
    o.swarm.as_mut().unwrap().digests = Digests::Published(PublishedDigests {
        known: digests,
        wanted: wanted.clone(),
    });
    let run = tokio::spawn(common::get(o));
    tokio::time::timeout(Duration::from_secs(10), wanted.notified())
        .await
        .expect("the engine asked for the digest of the piece its peer holds");
    // The digest comes once every other piece was asked for.
    tokio::time::timeout(Duration::from_secs(10), async {
        while (p.requests().len() as u32) < n - 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the other pieces asked for");
    let all: Vec<Option<[u8; 32]>> = manifest.digests().iter().copied().map(Some).collect();
    digests_tx.send(all).unwrap();
    let (result, _) = run.await.unwrap();
    result.unwrap();
    assert_out(dir.path(), &data);
    let starts: Vec<u64> = p
        .requests()
        .iter()
        .map(|r| r.parsed_range.expect("range requests only").0)
        .collect();
    assert_eq!(
        starts.len() as u32,
        n,
        "each piece asked for once: {starts:?}"
    );
    assert_eq!(
        starts.last(),
        Some(&PIECE),
        "piece 1 last, once its digest came"
    );
}

/// A URL swarm's leader that stopped after writing pieces but before it published their
/// digests (killed between its checkpoint and its next publication) resumes as the leader:
/// nobody else will ever publish those digests, so it fetches those pieces again from its
/// origin and learns them, instead of waiting for ever; a piece whose digest it published is
/// checked on disk and kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_leader_fetches_again_the_pieces_whose_digests_it_never_published() {
    let data = random_bytes(SIZE, 14);
    let manifest = Manifest::of_bytes(&data, PIECE).unwrap();
    let n = manifest.layout().piece_count();
    let origin = Origin::start_blocking(OriginConfig {
        content: data.clone(),
        rate_limit: Some(1 << 20),
        ..OriginConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let lead = |known: Vec<Option<[u8; 32]>>| {
        let (_none, peers) = watch::channel(vec![]);
        let mut o = options(
            dir.path(),
            &origin.url("/file"),
            &manifest,
            peers,
            OriginUse::Lead {
                connections: Connections::new(2).unwrap(),
                validator: origin.etag(),
            },
        );
        // Front to back, as an agent's leader fetches.
        o.in_order = Some(256 << 10);
        let (digests_tx, digests) = watch::channel(known);
        o.swarm.as_mut().unwrap().digests = Digests::Published(PublishedDigests {
            known: digests,
            wanted: Arc::new(tokio::sync::Notify::new()),
        });
        (o, digests_tx)
    };
    // The first run stops once pieces 0 to 2 are in.
    let (first, _digests) = lead(vec![None; n as usize]);
    let (result, _) = common::get_until(
        first,
        |e| matches!(e, Event::Progress(p) if p.done >= 3 * PIECE + PIECE / 2),
    )
    .await;
    assert!(result.is_err(), "cancelled before the end: {result:?}");
    // Only piece 1's digest was published before it stopped.
    let mut known = vec![None; n as usize];
    known[1] = Some(manifest.digests()[1]);
    let asked_before = origin.requests().len();
    let (second, _digests) = lead(known);
    let (result, events) = common::get(second).await;
    result.unwrap();
    assert_out(dir.path(), &data);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Resumed { done, .. } if *done >= 3 * PIECE)),
        "the second run continued the first's .part"
    );
    let asked: Vec<(u64, u64)> = origin.requests()[asked_before..]
        .iter()
        .filter_map(|r| r.parsed_range)
        .map(|(start, end)| (start, end.unwrap_or(SIZE as u64 - 1)))
        .collect();
    let fetched_again = |piece: u64| {
        asked
            .iter()
            .any(|&(start, end)| start < (piece + 1) * PIECE && end >= piece * PIECE)
    };
    assert!(fetched_again(0) && fetched_again(2), "{asked:?}");
    assert!(!fetched_again(1), "piece 1 was kept: {asked:?}");
}
