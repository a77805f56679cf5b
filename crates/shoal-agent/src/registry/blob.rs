//! A blob served through the swarm, once the upstream has said this client may have it.
//!
//! The upstream is asked first, with the client's own headers (`Authorization` included), a
//! `HEAD` for the blob: a `200` lets the bytes come from the swarm (peers, this agent's cache,
//! the upstream as the swarm's origin); any other answer goes back to the client as it is, so
//! a private registry's `401` and its `WWW-Authenticate` challenge reach the client untouched,
//! and bytes held by a peer or in the cache never reach a client the registry would refuse.
//!
//! In the swarm the blob is one content whatever name or registry it is pulled from: the
//! download is shared under its SHA-256, and every byte is checked against it before the last
//! one goes out (a mismatch resets the client's connection).

use axum::body::Body;
use http::header::{self, HeaderMap};
use http::{Response, StatusCode};
use shoal_core::redact::SafeUrl;
use tracing::{debug, info};

use super::forward::{self, error};
use super::route::BlobDigest;
use super::Inner;
use crate::ordered::{ContentRequest, OrderedError};

/// Answers `GET url` (a blob named by `digest`) for a client that sent `client` headers, and,
/// once the upstream lets the client have it, starts the downloads of `ahead` (the layers
/// after it: their URLs and digests) with the same credentials.
pub(super) async fn serve(
    mirror: &Inner,
    url: SafeUrl,
    digest: BlobDigest,
    client: &HeaderMap,
    ahead: Vec<(SafeUrl, BlobDigest)>,
) -> Response<Body> {
    let mut asked = forward::upstream_headers(client);
    asked.remove(header::RANGE);
    let check = mirror
        .clients
        .followed
        .head(url.as_url().clone())
        .headers(asked)
        .send()
        .await;
    match check {
        Ok(answer) if answer.status() == StatusCode::OK => {}
        Ok(answer) => {
            debug!(%url, status = %answer.status(), "the upstream refused the blob; its answer goes back as it is");
            return forward::answered_without_body(&answer);
        }
        Err(e) => return forward::unanswered(&url, &e, mirror.clients.timeout),
    }
    let request = ContentRequest::new(url.as_url().clone())
        .with_headers(credentials(client))
        .with_range(client.get(header::RANGE).cloned())
        .with_sha256(Some(digest.bytes()));
    let opened = mirror.ordered.open(request).await;
    for (url, next) in ahead {
        debug!(%next, after = %digest, "fetching a layer before the client asks for it");
        let request = ContentRequest::new(url.as_url().clone())
            .with_headers(credentials(client))
            .with_sha256(Some(next.bytes()));
        mirror.ordered.prefetch(&request);
    }
    match opened {
        Ok((meta, body)) => {
            info!(%digest, size = meta.size, "serving a blob through the swarm");
            let mut response = Response::builder()
                .header(header::CONTENT_LENGTH, meta.body_len())
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::ACCEPT_RANGES, "bytes")
                .header("docker-content-digest", digest.to_string());
            response = match meta.content_range() {
                Some(range) => response
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header(header::CONTENT_RANGE, range),
                None => response.status(StatusCode::OK),
            };
            response.body(body).expect("a valid response")
        }
        Err(OrderedError::Unsatisfiable { size }) => Response::builder()
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, format!("bytes */{size}"))
            .body(Body::empty())
            .expect("a valid response"),
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            "BLOB_UNKNOWN",
            &format!("{digest} could not be fetched through the swarm: {e}"),
        ),
    }
}

/// What the swarm's download sends the upstream besides the agent's own headers: the client's
/// credentials, without which a private registry refuses it.
fn credentials(client: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(authorization) = client.get(header::AUTHORIZATION) {
        let mut value = authorization.clone();
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }
    headers
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn only_the_clients_authorization_goes_to_the_swarms_download() {
        let mut client = HeaderMap::new();
        client.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dTpw"),
        );
        client.insert(header::RANGE, HeaderValue::from_static("bytes=0-"));
        client.insert(header::USER_AGENT, HeaderValue::from_static("skopeo"));
        let sent = credentials(&client);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[header::AUTHORIZATION], "Basic dTpw");
        assert!(sent[header::AUTHORIZATION].is_sensitive());
        assert!(credentials(&HeaderMap::new()).is_empty());
    }
}
