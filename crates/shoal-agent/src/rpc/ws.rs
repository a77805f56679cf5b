//! `/jsonrpc` over a WebSocket, as aria2 serves it: each text message is a call (or a batch)
//! answered on the same socket, and the queue's events go out as aria2's notifications.
//!
//! A page on another site can open a WebSocket to a loopback port (browsers apply no
//! same-origin rule to them), so a request whose `Origin` is not this listener's own
//! (`http://HOST`, `HOST` from the request) is refused; clients outside a browser send none, or
//! their own host (websocket-client, which aria2p uses).

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;

use super::{jsonrpc, Rpc};

/// The largest message taken, as for a POST body.
const MAX_MESSAGE: usize = 2 << 20;

pub(super) async fn upgrade(
    State(rpc): State<Rpc>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !same_origin(&headers) {
        return (
            StatusCode::FORBIDDEN,
            "the RPC's WebSocket takes no connections from pages on other sites",
        )
            .into_response();
    }
    upgrade
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| session(rpc, socket))
}

fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = origin.to_str().ok();
    match (origin, host) {
        (Some(origin), Some(host)) => {
            let origin = origin.trim_end_matches('/');
            origin.strip_prefix("http://") == Some(host)
                || origin.strip_prefix("https://") == Some(host)
        }
        _ => false,
    }
}

async fn session(rpc: Rpc, mut socket: WebSocket) {
    let mut notices = rpc.queue().subscribe();
    let stop = rpc.inner.stop.clone();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            message = socket.recv() => {
                let body = match message {
                    Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                };
                if let Some(answer) = rpc.answer(&body).await {
                    if socket.send(Message::Text(answer.to_string().into())).await.is_err() {
                        break;
                    }
                }
            }
            notice = notices.recv() => {
                let notice = match notice {
                    Ok(notice) => notice,
                    // A client too slow to read misses some notifications, as with aria2;
                    // it sees the states in the next tellStatus.
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => break,
                };
                let text = jsonrpc::notification(notice.method(), &notice.gid.to_string());
                if socket.send(Message::Text(text.to_string().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pages_of_this_listener_may_open_a_websocket() {
        let headers = |pairs: &[(header::HeaderName, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(name.clone(), value.parse().unwrap());
            }
            map
        };
        let host = (header::HOST, "127.0.0.1:6800");
        assert!(same_origin(&headers(std::slice::from_ref(&host))));
        assert!(same_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://127.0.0.1:6800")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            (header::ORIGIN, "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[(header::ORIGIN, "http://x")])));
    }
}
