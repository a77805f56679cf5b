//! One swarm download: the engine fetches a content into the objects from the peers the
//! tracker names (followed as they join and verify more), and the origin if the plan allows;
//! each verified piece is marked in the catalog as it comes, so it is served and announced at
//! once, and a peer that sent a bad piece is reported to the tracker.

use std::time::Duration;

use shoal_core::wire::{AgentId, ReportRequest};
use shoal_core::{ContentId, Layout, PieceIndex};
use shoal_engine::{
    download, Digests, DownloadOptions, Event, Existing, HttpOptions, OriginUse, Output, Summary,
    SwarmOptions,
};
use tokio::sync::mpsc;
use tracing::{info, warn};
use url::Url;

use super::{AgentFetchError, Job};
use crate::peers;

impl Job<'_> {
    /// Runs one swarm download of `id` into the objects, with peers refreshed from the
    /// tracker, verified pieces marked in the catalog as they come, and bad peers reported.
    /// `leader` is a URL swarm's leader, whose upload is kept for first copies.
    pub(super) async fn swarm(
        &self,
        id: ContentId,
        url: Url,
        layout: Layout,
        digests: Digests,
        origin: OriginUse,
        leader: Option<AgentId>,
    ) -> Result<Summary, AgentFetchError> {
        let stop = self.cancel.child_token();
        let (peers, refresher) = peers::follow(
            peers::Watch {
                tracker: self.f.tracker.clone(),
                me: self.f.id.clone(),
                content: id,
                layout,
                leader,
                token: self.f.options.peer_token.clone(),
                catalog: self.f.catalog.clone(),
            },
            stop.clone(),
        )
        .await;
        let mut options = DownloadOptions::new(url, Output::File(self.f.objects.path(&id)));
        options.existing = Existing::Overwrite;
        options.connections = self.f.options.connections;
        options.stall_timeout = self.f.options.stall_timeout;
        options.http = self.f.options.http.clone();
        options.tally = Some(self.f.tally.clone());
        let mut peer_http = HttpOptions {
            connect_timeout: Duration::from_secs(3),
            ..HttpOptions::default()
        };
        let bearer = format!("Bearer {}", self.f.options.peer_token);
        if let Ok(value) = bearer.parse() {
            peer_http.headers.insert(http::header::AUTHORIZATION, value);
        }
        options.swarm = Some(SwarmOptions {
            me: self.f.id.to_string(),
            layout,
            digests,
            peers,
            peer_http,
            per_peer: self.f.options.per_peer,
            origin,
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        let run = download(options, tx, stop.clone());
        let forward = async {
            while let Some(event) = rx.recv().await {
                match &event {
                    Event::PieceVerified { index } => self.f.catalog.mark(&id, &[*index]),
                    Event::BadPiece {
                        index,
                        peer: Some(peer),
                        ..
                    } => self.report(id, peer, *index).await,
                    _ => {}
                }
                let _ = self.events.send(event);
            }
        };
        let (result, ()) = tokio::join!(run, forward);
        stop.cancel();
        let _ = refresher.await;
        Ok(result?)
    }

    /// Tells the tracker that `peer` sent a piece of `content` that did not match its digest.
    async fn report(&self, content: ContentId, peer: &str, piece: PieceIndex) {
        let (Some(tracker), Ok(agent)) = (&self.f.tracker, AgentId::new(peer)) else {
            return;
        };
        let body = ReportRequest {
            agent,
            piece: piece.get(),
            reason: "the piece did not match its digest".to_string(),
        };
        match tracker.report(&content, &body).await {
            Ok(()) => {
                info!(%content, peer, piece = piece.get(), "reported a peer that sent a bad piece")
            }
            Err(e) => warn!(%content, peer, "could not report a bad piece: {e}"),
        }
    }
}
