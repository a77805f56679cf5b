//! The routes and their handlers. The table in [`routes!`] is the one list of routes: it builds
//! the router and [`ROUTES`], which a test checks against the OpenAPI document.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use shoal_core::wire::{
    AgentId, AgentList, AgentsQuery, AnnounceRequest, ContentList, ContentQuery,
    CreateSwarmRequest, DigestsQuery, HeartbeatRequest, LatestUrlQuery, LeaseGrant, PeersQuery,
    PublishDigestsRequest, PublishUrlRequest, RegisterRequest, ReportAccepted, ReportRequest,
    SwarmInfo, TakeOverRequest, UrlKey, UrlReportAccepted, UrlReportRequest, MAX_NAME_LEN,
    MAX_REASON_LEN, MAX_SWARM_PIECES,
};
use shoal_core::{hex, Manifest};

use crate::error::ApiError;
use crate::extract::{
    agent_id, content_id, Allow, AnnouncePerm, DigestsBody, JsonBody, ListPerm, QueryParams,
    QueryPerm,
};
use crate::limits::{DEFAULT_LIST, DEFAULT_PEERS, MAX_LIST, MAX_PEERS};
use crate::store::{
    AgentPage, ContentSearch, NewSwarm, PeerQuery, PeerReport, Registration, Reporter, Store,
    StoreError, UrlReport,
};
use crate::urlkey::normalize;
use crate::AppState;

/// Digests ignored in one publish that get a log line each; the rest get one line together.
const LOGGED_IGNORED_DIGESTS: usize = 8;

macro_rules! routes {
    ($($method:ident $path:literal => $handler:ident,)*) => {
        /// Every route as (method, path), in the path syntax OpenAPI also uses.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        pub(crate) fn router<S: Store>() -> Router<AppState<S>> {
            Router::new()$(.route($path, $method($handler::<S>)))*
        }
    };
}

routes! {
    get "/healthz" => healthz,
    get "/metrics" => metrics,
    get "/v1/openapi.json" => openapi,
    get "/v1/agents" => list_agents,
    put "/v1/agents/{id}" => register,
    delete "/v1/agents/{id}" => deregister,
    post "/v1/agents/{id}/heartbeat" => heartbeat,
    post "/v1/agents/{id}/announce" => announce,
    get "/v1/content" => search_content,
    get "/v1/content/{id}" => get_content,
    get "/v1/content/{id}/peers" => peers,
    put "/v1/content/{id}/manifest" => put_manifest,
    get "/v1/content/{id}/manifest" => get_manifest,
    post "/v1/content/{id}/reports" => report,
    post "/v1/urls" => publish_url,
    get "/v1/urls" => lookup_url,
    get "/v1/urls/latest" => latest_url,
    post "/v1/urls/reports" => report_url,
    post "/v1/swarms" => create_swarm,
    get "/v1/swarms/{id}" => get_swarm,
    post "/v1/swarms/{id}/digests" => publish_digests,
    post "/v1/swarms/{id}/leader" => take_over_swarm,
}

/// Liveness only: answers without touching the store, so it costs the same however much the
/// tracker holds and whether or not Redis answers.
async fn healthz<S: Store>(_: State<AppState<S>>) -> &'static str {
    "ok\n"
}

