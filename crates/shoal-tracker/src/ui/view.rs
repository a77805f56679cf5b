//! What one event of the page's stream holds: a page of agents, a page of contents with their
//! piece availability, and the running swarms with each member's progress, all read from the
//! [`Store`] as the API's handlers read it.

use serde::Serialize;
use shoal_core::wire::{AgentId, AgentSummary, ContentSummary, PeersResponse};
use shoal_core::{ContentId, Layout};

use super::ViewQuery;
use crate::limits::MAX_PEERS;
use crate::store::{AgentPage, ContentSearch, PeerQuery, Store, StoreError, SwarmSummary};

/// Agents, and contents, in one page.
pub(crate) const PAGE: usize = 50;
/// Running swarms shown, the most recently active first.
pub(crate) const SWARMS: usize = 10;
/// The largest offset a page may start at: a page past it costs a walk the reader does not
/// need (the name filter finds a content faster).
pub(crate) const MAX_OFFSET: usize = 100_000;
/// Segments of a content's availability bar.
const BAR: u32 = 64;
/// Pieces sampled per bar segment at most, so a huge layout costs what a small one does.
const SAMPLES: u32 = 8;

/// One event's data.
#[derive(Debug, Serialize)]
pub(crate) struct View {
    totals: Totals,
    agents_offset: usize,
    agents: Vec<AgentSummary>,
    contents_offset: usize,
    /// Whether contents match past this page.
    contents_more: bool,
    contents: Vec<ContentRow>,
    swarms: Vec<SwarmRow>,
}

#[derive(Debug, Serialize)]
struct Totals {
    agents: u64,
    contents: u64,
    manifests: u64,
    swarms: u64,
}

#[derive(Debug, Serialize)]
struct ContentRow {
    #[serde(flatten)]
    summary: ContentSummary,
    /// Per segment of the file ([`BAR`] at most), the fewest live holders any of its pieces
    /// has among the first [`MAX_PEERS`] holders.
    availability: Vec<u32>,
}

#[derive(Debug, Serialize)]
struct SwarmRow {
    id: ContentId,
    /// The URL with secret-looking query values and the password hidden.
    url: String,
    size: u64,
    piece_size: u64,
    pieces: u32,
    leader: AgentId,
    /// Bytes the leader fetched from the origin: the pieces whose digest it published.
    origin_bytes: u64,
    members: Vec<Member>,
}

#[derive(Debug, Serialize)]
struct Member {
    id: AgentId,
    /// Pieces it has verified.
    pieces: u32,
}

impl View {
    pub(crate) async fn build<S: Store>(store: &S, query: &ViewQuery) -> Result<Self, StoreError> {
        let stats = store.stats().await?;
        let agents = store
            .agents(AgentPage {
                after: None,
                limit: query.agents + PAGE,
            })
            .await?
            .into_iter()
            .skip(query.agents)
            .collect();
        let mut found = store
            .search(ContentSearch {
                name: query.name.clone().filter(|n| !n.is_empty()),
                id_prefix: None,
                limit: query.contents + PAGE + 1,
            })
            .await?;
        let contents_more = found.len() > query.contents + PAGE;
        found.truncate(query.contents + PAGE);
        let mut contents = Vec::with_capacity(PAGE);
        for summary in found.into_iter().skip(query.contents) {
            let availability = match holders(store, summary.id).await? {
                Some(peers) => availability(&peers),
                None => vec![0; segments(summary.layout) as usize],
            };
            contents.push(ContentRow {
                summary,
                availability,
            });
        }
        let mut swarms = Vec::new();
        for swarm in store.swarms(SWARMS).await? {
            let members = holders(store, swarm.id).await?;
            swarms.push(swarm_row(swarm, members));
        }
        Ok(Self {
            totals: Totals {
                agents: stats.agents,
                contents: stats.contents,
                manifests: stats.manifests,
                swarms: stats.swarms,
            },
            agents_offset: query.agents,
            agents,
            contents_offset: query.contents,
            contents_more,
            contents,
            swarms,
        })
    }
}

