//! `/jsonrpc` over a WebSocket, as aria2 serves it: each text message is a call (or a batch)
//! answered on the same socket, and the queue's events go out as aria2's notifications.
//!
//! A page on another site can open a WebSocket to a loopback port (browsers apply no
//! same-origin rule to them), so a request whose `Origin` is neither this listener's own
//! (`http://HOST`, `HOST` from the request) nor one `--rpc-allow-origin` names is refused
//! (`origins`); clients outside a browser send none, or their own host (websocket-client,
//! which aria2p uses).
//!
//! An open socket keeps its connection's place under the listener's caps (`shoal_serve`), and
//! is closed once idle for the listener's idle timeout ([`IdleTimeout`]): nothing went either
//! way, no call, answer or notification, and no frame from the client. aria2 clients hold a
//! socket open only for notifications, which may not come for hours, and do not open it again
//! when it closes (aria2p's listener ends), so a quiet socket is pinged once half the timeout
//! has passed: browsers and WebSocket libraries answer pings by themselves (RFC 6455), and a
//! client that answers keeps its socket. aria2 sends no pings; it also never closes an idle
//! socket. A client that does not answer (gone, frozen, or behind a half-open TCP connection)
//! is closed at the timeout and gives its place back; so is one that stops reading what is
//! sent to it.

use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use shoal_serve::IdleTimeout;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::{jsonrpc, Rpc};

/// The largest message taken, as for a POST body.
const MAX_MESSAGE: usize = 2 << 20;

pub(super) async fn upgrade(
    State(rpc): State<Rpc>,
    idle: Option<Extension<IdleTimeout>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !rpc.origins.admits(&headers) {
        return (
            StatusCode::FORBIDDEN,
            "the RPC's WebSocket takes no connections from pages on other sites: \
             allow one with --rpc-allow-origin",
        )
            .into_response();
    }
    upgrade
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| session(rpc, socket, idle.map(|Extension(IdleTimeout(t))| t)))
}

/// Serves one socket until the client closes it, the agent stops, or it is idle for `idle`
/// (never, without one: a listener other than `shoal_serve`'s).
async fn session(rpc: Rpc, mut socket: WebSocket, idle: Option<Duration>) {
    let mut notices = rpc.queue().subscribe();
    let stop = rpc.inner.stop.clone();
    let mut heard = Instant::now();
    let mut pinged = false;
    let mut close = None;
    loop {
        let ping_at = idle.map(|t| heard + t / 2);
        let idle_at = idle.map(|t| heard + t);
        tokio::select! {
            () = stop.cancelled() => break,
            message = socket.recv() => {
                heard = Instant::now();
                pinged = false;
                let body = match message {
                    Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                };
                if let Some(answer) = rpc.answer(&body).await {
                    let answer = Message::Text(answer.to_string().into());
                    if !send(&mut socket, answer, idle).await {
                        break;
                    }
                    heard = Instant::now();
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
                if !send(&mut socket, Message::Text(text.to_string().into()), idle).await {
                    break;
                }
                heard = Instant::now();
            }
            () = at(ping_at), if !pinged => {
                pinged = true;
                if !send(&mut socket, Message::Ping(Default::default()), idle).await {
                    break;
                }
            }
            () = at(idle_at) => {
                close = Some(CloseFrame {
                    code: close_code::AWAY,
                    reason: "idle".into(),
                });
                break;
            }
        }
    }
    let _ = send(&mut socket, Message::Close(close), idle).await;
}

/// Sends `message`; false when the socket is gone, or when the client has not taken it within
/// the idle timeout (it stopped reading).
async fn send(socket: &mut WebSocket, message: Message, idle: Option<Duration>) -> bool {
    match idle {
        Some(idle) => matches!(
            tokio::time::timeout(idle, socket.send(message)).await,
            Ok(Ok(()))
        ),
        None => socket.send(message).await.is_ok(),
    }
}

/// Waits until `when`, or forever without one.
async fn at(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}
