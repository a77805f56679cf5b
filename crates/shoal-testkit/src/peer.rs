//! A liar peer: it speaks the agents' piece protocol ([`shoal_core::wire::peer`]) and serves
//! wrong bytes for the pieces it is told to lie about, the right ones for the others, so that a
//! test (or a chaos bench) can put a liar in a swarm. It holds every piece, answers the `have`
//! long-poll as an agent holding them all does, takes the bearer token when one is set, and
//! keeps every fault and the request log of the [`Origin`] underneath (stalls, pacing, resets).

use bytes::Bytes;
use shoal_core::wire::peer::path;
use shoal_core::{Bitfield, ContentId, Layout};

use crate::origin::{Origin, OriginConfig};
use crate::peer_routes::PeerRoutes;

/// How a [`Peer`] behaves.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// The true content, all of whose pieces the peer says it holds.
    pub content: Bytes,
    /// The content's piece size.
    pub piece_size: u64,
    /// Pieces served with wrong bytes (each byte inverted); the others are served right.
    pub lies: Vec<u32>,
    /// The bearer token required, as an agent's piece server requires the fleet's: none is
    /// 401, another is 403. `None`: any request is served.
    pub token: Option<String>,
    /// Faults and pacing of its byte responses, as an origin's (its `content` is not used).
    pub origin: OriginConfig,
}

/// A running peer; dropping it stops it.
pub struct Peer {
    origin: Origin,
}

impl Peer {
    /// Starts serving on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If `piece_size` does not describe `content` (no piece, or more than fit a `u32`), or a
    /// lie names a piece past the end: the test is wrong.
    pub fn start(config: PeerConfig) -> Peer {
        Peer::start_on(config, crate::origin::LOOPBACK)
    }

    /// Like [`Peer::start`], listening on `bind` (a bench's network namespace, say: the
    /// `shoal-liar` command).
    ///
    /// # Panics
    /// As [`Peer::start`], and if it cannot listen on `bind`.
    pub fn start_on(config: PeerConfig, bind: std::net::SocketAddr) -> Peer {
        let layout = Layout::for_hashes(config.content.len() as u64, config.piece_size)
            .expect("the piece size describes the content");
        let mut served = config.content.to_vec();
        for &lie in &config.lies {
            let piece = layout
                .piece(lie)
                .expect("a lie about a piece of the content");
            let range = layout.range(piece);
            served[range.start() as usize..range.end() as usize]
                .iter_mut()
                .for_each(|b| *b = !*b);
        }
        let routes = PeerRoutes::new(config.token, Bitfield::full(layout.piece_count()));
        let origin = Origin::start_with(
            OriginConfig {
                content: Bytes::from(served),
                ..config.origin
            },
            Some(routes),
            bind,
        );
        Peer { origin }
    }

    /// The URL of content `id`'s bytes on this peer (its `have` is this URL with `/have`).
    pub fn url(&self, id: &ContentId) -> String {
        self.origin.url(&path::pieces(id))
    }

    /// The origin underneath: what it was asked, what it sent.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// The status line and body of one `GET path` with `headers`, on a fresh connection.
    fn get(peer: &Peer, path: &str, headers: &str) -> (String, Vec<u8>) {
        let mut tcp = std::net::TcpStream::connect(peer.origin().addr()).unwrap();
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n"
        )
        .unwrap();
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).unwrap();
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&answer[..split]).to_string();
        let status = head.lines().next().unwrap().to_string();
        (status, answer[split + 4..].to_vec())
    }

    #[test]
    fn it_lies_about_chosen_pieces_only_and_speaks_the_peer_protocol() {
        let content = crate::random_bytes(3 * 1024, 1);
        let peer = Peer::start(PeerConfig {
            content: content.clone(),
            piece_size: 1024,
            lies: vec![1],
            token: Some("s3cret".into()),
            origin: OriginConfig::default(),
        });
        let id = ContentId::from_bytes([7; 32]);
        let pieces = &path::pieces(&id);
        assert!(peer.url(&id).ends_with(pieces));
        let have = path::have(&id);
        let auth = "Authorization: Bearer s3cret\r\n";
        assert!(get(&peer, pieces, "").0.contains(" 401 "));
        assert!(get(&peer, pieces, "Authorization: Bearer nope\r\n")
            .0
            .contains(" 403 "));
        let (status, body) = get(&peer, &have, auth);
        assert!(status.contains(" 200 "), "{status}");
        assert_eq!(body, br#"{"count":3}"#);
        let (status, body) = get(&peer, pieces, &format!("{auth}Range: bytes=0-3071\r\n"));
        assert!(status.contains(" 206 "), "{status}");
        assert_eq!(body[..1024], content[..1024]);
        let inverted: Vec<u8> = content[1024..2048].iter().map(|b| !b).collect();
        assert_eq!(body[1024..2048], inverted[..]);
        assert_eq!(body[2048..], content[2048..]);
    }
}
