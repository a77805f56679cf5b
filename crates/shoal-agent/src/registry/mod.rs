//! The OCI registry mirror, the door behind the proxy listener's origin-form `/v2/` requests.
//!
//! - `route`: which requests come through the swarm (blob `GET`s by SHA-256 digest) and which
//!   pass through to the upstream (everything else);
//! - `upstream`: the `--registry-upstream` registries and which one a request goes to.

mod route;
mod upstream;

pub use upstream::{Upstream, UpstreamError, Upstreams};
