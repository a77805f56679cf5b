//! `shoal get`: turns the command line into [`DownloadOptions`], runs the engine, renders its
//! events and maps the outcome to an exit code. A list (`-i`) or a Metalink that lists several
//! files becomes a batch (`batch.rs`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind as ClapErrorKind;
use clap::{Args, ValueEnum};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use shoal_agent::control::AgentLocation;
use shoal_core::redact::redacted;
use shoal_core::{Checksum, ContentId};
use shoal_engine::ca::ExtraRoots;
use shoal_engine::{
    naming::Claims, parse_bytes, CancellationToken, Connections, DownloadOptions, ErrorKind,
    Existing, HttpOptions, MinSplit, Output, Rate, Resume, Window,
};
use url::Url;

use crate::batch::{self, Job};
use crate::metalink_input::{self, LoadError, Target};
use crate::progress::{self, Mode, View};
use crate::{exit, logging, signals, stdout, via_agent};

#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// The http:// or https:// URL to download; more URLs are mirrors of the same file,
    /// fetched from at the same time. A path or URL ending in .meta4 or .metalink is read as a
    /// Metalink
    #[arg(required_unless_present_any = ["input_file", "metalink"], value_name = "URL")]
    urls: Vec<String>,

    /// Download every URL listed in FILE (- for standard input): one file per line, mirrors of
    /// one file separated by a TAB, # comments
    #[arg(short, long, value_name = "FILE", conflicts_with_all = ["urls", "output", "checksum", "metalink"])]
    input_file: Option<PathBuf>,

    /// Download the files a Metalink (v4 .meta4 or v3 .metalink) describes, from a path or an
    /// http(s) URL, whatever its name ends with
    #[arg(long, value_name = "PATH|URL", conflicts_with_all = ["urls", "checksum"])]
    metalink: Option<String>,

    /// With -i or a Metalink of several files, how many files to download at once, 1..=64
    #[arg(short, long, value_name = "K", default_value = "1", value_parser = clap::value_parser!(u8).range(1..=64))]
    jobs: u8,

    /// With mirrors, the most connections to any one server
    #[arg(long, value_name = "N", default_value = "8", value_parser = parse_connections)]
    max_connections_per_server: Connections,

    /// Save to exactly this path. - streams the file to standard output in file order while
    /// fetching over many connections, holding at most --window in memory: no NAME.part and
    /// no resume (a failure leaves a prefix on stdout and a non-zero exit); a file named - is
    /// -o ./-
    #[arg(short, long, value_name = "PATH", conflicts_with = "dir")]
    output: Option<PathBuf>,

    /// With -o -, the most bytes held in memory ahead of what standard output has taken;
    /// connections further ahead wait. From 1M to 4G
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_window)]
    window: Window,

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

    /// Wait through a server outage for up to this long (e.g. 90, 30s, 10m, 1h): a server
    /// that is down is asked again with back-off, past --max-tries, and the download fails only
    /// once nothing arrived for this long [default: fail after --max-tries]
    #[arg(long, value_name = "DURATION", value_parser = parse_wait, conflicts_with = "agent")]
    max_wait: Option<Duration>,

    /// Verify the file: sha256, sha512, sha1, md5 or blake3, e.g. sha256=9f86d0…
    #[arg(long, value_name = "ALGO=HEX", value_parser = parse_checksum)]
    checksum: Option<Checksum>,

    /// Cap the total speed across all connections, e.g. 500K or 20M (bytes per second)
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    limit_rate: Option<Rate>,

    /// Refuse a file larger than SIZE (e.g. 100M), before writing it when the server says its
    /// size, else as soon as more arrives
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_filesize: Option<u64>,

    /// Extra request header, repeatable
    #[arg(short = 'H', long = "header", value_name = "'Name: value'")]
    headers: Vec<String>,

    /// Send Authorization, Cookie and Proxy-Authorization headers and URL credentials to the
    /// other hosts redirects name too (never from https to plain http)
    #[arg(long)]
    location_trusted: bool,

    /// User-Agent header [default: shoal/VERSION]
    #[arg(long, value_name = "UA")]
    user_agent: Option<String>,

    /// Accept TLS certificates that do not verify
    #[arg(short = 'k', long)]
    insecure: bool,

    /// PEM file of CA certificates to trust besides the system's, for origins, mirrors and an
    /// https:// --agent whose certificates a private CA signs
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,

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

    /// Fetch through the local shoal agent, from the swarm: unix:PATH (its DATA/control.sock)
    /// or http(s)://HOST:PORT (its --control-listen); URL may then also be
    /// shoal:blake3:CONTENT-ID
    #[arg(long, env = "SHOAL_AGENT", value_name = "WHERE", conflicts_with_all = ["input_file", "metalink"])]
    agent: Option<String>,

    /// The agent's control token (its DATA/control.token), for an http(s):// --agent
    #[arg(
        long,
        env = "SHOAL_AGENT_TOKEN_FILE",
        value_name = "FILE",
        requires = "agent"
    )]
    agent_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProgressArg {
    Auto,
    Bar,
    Json,
    None,
}

