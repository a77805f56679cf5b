//! [`TrackerClient`]: the agent's side of the tracker's HTTP API
//! (`shoal_core::wire::tracker`), with typed errors that say whether another try may help.
//!
//! A client may know several trackers (replicas sharing one Redis): each request goes to the
//! current one and, when it is [`TrackerError::Unreachable`], to the next in turn, and the
//! client sticks with the first that answers. Any answer (a 404 or a refusal too) ends the
//! search: it comes from a tracker that works. Clones share the current tracker, so the
//! announcer, the peer lists and the downloads of one agent switch together, with one warning
//! per switch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_core::metrics::Histogram;
use shoal_core::wire::{
    path, AgentId, AnnounceRequest, ContentList, ContentQuery, ContentSummary, CreateSwarmRequest,
    DigestsQuery, ErrorBody, HeartbeatRequest, LatestUrlQuery, LeaseGrant, ManifestPublished,
    PeersQuery, PeersResponse, PublishDigestsRequest, PublishUrlRequest, RegisterRequest,
    ReportAccepted, ReportRequest, SwarmInfo, TakeOverRequest, UrlKey, UrlMapping,
    UrlReportAccepted, UrlReportRequest,
};
use shoal_core::{ContentId, Manifest};
use shoal_engine::ca::{self, ExtraRoots};
use thiserror::Error;
use url::Url;

use shoal_core::redact::redacted;
use tracing::warn;

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

    /// A short name of the kind of failure, for a metric's label.
    pub fn kind(&self) -> &'static str {
        match self {
            TrackerError::Unreachable { .. } => "unreachable",
            TrackerError::NotFound { .. } => "not_found",
            TrackerError::Refused { .. } => "refused",
            TrackerError::IdInUse { .. } => "id_in_use",
            TrackerError::Rejected { .. } => "rejected",
        }
    }
}

/// What a [`TrackerClient`] and its clones saw of the tracker: request latency and failures by
/// route, for the agent's `/metrics`, and how long it has been unreachable, for `/healthz`.
#[derive(Debug, Default)]
pub struct TrackerStats {
    /// Latency of every answered request, by method and route pattern.
    pub latency: BTreeMap<(Method, String), Histogram>,
    /// Failed requests by method, route pattern and [`TrackerError::kind`].
    pub errors: BTreeMap<(Method, String, &'static str), u64>,
    /// When the tracker became unreachable: the first failure to reach it since it last
    /// answered; `None` while it answers.
    pub unreachable_since: Option<Instant>,
    /// The lease the tracker last granted: how long it may be out of reach before the agent is
    /// unhealthy (its holdings lapse there).
    pub lease: Option<Duration>,
}

/// A client for one tracker or several replicas; cheap to clone, and clones share which
/// tracker is current (and the [`TrackerStats`]).
#[derive(Clone)]
pub struct TrackerClient {
    /// Never empty.
    bases: Arc<[Url]>,
    /// Index into `bases` of the tracker asked first.
    current: Arc<AtomicUsize>,
    token: String,
    http: reqwest::Client,
    stats: Arc<Mutex<TrackerStats>>,
}

impl std::fmt::Debug for TrackerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        let bases: Vec<String> = self.bases.iter().map(redacted).collect();
        f.debug_struct("TrackerClient")
            .field("bases", &bases)
            .field("current", &self.current.load(Ordering::Relaxed))
            .finish()
    }
}

impl TrackerClient {
    /// A client for the one tracker at `base` (its `/v1` API under it) that sends `token` as
    /// its bearer token; 5 s to connect and 30 s per request.
    pub fn new(base: Url, token: String) -> Self {
        Self::with_replicas(base, Vec::new(), token, None)
    }

    /// A client like [`TrackerClient::new`] of the tracker at `first`, moving on to each of
    /// `others` in turn when the current one is unreachable; an `https` tracker's certificate
    /// may be signed by one of `roots` (`--ca`) as well as by a CA the system trusts.
    pub fn with_replicas(
        first: Url,
        others: Vec<Url>,
        token: String,
        roots: Option<&ExtraRoots>,
    ) -> Self {
        let http = ca::client_builder(roots)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("shoal-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client of certificates already parsed builds");
        let bases: Vec<Url> = std::iter::once(first).chain(others).collect();
        Self {
            bases: bases.into(),
            current: Arc::default(),
            token,
            http,
            stats: Arc::default(),
        }
    }

