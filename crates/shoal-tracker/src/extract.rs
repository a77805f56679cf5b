//! Request decoding: the bearer-token check, JSON bodies with a size limit, query strings and
//! path ids. Every failure becomes an [`ApiError`] naming the field at fault, so a client
//! learns what to fix.

use std::marker::PhantomData;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH};
use axum::http::request::Parts;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use shoal_core::bearer::{self, BearerError};
use shoal_core::wire::AgentId;
use shoal_core::ContentId;

use crate::auth::{Action, Principal};
use crate::error::ApiError;
use crate::store::{Caller, Store};
use crate::AppState;

/// The role check an [`Allow`] makes.
pub trait Permission {
    /// The action the route does; [`Role::allows`](crate::auth::Role::allows) decides whether the
    /// token's role may.
    const ACTION: Action;
}

/// Routes that change an agent's state or publish: register, heartbeat, announce, manifests, URL
/// mappings, swarms, reports.
pub struct AnnouncePerm;
/// Routes that look one thing up: peers, a manifest, a URL mapping, a swarm, one content.
pub struct QueryPerm;
/// Routes that list or search contents and agents.
pub struct ListPerm;

impl Permission for AnnouncePerm {
    const ACTION: Action = Action::Announce;
}
impl Permission for QueryPerm {
    const ACTION: Action = Action::Query;
}
impl Permission for ListPerm {
    const ACTION: Action = Action::List;
}

/// A request whose bearer token is valid, within its rate limit, and whose role allows `P`.
pub struct Allow<P> {
    /// The token the request authenticated with.
    pub principal: Principal,
    permission: PhantomData<P>,
}

impl<P> Allow<P> {
    /// The caller as the store sees it: the token's name and whether it is an admin, for ownership
    /// checks.
    pub fn caller(&self) -> Caller {
        Caller {
            token: self.principal.name.clone(),
            admin: self.principal.role == crate::auth::Role::Admin,
        }
    }

    /// Checks that this token may act for agent `id`, named by the request's `field` (see
    /// [`Principal::may_act_for`]).
    pub fn acts_for(&self, id: &AgentId, field: &'static str) -> Result<(), ApiError> {
        match &self.principal.agent {
            Some(bound) if bound != id => Err(ApiError::WrongAgent {
                field,
                token: self.principal.name.to_string(),
                bound: bound.clone(),
                asked: id.clone(),
            }),
            _ => Ok(()),
        }
    }
}

impl<S: Store, P: Permission> FromRequestParts<AppState<S>> for Allow<P> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<S>,
    ) -> Result<Self, Self::Rejection> {
        let principal = authenticate(parts, state)?;
        tracing::Span::current().record("token", &*principal.name);
        if let Err(retry_after_secs) = state.shared.limiter.check(&principal.name) {
            return Err(ApiError::RateLimited { retry_after_secs });
        }
        if !principal.role.allows(P::ACTION) {
            return Err(ApiError::Forbidden {
                role: principal.role,
                action: P::ACTION,
            });
        }
        Ok(Self {
            principal,
            permission: PhantomData,
        })
    }
}

fn authenticate<S: Store>(parts: &Parts, state: &AppState<S>) -> Result<Principal, ApiError> {
    let value = parts.headers.get(AUTHORIZATION).ok_or(ApiError::NoToken)?;
    let secret = bearer::parse(value.as_bytes()).map_err(|e| match e {
        BearerError::NotBearer => ApiError::NoToken,
        BearerError::Malformed => ApiError::BadToken,
    })?;
    state
        .shared
        .tokens
        .authenticate(secret)
        .cloned()
        .ok_or(ApiError::BadToken)
}

async fn read_body(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    // Refuse early when the client says up front that the body is too large.
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge { limit });
    }
    let body: Body = request.into_body();
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ApiError::TooLarge { limit }),
        Err(e) => Err(ApiError::BadRequest {
            field: None,
            message: format!("could not read the request body: {e}"),
        }),
    }
}

/// Decodes JSON, naming the path of the first bad field (e.g. `holdings[2].pieces`).
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::BadRequest {
            field: (path != ".").then_some(path),
            message: e.into_inner().to_string(),
        }
    })?;
    de.end().map_err(|e| ApiError::BadRequest {
        field: None,
        message: e.to_string(),
    })?;
    Ok(value)
}

/// Decodes a query string the same way, naming the bad parameter.
pub fn decode_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::BadRequest {
            field: (path != ".").then_some(path),
            message: e.into_inner().to_string(),
        }
    })
}

/// A JSON body of at most `TrackerOptions::body_limit` bytes.
pub struct JsonBody<T>(pub T);

impl<S: Store, T: DeserializeOwned> FromRequest<AppState<S>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState<S>) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request, state.shared.options.body_limit).await?;
        decode_json(&bytes).map(JsonBody)
    }
}

/// A JSON body of at most `TrackerOptions::manifest_body_limit` bytes: bodies of piece
/// digests (a manifest, a swarm's digests) carry 64 hex digits per piece of large files.
pub struct DigestsBody<T>(pub T);

impl<S: Store, T: DeserializeOwned> FromRequest<AppState<S>> for DigestsBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState<S>) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request, state.shared.options.manifest_body_limit).await?;
        decode_json(&bytes).map(DigestsBody)
    }
}

/// A query string decoded into `T`.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        decode_query(parts.uri.query().unwrap_or("")).map(QueryParams)
    }
}

/// Parses a content id from a path segment; a `400` on field `id` when it is not 64 hex digits.
pub fn content_id(text: &str) -> Result<ContentId, ApiError> {
    text.parse()
        .map_err(|e: shoal_core::content::ContentIdError| ApiError::field("id", e.to_string()))
}

/// Parses an agent id from a path segment; a `400` on field `id` when it is not a valid agent id.
pub fn agent_id(text: &str) -> Result<AgentId, ApiError> {
    AgentId::new(text).map_err(|e| ApiError::field("id", e.to_string()))
}