/// What to download, from the positional URLs, `-i` or `--metalink`.
enum Input {
    /// One file: a URL and its mirrors.
    Urls(Url, Vec<Url>),
    List(PathBuf),
    Metalink(String),
}

/// Everything on the command line that every download of the command shares.
struct Common {
    output: Option<PathBuf>,
    window: Window,
    dir: PathBuf,
    jobs: usize,
    existing: Existing,
    resume: Resume,
    per_server: Connections,
    connections: Connections,
    min_split: MinSplit,
    stall_timeout: Duration,
    max_tries: u32,
    max_wait: Option<Duration>,
    checksum: Option<Checksum>,
    limit_rate: Option<Rate>,
    max_filesize: Option<u64>,
    http: HttpOptions,
}

pub(crate) async fn run(args: GetArgs, log: logging::Options) -> ExitCode {
    let mode = args.mode();
    if let Some(agent) = args.agent.clone() {
        return through_agent(args, &agent, mode, log).await;
    }
    let (input, common) = match args.parse() {
        Ok(parsed) => parsed,
        Err(err) => return exit::usage(&err),
    };
    logging::init(log, mode.log_default());

    let cancel = CancellationToken::new();
    if let Err(err) = signals::watch(cancel.clone(), mode) {
        return exit::internal(&anyhow::Error::new(err).context("installing signal handlers"));
    }

    let jobs = match input {
        Input::Urls(url, mirrors) => {
            let output = match &common.output {
                Some(path) if is_stdout(path) => {
                    let options = common.options(url, mirrors, Output::Dir(common.dir.clone()));
                    return stdout::run(options, common.window, mode, cancel).await;
                }
                Some(path) => Output::File(path.clone()),
                None => Output::Dir(common.dir.clone()),
            };
            return one(common.options(url, mirrors, output), mode, cancel).await;
        }
        Input::List(path) => {
            let names = Claims::default();
            let jobs = batch::list_jobs(&path, |url, mirrors| DownloadOptions {
                names: Some(names.clone()),
                ..common.options(url, mirrors, Output::Dir(common.dir.clone()))
            });
            // A list is always a batch, even of one line, so scripts get the same lines
            // (`file` fields, the per-file summary) whatever its length.
            match jobs {
                Ok(jobs) => jobs,
                Err(msg) => return exit::usage(&usage_error(ClapErrorKind::InvalidValue, msg)),
            }
        }
        Input::Metalink(arg) => match metalink_jobs(&arg, &common, mode, &cancel).await {
            // A Metalink of one file is shown as that file's URL would be.
            Ok(mut jobs) if jobs.len() == 1 => {
                let job = jobs.pop().expect("one job");
                return one(job.options, mode, cancel).await;
            }
            Ok(jobs) => jobs,
            Err(code) => return code,
        },
    };
    batch::run(jobs, common.jobs, mode, cancel).await
}

