//! Normalizing the URL of a URL task, so that spellings of one URL map to one content: the
//! scheme and host are lowercased, default ports, `.` and `..` segments and the fragment are
//! removed, and credentials are stripped (they must never be stored or shown).

use shoal_core::redact::without_credentials;
use shoal_core::wire::{UrlKey, MAX_FILE_SIZE, MAX_URL_LEN, MAX_VALIDATOR_LEN};
use url::Url;

use crate::error::ApiError;

/// Validates and normalizes a key; `prefix` is put before field names in errors (`key.` in a
/// JSON body, nothing in a query string).
pub fn normalize(key: UrlKey, prefix: &str) -> Result<UrlKey, ApiError> {
    let field = |name: &str| format!("{prefix}{name}");
    if key.url.len() > MAX_URL_LEN {
        return Err(ApiError::field(
            field("url"),
            format!("url is over {MAX_URL_LEN} bytes"),
        ));
    }
    let parsed = Url::parse(&key.url)
        .map_err(|e| ApiError::field(field("url"), format!("url does not parse: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || !parsed.has_host() {
        return Err(ApiError::field(
            field("url"),
            "url must be an http or https URL with a host",
        ));
    }
    let mut url = without_credentials(&parsed);
    url.set_fragment(None);
    if key.size > MAX_FILE_SIZE {
        return Err(ApiError::field(
            field("size"),
            format!("size is over the maximum of 2^63 bytes ({MAX_FILE_SIZE})"),
        ));
    }
    for (name, value) in [("etag", &key.etag), ("last_modified", &key.last_modified)] {
        if value.as_ref().is_some_and(|v| v.len() > MAX_VALIDATOR_LEN) {
            return Err(ApiError::field(
                field(name),
                format!("{name} is over {MAX_VALIDATOR_LEN} bytes"),
            ));
        }
    }
    Ok(UrlKey {
        url: url.into(),
        ..key
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(url: &str) -> UrlKey {
        UrlKey {
            url: url.into(),
            size: 10,
            etag: None,
            last_modified: None,
        }
    }

    #[test]
    fn normalizes_spellings_and_strips_credentials() {
        let k = normalize(key("HTTPS://user:pw@Example.COM:443/a/./b/../c#frag"), "").unwrap();
        assert_eq!(k.url, "https://example.com/a/c");
        assert_eq!(normalize(key("http://h:80"), "").unwrap().url, "http://h/");
    }

    #[test]
    fn rejects_other_schemes_and_huge_sizes() {
        assert!(normalize(key("ftp://h/x"), "").is_err());
        assert!(normalize(key("not a url"), "").is_err());
        let mut big = key("http://h/x");
        big.size = MAX_FILE_SIZE + 1;
        let err = normalize(big, "key.").unwrap_err();
        assert!(matches!(err, ApiError::BadRequest { field: Some(f), .. } if f == "key.size"));
    }
}
