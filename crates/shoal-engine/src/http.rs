//! HTTP as a source of bytes: the client, the probe, range requests, and how every answer is
//! checked before a byte of it is written.

use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{redirect, Client, Response, StatusCode};
use shoal_core::ByteRange;
use url::Url;

use crate::options::HttpOptions;
use crate::redact::redacted;

/// Redirects followed before giving up, as curl and browsers do.
const MAX_REDIRECTS: usize = 10;

/// Why a request did not give us bytes we can use.
#[derive(Debug, Clone)]
pub enum FetchError {
    /// The server answered with a status we do not retry (404, 401, …) or ran out of retries.
    Status {
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    /// No connection could be made (refused, unreachable).
    Connect(String),
    /// The connection failed: reset, timed out, cut short.
    Transport(String),
    /// The server answered, but not with what was asked (wrong `Content-Range`, …).
    Protocol(String),
    /// The file on the server is not the one the download started with: `If-Range` failed.
    Changed,
    /// No bytes arrived for the stall timeout.
    Stalled,
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
            FetchError::Changed => true,
            _ => false,
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

    pub fn describe(&self) -> String {
        match self {
            FetchError::Status { status, .. } => format!("server answered {status}"),
            FetchError::Connect(detail)
            | FetchError::Transport(detail)
            | FetchError::Protocol(detail) => detail.clone(),
            FetchError::Changed => "the file changed on the server".to_string(),
            FetchError::Stalled => "no data arrived for the stall timeout".to_string(),
        }
    }
}

/// Describes a transport error with its causes, without the URL (callers add it, redacted).
pub fn transport_error(error: &reqwest::Error) -> FetchError {
    let mut text = if error.is_connect() {
        "could not connect".to_string()
    } else if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_redirect() {
        format!("more than {MAX_REDIRECTS} redirects")
    } else if error.is_body() || error.is_decode() {
        "connection broke while receiving data".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = cause_of(source);
    }
    if error.is_connect() {
        FetchError::Connect(text)
    } else {
        FetchError::Transport(text)
    }
}

fn cause_of<'a>(
    e: Option<&'a (dyn std::error::Error + 'static)>,
) -> Option<&'a (dyn std::error::Error + 'static)> {
    e.and_then(|e| e.source())
}

/// One client per download: HTTP/1.1 only, so each concurrent request is its own TCP
/// connection (HTTP/2 streams share one connection and add no bandwidth).
pub fn client(options: &HttpOptions) -> Result<Client, FetchError> {
    // Only one provider is compiled in; a second install attempt fails harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .http1_only()
        .redirect(redirect::Policy::limited(MAX_REDIRECTS))
        .user_agent(options.user_agent.clone())
        .default_headers(options.headers.clone())
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .tls_danger_accept_invalid_certs(options.insecure)
        .build()
        .map_err(|e| FetchError::Transport(format!("cannot set up HTTP: {e}")))
}

/// What the probe learned about the file.
#[derive(Debug)]
pub struct Probe {
    /// The response, still streaming: it becomes the first segment (or the only stream).
    pub response: Response,
    /// The offset of the response's first byte: where a `206` starts, 0 for a `200`.
    pub start: u64,
    /// Where the redirects ended, with the original credentials when the origin is the same.
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
pub async fn probe(client: &Client, url: &Url, from: u64) -> Result<Probe, FetchError> {
    let ask = |from: u64| {
        client
            .get(url.clone())
            .header(header::RANGE, format!("bytes={from}-"))
            .header(header::ACCEPT_ENCODING, "identity")
            .send()
    };
    let mut response = ask(from).await.map_err(|e| transport_error(&e))?;
    let mut from = from;
    if from > 0 && response.status() == StatusCode::RANGE_NOT_SATISFIABLE {
        // The file is now shorter than where the previous run stopped: probe it whole.
        from = 0;
        response = ask(0).await.map_err(|e| transport_error(&e))?;
    }
    let status = response.status();
    let final_url = with_credentials(url, response.url());
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
    let partial_without_range = status == StatusCode::PARTIAL_CONTENT && !ranges;
    if partial_without_range {
        return Err(FetchError::Protocol(format!(
            "answered 206 without a usable Content-Range ({:?})",
            header_str(headers, header::CONTENT_RANGE)
        )));
    }
    Ok(Probe {
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
    /// Where the redirects ended, with the original credentials when the origin is the same.
    pub url: Url,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The value to send as `If-Range`: a strong `ETag`, else `Last-Modified`.
    pub validator: Option<String>,
}

/// Asks for byte 0 only: a `206` gives the size and validators. A server without ranges, or
/// one that does not say the size, has no version a swarm can share.
pub async fn version(client: &Client, url: &Url) -> Result<UrlVersion, FetchError> {
    let response = client
        .get(url.clone())
        .header(header::RANGE, "bytes=0-0")
        .header(header::ACCEPT_ENCODING, "identity")
        .send()
        .await
        .map_err(|e| transport_error(&e))?;
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
    Ok(UrlVersion {
        url: with_credentials(url, response.url()),
        size,
        etag: header_str(headers, header::ETAG),
        last_modified: header_str(headers, header::LAST_MODIFIED),
        validator: validator(headers),
    })
}

/// Reattaches the user's credentials after redirects that stayed on the same origin; a
/// redirect to another origin never receives them.
fn with_credentials(original: &Url, final_url: &Url) -> Url {
    let mut url = final_url.clone();
    if original.origin() == final_url.origin() && !original.username().is_empty() {
        let _ = url.set_username(original.username());
        let _ = url.set_password(original.password());
    }
    url
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
pub struct RangeSource {
    pub client: Client,
    pub url: Url,
    pub size: u64,
    pub validator: Option<String>,
}

impl RangeSource {
    /// Asks for exactly `range`, and accepts the answer only if it is a `206` for that exact
    /// range of a file of the same size.
    pub async fn fetch(&self, range: ByteRange) -> Result<Response, FetchError> {
        let mut request = self
            .client
            .get(self.url.clone())
            .header(header::RANGE, range.http_header())
            .header(header::ACCEPT_ENCODING, "identity");
        if let Some(v) = &self.validator {
            if let Ok(value) = HeaderValue::from_str(v) {
                request = request.header(header::IF_RANGE, value);
            }
        }
        let response = request.send().await.map_err(|e| transport_error(&e))?;
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

    pub fn shown_url(&self) -> String {
        redacted(&self.url)
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
    fn credentials_follow_same_origin_redirects_only() {
        let original = Url::parse("http://u:p@h:1/a").unwrap();
        let same = with_credentials(&original, &Url::parse("http://h:1/b").unwrap());
        assert_eq!(same.as_str(), "http://u:p@h:1/b");
        let other = with_credentials(&original, &Url::parse("http://evil:1/b").unwrap());
        assert_eq!(other.as_str(), "http://evil:1/b");
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
