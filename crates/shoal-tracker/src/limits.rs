//! How many items one answer holds: the defaults and maxima of the `k` and `limit` query
//! parameters, which the handlers enforce and the OpenAPI document states.

/// Peers in a peers answer when the query names no `k`.
pub const DEFAULT_PEERS: u32 = 20;
/// The largest `k` of a peers query.
pub const MAX_PEERS: u32 = 200;
/// Items in a listing when the query names no `limit`.
pub const DEFAULT_LIST: u32 = 100;
/// The largest `limit` of a listing.
pub const MAX_LIST: u32 = 1000;
