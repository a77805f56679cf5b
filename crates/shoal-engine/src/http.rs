//! HTTP as a source of bytes: the client, the probe, range requests, and how every answer is
//! checked before a byte of it is written.

use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{redirect, Response, StatusCode};
use shoal_core::{ByteRange, SafeUrl};
use thiserror::Error;
use url::Url;

use crate::options::{HttpOptions, MAX_SIZE};

mod client;

pub(crate) use client::HttpClient;

/// Redirects followed before giving up, as curl and browsers do.
const MAX_REDIRECTS: usize = 10;

/// Why a request did not give us bytes we can use. Its text is one line with every cause;
/// the transport's own error stays reachable as [`std::error::Error::source`].
#[derive(Debug, Clone, Error)]
pub enum FetchError {
    /// The server answered with a status we do not retry (404, 401, …) or ran out of retries.
    #[error("server answered {status}")]
    Status {
        /// The status the server answered.
        status: StatusCode,
        /// The server's `Retry-After` in seconds (capped at an hour); `None` when absent or an HTTP
        /// date.
        retry_after: Option<Duration>,
    },
    /// No connection could be made (refused, unreachable).
    #[error("could not connect{cause}")]
    Connect {
        /// The transport's error, credentials redacted from its URL.
        #[source]
        cause: Cause,
    },
    /// The server's certificate is not signed by a CA this client trusts.
    #[error(
        "the server's certificate is not signed by a trusted CA{cause}; pass --ca FILE with \
         the CA that signed it"
    )]
    Untrusted {
        /// The transport's error, credentials redacted from its URL.
        #[source]
        cause: Cause,
    },
    /// The connection failed: reset, timed out, cut short.
    #[error("{what}{cause}")]
    Transport {
        /// Which kind of failure, for the message.
        what: TransportFailure,
        /// The transport's error, credentials redacted from its URL.
        #[source]
        cause: Cause,
    },
    /// The connection ended before the range it was answering.
    #[error("{0}")]
    CutShort(String),
    /// The server answered, but not with what was asked (wrong `Content-Range`, …).
    #[error("{0}")]
    Protocol(String),
    /// No source could serve what is missing (a swarm's peers and origin), said how.
    #[error("{0}")]
    Unserved(String),
    /// The file on the server is not the one the download started with: `If-Range` failed.
    #[error("the file changed on the server")]
    Changed,
    /// No bytes arrived for the stall timeout.
    #[error("no data arrived for the stall timeout")]
    Stalled,
    /// The redirects went on past [`MAX_REDIRECTS`].
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
}

/// What a transport failure was, in the words of its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFailure {
    TimedOut,
    BrokeWhileReceiving,
    RequestFailed,
    Setup,
}

impl fmt::Display for TransportFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportFailure::TimedOut => f.write_str("timed out"),
            TransportFailure::BrokeWhileReceiving => {
                f.write_str("connection broke while receiving data")
            }
            TransportFailure::RequestFailed => f.write_str("request failed"),
            TransportFailure::Setup => f.write_str("cannot set up HTTP"),
        }
    }
}

/// The transport error under a [`FetchError`], without its URL (messages name the URL
/// themselves, redacted). It shows as `: ` and the text of each of its causes, so the
/// failure's message carries the whole chain on one line.
#[derive(Debug, Clone)]
pub struct Cause(Arc<reqwest::Error>);

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = String::new();
        shoal_core::chain::append_causes(&mut shown, self.0.source());
        f.write_str(&shown)
    }
}

impl Cause {
    /// The HTTP client's own error.
    pub fn reqwest(&self) -> &reqwest::Error {
        &self.0
    }
}

