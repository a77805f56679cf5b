//! Dev-only test kit for shoal: servers that tests start themselves, on loopback only.
//!
//! - [`Origin`]: an in-process HTTP/1.1 (or HTTPS) origin on `127.0.0.1:0` that serves one file
//!   at every path and can misbehave on purpose (rate limits, resets, stalls, redirects, wrong
//!   `Content-Range`, changing content, ...), recording every request it sees. It is a raw tokio
//!   HTTP/1.1 server rather than hyper: resets after an exact byte count, stalls that keep the
//!   socket open, and lying headers need control of every byte written, which hyper hides.
//!   Each origin runs on its own small tokio runtime, so it keeps serving while the test's
//!   runtime is blocked (e.g. waiting for a child process) or has its clock paused.
//! - [`Nginx`]: a real `nginx` (Debian `nginx-light`) started in a temporary directory, for tests
//!   against the server users actually run.
//! - [`random_bytes`] and [`sha256_hex`]: deterministic content and its digest.

mod http1;
mod nginx;
mod origin;
mod tls;

pub use nginx::{Nginx, NginxConfig};
pub use origin::{Origin, OriginConfig, RequestRecord};

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// `len` pseudo-random bytes, the same for the same `seed` (splitmix64, 8 bytes per step).
pub fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
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
