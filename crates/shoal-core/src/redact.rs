//! Credentials never reach a log line or a message: a URL that may carry them is held as a
//! [`SafeUrl`], which prints itself redacted, and a plain [`Url`] is printed through
//! [`redacted`]. Two forms exist because they serve different readers: [`redacted`] keeps the
//! user name and marks where a secret was (`***`), for messages about the user's own URL;
//! [`without_credentials`] leaves user and password out altogether, for URLs that are stored
//! or shared with others (a tracker's URL keys, a store's address).

use std::fmt;
use std::sync::Arc;

use url::Url;

/// A URL whose [`Display`](fmt::Display) and [`Debug`] print it redacted (see [`redacted`]),
/// so that it can be logged without thought. The real URL, for making requests, is
/// [`SafeUrl::as_url`]. Shared, not copied, when cloned: events and errors carry it around,
/// and it keeps them small.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SafeUrl(Arc<Url>);

impl SafeUrl {
    /// Wraps `url`.
    pub fn new(url: Url) -> Self {
        Self(Arc::new(url))
    }

    /// The real URL, credentials included: for requests, never for messages.
    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// The real URL, credentials included.
    pub fn into_url(self) -> Url {
        Arc::unwrap_or_clone(self.0)
    }

    /// The URL as it is displayed: see [`redacted`].
    pub fn redacted(&self) -> String {
        redacted(&self.0)
    }

    /// The URL with user name and password left out: see [`without_credentials`].
    pub fn without_credentials(&self) -> Url {
        without_credentials(&self.0)
    }
}

impl From<Url> for SafeUrl {
    fn from(url: Url) -> Self {
        Self::new(url)
    }
}

/// Serialized redacted, like its `Display`: a URL that leaves the process in a message or an
/// event never carries its credentials.
impl serde::Serialize for SafeUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// Read back as the URL written, which (when it was serialized by shoal) is the redacted one.
impl<'de> serde::Deserialize<'de> for SafeUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Url::parse(&text)
            .map(SafeUrl::new)
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for SafeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for SafeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SafeUrl").field(&self.redacted()).finish()
    }
}

/// The URL with any password replaced by `***` and the values of query parameters whose name
/// looks secret (`token`, `sig`, `*_key`, `X-Amz-*`, …) replaced by `***`. The user name stays:
/// it tells the reader which account was used without giving it away.
pub fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    if shown.query().is_some() {
        let pairs: Vec<(String, String)> = shown
            .query_pairs()
            .map(|(k, v)| {
                let secret = is_secret_param(&k);
                (
                    k.into_owned(),
                    if secret { "***".into() } else { v.into_owned() },
                )
            })
            .collect();
        // Re-encoding the query would respell a harmless one, so it is rewritten only when
        // something in it is hidden.
        if pairs.iter().any(|(_, v)| v == "***") {
            shown.query_pairs_mut().clear().extend_pairs(pairs);
        }
    }
    shown.to_string()
}

/// The URL with user name and password removed. A URL that cannot have credentials (such as
/// `data:`) comes back unchanged.
pub fn without_credentials(url: &Url) -> Url {
    let mut bare = url.clone();
    // Fails only for URLs that cannot carry credentials in the first place.
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    bare
}

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "token",
        "password",
        "passwd",
        "secret",
        "signature",
        "sig",
        "key",
        "auth",
    ]
    .iter()
    .any(|s| name == *s || name.ends_with(&format!("_{s}")) || name.ends_with(&format!("-{s}")))
        || name.starts_with("x-amz-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_redacted() {
        let url = SafeUrl::new(Url::parse("https://u:hunter2@h/f?token=abc").unwrap());
        let json = serde_json::to_string(&url).unwrap();
        assert!(!json.contains("hunter2") && !json.contains("abc"), "{json}");
        let back: SafeUrl = serde_json::from_str(&json).unwrap();
        assert_eq!(back.to_string(), url.to_string());
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn hides_password_and_secret_params() {
        let url = url("https://alice:hunter2@example.org/f?token=abc&name=x");
        let shown = redacted(&url);
        assert_eq!(shown, "https://alice:***@example.org/f?token=***&name=x");
    }

    #[test]
    fn recognizes_secret_parameter_names() {
        let shown = redacted(&url(
            "https://h/f?API_KEY=1&x-auth=2&X-Amz-Credential=3&sig=4&keys=5&monkey=6",
        ));
        assert_eq!(
            shown,
            "https://h/f?API_KEY=***&x-auth=***&X-Amz-Credential=***&sig=***&keys=5&monkey=6"
        );
    }

    #[test]
    fn leaves_plain_urls_alone() {
        for text in [
            "http://127.0.0.1:8080/a%20b.iso?x=1",
            "http://alice@h/only-a-user",
            "https://h/q?a=%41+b",
        ] {
            assert_eq!(redacted(&url(text)), url(text).as_str());
        }
    }

    #[test]
    fn safe_url_displays_redacted_and_keeps_the_real_one() {
        let real = url("https://alice:hunter2@example.org/f?sig=abc");
        let safe = SafeUrl::from(real.clone());
        assert_eq!(safe.to_string(), redacted(&real));
        assert_eq!(safe.redacted(), redacted(&real));
        let debug = format!("{safe:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("abc"),
            "{debug}"
        );
        assert_eq!(safe.as_url(), &real);
        assert_eq!(safe.clone().into_url(), real);
        assert_eq!(safe, SafeUrl::new(real));
    }

    #[test]
    fn strips_credentials() {
        let safe = SafeUrl::new(url("https://alice:hunter2@example.org/f?x=1"));
        assert_eq!(
            safe.without_credentials().as_str(),
            "https://example.org/f?x=1"
        );
        assert_eq!(
            without_credentials(&url("redis://:hunter2@redis-a/1")).as_str(),
            "redis://redis-a/1"
        );
        let data = url("data:text/plain,hi");
        assert_eq!(without_credentials(&data), data);
    }
}
