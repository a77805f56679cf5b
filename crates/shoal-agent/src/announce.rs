//! Keeping the tracker told: register with every holding, then announce what changes in the
//! [`Catalog`] in small batches (newly verified pieces reach the tracker within about
//! [`BATCH`], so others fetch them from this agent while it is still downloading), and
//! heartbeat before the lease lapses. A tracker that forgot the agent (404: it restarted, or
//! the client moved to a replica that never heard of it) is registered with again at once,
//! with every holding and manifest; a tracker that is down is retried with backoff, never
//! slower than the heartbeat, while serving goes on, so a restarted tracker is re-populated
//! within one heartbeat of coming back. A tracker that says another live agent holds this
//! agent's id ends the announcer with [`IdRefused`].

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use shoal_core::wire::{
    AgentId, AnnounceRequest, HeartbeatRequest, LeaseGrant, PieceDelta, RegisterRequest, Scheme,
};
use shoal_core::{ContentId, PieceIndex};
use thiserror::Error;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::catalog::{Catalog, Change};
use crate::serve::PieceServer;
use crate::tracker::{TrackerClient, TrackerError};

/// How long changes gather before they are announced.
pub const BATCH: Duration = Duration::from_millis(250);
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(15);

/// Who this agent is, as the tracker sees it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The agent's id.
    pub id: AgentId,
    /// Where peers reach the piece server.
    pub addr: SocketAddr,
    /// Whether the piece server speaks HTTPS.
    pub scheme: Scheme,
    /// `--upload-limit` in bytes per second, 0 when unlimited.
    pub upload_capacity: u64,
}

/// The tracker gave this agent's id to another live agent, at another address: two agents
/// were started with one id.
#[derive(Debug, Error)]
#[error("another agent uses the id {id}")]
pub struct IdRefused {
    /// The id the tracker refused.
    pub id: AgentId,
    /// The tracker's answer (`409` with its message).
    #[source]
    pub source: TrackerError,
}

/// Keeps the tracker told of the agent's holdings: register, announce batched changes, heartbeat;
/// see the module doc. Built once and consumed by `run`.
pub struct Announcer {
    /// The tracker to keep told.
    pub tracker: TrackerClient,
    /// Who this agent is to the tracker.
    pub identity: Identity,
    /// The holdings to announce; its changes are what the announcer sends.
    pub catalog: Catalog,
    /// The piece server, whose uploads in progress are the load each heartbeat reports.
    pub server: PieceServer,
    /// Manifests the tracker has from this agent, so peers can verify what it serves.
    published: Mutex<HashSet<ContentId>>,
    /// The last lease grant said the tracker reads the upload counter in heartbeats.
    reads_served: AtomicBool,
}

enum Step {
    Ok(Duration),
    Forgotten,
    Failed(TrackerError),
    Refused(TrackerError),
}

impl Announcer {
    /// An announcer that has published no manifest yet.
    pub fn new(
        tracker: TrackerClient,
        identity: Identity,
        catalog: Catalog,
        server: PieceServer,
    ) -> Self {
        Self {
            tracker,
            identity,
            catalog,
            server,
            published: Mutex::default(),
            reads_served: AtomicBool::new(false),
        }
    }

    /// Gives the tracker the manifest of every held content it may not have yet: a content
    /// is only useful to others with its manifest.
    async fn publish_manifests(&self) -> Result<(), TrackerError> {
        let due: Vec<_> = {
            let published = self.published.lock().expect("published lock");
            self.catalog
                .entries()
                .into_iter()
                .filter_map(|e| e.manifest().cloned())
                .filter(|m| !published.contains(&m.id()))
                .collect()
        };
        for manifest in due {
            self.tracker.put_manifest(&manifest).await?;
            self.published
                .lock()
                .expect("published lock")
                .insert(manifest.id());
        }
        Ok(())
    }

