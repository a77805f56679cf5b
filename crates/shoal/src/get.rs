//! `shoal get`: turns the command line into [`DownloadOptions`], runs the engine, renders its
//! events and maps the outcome to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind as ClapErrorKind;
use clap::{Args, ValueEnum};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use shoal_core::Checksum;
use shoal_engine::redact::redacted;
use shoal_engine::{
    parse_bytes, CancellationToken, Connections, DownloadOptions, Existing, MinSplit, Output, Rate,
    Resume,
};
use tokio::sync::mpsc;
use url::Url;

use crate::progress::{Mode, View};
use crate::{exit, logging, signals};

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The http:// or https:// URL to download; more URLs are mirrors of the same file,
    /// fetched from at the same time
    #[arg(required = true, value_name = "URL")]
    urls: Vec<String>,

    /// With mirrors, the most connections to any one server
    #[arg(long, value_name = "N", default_value = "8", value_parser = parse_connections)]
    max_connections_per_server: Connections,

    /// Save to exactly this path
    #[arg(short, long, value_name = "PATH", conflicts_with = "dir")]
    output: Option<PathBuf>,

    /// Save into this directory, named from Content-Disposition or the URL
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,

    /// Maximum connections, 1..=1024
    #[arg(short, long, value_name = "N", default_value = "16", value_parser = parse_connections)]
    connections: Connections,

    /// Smallest segment worth its own connection, a multiple of 64K
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = parse_min_split)]
    min_split: MinSplit,

    /// Seconds without data before a connection's work moves to others
    #[arg(long, value_name = "SECS", default_value = "15", value_parser = parse_secs)]
    stall_timeout: Duration,

    /// Attempts per segment before the download fails
    #[arg(long, value_name = "N", default_value = "5", value_parser = clap::value_parser!(u32).range(1..))]
    max_tries: u32,

    /// Verify the file: sha256, sha512, sha1, md5 or blake3, e.g. sha256=9f86d0…
    #[arg(long, value_name = "ALGO=HEX", value_parser = parse_checksum)]
    checksum: Option<Checksum>,

    /// Cap the total speed across all connections, e.g. 500K or 20M (bytes per second)
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    limit_rate: Option<Rate>,

    /// Extra request header, repeatable
    #[arg(short = 'H', long = "header", value_name = "'Name: value'")]
    headers: Vec<String>,

    /// User-Agent header [default: shoal/VERSION]
    #[arg(long, value_name = "UA")]
    user_agent: Option<String>,

    /// Accept TLS certificates that do not verify
    #[arg(short = 'k', long)]
    insecure: bool,

    /// Replace an existing output file once the new one is complete
    #[arg(long)]
    overwrite: bool,

    /// Start over even if a previous run left NAME.part and its resume state
    #[arg(long)]
    no_resume: bool,

    /// Seconds to wait for a TCP/TLS connection
    #[arg(long, value_name = "SECS", default_value = "15", value_parser = parse_secs)]
    connect_timeout: Duration,

    /// Progress display; auto is a bar on a terminal and none otherwise
    #[arg(long, value_name = "MODE", value_enum, default_value_t = ProgressArg::Auto)]
    progress: ProgressArg,

    /// No progress and no summary; errors are still printed
    #[arg(short, long, conflicts_with = "progress")]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProgressArg {
    Auto,
    Bar,
    Json,
    None,
}

pub async fn run(args: GetArgs, verbose: u8) -> ExitCode {
    let mode = args.mode();
    let options = match args.options() {
        Ok(options) => options,
        Err(err) => return exit::usage(&err),
    };
    logging::init(verbose, mode.log_default());

    let cancel = CancellationToken::new();
    if let Err(err) = signals::watch(cancel.clone(), mode) {
        return exit::internal(&anyhow::Error::new(err).context("installing signal handlers"));
    }

    let mut view = View::new(mode, &options.url);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    // A task of its own, so that a panic in the engine becomes exit code 1 and a message
    // rather than an abort mid-bar.
    let mut download = tokio::spawn(shoal_engine::download(options, events_tx, cancel));
    // Events are rendered while the engine runs; when it returns, whatever it sent last is
    // drained so the final progress and warnings come before the summary.
    let joined = loop {
        tokio::select! {
            Some(event) = events.recv() => view.event(&event),
            joined = &mut download => break joined,
        }
    };
    while let Ok(event) = events.try_recv() {
        view.event(&event);
    }

    match joined {
        Ok(Ok(summary)) => {
            view.finished(&summary);
            ExitCode::from(exit::OK)
        }
        Ok(Err(err)) => {
            let code = exit::for_kind(err.kind());
            view.failed(&err, code);
            ExitCode::from(code)
        }
        Err(panicked) => {
            let err = anyhow::Error::new(panicked).context(
                "the download engine failed unexpectedly; this is a bug in shoal, please report it",
            );
            view.crashed(&err, exit::INTERNAL);
            ExitCode::from(exit::INTERNAL)
        }
    }
}

impl GetArgs {
    fn mode(&self) -> Mode {
        use std::io::IsTerminal;
        match (self.quiet, self.progress) {
            (true, _) => Mode::Quiet,
            (false, ProgressArg::Bar) => Mode::Bar,
            (false, ProgressArg::Json) => Mode::Json,
            (false, ProgressArg::None) => Mode::Plain,
            (false, ProgressArg::Auto) if std::io::stderr().is_terminal() => Mode::Bar,
            (false, ProgressArg::Auto) => Mode::Plain,
        }
    }

