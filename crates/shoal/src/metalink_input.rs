//! `shoal get release.meta4`: reads a Metalink (a local file, or an http(s) URL fetched
//! through the engine) and turns each file it lists into a download whose sources are the
//! file's URLs, best priority first, checked against its size, whole-file hash and piece
//! hashes.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use shoal_core::redact::redacted;
use shoal_engine::metalink::{self, Metalink, MetalinkFile, SkipReason};
use shoal_engine::{
    CancellationToken, Connections, DownloadError, DownloadOptions, HttpOptions, Output, Resume,
};
use tokio::sync::mpsc;
use url::Url;

use crate::batch::Job;
use crate::exit::say;
use crate::progress::{suspend, Mode};

/// A Metalink document is a few kilobytes of XML, a few megabytes with piece hashes of a huge
/// file; anything bigger is not one.
const MAX_SIZE: u64 = 64 << 20;

/// Why a Metalink could not be read.
pub(crate) enum LoadError {
    /// Unreadable or invalid: a usage error, with the path or URL in the message.
    Usage(String),
    /// Fetching it from its URL failed.
    Fetch {
        url: String,
        error: Box<DownloadError>,
    },
    /// No place to put it while it is read: a local I/O error.
    Local(String),
}

/// Whether `arg` names a Metalink by its extension (`.meta4` for v4, `.metalink` for v3), as a
/// local path or as the path of an http(s) URL.
pub(crate) fn looks_like_metalink(arg: &str) -> bool {
    let path = match Url::parse(arg) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url.path().to_ascii_lowercase(),
        _ => arg.to_ascii_lowercase(),
    };
    path.ends_with(".meta4") || path.ends_with(".metalink")
}

/// Reads and parses the Metalink at `arg` (a path, or an http(s) URL fetched with `http`).
/// Returns how to name it in messages (the path, or the redacted URL) and the document.
pub(crate) async fn load(
    arg: &str,
    http: &HttpOptions,
    cancel: &CancellationToken,
) -> Result<(String, Metalink), LoadError> {
    let (shown, text) = match Url::parse(arg) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {
            let shown = redacted(&url);
            let text = fetch(url, http, cancel).await?;
            (shown, text)
        }
        _ => (arg.to_string(), read_local(Path::new(arg))?),
    };
    let metalink = metalink::parse(&text).map_err(|err| {
        LoadError::Usage(format!(
            "{shown}: {err}; fix the Metalink or ask its publisher"
        ))
    })?;
    Ok((shown, metalink))
}

fn read_local(path: &Path) -> Result<String, LoadError> {
    let shown = path.display();
    let size = std::fs::metadata(path)
        .map_err(|err| LoadError::Usage(format!("cannot read the Metalink {shown}: {err}")))?
        .len();
    if size > MAX_SIZE {
        return Err(LoadError::Usage(too_big(&shown.to_string(), size)));
    }
    std::fs::read_to_string(path)
        .map_err(|err| LoadError::Usage(format!("cannot read the Metalink {shown}: {err}")))
}

fn too_big(shown: &str, size: u64) -> String {
    format!(
        "{shown} is {size} bytes, too big for a Metalink (at most {MAX_SIZE}); to download it \
         as a file, give it a URL without the .meta4 or .metalink ending"
    )
}

/// Fetches a Metalink with the engine itself (one connection, no resume) into a private
/// temporary directory and reads it back; the binary has no HTTP client of its own.
async fn fetch(
    url: Url,
    http: &HttpOptions,
    cancel: &CancellationToken,
) -> Result<String, LoadError> {
    let shown = redacted(&url);
    let dir = private_dir().map_err(|err| {
        LoadError::Local(format!(
            "fetching the Metalink {shown}: cannot make a directory for it in {}: {err}; \
             set TMPDIR to a writable directory",
            std::env::temp_dir().display()
        ))
    })?;
    let path = dir.join("metalink.xml");
    let mut options = DownloadOptions::new(url, Output::File(path.clone()));
    options.resume = Resume::Never;
    options.connections = Connections::new(1).expect("1 is a valid connection count");
    options.http = http.clone();
    // Nobody renders the events of this small fetch: its failure is reported as a whole.
    let (events, _) = mpsc::unbounded_channel();
    let fetched = shoal_engine::download(options, events, cancel.clone()).await;
    let read = match fetched {
        Ok(summary) if summary.size > MAX_SIZE => {
            Err(LoadError::Usage(too_big(&shown, summary.size)))
        }
        Ok(_) => std::fs::read_to_string(&path).map_err(|err| {
            LoadError::Usage(format!("the Metalink {shown} is not readable text: {err}"))
        }),
        Err(error) => Err(LoadError::Fetch {
            url: shown,
            error: Box::new(error),
        }),
    };
    // The directory holds only this fetch: its copy, or a failed fetch's `.part` and state.
    let _ = std::fs::remove_dir_all(&dir);
    read
}