/// `shoal get --agent`: one URL or content id, fetched by the agent.
async fn through_agent(args: GetArgs, agent: &str, mode: Mode, log: logging::Options) -> ExitCode {
    let usage = |msg: String| exit::usage(&usage_error(ClapErrorKind::InvalidValue, msg));
    let agent = match agent.parse::<AgentLocation>() {
        Ok(agent) => agent,
        Err(e) => return usage(format!("--agent: {e}")),
    };
    let token = match &args.agent_token_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text.trim().to_string()),
            Err(e) => return usage(format!("--agent-token-file {}: {e}", path.display())),
        },
        None => None,
    };
    if args.output.as_deref().is_some_and(is_stdout) {
        return usage(
            "--agent saves into a file: -o - (standard output) is not supported through the agent"
                .into(),
        );
    }
    let ca = match ExtraRoots::load(args.ca.as_deref()) {
        Ok(ca) => ca,
        Err(e) => return usage(format!("--ca {e}")),
    };
    let [what] = args.urls.as_slice() else {
        return usage(
            "--agent fetches one URL or content id at a time; mirrors come from the swarm".into(),
        );
    };
    let target = match what.strip_prefix("shoal:blake3:") {
        Some(id) => match id.parse::<ContentId>() {
            Ok(id) => via_agent::Target::Content(id),
            Err(e) => return usage(e.to_string()),
        },
        None => match parse_url(what) {
            Ok(url) => via_agent::Target::Url(url),
            Err(msg) => return usage(msg),
        },
    };
    logging::init(log, mode.log_default());
    let place = via_agent::Placement {
        output: args.output,
        dir: args.dir,
        overwrite: args.overwrite,
    };
    via_agent::run(agent, token, ca.as_ref(), target, place, mode).await
}

/// One download, shown as `shoal get URL` always showed it.
async fn one(options: DownloadOptions, mode: Mode, cancel: CancellationToken) -> ExitCode {
    let view = View::new(mode, &options.url);
    ExitCode::from(batch::drive(options, view, cancel).await.code())
}

/// Reads the Metalink at `arg` and makes one job per file; errors are reported here and come
/// back as the exit code.
async fn metalink_jobs(
    arg: &str,
    common: &Common,
    mode: Mode,
    cancel: &CancellationToken,
) -> Result<Vec<Job>, ExitCode> {
    let (shown, metalink) = match metalink_input::load(arg, &common.http, cancel).await {
        Ok(loaded) => loaded,
        Err(LoadError::Usage(msg)) => {
            return Err(exit::usage(&usage_error(ClapErrorKind::InvalidValue, msg)))
        }
        Err(LoadError::Fetch { url, error }) => {
            let code = exit::for_kind(error.kind());
            let text = format!(
                "fetching the Metalink {url}: {}",
                progress::failure_text(&error)
            );
            progress::failed_before_start(mode, error.kind(), &text, code);
            return Err(ExitCode::from(code));
        }
        Err(LoadError::Local(msg)) => {
            progress::failed_before_start(mode, ErrorKind::LocalIo, &msg, exit::LOCAL_IO);
            return Err(ExitCode::from(exit::LOCAL_IO));
        }
    };
    let files = metalink.files.len();
    let target = match &common.output {
        Some(path) if is_stdout(path) => {
            let msg = format!(
                "-o - streams one URL; {shown} is a Metalink, whose pieces are checked in a \
                 file: save it with -o PATH"
            );
            return Err(exit::usage(&usage_error(
                ClapErrorKind::ArgumentConflict,
                msg,
            )));
        }
        Some(path) if files == 1 => Target::File(path),
        Some(_) => {
            let msg = format!(
                "-o names one file, but {shown} describes {files}: use -d DIR to save them all"
            );
            return Err(exit::usage(&usage_error(
                ClapErrorKind::ArgumentConflict,
                msg,
            )));
        }
        None => Target::Dir(&common.dir),
    };
    if let Target::Dir(dir) = target {
        // The names come from the Metalink, so the engine is given full paths, and their
        // directory is made here as `-d` makes it for a single URL.
        if let Err(err) = std::fs::create_dir_all(dir) {
            let msg = format!("cannot create the directory {}: {err}", dir.display());
            progress::failed_before_start(mode, ErrorKind::LocalIo, &msg, exit::LOCAL_IO);
            return Err(ExitCode::from(exit::LOCAL_IO));
        }
    }
    metalink_input::report_skipped(&shown, &metalink, mode);
    Ok(metalink_input::jobs(
        metalink,
        target,
        |url, mirrors, output| common.options(url, mirrors, output),
    ))
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
    fn parse(self) -> Result<(Input, Common), clap::Error> {
        let input = self.input()?;
        let headers = parse_headers(&self.headers)
            .map_err(|msg| usage_error(ClapErrorKind::InvalidValue, msg))?;
        let ca = ExtraRoots::load(self.ca.as_deref())
            .map_err(|e| usage_error(ClapErrorKind::InvalidValue, format!("--ca {e}")))?;
        let mut http = HttpOptions {
            headers,
            location_trusted: self.location_trusted,
            insecure: self.insecure,
            ca,
            connect_timeout: self.connect_timeout,
            ..HttpOptions::default()
        };
        if let Some(agent) = self.user_agent {
            http.user_agent = agent;
        }
        let common = Common {
            output: self.output,
            window: self.window,
            dir: self.dir,
            jobs: usize::from(self.jobs),
            existing: if self.overwrite {
                Existing::Overwrite
            } else {
                Existing::Refuse
            },
            resume: if self.no_resume {
                Resume::Never
            } else {
                Resume::Auto
            },
            per_server: self.max_connections_per_server,
            connections: self.connections,
            min_split: self.min_split,
            stall_timeout: self.stall_timeout,
            max_tries: self.max_tries,
            max_wait: self.max_wait,
            checksum: self.checksum,
            limit_rate: self.limit_rate,
            max_filesize: self.max_filesize,
            http,
        };
        Ok((input, common))
    }

    fn input(&self) -> Result<Input, clap::Error> {
        if let Some(list) = &self.input_file {
            return Ok(Input::List(list.clone()));
        }
        if let Some(metalink) = &self.metalink {
            return Ok(Input::Metalink(metalink.clone()));
        }
        if self
            .urls
            .iter()
            .any(|u| metalink_input::looks_like_metalink(u))
        {
            let conflict = if self.urls.len() > 1 {
                Some("a Metalink lists its own mirrors: give it alone, without other URLs")
            } else if self.checksum.is_some() {
                Some("--checksum cannot be used with a Metalink: the hashes it holds are checked")
            } else {
                None
            };
            return match conflict {
                Some(msg) => Err(usage_error(
                    ClapErrorKind::ArgumentConflict,
                    msg.to_string(),
                )),
                None => Ok(Input::Metalink(self.urls[0].clone())),
            };
        }
        let mut urls = self
            .urls
            .iter()
            .map(|u| parse_url(u).map_err(|msg| usage_error(ClapErrorKind::InvalidValue, msg)));
        let url = urls
            .next()
            .expect("clap requires a URL without -i or --metalink")?;
        Ok(Input::Urls(url, urls.collect::<Result<Vec<_>, _>>()?))
    }
}