/// Its sources are those of the client's error: the client's own text ("error sending
/// request") says nothing the message does not, so a chain printer skips straight to them.
impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl FetchError {
    /// Errors that another try cannot fix.
    pub fn is_fatal(&self) -> bool {
        match self {
            FetchError::Status { status, .. } => {
                status.is_client_error()
                    && *status != StatusCode::TOO_MANY_REQUESTS
                    && *status != StatusCode::REQUEST_TIMEOUT
            }
            FetchError::Changed | FetchError::Untrusted { .. } => true,
            _ => false,
        }
    }

    /// The failure of a server that is down or overloaded for now (refused, reset, cut short,
    /// silent, answering 5xx, 408 or 429), which asking again later may cure; not one that
    /// asking again cannot (4xx, another file, a broken protocol).
    pub fn is_outage(&self) -> bool {
        match self {
            FetchError::Connect { .. }
            | FetchError::Transport { .. }
            | FetchError::CutShort(_)
            | FetchError::Stalled => true,
            FetchError::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
            FetchError::Protocol(_)
            | FetchError::Untrusted { .. }
            | FetchError::Unserved(_)
            | FetchError::Changed
            | FetchError::TooManyRedirects => false,
        }
    }

    /// The server asked us to slow down: fewer connections, and wait this long.
    pub fn slow_down(&self) -> Option<Option<Duration>> {
        match self {
            FetchError::Status {
                status: StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE,
                retry_after,
            } => Some(*retry_after),
            _ => None,
        }
    }

    /// The message with every cause, for events and logs.
    pub fn describe(&self) -> String {
        self.to_string()
    }
}

/// Classifies a transport error, keeping it (without the URL) as the cause.
pub(crate) fn transport_error(error: reqwest::Error) -> FetchError {
    let what = if error.is_connect() {
        None
    } else if error.is_timeout() {
        Some(TransportFailure::TimedOut)
    } else if error.is_body() || error.is_decode() {
        Some(TransportFailure::BrokeWhileReceiving)
    } else {
        Some(TransportFailure::RequestFailed)
    };
    let untrusted = crate::ca::is_untrusted_certificate(&error);
    let cause = Cause(Arc::new(error.without_url()));
    if untrusted {
        return FetchError::Untrusted { cause };
    }
    match what {
        None => FetchError::Connect { cause },
        Some(what) => FetchError::Transport { what, cause },
    }
}

/// One client per download: HTTP/1.1 only, so each concurrent request is its own TCP
/// connection (HTTP/2 streams share one connection and add no bandwidth). Redirects are
/// followed by [`HttpClient`], which decides where credentials go.
pub(crate) fn client(options: &HttpOptions) -> Result<HttpClient, FetchError> {
    let mut headers = options.headers.clone();
    let sensitive = HttpClient::split_sensitive(&mut headers);
    let client = crate::ca::client_builder(options.ca.as_ref())
        .http1_only()
        .redirect(redirect::Policy::none())
        .user_agent(options.user_agent.clone())
        .default_headers(headers)
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .tls_danger_accept_invalid_certs(options.insecure)
        .build()
        .map_err(|e| FetchError::Transport {
            what: TransportFailure::Setup,
            cause: Cause(Arc::new(e)),
        })?;
    Ok(HttpClient::new(client, sensitive, options.location_trusted))
}

/// What the probe learned about the file.
#[derive(Debug)]
pub(crate) struct Probe {
    /// The client, with the probed URL's credentials: for every later request of its file.
    pub client: HttpClient,
    /// The response, still streaming: it becomes the first segment (or the only stream).
    pub response: Response,
    /// The offset of the response's first byte: where a `206` starts, 0 for a `200`.
    pub start: u64,
    /// Where the redirects ended, without credentials.
    pub url: Url,
    pub size: Option<u64>,
    /// `206` with a usable `Content-Range`: other connections may ask for ranges.
    pub ranges: bool,
    /// The value to send as `If-Range`: a strong `ETag`, else `Last-Modified`.
    pub validator: Option<String>,
    /// The raw validators, recorded in the resume state and compared on the next run.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub content_disposition: Option<String>,
}

