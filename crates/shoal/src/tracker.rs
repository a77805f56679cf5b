//! `shoal tracker`: reads the tokens file, opens the store (SQLite in `--data`, or the Redis
//! that `--store` names, shared by tracker replicas) and serves the tracker until SIGTERM or
//! Ctrl-C, then finishes requests in flight and exits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use shoal_engine::parse_bytes;
use shoal_tracker::store::redis::redact;
use shoal_tracker::{
    AppState, Clock, RateLimit, RedisStore, ServerTls, SqliteLocation, SqliteStore, Store,
    StoreOptions, Tokens, TrackerOptions,
};
use tracing::level_filters::LevelFilter;

use crate::{exit, logging, signals};

#[derive(Debug, Args)]
pub(crate) struct TrackerArgs {
    /// Address to listen on, e.g. 0.0.0.0:7700 to serve other machines
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7700")]
    listen: SocketAddr,

    /// Directory of the tracker's database (created if missing); this or --store is required
    // One of --data and --store is checked in `state`, not by clap: clap does not count a value
    // from --config (a default, to clap) when it checks requirements and conflicts.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,

    /// Keep all state in Redis instead, e.g. redis://redis-a:6379/0, so that several tracker
    /// replicas behind a load balancer share it
    #[arg(long, value_name = "URL", value_parser = parse_store)]
    store: Option<String>,

    /// TOML file of [[token]] tables with name, secret and role (agent, reader, admin)
    #[arg(long, value_name = "FILE")]
    tokens: PathBuf,

    /// Seconds an agent's lease lasts after each heartbeat or announce
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    lease: Duration,

    /// How long a content that no agent holds is kept (its catalog entry, manifest and URL
    /// mappings): seconds, or with a unit (90m, 36h, 7d); "never" (or 0) keeps it for ever
    #[arg(long, value_name = "TIME", default_value = "7d", value_parser = parse_retention)]
    retention: Retention,

    /// Largest request body, e.g. 1M
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = parse_size)]
    max_body: usize,

    /// Largest manifest body (64 hex digits per piece), e.g. 16M
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_size)]
    max_manifest_body: usize,

    /// Requests per second allowed per token; 0 turns rate limiting off
    #[arg(long, value_name = "N", default_value = "1000")]
    rate_limit: u32,

    /// Requests a token may send at once after being idle [default: 2 × --rate-limit]
    #[arg(long, value_name = "N")]
    rate_burst: Option<u32>,

    /// Serve HTTPS with this PEM certificate chain (leaf first), so tokens never cross the
    /// network in clear text
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn parse_secs(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err("expected a whole number of seconds, at least 1".into()),
    }
}

/// `--retention`: how long, or `None` for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retention(Option<Duration>);

fn parse_retention(text: &str) -> Result<Retention, String> {
    let bad = || {
        format!(
            "expected a time such as 3600, 90m, 36h or 7d, or \"never\" (0 means never too), \
             not {text:?}"
        )
    };
    if text == "never" {
        return Ok(Retention(None));
    }
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        _ => return Err(bad()),
    };
    let secs = number.checked_mul(scale).ok_or_else(bad)?;
    Ok(Retention((secs > 0).then(|| Duration::from_secs(secs))))
}

fn parse_store(text: &str) -> Result<String, String> {
    match url::Url::parse(text) {
        Ok(url) if url.scheme() == "redis" && url.has_host() => Ok(text.to_string()),
        // rediss:// (TLS) would need the redis crate's TLS features, which are not built in.
        _ => Err("expected a Redis URL such as redis://redis-a:6379/0 (no TLS)".into()),
    }
}

fn parse_size(text: &str) -> Result<usize, String> {
    parse_bytes(text)
        .filter(|&n| n > 0)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| "expected a size such as 1M or 256K".into())
}

/// Where the tracker keeps its state.
enum State {
    Sqlite(PathBuf),
    Redis(String),
}

impl TrackerArgs {
    fn state(&self) -> anyhow::Result<State> {
        match (&self.data, &self.store) {
            (Some(dir), None) => Ok(State::Sqlite(dir.clone())),
            (None, Some(url)) => Ok(State::Redis(url.clone())),
            (Some(_), Some(_)) => anyhow::bail!(
                "--data and --store exclude each other (either may come from --config or SHOAL_*): \
                 keep one"
            ),
            (None, None) => anyhow::bail!(
                "give --data DIR for a database of its own, or --store redis://HOST:6379/0 to share \
                 one with other replicas"
            ),
        }
    }
}