impl Common {
    /// The options of one download with the shared settings.
    fn options(&self, url: Url, mirrors: Vec<Url>, output: Output) -> DownloadOptions {
        let mut options = DownloadOptions::new(url, output);
        options.existing = self.existing;
        options.resume = self.resume;
        options.mirrors = mirrors;
        options.per_server = self.per_server;
        options.connections = self.connections;
        options.min_split = self.min_split;
        options.stall_timeout = self.stall_timeout;
        options.max_tries = self.max_tries;
        options.max_wait = self.max_wait;
        options.checksum = self.checksum.clone();
        options.limit_rate = self.limit_rate;
        options.max_filesize = self.max_filesize;
        options.http = self.http.clone();
        options
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

/// Whether `-o` names standard output: exactly `-` (a file named so is `./-`).
fn is_stdout(path: &std::path::Path) -> bool {
    path.as_os_str() == "-"
}

fn parse_window(text: &str) -> Result<Window, String> {
    let bytes = parse_bytes(text).ok_or("expected a size such as 64M or 1G")?;
    Window::new(bytes).map_err(|err| err.to_string())
}

fn parse_size(text: &str) -> Result<u64, String> {
    parse_bytes(text).ok_or_else(|| "expected a size such as 100M or 2G".to_string())
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

/// A wait such as `90` or `90s` (seconds), `10m` or `1h`.
pub(crate) fn parse_wait(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1.0),
        Some((i, 'm')) => (&t[..i], 60.0),
        Some((i, 'h')) => (&t[..i], 3600.0),
        _ => (t, 1.0),
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|n| *n > 0.0)
        .and_then(|n| Duration::try_from_secs_f64(n * unit).ok())
        .ok_or_else(|| "expected a positive duration such as 90, 30s, 10m or 1h".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_seconds_minutes_or_hours() {
        assert_eq!(parse_wait("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_wait("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_wait("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_wait("1.5h"), Ok(Duration::from_secs(5400)));
        for bad in ["", "0", "-1", "m", "ten", "5d"] {
            assert!(parse_wait(bad).is_err(), "{bad}");
        }
    }

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
