//! The engine's HTTP client. It follows redirects itself, so that the user's credentials
//! (`Authorization`, `Cookie`, `Proxy-Authorization` given with `-H`, and a URL's user name
//! and password) reach only the origin (scheme, host, port) the user named, as curl does.
//! `--location-trusted` sends them to the other origins a redirect names too, except over a
//! downgrade from `https` to `http`, which never carries them.

use std::sync::Arc;

use reqwest::header::{self, HeaderMap, HeaderName};
use reqwest::{Client, Response};
use shoal_core::SafeUrl;
use tracing::warn;
use url::{Origin, Url};

use super::{transport_error, FetchError, MAX_REDIRECTS};

/// The headers that carry credentials: curl's list of what it keeps from other hosts.
const SENSITIVE: [HeaderName; 3] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::PROXY_AUTHORIZATION,
];

/// A client whose requests carry the user's credentials only where they belong; cheap to
/// clone. [`HttpClient::owned_by`] names the URL whose origin owns them.
#[derive(Debug, Clone)]
pub(crate) struct HttpClient {
    client: Client,
    /// The credential headers given (`-H`), kept off the client's default headers.
    sensitive: Arc<HeaderMap>,
    /// `--location-trusted`: other origins receive the credentials too (never over a downgrade).
    trusted: bool,
    owner: Option<Arc<Owner>>,
}

/// The origin the credentials belong to, and its URL's user name and password.
#[derive(Debug)]
struct Owner {
    origin: Origin,
    https: bool,
    username: String,
    password: Option<String>,
}

impl HttpClient {
    /// Wraps `client`, which must not follow redirects itself, with the credential headers
    /// (see [`HttpClient::split_sensitive`]).
    pub(crate) fn new(client: Client, sensitive: HeaderMap, trusted: bool) -> Self {
        Self {
            client,
            sensitive: Arc::new(sensitive),
            trusted,
            owner: None,
        }
    }

    /// Splits the credential headers off `headers`, which keeps the rest.
    pub(crate) fn split_sensitive(headers: &mut HeaderMap) -> HeaderMap {
        let mut sensitive = HeaderMap::new();
        for name in SENSITIVE {
            for value in headers.get_all(&name) {
                sensitive.append(name.clone(), value.clone());
            }
            headers.remove(&name);
        }
        sensitive
    }

    /// The same client, with the credentials owned by `url`'s origin (the `-H` ones and
    /// `url`'s own user name and password).
    pub(crate) fn owned_by(&self, url: &Url) -> Self {
        Self {
            owner: Some(Arc::new(Owner {
                origin: url.origin(),
                https: url.scheme() == "https",
                username: url.username().to_string(),
                password: url.password().map(str::to_string),
            })),
            ..self.clone()
        }
    }

    /// `GET url` with `headers`, following redirects; every hop carries the credentials only
    /// if [`HttpClient::may_carry`] says so. The response's URL is where the redirects ended,
    /// without credentials.
    pub(crate) async fn get(&self, url: &Url, headers: HeaderMap) -> Result<Response, FetchError> {
        let mut url = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let (target, credentials) = self.prepare(&url);
            let mut request = self.client.get(target).headers(headers.clone());
            if let Some(credentials) = credentials {
                request = request.headers(credentials.clone());
            }
            let response = request.send().await.map_err(transport_error)?;
            let Some(next) = redirect_target(&response) else {
                return Ok(response);
            };
            if url.scheme() == "https" && next.scheme() == "http" {
                warn!(
                    from = %SafeUrl::new(url.clone()),
                    to = %SafeUrl::new(next.clone()),
                    "redirected from https to plain http: following it without credentials"
                );
            }
            url = next;
        }
        Err(FetchError::TooManyRedirects)
    }

    /// The URL to request (with the owner's user name and password where they may go, else
    /// none) and the credential headers to add.
    fn prepare(&self, url: &Url) -> (Url, Option<&HeaderMap>) {
        let mut target = url.clone();
        let _ = target.set_username("");
        let _ = target.set_password(None);
        match self.owner.as_deref() {
            Some(owner) if self.may_carry(owner, url) => {
                let _ = target.set_username(&owner.username);
                let _ = target.set_password(owner.password.as_deref());
                (target, Some(&self.sensitive))
            }
            _ => (target, None),
        }
    }

    /// Credentials go to their own origin; with `--location-trusted` to any other too, except
    /// those of an `https` origin over plain `http`.
    fn may_carry(&self, owner: &Owner, url: &Url) -> bool {
        url.origin() == owner.origin || (self.trusted && !(owner.https && url.scheme() == "http"))
    }
}

/// Where a redirect answer points, resolved against the request's URL.
fn redirect_target(response: &Response) -> Option<Url> {
    if !response.status().is_redirection() {
        return None;
    }
    let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
    response.url().join(location).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(trusted: bool) -> HttpClient {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer t".parse().unwrap());
        headers.insert(header::ACCEPT, "*/*".parse().unwrap());
        let mut rest = headers.clone();
        assert_eq!(HttpClient::split_sensitive(&mut rest).len(), 1);
        assert_eq!(rest.len(), 1, "only the credentials are split off");
        let options = crate::HttpOptions {
            headers,
            location_trusted: trusted,
            ..crate::HttpOptions::default()
        };
        super::super::client(&options).unwrap()
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn credentials_stay_on_their_origin() {
        let c = client(false).owned_by(&url("https://u:p@a:1/f"));
        let (same, carried) = c.prepare(&url("https://a:1/g"));
        assert_eq!(same.as_str(), "https://u:p@a:1/g");
        assert!(carried.is_some());
        for other in ["https://b:1/f", "https://a:2/f", "http://a:1/f"] {
            let (target, carried) = c.prepare(&url(other));
            assert_eq!(target.as_str(), other);
            assert!(carried.is_none(), "{other}");
        }
    }

    #[test]
    fn trusted_credentials_follow_redirects_but_never_downgrade() {
        let c = client(true).owned_by(&url("https://u:p@a/f"));
        let (target, carried) = c.prepare(&url("https://b/f"));
        assert_eq!(target.as_str(), "https://u:p@b/f");
        assert!(carried.is_some());
        let (target, carried) = c.prepare(&url("http://b/f"));
        assert_eq!(target.as_str(), "http://b/f");
        assert!(carried.is_none());
        let plain = client(true).owned_by(&url("http://a/f"));
        assert!(plain.prepare(&url("http://b/f")).1.is_some());
    }

    #[test]
    fn without_an_owner_no_credentials_go() {
        let c = client(true);
        let (target, carried) = c.prepare(&url("https://u:p@a/f"));
        assert_eq!(target.as_str(), "https://a/f");
        assert!(carried.is_none());
    }
}
