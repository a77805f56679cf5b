//! [`TrackerClient`]: the agent's side of the tracker's HTTP API
//! (`shoal_core::wire::tracker`), with typed errors that say whether another try may help.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_core::wire::{
    path, AgentId, AnnounceRequest, ContentList, ContentQuery, ContentSummary, CreateSwarmRequest,
    ErrorBody, HeartbeatRequest, LatestUrlQuery, LeaseGrant, ManifestPublished, PeersQuery,
    PeersResponse, PublishDigestsRequest, PublishUrlRequest, RegisterRequest, ReportAccepted,
    ReportRequest, SwarmInfo, UrlKey, UrlMapping,
};
use shoal_core::{ContentId, Manifest};
use thiserror::Error;
use url::Url;

use shoal_core::redact::redacted;

/// Why a tracker request failed, grouped by what the agent should do: retry later, register again,
/// or fix its configuration. Every `url` is the tracker's base URL, credentials redacted.
#[derive(Debug, Error)]
pub enum TrackerError {
    /// The tracker could not be reached, or answered 5xx / 429: worth another try later.
    #[error("the tracker {url} is unreachable: {detail}")]
    Unreachable {
        /// The tracker's base URL, credentials redacted.
        url: String,
        /// The transport's error, or the status and the tracker's message.
        detail: String,
    },
    /// The tracker does not know what was asked for (404).
    #[error("the tracker {url} has no {what}")]
    NotFound {
        /// The tracker's base URL, credentials redacted.
        url: String,
        /// What was missing, as in "the tracker has no manifest for it".
        what: String,
    },
    /// The token was refused (401/403): fix `--token-file`.
    #[error("the tracker {url} refused the token ({status}): {message}; check --token-file")]
    Refused {
        /// The tracker's base URL, credentials redacted.
        url: String,
        /// The HTTP status, 401 or 403.
        status: u16,
        /// The tracker's error message.
        message: String,
    },
    /// Another live agent holds this agent's id (409 to a registration): waiting does not
    /// help while it runs.
    #[error("the tracker {url} refused this agent's id: {message}")]
    IdInUse {
        /// The tracker's base URL, credentials redacted.
        url: String,
        /// The tracker's error message, naming the address that holds the id.
        message: String,
    },
    /// Anything else the tracker refused (400, 409, …).
    #[error("the tracker {url} answered {status}: {message}")]
    Rejected {
        /// The tracker's base URL, credentials redacted.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The tracker's error message.
        message: String,
    },
}

impl TrackerError {
    /// True for a `404`: the tracker forgot the agent (register again) or does not know the
    /// content.
    pub fn is_not_found(&self) -> bool {
        matches!(self, TrackerError::NotFound { .. })
    }

    /// True when another try later may succeed (no answer, 5xx, 429).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, TrackerError::Unreachable { .. })
    }
}

/// A client for one tracker; cheap to clone.
#[derive(Clone)]
pub struct TrackerClient {
    base: Url,
    token: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for TrackerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("TrackerClient")
            .field("base", &redacted(&self.base))
            .finish()
    }
}

impl TrackerClient {
    /// A client for the tracker at `base` (its `/v1` API under it) that sends `token` as its bearer
    /// token; 5 s to connect and 30 s per request.
    pub fn new(base: Url, token: String) -> Self {
        // Only one provider is compiled in; a second install attempt fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("shoal-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client without TLS settings builds");
        Self { base, token, http }
    }

    /// The tracker's base URL with credentials redacted, for messages.
    pub fn base(&self) -> String {
        redacted(&self.base)
    }

    /// Registers `id`; [`TrackerError::IdInUse`] when a live agent elsewhere holds it.
    pub async fn register(
        &self,
        id: &AgentId,
        body: &RegisterRequest,
    ) -> Result<LeaseGrant, TrackerError> {
        match self
            .call(Method::PUT, &path::agent(id), Some(body), "agent")
            .await
        {
            Err(TrackerError::Rejected {
                url,
                status: 409,
                message,
            }) => Err(TrackerError::IdInUse { url, message }),
            other => other,
        }
    }

    /// Renews the lease; [`TrackerError::NotFound`] when the tracker forgot the agent, which must
    /// then register again.
    pub async fn heartbeat(
        &self,
        id: &AgentId,
        body: &HeartbeatRequest,
    ) -> Result<LeaseGrant, TrackerError> {
        self.call(Method::POST, &path::heartbeat(id), Some(body), "agent")
            .await
    }

    /// Sends holdings changes and renews the lease; [`TrackerError::NotFound`] when the tracker
    /// forgot the agent.
    pub async fn announce(
        &self,
        id: &AgentId,
        body: &AnnounceRequest,
    ) -> Result<LeaseGrant, TrackerError> {
        self.call(Method::POST, &path::announce(id), Some(body), "agent")
            .await
    }

    /// Asks the tracker to forget the agent now (a clean shutdown).
    pub async fn deregister(&self, id: &AgentId) -> Result<(), TrackerError> {
        let response = self
            .send(Method::DELETE, &path::agent(id), None::<&()>)
            .await?;
        self.check(response, "agent").await.map(|_| ())
    }

    /// Peers holding `content`, best first.
    pub async fn peers(
        &self,
        content: &ContentId,
        query: &PeersQuery,
    ) -> Result<PeersResponse, TrackerError> {
        let mut target = path::peers(content);
        target.push('?');
        target.push_str(&serde_urlencoded::to_string(query).expect("a query serializes"));
        self.call(Method::GET, &target, None::<&()>, "such content")
            .await
    }

