//! A mapped content checked against its origin while peers send the rest: the tracker's
//! mapping of a URL version to a content is only its publisher's word, and a publisher with a
//! stolen token can map any URL to bytes of its choosing, whose pieces all match their
//! (forged) manifest. One random piece fetched from the origin and compared with the
//! manifest's digest catches a wholesale substitution; a mapping that fails is reported, so
//! that corroborated reports withdraw it, and the URL is fetched as if it had none.
//!
//! The check runs beside the download from peers rather than before it, so that a reader's
//! first byte waits for one piece, not two: it starts once the download's first piece is in
//! (at once for a content of one piece), so the check's piece does not share the link with
//! the reader's first. Until it passes, the content is not the URL's: the fetch's tap is told
//! so ([`Landing::Checking`]) and a reader holds back the body's end; the fetch's result is
//! given out only once it passed. A content that fails stops downloading and is dropped (held
//! whole, it would be handed out for the URL next time without a check); a reader that sent
//! some of it ends its body with an error, and the URL is fetched from the origin. The agent
//! remembers the mapping it caught ([`Caught`]): until corroborated reports withdraw it at
//! the tracker, later requests for the URL go to the origin at once instead of streaming the
//! other content again and being cut off.

use std::collections::VecDeque;
use std::sync::Mutex;

use rand::Rng;
use shoal_core::wire::{UrlKey, UrlReportRequest};
use shoal_core::{ContentId, Manifest, SafeUrl};
use shoal_engine::DownloadError;
use thiserror::Error;
use tracing::{info, warn};

use super::{AgentFetchError, Fetched, Job, Landing, OriginUrl};

/// Why a mapped content is not trusted for a URL.
#[derive(Debug, Error)]
pub(super) enum Untrusted {
    /// The origin's bytes of a piece do not hash to the manifest's digest.
    #[error("piece {piece} from the origin does not match content {content}")]
    Differs { content: ContentId, piece: u32 },
    /// The origin did not give the piece, so the content could not be checked.
    #[error("content {content} could not be checked against the origin: {source}")]
    Unchecked {
        content: ContentId,
        #[source]
        source: DownloadError,
    },
}

/// The most mappings an agent remembers having caught; the oldest is forgotten first (and
/// is then only checked again).
const CAUGHT: usize = 256;

/// URL versions caught mapped to a content the origin disagrees with.
#[derive(Default)]
pub(super) struct Caught(Mutex<VecDeque<(UrlKey, ContentId)>>);

impl Caught {
    fn holds(&self, key: &UrlKey, content: ContentId) -> bool {
        let caught = self.0.lock().expect("caught lock");
        caught.iter().any(|(k, c)| *c == content && k == key)
    }

    fn add(&self, key: UrlKey, content: ContentId) {
        let mut caught = self.0.lock().expect("caught lock");
        if caught.len() == CAUGHT {
            caught.pop_front();
        }
        caught.push_back((key, content));
    }
}

impl Job<'_> {
    /// Fetches a URL version the tracker maps to `content`: by content, from peers, with one
    /// piece checked against the origin meanwhile (see the module's documentation), or, of a
    /// known SHA-256, unchecked; if the check fails, from the origin, as if unmapped.
    pub(super) async fn mapped(
        &self,
        content: ContentId,
        origin: OriginUrl,
    ) -> Result<Fetched, AgentFetchError> {
        if let Some(held) = self.held(&content).await {
            return Ok(held);
        }
        let key = self.key(&origin.version);
        if self.f.caught.holds(&key, content) {
            info!(
                %content,
                "{} is mapped to a content the origin disagreed with before; fetching it \
                 from the origin",
                SafeUrl::new(origin.url.clone())
            );
            return self.alone(origin, Some(self.f.options.max_wait)).await;
        }
        let manifest = self.manifest(content).await?;
        if self.sha256.is_some() {
            // The whole content is checked against its SHA-256 before it is kept (and by a
            // reader before the last byte goes out): more than one piece would tell, and it
            // costs the origin nothing.
            return self.fetch_content(manifest, Some(origin)).await;
        }
        self.tell(Landing::Checking);
        let download = self
            .start_content(manifest.clone(), Some(origin.clone()))
            .await?;
        let mut verified = download.verified();
        let peers = self.cancel.child_token();
        let fetch = self.run_content(download, &peers);
        tokio::pin!(fetch);
        // The check's piece waits for the fetch's first one, so that a reader's first piece
        // has the link to itself; a content of one piece has nothing to wait for.
        let mut ended = None;
        if manifest.layout().piece_count() > 1 {
            tokio::select! {
                biased;
                _ = verified.wait_for(|&count| count > 0) => {}
                result = &mut fetch => {
                    if self.cancel.is_cancelled() {
                        return result;
                    }
                    ended = Some(result);
                }
            }
        }
        let check = async {
            let verdict = self.spot_check(&manifest, &origin).await;
            match &verdict {
                Ok(()) => self.tell(Landing::Trusted),
                Err(e) => {
                    peers.cancel();
                    self.tell(Landing::Untrusted(e.to_string()));
                }
            }
            verdict
        };
        let (fetched, verdict) = match ended {
            Some(result) => (result, check.await),
            None => tokio::join!(fetch, check),
        };
        let Err(e) = verdict else {
            return fetched;
        };
        if matches!(e, Untrusted::Differs { .. }) {
            self.f.caught.add(key, content);
        }
        warn!(
            "{e}; fetching {} from the origin as if the tracker had no content for it",
            SafeUrl::new(origin.url.clone())
        );
        // Neither kept nor served: it is not what the URL names, and a content held whole
        // would be handed out for the URL next time without a check.
        drop(fetched);
        self.f.discard(&content);
        self.alone(origin, Some(self.f.options.max_wait)).await
    }

    /// Checks one random piece of `manifest` against `origin`; reports a content that differs
    /// to the tracker.
    pub(super) async fn spot_check(
        &self,
        manifest: &Manifest,
        origin: &OriginUrl,
    ) -> Result<(), Untrusted> {
        let content = manifest.id();
        let layout = manifest.layout();
        let Some(piece) = layout.piece(rand::rng().random_range(0..layout.piece_count().max(1)))
        else {
            // An empty content has nothing to check.
            return Ok(());
        };
        let range = layout.range(piece);
        let sample = shoal_engine::fetch_sample(&origin.url, &origin.version, range, &self.http)
            .await
            .map_err(|source| Untrusted::Unchecked { content, source })?;
        if manifest.verify_piece(piece, &sample).is_ok() {
            info!(%content, piece = piece.get(), "the origin agrees with the mapped content");
            return Ok(());
        }
        let piece = piece.get();
        if let Some(tracker) = &self.f.tracker {
            let report = UrlReportRequest {
                key: self.key(&origin.version),
                content,
                piece,
                reporter: Some(self.f.id.clone()),
                reason: "a piece from the origin did not match the manifest's digest".into(),
            };
            match tracker.report_url(&report).await {
                Ok(answer) => warn!(
                    %content,
                    piece,
                    withdrawn = answer.withdrawn,
                    "reported a URL mapping the origin disagrees with"
                ),
                Err(e) => warn!(%content, "could not report a URL mapping: {e}"),
            }
        }
        Err(Untrusted::Differs { content, piece })
    }
}
