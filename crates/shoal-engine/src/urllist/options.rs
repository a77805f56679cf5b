//! The options of one download as aria2 names them, from an input file's indented `key=value`
//! lines or from the options object of an aria2 JSON-RPC call: [`EntryOptions`]. Both readers
//! share this one table, so a file written for aria2c and a call from an aria2 client mean the
//! same thing to shoal.

use std::path::{Component, Path, PathBuf};

use reqwest::header::{HeaderName, HeaderValue};
use shoal_core::{Checksum, ChecksumAlgo};
use thiserror::Error;

use crate::options::{Connections, DownloadOptions, Output, Rate};

/// The aria2 option names shoal reads, in the order [`EntryOptions::pairs`] gives them.
pub const KNOWN: [&str; 8] = [
    "dir",
    "out",
    "checksum",
    "header",
    "split",
    "max-connection-per-server",
    "max-download-limit",
    "pause",
];

/// One download's options, each validated when it is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryOptions {
    /// `dir`: the directory the file is saved in.
    pub dir: Option<PathBuf>,
    /// `out`: the file's name in that directory, a relative path without `..`.
    pub out: Option<PathBuf>,
    /// `checksum`: `ALGO=HEX` the finished file must have.
    pub checksum: Option<Checksum>,
    /// `header`: extra request headers, `Name: value`, in order (the option may repeat).
    pub headers: Vec<String>,
    /// `split`: the most connections of this download.
    pub split: Option<Connections>,
    /// `max-connection-per-server`: the most connections to any one mirror.
    pub per_server: Option<Connections>,
    /// `max-download-limit`: this download's rate cap; `0` (aria2's "no limit") is `None`.
    pub max_download_limit: Option<Rate>,
    /// `pause`: added paused rather than waiting to start.
    pub pause: bool,
}

/// A value an option cannot take; the message names the option and what it takes, never a
/// header's value (often a token).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{key}: {reason}")]
pub struct EntryOptionError {
    /// The option's name, e.g. `split`.
    pub key: String,
    /// What is wrong and what the option takes.
    pub reason: String,
}

impl EntryOptions {
    /// Sets option `key` to `value`. `Ok(false)` for an option shoal does not know (the caller
    /// names those in one warning); a `header` adds to those set before.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, EntryOptionError> {
        let fail = |reason: String| EntryOptionError {
            key: key.to_string(),
            reason,
        };
        match key {
            "dir" => {
                if value.is_empty() {
                    return Err(fail("expected a directory".into()));
                }
                self.dir = Some(PathBuf::from(value));
            }
            "out" => self.out = Some(relative_name(value).map_err(fail)?),
            "checksum" => {
                self.checksum = Some(
                    value
                        .parse()
                        .map_err(|e| fail(format!("{e}; write ALGO=HEX, e.g. sha-256=…")))?,
                );
            }
            "header" => {
                check_header(value).map_err(fail)?;
                self.headers.push(value.trim().to_string());
            }
            "split" => self.split = Some(connections(value).map_err(fail)?),
            "max-connection-per-server" => {
                self.per_server = Some(connections(value).map_err(fail)?);
            }
            "max-download-limit" => self.max_download_limit = rate(value).map_err(fail)?,
            "pause" => {
                self.pause = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(fail("expected true or false".into())),
                };
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The options set, as aria2 names and writes them (string values; `header` once per
    /// header), in the order of [`KNOWN`].
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        let shown = |p: &Path| p.to_string_lossy().into_owned();
        if let Some(dir) = &self.dir {
            pairs.push(("dir", shown(dir)));
        }
        if let Some(out) = &self.out {
            pairs.push(("out", shown(out)));
        }
        if let Some(checksum) = &self.checksum {
            pairs.push(("checksum", aria2_checksum(checksum)));
        }
        pairs.extend(self.headers.iter().map(|h| ("header", h.clone())));
        if let Some(split) = self.split {
            pairs.push(("split", split.get().to_string()));
        }
        if let Some(per_server) = self.per_server {
            pairs.push(("max-connection-per-server", per_server.get().to_string()));
        }
        if let Some(limit) = self.max_download_limit {
            pairs.push(("max-download-limit", limit.bytes_per_sec().to_string()));
        }
        if self.pause {
            pairs.push(("pause", "true".into()));
        }
        pairs
    }

    /// Applies these options to `download`, whose output is the directory the list or the
    /// daemon saves into by default: `dir` replaces that directory, `out` names the file in it.
    pub fn apply(&self, download: &mut DownloadOptions) {
        let base = match &download.output {
            Output::Dir(dir) => Some(dir.clone()),
            Output::File(path) => Some(path.parent().map(Path::to_path_buf).unwrap_or_default()),
            // A stream has no file for `dir` and `out` to place.
            Output::Stream(_) => None,
        };
        if let Some(base) = base {
            let dir = self.dir.clone().unwrap_or(base);
            download.output = match &self.out {
                Some(out) => Output::File(dir.join(out)),
                None => Output::Dir(dir),
            };
        }
        if let Some(checksum) = &self.checksum {
            download.checksum = Some(checksum.clone());
        }
        for header in &self.headers {
            if let Some((name, value)) = parse_header(header) {
                download.http.headers.append(name, value);
            }
        }
        if let Some(split) = self.split {
            download.connections = split;
        }
        if let Some(per_server) = self.per_server {
            download.per_server = per_server;
        }
        if let Some(limit) = self.max_download_limit {
            download.limit_rate = Some(limit);
        }
    }
}

/// Makes the directory a download's file goes to when its options named the file (`out`):
/// aria2c makes it, as the engine makes an [`Output::Dir`]. Callers run this before the
/// download starts.
pub fn make_dir(output: &Output) -> std::io::Result<()> {
    match output {
        Output::File(path) => match path.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(dir) => std::fs::create_dir_all(dir),
            None => Ok(()),
        },
        Output::Dir(_) | Output::Stream(_) => Ok(()),
    }
}

