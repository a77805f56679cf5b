//! The in-memory index behind [`SqliteStore`](super::SqliteStore): a mirror of the content
//! catalog (loaded from SQLite at start, written through on change) and the soft state of
//! agent leases and holdings. Peer queries and announce deltas are answered from here alone,
//! which is what keeps them fast.
//!
//! Agents and contents are interned as `u32` slots so that the per-holding cost is a few bytes:
//! each content keeps a map from agent slot to the pieces that agent has. Reports of bad peers
//! are kept by agent id, not slot, because a slot is reused by another agent once its own
//! lapses, while the report must outlive a re-registration.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use shoal_core::wire::{
    AgentId, AgentSummary, AnnounceRequest, ContentSummary, HeartbeatRequest, Holding, LeaseGrant,
    PackedBits, Peer, PeersResponse, Scheme, MAX_NAME_LEN,
};
use shoal_core::{ContentId, Layout};

mod pieces;
mod retention;

pub(super) use pieces::Pieces;

use super::evidence::Evidence;
use super::served::Served;
use super::{
    AgentPage, Caller, ContentSearch, PeerQuery, PeerReport, Registration, StoreError, StoreStats,
    REPORT_HOLD,
};

#[derive(Debug)]
struct Agent {
    id: AgentId,
    owner: Arc<str>,
    addr: SocketAddr,
    scheme: Scheme,
    upload_capacity: u64,
    load: u32,
    expires_ms: u64,
    holdings: HashSet<u32>,
    served: Served,
}

#[derive(Debug)]
struct Content {
    id: ContentId,
    name: String,
    layout: Layout,
    manifest: bool,
    holders: HashMap<u32, Pieces>,
    /// When a sweep first found no agent holding it (ms), if none has since ([`retention`]).
    unheld_since: Option<u64>,
}

/// Sort key of a peer candidate, smallest first: complete holders, most useful pieces, least
/// load, most upload capacity, then a per-asker hash.
pub(super) type PeerKey = (Reverse<bool>, Reverse<u32>, u32, Reverse<u64>, u64);

/// A catalog entry that changed and must be written to durable storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CatalogRow {
    pub id: ContentId,
    pub name: String,
    pub layout: Layout,
}

#[derive(Debug)]
pub(super) struct Memory {
    lease_ms: u64,
    max_holdings: usize,
    /// How long a content no agent holds is kept; `None`: for ever.
    retention_ms: Option<u64>,
    agent_ids: HashMap<AgentId, u32>,
    agents: Vec<Option<Agent>>,
    free_agents: Vec<u32>,
    content_ids: HashMap<ContentId, u32>,
    contents: Vec<Content>,
    /// Content slot → reported agent → until when (ms) it is left out of peers answers.
    reports: HashMap<u32, HashMap<AgentId, u64>>,
    /// Reports of (content slot, agent) not yet corroborated.
    evidence: Evidence<(u32, AgentId)>,
    /// Holdings of every agent not yet swept, kept as they change so [`Memory::stats`] walks
    /// nothing.
    holdings: u64,
    /// Contents whose manifest is published, kept as they change.
    manifests: u64,
}

/// A holding that passed validation, ready to apply.
pub(super) struct Checked {
    pub content: ContentId,
    pub name: String,
    pub layout: Layout,
    pub pieces: Pieces,
}

impl Memory {
    pub(super) fn new(lease_ms: u64, max_holdings: usize, retention_ms: Option<u64>) -> Self {
        Self {
            lease_ms,
            max_holdings,
            retention_ms,
            agent_ids: HashMap::new(),
            agents: Vec::new(),
            free_agents: Vec::new(),
            content_ids: HashMap::new(),
            contents: Vec::new(),
            reports: HashMap::new(),
            evidence: Evidence::default(),
            holdings: 0,
            manifests: 0,
        }
    }

    /// Adds a catalog entry read back from durable storage.
    pub(super) fn load(&mut self, row: CatalogRow, manifest: bool) {
        let slot = self.add_content(row.id, row.name, row.layout);
        self.contents[slot as usize].manifest = manifest;
        self.manifests += u64::from(manifest);
    }