async fn metrics<S: Store>(State(state): State<AppState<S>>) -> Result<Response, ApiError> {
    let stats = state.shared.store.stats().await?;
    let text = state.shared.metrics.render(stats);
    Ok((
        [(header::CONTENT_TYPE, shoal_core::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response())
}

async fn openapi<S: Store>(_: State<AppState<S>>) -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

fn limit(value: Option<u32>, default: u32, max: u32, field: &str) -> Result<usize, ApiError> {
    match value.unwrap_or(default) {
        0 => Err(ApiError::field(
            field,
            format!("{field} must be at least 1"),
        )),
        n if n > max => Err(ApiError::field(
            field,
            format!("{field} must be at most {max}"),
        )),
        n => Ok(n as usize),
    }
}

async fn list_agents<S: Store>(
    State(state): State<AppState<S>>,
    _: Allow<ListPerm>,
    QueryParams(query): QueryParams<AgentsQuery>,
) -> Result<Json<AgentList>, ApiError> {
    let page = AgentPage {
        after: query.after,
        limit: limit(query.limit, DEFAULT_LIST, MAX_LIST, "limit")?,
    };
    let agents = state.shared.store.agents(page).await?;
    Ok(Json(AgentList { agents }))
}

async fn register<S: Store>(
    State(state): State<AppState<S>>,
    allow: Allow<AnnouncePerm>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RegisterRequest>,
) -> Result<Json<LeaseGrant>, ApiError> {
    let id = agent_id(&id)?;
    allow.acts_for(&id, "id")?;
    let reg = Registration {
        id,
        addr: body.addr,
        scheme: body.scheme,
        upload_capacity: body.upload_capacity,
        holdings: body.holdings,
    };
    Ok(Json(
        state.shared.store.register(allow.caller(), reg).await?,
    ))
}

async fn deregister<S: Store>(
    State(state): State<AppState<S>>,
    allow: Allow<AnnouncePerm>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = agent_id(&id)?;
    allow.acts_for(&id, "id")?;
    state.shared.store.deregister(allow.caller(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn heartbeat<S: Store>(
    State(state): State<AppState<S>>,
    allow: Allow<AnnouncePerm>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<HeartbeatRequest>,
) -> Result<Json<LeaseGrant>, ApiError> {
    let id = agent_id(&id)?;
    allow.acts_for(&id, "id")?;
    Ok(Json(
        state
            .shared
            .store
            .heartbeat(allow.caller(), id, body)
            .await?,
    ))
}

async fn announce<S: Store>(
    State(state): State<AppState<S>>,
    allow: Allow<AnnouncePerm>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<AnnounceRequest>,
) -> Result<Json<LeaseGrant>, ApiError> {
    let id = agent_id(&id)?;
    allow.acts_for(&id, "id")?;
    Ok(Json(
        state
            .shared
            .store
            .announce(allow.caller(), id, body)
            .await?,
    ))
}

async fn search_content<S: Store>(
    State(state): State<AppState<S>>,
    _: Allow<ListPerm>,
    QueryParams(query): QueryParams<ContentQuery>,
) -> Result<Json<ContentList>, ApiError> {
    if query.name.as_ref().is_some_and(|n| n.len() > MAX_NAME_LEN) {
        return Err(ApiError::field(
            "name",
            format!("name is over {MAX_NAME_LEN} bytes"),
        ));
    }
    let id_prefix = match query.id {
        Some(prefix) if prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) => {
            return Err(ApiError::field(
                "id",
                "id must be a prefix of a content id: up to 64 hex digits",
            ));
        }
        prefix => prefix.map(|p| p.to_ascii_lowercase()),
    };
    let search = ContentSearch {
        name: query.name,
        id_prefix,
        limit: limit(query.limit, DEFAULT_LIST, MAX_LIST, "limit")?,
    };
    let contents = state.shared.store.search(search).await?;
    Ok(Json(ContentList { contents }))
}

async fn get_content<S: Store>(
    State(state): State<AppState<S>>,
    _: Allow<QueryPerm>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = content_id(&id)?;
    Ok(Json(state.shared.store.content(id).await?).into_response())
}

async fn peers<S: Store>(
    State(state): State<AppState<S>>,
    _: Allow<QueryPerm>,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<PeersQuery>,
) -> Result<Response, ApiError> {
    let id = content_id(&id)?;
    let query = PeerQuery {
        k: limit(query.k, DEFAULT_PEERS, MAX_PEERS, "k")?,
        asker: query.agent,
    };
    Ok(Json(state.shared.store.peers(id, query).await?).into_response())
}

async fn put_manifest<S: Store>(
    State(state): State<AppState<S>>,
    allow: Allow<AnnouncePerm>,
    Path(id): Path<String>,
    DigestsBody(manifest): DigestsBody<Manifest>,
) -> Result<Response, ApiError> {
    let id = content_id(&id)?;
    let actual = manifest.id();
    if actual != id {
        return Err(ApiError::field(
            "id",
            format!("the manifest's BLAKE3 is {actual}, not the content id {id}"),
        ));
    }
    let published = state
        .shared
        .store
        .put_manifest(manifest, allow.principal.name.clone())
        .await?;
    let status = if published.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(published)).into_response())
}

async fn get_manifest<S: Store>(
    State(state): State<AppState<S>>,
    _: Allow<QueryPerm>,
    Path(id): Path<String>,
) -> Result<Json<Manifest>, ApiError> {
    let id = content_id(&id)?;
    Ok(Json(state.shared.store.manifest(id).await?))
}

async fn publish_url<S: Store>(
    State(state): State<AppState<S>>,
    allow: Allow<AnnouncePerm>,
    JsonBody(body): JsonBody<PublishUrlRequest>,
) -> Result<Response, ApiError> {
    let key = normalize(body.key, "key.")?;
    let (mapping, created) = state
        .shared
        .store
        .publish_url(key, body.content, allow.principal.name.clone())
        .await
        .map_err(|e| match e {
            StoreError::NoManifest(_) => ApiError::NotFound {
                field: "content",
                message: e.to_string(),
            },
            e => e.into(),
        })?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(mapping)).into_response())
}

async fn lookup_url<S: Store>(
    State(state): State<AppState<S>>,
    _: Allow<QueryPerm>,
    QueryParams(key): QueryParams<UrlKey>,
) -> Result<Response, ApiError> {
    let key = normalize(key, "")?;
    Ok(Json(state.shared.store.lookup_url(key).await?).into_response())
}

async fn latest_url<S: Store>(
    State(state): State<AppState<S>>,
    _: Allow<QueryPerm>,
    QueryParams(query): QueryParams<LatestUrlQuery>,
) -> Result<Response, ApiError> {
    let key = UrlKey {
        url: query.url,
        size: 0,
        etag: None,
        last_modified: None,
    };
    let key = normalize(key, "")?;
    Ok(Json(state.shared.store.latest_url(key.url).await?).into_response())
}

async fn report<S: Store>(
    State(state): State<AppState<S>>,
    allow: Allow<AnnouncePerm>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReportRequest>,
) -> Result<Response, ApiError> {
    let content = content_id(&id)?;
    if body.reason.len() > MAX_REASON_LEN {
        return Err(ApiError::field(
            "reason",
            format!("reason is over {MAX_REASON_LEN} bytes"),
        ));
    }
    let by = reporter(&allow, body.reporter)?;
    let report = PeerReport {
        content,
        agent: body.agent,
        piece: body.piece,
        by,
    };
    let hidden = state.shared.store.report(report.clone()).await?;
    state.shared.metrics.count_report();
    // The reason is the client's text: logged with escapes, so it cannot forge log lines.
    tracing::warn!(
        token = %allow.principal.name,
        by = ?report.by,
        agent = %report.agent,
        %content,
        piece = report.piece,
        reason = ?body.reason,
        hidden,
        "a peer was reported for a piece that did not match its digest"
    );
    Ok((StatusCode::ACCEPTED, Json(ReportAccepted {})).into_response())
}

/// Who reports: an admin token, or the agent a per-agent token is bound to, or the one a fleet
/// token names.
fn reporter(allow: &Allow<AnnouncePerm>, named: Option<AgentId>) -> Result<Reporter, ApiError> {
    if allow.caller().admin {
        return Ok(Reporter::Admin);
    }
    let reporter = named
        .or_else(|| allow.principal.agent.clone())
        .ok_or_else(|| {
            ApiError::field(
                "reporter",
                "reporter is required with a fleet token: the id of the reporting agent",
            )
        })?;
    allow.acts_for(&reporter, "reporter")?;
    Ok(Reporter::Agent(reporter))
}

async fn report_url<S: Store>(
    State(state): State<AppState<S>>,
    allow: Allow<AnnouncePerm>,
    JsonBody(body): JsonBody<UrlReportRequest>,
) -> Result<Response, ApiError> {
    if body.reason.len() > MAX_REASON_LEN {
        return Err(ApiError::field(
            "reason",
            format!("reason is over {MAX_REASON_LEN} bytes"),
        ));
    }
    let report = UrlReport {
        key: normalize(body.key, "key.")?,
        content: body.content,
        by: reporter(&allow, body.reporter)?,
    };
    let (content, by) = (report.content, report.by.clone());
    let withdrawn = state.shared.store.report_url(report).await?;
    state.shared.metrics.count_report();
    // Not the URL: a signed URL's query carries a credential. The reason is the client's text.
    tracing::warn!(
        token = %allow.principal.name,
        ?by,
        %content,
        piece = body.piece,
        reason = ?body.reason,
        withdrawn,
        "a URL mapping was reported: the origin's bytes do not match its content"
    );
    Ok((StatusCode::ACCEPTED, Json(UrlReportAccepted { withdrawn })).into_response())
}

async fn create_swarm<S: Store>(
    State(state): State<AppState<S>>,
    allow: Allow<AnnouncePerm>,
    JsonBody(body): JsonBody<CreateSwarmRequest>,
) -> Result<Response, ApiError> {
    allow.acts_for(&body.agent, "agent")?;
    let key = normalize(body.key, "key.")?;
    if body.layout.size() != key.size {
        return Err(ApiError::field(
            "layout.size",
            format!(
                "layout.size is {} but key.size is {}",
                body.layout.size(),
                key.size
            ),
        ));
    }
    if body.layout.piece_count() > MAX_SWARM_PIECES {
        return Err(ApiError::field(
            "layout.piece_size",
            format!(
                "a swarm has at most {MAX_SWARM_PIECES} pieces, this layout {}: use a larger piece size",
                body.layout.piece_count()
            ),
        ));
    }
    let swarm = NewSwarm {
        key,
        layout: body.layout,
        leader: body.agent,
    };
    let info = state
        .shared
        .store
        .create_swarm(allow.caller(), swarm)
        .await?;
    let status = if info.created {
        // Not the URL: a signed URL's query carries a credential.
        tracing::debug!(swarm = %info.id, leader = %info.leader, "swarm created");
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info)).into_response())
}

