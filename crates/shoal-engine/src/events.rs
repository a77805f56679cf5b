//! What the engine tells its caller while it works. The engine draws nothing: the binary turns
//! these into a progress bar, JSON lines, or nothing.

use std::path::PathBuf;
use std::time::Duration;

use shoal_core::{Bitfield, PieceIndex, SafeUrl};
use tokio::sync::mpsc;

/// Receives events; dropping the receiver is fine, events are then discarded.
pub type EventSender = mpsc::UnboundedSender<Event>;

/// What the engine reports while a download runs, in order, on the caller's [`EventSender`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The probe answered: where the file goes and what the server offers.
    Started {
        /// The final URL after redirects, credentials redacted.
        url: SafeUrl,
        /// Where the finished file will be (the `.part` sits beside it); `-` for a stream.
        path: PathBuf,
        /// The file's length in bytes; `None` when the server sent no length (one stream to EOF).
        size: Option<u64>,
        /// Whether the server honours byte ranges (so more than one connection can be used).
        ranges: bool,
    },
    /// A previous run's `.part` is being continued: `done` of `total` bytes are already on disk.
    /// `verified` is false when the server sends no `ETag` or `Last-Modified`, so only the size
    /// and one block compared with the server's say it is the same file (a `--checksum` then
    /// checks the result).
    Resumed {
        /// Bytes the state file records as durably written.
        done: u64,
        /// The file's length in bytes.
        total: u64,
        /// Whether the server's `ETag` or `Last-Modified` matched the ones saved with the `.part`.
        verified: bool,
        /// The blocks (of [`crate::BLOCK`] bytes, from the file's start) continued as they
        /// are: none of them is written again, unless a piece they make up fails its check.
        kept: Bitfield,
    },
    /// A previous run's `.part` could not be continued (or the file changed on the server while
    /// downloading): the download starts over from byte 0. `reason` is one line naming the file
    /// and what was wrong.
    Restarted {
        /// One line naming the `.part` file and what was wrong.
        reason: String,
    },
    /// A mirror is not used (any more): it failed, served another size, or cannot do ranges.
    /// The download goes on with the others.
    SourceDropped {
        /// Credentials redacted.
        url: SafeUrl,
        /// Why, one line, credentials redacted.
        reason: String,
    },
    /// About ten times a second while bytes flow.
    Progress(Progress),
    /// A connection failed and its work is retried or handed to another connection.
    Retry {
        /// The number of the try that failed, from 1.
        attempt: u32,
        /// What went wrong, credentials redacted.
        reason: String,
        /// How long the engine waits before the next try (backoff, or the server's `Retry-After`).
        after: Duration,
    },
    /// A connection delivered nothing (or far less than the others) and lost its work.
    Stalled {
        /// The connection's number within this download, as logs name it.
        connection: u32,
    },
    /// The server asked for fewer connections (429/503) or more did not add throughput.
    ConnectionsLowered {
        /// The connection cap from now on.
        to: u32,
        /// Why: the server's answer (429/503) or that throughput did not grow.
        reason: String,
    },
    /// A piece matched its digest (swarm downloads and piece hashes): it may be served and
    /// announced.
    PieceVerified {
        /// The piece, now durable and matching its digest.
        index: PieceIndex,
    },
    /// A piece's bytes are all written and this is their BLAKE3, learned rather than checked
    /// (with [`crate::DownloadOptions::learn_pieces`], or a piece a swarm leader's origin sent
    /// whole, [`crate::OriginUse::Lead`]); sent before its [`Event::PieceVerified`].
    PieceHashed {
        /// The piece whose bytes were hashed.
        index: PieceIndex,
        /// BLAKE3 of the piece's bytes.
        digest: [u8; 32],
    },
    /// A piece did not match its digest; `url` sent some of its bytes (credentials redacted)
    /// and is not used any more. `peer` names the peer, when it was one.
    BadPiece {
        /// The piece that did not match.
        index: PieceIndex,
        /// A source that sent bytes of it, credentials redacted.
        url: SafeUrl,
        /// The peer's name (its agent id) when the source was a peer; `None` for the origin or a
        /// mirror.
        peer: Option<String>,
    },
    /// Every byte is on disk; the checksum is being computed.
    Verifying {
        /// The checksum algorithm's name (`sha256`, …).
        algo: String,
    },
}

/// A snapshot of a running download, sent about ten times a second.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Bytes of the file on disk so far.
    pub done: u64,
    /// The file's length in bytes; `None` when the server sent no length.
    pub total: Option<u64>,
    /// Bytes per second over the last second or so.
    pub speed: f64,
    /// Connections streaming right now.
    pub connections: u32,
}

/// How a finished download went.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Where the finished file is; `-` for a stream ([`crate::Output::Stream`]).
    pub path: PathBuf,
    /// The file's length in bytes.
    pub size: u64,
    /// Wall time from the start of the call to the rename into place, the checksum included.
    pub elapsed: Duration,
    /// The most connections that streamed at the same time.
    pub max_connections: u32,
    /// Bytes received from the network, which exceeds `size` when work was redone.
    pub fetched: u64,
    /// Where the bytes came from, one entry per URL (the first is the URL asked for); empty
    /// for a download that needed no range requests.
    pub sources: Vec<SourceUsage>,
}

/// How much one URL contributed.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceUsage {
    /// Credentials redacted.
    pub url: SafeUrl,
    /// Bytes this URL delivered, counting bytes later fetched again elsewhere.
    pub bytes: u64,
    /// Why it stopped being used, if it did.
    pub dropped: Option<String>,
}

impl Summary {
    /// Bytes of the file per second over the whole download (`size / elapsed`).
    pub fn average_speed(&self) -> f64 {
        self.size as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}