    fn add_content(&mut self, id: ContentId, name: String, layout: Layout) -> u32 {
        let slot = self.contents.len() as u32;
        self.contents.push(Content {
            id,
            name,
            layout,
            manifest: false,
            holders: HashMap::new(),
            unheld_since: None,
        });
        self.content_ids.insert(id, slot);
        slot
    }

    fn live(&self, id: &AgentId, now: u64) -> Option<u32> {
        let slot = *self.agent_ids.get(id)?;
        let agent = self.agents[slot as usize].as_ref()?;
        (agent.expires_ms > now).then_some(slot)
    }

    fn agent(&self, slot: u32) -> &Agent {
        self.agents[slot as usize]
            .as_ref()
            .expect("interned agent slots are occupied")
    }

    fn agent_mut(&mut self, slot: u32) -> &mut Agent {
        self.agents[slot as usize]
            .as_mut()
            .expect("interned agent slots are occupied")
    }

    fn grant(&self) -> LeaseGrant {
        LeaseGrant {
            lease_ms: self.lease_ms,
            reads_served: true,
        }
    }

    /// The live agent `id`, checked to belong to the caller.
    fn owned(&self, caller: &Caller, id: &AgentId, now: u64) -> Result<u32, StoreError> {
        let slot = self
            .live(id, now)
            .ok_or_else(|| StoreError::UnknownAgent(id.clone()))?;
        if !caller.admin && self.agent(slot).owner != caller.token {
            return Err(StoreError::NotOwner(id.clone()));
        }
        Ok(slot)
    }

    /// Checks that the caller may act for the live agent `id` (its token registered it).
    pub(super) fn acts_for(
        &self,
        caller: &Caller,
        id: &AgentId,
        now: u64,
    ) -> Result<(), StoreError> {
        self.owned(caller, id, now).map(|_| ())
    }

    /// Whether `id` is registered with a lease that has not lapsed.
    pub(super) fn is_live(&self, id: &AgentId, now: u64) -> bool {
        self.live(id, now).is_some()
    }

    /// Validates holdings against the catalog (and each other), without changing anything.
    fn check_holdings(&self, holdings: Vec<Holding>) -> Result<Vec<Checked>, StoreError> {
        check_holdings(holdings, |id| {
            let slot = *self.content_ids.get(id)?;
            Some(self.contents[slot as usize].layout)
        })
    }

    /// Records holdings that passed [`Memory::check_holdings`]; returns catalog rows to persist.
    fn apply_holdings(&mut self, agent: u32, checked: Vec<Checked>) -> Vec<CatalogRow> {
        let mut rows = Vec::new();
        for h in checked {
            let slot = match self.content_ids.get(&h.content) {
                Some(&slot) => {
                    let content = &mut self.contents[slot as usize];
                    if content.name.is_empty() && !h.name.is_empty() {
                        content.name = h.name;
                        rows.push(row_of(content));
                    }
                    slot
                }
                None => {
                    let slot = self.add_content(h.content, h.name, h.layout);
                    rows.push(row_of(&self.contents[slot as usize]));
                    slot
                }
            };
            self.contents[slot as usize].holders.insert(agent, h.pieces);
            if self.agent_mut(agent).holdings.insert(slot) {
                self.holdings += 1;
            }
        }
        rows
    }

    fn drop_holding(&mut self, agent: u32, content: u32) {
        self.contents[content as usize].holders.remove(&agent);
        if self.agent_mut(agent).holdings.remove(&content) {
            self.holdings -= 1;
        }
    }

    fn clear_holdings(&mut self, agent: u32) {
        let held = std::mem::take(&mut self.agent_mut(agent).holdings);
        self.holdings -= held.len() as u64;
        for content in held {
            self.contents[content as usize].holders.remove(&agent);
        }
    }