/// `ALGO=HEX` with aria2's names for the algorithms (`sha-256`, not `sha256`), which aria2c
/// reads back.
fn aria2_checksum(checksum: &Checksum) -> String {
    let algo = match checksum.algo() {
        ChecksumAlgo::Sha256 => "sha-256",
        ChecksumAlgo::Sha512 => "sha-512",
        ChecksumAlgo::Sha1 => "sha-1",
        ChecksumAlgo::Md5 => "md5",
        ChecksumAlgo::Blake3 => "blake3",
    };
    format!("{algo}={}", checksum.hex())
}

fn relative_name(value: &str) -> Result<PathBuf, String> {
    let path = Path::new(value);
    let plain = !value.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if plain {
        Ok(path.to_path_buf())
    } else {
        Err("expected a file name (a relative path without ..); put the directory in dir".into())
    }
}

fn parse_header(text: &str) -> Option<(HeaderName, HeaderValue)> {
    let (name, value) = text.split_once(':')?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
    let value = HeaderValue::from_str(value.trim()).ok()?;
    Some((name, value))
}

fn check_header(text: &str) -> Result<(), String> {
    parse_header(text).map(|_| ()).ok_or_else(|| {
        "expected 'Name: value' with a valid header name and a value HTTP allows".into()
    })
}

fn connections(value: &str) -> Result<Connections, String> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| Connections::new(n).ok())
        .ok_or_else(|| format!("expected a number from 1 to {}", Connections::MAX))
}

fn rate(value: &str) -> Result<Option<Rate>, String> {
    if value.trim() == "0" {
        return Ok(None);
    }
    Rate::parse(value)
        .map(Some)
        .map_err(|_| "expected a rate such as 500K or 2M, or 0 for none".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_validated_and_written_back_as_aria2_writes_them() {
        let mut options = EntryOptions::default();
        for (key, value) in [
            ("out", "list-a.bin"),
            ("dir", "/srv/in"),
            ("header", "X-Token: abc"),
            ("header", "Accept: */*"),
            ("split", "4"),
            ("max-connection-per-server", "2"),
            ("max-download-limit", "1M"),
        ] {
            assert_eq!(options.set(key, value), Ok(true), "{key}");
        }
        assert_eq!(options.set("continue", "true"), Ok(false));
        assert_eq!(
            options.pairs(),
            [
                ("dir", "/srv/in".to_string()),
                ("out", "list-a.bin".into()),
                ("header", "X-Token: abc".into()),
                ("header", "Accept: */*".into()),
                ("split", "4".into()),
                ("max-connection-per-server", "2".into()),
                ("max-download-limit", "1048576".into()),
            ]
        );
        for (key, value) in [
            ("out", "../x"),
            ("out", "/etc/passwd"),
            ("split", "0"),
            ("checksum", "sha-256=12"),
            ("header", "no colon"),
            ("pause", "yes"),
        ] {
            let err = EntryOptions::default().set(key, value).unwrap_err();
            assert_eq!(err.key, key);
        }
        let err = EntryOptions::default()
            .set("header", "Bad Name: s3cret")
            .unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn applying_puts_the_file_in_dir_under_out() {
        let url = url::Url::parse("http://h/a.bin").unwrap();
        let mut download = DownloadOptions::new(url, Output::Dir("/base".into()));
        let mut options = EntryOptions::default();
        options.set("out", "b.bin").unwrap();
        options.set("header", "X-A: 1").unwrap();
        options.apply(&mut download);
        assert_eq!(download.output, Output::File("/base/b.bin".into()));
        assert_eq!(download.http.headers["x-a"], "1");
        options.set("dir", "/other").unwrap();
        options.apply(&mut download);
        assert_eq!(download.output, Output::File("/other/b.bin".into()));
    }
}
