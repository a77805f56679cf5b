//! Fetching a content by id: its manifest from the tracker (checked against the id), its
//! pieces from the peers that hold it and, for a URL the tracker mapped to it, the origin as a
//! capped fallback.

use std::path::PathBuf;
use std::sync::Arc;

use shoal_core::{ContentId, Manifest};
use shoal_engine::{CancellationToken, Digests, OriginUse};
use tokio::sync::watch;

use super::downloads::Part;
use super::swarm::SwarmRun;
use super::{content_url, part_path, AgentFetchError, Fetched, Job, OriginUrl};
use crate::catalog::{Entry, Provenance};
use crate::objects::Pin;

impl Job<'_> {
    /// Fetches content `id` (or finds it held already); `origin` is the URL the tracker mapped
    /// to it, if that is how it was asked for.
    pub(super) async fn content(
        &self,
        id: ContentId,
        origin: Option<OriginUrl>,
    ) -> Result<Fetched, AgentFetchError> {
        if let Some(held) = self.held(&id).await {
            return Ok(held);
        }
        let manifest = self.manifest(id).await?;
        self.fetch_content(manifest, origin).await
    }

    /// The manifest of content `id` from the tracker, checked to be that content's.
    pub(super) async fn manifest(&self, id: ContentId) -> Result<Manifest, AgentFetchError> {
        let tracker = self.tracker(&format!("content {id}"))?;
        let manifest = tracker.manifest(&id).await?;
        if manifest.id() != id {
            return Err(AgentFetchError::ForgedManifest {
                content: id,
                actual: manifest.id(),
            });
        }
        Ok(manifest)
    }

    /// Fetches the content of `manifest` (not held yet); `origin` as for [`Job::content`].
    pub(super) async fn fetch_content(
        &self,
        manifest: Manifest,
        origin: Option<OriginUrl>,
    ) -> Result<Fetched, AgentFetchError> {
        let download = self.start_content(manifest, origin).await?;
        self.run_content(download, &self.cancel).await
    }

    /// Puts the entry of a download of the content of `manifest` in the catalog; `origin` as
    /// for [`Job::content`]. [`Job::run_content`] runs it.
    pub(super) async fn start_content(
        &self,
        manifest: Manifest,
        origin: Option<OriginUrl>,
    ) -> Result<ContentDownload, AgentFetchError> {
        let id = manifest.id();
        let tracker = self.tracker(&format!("content {id}"))?;
        let name = match &origin {
            Some(o) => shoal_engine::naming::file_name(None, &o.url),
            None => tracker
                .content(&id)
                .await
                .map(|c| c.name)
                .unwrap_or_else(|_| id.to_string()),
        };
        let manifest = Arc::new(manifest);
        let pin = self.f.objects.pin(id);
        let path = self.f.objects.path(&id);
        let part = match &origin {
            Some(_) => Part::WithOrigin,
            None => Part::PeersOnly,
        };
        let entry = self.start_entry(
            Entry::new(
                manifest.clone(),
                name.clone(),
                Provenance::Fetched,
                part_path(&path),
            ),
            part,
        );
        Ok(ContentDownload {
            manifest,
            origin,
            name,
            path,
            pin,
            entry,
        })
    }

    /// Runs `download` until the content is held whole and kept, or it fails; stops with
    /// `cancel`.
    pub(super) async fn run_content(
        &self,
        download: ContentDownload,
        cancel: &CancellationToken,
    ) -> Result<Fetched, AgentFetchError> {
        let ContentDownload {
            manifest,
            origin,
            name,
            path,
            pin,
            entry,
        } = download;
        let id = manifest.id();
        let (url, origin_use) = match &origin {
            Some(o) => (
                o.url.clone(),
                OriginUse::Fallback {
                    connections: self.f.options.origin_fallback,
                    validator: o.version.validator.clone(),
                },
            ),
            None => (content_url(&id), OriginUse::Never),
        };
        let (summary, _) = self
            .swarm(
                SwarmRun {
                    id,
                    url,
                    layout: manifest.layout(),
                    digests: Digests::Manifest(manifest.clone()),
                    origin: origin_use,
                    leader: None,
                    led: None,
                    max_wait: self.f.options.max_wait,
                },
                cancel,
            )
            .await?;
        self.check_sha256(&path, id, None).await?;
        entry.set_path(path.clone());
        self.keep(&manifest, &name, origin.map(|o| self.key(&o.version)))
            .await?;
        Ok(Fetched {
            content: id,
            name,
            path,
            size: manifest.layout().size(),
            summary: Some(summary),
            pin,
        })
    }
}

/// A download of a content by id, its entry in the catalog, not run yet.
pub(super) struct ContentDownload {
    manifest: Arc<Manifest>,
    origin: Option<OriginUrl>,
    name: String,
    /// Where the content is kept once whole.
    path: PathBuf,
    pin: Pin,
    entry: Arc<Entry>,
}

impl ContentDownload {
    /// Wakes as the download verifies pieces; the value is how many the content has.
    pub(super) fn verified(&self) -> watch::Receiver<u32> {
        self.entry.watch_count()
    }
}