/// A new directory only this process can write to: the engine creates files in it by name,
/// which in a shared temporary directory another user could have planted as symlinks.
fn private_dir() -> io::Result<PathBuf> {
    let base = std::env::temp_dir();
    let salt = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    // A name taken by someone else is skipped; a few tries are plenty when names are unique
    // per process and instant.
    for attempt in 0..8 {
        let dir = base.join(format!("shoal-{}-{salt}-{attempt}", std::process::id()));
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "every name tried is taken",
    ))
}

/// Where the files of a Metalink go: `-o` names the one file, `-d` the directory for all.
pub(crate) enum Target<'a> {
    File(&'a Path),
    Dir(&'a Path),
}

/// One job per file of the Metalink. `base` makes the options every download shares from a
/// URL, its mirrors and an output.
pub(crate) fn jobs(
    metalink: Metalink,
    target: Target<'_>,
    base: impl Fn(Url, Vec<Url>, Output) -> DownloadOptions,
) -> Vec<Job> {
    metalink
        .files
        .into_iter()
        .map(|file| {
            let mut urls = file.urls.into_iter().map(|mirror| mirror.url);
            let url = urls
                .next()
                .expect("the parser keeps files with at least one URL");
            let output = match target {
                Target::File(path) => Output::File(path.to_path_buf()),
                Target::Dir(dir) => Output::File(dir.join(&file.name)),
            };
            let mut options = base(url, urls.collect(), output);
            options.checksum = file.hashes.into_iter().next();
            options.pieces = file.pieces;
            options.expected_size = file.size;
            Job {
                label: file.name,
                options,
            }
        })
        .collect()
}

/// Says on stderr what of each file's entry shoal cannot use: hash types it does not know and
/// sources that are not http(s). JSON mode gets one `metalink_skipped` line per such file.
pub(crate) fn report_skipped(shown: &str, metalink: &Metalink, mode: Mode) {
    for file in &metalink.files {
        if file.skipped_hashes.is_empty() && file.skipped_urls.is_empty() {
            continue;
        }
        let urls = file.skipped_urls.iter().map(|skipped| {
            let why = match &skipped.reason {
                SkipReason::Scheme(scheme) => format!("{scheme} is not http or https"),
                SkipReason::Metadata(kind) => format!("{kind} metadata, not the file"),
                SkipReason::Unparseable => "not a URL".to_string(),
            };
            (skipped.url.as_str(), why)
        });
        match mode {
            Mode::Json => say(
                &json!({
                    "event": "metalink_skipped",
                    "metalink": shown,
                    "file": file.name,
                    "hashes": file.skipped_hashes,
                    "urls": urls.map(|(url, why)| json!({"url": url, "reason": why})).collect::<Vec<_>>(),
                })
                .to_string(),
            ),
            Mode::Bar | Mode::Plain => {
                let lines = skipped_lines(shown, file, urls);
                suspend(|| lines.iter().for_each(|line| say(line)));
            }
            Mode::Quiet => {}
        }
    }
}

fn skipped_lines<'a>(
    shown: &str,
    file: &MetalinkFile,
    urls: impl Iterator<Item = (&'a str, String)>,
) -> Vec<String> {
    let mut lines = Vec::new();
    if !file.skipped_hashes.is_empty() {
        let checked = match file.hashes.first() {
            Some(checksum) => format!("checking {} instead", checksum.algo()),
            None => "the whole file is not checked".to_string(),
        };
        lines.push(format!(
            "shoal: {shown}: {}: skipping hash types shoal does not know ({}); {checked}",
            file.name,
            file.skipped_hashes.join(", ")
        ));
    }
    for (url, why) in urls {
        lines.push(format!(
            "shoal: {shown}: {}: skipping source {url}: {why}",
            file.name
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognized_by_extension() {
        assert!(looks_like_metalink("release.meta4"));
        assert!(looks_like_metalink("dir/Release.METALINK"));
        assert!(looks_like_metalink("https://h/release.meta4?sig=1"));
        assert!(!looks_like_metalink("https://h/release.iso"));
        assert!(!looks_like_metalink("https://h/release.meta4/file.iso"));
    }
}
