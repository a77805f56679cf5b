//! What a fetch tells a reader that follows its bytes in file order ([`crate::ordered`]):
//! which file each download writes, cut into which pieces, and each piece as its bytes are
//! known good. The engine's events say as much, but a fetch passes on only some of them (a
//! leader's pieces are news only once their digests are published), so the downloads of a
//! fetch tell the tap directly, before any filtering. A fetch also tells whether what lands is
//! the URL's yet: a content the tracker maps the URL to is checked against the origin while it
//! downloads (`spot_check`), and a reader must not finish a body before the check has passed.

use std::path::PathBuf;
use std::sync::Arc;

use http::HeaderMap;
use shoal_core::{Layout, PieceIndex};
use shoal_engine::{DownloadOptions, Event, Rate, SharedRate};
use tokio::sync::mpsc;

use super::Job;

/// Where a fetch's bytes land, as they land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Landing {
    /// A download into `path` (its `.part` beside it until it is whole) starts; the pieces
    /// told before belong to an earlier download and no longer count.
    Started {
        /// Where the download's file will be once whole.
        path: PathBuf,
        /// How the file is cut into pieces.
        layout: Layout,
    },
    /// The piece's bytes are written and are the content's: checked against its digest, or
    /// hashed as the origin sent them.
    Piece(PieceIndex),
    /// What lands from here is a content the tracker maps the URL to, not yet checked against
    /// the origin: a reader may send its bytes but not the body's end until
    /// [`Landing::Trusted`] or [`Landing::Untrusted`]. A fetch that never tells this (the
    /// origin's own bytes, a content of known SHA-256, a content asked for by id) is trusted
    /// from the start.
    Checking,
    /// The check passed: the content is the URL's.
    Trusted,
    /// The check failed, for the reason given: nothing landed since [`Landing::Checking`] is
    /// the URL's. The fetch goes on from the origin, with a download of its own
    /// ([`Landing::Started`]).
    Untrusted(String),
}

/// Where a fetch tells its [`Landing`]s.
pub(crate) type LandingSender = mpsc::UnboundedSender<Landing>;

/// What a fetch is asked besides what to fetch.
#[derive(Debug, Default)]
pub(crate) struct Extras {
    /// Sent to the origin with every request of the fetch, besides the agent's own headers.
    pub(crate) headers: HeaderMap,
    /// Told where the bytes land.
    pub(crate) tap: Option<LandingSender>,
    /// The content's SHA-256, when known (a registry blob's digest): the fleet shares it
    /// under the digest rather than the URL, and a download whose bytes hash otherwise fails
    /// before it is kept or published.
    pub(crate) sha256: Option<[u8; 32]>,
    /// The rate caps of the download asked for (the queue's), on every download of the fetch.
    pub(crate) caps: FetchCaps,
}

/// The rate caps one fetch is held to, over its origin and peer bytes alike. A fetch that
/// joins one already running for the same content waits for it and is not capped.
#[derive(Debug, Clone, Default)]
pub(crate) struct FetchCaps {
    /// This download's own cap (aria2's `max-download-limit`).
    pub(crate) limit_rate: Option<Rate>,
    /// A cap shared with other downloads (the queue's `max-overall-download-limit`).
    pub(crate) shared_rate: Option<Arc<SharedRate>>,
}

impl FetchCaps {
    /// Puts the caps on `options`, one of the fetch's downloads.
    pub(super) fn apply(&self, options: &mut DownloadOptions) {
        options.limit_rate = self.limit_rate;
        options.shared_rate = self.shared_rate.clone();
    }
}

impl Job<'_> {
    /// Tells the tap, if any, what `event` of a download of a file cut as `layout` means
    /// for a reader of its bytes.
    pub(super) fn land(&self, event: &Event, layout: Layout) {
        let landing = match event {
            Event::Started { path, .. } => Landing::Started {
                path: path.clone(),
                layout,
            },
            Event::PieceVerified { index } => Landing::Piece(*index),
            _ => return,
        };
        self.tell(landing);
    }

    /// Tells the tap, if any, `landing`.
    pub(super) fn tell(&self, landing: Landing) {
        if let Some(tap) = &self.tap {
            let _ = tap.send(landing);
        }
    }
}
