//! Contents in Redis: the catalog of layouts and names, manifests, and the answers built from
//! them and from holdings (peers, summaries, search).

use std::collections::HashMap;

use redis::AsyncCommands;
use shoal_core::wire::{
    AgentId, ContentSummary, ManifestPublished, PackedBits, Peer, PeersResponse,
};
use shoal_core::{ContentId, Layout, Manifest};

use super::codec::{
    content_of, damaged, decode_agent, decode_entry, decode_layout, decode_pieces, encode_layout,
    holders_key, reported_key, AGENTS, CATALOG, LEASES, MANIFESTS,
};
use super::RedisStore;
use crate::store::memory::{fnv1a, useful_pieces, PeerKey, Pieces};
use crate::store::{ContentSearch, PeerQuery, StoreError};

/// A content's holders as stored: agent id → bits (empty when complete).
type Holders = HashMap<String, Vec<u8>>;

impl RedisStore {
    /// Catalog entries (layout, name) of `ids`, in one round trip.
    pub(super) async fn entries(
        &self,
        ids: &[ContentId],
    ) -> Result<HashMap<ContentId, (Layout, String)>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(CATALOG, &id.as_bytes()[..]);
        }
        let values: Vec<Option<Vec<u8>>> = self.query(&pipe).await?;
        let mut out = HashMap::with_capacity(ids.len());
        for (id, value) in ids.iter().zip(values) {
            if let Some(value) = value {
                out.insert(*id, decode_entry(&value)?);
            }
        }
        Ok(out)
    }

    /// Live holders of each content: (complete, partial) counts, in two round trips.
    async fn summaries(
        &self,
        entries: Vec<(ContentId, Layout, String)>,
        now: u64,
    ) -> Result<Vec<ContentSummary>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, ..) in &entries {
            pipe.hexists(MANIFESTS, &id.as_bytes()[..])
                .hgetall(holders_key(id));
        }
        let rows: Vec<(bool, Holders)> = self.query(&pipe).await?;
        let (manifests, holders): (Vec<bool>, Vec<Holders>) = rows.into_iter().unzip();
        let mut pipe = redis::pipe();
        for agents in holders.iter().filter(|h| !h.is_empty()) {
            pipe.cmd("ZMSCORE")
                .arg(LEASES)
                .arg(agents.keys().collect::<Vec<_>>());
        }
        let leases: Vec<Vec<Option<f64>>> = if holders.iter().all(HashMap::is_empty) {
            Vec::new()
        } else {
            self.query(&pipe).await?
        };
        let mut leases = leases.into_iter();
        let mut out = Vec::with_capacity(entries.len());
        for (((id, layout, name), manifest), agents) in
            entries.into_iter().zip(manifests).zip(&holders)
        {
            let (mut complete, mut partial) = (0, 0);
            let deadlines = if agents.is_empty() {
                Vec::new()
            } else {
                leases.next().unwrap_or_default()
            };
            // keys() (the ZMSCORE arguments) and values() of one unchanged map agree in order.
            for (bits, deadline) in agents.values().zip(deadlines) {
                if deadline.is_some_and(|d| d as u64 > now) {
                    if bits.is_empty() {
                        complete += 1;
                    } else {
                        partial += 1;
                    }
                }
            }
            out.push(ContentSummary {
                id,
                name,
                layout,
                manifest,
                complete_holders: complete,
                partial_holders: partial,
            });
        }
        Ok(out)
    }

    pub(super) async fn peers_in_redis(
        &self,
        content: ContentId,
        query: PeerQuery,
    ) -> Result<PeersResponse, StoreError> {
        let now = self.now();
        let field = &content.as_bytes()[..];
        // Round trip 1: the layout, every holder's pieces, the asker's lease and the agents
        // reported for this content.
        let asker = query.asker.as_ref().map(AgentId::as_str).unwrap_or("");
        let mut pipe = redis::pipe();
        pipe.hget(CATALOG, field)
            .hgetall(holders_key(&content))
            .zscore(LEASES, asker)
            .zrangebyscore(reported_key(&content), format!("({now}"), "+inf");
        let (entry, mut holders, asker_deadline, reported): (
            Option<Vec<u8>>,
            Holders,
            Option<f64>,
            Vec<String>,
        ) = self.query(&pipe).await?;
        let (layout, _) = decode_layout(&entry.ok_or(StoreError::UnknownContent(content))?)?;
        let count = layout.piece_count();
        let asker_bits = query
            .asker
            .as_ref()
            .and_then(|a| holders.remove(a.as_str()));
        let asker_has = match (asker_deadline, asker_bits) {
            (Some(d), Some(bits)) if d as u64 > now => Some(decode_pieces(bits, count)?),
            _ => None,
        };
        let asker_count = asker_has.as_ref().map_or(0, |p| p.count(count));
        for agent in &reported {
            holders.remove(agent);
        }
        let candidates: Vec<(String, Vec<u8>)> = holders.into_iter().collect();

        // Round trip 2: every candidate's lease and record, in two commands.
        let names: Vec<&str> = candidates.iter().map(|(a, _)| a.as_str()).collect();
        let mut pipe = redis::pipe();
        pipe.cmd("ZMSCORE")
            .arg(LEASES)
            .arg(&names)
            .cmd("HMGET")
            .arg(AGENTS)
            .arg(&names);
        let (deadlines, infos): (Vec<Option<f64>>, Vec<Option<String>>) = if names.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            self.query(&pipe).await?
        };
        // Equal candidates are ordered by a hash of the asker, so that different askers spread
        // over different holders instead of all picking the same first few.
        let seed = query.asker.as_ref().map_or(0, |id| fnv1a(id.as_str()));
        let mut ranked: Vec<(PeerKey, Peer)> = Vec::with_capacity(candidates.len());
        for (((agent, bits), deadline), info) in candidates.into_iter().zip(deadlines).zip(infos) {
            let (Some(deadline), Some(info)) = (deadline, info) else {
                continue;
            };
            if deadline as u64 <= now {
                continue;
            }
            let info = decode_agent(&info)?;
            let pieces = decode_pieces(bits, count)?;
            let complete = matches!(pieces, Pieces::Complete);
            // Holders with nothing the asker lacks come too, last, unless the asker is
            // complete (see the memory store).
            let useful = useful_pieces(&pieces, asker_has.as_ref(), asker_count, count);
            if !complete && useful == 0 && asker_count == count {
                continue;
            }
            let id = AgentId::new(agent.as_str()).map_err(|e| damaged(e.to_string()))?;
            let peer = Peer {
                addr: info.addr,
                scheme: info.scheme,
                upload_capacity: info.capacity,
                load: info.load,
                complete,
                pieces: match &pieces {
                    Pieces::Complete => None,
                    Pieces::Partial(field) => Some(PackedBits::of(field)),
                },
                id,
            };
            let key = (
                std::cmp::Reverse(complete),
                std::cmp::Reverse(useful),
                peer.load,
                std::cmp::Reverse(peer.upload_capacity),
                (fnv1a(&agent) ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            ranked.push((key, peer));
        }
        if ranked.len() > query.k && query.k > 0 {
            ranked.select_nth_unstable_by(query.k - 1, |x, y| x.0.cmp(&y.0));
        }
        ranked.truncate(query.k);
        ranked.sort_unstable_by_key(|x| x.0);
        Ok(PeersResponse {
            content,
            layout,
            peers: ranked.into_iter().map(|(_, peer)| peer).collect(),
        })
    }

    pub(super) async fn content_in_redis(
        &self,
        id: ContentId,
    ) -> Result<ContentSummary, StoreError> {
        let mut conn = self.conn.clone();
        let entry: Option<Vec<u8>> = conn
            .hget(CATALOG, &id.as_bytes()[..])
            .await
            .map_err(|e| self.error(e))?;
        let (layout, name) = decode_entry(&entry.ok_or(StoreError::UnknownContent(id))?)?;
        let mut found = self.summaries(vec![(id, layout, name)], self.now()).await?;
        Ok(found.remove(0))
    }

    pub(super) async fn search_in_redis(
        &self,
        search: ContentSearch,
    ) -> Result<Vec<ContentSummary>, StoreError> {
        let mut conn = self.conn.clone();
        let all: HashMap<Vec<u8>, Vec<u8>> =
            conn.hgetall(CATALOG).await.map_err(|e| self.error(e))?;
        let name = search.name.as_ref().map(|n| n.to_lowercase());
        let mut found = Vec::new();
        for (id, value) in all {
            let id = content_of(&id)?;
            let (layout, entry_name) = decode_entry(&value)?;
            let keep = name
                .as_ref()
                .is_none_or(|n| entry_name.to_lowercase().contains(n.as_str()))
                && search
                    .id_prefix
                    .as_ref()
                    .is_none_or(|p| id.to_string().starts_with(p.as_str()));
            if keep {
                found.push((id, layout, entry_name));
            }
        }
        found.sort_unstable_by(|a, b| a.2.cmp(&b.2).then(a.0.cmp(&b.0)));
        found.truncate(search.limit);
        self.summaries(found, self.now()).await
    }

    pub(super) async fn put_manifest_in_redis(
        &self,
        manifest: Manifest,
    ) -> Result<ManifestPublished, StoreError> {
        let id = manifest.id();
        let layout = manifest.layout();
        let field = &id.as_bytes()[..];
        let mut pipe = redis::pipe();
        pipe.hset_nx(
            MANIFESTS,
            field,
            encode_layout(layout, manifest.digests().as_flattened()),
        )
        .hget(CATALOG, field)
        .hkeys(holders_key(&id));
        let (created, entry, holders): (bool, Option<Vec<u8>>, Vec<String>) =
            self.query(&pipe).await?;
        // The manifest's layout is authoritative: holdings announced with another one go.
        let (old_layout, name) = match entry {
            Some(entry) => {
                let (l, n) = decode_entry(&entry)?;
                (Some(l), n)
            }
            None => (None, String::new()),
        };
        if old_layout != Some(layout) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            if old_layout.is_some() {
                for agent in &holders {
                    pipe.hdel(format!("shoal:held:{agent}"), field).ignore();
                }
                pipe.del(holders_key(&id)).ignore();
            }
            pipe.hset(CATALOG, field, encode_layout(layout, name.as_bytes()))
                .ignore();
            self.query::<()>(&pipe).await?;
        }
        Ok(ManifestPublished {
            content: id,
            created,
        })
    }

    pub(super) async fn manifest_in_redis(&self, id: ContentId) -> Result<Manifest, StoreError> {
        let mut conn = self.conn.clone();
        let value: Option<Vec<u8>> = conn
            .hget(MANIFESTS, &id.as_bytes()[..])
            .await
            .map_err(|e| self.error(e))?;
        let value = value.ok_or(StoreError::NoManifest(id))?;
        let (layout, digests) = decode_layout(&value)?;
        let digests = digests
            .chunks_exact(32)
            .map(|c| c.try_into().expect("chunks are 32 bytes"))
            .collect();
        Manifest::new(layout, digests).map_err(|e| damaged(format!("stored manifest {id}: {e}")))
    }
}
