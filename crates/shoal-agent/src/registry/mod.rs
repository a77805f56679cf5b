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
//! - `blob`: a blob through the swarm, after the upstream's access check;
//! - `read_ahead`: the layers after the one a client asks for, fetched before it asks.

mod blob;
mod forward;
mod read_ahead;
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
use self::read_ahead::ReadAhead;
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
    read_ahead: ReadAhead,
}

/// How the mirror treats its upstreams.
#[derive(Debug, Clone)]
pub struct MirrorOptions {
    /// The registries mirrored (`--registry-upstream`).
    pub upstreams: Upstreams,
    /// How long an upstream may stay silent (the proxy's `--proxy-timeout`): then it is given
    /// up on, `504` when no answer came.
    pub timeout: Duration,
    /// How many layers after the one a client asks for start downloading at once
    /// (`--registry-read-ahead`; see `read_ahead`).
    pub read_ahead: usize,
}

impl Mirror {
    /// A mirror as `options` say, whose blobs come through `ordered`.
    pub fn new(options: MirrorOptions, ordered: Ordered) -> Self {
        Self {
            inner: Arc::new(Inner {
                upstreams: options.upstreams,
                clients: Clients::new(options.timeout),
                ordered,
                read_ahead: ReadAhead::new(options.read_ahead),
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
        let manifest_of = match route::route(&parts.method, path) {
            Route::Blob { name, digest } => {
                let ahead = self.inner.read_ahead.after(name, &digest);
                let ahead = ahead.into_iter().map(|next| {
                    let url = upstream.url_for(&format!("/v2/{name}/blobs/{next}"), query);
                    (url, next)
                });
                let ahead: Vec<_> = ahead.collect();
                return blob::serve(&self.inner, url, digest, &parts.headers, ahead).await;
            }
            Route::Manifest { name } => Some(name),
            Route::PassThrough => None,
        };
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
        let clients = &self.inner.clients;
        let headers = forward::upstream_headers(&parts.headers);
        let Some(name) = manifest_of else {
            return forward::forward(clients, parts.method.clone(), &url, headers, body).await;
        };
        let answer = match forward::send(clients, parts.method.clone(), &url, headers, body).await {
            Ok(answer) => answer,
            Err(response) => return response,
        };
        let max = read_ahead::MAX_MANIFEST;
        let (response, manifest) = forward::answered_read(answer, max, &url, clients.timeout).await;
        if let Some(manifest) = manifest {
            self.inner.read_ahead.learn(name, &manifest);
        }
        response
    }
}

#[cfg(test)]
mod tests;