    /// The manifest published for `content`; [`TrackerError::NotFound`] when none is.
    pub async fn manifest(&self, content: &ContentId) -> Result<Manifest, TrackerError> {
        self.call(
            Method::GET,
            &path::manifest(content),
            None::<&()>,
            "manifest for it",
        )
        .await
    }

    /// Publishes a manifest under its id; succeeds also when the tracker had it.
    pub async fn put_manifest(
        &self,
        manifest: &Manifest,
    ) -> Result<ManifestPublished, TrackerError> {
        self.call(
            Method::PUT,
            &path::manifest(&manifest.id()),
            Some(manifest),
            "content",
        )
        .await
    }

    /// The content published for this exact URL version; [`TrackerError::NotFound`] when none is.
    pub async fn lookup_url(&self, key: &UrlKey) -> Result<UrlMapping, TrackerError> {
        let target = format!(
            "{}?{}",
            path::URLS,
            serde_urlencoded::to_string(key).expect("a key serializes")
        );
        self.call(Method::GET, &target, None::<&()>, "mapping for this URL")
            .await
    }

    /// The newest content published for `url` whatever its size and validators;
    /// [`TrackerError::NotFound`] when none is.
    pub async fn latest_url(&self, url: &str) -> Result<UrlMapping, TrackerError> {
        let query = LatestUrlQuery {
            url: url.to_string(),
        };
        let target = format!(
            "{}?{}",
            path::URLS_LATEST,
            serde_urlencoded::to_string(&query).expect("a query serializes")
        );
        self.call(Method::GET, &target, None::<&()>, "version of this URL")
            .await
    }

    /// Maps a URL version to a content whose manifest is published; the first mapping wins and is
    /// the answer.
    pub async fn publish_url(&self, body: &PublishUrlRequest) -> Result<UrlMapping, TrackerError> {
        self.call(
            Method::POST,
            path::URLS,
            Some(body),
            "manifest for the content",
        )
        .await
    }

    /// One content's summary.
    pub async fn content(&self, content: &ContentId) -> Result<ContentSummary, TrackerError> {
        self.call(
            Method::GET,
            &path::content(content),
            None::<&()>,
            "such content",
        )
        .await
    }

    /// Contents whose name or id prefix match `query`.
    pub async fn search(&self, query: &ContentQuery) -> Result<ContentList, TrackerError> {
        let target = format!(
            "{}?{}",
            path::CONTENT,
            serde_urlencoded::to_string(query).expect("a query serializes")
        );
        self.call(Method::GET, &target, None::<&()>, "content list")
            .await
    }

    /// Creates or joins the URL swarm of a URL version (see [`CreateSwarmRequest`]).
    pub async fn create_swarm(&self, body: &CreateSwarmRequest) -> Result<SwarmInfo, TrackerError> {
        self.call(Method::POST, path::SWARMS, Some(body), "swarm")
            .await
    }

    /// A URL swarm's state and the digests published so far; [`TrackerError::NotFound`] when it
    /// lapsed.
    pub async fn swarm(&self, id: &ContentId) -> Result<SwarmInfo, TrackerError> {
        self.call(Method::GET, &path::swarm(id), None::<&()>, "such swarm")
            .await
    }

    /// Publishes piece digests of a swarm this agent leads.
    pub async fn publish_digests(
        &self,
        id: &ContentId,
        body: &PublishDigestsRequest,
    ) -> Result<SwarmInfo, TrackerError> {
        self.call(
            Method::POST,
            &path::swarm_digests(id),
            Some(body),
            "such swarm",
        )
        .await
    }

    /// Reports a peer that sent a piece not matching its digest.
    pub async fn report(
        &self,
        content: &ContentId,
        body: &ReportRequest,
    ) -> Result<(), TrackerError> {
        self.call::<ReportAccepted, _>(
            Method::POST,
            &path::reports(content),
            Some(body),
            "such content",
        )
        .await
        .map(|_| ())
    }

    async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        target: &str,
        body: Option<&B>,
        what: &str,
    ) -> Result<T, TrackerError> {
        let response = self.send(method, target, body).await?;
        let response = self.check(response, what).await?;
        response
            .json()
            .await
            .map_err(|e| TrackerError::Unreachable {
                url: self.base(),
                detail: format!("unreadable answer to {target}: {e}"),
            })
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        target: &str,
        body: Option<&B>,
    ) -> Result<reqwest::Response, TrackerError> {
        let url = self.base.join(target).map_err(|e| TrackerError::Rejected {
            url: self.base(),
            status: 0,
            message: format!("cannot form a request for {target}: {e}"),
        })?;
        let mut request = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.map_err(|e| TrackerError::Unreachable {
            url: self.base(),
            detail: describe(&e),
        })
    }

    async fn check(
        &self,
        response: reqwest::Response,
        what: &str,
    ) -> Result<reqwest::Response, TrackerError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let message = match response.json::<ErrorBody>().await {
            Ok(body) => body.error,
            Err(_) => status.canonical_reason().unwrap_or("error").to_string(),
        };
        let url = self.base();
        Err(match status {
            StatusCode::NOT_FOUND => TrackerError::NotFound {
                url,
                what: what.to_string(),
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => TrackerError::Refused {
                url,
                status: status.as_u16(),
                message,
            },
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                TrackerError::Unreachable {
                    url,
                    detail: format!("answered {s}: {message}"),
                }
            }
            s => TrackerError::Rejected {
                url,
                status: s.as_u16(),
                message,
            },
        })
    }
}

fn describe(error: &reqwest::Error) -> String {
    shoal_core::chain::chain(error)
}
