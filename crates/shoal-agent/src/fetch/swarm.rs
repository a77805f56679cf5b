//! One swarm download: the engine fetches a content into the objects from the peers the
//! tracker names (followed as they join and verify more), and the origin if the plan allows;
//! each verified piece is marked in the catalog as it comes, so it is served and announced at
//! once, and a peer that sent a bad piece is reported to the tracker. A piece whose digest the
//! engine learned (the origin of a URL swarm's leader) is offered as soon as it is verified
//! too: its digest is in the entry first, for followers that ask this agent, and is published
//! to the tracker alongside.

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
use crate::catalog::Entry;
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
    /// How long pieces that come from an origin (directly or through a leader) are waited for
    /// with nothing arriving: `--max-wait`, or what a URL swarm member has left of it.
    pub(super) max_wait: Duration,
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
            max_wait,
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
            options.max_wait = Some(max_wait);
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
            // Every event queued is taken in before the next publication: a piece is offered
            // as soon as its event is read, and reading one event per round trip to the
            // tracker fell behind by seconds with small pieces.
            loop {
                tokio::select! {
                    event = rx.recv() => {
                        let Some(event) = event else { break };
                        self.take_swarm_event(id, layout, held.as_deref(), &mut publisher, event).await;
                        while let Ok(event) = rx.try_recv() {
                            self.take_swarm_event(id, layout, held.as_deref(), &mut publisher, event).await;
                        }
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

    /// Takes in one event of a swarm download of content `id` (`held`: its entry): where it
    /// lands, a digest learned, a piece to offer, a peer to report; then passes it on.
    async fn take_swarm_event(
        &self,
        id: ContentId,
        layout: Layout,
        held: Option<&Entry>,
        publisher: &mut Publisher,
        event: Event,
    ) {
        self.land(&event, layout, held);
        publisher.learn(&event);
        match &event {
            // Offered at once, a learned digest too: its publication follows, and followers
            // ask this agent for a digest the tracker lacks.
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
