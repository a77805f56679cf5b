//! Which web pages may call the RPC (`--rpc-allow-origin`). A browser page on another site
//! (AriaNg opened from its own host or from a file, webui-aria2) reaches `/jsonrpc` only if the
//! listener says so: for a POST the browser first asks (a CORS preflight) and then reads the
//! answer only when it names the page's origin; a WebSocket carries the page's `Origin`, which
//! is refused unless allowed. Pages of this listener's own origin (the agent's `/ui`) and
//! clients outside a browser (no `Origin`) are always served. Every call still needs the
//! secret, so an allowed page gets nothing without it; aria2's `--rpc-allow-origin-all` is
//! `--rpc-allow-origin '*'`.

use axum::http::{header, HeaderMap, HeaderValue};
use thiserror::Error;
use url::Url;

/// The origins allowed besides the listener's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Only the listener's own pages (the default).
    #[default]
    OwnOnly,
    /// Any page (`*`), as aria2's `--rpc-allow-origin-all`.
    Any,
    /// These origins (`scheme://host[:port]`, serialized as browsers send them).
    These(Vec<String>),
}

/// An `--rpc-allow-origin` value that is neither `*` nor an origin.
#[derive(Debug, Error)]
#[error(
    "--rpc-allow-origin {given:?} is not an origin: give scheme://host[:port] \
     (e.g. http://localhost:6880, no path) or '*' for any page"
)]
pub struct OriginError {
    /// The value given.
    pub given: String,
}

impl AllowedOrigins {
    /// From the values of `--rpc-allow-origin`: none is [`OwnOnly`](Self::OwnOnly), any `*`
    /// is [`Any`](Self::Any).
    pub fn parse(values: &[String]) -> Result<Self, OriginError> {
        if values.is_empty() {
            return Ok(Self::OwnOnly);
        }
        if values.iter().any(|v| v == "*") {
            return Ok(Self::Any);
        }
        values
            .iter()
            .map(|given| {
                let refused = || OriginError {
                    given: given.clone(),
                };
                let url = Url::parse(given).map_err(|_| refused())?;
                let origin = url.origin();
                let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
                if !origin.is_tuple() || !bare || !url.username().is_empty() {
                    return Err(refused());
                }
                Ok(origin.ascii_serialization())
            })
            .collect::<Result<_, _>>()
            .map(Self::These)
    }

    /// Whether a request with these headers may be served: no `Origin` (not a browser), the
    /// listener's own, or an allowed one.
    pub(super) fn admits(&self, headers: &HeaderMap) -> bool {
        match page_origin(headers) {
            None => true,
            Some(origin) => same_as_host(origin, headers) || self.allows(origin),
        }
    }

    /// The `Access-Control-Allow-Origin` a response to this request carries: set only for an
    /// allowed page of another origin.
    pub(super) fn cors(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = page_origin(headers)?;
        if same_as_host(origin, headers) || !self.allows(origin) {
            return None;
        }
        HeaderValue::from_str(origin).ok()
    }

    fn allows(&self, origin: &str) -> bool {
        match self {
            Self::OwnOnly => false,
            Self::Any => true,
            Self::These(list) => list.iter().any(|o| o == origin),
        }
    }
}

fn page_origin(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("").trim_end_matches('/'))
}

/// `Origin` is `http://HOST` or `https://HOST` for the `Host` the request names.
fn same_as_host(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    origin.strip_prefix("http://") == Some(host) || origin.strip_prefix("https://") == Some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    #[test]
    fn own_pages_and_clients_without_origin_are_always_admitted() {
        let own = AllowedOrigins::OwnOnly;
        let host = (header::HOST, "127.0.0.1:6800");
        assert!(own.admits(&headers(std::slice::from_ref(&host))));
        assert!(own.admits(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://127.0.0.1:6800")
        ])));
        assert!(!own.admits(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://evil.example")
        ])));
        assert!(!own.admits(&headers(&[(header::ORIGIN, "http://x")])));
        assert_eq!(
            own.cors(&headers(&[host, (header::ORIGIN, "http://evil.example")])),
            None
        );
    }

    #[test]
    fn allowed_origins_are_admitted_and_named_back() {
        let allowed = AllowedOrigins::parse(&[
            "http://localhost:6880/".into(),
            "https://ariang.example".into(),
        ])
        .unwrap();
        assert_eq!(
            allowed,
            AllowedOrigins::These(vec![
                "http://localhost:6880".into(),
                "https://ariang.example".into()
            ])
        );
        let page = headers(&[
            (header::HOST, "127.0.0.1:6800"),
            (header::ORIGIN, "http://localhost:6880"),
        ]);
        assert!(allowed.admits(&page));
        assert_eq!(allowed.cors(&page).unwrap(), "http://localhost:6880");
        let other = headers(&[
            (header::HOST, "127.0.0.1:6800"),
            (header::ORIGIN, "http://localhost:6881"),
        ]);
        assert!(!allowed.admits(&other));
        let any = AllowedOrigins::parse(&["*".into()]).unwrap();
        assert!(any.admits(&other));
        assert_eq!(any.cors(&other).unwrap(), "http://localhost:6881");
        // A page opened from a file sends `Origin: null`.
        let file = headers(&[(header::HOST, "127.0.0.1:6800"), (header::ORIGIN, "null")]);
        assert!(any.admits(&file) && !allowed.admits(&file));
    }

    #[test]
    fn values_that_are_not_origins_are_refused_naming_them() {
        for bad in [
            "localhost:6880",
            "http://h/path",
            "file:///x",
            "http://u:p@h",
            "x",
        ] {
            let err = AllowedOrigins::parse(&[bad.into()]).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert_eq!(AllowedOrigins::parse(&[]).unwrap(), AllowedOrigins::OwnOnly);
    }
}