async fn get_swarm<S: Store>(
    State(state): State<AppState<S>>,
    _: Allow<QueryPerm>,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<DigestsQuery>,
) -> Result<Json<SwarmInfo>, ApiError> {
    let id = content_id(&id)?;
    Ok(Json(digests_from(
        state.shared.store.swarm(id).await?,
        query,
    )))
}

/// `swarm` with only the digests `query` asks for: followers poll several times a second
/// and the leader publishes as often, so an answer carrying every digest known would grow
/// with the swarm's progress, each time.
fn digests_from(mut swarm: SwarmInfo, query: DigestsQuery) -> SwarmInfo {
    if let Some(from) = query.digests_from {
        swarm.digests = swarm.digests.since(from);
    }
    swarm
}

async fn take_over_swarm<S: Store>(
    State(state): State<AppState<S>>,
    allow: Allow<AnnouncePerm>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<TakeOverRequest>,
) -> Result<Json<SwarmInfo>, ApiError> {
    let id = content_id(&id)?;
    let info = state
        .shared
        .store
        .take_over_swarm(allow.caller(), id, body.agent)
        .await?;
    tracing::info!(swarm = %id, leader = %info.leader, "a member took over the swarm's lead");
    Ok(Json(info))
}

async fn publish_digests<S: Store>(
    State(state): State<AppState<S>>,
    allow: Allow<AnnouncePerm>,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<DigestsQuery>,
    DigestsBody(body): DigestsBody<PublishDigestsRequest>,
) -> Result<Json<SwarmInfo>, ApiError> {
    let id = content_id(&id)?;
    let digests = body
        .pieces
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            hex::decode_array::<32>(&entry.digest)
                .map(|digest| (entry.index, digest))
                .ok_or_else(|| {
                    ApiError::field(
                        format!("pieces[{i}].digest"),
                        "a digest is 64 hex digits: the BLAKE3 of the piece",
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let published = state
        .shared
        .store
        .publish_digests(allow.caller(), id, digests)
        .await?;
    // A leader that publishes another digest for a piece fetched a different file (the origin
    // changed it, or the leader is broken): the first digest stays, so followers stay
    // consistent, and the log says which pieces disagreed.
    for &index in published.ignored.iter().take(LOGGED_IGNORED_DIGESTS) {
        tracing::warn!(
            swarm = %id,
            index,
            token = %allow.principal.name,
            "ignored a digest that differs from the one published first"
        );
    }
    if published.ignored.len() > LOGGED_IGNORED_DIGESTS {
        tracing::warn!(
            swarm = %id,
            more = published.ignored.len() - LOGGED_IGNORED_DIGESTS,
            token = %allow.principal.name,
            "ignored more digests that differ from the ones published first"
        );
    }
    Ok(Json(digests_from(published.swarm, query)))
}
