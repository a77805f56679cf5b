//! `shoal agent`: reads the token, builds the agent's options from the command line and runs
//! the daemon (`shoal_agent::run`) until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use shoal_agent::agent::{ControlOptions, DaemonOptions};
use shoal_agent::fetch::FetchOptions;
use shoal_agent::proxy::{Cidr, ProxyOptions, Rules, UrlPattern};
use shoal_agent::registry::{Upstream, Upstreams};
use shoal_agent::rpc::AllowedOrigins;
use shoal_agent::serve::ServeOptions;
use shoal_agent::share::Symlinks;
use shoal_agent::tracker::TrackerClient;
use shoal_agent::AgentOptions;
use shoal_agent::ServerTls;
use shoal_core::wire::AgentId;
use shoal_engine::ca::ExtraRoots;
use shoal_engine::{parse_bytes, Connections, HttpOptions, Rate};
use tracing::level_filters::LevelFilter;
use url::Url;

use crate::{exit, logging, signals};

#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    /// The tracker, e.g. http://tracker:7700; repeat it (or separate URLs with commas) for
    /// replicas, asked in turn when one is unreachable; without it the agent only fetches
    /// from origins
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    tracker: Vec<Url>,

    /// File holding this agent's token for the tracker (one line): its own `agent:ID` token,
    /// or the fleet's agent token; also the peer token unless --peer-token-file is given.
    /// Needed with --tracker only: without one the agent is a plain download daemon
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// File holding the token peers exchange (one line): sent to peers, and what peers must
    /// send to fetch pieces from this agent; needed when --token-file holds a per-agent token
    /// [default: --token-file]
    #[arg(long, value_name = "FILE")]
    peer_token_file: Option<PathBuf>,

    /// Directory whose files are shared with the fleet, in place
    #[arg(long, value_name = "DIR")]
    share: Option<PathBuf>,

    /// Share what every symlink in --share points to, also outside it [default: only targets
    /// inside --share]
    #[arg(long, requires = "share")]
    follow_symlinks: bool,

    /// Directory of fetched contents, manifest cache and resume state (created if missing)
    #[arg(long, value_name = "DIR")]
    data: PathBuf,

    /// Address of the piece server (the control API is on DATA/control.sock)
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7701")]
    listen: SocketAddr,

    /// Also serve the control API on this TCP address, to clients that send its token
    #[arg(long, value_name = "ADDR")]
    control_listen: Option<SocketAddr>,

    /// File holding the TCP control listener's token, created (mode 0600) if missing
    /// [default: DATA/control.token]
    #[arg(long, value_name = "FILE", requires = "control_listen")]
    control_token_file: Option<PathBuf>,

    /// Address peers reach this agent at [default: --listen, when it names one address]
    #[arg(long, value_name = "ADDR")]
    advertise: Option<SocketAddr>,

    /// This agent's id at the tracker, A-Z a-z 0-9 . _ - [default: the host name and a random
    /// suffix, chosen once and kept in DATA/agent-id]
    #[arg(long, value_name = "ID")]
    id: Option<String>,

    /// Total upload speed to peers, e.g. 50M (bytes per second); changeable at run time with
    /// the RPC's changeGlobalOption max-overall-upload-limit
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    upload_limit: Option<Rate>,

    /// Uploads to peers at once; more are answered 503 and asked again later
    #[arg(long, value_name = "N", default_value = "64")]
    max_uploads: usize,

    /// Most bytes of fetched contents to keep, e.g. 50G; least recently used go first
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    cache_size: Option<u64>,

    /// Connections of one download, to all peers and the origin together
    #[arg(short, long, value_name = "N", default_value = "32", value_parser = parse_connections)]
    connections: Connections,

    /// Connections to one peer (one to a seed)
    #[arg(long, value_name = "N", default_value = "1", value_parser = parse_connections)]
    per_peer: Connections,

    /// Serve the aria2-compatible JSON-RPC (and its WebSocket) at /jsonrpc on this address
    /// [default when given without a value: 127.0.0.1:6800]
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:6800")]
    rpc_listen: Option<SocketAddr>,

    /// File holding the RPC's secret, which clients send as "token:SECRET"; created (mode
    /// 0600) if missing [default: DATA/rpc.secret]
    #[arg(long, value_name = "FILE", requires = "rpc_listen")]
    rpc_secret_file: Option<PathBuf>,

    /// Web pages of this origin (scheme://host[:port], e.g. AriaNg's) may call the RPC from a
    /// browser; repeatable; '*' for any page, as aria2's --rpc-allow-origin-all (calls still
    /// need the secret)
    #[arg(long, value_name = "ORIGIN")]
    rpc_allow_origin: Vec<String>,

    /// Queued downloads running at once (the queue is kept in DATA/queue.json)
    #[arg(long, value_name = "N", default_value = "5", value_parser = clap::value_parser!(u64).range(1..=1000))]
    max_concurrent_downloads: u64,

    /// Directory queued downloads are saved in unless they name a dir [default: the current
    /// directory]
    #[arg(short = 'd', long, value_name = "DIR")]
    dir: Option<PathBuf>,

    /// Total download speed of the queued downloads, e.g. 20M (bytes per second); changeable
    /// at run time with the RPC's changeGlobalOption max-overall-download-limit
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    max_overall_download_limit: Option<Rate>,

    /// How long a download waits through an origin outage (e.g. 600, 90s, 10m): pieces the
    /// swarm holds are fetched meanwhile, the origin is asked again with back-off, and the
    /// download fails, naming what is missing, only once nothing arrived for this long
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = crate::get::parse_wait)]
    max_wait: Duration,

    /// Serve pieces (and --control-listen) over HTTPS only, with this PEM certificate chain
    /// (leaf first); peers are told to use HTTPS, so the peer token never crosses the network
    /// in clear text
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// PEM file of CA certificates to trust besides the system's, for an https tracker, peers
    /// and origins whose certificates a private CA signs
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Serve an HTTP proxy on this address (e.g. 127.0.0.1:7702): large http:// downloads
    /// through it come from the swarm; everything else passes through
    #[arg(long, value_name = "ADDR")]
    proxy_listen: Option<SocketAddr>,

    /// Clients in this address block may use the proxy too (repeatable, e.g. 10.0.0.0/8);
    /// required to listen on an address that is not loopback
    #[arg(long, value_name = "CIDR")]
    proxy_allow: Vec<Cidr>,

    /// Answers through the proxy at least this large come from the swarm
    #[arg(long, value_name = "SIZE", default_value = "4M", value_parser = parse_size)]
    proxy_min_size: u64,

    /// Only URLs this regular expression matches (anywhere in the URL) come from the swarm
    #[arg(long, value_name = "REGEX")]
    proxy_url: Option<UrlPattern>,

    /// Requests carrying Authorization come from the swarm too: everyone allowed to use the
    /// proxy then gets what one client's credentials fetched
    #[arg(long)]
    proxy_share_authorized: bool,

    /// How long an origin may keep the proxy waiting (e.g. 60, 90s, 5m): the head of an answer
    /// passed through must come within it (else the client gets 504), and its body may not
    /// pause for longer (else the client's connection is cut short); the registry mirror's
    /// upstreams too
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::get::parse_wait)]
    proxy_timeout: Duration,

    /// Mirror this OCI registry on the proxy listener (under /v2/), its blobs through the
    /// swarm: e.g. https://registry-1.docker.io; repeatable, one per registry host (containerd
    /// names the one it wants; other clients need exactly one); http:// for a local registry
    #[arg(long, value_name = "URL")]
    registry_upstream: Vec<Upstream>,

    /// How many layers after the one a client asks for the registry mirror starts fetching
    /// before the client asks: it keeps the link busy between layers of a client that pulls
    /// one at a time (skopeo); 0 fetches only what clients ask for
    #[arg(long, value_name = "N", default_value_t = shoal_agent::proxy::DEFAULT_READ_AHEAD)]
    registry_read_ahead: usize,
}

