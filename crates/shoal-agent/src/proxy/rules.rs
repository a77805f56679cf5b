//! Which answers the proxy serves through the swarm (pure, unit-tested): a `GET` whose
//! origin answered `200` (or `206` to the client's own `Range`) with a length of at least
//! `--proxy-min-size`, that the origin does not mark private, not encoded, not asked with
//! credentials (unless `--proxy-share-authorized`), and whose URL matches `--proxy-url` when
//! one is given. Everything else passes through unchanged.

use std::fmt;
use std::str::FromStr;

use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, RANGE,
};
use http::{HeaderMap, Method, StatusCode};
use regex_automata::meta::Regex;
use thiserror::Error;

/// The default `--proxy-min-size`: 4 MiB; smaller answers are cheaper to pass through than
/// to share.
pub const DEFAULT_MIN_SIZE: u64 = 4 << 20;

/// The URLs `--proxy-url` lets through the swarm: a regular expression searched in the URL.
#[derive(Clone)]
pub struct UrlPattern {
    text: String,
    regex: Regex,
}

/// Why a `--proxy-url` does not compile.
#[derive(Debug, Error)]
#[error("--proxy-url {text:?} is not a regular expression: {message}")]
pub struct UrlPatternError {
    /// The text given.
    pub text: String,
    /// What the regular expression compiler said.
    pub message: String,
}

impl FromStr for UrlPattern {
    type Err = UrlPatternError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let regex = Regex::new(text).map_err(|e| UrlPatternError {
            text: text.to_string(),
            message: e.to_string(),
        })?;
        Ok(Self {
            text: text.to_string(),
            regex,
        })
    }
}

impl UrlPattern {
    /// Whether the pattern occurs in `url`.
    pub fn matches(&self, url: &str) -> bool {
        self.regex.is_match(url)
    }
}

impl fmt::Debug for UrlPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UrlPattern({:?})", self.text)
    }
}

/// What decides that an answer goes through the swarm.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The least length of an answer served from the swarm.
    pub min_size: u64,
    /// When set, only URLs it matches are served from the swarm.
    pub url: Option<UrlPattern>,
    /// Requests carrying `Authorization` are served from the swarm too: whoever is allowed
    /// to use the proxy then gets what one client's credentials fetched.
    pub share_authorized: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            min_size: DEFAULT_MIN_SIZE,
            url: None,
            share_authorized: false,
        }
    }
}

/// What the proxy does with one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Served through the swarm: the content is this long.
    Swarm {
        /// The whole content's length in bytes.
        size: u64,
    },
    /// Passed through unchanged, for this reason (logged).
    Pass(&'static str),
}

impl Rules {
    /// The verdict on the origin's answer (`status`, `response`) to `method` `url` asked with
    /// `request`.
    pub(crate) fn judge(
        &self,
        method: &Method,
        url: &str,
        request: &HeaderMap,
        status: StatusCode,
        response: &HeaderMap,
    ) -> Verdict {
        use Verdict::Pass;
        if method != Method::GET {
            return Pass("not a GET");
        }
        if request.contains_key(AUTHORIZATION) && !self.share_authorized {
            return Pass("the request carries credentials");
        }
        if self.url.as_ref().is_some_and(|p| !p.matches(url)) {
            return Pass("the URL does not match --proxy-url");
        }
        let size = match status {
            StatusCode::OK => number(response, CONTENT_LENGTH),
            StatusCode::PARTIAL_CONTENT if request.contains_key(RANGE) => response
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit_once('/'))
                .and_then(|(_, total)| total.trim().parse().ok()),
            _ => return Pass("the origin did not answer 200"),
        };
        let Some(size) = size else {
            return Pass("the origin did not say the length");
        };
        if size < self.min_size {
            return Pass("smaller than --proxy-min-size");
        }
        let private = response
            .get_all(CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|d| {
                d.split('=')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .any(|d| d == "private" || d == "no-store");
        if private {
            return Pass("the origin marks it private or no-store");
        }
        let encoded = response
            .get(CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        if encoded {
            return Pass("the origin encodes it");
        }
        Verdict::Swarm { size }
    }
}

fn number(headers: &HeaderMap, name: http::HeaderName) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://files.test/model.bin";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn judge(
        rules: &Rules,
        request: &[(&'static str, &str)],
        status: u16,
        response: &[(&'static str, &str)],
    ) -> Verdict {
        rules.judge(
            &Method::GET,
            URL,
            &headers(request),
            StatusCode::from_u16(status).unwrap(),
            &headers(response),
        )
    }

    #[test]
    fn a_large_public_answer_goes_through_the_swarm() {
        let rules = Rules::default();
        let big = (8 << 20).to_string();
        assert_eq!(
            judge(
                &rules,
                &[],
                200,
                &[
                    ("content-length", &big),
                    ("cache-control", "public, max-age=60")
                ]
            ),
            Verdict::Swarm { size: 8 << 20 }
        );
        let range = format!("bytes 0-99/{big}");
        assert_eq!(
            judge(
                &rules,
                &[("range", "bytes=0-99")],
                206,
                &[("content-length", "100"), ("content-range", &range)]
            ),
            Verdict::Swarm { size: 8 << 20 }
        );
    }

    #[test]
    fn everything_else_passes_through() {
        let rules = Rules::default();
        let big = (8 << 20).to_string();
        let big = [("content-length", big.as_str())];
        assert!(matches!(
            judge(&rules, &[], 200, &[("content-length", "100")]),
            Verdict::Pass(_)
        ));
        assert!(matches!(judge(&rules, &[], 200, &[]), Verdict::Pass(_)));
        assert!(matches!(judge(&rules, &[], 404, &big), Verdict::Pass(_)));
        assert!(matches!(judge(&rules, &[], 206, &big), Verdict::Pass(_)));
        assert!(matches!(
            judge(&rules, &[("authorization", "Basic eDp5")], 200, &big),
            Verdict::Pass(_)
        ));
        for cc in ["private", "no-store", "max-age=0, PRIVATE=\"x\""] {
            let response = [big[0], ("cache-control", cc)];
            assert!(
                matches!(judge(&rules, &[], 200, &response), Verdict::Pass(_)),
                "{cc}"
            );
        }
        let gzip = [big[0], ("content-encoding", "gzip")];
        assert!(matches!(judge(&rules, &[], 200, &gzip), Verdict::Pass(_)));
        let head = rules.judge(
            &Method::HEAD,
            URL,
            &HeaderMap::new(),
            StatusCode::OK,
            &headers(&big),
        );
        assert!(matches!(head, Verdict::Pass(_)));
    }

    #[test]
    fn the_url_pattern_and_credentials_are_honoured() {
        let big = (8 << 20).to_string();
        let big = [("content-length", big.as_str())];
        let rules = Rules {
            url: Some(r"\.safetensors$".parse().unwrap()),
            share_authorized: true,
            ..Rules::default()
        };
        assert!(matches!(judge(&rules, &[], 200, &big), Verdict::Pass(_)));
        let hit = rules.judge(
            &Method::GET,
            "http://files.test/m.safetensors",
            &headers(&[("authorization", "Bearer t")]),
            StatusCode::OK,
            &headers(&big),
        );
        assert!(matches!(hit, Verdict::Swarm { .. }));
        assert!("(".parse::<UrlPattern>().is_err());
    }
}
