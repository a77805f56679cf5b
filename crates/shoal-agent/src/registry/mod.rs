//! The OCI registry mirror: the door behind the proxy listener's origin-form `/v2/` requests,
//! for containerd (`hosts.toml`), Podman and skopeo (`registries.conf` mirrors) and Docker
//! (`registry-mirrors`).
//!
//! Blob `GET`s by SHA-256 digest come through the swarm, keyed by digest, once the upstream has
//! accepted the client's credentials for the blob (see `blob`); everything else (the `/v2/`
//! ping, manifests, tags, token challenges) passes through to the upstream as it is.
//!
//! - `route`: which requests come through the swarm and which pass through;
//! - `upstream`: the `--registry-upstream` registries and which one a request goes to;
//! - `forward`: passing a request through and the upstream's answer back;
//! - `blob`: a blob through the swarm, after the upstream's access check.

mod blob;
mod forward;
mod route;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tracing::debug;

pub use upstream::{Upstream, UpstreamError, Upstreams};

use self::forward::{error, Clients};
use self::route::Route;
use crate::ordered::Ordered;

/// The registry mirror; cheap to clone.
#[derive(Clone)]
pub struct Mirror {
    inner: Arc<Inner>,
}

struct Inner {
    upstreams: Upstreams,
    clients: Clients,
    ordered: Ordered,
}

impl Mirror {
    /// A mirror of `upstreams` whose blobs come through `ordered`; an upstream silent for
    /// `timeout` (the proxy's `--proxy-timeout`) is given up on (`504` when no answer came).
    pub fn new(upstreams: Upstreams, ordered: Ordered, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                upstreams,
                clients: Clients::new(timeout),
                ordered,
            }),
        }
    }

    /// Answers one origin-form request whose path starts with `/v2/`.
    pub async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let (path, query) = (parts.uri.path(), parts.uri.query());
        let upstream = match self.inner.upstreams.choose(query) {
            Ok(upstream) => upstream,
            Err(e) => return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", &e.to_string()),
        };
        let url = upstream.url_for(path, query);
        debug!(method = %parts.method, %url, "registry request");
        match route::route(&parts.method, path) {
            Route::Blob { digest, .. } => {
                blob::serve(&self.inner, url, digest, &parts.headers).await
            }
            Route::PassThrough => {
                let body = match http_body_util::Limited::new(body, forward::MAX_REQUEST_BODY)
                    .collect()
                    .await
                {
                    Ok(collected) => collected.to_bytes(),
                    Err(_) => {
                        return error(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "UNSUPPORTED",
                            "the registry mirror is for pulls; push to the registry itself",
                        )
                    }
                };
                forward::forward(
                    &self.inner.clients,
                    parts.method.clone(),
                    &url,
                    forward::upstream_headers(&parts.headers),
                    body,
                )
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests;