/// The live holders of a content (or members of a swarm); `None` when nobody holds it.
async fn holders<S: Store>(store: &S, id: ContentId) -> Result<Option<PeersResponse>, StoreError> {
    let query = PeerQuery {
        k: MAX_PEERS as usize,
        asker: None,
    };
    match store.peers(id, query).await {
        Ok(peers) => Ok(Some(peers)),
        Err(StoreError::UnknownContent(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn segments(layout: Layout) -> u32 {
    layout.piece_count().clamp(1, BAR)
}

/// Per bar segment, the fewest holders of any sampled piece in it.
fn availability(peers: &PeersResponse) -> Vec<u32> {
    let count = peers.layout.piece_count();
    let bar = segments(peers.layout);
    let complete = peers.peers.iter().filter(|p| p.complete).count() as u32;
    let partial: Vec<_> = peers
        .peers
        .iter()
        .filter(|p| !p.complete)
        .filter_map(|p| p.pieces.as_ref()?.to_bitfield(count).ok())
        .collect();
    (0..bar)
        .map(|segment| {
            let (start, end) = (
                segment as u64 * count as u64 / bar as u64,
                (segment as u64 + 1) * count as u64 / bar as u64,
            );
            let step = ((end - start) / SAMPLES as u64).max(1);
            (start..end.max(start + 1))
                .step_by(step as usize)
                .map(|piece| {
                    let piece = piece.min(count.saturating_sub(1) as u64) as u32;
                    complete + partial.iter().filter(|bits| bits.get(piece)).count() as u32
                })
                .min()
                .unwrap_or(complete)
        })
        .collect()
}

fn swarm_row(swarm: SwarmSummary, members: Option<PeersResponse>) -> SwarmRow {
    let layout = swarm.layout;
    let pieces = layout.piece_count();
    let members = members
        .map(|response| {
            response
                .peers
                .into_iter()
                .map(|peer| Member {
                    pieces: if peer.complete {
                        pieces
                    } else {
                        peer.pieces
                            .and_then(|bits| bits.to_bitfield(pieces).ok())
                            .map_or(0, |bits| bits.count_ones())
                    },
                    id: peer.id,
                })
                .collect()
        })
        .unwrap_or_default();
    SwarmRow {
        id: swarm.id,
        url: url::Url::parse(&swarm.key.url).map_or_else(
            |_| "(not a URL)".to_string(),
            |url| shoal_core::redact::redacted(&url),
        ),
        size: layout.size(),
        piece_size: layout.piece_size(),
        pieces,
        leader: swarm.leader,
        origin_bytes: (swarm.published as u64 * layout.piece_size()).min(layout.size()),
        members,
    }
}

#[cfg(test)]
mod tests {
    use shoal_core::wire::{PackedBits, Peer};
    use shoal_core::Bitfield;

    use super::*;

    fn peer(id: &str, pieces: Option<&[u32]>, count: u32) -> Peer {
        Peer {
            id: AgentId::new(id).unwrap(),
            addr: "127.0.0.1:1".parse().unwrap(),
            scheme: Default::default(),
            upload_capacity: 0,
            load: 0,
            complete: pieces.is_none(),
            pieces: pieces.map(|ones| {
                let mut bits = Bitfield::new(count);
                ones.iter().for_each(|&i| bits.set(i));
                PackedBits::of(&bits)
            }),
        }
    }

    #[test]
    fn availability_counts_the_fewest_holders_per_segment() {
        let layout = Layout::new(4 * 16, 16).unwrap(); // 4 pieces: 4 segments
        let peers = PeersResponse {
            content: ContentId::from_bytes([1; 32]),
            layout,
            peers: vec![peer("a", None, 4), peer("b", Some(&[0, 1]), 4)],
        };
        assert_eq!(availability(&peers), vec![2, 2, 1, 1]);
        let big = Layout::new(1 << 40, 1 << 16).unwrap();
        let none = PeersResponse {
            content: ContentId::from_bytes([1; 32]),
            layout: big,
            peers: vec![peer("a", Some(&[0]), big.piece_count())],
        };
        let bar = availability(&none);
        assert_eq!(bar.len(), BAR as usize);
        assert_eq!(bar[1..], [0; BAR as usize - 1]);
    }
}
