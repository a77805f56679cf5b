//! URL swarms in memory, for [`SqliteStore`](super::SqliteStore) (swarms are soft state: a
//! restarted tracker starts without them, and the agents of a lost swarm create it again), and
//! the checks both backends make of published digests.
//!
//! Digests are kept sparse, by piece index, so a swarm costs memory for the pieces its leader
//! published, not for its layout.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use shoal_core::wire::{leader_stall_limit, AgentId, SwarmDigests, SwarmInfo, UrlKey};
use shoal_core::{ContentId, Layout, PieceDigest};

use super::{Caller, DigestsPublished, NewSwarm, StoreError, SwarmLimits, SwarmSummary};

#[derive(Debug)]
struct Swarm {
    key: UrlKey,
    layout: Layout,
    leader: AgentId,
    /// The leader's token (the creator's, or the last to take over): the only one (besides
    /// admins) that may publish.
    publisher: Arc<str>,
    digests: BTreeMap<u32, PieceDigest>,
    touched_ms: u64,
    /// When the leader last published a new digest, took over, or created the swarm.
    progress_ms: u64,
}

impl Swarm {
    fn info(&self, id: ContentId, created: bool) -> SwarmInfo {
        SwarmInfo {
            id,
            key: self.key.clone(),
            layout: self.layout,
            leader: self.leader.clone(),
            created,
            digests: SwarmDigests::from_known(self.layout.piece_count(), &self.digests),
        }
    }
}

#[derive(Debug)]
pub(super) struct SwarmTable {
    limits: SwarmLimits,
    swarms: HashMap<ContentId, Swarm>,
}

impl SwarmTable {
    pub(super) fn new(limits: SwarmLimits) -> Self {
        Self {
            limits,
            swarms: HashMap::new(),
        }
    }

    pub(super) fn set_limits(&mut self, limits: SwarmLimits) {
        self.limits = limits;
    }

    fn ttl_ms(&self) -> u64 {
        self.limits.ttl.as_millis() as u64
    }

    fn live(&self, id: &ContentId, now: u64) -> Option<&Swarm> {
        self.swarms
            .get(id)
            .filter(|s| s.touched_ms + self.ttl_ms() > now)
    }

    pub(super) fn create(
        &mut self,
        caller: &Caller,
        new: NewSwarm,
        now: u64,
    ) -> Result<SwarmInfo, StoreError> {
        let id = new.key.swarm_id();
        if let Some(swarm) = self.live(&id, now) {
            if swarm.layout != new.layout {
                return Err(StoreError::SwarmLayout {
                    id,
                    layout: swarm.layout,
                });
            }
            let swarm = self.swarms.get_mut(&id).expect("live above");
            swarm.touched_ms = now;
            return Ok(swarm.info(id, false));
        }
        // A lapsed swarm of the same key is replaced, so it does not count against the limit.
        self.swarms.remove(&id);
        if self.swarms.len() >= self.limits.max {
            return Err(StoreError::TooManySwarms {
                max: self.limits.max,
            });
        }
        let swarm = Swarm {
            key: new.key,
            layout: new.layout,
            leader: new.leader,
            publisher: caller.token.clone(),
            digests: BTreeMap::new(),
            touched_ms: now,
            progress_ms: now,
        };
        let info = swarm.info(id, true);
        self.swarms.insert(id, swarm);
        Ok(info)
    }

    pub(super) fn get(&self, id: &ContentId, now: u64) -> Result<SwarmInfo, StoreError> {
        self.live(id, now)
            .map(|s| s.info(*id, false))
            .ok_or(StoreError::UnknownSwarm(*id))
    }

    pub(super) fn publish(
        &mut self,
        caller: &Caller,
        id: &ContentId,
        digests: Vec<(u32, PieceDigest)>,
        now: u64,
    ) -> Result<DigestsPublished, StoreError> {
        let swarm = self.live(id, now).ok_or(StoreError::UnknownSwarm(*id))?;
        check_publisher(caller, id, &swarm.publisher)?;
        check_indices(&digests, swarm.layout.piece_count())?;
        let swarm = self.swarms.get_mut(id).expect("live above");
        let mut ignored = Vec::new();
        let before = swarm.digests.len();
        for (index, digest) in digests {
            let known = swarm.digests.entry(index).or_insert(digest);
            if *known != digest {
                ignored.push(index);
            }
        }
        if swarm.digests.len() > before {
            swarm.progress_ms = now;
        }
        swarm.touched_ms = now;
        Ok(DigestsPublished {
            swarm: swarm.info(*id, false),
            ignored,
        })
    }

