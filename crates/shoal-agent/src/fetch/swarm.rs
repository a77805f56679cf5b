//! One swarm download: the engine fetches a content into the objects from the peers the
//! tracker names (followed as they join and verify more), and the origin if the plan allows;
//! each verified piece is marked in the catalog as it comes, so it is served and announced at
//! once, and a peer that sent a bad piece is reported to the tracker. A piece whose digest the
//! engine learned (the origin of a member that took over a URL swarm's lead) is marked only
//! once its digest is published.

use std::time::Duration;

use shoal_core::manifest::PieceDigest;
use shoal_core::wire::{AgentId, ReportRequest, SwarmInfo};
use shoal_core::{ContentId, Layout, PieceIndex};
use shoal_engine::{
    download, CancellationToken, Digests, DownloadOptions, Event, Existing, HttpOptions, OriginUse,
    Output, Summary, SwarmOptions,
};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};
use url::Url;

use super::digests::{Publisher, DIGESTS_EVERY};
use super::{AgentFetchError, Job};
use crate::peers;

/// What one swarm download fetches, and from where.
pub(super) struct SwarmRun {
    /// The content (or URL swarm) id, under which pieces are marked, published and served.
    pub(super) id: ContentId,
    /// The origin, or the content's `shoal:` name when it has none.
    pub(super) url: Url,
    pub(super) layout: Layout,
    pub(super) digests: Digests,
    pub(super) origin: OriginUse,
    /// A URL swarm's leader as it is now, whose upload is kept for first copies.
    pub(super) leader: Option<watch::Receiver<AgentId>>,
    /// The URL swarm this agent leads (it took over): a tracker that lost it gets it created
    /// again, with every digest learned here.
    pub(super) led: Option<SwarmInfo>,
}

impl Job<'_> {
    /// Runs one swarm download into the objects, with peers refreshed from the tracker,
    /// verified pieces marked in the catalog as they come, and bad peers reported; answers
    /// with the digests it learned (with [`OriginUse::Lead`]), each published to the swarm
    /// before its piece was marked. Stops with `cancel`.
    pub(super) async fn swarm(
        &self,
        run: SwarmRun,
        cancel: &CancellationToken,
    ) -> Result<(Summary, Vec<Option<PieceDigest>>), AgentFetchError> {
        let SwarmRun {
            id,
            url,
            layout,
            digests,
            origin,
            leader,
            led,
        } = run;
        // Pieces that come from an origin, directly or through the leader, are waited for
        // through its outages; a content without one gives up when its peers do.
        let from_origin = origin != OriginUse::Never || leader.is_some();
        let stop = cancel.child_token();
        let (peers, refresher) = peers::follow(
            peers::Watch {
                tracker: self.f.tracker.clone(),
                me: self.f.id.clone(),
                content: id,
                layout,
                leader,
                token: self.f.options.peer_token.clone(),
                ca: self.f.options.http.ca.clone(),
                catalog: self.f.catalog.clone(),
            },
            stop.clone(),
        )
        .await;
        let mut options = DownloadOptions::new(url, Output::File(self.f.objects.path(&id)));
        options.existing = Existing::Overwrite;
        options.connections = self.f.options.connections;
        options.stall_timeout = self.f.options.stall_timeout;
        if from_origin {
            options.max_wait = Some(self.f.options.max_wait);
        }
        options.http = self.http.clone();
        options.tally = Some(self.f.tally.clone());
        self.caps.apply(&mut options);
        let mut peer_http = HttpOptions {
            connect_timeout: Duration::from_secs(3),
            ca: self.f.options.http.ca.clone(),
            ..HttpOptions::default()
        };
        let bearer = format!("Bearer {}", self.f.options.peer_token);
        if let Ok(value) = bearer.parse() {
            peer_http.headers.insert(http::header::AUTHORIZATION, value);
        }
        if matches!(origin, OriginUse::Lead { .. }) {
            options.in_order = Some(self.in_order_chunk(layout));
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
        // The content's entry: its file is the `.part` this download writes.
        let held = self.f.catalog.get(&id);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let run = download(options, tx, stop.clone());
        let forward = async {
            let mut publisher =
                Publisher::new(self, Some(id), layout.piece_count()).leading(led.as_ref());
            let mut retry = tokio::time::interval(DIGESTS_EVERY);
            loop {
                tokio::select! {
                    event = rx.recv() => {
                        let Some(event) = event else { break };
                        self.land(&event, layout, held.as_deref());
                        publisher.learn(&event);
                        match &event {
                            Event::PieceVerified { index } if !publisher.learned(*index) => {
                                self.f.catalog.mark(&id, &[*index]);
                            }
                            Event::BadPiece {
                                index,
                                peer: Some(peer),
                                ..
                            } => self.report(id, peer, *index).await,
                            _ => {}
                        }
                        let _ = self.events.send(event);
                        publisher.flush(self).await;
                    }
                    _ = retry.tick(), if publisher.failed() => publisher.retry(self).await,
                }
            }
            publisher.finish(self).await
        };
        let (result, learned) = tokio::join!(run, forward);
        stop.cancel();
        let _ = refresher.await;
        Ok((result?, learned))
    }

    /// Tells the tracker that `peer` sent a piece of `content` that did not match its digest.
    async fn report(&self, content: ContentId, peer: &str, piece: PieceIndex) {
        let (Some(tracker), Ok(agent)) = (&self.f.tracker, AgentId::new(peer)) else {
            return;
        };
        let body = ReportRequest {
            agent,
            piece: piece.get(),
            reporter: Some(self.f.id.clone()),
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
