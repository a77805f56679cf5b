//! What a fetch tells a reader that follows its bytes in file order ([`crate::ordered`]):
//! which file each download writes, cut into which pieces, and each piece as its bytes are
//! known good: as the engine verifies it, or, for a download that continues a `.part`, at
//! once for the pieces the fetch held in it. The engine's events say as much, but the
//! downloads of a fetch tell the tap directly, so that a reader does not depend on which
//! events a fetch passes on. A fetch also tells whether what lands is the URL's yet: a content
//! the tracker maps the URL to is checked against the origin while it downloads
//! (`spot_check`), and a reader must not finish a body before the check has passed.

use std::path::PathBuf;
use std::sync::Arc;

use http::HeaderMap;
use shoal_core::{Layout, PieceIndex};
use shoal_engine::{DownloadOptions, Event, Rate, SharedRate};
use tokio::sync::mpsc;

use super::{downloads, Job};
use crate::catalog::Entry;

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
    /// What lands from here is not checked yet: a content the tracker maps the URL to,
    /// checked against the origin, or a content of known SHA-256, checked once whole. A
    /// reader may send its bytes but not the body's end until [`Landing::Trusted`] or
    /// [`Landing::Untrusted`] (or the fetch's failure). A fetch that never tells this (the
    /// origin's own bytes, a content asked for by id) is trusted from the start.
    Checking,
    /// The check passed: the content is the URL's (or has the SHA-256 asked for).
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
    /// for a reader of its bytes. `held` is the catalog entry whose pieces are those of the
    /// download's file, if it has one.
    pub(super) fn land(&self, event: &Event, layout: Layout, held: Option<&Entry>) {
        let landing = match event {
            Event::Started { path, .. } => {
                // A content of known SHA-256 is checked as a whole once it has landed: a
                // reader holds the body's end until then (see `by_digest`).
                if self.sha256.is_some() {
                    self.tell(Landing::Checking);
                }
                Landing::Started {
                    path: path.clone(),
                    layout,
                }
            }
            Event::PieceVerified { index } => Landing::Piece(*index),
            // The engine continues the `.part`: the pieces the entry holds in it (verified by
            // an earlier download of this fetch, or restored at the agent's start) are good
            // now, while the engine checks them again only later (after hashing every one,
            // or once their digests are published). Only those whose blocks it keeps as they
            // are: any other may be written again, by any source, before it is checked.
            Event::Resumed { kept, .. } => {
                let Some(entry) = held.filter(|entry| entry.layout() == layout) else {
                    return;
                };
                for piece in downloads::within(layout, &entry.have(), kept).ones() {
                    self.tell(Landing::Piece(
                        layout.piece(piece).expect("a piece of the layout"),
                    ));
                }
                return;
            }
            _ => return,
        };
        self.tell(landing);
    }

    /// Tells the tap, if any, `landing`, and the SHA-256 follower.
    pub(super) fn tell(&self, landing: Landing) {
        if let Some(follower) = &self.sha256_follower {
            follower.take(&landing);
        }
        if let Some(tap) = &self.tap {
            let _ = tap.send(landing);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shoal_core::wire::AgentId;
    use shoal_core::{Bitfield, ContentId};
    use shoal_engine::{
        resume, CancellationToken, Digests, HttpOptions, OriginUse, PublishedDigests, BLOCK,
    };
    use tokio::sync::{watch, Notify};

    use super::*;
    use crate::catalog::Catalog;
    use crate::fetch::downloads::Downloads;
    use crate::fetch::recording::Recording;
    use crate::fetch::swarm::SwarmRun;
    use crate::fetch::{content_url, part_path, FetchOptions, Fetcher, Want};
    use crate::objects::Objects;

    const PIECE: u64 = 2 * BLOCK;

    /// What the tap of a fetch is told by a swarm download of content `[5; 32]` (four pieces,
    /// none of whose digests is published, and no peer), when an earlier download left its
    /// `.part` with the blocks of pieces `durable` recorded in the engine's resume state
    /// (none: no state, so the engine starts the file over), and the content's entry holds
    /// pieces `held`.
    async fn told(durable: Option<&[u32]>, held: &[u32]) -> (Vec<Landing>, PathBuf, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::open(dir.path(), None).unwrap();
        let catalog = Catalog::new();
        let downloads = Downloads::open(dir.path()).unwrap();
        let fetcher = Fetcher::new(
            AgentId::new("landing-test").unwrap(),
            catalog.clone(),
            objects.clone(),
            None,
            FetchOptions {
                // With no source, the download gives up after four of these.
                stall_timeout: Duration::from_millis(250),
                ..FetchOptions::default()
            },
            downloads.clone(),
        );
        let id = ContentId::from_bytes([5; 32]);
        let layout = Layout::new(4 * PIECE, PIECE).unwrap();
        let url = content_url(&id);
        let path = objects.path(&id);
        std::fs::write(part_path(&path), vec![7u8; layout.size() as usize]).unwrap();
        if let Some(durable) = durable {
            let mut done = Bitfield::new((layout.size() / BLOCK) as u32);
            for &piece in durable {
                let range = layout.range(layout.piece(piece).unwrap());
                (range.start() / BLOCK..range.end() / BLOCK).for_each(|b| done.set(b as u32));
            }
            let state = resume::State {
                url_hash: resume::url_hash(&url),
                size: layout.size(),
                block: BLOCK,
                // The engine's tag for a swarm whose digests are published as it goes.
                etag: Some(format!("swarm:{}:{PIECE}", layout.size())),
                last_modified: None,
                done,
            };
            resume::save(&resume::state_path(&path), &state).unwrap();
        }
        let entry = Entry::provisional(id, layout, "f".into(), part_path(&path));
        for &piece in held {
            entry.mark(layout.piece(piece).unwrap());
        }
        catalog.insert(Arc::new(entry));

        let recording = Recording::begin(&downloads, &Want::Content(id), None).await;
        let (tap, mut landings) = mpsc::unbounded_channel();
        let (events, _) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let job = Job {
            f: &fetcher.inner,
            events,
            cancel: cancel.clone(),
            recording: &recording,
            http: HttpOptions::default(),
            tap: Some(tap),
            sha256: None,
            sha256_follower: None,
            caps: FetchCaps::default(),
        };
        let (_digests_tx, known) = watch::channel(vec![None; 4]);
        let run = SwarmRun {
            id,
            url,
            layout,
            digests: Digests::Published(PublishedDigests {
                known,
                wanted: Arc::new(Notify::new()),
            }),
            origin: OriginUse::Never,
            leader: None,
            led: None,
            max_wait: Duration::from_secs(1),
        };
        // Nothing can be fetched or checked: the download ends without the content, and
        // whatever the tap was told came from what the fetch held, not from the engine.
        let ended = job.swarm(run, &cancel).await;
        assert!(ended.is_err(), "the download had no source");
        drop(job);
        recording.end(false).await;
        let mut told = Vec::new();
        while let Ok(landing) = landings.try_recv() {
            told.push(landing);
        }
        (told, path, layout)
    }

    fn piece(layout: Layout, i: u32) -> Landing {
        Landing::Piece(layout.piece(i).unwrap())
    }

    #[tokio::test]
    async fn a_continued_part_tells_the_pieces_held_in_it_at_once() {
        // Held: 0, 1, 2; kept by the engine: 0, 1, 3. Piece 2's bytes may be fetched again.
        let (told, path, layout) = told(Some(&[0, 1, 3]), &[0, 1, 2]).await;
        assert_eq!(
            told,
            vec![
                Landing::Started { path, layout },
                piece(layout, 0),
                piece(layout, 1)
            ]
        );
    }

    #[tokio::test]
    async fn a_part_started_over_tells_no_piece() {
        let (told, path, layout) = told(None, &[0, 1]).await;
        assert_eq!(told, vec![Landing::Started { path, layout }]);
    }
}
