//! [`ApiError`]: everything a request can fail with, and the HTTP answer for each: a status
//! and a JSON [`ErrorBody`] naming the field at fault.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use shoal_core::wire::ErrorBody;
use thiserror::Error;

use crate::auth::{Action, Role};
use crate::store::StoreError;

/// Everything a request can fail with; [`ApiError::status`] gives the HTTP status, and the answer's
/// body is an [`ErrorBody`] with this error's message.
#[derive(Debug, Error)]
pub enum ApiError {
    /// No `Authorization: Bearer` header: `401`.
    #[error("missing bearer token: send `Authorization: Bearer <secret>`")]
    NoToken,
    /// The bearer secret matches no token in the tokens file: `401`.
    #[error("unknown token")]
    BadToken,
    /// The token's role may not do what the route does: `403`.
    #[error("role {role} may not {action}")]
    Forbidden {
        /// The role of the token the request used.
        role: Role,
        /// What the route does.
        action: Action,
    },
    /// The body is larger than the route allows: `413`.
    #[error("request body is over the limit of {limit} bytes")]
    TooLarge {
        /// The route's body limit in bytes (`TrackerOptions::body_limit` or `manifest_body_limit`).
        limit: usize,
    },
    /// A field or query parameter is invalid: `400`.
    #[error("{message}")]
    BadRequest {
        /// The field at fault as a path (`holdings[2].pieces`); `None` when the body as a whole is
        /// wrong (not JSON).
        field: Option<String>,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The token is over its rate limit: `429` with `Retry-After`.
    #[error("too many requests for this token; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until the token may send another request.
        retry_after_secs: u64,
    },
    /// A content or other object the request names does not exist: `404`.
    #[error("{message}")]
    NotFound {
        /// The request field naming it.
        field: &'static str,
        /// What is missing and what to do first (publish the manifest, …).
        message: String,
    },
    /// No route matches the path: `404`.
    #[error("no such route")]
    NoRoute,
    /// The route exists but not with this method: `405`.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The store refused or failed; the status depends on the [`StoreError`].
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    /// A `400` naming `field` (a path such as `key.url`), with a message saying what is wrong.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadRequest {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NoToken | ApiError::BadToken => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound { .. } | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Store(e) => match e {
                StoreError::UnknownAgent(_)
                | StoreError::UnknownContent(_)
                | StoreError::NoManifest(_)
                | StoreError::UnknownUrl
                | StoreError::UnknownSwarm(_)
                | StoreError::NotHeld { .. } => StatusCode::NOT_FOUND,
                StoreError::NotOwner(_) | StoreError::NotPublisher(_) => StatusCode::FORBIDDEN,
                StoreError::SwarmLayout { .. }
                | StoreError::IdInUse { .. }
                | StoreError::LeaderLive { .. } => StatusCode::CONFLICT,
                StoreError::TooManyHoldings { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                StoreError::Invalid { .. } => StatusCode::BAD_REQUEST,
                StoreError::Backend(_) => StatusCode::INTERNAL_SERVER_ERROR,
                StoreError::Unavailable { .. } | StoreError::TooManySwarms { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            },
        }
    }

    fn field_name(&self) -> Option<String> {
        match self {
            ApiError::BadRequest { field, .. } => field.clone(),
            ApiError::NotFound { field, .. } => Some(field.to_string()),
            ApiError::Store(e) => match e {
                StoreError::UnknownAgent(_)
                | StoreError::NotOwner(_)
                | StoreError::IdInUse { .. }
                | StoreError::UnknownSwarm(_)
                | StoreError::NotPublisher(_) => Some("id".into()),
                StoreError::SwarmLayout { .. } => Some("layout".into()),
                StoreError::LeaderLive { .. } => Some("leader".into()),
                StoreError::TooManyHoldings { .. } => Some("holdings".into()),
                StoreError::NotHeld { field, .. } | StoreError::Invalid { field, .. } => {
                    Some(field.clone())
                }
                _ => None,
            },
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if matches!(self, ApiError::Store(StoreError::TooManySwarms { .. })) {
            // A full table under load, not a fault: worth seeing, not worth an error per request.
            tracing::warn!(error = %self, "refused a new swarm");
        } else if status.is_server_error() {
            // The cause chain goes to the log only; clients get the short message.
            tracing::error!(error = ?self, "request failed");
        }
        let body = ErrorBody {
            error: self.to_string(),
            field: self.field_name(),
        };
        let mut response = (status, Json(body)).into_response();
        match self {
            ApiError::NoToken | ApiError::BadToken => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited { retry_after_secs } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            _ => {}
        }
        response
    }
}