fn parse_rate(text: &str) -> Result<Rate, String> {
    Rate::parse(text).map_err(|e| e.to_string())
}

fn parse_size(text: &str) -> Result<u64, String> {
    parse_bytes(text)
        .filter(|&n| n > 0)
        .ok_or_else(|| "expected a size such as 50G or 512M".into())
}

fn parse_connections(text: &str) -> Result<Connections, String> {
    let n: u64 = text
        .parse()
        .map_err(|_| format!("expected a number from 1 to {}", Connections::MAX))?;
    Connections::new(n).map_err(|e| e.to_string())
}

pub(crate) async fn run(args: AgentArgs, log: logging::Options) -> ExitCode {
    logging::init(log, LevelFilter::INFO);
    let options = match options(args) {
        Ok(options) => options,
        Err(e) => {
            exit::say(&format!("shoal agent: {}", exit::message(e.as_ref())));
            return ExitCode::from(exit::USAGE);
        }
    };
    match serve(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_id_refused(&e) => {
            exit::say(&format!(
                "shoal agent: {}; set a distinct --id (or, on a machine cloned with its data \
                 directory, remove agent-id from --data)",
                exit::message(e.as_ref())
            ));
            ExitCode::from(exit::USAGE)
        }
        Err(e) if is_open_proxy(&e) => {
            exit::say(&format!("shoal agent: {}", exit::message(e.as_ref())));
            ExitCode::from(exit::USAGE)
        }
        Err(e) => exit::internal(&e),
    }
}

