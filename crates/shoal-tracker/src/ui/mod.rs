//! The tracker's page for fleet operators, at `/ui`: agents, contents with a piece-availability
//! bar, and running URL swarms, kept current by one event stream.
//!
//! The page is static (built in, from [`shoal_web`]); the data comes from `/ui/events`, a
//! `text/event-stream` that sends one `view` event (JSON: [`view::View`]) a second for the page
//! the reader is on (offsets and a name filter in the query). The page reads it with `fetch`,
//! not `EventSource`, because only `fetch` can send the token as an `Authorization` header:
//! a token in the URL would reach access logs. Opening the stream is one request, checked
//! like the API's list routes: a reader or admin token, within its rate limit.
//!
//! Pages are bounded (at most [`view::PAGE`] agents and contents, [`view::SWARMS`] swarms), so
//! a tick costs the same with 10,000 contents as with 10, and the browser draws ~100 rows.

mod view;

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use shoal_core::wire::MAX_NAME_LEN;
use shoal_web::Asset;

use crate::error::ApiError;
use crate::extract::{Allow, ListPerm, QueryParams};
use crate::store::Store;
use crate::AppState;

/// How often the stream sends the page's data.
pub const TICK: Duration = Duration::from_secs(1);

const PAGE: Asset = Asset::html(include_str!("tracker.html"));
const SCRIPT: Asset = Asset::js(include_str!("tracker.js"));
const STYLE: Asset = Asset::css(include_str!("tracker.css"));

/// The page's routes, under `/ui`.
pub(crate) fn router<S: Store>() -> Router<AppState<S>> {
    shoal_web::page_routes("tracker", PAGE, SCRIPT, STYLE).route("/ui/events", get(events::<S>))
}

/// Which page of each list the reader is on.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ViewQuery {
    /// Agents before the first shown, in id order.
    #[serde(default)]
    agents: usize,
    /// Contents before the first shown, in name order.
    #[serde(default)]
    contents: usize,
    /// Only contents whose name contains this, case-insensitively.
    #[serde(default)]
    name: Option<String>,
}

async fn events<S: Store>(
    State(state): State<AppState<S>>,
    _: Allow<ListPerm>,
    QueryParams(query): QueryParams<ViewQuery>,
) -> Result<Response, ApiError> {
    if query.name.as_ref().is_some_and(|n| n.len() > MAX_NAME_LEN) {
        return Err(ApiError::field(
            "name",
            format!("name is over {MAX_NAME_LEN} bytes"),
        ));
    }
    for (field, offset) in [("agents", query.agents), ("contents", query.contents)] {
        if offset > view::MAX_OFFSET {
            return Err(ApiError::field(
                field,
                format!("{field} must be at most {}", view::MAX_OFFSET),
            ));
        }
    }
    let mut response = Sse::new(ticks(state, query))
        .keep_alive(KeepAlive::default())
        .into_response();
    let headers = response.headers_mut();
    shoal_web::secure(headers);
    // Tells a proxy in front of the tracker (nginx) to pass each event on as it comes.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// One `view` event now and every [`TICK`], until the client goes or the tracker stops.
fn ticks<S: Store>(
    state: AppState<S>,
    query: ViewQuery,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let closing = state.shared.closing.subscribe();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    stream::unfold(
        (state, query, tick, closing),
        |(state, query, mut tick, mut closing)| async move {
            tokio::select! {
                _ = tick.tick() => {}
                _ = closing.changed() => return None,
            }
            let event = match view::View::build(&state.shared.store, &query).await {
                Ok(view) => Event::default()
                    .event("view")
                    .json_data(view)
                    .unwrap_or_else(|e| failed(&e)),
                Err(e) => {
                    tracing::warn!(error = ?e, "building the page's view failed");
                    failed(&e)
                }
            };
            Some((Ok(event), (state, query, tick, closing)))
        },
    )
}

fn failed(error: &dyn std::error::Error) -> Event {
    Event::default().event("failed").data(error.to_string())
}