    /// Runs `read` on what this client (and its clones) saw of the trackers: every request to
    /// each, and unreachable only while none answers.
    pub fn stats<T>(&self, read: impl FnOnce(&TrackerStats) -> T) -> T {
        read(&self.stats.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The base URL of the tracker asked first now, credentials redacted, for messages.
    pub fn base(&self) -> String {
        redacted(&self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()])
    }

    /// Registers `id`; [`TrackerError::IdInUse`] when a live agent elsewhere holds it.
    pub async fn register(
        &self,
        id: &AgentId,
        body: &RegisterRequest,
    ) -> Result<LeaseGrant, TrackerError> {
        let registered = self
            .call(Method::PUT, &path::agent(id), Some(body), "agent")
            .await;
        match self.granted(registered) {
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
        let renewed = self
            .call(Method::POST, &path::heartbeat(id), Some(body), "agent")
            .await;
        self.granted(renewed)
    }

    /// Sends holdings changes and renews the lease; [`TrackerError::NotFound`] when the tracker
    /// forgot the agent.
    pub async fn announce(
        &self,
        id: &AgentId,
        body: &AnnounceRequest,
    ) -> Result<LeaseGrant, TrackerError> {
        let announced = self
            .call(Method::POST, &path::announce(id), Some(body), "agent")
            .await;
        self.granted(announced)
    }

    /// Notes the lease a registration, heartbeat or announce was granted.
    fn granted(
        &self,
        answer: Result<LeaseGrant, TrackerError>,
    ) -> Result<LeaseGrant, TrackerError> {
        if let Ok(grant) = &answer {
            let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
            stats.lease = Some(Duration::from_millis(grant.lease_ms));
        }
        answer
    }

    /// Asks the tracker to forget the agent now (a clean shutdown).
    pub async fn deregister(&self, id: &AgentId) -> Result<(), TrackerError> {
        self.failover(|base| async move {
            self.request(base, Method::DELETE, &path::agent(id), None::<&()>, "agent")
                .await
                .map(|_| ())
        })
        .await
    }

    /// Peers holding `content`, best first.
    pub async fn peers(
        &self,
        content: &ContentId,
        query: &PeersQuery,
    ) -> Result<PeersResponse, TrackerError> {
        let target = with_query(&path::peers(content), query);
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
        let target = with_query(path::URLS, key);
        self.call(Method::GET, &target, None::<&()>, "mapping for this URL")
            .await
    }

    /// The newest content published for `url` whatever its size and validators;
    /// [`TrackerError::NotFound`] when none is.
    pub async fn latest_url(&self, url: &str) -> Result<UrlMapping, TrackerError> {
        let query = LatestUrlQuery {
            url: url.to_string(),
        };
        let target = with_query(path::URLS_LATEST, &query);
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
        let target = with_query(path::CONTENT, query);
        self.call(Method::GET, &target, None::<&()>, "content list")
            .await
    }

    /// Creates or joins the URL swarm of a URL version (see [`CreateSwarmRequest`]).
    pub async fn create_swarm(&self, body: &CreateSwarmRequest) -> Result<SwarmInfo, TrackerError> {
        self.call(Method::POST, path::SWARMS, Some(body), "swarm")
            .await
    }

    /// A URL swarm's state and the digests published so far that `query` asks for;
    /// [`TrackerError::NotFound`] when it lapsed.
    pub async fn swarm(
        &self,
        id: &ContentId,
        query: DigestsQuery,
    ) -> Result<SwarmInfo, TrackerError> {
        let target = with_query(&path::swarm(id), &query);
        self.call(Method::GET, &target, None::<&()>, "such swarm")
            .await
    }

    /// Takes over leading a swarm whose leader is gone or stalled (`409` while it is not).
    pub async fn take_over(
        &self,
        id: &ContentId,
        body: &TakeOverRequest,
    ) -> Result<SwarmInfo, TrackerError> {
        self.call(
            Method::POST,
            &path::swarm_leader(id),
            Some(body),
            "such swarm",
        )
        .await
    }

    /// Publishes piece digests of a swarm this agent leads.
    pub async fn publish_digests(
        &self,
        id: &ContentId,
        body: &PublishDigestsRequest,
        query: DigestsQuery,
    ) -> Result<SwarmInfo, TrackerError> {
        let target = with_query(&path::swarm_digests(id), &query);
        self.call(Method::POST, &target, Some(body), "such swarm")
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

    /// Reports that the origin disagrees with the content a URL version is mapped to.
    pub async fn report_url(
        &self,
        body: &UrlReportRequest,
    ) -> Result<UrlReportAccepted, TrackerError> {
        self.call(Method::POST, path::URL_REPORTS, Some(body), "such URL")
            .await
    }

    /// Runs `request` against the current tracker and, while the answer is
    /// [`TrackerError::Unreachable`], against each other one in turn; the first that answers
    /// becomes current. When none answers, the current one stays and its error is returned.
    async fn failover<'a, T, F, Fut>(&'a self, request: F) -> Result<T, TrackerError>
    where
        F: Fn(&'a Url) -> Fut,
        Fut: std::future::Future<Output = Result<T, TrackerError>>,
    {
        let n = self.bases.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut first_error = None;
        for step in 0..n {
            let at = (start + step) % n;
            match request(&self.bases[at]).await {
                Err(e) if e.is_unreachable() => {
                    first_error.get_or_insert(e);
                }
                answer => {
                    if step > 0 {
                        self.switch(start, at, first_error.as_ref());
                    }
                    return answer;
                }
            }
        }
        Err(first_error.expect("there is at least one tracker"))
    }

    /// Makes `to` the current tracker unless another request moved it from `from` already:
    /// only the request that switches logs it.
    fn switch(&self, from: usize, to: usize, why: Option<&TrackerError>) {
        let switched = self
            .current
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if switched {
            let why = why.map(ToString::to_string).unwrap_or_default();
            warn!(
                "{why}; using the tracker {} from now on",
                redacted(&self.bases[to])
            );
        }
    }

    async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        target: &str,
        body: Option<&B>,
        what: &str,
    ) -> Result<T, TrackerError> {
        self.failover(|base| {
            let method = method.clone();
            async move {
                let response = self.request(base, method, target, body, what).await?;
                response
                    .json()
                    .await
                    .map_err(|e| TrackerError::Unreachable {
                        url: redacted(base),
                        detail: format!("unreadable answer to {target}: {e}"),
                    })
            }
        })
        .await
    }

    /// Sends a request to the tracker at `base` and checks its status, counting it in
    /// [`TrackerStats`].
    async fn request<B: Serialize>(
        &self,
        base: &Url,
        method: Method,
        target: &str,
        body: Option<&B>,
        what: &str,
    ) -> Result<reqwest::Response, TrackerError> {
        let start = Instant::now();
        let result = match self.send(base, method.clone(), target, body).await {
            Ok(response) => self.check(base, response, what).await,
            Err(e) => Err(e),
        };
        let elapsed = start.elapsed();
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        let route = route_of(target);
        match &result {
            Err(e) => {
                *stats
                    .errors
                    .entry((method.clone(), route.clone(), e.kind()))
                    .or_default() += 1;
                if e.is_unreachable() {
                    stats.unreachable_since.get_or_insert(start);
                }
            }
            Ok(_) => stats.unreachable_since = None,
        }
        if !matches!(&result, Err(e) if e.is_unreachable()) {
            stats
                .latency
                .entry((method, route))
                .or_default()
                .observe(elapsed);
        }
        result
    }

    async fn send<B: Serialize>(
        &self,
        base: &Url,
        method: Method,
        target: &str,
        body: Option<&B>,
    ) -> Result<reqwest::Response, TrackerError> {
        let url = base.join(target).map_err(|e| TrackerError::Rejected {
            url: redacted(base),
            status: 0,
            message: format!("cannot form a request for {target}: {e}"),
        })?;
        let mut request = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.map_err(|e| TrackerError::Unreachable {
            url: redacted(base),
            detail: ca::describe(&e),
        })
    }

    async fn check(
        &self,
        base: &Url,
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
        let url = redacted(base);
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

/// `path` with `query` as its query string; no `?` when the query is empty.
fn with_query(path: &str, query: &impl Serialize) -> String {
    let query = serde_urlencoded::to_string(query).expect("a query serializes");
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

/// The route pattern of a request target, for a metric's label: content ids and agent ids
/// become `{id}` and the query goes, so the label set stays bounded.
fn route_of(target: &str) -> String {
    let path = target.split('?').next().unwrap_or_default();
    let mut after_agents = false;
    let segments: Vec<&str> = path
        .split('/')
        .map(|segment| {
            let id = after_agents || segment.parse::<ContentId>().is_ok();
            after_agents = segment == "agents";
            if id {
                "{id}"
            } else {
                segment
            }
        })
        .collect();
    segments.join("/")
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use axum::Router;

    use super::*;

    #[test]
    fn routes_name_ids_as_patterns() {
        let content = ContentId::from_bytes([7; 32]);
        let agent = AgentId::new("host-1.a").unwrap();
        assert_eq!(route_of(&path::peers(&content)), "/v1/content/{id}/peers");
        assert_eq!(
            route_of(&path::heartbeat(&agent)),
            "/v1/agents/{id}/heartbeat"
        );
        assert_eq!(route_of(&path::agent(&agent)), "/v1/agents/{id}");
        assert_eq!(route_of("/v1/urls/latest?url=x"), "/v1/urls/latest");
        assert_eq!(route_of(path::SWARMS), "/v1/swarms");
    }

    #[tokio::test]
    async fn failures_and_answers_are_counted_and_unreachable_since_is_kept() {
        let client = TrackerClient::new(crate::testing::refusing_url(), "t".into());
        let id = ContentId::from_bytes([1; 32]);
        assert!(client.manifest(&id).await.unwrap_err().is_unreachable());
        let first = client
            .stats(|s| s.unreachable_since)
            .expect("set on failure");
        assert!(client.manifest(&id).await.is_err());
        client.stats(|s| {
            assert_eq!(
                s.unreachable_since,
                Some(first),
                "kept from the first failure"
            );
            let key = (
                Method::GET,
                "/v1/content/{id}/manifest".to_string(),
                "unreachable",
            );
            assert_eq!(s.errors.get(&key), Some(&2));
            assert!(s.latency.is_empty(), "no answer, no latency");
        });
    }

    /// A tracker that answers every request with `status` and counts the requests.
    async fn stub(status: StatusCode) -> (Url, Arc<AtomicUsize>) {
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let app = Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = ErrorBody {
                error: format!("stub answers {status}"),
                field: None,
            };
            async move { (status, axum::Json(body)) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    /// A loopback URL nothing listens on.
    fn dead() -> Url {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap()
    }

    fn id() -> ContentId {
        ContentId::from_bytes([9; 32])
    }

    #[tokio::test]
    async fn an_unreachable_tracker_passes_the_request_on_and_the_next_one_stays() {
        let (failing, failing_seen) = stub(StatusCode::SERVICE_UNAVAILABLE).await;
        let (working, working_seen) = stub(StatusCode::NOT_FOUND).await;
        let client = TrackerClient::with_replicas(failing, vec![working.clone()], "t".into(), None);
        let clone = client.clone();

        let answer = client.swarm(&id(), DigestsQuery::default()).await;
        assert!(
            matches!(answer, Err(TrackerError::NotFound { .. })),
            "{answer:?}"
        );
        assert_eq!(failing_seen.load(Ordering::SeqCst), 1);
        assert_eq!(working_seen.load(Ordering::SeqCst), 1);
        assert_eq!(client.base(), redacted(&working));

        // The next request, from a clone too, goes straight to the tracker that answered.
        let answer = clone.manifest(&id()).await;
        assert!(
            matches!(answer, Err(TrackerError::NotFound { .. })),
            "{answer:?}"
        );
        assert_eq!(failing_seen.load(Ordering::SeqCst), 1);
        assert_eq!(working_seen.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_dead_tracker_is_passed_over_and_the_list_wraps_around() {
        let (working, working_seen) = stub(StatusCode::NOT_FOUND).await;
        let (later, later_seen) = stub(StatusCode::SERVICE_UNAVAILABLE).await;
        let client = TrackerClient::with_replicas(dead(), vec![working, later], "t".into(), None);
        assert!(client
            .swarm(&id(), DigestsQuery::default())
            .await
            .unwrap_err()
            .is_not_found());
        assert_eq!(working_seen.load(Ordering::SeqCst), 1);
        assert_eq!(later_seen.load(Ordering::SeqCst), 0);
        assert!(client
            .deregister(&AgentId::new("a").unwrap())
            .await
            .is_err());
        assert_eq!(working_seen.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_answer_that_refuses_is_not_failed_over() {
        for status in [
            StatusCode::NOT_FOUND,
            StatusCode::FORBIDDEN,
            StatusCode::CONFLICT,
        ] {
            let (refusing, refusing_seen) = stub(status).await;
            let (other, other_seen) = stub(StatusCode::OK).await;
            let client =
                TrackerClient::with_replicas(refusing.clone(), vec![other], "t".into(), None);
            let answer = client.swarm(&id(), DigestsQuery::default()).await;
            assert!(
                matches!(
                    answer,
                    Err(TrackerError::NotFound { .. }
                        | TrackerError::Refused { .. }
                        | TrackerError::Rejected { .. })
                ),
                "{status}: {answer:?}"
            );
            assert_eq!(refusing_seen.load(Ordering::SeqCst), 1, "{status}");
            assert_eq!(other_seen.load(Ordering::SeqCst), 0, "{status}");
            assert_eq!(client.base(), redacted(&refusing), "{status}");
        }
    }

    #[tokio::test]
    async fn when_no_tracker_answers_the_current_one_stays_and_its_error_is_returned() {
        let first = dead();
        let (failing, failing_seen) = stub(StatusCode::BAD_GATEWAY).await;
        let client = TrackerClient::with_replicas(first.clone(), vec![failing], "t".into(), None);
        let answer = client
            .swarm(&id(), DigestsQuery::default())
            .await
            .unwrap_err();
        assert!(answer.is_unreachable(), "{answer:?}");
        assert!(answer.to_string().contains(&redacted(&first)), "{answer}");
        assert_eq!(failing_seen.load(Ordering::SeqCst), 1);
        assert_eq!(client.base(), redacted(&first));
    }
}
