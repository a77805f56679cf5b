//! Swarm downloads in tests: test origins standing in for peers' piece servers (both answer
//! range requests the same way), and what a swarm download's options and output look like.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shoal_core::{Bitfield, Manifest};
use shoal_engine::{
    Connections, Digests, DownloadOptions, HttpOptions, OriginUse, Output, PeerSource, SwarmOptions,
};
use shoal_testkit::{sha256_hex, Origin, OriginConfig};
use tokio::sync::watch;
use url::Url;

pub(crate) const PIECE: u64 = 1 << 20;
pub(crate) const SIZE: usize = 6 * (1 << 20) + 12345;

pub(crate) fn server(content: Bytes) -> Origin {
    Origin::start_blocking(OriginConfig {
        content,
        etag: false,
        last_modified: false,
        ..OriginConfig::default()
    })
}

pub(crate) fn bits(pieces: u32, have: &[u32]) -> Bitfield {
    let mut field = Bitfield::new(pieces);
    have.iter().for_each(|&p| field.set(p));
    field
}

pub(crate) fn peer(name: &str, origin: &Origin, have: Option<Bitfield>) -> PeerSource {
    PeerSource {
        name: name.to_string(),
        url: Url::parse(&origin.url("/v1/pieces/x")).unwrap(),
        have,
        seed: false,
    }
}

pub(crate) fn options(
    dir: &std::path::Path,
    url: &str,
    manifest: &Manifest,
    peers: watch::Receiver<Vec<PeerSource>>,
    origin: OriginUse,
) -> DownloadOptions {
    let mut o = DownloadOptions::new(Url::parse(url).unwrap(), Output::File(dir.join("out")));
    o.swarm = Some(SwarmOptions {
        me: "me".to_string(),
        layout: manifest.layout(),
        digests: Digests::Manifest(Arc::new(manifest.clone())),
        peers,
        peer_http: HttpOptions::default(),
        per_peer: Connections::new(2).unwrap(),
        origin,
    });
    o.stall_timeout = Duration::from_secs(2);
    o
}

/// A download of content that has no origin: peers only.
pub(crate) fn peers_only(
    dir: &std::path::Path,
    manifest: &Manifest,
    peers: watch::Receiver<Vec<PeerSource>>,
) -> DownloadOptions {
    options(dir, "shoal:blake3:x", manifest, peers, OriginUse::Never)
}

/// The download's output holds exactly `data`.
pub(crate) fn assert_out(dir: &std::path::Path, data: &[u8]) {
    assert_eq!(
        sha256_hex(&std::fs::read(dir.join("out")).unwrap()),
        sha256_hex(data),
        "the file on disk differs from the original"
    );
}

/// Every range a server was asked for lies inside the pieces it was said to hold.
pub(crate) fn asked_within(server: &Origin, have: &[u32]) {
    for r in server.requests() {
        let (a, b) = r.parsed_range.expect("range requests only");
        let b = b.expect("closed ranges");
        for piece in a / PIECE..=b / PIECE {
            assert!(have.contains(&(piece as u32)), "asked for piece {piece}");
        }
    }
}
