//! Lists of downloads, as `shoal get -i FILE` reads them: one download per line, several
//! TAB-separated URLs on one line being mirrors of the same file.
//!
//! ```text
//! # nightly images (⇥ is a TAB)
//! https://a.example/img.iso⇥https://b.example/img.iso
//!   # indented comments are comments too
//! https://c.example/notes.txt
//! ```
//!
//! Blank lines and lines whose first non-blank character is `#` are skipped; CRLF line ends and
//! a leading byte-order mark are tolerated. Only `http` and `https` URLs are accepted. Errors
//! name the line (1-based) and show the offending URL with credentials redacted.

use thiserror::Error;
use url::Url;

use shoal_core::redact::redacted;

/// One download from a list: the mirrors of one file, in the order the line gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// At least one URL; duplicates on the same line are dropped.
    pub mirrors: Vec<Url>,
    /// The line it came from, counting from 1.
    pub line: usize,
}

/// Why a download list (`-i FILE`) was refused; the message names the line and what to write
/// instead.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ListError {
    /// A line's text does not parse as a URL.
    #[error("line {line}: not a URL ({source}): {shown}")]
    BadUrl {
        /// The line, counting from 1.
        line: usize,
        /// The text, with anything that may hold credentials hidden.
        shown: String,
        /// The URL parser's error.
        #[source]
        source: url::ParseError,
    },

    /// A URL's scheme is not `http` or `https`.
    #[error("line {line}: {shown}: only http and https URLs can be downloaded")]
    Scheme {
        /// The line, counting from 1.
        line: usize,
        /// The URL, credentials redacted.
        shown: String,
    },

    /// A URL holds a space (mirrors are separated by TABs).
    #[error(
        "line {line}: {shown}: a URL cannot contain spaces; separate mirrors of one file \
         with a TAB, and write a space in a URL as %20"
    )]
    Space {
        /// The line, counting from 1.
        line: usize,
        /// The text, with anything that may hold credentials hidden.
        shown: String,
    },
}

/// Parses a download list. An empty list (only blank and comment lines) is `Ok(vec![])`; what
/// that means is the caller's to say.
pub fn parse(text: &str) -> Result<Vec<ListEntry>, ListError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut entries = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let line = index + 1;
        let content = raw.strip_suffix('\r').unwrap_or(raw).trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let mut mirrors: Vec<Url> = Vec::new();
        for field in content.split('\t').map(str::trim).filter(|f| !f.is_empty()) {
            let url = parse_url(field, line)?;
            if !mirrors.contains(&url) {
                mirrors.push(url);
            }
        }
        entries.push(ListEntry { mirrors, line });
    }
    Ok(entries)
}

fn parse_url(field: &str, line: usize) -> Result<Url, ListError> {
    if field.contains(char::is_whitespace) {
        let first = field.split(char::is_whitespace).next().unwrap_or(field);
        return Err(ListError::Space {
            line,
            shown: shown_text(first),
        });
    }
    let url = Url::parse(field).map_err(|source| ListError::BadUrl {
        line,
        shown: shown_unparsed(field),
        source,
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ListError::Scheme {
            line,
            shown: shown_url(&url),
        });
    }
    Ok(url)
}

/// A parsed URL made safe to print. [`redacted`] finds the password of a URL with a host; in
/// one without (`alice:hunter2@h`, parsed as scheme `alice`) it cannot, so only the scheme is
/// shown.
pub(crate) fn shown_url(url: &Url) -> String {
    if url.has_host() {
        redacted(url)
    } else {
        format!("{}:…", url.scheme())
    }
}

/// How text is shown in a message: parsed and redacted if it is a URL, else through
/// [`shown_unparsed`].
fn shown_text(text: &str) -> String {
    match Url::parse(text) {
        Ok(url) => shown_url(&url),
        Err(_) => shown_unparsed(text),
    }
}

/// Longest text shown of something that is not a URL, in characters.
const MAX_SHOWN: usize = 120;

