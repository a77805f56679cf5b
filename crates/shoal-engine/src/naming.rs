//! Choosing the output file name: `Content-Disposition`, else the URL's last path segment,
//! else `index.html`; always sanitized so a server cannot make us write outside the directory.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use percent_encoding::percent_decode_str;
use shoal_core::naming::sanitize_file_name;
use url::Url;

const FALLBACK: &str = "index.html";

/// The names the downloads of one batch have taken, so that two whose servers give the same
/// name (`Content-Disposition`) save under distinct ones, as aria2c's auto-renaming does:
/// `name.ext`, then `name.1.ext`, `name.2.ext`, … Cheap to clone; clones share the names.
#[derive(Debug, Clone, Default)]
pub struct Claims(Arc<Mutex<HashSet<PathBuf>>>);

impl Claims {
    /// `path`, or the first numbered variant of it no other download of the batch has taken;
    /// the name returned is taken from then on.
    pub fn claim(&self, path: &Path) -> PathBuf {
        let mut taken = self.0.lock().expect("claims lock");
        let free = (0..)
            .map(|n| numbered(path, n))
            .find(|p| !taken.contains(p))
            .expect("some number is free");
        taken.insert(free.clone());
        free
    }
}

/// `dir/name.ext` → `dir/name.N.ext` (`n` = 0: unchanged).
fn numbered(path: &Path, n: u64) -> PathBuf {
    if n == 0 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{n}"),
    };
    path.with_file_name(name)
}

/// `big.iso` → `big.iso.part`.
pub fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    path.with_file_name(name)
}

/// The name to save a response under, given its `Content-Disposition` header (if any) and the
/// final URL.
pub fn file_name(content_disposition: Option<&str>, url: &Url) -> String {
    content_disposition
        .and_then(disposition_name)
        .and_then(|name| sanitize_file_name(&name))
        .or_else(|| url_name(url))
        .unwrap_or_else(|| FALLBACK.to_string())
}

fn url_name(url: &Url) -> Option<String> {
    let segment = url.path_segments()?.next_back()?;
    let decoded = percent_decode_str(segment).decode_utf8_lossy();
    sanitize_file_name(&decoded)
}

/// The file name a `Content-Disposition` value carries: RFC 6266 `filename*` (RFC 5987
/// encoding) wins over `filename`.
fn disposition_name(value: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for param in split_params(value).into_iter().skip(1) {
        let Some((key, val)) = param.split_once('=') else {
            continue;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "filename*" => extended = decode_ext_value(val.trim()),
            "filename" => plain = Some(unquote(val.trim())),
            _ => {}
        }
    }
    extended.or(plain).filter(|n| !n.is_empty())
}

/// Splits on `;` outside double quotes.
fn split_params(value: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().expect("never empty").push(c);
    }
    parts
}

fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        out.push(next);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => value.to_string(),
    }
}

/// `UTF-8''na%C3%AFve.txt` → `naïve.txt`. Other charsets are decoded lossily.
fn decode_ext_value(value: &str) -> Option<String> {
    let mut parts = value.splitn(3, '\'');
    let _charset = parts.next()?;
    let _language = parts.next()?;
    let encoded = parts.next()?;
    Some(percent_decode_str(encoded).decode_utf8_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claimed_names_are_numbered_as_aria2c_does() {
        let claims = Claims::default();
        let other = claims.clone();
        assert_eq!(claims.claim(Path::new("d/a.iso")), Path::new("d/a.iso"));
        assert_eq!(other.claim(Path::new("d/a.iso")), Path::new("d/a.1.iso"));
        assert_eq!(claims.claim(Path::new("d/a.iso")), Path::new("d/a.2.iso"));
        assert_eq!(
            claims.claim(Path::new("d/b.tar.gz")),
            Path::new("d/b.tar.gz")
        );
        assert_eq!(
            claims.claim(Path::new("d/b.tar.gz")),
            Path::new("d/b.tar.1.gz")
        );
        assert_eq!(claims.claim(Path::new("d/README")), Path::new("d/README"));
        assert_eq!(claims.claim(Path::new("d/README")), Path::new("d/README.1"));
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn from_url_path() {
        assert_eq!(
            file_name(None, &url("http://h/a/b/big%20file.iso?x=1")),
            "big file.iso"
        );
        assert_eq!(file_name(None, &url("http://h/")), "index.html");
        assert_eq!(file_name(None, &url("http://h")), "index.html");
        assert_eq!(file_name(None, &url("http://h/dir/")), "index.html");
        assert_eq!(file_name(None, &url("http://h/%2e%2e")), "index.html");
        assert_eq!(file_name(None, &url("http://h/a%2Fb%2F..%2Fevil")), "evil");
    }

    #[test]
    fn from_content_disposition() {
        let u = url("http://h/download?id=3");
        assert_eq!(
            file_name(Some("attachment; filename=\"r.tar.gz\""), &u),
            "r.tar.gz"
        );
        assert_eq!(
            file_name(Some("attachment; filename=plain.bin"), &u),
            "plain.bin"
        );
        assert_eq!(
            file_name(
                Some("attachment; filename=\"fallback.txt\"; filename*=UTF-8''na%C3%AFve.txt"),
                &u
            ),
            "naïve.txt"
        );
        assert_eq!(
            file_name(Some("attachment; filename=\"a;b.txt\""), &u),
            "a;b.txt"
        );
        assert_eq!(file_name(Some("inline"), &u), "download");
    }

    #[test]
    fn hostile_names_are_neutralized() {
        let u = url("http://h/x");
        for (header, expected) in [
            ("attachment; filename=\"../../etc/passwd\"", "passwd"),
            ("attachment; filename=\"..\\\\..\\\\boot.ini\"", "boot.ini"),
            ("attachment; filename=\"..\"", "x"),
            ("attachment; filename=\"a\u{7}b\u{0}c\nd\"", "abcd"),
            ("attachment; filename=\".bashrc\"", "bashrc"),
            (
                "attachment; filename*=UTF-8''%2E%2E%2F%2E%2E%2Fx.sh",
                "x.sh",
            ),
        ] {
            assert_eq!(file_name(Some(header), &u), expected, "{header}");
        }
        let long = format!("attachment; filename=\"{}\"", "é".repeat(300));
        let name = file_name(Some(&long), &u);
        assert!(name.len() <= shoal_core::naming::MAX_NAME_BYTES && name.starts_with('é'));
    }
}
