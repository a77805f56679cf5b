//! How the Redis backend names its keys and encodes values: binary strings, compact and
//! independent of any serialization format's version.

use std::net::SocketAddr;

use shoal_core::redact::without_credentials;
use shoal_core::wire::{AgentId, Scheme, UrlKey};
use shoal_core::{Bitfield, ContentId, Layout};

use super::super::memory::Pieces;
use super::super::StoreError;

pub(super) const CATALOG: &str = "shoal:catalog";
pub(super) const MANIFESTS: &str = "shoal:manifests";
pub(super) const URLS: &str = "shoal:urls";
/// URL (normalized) → the mapping of its most recently published version.
pub(super) const URLS_LATEST: &str = "shoal:urls:latest";
pub(super) const LEASES: &str = "shoal:leases";
pub(super) const AGENTS: &str = "shoal:agents";
/// Agent id → its upload counter ([`Served::encode`](super::super::served::Served::encode)),
/// apart from `agents` so that records written before it existed read as they are.
pub(super) const SERVED: &str = "shoal:served";
pub(super) const SWARMS: &str = "shoal:swarms";

/// `redis://host:port/db` with any user name and password left out.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => without_credentials(&parsed).into(),
        Err(_) => "an unparsable redis URL".into(),
    }
}

/// An agent's record in the `agents` hash: where it serves and how busy it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AgentInfo {
    pub addr: SocketAddr,
    pub scheme: Scheme,
    pub capacity: u64,
    pub load: u32,
    pub owner: String,
}

/// `addr capacity load owner`: the owner last, since only it may hold spaces. The address of
/// an agent serving HTTPS is written as its base URL (`https://10.0.0.5:7701`), so that records
/// written before TLS still read as plain HTTP.
pub(super) fn encode_agent(info: &AgentInfo) -> String {
    let addr = match info.scheme {
        Scheme::Http => info.addr.to_string(),
        Scheme::Https => Scheme::Https.base(info.addr),
    };
    format!("{addr} {} {} {}", info.capacity, info.load, info.owner)
}

pub(super) fn decode_agent(value: &str) -> Result<AgentInfo, StoreError> {
    let bad = || damaged("an agent record is damaged");
    let mut parts = value.splitn(4, ' ');
    let mut next = || parts.next().ok_or_else(bad);
    let addr = next()?;
    let (scheme, addr) = match addr.strip_prefix("https://") {
        Some(addr) => (Scheme::Https, addr),
        None => (Scheme::Http, addr),
    };
    Ok(AgentInfo {
        addr: addr.parse().map_err(|_| bad())?,
        scheme,
        capacity: next()?.parse().map_err(|_| bad())?,
        load: next()?.parse().map_err(|_| bad())?,
        owner: next()?.to_string(),
    })
}

pub(super) fn held_key(id: &AgentId) -> String {
    format!("shoal:held:{id}")
}

pub(super) fn holders_key(content: &ContentId) -> Vec<u8> {
    let mut key = b"shoal:holders:".to_vec();
    key.extend_from_slice(content.as_bytes());
    key
}

pub(super) fn swarm_key(id: &ContentId) -> Vec<u8> {
    let mut key = b"shoal:swarm:".to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

pub(super) fn reported_key(content: &ContentId) -> Vec<u8> {
    let mut key = b"shoal:reported:".to_vec();
    key.extend_from_slice(content.as_bytes());
    key
}

pub(super) fn reports_key(content: &ContentId) -> Vec<u8> {
    let mut key = b"shoal:reports:".to_vec();
    key.extend_from_slice(content.as_bytes());
    key
}

pub(super) fn encode_layout(layout: Layout, tail: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + tail.len());
    out.extend_from_slice(&layout.size().to_le_bytes());
    out.extend_from_slice(&layout.piece_size().to_le_bytes());
    out.extend_from_slice(tail);
    out
}

pub(super) fn damaged(what: impl Into<String>) -> StoreError {
    StoreError::Backend(what.into().into())
}

pub(super) fn decode_layout(value: &[u8]) -> Result<(Layout, &[u8]), StoreError> {
    if value.len() < 16 {
        return Err(damaged("a stored layout is truncated"));
    }
    let size = u64::from_le_bytes(value[..8].try_into().expect("8 bytes"));
    let piece_size = u64::from_le_bytes(value[8..16].try_into().expect("8 bytes"));
    let layout = Layout::new(size, piece_size).map_err(|e| damaged(e.to_string()))?;
    Ok((layout, &value[16..]))
}

/// A catalog entry: layout and name.
pub(super) fn decode_entry(value: &[u8]) -> Result<(Layout, String), StoreError> {
    let (layout, name) = decode_layout(value)?;
    Ok((layout, String::from_utf8_lossy(name).into_owned()))
}

pub(super) fn encode_pieces(pieces: &Pieces) -> Vec<u8> {
    match pieces {
        Pieces::Complete => Vec::new(),
        Pieces::Partial(field) => field.as_bytes().to_vec(),
    }
}

pub(super) fn decode_pieces(value: Vec<u8>, count: u32) -> Result<Pieces, StoreError> {
    if value.is_empty() {
        return Ok(Pieces::Complete);
    }
    Bitfield::from_bytes(count, value)
        .map(Pieces::from_bitfield)
        .ok_or_else(|| damaged("a stored bitfield does not fit its layout"))
}

pub(super) fn content_of(bytes: &[u8]) -> Result<ContentId, StoreError> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| damaged("a stored content id is not 32 bytes"))?;
    Ok(ContentId::from_bytes(bytes))
}

pub(super) fn url_field(key: &UrlKey) -> String {
    // Newlines cannot occur in a normalized URL or in header values.
    format!(
        "{}\n{}\n{}\n{}",
        key.url,
        key.size,
        key.etag.as_deref().unwrap_or(""),
        key.last_modified.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_records_round_trip() {
        let info = AgentInfo {
            addr: "[::1]:7001".parse().unwrap(),
            scheme: Scheme::Http,
            capacity: 1000,
            load: 3,
            owner: "fleet ops".into(),
        };
        assert_eq!(encode_agent(&info), "[::1]:7001 1000 3 fleet ops");
        assert_eq!(decode_agent(&encode_agent(&info)).unwrap(), info);
        let tls = AgentInfo {
            scheme: Scheme::Https,
            ..info
        };
        assert_eq!(encode_agent(&tls), "https://[::1]:7001 1000 3 fleet ops");
        assert_eq!(decode_agent(&encode_agent(&tls)).unwrap(), tls);
        assert!(decode_agent("127.0.0.1:1 x 0 a").is_err());
    }

    #[test]
    fn redact_leaves_out_credentials() {
        assert_eq!(
            redact("redis://user:hunter2@redis-a:6379/0"),
            "redis://redis-a:6379/0"
        );
        assert_eq!(redact("redis://:hunter2@redis-a/1"), "redis://redis-a/1");
        assert_eq!(redact("not a url hunter2"), "an unparsable redis URL");
    }
}