    /// Runs until `stop` fires, then deregisters (briefly: a tracker that is down must not
    /// hold up the agent's exit); or until the tracker refuses this agent's id.
    pub async fn run(self, stop: CancellationToken) -> Result<(), IdRefused> {
        let mut changed = self.catalog.subscribe();
        let mut registered = false;
        let mut lease = Duration::from_secs(10);
        let mut last_contact = Instant::now();
        let mut retry = RETRY_MIN;
        let mut down_since: Option<Instant> = None;
        loop {
            let step = if registered {
                let heartbeat_due = last_contact + lease / 3;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = changed.changed() => {
                        // A new holding goes at once (peers start fetching from it when they
                        // hear of it); pieces gather for a batch.
                        if !self.catalog.holdings_changed() {
                            tokio::select! {
                                _ = stop.cancelled() => break,
                                _ = tokio::time::sleep(BATCH) => {}
                            }
                        }
                        self.announce().await
                    }
                    _ = tokio::time::sleep_until(heartbeat_due) => self.heartbeat().await,
                }
            } else {
                self.register().await
            };
            match step {
                Step::Ok(granted) => {
                    if let Some(since) = down_since.take() {
                        info!(
                            tracker = %self.tracker.base(),
                            after = ?since.elapsed(),
                            "the tracker answers again"
                        );
                    }
                    registered = true;
                    lease = granted.max(Duration::from_secs(1));
                    last_contact = Instant::now();
                    retry = RETRY_MIN;
                }
                Step::Forgotten => {
                    info!(
                        tracker = %self.tracker.base(),
                        "the tracker does not know this agent; registering again with every holding"
                    );
                    // What it forgot may include the manifests.
                    self.published.lock().expect("published lock").clear();
                    registered = false;
                }
                Step::Refused(source) => {
                    return Err(IdRefused {
                        id: self.identity.id.clone(),
                        source,
                    })
                }
                Step::Failed(error) => {
                    if down_since.is_none() {
                        warn!(
                            "{error}; serving and downloading go on with the peers already known, \
                             and the agent registers again when the tracker answers"
                        );
                        down_since = Some(Instant::now());
                    }
                    // What was not announced is sent whole with the next registration.
                    registered = false;
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(retry) => {}
                    }
                    // Never slower than the heartbeat: a tracker back from a restart hears
                    // from every agent within one.
                    retry = (retry * 2).min((lease / 3).clamp(RETRY_MIN, RETRY_MAX));
                }
            }
        }
        if registered {
            let bye = self.tracker.deregister(&self.identity.id);
            match tokio::time::timeout(Duration::from_secs(2), bye).await {
                Ok(Ok(())) => debug!("deregistered"),
                Ok(Err(e)) => debug!("deregistering failed: {e}"),
                Err(_) => debug!("deregistering timed out"),
            }
        }
        Ok(())
    }

    async fn register(&self) -> Step {
        // The full list covers every change queued so far.
        self.catalog.take_changes();
        if let Err(e) = self.publish_manifests().await {
            return Step::Failed(e);
        }
        let body = RegisterRequest {
            addr: self.identity.addr,
            scheme: self.identity.scheme,
            upload_capacity: self.identity.upload_capacity,
            holdings: self.catalog.entries().iter().map(|e| e.holding()).collect(),
        };
        match self.tracker.register(&self.identity.id, &body).await {
            Ok(grant) => {
                info!(
                    tracker = %self.tracker.base(),
                    holdings = body.holdings.len(),
                    "registered"
                );
                self.granted(grant)
            }
            Err(e @ TrackerError::IdInUse { .. }) => Step::Refused(e),
            Err(e) => Step::Failed(e),
        }
    }

    async fn heartbeat(&self) -> Step {
        let served = if self.reads_served.load(Ordering::Relaxed) {
            self.server.bytes_served()
        } else {
            0
        };
        let body = HeartbeatRequest {
            load: self.server.load(),
            served,
        };
        match self.tracker.heartbeat(&self.identity.id, &body).await {
            Ok(grant) => self.granted(grant),
            Err(e) if e.is_not_found() => Step::Forgotten,
            Err(e) => Step::Failed(e),
        }
    }

    fn granted(&self, grant: LeaseGrant) -> Step {
        self.reads_served
            .store(grant.reads_served, Ordering::Relaxed);
        Step::Ok(Duration::from_millis(grant.lease_ms))
    }

    async fn announce(&self) -> Step {
        if let Err(e) = self.publish_manifests().await {
            return Step::Failed(e);
        }
        let body = delta(&self.catalog, self.catalog.take_changes());
        if body == AnnounceRequest::default() {
            return self.heartbeat().await;
        }
        match self.tracker.announce(&self.identity.id, &body).await {
            Ok(grant) => self.granted(grant),
            // Also when a content was announced before the tracker knew this agent again.
            Err(e) if e.is_not_found() => Step::Forgotten,
            Err(e) => Step::Failed(e),
        }
    }
}

