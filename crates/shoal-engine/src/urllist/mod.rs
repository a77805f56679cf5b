//! Lists of downloads in aria2's input-file format, as `shoal get -i FILE` and the agent's
//! daemon read them: one download per URI line, several TAB-separated URLs on one line being
//! mirrors of the same file, and indented `key=value` lines after it setting that download's
//! options ([`EntryOptions`]).
//!
//! ```text
//! # nightly images (⇥ is a TAB)
//! https://a.example/img.iso⇥https://b.example/img.iso
//!   out=nightly.iso
//!   checksum=sha-256=…
//!   # indented comments are comments too
//! https://c.example/notes.txt
//! ```
//!
//! Blank lines and lines whose first non-blank character is `#` are skipped; CRLF line ends and
//! a leading byte-order mark are tolerated. Only `http` and `https` URLs are accepted. An
//! option shoal does not know is not an error: its name is kept in [`List::unknown`] for the
//! caller's one warning. Errors name the line (1-based) and show the offending URL with
//! credentials redacted. [`write`] writes a list back in the same format.

mod options;

use std::collections::BTreeSet;
use std::fmt::Write as _;

use thiserror::Error;
use url::Url;

use shoal_core::redact::redacted;

pub use self::options::{make_dir, EntryOptionError, EntryOptions, KNOWN};

/// One download from a list: the mirrors of one file, in the order the line gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// At least one URL; duplicates on the same line are dropped.
    pub mirrors: Vec<Url>,
    /// The line it came from, counting from 1.
    pub line: usize,
    /// What the indented lines after it set.
    pub options: EntryOptions,
}

/// A parsed list: its downloads, and the options it sets that shoal does not know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct List {
    /// The downloads, in list order.
    pub entries: Vec<ListEntry>,
    /// Names of options set in the list that shoal ignores, sorted, each once.
    pub unknown: BTreeSet<String>,
}

impl List {
    /// The one warning line about [`List::unknown`], if any.
    pub fn warning(&self, shown: &str) -> Option<String> {
        (!self.unknown.is_empty()).then(|| {
            let names: Vec<&str> = self.unknown.iter().map(String::as_str).collect();
            format!(
                "{shown}: ignoring options shoal does not have: {}",
                names.join(", ")
            )
        })
    }
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

    /// An indented `key=value` line comes before any URL line.
    #[error("line {line}: an option ({key}=…) before any URL; put it under the URL it is for")]
    OptionFirst {
        /// The line, counting from 1.
        line: usize,
        /// The option's name.
        key: String,
    },

    /// An option's value is not one it takes.
    #[error("line {line}: {source}")]
    BadOption {
        /// The line, counting from 1.
        line: usize,
        /// The option and what it takes.
        #[source]
        source: EntryOptionError,
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

/// Parses a download list. An empty list (only blank and comment lines) has no entries; what
/// that means is the caller's to say.
pub fn parse(text: &str) -> Result<List, ListError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut list = List::default();
    for (index, raw) in text.split('\n').enumerate() {
        let line = index + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            if let Some((key, value)) = option_line(content) {
                let Some(entry) = list.entries.last_mut() else {
                    return Err(ListError::OptionFirst {
                        line,
                        key: key.to_string(),
                    });
                };
                let known = (entry.options)
                    .set(key, value)
                    .map_err(|source| ListError::BadOption { line, source })?;
                if !known {
                    list.unknown.insert(key.to_string());
                }
                continue;
            }
        }
        let mut mirrors: Vec<Url> = Vec::new();
        for field in content.split('\t').map(str::trim).filter(|f| !f.is_empty()) {
            let url = parse_url(field, line)?;
            if !mirrors.contains(&url) {
                mirrors.push(url);
            }
        }
        list.entries.push(ListEntry {
            mirrors,
            line,
            options: EntryOptions::default(),
        });
    }
    Ok(list)
}

/// `key=value` when `text` is an option line: an aria2 option name (lower-case letters,
/// digits and dashes) before the first `=`. An indented URL is not one, so lists written
/// before options were read keep their meaning.
fn option_line(text: &str) -> Option<(&str, &str)> {
    let (key, value) = text.split_once('=')?;
    let key = key.trim();
    let named = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    named.then(|| (key, value.trim()))
}