pub(crate) async fn run(args: TrackerArgs, log: logging::Options) -> ExitCode {
    logging::init(log, LevelFilter::INFO);
    let loaded = match args.state() {
        Ok(state) => load_tokens(&args.tokens)
            .await
            .map(|tokens| (state, tokens)),
        Err(e) => Err(e),
    };
    let loaded = loaded.and_then(|(state, tokens)| {
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(ServerTls::from_pem_files(cert, key)?),
            _ => None,
        };
        Ok((state, tokens, tls))
    });
    let (state, tokens, tls) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            exit::say(&format!("shoal tracker: {}", exit::message(e.as_ref())));
            return ExitCode::from(exit::USAGE);
        }
    };
    match serve(args, state, tokens, tls).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit::internal(&e),
    }
}

async fn load_tokens(path: &Path) -> anyhow::Result<Tokens> {
    let text = tokio::fs::read_to_string(path)
        .await
        .with_context(|| format!("reading the tokens file {}", path.display()))?;
    let tokens =
        Tokens::from_toml(&text).with_context(|| format!("tokens file {}", path.display()))?;
    warn_if_readable_by_others(path).await;
    Ok(tokens)
}

/// Secrets readable by every local user are not secret; say so, but serve anyway.
async fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = tokio::fs::metadata(path).await {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                "the tokens file is readable by other users; chmod 600 it"
            );
        }
    }
}

async fn serve(
    args: TrackerArgs,
    state: State,
    tokens: Tokens,
    tls: Option<ServerTls>,
) -> anyhow::Result<()> {
    let data = match state {
        State::Sqlite(data) => data,
        State::Redis(url) => {
            // Replicas compare lease deadlines in one store, so leases need one clock: the
            // wall clock. Rate limits are per process and keep the monotonic one.
            let store = RedisStore::open(
                &url,
                StoreOptions {
                    lease: args.lease,
                    clock: Clock::wall(),
                    retention: args.retention.0,
                    ..StoreOptions::default()
                },
            )
            .await
            .with_context(|| format!("opening the tracker store {}", redact(&url)))?;
            tracing::info!(tokens = tokens.len(), store = %redact(&url), "tracker starting");
            return serve_with(store, Clock::system(), args, tokens, tls).await;
        }
    };
    let clock = Clock::system();
    let store = SqliteStore::open(
        SqliteLocation::Directory(data.clone()),
        StoreOptions {
            lease: args.lease,
            clock: clock.clone(),
            retention: args.retention.0,
            ..StoreOptions::default()
        },
    )
    .await
    .with_context(|| format!("opening the tracker database in {}", data.display()))?;
    tracing::info!(tokens = tokens.len(), data = %data.display(), "tracker starting");
    serve_with(store, clock, args, tokens, tls).await
}

async fn serve_with<S: Store>(
    store: S,
    clock: Clock,
    args: TrackerArgs,
    tokens: Tokens,
    tls: Option<ServerTls>,
) -> anyhow::Result<()> {
    let options = TrackerOptions {
        tls,
        body_limit: args.max_body,
        manifest_body_limit: args.max_manifest_body,
        rate_limit: RateLimit {
            per_second: args.rate_limit,
            burst: args
                .rate_burst
                .unwrap_or_else(|| args.rate_limit.saturating_mul(2)),
        },
        // Lapsed agents are already left out of answers; sweeping only frees their memory.
        sweep_every: args.lease,
        clock,
        ..TrackerOptions::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let shutdown = signals::stop_requested().context("installing signal handlers")?;
    shoal_tracker::run(listener, AppState::new(store, tokens, options), shutdown)
        .await
        .context("serving")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_takes_units_and_never() {
        let days = |d: u64| Retention(Some(Duration::from_secs(d * 24 * 60 * 60)));
        assert_eq!(
            parse_retention("7d").unwrap(),
            Retention(Some(shoal_tracker::RETENTION)),
            "the default is the store's"
        );
        assert_eq!(parse_retention("2d").unwrap(), days(2));
        assert_eq!(
            parse_retention("36h").unwrap(),
            Retention(Some(Duration::from_secs(36 * 3600)))
        );
        assert_eq!(
            parse_retention("90m").unwrap(),
            Retention(Some(Duration::from_secs(5400)))
        );
        assert_eq!(
            parse_retention("3600").unwrap(),
            Retention(Some(Duration::from_secs(3600)))
        );
        assert_eq!(parse_retention("never").unwrap(), Retention(None));
        assert_eq!(parse_retention("0").unwrap(), Retention(None));
        for bad in ["", "7w", "d", "-1", "1.5h", "99999999999999999999d"] {
            let err = parse_retention(bad).unwrap_err();
            assert!(err.contains("never"), "{bad}: {err}");
        }
    }
}
