//! The registries the mirror forwards to (`--registry-upstream URL`, one per registry host), and
//! which of them a request goes to: the one containerd names in its `ns=` query parameter, else
//! the only one configured.

use std::fmt;
use std::str::FromStr;

use shoal_core::redact::SafeUrl;
use thiserror::Error;
use url::Url;

/// Docker Hub's registry host; containerd names it `docker.io` in `ns=`.
const DOCKER_HUB: &str = "registry-1.docker.io";
/// Names that mean Docker Hub in an image reference, hence in `ns=`.
const DOCKER_HUB_ALIASES: [&str; 3] = ["docker.io", "index.docker.io", DOCKER_HUB];

/// Why a `--registry-upstream` URL was refused; the message says what form to use.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UpstreamError {
    /// Not a URL at all.
    #[error("--registry-upstream {given:?} is not a URL ({cause}); give one like https://registry-1.docker.io")]
    Parse {
        /// The text given.
        given: String,
        /// What the URL parser said.
        cause: url::ParseError,
    },
    /// Not `http://` or `https://`.
    #[error("--registry-upstream {0} must be an http:// or https:// URL")]
    Scheme(String),
    /// Credentials in the URL: the mirror forwards each client's own, never one of its own
    /// that every client would borrow.
    #[error("--registry-upstream {0} carries credentials; leave them out: each client's own Authorization is forwarded")]
    Credentials(String),
    /// A query or a fragment, which no registry base URL has.
    #[error("--registry-upstream {0} has a query or fragment; give the registry's base URL only")]
    Query(String),
    /// Two upstreams for the same registry host.
    #[error("--registry-upstream is given twice for {0}; give one per registry host")]
    Duplicate(String),
}

/// One upstream registry: an `http://` or `https://` base URL without credentials or query
/// (`http://` for local registries).
#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    base: Url,
}

impl Upstream {
    /// `host` or `host:port` (the port when the URL names one), as image references and
    /// containerd's `ns=` spell the registry.
    pub fn host(&self) -> String {
        let host = self.base.host_str().unwrap_or_default();
        match self.base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        }
    }

    /// The host (as in the URL, brackets and all for IPv6) and port the mirror connects to.
    pub(crate) fn authority(&self) -> (String, u16) {
        let host = self.base.host_str().unwrap_or_default().to_string();
        (host, self.base.port_or_known_default().unwrap_or(443))
    }

    /// The upstream URL for a request to the mirror for `path` with `query` (containerd's
    /// `ns=` left out: it is addressed to the mirror).
    pub(crate) fn url_for(&self, path: &str, query: Option<&str>) -> SafeUrl {
        let mut url = self.base.clone();
        let prefix = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{prefix}{path}"));
        let kept: Vec<(String, String)> = query
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .filter(|(key, _)| key != "ns")
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
        SafeUrl::new(url)
    }

    /// Whether containerd's `ns=` value names this registry.
    fn is_named(&self, ns: &str) -> bool {
        let host = self.host();
        ns.eq_ignore_ascii_case(&host)
            || (DOCKER_HUB_ALIASES
                .iter()
                .any(|a| a.eq_ignore_ascii_case(ns))
                && DOCKER_HUB_ALIASES.contains(&host.to_ascii_lowercase().as_str()))
    }
}

impl FromStr for Upstream {
    type Err = UpstreamError;

    fn from_str(given: &str) -> Result<Self, Self::Err> {
        let base = Url::parse(given).map_err(|cause| UpstreamError::Parse {
            given: given.to_string(),
            cause,
        })?;
        let shown = || shoal_core::redact::redacted(&base);
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(UpstreamError::Scheme(shown()));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(UpstreamError::Credentials(shown()));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(UpstreamError::Query(shown()));
        }
        Ok(Self { base })
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base.as_str().trim_end_matches('/'))
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Upstream({self})")
    }
}

/// Why a registry request has no upstream; the message says which flag to give.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum Unrouted {
    /// No `--registry-upstream` at all.
    #[error("this agent mirrors no registry; start it with --registry-upstream URL")]
    NoneConfigured,
    /// containerd named a registry no `--registry-upstream` is for.
    #[error("this agent mirrors no registry {ns}; start it with --registry-upstream https://{ns} (or http:// for a local one)")]
    NotMirrored {
        /// The `ns=` value.
        ns: String,
    },
    /// Several upstreams and a request that names none (only containerd says `ns=`).
    #[error("this agent mirrors {0} registries and the request does not say which (containerd's ns= parameter); run one --registry-upstream per agent for other clients")]
    Ambiguous(usize),
}

/// Every `--registry-upstream`, at most one per registry host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Upstreams {
    list: Vec<Upstream>,
}