    /// Checks what clap's value parsers cannot without echoing secrets: clap repeats a rejected
    /// value verbatim, and URLs and headers may carry credentials.
    fn options(self) -> Result<DownloadOptions, clap::Error> {
        let mut urls = self
            .urls
            .iter()
            .map(|u| parse_url(u).map_err(|msg| usage_error(ClapErrorKind::InvalidValue, msg)));
        let url = urls.next().expect("clap requires one URL")?;
        let mirrors = urls.collect::<Result<Vec<_>, _>>()?;
        let headers = parse_headers(&self.headers)
            .map_err(|msg| usage_error(ClapErrorKind::InvalidValue, msg))?;
        let output = match self.output {
            Some(path) => Output::File(path),
            None => Output::Dir(self.dir),
        };
        let mut options = DownloadOptions::new(url, output);
        options.existing = if self.overwrite {
            Existing::Overwrite
        } else {
            Existing::Refuse
        };
        options.resume = if self.no_resume {
            Resume::Never
        } else {
            Resume::Auto
        };
        options.mirrors = mirrors;
        options.per_server = self.max_connections_per_server;
        options.connections = self.connections;
        options.min_split = self.min_split;
        options.stall_timeout = self.stall_timeout;
        options.max_tries = self.max_tries;
        options.checksum = self.checksum;
        options.limit_rate = self.limit_rate;
        options.http.headers = headers;
        if let Some(agent) = self.user_agent {
            options.http.user_agent = agent;
        }
        options.http.insecure = self.insecure;
        options.http.connect_timeout = self.connect_timeout;
        Ok(options)
    }
}

/// A usage error formatted like clap's own, with `shoal get`'s usage line.
fn usage_error(kind: ClapErrorKind, message: String) -> clap::Error {
    let mut cmd = GetArgs::augment_args(clap::Command::new("get")).bin_name("shoal get");
    cmd.error(kind, message)
}

fn parse_url(text: &str) -> Result<Url, String> {
    // Text that does not parse cannot be redacted reliably; it is the user's own input, shown
    // back on their terminal and never logged.
    let url = Url::parse(text).map_err(|err| format!("invalid URL {text:?}: {err}"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        scheme => Err(format!(
            "unsupported URL scheme {scheme:?} in {}: shoal downloads http:// and https:// URLs",
            redacted(&url)
        )),
    }
}

/// Parses `-H 'Name: value'` arguments. Messages name the header but never show its value,
/// which is often a token.
fn parse_headers(args: &[String]) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for arg in args {
        let Some((name, value)) = arg.split_once(':') else {
            return Err("invalid -H header: expected 'Name: value' with a colon".to_string());
        };
        let name = name.trim();
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid -H header name {name:?}: expected 'Name: value'"))?;
        let value = HeaderValue::from_str(value.trim()).map_err(|_| {
            format!("invalid -H header {name}: the value holds characters HTTP does not allow")
        })?;
        headers.append(name, value);
    }
    Ok(headers)
}

fn parse_connections(text: &str) -> Result<Connections, String> {
    let n: u64 = text
        .parse()
        .map_err(|_| format!("expected a number from 1 to {}", Connections::MAX))?;
    Connections::new(n).map_err(|err| err.to_string())
}

fn parse_min_split(text: &str) -> Result<MinSplit, String> {
    let bytes = parse_bytes(text).ok_or("expected a size such as 1M or 256K")?;
    MinSplit::new(bytes).map_err(|err| err.to_string())
}

fn parse_rate(text: &str) -> Result<Rate, String> {
    Rate::parse(text).map_err(|err| err.to_string())
}

fn parse_checksum(text: &str) -> Result<Checksum, String> {
    text.parse()
        .map_err(|err: shoal_core::ChecksumParseError| err.to_string())
}

fn parse_secs(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|secs| *secs > 0.0)
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| "expected a positive number of seconds".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_order_and_repeats() {
        let args = [
            "Authorization: Bearer x".to_string(),
            "X-A:1".into(),
            "x-a: 2".into(),
        ];
        let headers = parse_headers(&args).unwrap();
        assert_eq!(headers["authorization"], "Bearer x");
        let all: Vec<_> = headers.get_all("x-a").iter().collect();
        assert_eq!(all, ["1", "2"]);
    }

    #[test]
    fn header_errors_hide_values() {
        let err = parse_headers(&["Bearer secret-token".to_string()]).unwrap_err();
        assert!(!err.contains("secret"), "{err}");
        let err = parse_headers(&["X-Key: a\u{7f}secret".to_string()]).unwrap_err();
        assert!(err.contains("x-key") && !err.contains("secret"), "{err}");
        assert!(parse_headers(&["bad name: v".to_string()]).is_err());
    }

    #[test]
    fn urls_http_only_and_redacted() {
        assert!(parse_url("https://example.org/a.iso").is_ok());
        let err = parse_url("ftp://bob:hunter2@example.org/a.iso").unwrap_err();
        assert!(err.contains("\"ftp\"") && !err.contains("hunter2"), "{err}");
        assert!(parse_url("example.org/a.iso").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["0", "-1", "x", "inf", "NaN"] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
    }
}