/// Asks for the whole file as a range (`Range: bytes=0-`), so one request both learns the size
/// and range support and starts streaming.
///
/// A download that continues a previous run asks from `from`, its first missing byte, so the
/// response is the first segment it still needs (servers such as nginx send a second's worth
/// at once, which a probe from byte 0 would waste). The probe carries no `If-Range`: a changed
/// file would answer `200`, which reads as a server without ranges. Instead its own `ETag` and
/// `Last-Modified` are compared with the resume state's before any of its bytes are used.
pub(crate) async fn probe(client: &HttpClient, url: &Url, from: u64) -> Result<Probe, FetchError> {
    let client = client.owned_by(url);
    let ask = |from: u64| client.get(url, range_headers(&format!("bytes={from}-")));
    let mut response = ask(from).await?;
    let mut from = from;
    if from > 0 && response.status() == StatusCode::RANGE_NOT_SATISFIABLE {
        // The file is now shorter than where the previous run stopped: probe it whole.
        from = 0;
        response = ask(0).await?;
    }
    let status = response.status();
    let final_url = response.url().clone();
    let headers = response.headers();
    let validator = validator(headers);
    let etag = header_str(headers, header::ETAG);
    let last_modified = header_str(headers, header::LAST_MODIFIED);
    let content_disposition = header_str(headers, header::CONTENT_DISPOSITION);
    let (size, ranges) = match status {
        StatusCode::PARTIAL_CONTENT => match content_range(headers) {
            Some((start, _, Some(total))) if start == from => (Some(total), true),
            _ => (None, false),
        },
        StatusCode::OK => (response.content_length(), false),
        StatusCode::RANGE_NOT_SATISFIABLE => match content_range_total(headers) {
            // `bytes */0`: an empty file cannot satisfy any range.
            Some(0) => (Some(0), false),
            _ => return Err(status_error(&response)),
        },
        _ => return Err(status_error(&response)),
    };
    if let Some(size) = size.filter(|&s| s > MAX_SIZE) {
        return Err(too_large(size));
    }
    let partial_without_range = status == StatusCode::PARTIAL_CONTENT && !ranges;
    if partial_without_range {
        return Err(FetchError::Protocol(format!(
            "answered 206 without a usable Content-Range ({:?})",
            header_str(headers, header::CONTENT_RANGE)
        )));
    }
    Ok(Probe {
        client,
        start: if ranges { from } else { 0 },
        response,
        url: final_url,
        size,
        ranges,
        validator,
        etag,
        last_modified,
        content_disposition,
    })
}

/// What identifies the version of a file a URL serves now, learned from a one-byte range
/// request (no `HEAD`: many servers answer it wrongly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlVersion {
    /// Where the redirects ended, without credentials.
    pub url: Url,
    /// The file's length in bytes, from the `206`'s `Content-Range` total.
    pub size: u64,
    /// The `ETag` as sent (quotes included); `None` when the server sent none.
    pub etag: Option<String>,
    /// The `Last-Modified` as sent; `None` when the server sent none.
    pub last_modified: Option<String>,
    /// The value to send as `If-Range`: a strong `ETag`, else `Last-Modified`.
    pub validator: Option<String>,
}

/// Asks for byte 0 only: a `206` gives the size and validators. A server without ranges, or
/// one that does not say the size, has no version a swarm can share.
pub(crate) async fn version(client: &HttpClient, url: &Url) -> Result<UrlVersion, FetchError> {
    let response = client
        .owned_by(url)
        .get(url, range_headers("bytes=0-0"))
        .await?;
    let headers = response.headers();
    let size = match response.status() {
        StatusCode::PARTIAL_CONTENT => match content_range(headers) {
            Some((0, 0, Some(total))) => total,
            _ => {
                return Err(FetchError::Protocol(format!(
                    "answered 206 without a usable Content-Range ({:?})",
                    header_str(headers, header::CONTENT_RANGE)
                )))
            }
        },
        StatusCode::RANGE_NOT_SATISFIABLE if content_range_total(headers) == Some(0) => 0,
        StatusCode::OK => {
            return Err(FetchError::Protocol(
                "does not answer range requests, so its file cannot be shared by a swarm".into(),
            ))
        }
        _ => return Err(status_error(&response)),
    };
    if size > MAX_SIZE {
        return Err(too_large(size));
    }
    Ok(UrlVersion {
        url: response.url().clone(),
        size,
        etag: header_str(headers, header::ETAG),
        last_modified: header_str(headers, header::LAST_MODIFIED),
        validator: validator(headers),
    })
}

/// `Accept-Encoding: identity`: a compressed answer would have other offsets and length.
pub(crate) fn identity() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    headers
}

/// `Range: range`, uncompressed.
fn range_headers(range: &str) -> HeaderMap {
    let mut headers = identity();
    if let Ok(value) = HeaderValue::from_str(range) {
        headers.insert(header::RANGE, value);
    }
    headers
}

fn too_large(size: u64) -> FetchError {
    FetchError::Protocol(format!(
        "says the file is {size} bytes, more than the {MAX_SIZE} (256 TiB) shoal can download"
    ))
}