impl Upstreams {
    /// The set of `list`.
    ///
    /// # Errors
    /// When two name the same registry host.
    pub fn new(list: Vec<Upstream>) -> Result<Self, UpstreamError> {
        for (i, upstream) in list.iter().enumerate() {
            if list[..i].iter().any(|earlier| {
                earlier.host().eq_ignore_ascii_case(&upstream.host())
                    || earlier.is_named(&upstream.host())
            }) {
                return Err(UpstreamError::Duplicate(upstream.host()));
            }
        }
        Ok(Self { list })
    }

    /// Every upstream configured.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Upstream> {
        self.list.iter()
    }

    /// Whether no upstream is configured (the mirror then answers every request with an error
    /// saying so).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The upstream of a request whose query is `query`: the one its `ns=` names, else the
    /// only one configured.
    pub(crate) fn choose(&self, query: Option<&str>) -> Result<&Upstream, Unrouted> {
        let ns = query.and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(key, _)| key == "ns")
                .map(|(_, value)| value.into_owned())
        });
        match (ns, self.list.as_slice()) {
            (_, []) => Err(Unrouted::NoneConfigured),
            (Some(ns), list) => list
                .iter()
                .find(|u| u.is_named(&ns))
                .ok_or(Unrouted::NotMirrored { ns }),
            (None, [only]) => Ok(only),
            (None, list) => Err(Unrouted::Ambiguous(list.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstreams(urls: &[&str]) -> Upstreams {
        Upstreams::new(urls.iter().map(|u| u.parse().unwrap()).collect()).unwrap()
    }

    #[test]
    fn containerd_ns_picks_the_upstream_for_that_host() {
        let set = upstreams(&["https://registry-1.docker.io", "http://127.0.0.1:5000"]);
        let chosen = |q: &str| set.choose(Some(q)).map(ToString::to_string);
        assert_eq!(
            chosen("ns=docker.io"),
            Ok("https://registry-1.docker.io".into())
        );
        assert_eq!(
            chosen("ns=127.0.0.1:5000"),
            Ok("http://127.0.0.1:5000".into())
        );
        assert_eq!(
            chosen("n=10&ns=127.0.0.1%3A5000"),
            Ok("http://127.0.0.1:5000".into())
        );
        assert_eq!(
            chosen("ns=quay.io"),
            Err(Unrouted::NotMirrored {
                ns: "quay.io".into()
            })
        );
        assert_eq!(
            chosen("ns=127.0.0.1:5001"),
            Err(Unrouted::NotMirrored {
                ns: "127.0.0.1:5001".into()
            })
        );
    }

    #[test]
    fn without_ns_the_only_upstream_is_chosen() {
        let one = upstreams(&["http://127.0.0.1:5000/"]);
        assert_eq!(
            one.choose(None).unwrap().to_string(),
            "http://127.0.0.1:5000"
        );
        assert_eq!(one.choose(Some("n=1")).unwrap().host(), "127.0.0.1:5000");
        let two = upstreams(&["https://a.example", "https://b.example"]);
        assert_eq!(two.choose(None), Err(Unrouted::Ambiguous(2)));
        assert_eq!(
            Upstreams::default().choose(None),
            Err(Unrouted::NoneConfigured)
        );
        assert_eq!(
            Upstreams::default().choose(Some("ns=docker.io")),
            Err(Unrouted::NoneConfigured)
        );
    }

    #[test]
    fn the_upstream_url_keeps_the_path_and_query_but_not_ns() {
        let up: Upstream = "https://mirror.example/prefix/".parse().unwrap();
        assert_eq!(
            up.url_for("/v2/app/tags/list", Some("n=5&ns=docker.io&last=b"))
                .as_url()
                .as_str(),
            "https://mirror.example/prefix/v2/app/tags/list?n=5&last=b"
        );
        let plain: Upstream = "http://127.0.0.1:5000".parse().unwrap();
        assert_eq!(
            plain
                .url_for("/v2/", Some("ns=127.0.0.1:5000"))
                .as_url()
                .as_str(),
            "http://127.0.0.1:5000/v2/"
        );
    }

    #[test]
    fn bad_upstreams_are_refused_with_the_fix() {
        let refused = |s: &str| s.parse::<Upstream>().unwrap_err();
        assert!(matches!(
            refused("registry-1.docker.io"),
            UpstreamError::Parse { .. }
        ));
        assert_eq!(
            refused("ftp://r.example"),
            UpstreamError::Scheme("ftp://r.example/".into())
        );
        let with_password = refused("https://u:secret@r.example");
        assert!(
            !with_password.to_string().contains("secret"),
            "{with_password}"
        );
        assert!(matches!(with_password, UpstreamError::Credentials(_)));
        assert!(matches!(
            refused("https://r.example/?a=b"),
            UpstreamError::Query(_)
        ));
        let twice = Upstreams::new(vec![
            "https://registry-1.docker.io".parse().unwrap(),
            "https://docker.io".parse().unwrap(),
        ]);
        assert_eq!(twice, Err(UpstreamError::Duplicate("docker.io".into())));
    }
}
