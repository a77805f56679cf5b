//! `CONNECT host:port`: a plain TCP tunnel, opened after the same checks as a forwarded
//! request. What flows inside (TLS, mostly) is not looked at: an `https://` download through
//! the proxy comes from its origin, never from the swarm.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::{refuse, upstream, Proxy};

/// Answers `200` and then joins the client's connection to the origin's.
pub(super) async fn open(proxy: &Proxy, request: Request) -> Response {
    let Some(authority) = request.uri().authority().cloned() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "CONNECT needs HOST:PORT as its target".to_string(),
        );
    };
    let Some(port) = authority.port_u16() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("CONNECT {authority}: the port is missing"),
        );
    };
    let mut origin = match upstream::connect(authority.host(), port, &proxy.inner.own).await {
        Ok(stream) => stream,
        Err(e @ upstream::UpstreamError::Own { .. }) => {
            return refuse(StatusCode::FORBIDDEN, e.to_string())
        }
        Err(e) => return refuse(StatusCode::BAD_GATEWAY, e.to_string()),
    };
    tokio::spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut origin).await {
                    debug!(%authority, "tunnel closed: {e}");
                }
            }
            Err(e) => debug!(%authority, "the client's connection did not become a tunnel: {e}"),
        }
    });
    StatusCode::OK.into_response()
}