    /// The leader of a running swarm, whose liveness [`SwarmTable::take_over`] is told.
    pub(super) fn leader(&self, id: &ContentId, now: u64) -> Result<AgentId, StoreError> {
        self.live(id, now)
            .map(|s| s.leader.clone())
            .ok_or(StoreError::UnknownSwarm(*id))
    }

    /// Makes `agent` lead, with the caller's token publishing, if the leader is still
    /// `leader` (whose lease is `leader_live`) and it is gone or stalled (see
    /// [`Store::take_over_swarm`](super::Store::take_over_swarm)).
    pub(super) fn take_over(
        &mut self,
        caller: &Caller,
        id: &ContentId,
        agent: AgentId,
        seen: Leader,
        now: u64,
    ) -> Result<SwarmInfo, StoreError> {
        let swarm = self.live(id, now).ok_or(StoreError::UnknownSwarm(*id))?;
        if swarm.leader == agent {
            return Ok(swarm.info(*id, false));
        }
        let stall = leader_stall_limit(swarm.layout);
        let missing = swarm.digests.len() < swarm.layout.piece_count() as usize;
        let stalled = missing && now.saturating_sub(swarm.progress_ms) >= stall.as_millis() as u64;
        // A leader that changed since its lease was looked at is another, live one.
        if swarm.leader != seen.id || (seen.live && !stalled) {
            return Err(StoreError::LeaderLive {
                id: *id,
                leader: swarm.leader.clone(),
                stall,
            });
        }
        let swarm = self.swarms.get_mut(id).expect("live above");
        swarm.leader = agent;
        swarm.publisher = caller.token.clone();
        swarm.progress_ms = now;
        swarm.touched_ms = now;
        Ok(swarm.info(*id, false))
    }

    pub(super) fn running(&self, limit: usize, now: u64) -> Vec<SwarmSummary> {
        let mut live: Vec<(&ContentId, &Swarm)> = self
            .swarms
            .iter()
            .filter(|(_, s)| s.touched_ms + self.ttl_ms() > now)
            .collect();
        live.sort_unstable_by(|a, b| b.1.touched_ms.cmp(&a.1.touched_ms).then(a.0.cmp(b.0)));
        live.into_iter()
            .take(limit)
            .map(|(id, s)| SwarmSummary {
                id: *id,
                key: s.key.clone(),
                layout: s.layout,
                leader: s.leader.clone(),
                published: s.digests.len() as u32,
            })
            .collect()
    }

    pub(super) fn len(&self) -> usize {
        self.swarms.len()
    }

    pub(super) fn sweep(&mut self, now: u64) -> usize {
        let ttl = self.ttl_ms();
        let before = self.swarms.len();
        self.swarms.retain(|_, s| s.touched_ms + ttl > now);
        before - self.swarms.len()
    }
}

/// A swarm's leader as a takeover saw it: its id, and whether its lease was live.
pub(super) struct Leader {
    pub(super) id: AgentId,
    pub(super) live: bool,
}

pub(super) fn check_publisher(
    caller: &Caller,
    id: &ContentId,
    publisher: &str,
) -> Result<(), StoreError> {
    if caller.admin || *caller.token == *publisher {
        Ok(())
    } else {
        Err(StoreError::NotPublisher(*id))
    }
}

/// Checks that every published piece exists in a swarm of `count` pieces.
pub(super) fn check_indices(digests: &[(u32, PieceDigest)], count: u32) -> Result<(), StoreError> {
    match digests.iter().position(|&(index, _)| index >= count) {
        Some(i) => Err(StoreError::invalid(
            format!("pieces[{i}].index"),
            format!(
                "piece {} is out of range: the swarm has {count} pieces",
                digests[i].0
            ),
        )),
        None => Ok(()),
    }
}
