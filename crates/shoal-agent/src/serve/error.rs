//! Every way a piece request fails, and the answer each gets.

use std::io;
use std::path::PathBuf;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use shoal_core::content::ContentIdError;
use shoal_core::wire::ErrorBody;
use shoal_core::ContentId;
use thiserror::Error;

/// Every way a piece request fails, and its answer (see the table in the piece server's docs).
#[derive(Debug, Error)]
pub(crate) enum ServeError {
    #[error("missing bearer token: send `Authorization: Bearer <secret>`")]
    NoToken,
    #[error("unknown token")]
    BadToken,
    #[error(transparent)]
    ContentId(#[from] ContentIdError),
    #[error("the content id in the path is not valid percent-encoded UTF-8")]
    PathEncoding,
    #[error("content {0} is not held here")]
    Unknown(ContentId),
    #[error("malformed query: `after` is a number of pieces")]
    BadQuery,
    #[error(
        "malformed Range header: send one of `bytes=first-last`, `bytes=first-` or \
         `bytes=-suffix`"
    )]
    BadRange,
    #[error("the range is outside the content's {size} bytes")]
    Unsatisfiable { size: u64 },
    #[error("only one range per request is served: send each range as its own request")]
    MultipleRanges { size: u64 },
    #[error("the range touches {pieces} not verified here yet: ask for announced pieces only")]
    NotHeld { size: u64, pieces: String },
    #[error("only some pieces of this content are held here: ask for a range of announced pieces")]
    Incomplete { size: u64 },
    #[error("all {limit} upload slots are busy: retry shortly or ask another peer")]
    Busy { limit: usize },
    #[error("more than {rate} peer exchange requests a second: retry shortly")]
    TooManyRequests { rate: u64 },
    #[error("the piece server is stopping")]
    Stopping,
    #[error("content {id} cannot be read here")]
    Unreadable {
        id: ContentId,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        use ServeError::*;
        let (status, field) = match &self {
            NoToken => (StatusCode::UNAUTHORIZED, None),
            BadToken => (StatusCode::FORBIDDEN, None),
            ContentId(_) | PathEncoding => (StatusCode::BAD_REQUEST, Some("content_id")),
            Unknown(_) => (StatusCode::NOT_FOUND, Some("content_id")),
            BadRange => (StatusCode::BAD_REQUEST, Some("range")),
            BadQuery => (StatusCode::BAD_REQUEST, Some("after")),
            Unsatisfiable { .. } | MultipleRanges { .. } | NotHeld { .. } | Incomplete { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, Some("range"))
            }
            Busy { .. } | Stopping => (StatusCode::SERVICE_UNAVAILABLE, None),
            TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, None),
            Unreadable { .. } => (StatusCode::INTERNAL_SERVER_ERROR, None),
        };
        if let Unreadable { id, path, source } = &self {
            // The path and cause go to the log only: peers learn nothing of the file system.
            tracing::warn!(
                content = %id,
                path = %path.display(),
                error = %source,
                "cannot read a content's file"
            );
        }
        let body = ErrorBody {
            error: self.to_string(),
            field: field.map(String::from),
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            NoToken => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Unsatisfiable { size }
            | MultipleRanges { size }
            | NotHeld { size, .. }
            | Incomplete { size } => {
                let value = HeaderValue::try_from(format!("bytes */{size}"))
                    .expect("digits are a valid header value");
                headers.insert(header::CONTENT_RANGE, value);
            }
            Busy { .. } | Stopping | TooManyRequests { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}