    pub(super) fn register(
        &mut self,
        caller: &Caller,
        reg: Registration,
        now: u64,
    ) -> Result<(LeaseGrant, Vec<CatalogRow>), StoreError> {
        if let Some(slot) = self.live(&reg.id, now) {
            let live = self.agent(slot);
            if !caller.admin && live.owner != caller.token {
                return Err(StoreError::NotOwner(reg.id));
            }
            if live.addr != reg.addr {
                return Err(StoreError::IdInUse {
                    held: live.addr,
                    asked: reg.addr,
                    id: reg.id,
                });
            }
        }
        check_holding_count(&reg.id, reg.holdings.len(), self.max_holdings)?;
        let checked = self.check_holdings(reg.holdings)?;
        let agent = Agent {
            id: reg.id.clone(),
            owner: caller.token.clone(),
            addr: reg.addr,
            scheme: reg.scheme,
            upload_capacity: reg.upload_capacity,
            load: 0,
            expires_ms: now + self.lease_ms,
            holdings: HashSet::with_capacity(checked.len()),
            served: Served::default(),
        };
        let slot = match self.agent_ids.get(&reg.id) {
            Some(&slot) => {
                self.clear_holdings(slot);
                self.agents[slot as usize] = Some(agent);
                slot
            }
            None => {
                let slot = match self.free_agents.pop() {
                    Some(slot) => {
                        self.agents[slot as usize] = Some(agent);
                        slot
                    }
                    None => {
                        self.agents.push(Some(agent));
                        (self.agents.len() - 1) as u32
                    }
                };
                self.agent_ids.insert(reg.id, slot);
                slot
            }
        };
        let rows = self.apply_holdings(slot, checked);
        Ok((self.grant(), rows))
    }

    pub(super) fn heartbeat(
        &mut self,
        caller: &Caller,
        id: &AgentId,
        beat: HeartbeatRequest,
        now: u64,
    ) -> Result<LeaseGrant, StoreError> {
        let slot = self.owned(caller, id, now)?;
        let lease_ms = self.lease_ms;
        let agent = self.agent_mut(slot);
        agent.load = beat.load;
        agent.expires_ms = now + lease_ms;
        agent.served = agent.served.next(beat.served, now);
        Ok(self.grant())
    }

    pub(super) fn announce(
        &mut self,
        caller: &Caller,
        id: &AgentId,
        delta: AnnounceRequest,
        now: u64,
    ) -> Result<(LeaseGrant, Vec<CatalogRow>), StoreError> {
        let agent = self.owned(caller, id, now)?;
        let removed: HashSet<ContentId> = delta.removed.into_iter().collect();
        let checked = self.check_holdings(delta.holdings)?;
        let held = &self.agent(agent).holdings;
        let kept = |c: &ContentId| {
            !removed.contains(c) && self.content_ids.get(c).is_some_and(|s| held.contains(s))
        };
        let gone = removed
            .iter()
            .filter(|c| self.content_ids.get(c).is_some_and(|s| held.contains(s)))
            .count();
        let added = checked.iter().filter(|c| !kept(&c.content)).count();
        check_holding_count(id, held.len() - gone + added, self.max_holdings)?;
        // Validate every delta before changing anything, so a bad one leaves no trace.
        let mut deltas = Vec::with_capacity(delta.pieces.len());
        for (i, d) in delta.pieces.into_iter().enumerate() {
            let layout = match checked.iter().find(|c| c.content == d.content) {
                Some(c) => c.layout,
                None => match self.content_ids.get(&d.content) {
                    Some(&slot)
                        if !removed.contains(&d.content)
                            && self.agent(agent).holdings.contains(&slot) =>
                    {
                        self.contents[slot as usize].layout
                    }
                    _ => {
                        return Err(StoreError::NotHeld {
                            field: format!("pieces[{i}].content"),
                            content: d.content,
                        })
                    }
                },
            };
            check_have(i, &d.have, layout.piece_count())?;
            deltas.push(d);
        }

        for content in &removed {
            if let Some(&slot) = self.content_ids.get(content) {
                self.drop_holding(agent, slot);
            }
        }
        let rows = self.apply_holdings(agent, checked);
        for d in deltas {
            let slot = self.content_ids[&d.content];
            let content = &mut self.contents[slot as usize];
            let count = content.layout.piece_count();
            let pieces = content
                .holders
                .get_mut(&agent)
                .expect("validated above: the agent holds this content");
            if let Pieces::Partial(field) = pieces {
                for p in d.have {
                    field.set(p);
                }
                if field.count_ones() == count {
                    *pieces = Pieces::Complete;
                }
            }
        }
        let lease_ms = self.lease_ms;
        self.agent_mut(agent).expires_ms = now + lease_ms;
        Ok((self.grant(), rows))
    }

    pub(super) fn deregister(
        &mut self,
        caller: &Caller,
        id: &AgentId,
        now: u64,
    ) -> Result<(), StoreError> {
        let slot = self.owned(caller, id, now)?;
        self.remove_agent(slot);
        Ok(())
    }

