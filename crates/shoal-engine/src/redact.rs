//! Credentials never reach a log line or a message: URLs are printed through [`redacted`].

use url::Url;

/// The URL with any password replaced by `***` and sensitive query parameters masked.
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
        if pairs.iter().any(|(_, v)| v == "***") {
            shown.query_pairs_mut().clear().extend_pairs(pairs);
        }
    }
    shown.to_string()
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
    fn hides_password_and_secret_params() {
        let url = Url::parse("https://alice:hunter2@example.org/f?token=abc&name=x").unwrap();
        let shown = redacted(&url);
        assert!(
            !shown.contains("hunter2") && !shown.contains("abc"),
            "{shown}"
        );
        assert!(
            shown.contains("alice") && shown.contains("name=x"),
            "{shown}"
        );
    }

    #[test]
    fn leaves_plain_urls_alone() {
        let url = Url::parse("http://127.0.0.1:8080/a%20b.iso?x=1").unwrap();
        assert_eq!(redacted(&url), url.as_str());
    }
}