/// One download as a list in this format: its URLs on one TAB-separated line (with their
/// credentials: the list is the user's), then one indented line per option.
pub fn write(mirrors: &[Url], options: &EntryOptions) -> String {
    let urls: Vec<&str> = mirrors.iter().map(Url::as_str).collect();
    let mut text = urls.join("\t");
    text.push('\n');
    for (key, value) in options.pairs() {
        let _ = writeln!(text, " {key}={value}");
    }
    text
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
    use std::path::Path;

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
        let entries = parse(list).unwrap().entries;
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
        let entries = parse(list).unwrap().entries;
        assert_eq!(
            entries.iter().map(|e| e.line).collect::<Vec<_>>(),
            [1, 4, 5]
        );
        assert_eq!(urls(&entries[1]), ["http://h/b", "http://i/b"]);
        assert_eq!(urls(&entries[2]), ["http://h/c"]);
    }

    #[test]
    fn empty_and_comment_only_lists_are_empty() {
        assert_eq!(parse("").unwrap().entries, []);
        assert_eq!(parse("\n  \n# only\r\n\t\n").unwrap().entries, []);
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
    fn aria2_input_files_set_options_per_download() {
        // The issue's list, which failed on its second line as "not a URL".
        let list = "\
http://h/a.bin\thttp://mirror/a.bin
  out=list-a.bin
  dir=/srv/in
\tsplit=4
  # a comment between options
  header=X-Token: abc
  continue=true
  max-download-limit=512K
http://h/b.bin
 checksum=sha-256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  max-connection-per-server=2
  allow-overwrite=true
  continue=true
";
        let list = parse(list).unwrap();
        assert_eq!(list.entries.len(), 2);
        let a = &list.entries[0];
        assert_eq!(urls(a), ["http://h/a.bin", "http://mirror/a.bin"]);
        assert_eq!(a.options.out.as_deref(), Some(Path::new("list-a.bin")));
        assert_eq!(a.options.dir.as_deref(), Some(Path::new("/srv/in")));
        assert_eq!(a.options.split.map(|c| c.get()), Some(4));
        assert_eq!(a.options.headers, ["X-Token: abc"]);
        assert_eq!(
            a.options.max_download_limit.map(|r| r.bytes_per_sec()),
            Some(512 * 1024)
        );
        let b = &list.entries[1];
        assert_eq!(b.line, 9);
        assert!(b.options.checksum.is_some());
        assert_eq!(b.options.per_server.map(|c| c.get()), Some(2));
        assert_eq!(
            list.unknown.iter().collect::<Vec<_>>(),
            ["allow-overwrite", "continue"]
        );
        assert_eq!(
            list.warning("in.txt").unwrap(),
            "in.txt: ignoring options shoal does not have: allow-overwrite, continue"
        );
        // Written back and read again, a download keeps its URLs and options.
        let text = write(&a.mirrors, &a.options);
        let again = parse(&text).unwrap();
        assert_eq!(again.entries[0].mirrors, a.mirrors);
        assert_eq!(again.entries[0].options, a.options);
        assert!(again.unknown.is_empty());
    }

    #[test]
    fn option_lines_need_a_url_before_them_and_a_valid_value() {
        let err = parse("  out=a.bin\nhttp://h/a\n").unwrap_err();
        assert!(
            matches!(err, ListError::OptionFirst { line: 1, .. }),
            "{err:?}"
        );
        let err = parse("http://h/a\n  split=lots\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: split: expected a number from 1 to 1024"
        );
        // An indented URL is still a download of its own, not an option.
        let list = parse("http://h/a\n  http://h/b?x=1\n").unwrap();
        assert_eq!(list.entries.len(), 2);
    }

    #[test]
    fn shown_unparsed_is_bounded_and_escaped() {
        let long = format!("http://h/{}", "x".repeat(500));
        let shown = shown_unparsed(&long);
        assert!(shown.chars().count() <= MAX_SHOWN + 1 && shown.ends_with('…'));
        assert_eq!(shown_unparsed("a\u{1b}[31mb"), "a\\u{1b}[31mb");
    }
}