/// One announce request for a run of changes: what was removed, what was added (sent whole,
/// with its pieces as they are now), and new pieces of the others.
pub fn delta(catalog: &Catalog, changes: Vec<Change>) -> AnnounceRequest {
    let mut removed = Vec::new();
    let mut added: Vec<ContentId> = Vec::new();
    let mut pieces: BTreeMap<ContentId, Vec<PieceIndex>> = BTreeMap::new();
    for change in changes {
        match change {
            Change::Added(id) => {
                removed.retain(|r| *r != id);
                pieces.remove(&id);
                if !added.contains(&id) {
                    added.push(id);
                }
            }
            Change::Removed(id) => {
                added.retain(|a| *a != id);
                pieces.remove(&id);
                if !removed.contains(&id) {
                    removed.push(id);
                }
            }
            Change::Pieces(id, new) if !added.contains(&id) => {
                pieces.entry(id).or_default().extend(new);
            }
            Change::Pieces(..) => {}
        }
    }
    AnnounceRequest {
        removed,
        holdings: added
            .iter()
            .filter_map(|id| catalog.get(id))
            .map(|e| e.holding())
            .collect(),
        pieces: pieces
            .into_iter()
            .filter(|(id, _)| catalog.get(id).is_some())
            .map(|(content, have)| PieceDelta {
                content,
                have: have.into_iter().map(PieceIndex::get).collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use shoal_core::Manifest;

    use super::*;
    use crate::catalog::{Entry, Provenance};

    #[test]
    fn a_delta_sends_added_contents_whole_and_pieces_of_the_others() {
        let catalog = Catalog::new();
        let entry = |seed: u8| {
            let manifest = Arc::new(Manifest::of_bytes(&[seed; 100], 32).unwrap());
            Arc::new(Entry::new(
                manifest,
                "f".into(),
                Provenance::Fetched,
                PathBuf::new(),
            ))
        };
        let (a, b, c) = (entry(1), entry(2), entry(3));
        let (ida, idb, idc) = (a.id(), b.id(), c.id());
        catalog.insert(a);
        catalog.insert(b);
        catalog.take_changes();
        catalog.insert(c);
        let layout = catalog.get(&ida).unwrap().layout();
        let p: Vec<PieceIndex> = layout.pieces().collect();
        catalog.mark(&idc, &p[..1]);
        catalog.mark(&ida, &p[1..3]);
        catalog.mark(&ida, &p[3..]);
        catalog.remove(&idb);
        let body = delta(&catalog, catalog.take_changes());
        assert_eq!(body.removed, vec![idb]);
        assert_eq!(body.holdings.len(), 1);
        assert_eq!(body.holdings[0].content, idc);
        assert_eq!(
            body.holdings[0].pieces.as_ref().unwrap().as_bytes(),
            &[0x80]
        );
        assert_eq!(
            body.pieces,
            vec![PieceDelta {
                content: ida,
                have: vec![1, 2, 3]
            }]
        );
    }
}