fn is_open_proxy(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<shoal_agent::AgentError>(),
        Some(shoal_agent::AgentError::Proxy(
            shoal_agent::proxy::ProxyError::Open { .. }
        ))
    )
}

fn is_id_refused(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<shoal_agent::AgentError>(),
        Some(shoal_agent::AgentError::IdRefused(_))
    )
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = text.trim().to_string();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty; put the fleet's agent token in it",
        path.display()
    );
    Ok(token)
}

fn options(args: AgentArgs) -> anyhow::Result<(AgentOptions, SocketAddr)> {
    let token = match &args.token_file {
        Some(path) => Some(read_token(path)?),
        None if args.tracker.is_empty() => None,
        None => anyhow::bail!("--tracker needs --token-file, the file holding this agent's token"),
    };
    // Without a tracker nobody is told of this agent and no peer token is accepted: the piece
    // server refuses every request.
    let peer_token = match &args.peer_token_file {
        Some(path) => Some(read_token(path)?),
        None => token.clone(),
    };
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating the data directory {}", args.data.display()))?;
    let id = match args.id {
        Some(id) => AgentId::new(id.clone()).with_context(|| format!("--id {id:?}"))?,
        None => shoal_agent::id::default_id(&args.data).context("choosing an id; give --id")?,
    };
    let advertise = match args.advertise {
        Some(addr) => addr,
        None if args.tracker.is_empty() => args.listen,
        None if !args.listen.ip().is_unspecified() && args.listen.port() != 0 => args.listen,
        None => anyhow::bail!(
            "--listen {} does not say where peers reach this agent: give --advertise ADDR:PORT",
            args.listen
        ),
    };
    let upload_limit = args.upload_limit.map(|r| r.bytes_per_sec());
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(ServerTls::from_pem_files(cert, key)?),
        (None, None) => None,
        // Possible when the config file gives one of them.
        _ => anyhow::bail!("--tls-cert and --tls-key go together: give both, or neither"),
    };
    let ca = ExtraRoots::load(args.ca.as_deref())?;
    let dir = match args.dir {
        Some(dir) => dir,
        None => std::env::current_dir().context("reading the current directory; give --dir")?,
    };
    let mut trackers = args.tracker.into_iter();
    let options = AgentOptions {
        id,
        tracker: trackers.next().map(|first| {
            TrackerClient::with_replicas(
                first,
                trackers.collect(),
                token.clone().unwrap_or_default(),
                ca.as_ref(),
            )
        }),
        share: args.share,
        symlinks: if args.follow_symlinks {
            Symlinks::Follow
        } else {
            Symlinks::Inside
        },
        data: args.data,
        advertise,
        serve: ServeOptions {
            tokens: peer_token.clone().into_iter().collect(),
            upload_limit,
            max_connections: args.max_uploads.max(1),
            ..ServeOptions::default()
        },
        fetch: FetchOptions {
            peer_token: peer_token.unwrap_or_default(),
            per_peer: args.per_peer,
            connections: args.connections,
            max_wait: args.max_wait,
            http: HttpOptions {
                ca,
                ..HttpOptions::default()
            },
            ..FetchOptions::default()
        },
        cache_size: args.cache_size,
        rescan_every: Duration::from_secs(60),
        control: ControlOptions {
            listen: args.control_listen,
            token_file: args.control_token_file,
        },
        tls,
        proxy: ProxyOptions {
            listen: args.proxy_listen,
            allow: args.proxy_allow,
            rules: Rules {
                min_size: args.proxy_min_size,
                url: args.proxy_url,
                share_authorized: args.proxy_share_authorized,
            },
            registry: Upstreams::new(args.registry_upstream)?,
            registry_read_ahead: args.registry_read_ahead,
            upstream_timeout: args.proxy_timeout,
        },
        queue: DaemonOptions {
            listen: args.rpc_listen,
            secret_file: args.rpc_secret_file,
            dir,
            max_concurrent: args.max_concurrent_downloads as usize,
            download_limit: args.max_overall_download_limit.map(|r| r.bytes_per_sec()),
            allow_origins: AllowedOrigins::parse(&args.rpc_allow_origin)?,
        },
    };
    Ok((options, args.listen))
}

async fn serve((options, listen): (AgentOptions, SocketAddr)) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let shutdown = signals::stop_requested().context("installing signal handlers")?;
    shoal_agent::run(listener, options, shutdown)
        .await
        .context("running the agent")
}