    fn remove_agent(&mut self, slot: u32) {
        self.clear_holdings(slot);
        let agent = self.agents[slot as usize]
            .take()
            .expect("interned agent slots are occupied");
        self.agent_ids.remove(&agent.id);
        self.free_agents.push(slot);
    }

    pub(super) fn peers(
        &self,
        content: &ContentId,
        query: &PeerQuery,
        now: u64,
    ) -> Result<PeersResponse, StoreError> {
        let slot = *self
            .content_ids
            .get(content)
            .ok_or(StoreError::UnknownContent(*content))?;
        let entry = &self.contents[slot as usize];
        let count = entry.layout.piece_count();
        let asker = query
            .asker
            .as_ref()
            .and_then(|id| self.agent_ids.get(id).copied());
        let asker_has = asker
            .filter(|&a| self.agent(a).expires_ms > now)
            .and_then(|a| entry.holders.get(&a));
        // Equal candidates are ordered by a hash of the asker, so that different askers spread
        // over different holders instead of all picking the same first few.
        let seed = query.asker.as_ref().map_or(0, |id| fnv1a(id.as_str()));

        let asker_count = asker_has.map_or(0, |p| p.count(count));
        let reported = self.reports.get(&slot);

        // Each candidate's sort key is computed once: this loop is the hot path of the tracker.
        let mut candidates: Vec<(PeerKey, u32, &Pieces)> = Vec::with_capacity(entry.holders.len());
        for (&a, pieces) in &entry.holders {
            let agent = self.agent(a);
            if Some(a) == asker
                || agent.expires_ms <= now
                || reported.is_some_and(|r| r.get(&agent.id).is_some_and(|&until| until > now))
            {
                continue;
            }
            let complete = matches!(pieces, Pieces::Complete);
            // Holders with nothing the asker lacks still come, last, unless the asker is
            // complete: they are fetching the same content, so they will have pieces soon,
            // and the asker shares work out among the downloaders it knows.
            let useful = useful_pieces(pieces, asker_has, asker_count, count);
            if !complete && useful == 0 && asker_count == count {
                continue;
            }
            let key = (
                Reverse(complete),
                Reverse(useful),
                agent.load,
                Reverse(agent.upload_capacity),
                (u64::from(a) ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            candidates.push((key, a, pieces));
        }
        if candidates.len() > query.k && query.k > 0 {
            candidates.select_nth_unstable_by(query.k - 1, |x, y| x.0.cmp(&y.0));
        }
        candidates.truncate(query.k);
        candidates.sort_unstable_by_key(|c| c.0);

        let peers = candidates
            .into_iter()
            .map(|((Reverse(complete), ..), a, pieces)| {
                let agent = self.agent(a);
                Peer {
                    id: agent.id.clone(),
                    addr: agent.addr,
                    scheme: agent.scheme,
                    upload_capacity: agent.upload_capacity,
                    load: agent.load,
                    complete,
                    pieces: match pieces {
                        Pieces::Complete => None,
                        Pieces::Partial(field) => Some(PackedBits::of(field)),
                    },
                }
            })
            .collect();
        Ok(PeersResponse {
            content: *content,
            layout: entry.layout,
            peers,
        })
    }

    fn summary(&self, entry: &Content, now: u64) -> ContentSummary {
        let (mut complete, mut partial) = (0, 0);
        for (&a, pieces) in &entry.holders {
            if self.agent(a).expires_ms > now {
                match pieces {
                    Pieces::Complete => complete += 1,
                    Pieces::Partial(_) => partial += 1,
                }
            }
        }
        ContentSummary {
            id: entry.id,
            name: entry.name.clone(),
            layout: entry.layout,
            manifest: entry.manifest,
            complete_holders: complete,
            partial_holders: partial,
        }
    }

    pub(super) fn content(&self, id: &ContentId, now: u64) -> Result<ContentSummary, StoreError> {
        let slot = self
            .content_ids
            .get(id)
            .ok_or(StoreError::UnknownContent(*id))?;
        Ok(self.summary(&self.contents[*slot as usize], now))
    }

    pub(super) fn search(&self, search: &ContentSearch, now: u64) -> Vec<ContentSummary> {
        let name = search.name.as_ref().map(|n| n.to_lowercase());
        let mut found: Vec<&Content> = self
            .contents
            .iter()
            .filter(|c| {
                name.as_ref()
                    .is_none_or(|n| c.name.to_lowercase().contains(n.as_str()))
                    && search
                        .id_prefix
                        .as_ref()
                        .is_none_or(|p| c.id.to_string().starts_with(p.as_str()))
            })
            .collect();
        found.sort_unstable_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        found
            .into_iter()
            .take(search.limit)
            .map(|c| self.summary(c, now))
            .collect()
    }

    pub(super) fn agents(&self, page: &AgentPage, now: u64) -> Vec<AgentSummary> {
        let mut live: Vec<(u32, &Agent)> = self
            .agents
            .iter()
            .enumerate()
            .filter_map(|(slot, a)| Some((slot as u32, a.as_ref()?)))
            .filter(|(_, a)| {
                a.expires_ms > now && page.after.as_ref().is_none_or(|after| a.id > *after)
            })
            .collect();
        live.sort_unstable_by(|(_, a), (_, b)| a.id.cmp(&b.id));
        live.into_iter()
            .take(page.limit)
            .map(|(slot, a)| AgentSummary {
                id: a.id.clone(),
                addr: a.addr,
                scheme: a.scheme,
                upload_capacity: a.upload_capacity,
                load: a.load,
                holdings: a.holdings.len() as u32,
                complete_holdings: a
                    .holdings
                    .iter()
                    .filter(|&&c| {
                        matches!(
                            self.contents[c as usize].holders.get(&slot),
                            Some(Pieces::Complete)
                        )
                    })
                    .count() as u32,
                lease_remaining_ms: a.expires_ms - now,
                last_seen_ms: self.lease_ms.saturating_sub(a.expires_ms - now),
                served: a.served.bytes,
                upload_rate: a.served.rate,
            })
            .collect()
    }

    pub(super) fn has_manifest(&self, id: &ContentId) -> bool {
        self.content_ids
            .get(id)
            .is_some_and(|&slot| self.contents[slot as usize].manifest)
    }

    /// Marks a content's manifest as published. The manifest's layout is authoritative: if
    /// announces had fixed a different one, it is replaced and their holdings dropped.
    pub(super) fn manifest_published(&mut self, id: ContentId, layout: Layout) {
        let slot = match self.content_ids.get(&id) {
            Some(&slot) => slot,
            None => self.add_content(id, String::new(), layout),
        };
        if !std::mem::replace(&mut self.contents[slot as usize].manifest, true) {
            self.manifests += 1;
        }
        if self.contents[slot as usize].layout != layout {
            let holders: Vec<u32> = self.contents[slot as usize]
                .holders
                .keys()
                .copied()
                .collect();
            for agent in holders {
                self.drop_holding(agent, slot);
            }
            self.contents[slot as usize].layout = layout;
        }
    }

    pub(super) fn report(&mut self, report: &PeerReport, now: u64) -> Result<bool, StoreError> {
        let slot = *self
            .content_ids
            .get(&report.content)
            .ok_or(StoreError::UnknownContent(report.content))?;
        let entry = &self.contents[slot as usize];
        check_piece(report.piece, entry.layout.piece_count())?;
        let holds = self
            .live(&report.agent, now)
            .is_some_and(|a| entry.holders.contains_key(&a));
        if !holds {
            return Ok(false);
        }
        let until = now + REPORT_HOLD.as_millis() as u64;
        let subject = (slot, report.agent.clone());
        if self.evidence.record(subject, &report.by, until, now) {
            self.reports
                .entry(slot)
                .or_default()
                .insert(report.agent.clone(), until);
        }
        Ok(self
            .reports
            .get(&slot)
            .and_then(|r| r.get(&report.agent))
            .is_some_and(|&until| until > now))
    }

    /// Counts kept as things change: agents (and their holdings) count until the sweep drops
    /// them, a lease period at most after their lease lapsed.
    pub(super) fn stats(&self) -> StoreStats {
        StoreStats {
            agents: self.agent_ids.len() as u64,
            contents: self.contents.len() as u64,
            manifests: self.manifests,
            holdings: Some(self.holdings),
            // Swarms are not kept here; the store that holds them counts them.
            ..StoreStats::default()
        }
    }

    pub(super) fn sweep(&mut self, now: u64) -> usize {
        let lapsed: Vec<u32> = self
            .agents
            .iter()
            .enumerate()
            .filter_map(|(slot, a)| {
                a.as_ref()
                    .filter(|a| a.expires_ms <= now)
                    .map(|_| slot as u32)
            })
            .collect();
        for &slot in &lapsed {
            self.remove_agent(slot);
        }
        self.reports.retain(|_, agents| {
            agents.retain(|_, &mut until| until > now);
            !agents.is_empty()
        });
        self.evidence.sweep(now);
        lapsed.len()
    }
}

fn row_of(content: &Content) -> CatalogRow {
    CatalogRow {
        id: content.id,
        name: content.name.clone(),
        layout: content.layout,
    }
}

/// Pieces `holder` has that the asker lacks; `asker_count` is how many the asker has.
pub(super) fn useful_pieces(
    holder: &Pieces,
    asker: Option<&Pieces>,
    asker_count: u32,
    count: u32,
) -> u32 {
    match (holder, asker) {
        (_, Some(Pieces::Complete)) => 0,
        (holder, None) => holder.count(count),
        (Pieces::Complete, Some(Pieces::Partial(_))) => count - asker_count,
        (Pieces::Partial(theirs), Some(Pieces::Partial(mine))) => theirs
            .as_bytes()
            .iter()
            .zip(mine.as_bytes())
            .map(|(t, m)| (t & !m).count_ones())
            .sum(),
    }
}

pub(super) fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Validates holdings against the catalog (`known` layouts) and each other.
pub(super) fn check_holdings(
    holdings: Vec<Holding>,
    known: impl Fn(&ContentId) -> Option<Layout>,
) -> Result<Vec<Checked>, StoreError> {
    let mut seen: HashMap<ContentId, usize> = HashMap::with_capacity(holdings.len());
    let mut checked = Vec::with_capacity(holdings.len());
    for (i, h) in holdings.into_iter().enumerate() {
        let field = |name: &str| format!("holdings[{i}].{name}");
        if let Some(first) = seen.insert(h.content, i) {
            return Err(StoreError::invalid(
                field("content"),
                format!("content {} is also listed at holdings[{first}]", h.content),
            ));
        }
        if h.name.len() > MAX_NAME_LEN {
            return Err(StoreError::invalid(
                field("name"),
                format!("name is over {MAX_NAME_LEN} bytes"),
            ));
        }
        if let Some(known) = known(&h.content) {
            if known != h.layout {
                return Err(StoreError::invalid(
                    field("layout"),
                    format!(
                        "content {} has size {} and piece size {}",
                        h.content,
                        known.size(),
                        known.piece_size()
                    ),
                ));
            }
        }
        let pieces = match &h.pieces {
            None => Pieces::Complete,
            Some(bits) => bits
                .to_bitfield(h.layout.piece_count())
                .map(Pieces::from_bitfield)
                .map_err(|e| StoreError::invalid(field("pieces"), e.to_string()))?,
        };
        checked.push(Checked {
            content: h.content,
            name: h.name,
            layout: h.layout,
            pieces,
        });
    }
    Ok(checked)
}

/// Checks that a reported piece exists in a content of `count` pieces.
/// Refuses `count` holdings of agent `id` past `max`.
pub(super) fn check_holding_count(
    id: &AgentId,
    count: usize,
    max: usize,
) -> Result<(), StoreError> {
    if count > max {
        return Err(StoreError::TooManyHoldings {
            id: id.clone(),
            count,
            max,
        });
    }
    Ok(())
}

pub(super) fn check_piece(piece: u32, count: u32) -> Result<(), StoreError> {
    if piece < count {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "piece",
            format!("piece {piece} is out of range: the content has {count} pieces"),
        ))
    }
}

/// Checks that every piece named in an announce delta exists in a content of `count` pieces;
/// `i` is the delta's index, for the field path in the error.
pub(crate) fn check_have(i: usize, have: &[u32], count: u32) -> Result<(), StoreError> {
    match have.iter().position(|&p| p >= count) {
        Some(j) => Err(StoreError::invalid(
            format!("pieces[{i}].have[{j}]"),
            format!(
                "piece {} is out of range: the content has {count} pieces",
                have[j]
            ),
        )),
        None => Ok(()),
    }
}
