//! What the engine tells its caller while it works. The engine draws nothing: the binary turns
//! these into a progress bar, JSON lines, or nothing.

use std::path::PathBuf;
use std::time::Duration;

use shoal_core::{PieceIndex, SafeUrl};
use tokio::sync::mpsc;

/// Receives events; dropping the receiver is fine, events are then discarded.
pub type EventSender = mpsc::UnboundedSender<Event>;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The probe answered: where the file goes and what the server offers.
    Started {
        /// The final URL after redirects, credentials redacted.
        url: SafeUrl,
        path: PathBuf,
        size: Option<u64>,
        /// Whether the server honours byte ranges (so more than one connection can be used).
        ranges: bool,
    },
    /// A previous run's `.part` is being continued: `done` of `total` bytes are already on disk.
    /// `verified` is false when the server sends no `ETag` or `Last-Modified`, so only the size
    /// says it is the same file (a `--checksum` then checks the result).
    Resumed {
        done: u64,
        total: u64,
        verified: bool,
    },
    /// A previous run's `.part` could not be continued (or the file changed on the server while
    /// downloading): the download starts over from byte 0. `reason` is one line naming the file
    /// and what was wrong.
    Restarted { reason: String },
    /// A mirror is not used (any more): it failed, served another size, or cannot do ranges.
    /// The download goes on with the others.
    SourceDropped {
        /// Credentials redacted.
        url: SafeUrl,
        reason: String,
    },
    /// About ten times a second while bytes flow.
    Progress(Progress),
    /// A connection failed and its work is retried or handed to another connection.
    Retry {
        attempt: u32,
        /// What went wrong, credentials redacted.
        reason: String,
        after: Duration,
    },
    /// A connection delivered nothing (or far less than the others) and lost its work.
    Stalled { connection: u32 },
    /// The server asked for fewer connections (429/503) or more did not add throughput.
    ConnectionsLowered { to: u32, reason: String },
    /// A piece matched its digest (swarm downloads and piece hashes): it may be served and
    /// announced.
    PieceVerified { index: PieceIndex },
    /// A piece's bytes are all written and this is their BLAKE3 (with
    /// [`crate::DownloadOptions::learn_pieces`]).
    PieceHashed { index: PieceIndex, digest: [u8; 32] },
    /// A piece did not match its digest; `url` sent some of its bytes (credentials redacted)
    /// and is not used any more. `peer` names the peer, when it was one.
    BadPiece {
        index: PieceIndex,
        url: SafeUrl,
        peer: Option<String>,
    },
    /// Every byte is on disk; the checksum is being computed.
    Verifying { algo: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Bytes of the file on disk so far.
    pub done: u64,
    pub total: Option<u64>,
    /// Bytes per second over the last second or so.
    pub speed: f64,
    /// Connections streaming right now.
    pub connections: u32,
}

/// How a finished download went.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub path: PathBuf,
    pub size: u64,
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
    pub bytes: u64,
    /// Why it stopped being used, if it did.
    pub dropped: Option<String>,
}

impl Summary {
    pub fn average_speed(&self) -> f64 {
        self.size as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}
