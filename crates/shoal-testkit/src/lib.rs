//! Dev-only test kit for shoal: servers that tests start themselves, on loopback only.
//!
//! - [`Origin`]: an in-process HTTP/1.1 (or HTTPS) origin on `127.0.0.1:0` that serves one file
//!   at every path and can misbehave on purpose (rate limits, resets, stalls, redirects, wrong
//!   `Content-Range`, changing content, ...), recording every request it sees. It is a raw tokio
//!   HTTP/1.1 server rather than hyper: resets after an exact byte count, stalls that keep the
//!   socket open, and lying headers need control of every byte written, which hyper hides.
//!   Each origin runs on its own small tokio runtime, so it keeps serving while the test's
//!   runtime is blocked (e.g. waiting for a child process) or has its clock paused.
//! - [`Peer`]: a liar peer, an origin that speaks the agents' piece protocol and serves wrong
//!   bytes for the pieces it is told to lie about.
//! - [`Nginx`]: a real `nginx` (Debian `nginx-light`) started in a temporary directory, for tests
//!   against the server users actually run.
//! - [`Redis`]: a real `redis-server` (Debian `redis-server`) on a free loopback port, without
//!   persistence, that a test can stop and start again.
//! - [`TestCa`]: a private certificate authority and the server certificates it signs, for
//!   tests of TLS between shoal's own processes.
//! - [`Registry`]: a real OCI registry (Debian `docker-registry`) on a free loopback port,
//!   optionally behind htpasswd, whose access log tells what it sent; [`OciImage`] builds an
//!   image layout of random layers and pushes it there with `skopeo copy`.
//! - [`random_bytes`] and [`sha256_hex`]: deterministic content and its digest.

mod http1;
mod nginx;
mod oci;
mod origin;
mod peer;
mod peer_routes;
mod redis;
mod registry;
mod tls;

pub use nginx::{Nginx, NginxConfig};
pub use oci::{Blob, OciImage};
pub use origin::{Origin, OriginConfig, RequestRecord};
pub use peer::{Peer, PeerConfig};
pub use redis::Redis;
pub use registry::{Credentials, Registry, RegistryConfig};
pub use tls::{ServerFiles, TestCa};

use bytes::Bytes;

/// `len` pseudo-random bytes, the same for the same `seed`; a shorter output is a prefix of a
/// longer one.
///
/// Tests run unoptimized, where a per-word PRNG loop costs about a second per 64 MiB. So a
/// splitmix64 stream fills a 64 KiB pool, and the output is 1 KiB pieces copied from random pool
/// offsets, each piece stamped with its index so that no two pieces are equal (a range written
/// at the wrong place never goes unnoticed).
pub fn random_bytes(len: usize, seed: u64) -> Bytes {
    const POOL: usize = 64 * 1024;
    const PIECE: usize = 1024;
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let pool: Vec<u8> = (0..POOL / 8).flat_map(|_| next().to_le_bytes()).collect();
    let mut out = Vec::with_capacity(len.next_multiple_of(PIECE));
    // Bounded: one iteration per 1 KiB of output.
    for index in 0..len.div_ceil(PIECE) as u64 {
        let offset = (next() % (POOL - PIECE) as u64) as usize;
        let start = out.len();
        out.extend_from_slice(&pool[offset..offset + PIECE]);
        let stamp = u64::from_le_bytes(out[start..start + 8].try_into().expect("8 bytes")) ^ index;
        out[start..start + 8].copy_from_slice(&stamp.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Lowercase hex SHA-256 of `data`. Uses ring, whose assembly stays fast in the unoptimized
/// builds tests run in (the `sha2` crate hashes only ~20 MB/s there).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