/// Text that did not parse as a URL, made safe to print. A URL parser cannot tell us where its
/// user info or secret parameters are, so: when there is an `@`, only the scheme is shown
/// (`http://…`), as everything between it and the `@` may be a password and nothing after the
/// `@` is needed to find the line; a query or fragment is cut (`?…`), as it may carry a token;
/// control characters are escaped and the rest is bounded in length.
pub(crate) fn shown_unparsed(text: &str) -> String {
    if let Some(at) = text.find('@') {
        let scheme_end = text
            .find("://")
            .filter(|&i| i < at)
            .map_or(0, |i| i + "://".len());
        return format!("{}… (hidden: it may hold credentials)", &text[..scheme_end]);
    }
    let (kept, cut) = match text.find(['?', '#']) {
        Some(i) => (&text[..i], true),
        None => (text, false),
    };
    let mut shown: String = kept.chars().take(MAX_SHOWN).collect();
    let truncated = kept.chars().nth(MAX_SHOWN).is_some();
    shown = shown.escape_debug().to_string();
    if cut {
        shown.push_str(&text[kept.len()..=kept.len()]);
        shown.push('…');
    } else if truncated {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(entry: &ListEntry) -> Vec<&str> {
        entry.mirrors.iter().map(Url::as_str).collect()
    }

    #[test]
    fn one_download_per_line_and_tab_separated_mirrors() {
        let list = "\
# a comment
https://a.example/img.iso\thttps://b.example/img.iso\t http://c.example/img.iso

   # an indented comment
\thttps://d.example/notes.txt\t\t
https://a.example/img.iso\thttps://a.example/img.iso
";
        let entries = parse(list).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].line, 2);
        assert_eq!(
            urls(&entries[0]),
            [
                "https://a.example/img.iso",
                "https://b.example/img.iso",
                "http://c.example/img.iso"
            ]
        );
        assert_eq!(entries[1].line, 5);
        assert_eq!(urls(&entries[1]), ["https://d.example/notes.txt"]);
        assert_eq!(entries[2].line, 6, "duplicate mirrors collapse");
        assert_eq!(urls(&entries[2]), ["https://a.example/img.iso"]);
    }

    #[test]
    fn crlf_bom_and_no_final_newline() {
        let list = "\u{feff}http://h/a\r\n\r\n# c\r\nhttp://h/b\thttp://i/b\r\nhttp://h/c";
        let entries = parse(list).unwrap();
        assert_eq!(
            entries.iter().map(|e| e.line).collect::<Vec<_>>(),
            [1, 4, 5]
        );
        assert_eq!(urls(&entries[1]), ["http://h/b", "http://i/b"]);
        assert_eq!(urls(&entries[2]), ["http://h/c"]);
    }

    #[test]
    fn empty_and_comment_only_lists_are_empty() {
        assert_eq!(parse("").unwrap(), []);
        assert_eq!(parse("\n  \n# only\r\n\t\n").unwrap(), []);
    }

    #[test]
    fn errors_name_the_line_and_the_url() {
        let err = parse("http://h/a\n\nnot a url\n").unwrap_err();
        assert!(matches!(err, ListError::Space { line: 3, .. }), "{err:?}");

        let err = parse("http://h/a\nexample.org/file\n").unwrap_err();
        assert_eq!(
            err,
            ListError::BadUrl {
                line: 2,
                shown: "example.org/file".into(),
                source: url::ParseError::RelativeUrlWithoutBase
            }
        );
        assert_eq!(
            err.to_string(),
            "line 2: not a URL (relative URL without a base): example.org/file"
        );

        let err = parse("http://h/a\thttp://h:99999/b").unwrap_err();
        assert!(matches!(err, ListError::BadUrl { line: 1, .. }), "{err:?}");

        let err = parse("ftp://h/a").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: ftp://h/a: only http and https URLs can be downloaded"
        );
    }

    #[test]
    fn credentials_never_reach_a_message() {
        // Parseable: redacted by crate::redact.
        let err = parse("ftp://alice:hunter2@h/a?token=t0ps3cret").unwrap_err();
        let text = err.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("t0ps3cret"),
            "{text}"
        );
        assert!(text.contains("alice") && text.contains("line 1"), "{text}");

        // Unparseable: nothing between the scheme and the last `@`, nothing after it.
        for bad in [
            "http://alice:hunter2@h:99999/a",
            "http://alice:hunt@er2@[::1/a",
            "alice:hunter2@h/a",
        ] {
            let text = parse(bad).unwrap_err().to_string();
            assert!(
                !text.contains("hunter2") && !text.contains("er2") && !text.contains("/a"),
                "{text}"
            );
        }
        let text = parse("http://h:99999/a?sig=s3cret")
            .unwrap_err()
            .to_string();
        assert!(
            !text.contains("s3cret") && text.contains("http://h:99999/a?…"),
            "{text}"
        );

        // A space error shows only the first word, redacted.
        let text = parse("https://u:pw@h/a b.iso").unwrap_err().to_string();
        assert!(!text.contains("pw") && text.contains("line 1"), "{text}");
    }

    #[test]
    fn shown_unparsed_is_bounded_and_escaped() {
        let long = format!("http://h/{}", "x".repeat(500));
        let shown = shown_unparsed(&long);
        assert!(shown.chars().count() <= MAX_SHOWN + 1 && shown.ends_with('…'));
        assert_eq!(shown_unparsed("a\u{1b}[31mb"), "a\\u{1b}[31mb");
    }
}