fn status_error(response: &Response) -> FetchError {
    FetchError::Status {
        status: response.status(),
        retry_after: retry_after(response.headers()),
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn validator(headers: &HeaderMap) -> Option<String> {
    header_str(headers, header::ETAG)
        .filter(|etag| !etag.starts_with("W/"))
        .or_else(|| header_str(headers, header::LAST_MODIFIED))
}

/// `Retry-After` in seconds (the HTTP-date form is rare for downloads and falls back to the
/// normal backoff).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    header_str(headers, header::RETRY_AFTER)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs.min(3600)))
}

/// `bytes a-b/total` → `(a, b inclusive, Some(total))`; `total` is `None` for `*`.
fn content_range(headers: &HeaderMap) -> Option<(u64, u64, Option<u64>)> {
    let value = header_str(headers, header::CONTENT_RANGE)?;
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (a <= b && total.is_none_or(|t| b < t)).then_some((a, b, total))
}

fn content_range_total(headers: &HeaderMap) -> Option<u64> {
    let value = header_str(headers, header::CONTENT_RANGE)?;
    value.trim().strip_prefix("bytes */")?.trim().parse().ok()
}

/// A server that answers range requests for one version of one file.
#[derive(Debug, Clone)]
pub(crate) struct RangeSource {
    /// Owned by the URL the user named, which `url` may have been redirected from.
    pub client: HttpClient,
    pub url: SafeUrl,
    pub size: u64,
    pub validator: Option<String>,
}

impl RangeSource {
    /// Asks for exactly `range`, and accepts the answer only if it is a `206` for that exact
    /// range of a file of the same size.
    pub(crate) async fn fetch(&self, range: ByteRange) -> Result<Response, FetchError> {
        let mut headers = range_headers(&range.http_header());
        if let Some(v) = &self.validator {
            if let Ok(value) = HeaderValue::from_str(v) {
                headers.insert(header::IF_RANGE, value);
            }
        }
        let response = self.client.get(self.url.as_url(), headers).await?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::OK
                if self.validator.is_some()
                    && validator(response.headers()).as_ref() != self.validator.as_ref() =>
            {
                return Err(FetchError::Changed)
            }
            StatusCode::OK => {
                return Err(FetchError::Protocol(
                    "answered 200 (the whole file) to a range request".to_string(),
                ))
            }
            _ => return Err(status_error(&response)),
        }
        let expected = (range.start(), range.end() - 1, Some(self.size));
        match content_range(response.headers()) {
            Some(got) if got == expected => Ok(response),
            _ => Err(FetchError::Protocol(format!(
                "asked for {}, got Content-Range {:?}",
                range.http_header(),
                header_str(response.headers(), header::CONTENT_RANGE)
            ))),
        }
    }

    pub(crate) fn shown_url(&self) -> SafeUrl {
        self.url.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn parses_content_range() {
        let h = headers(&[("content-range", "bytes 0-99/100")]);
        assert_eq!(content_range(&h), Some((0, 99, Some(100))));
        let h = headers(&[("content-range", "bytes 5-9/*")]);
        assert_eq!(content_range(&h), Some((5, 9, None)));
        for bad in [
            "bytes 9-5/100",
            "bytes 0-100/100",
            "items 0-1/2",
            "bytes x-1/2",
        ] {
            assert_eq!(
                content_range(&headers(&[("content-range", bad)])),
                None,
                "{bad}"
            );
        }
        let h = headers(&[("content-range", "bytes */0")]);
        assert_eq!(content_range_total(&h), Some(0));
    }

    #[test]
    fn weak_etags_are_not_validators() {
        let h = headers(&[
            ("etag", "W/\"x\""),
            ("last-modified", "Tue, 01 Jan 2030 00:00:00 GMT"),
        ]);
        assert_eq!(
            validator(&h).as_deref(),
            Some("Tue, 01 Jan 2030 00:00:00 GMT")
        );
        let h = headers(&[("etag", "\"abc\"")]);
        assert_eq!(validator(&h).as_deref(), Some("\"abc\""));
    }

    #[test]
    fn fatal_and_retryable_statuses() {
        let status = |s: u16| FetchError::Status {
            status: StatusCode::from_u16(s).unwrap(),
            retry_after: None,
        };
        for s in [401, 403, 404, 410] {
            assert!(status(s).is_fatal(), "{s}");
        }
        for s in [429, 500, 502, 503] {
            assert!(!status(s).is_fatal(), "{s}");
        }
        assert!(status(503).slow_down().is_some());
        assert!(status(500).slow_down().is_none());
    }
}
