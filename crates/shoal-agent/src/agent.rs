//! The daemon put together: the store of fetched contents, the shared directory kept in the
//! catalog, the piece server, the control API (on its socket, and on a TCP listener if asked),
//! the download queue with its aria2-compatible RPC (on `--rpc-listen`, if asked) and the
//! announcer; `/metrics` and `/healthz` beside the piece server; the HTTP proxy when asked.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shoal_core::wire::{AgentId, Scheme};
use shoal_serve::ServerTls;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::announce::{Announcer, IdRefused, Identity};
use crate::catalog::Catalog;
use crate::control::{self, door, Door, DoorError};
use crate::fetch::{Downloads, FetchOptions, Fetcher, Want};
use crate::metrics::{self, DataCheck, Observed};
use crate::objects::{Objects, ObjectsError};
use crate::ordered::Ordered;
use crate::proxy::{self, Proxy, ProxyError, ProxyOptions};
use crate::queue::{Caps, Queue, QueueError, QueueOptions, Via};
use crate::rpc::{self, AllowedOrigins, Rpc};
use crate::serve::{self, PieceServer, ServeOptions};
use crate::share::{self, Share, ShareError, ShareOptions, Symlinks};
use crate::tracker::TrackerClient;
use crate::ui;

/// Why the agent could not start or stopped; the message names the file, address or id to fix.
#[derive(Debug, Error)]
pub enum AgentError {
    /// The store of fetched contents in the data directory could not be opened or loaded.
    #[error(transparent)]
    Objects(#[from] ObjectsError),
    /// The shared directory could not be scanned.
    #[error(transparent)]
    Share(#[from] ShareError),
    /// The tracker says another live agent uses this agent's id.
    #[error(transparent)]
    IdRefused(#[from] IdRefused),
    /// The HTTP proxy could not start (an open proxy refused, or its address taken).
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// The control API's socket, token file or TCP listener could not be opened.
    #[error("opening the control API: {0}")]
    Control(#[from] DoorError),
    /// The download queue in the data directory could not be read or written.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The RPC's secret file could not be read or made.
    #[error("opening the RPC's secret: {0}")]
    RpcSecret(#[source] DoorError),
    /// Binding the control API's TCP listener failed, or a server stopped with an error.
    #[error("serving on {addr} failed: {source}")]
    Serve {
        /// The address bound or served, e.g. `127.0.0.1:7001`.
        addr: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// Everything `shoal agent` is told.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// This agent's id, as the tracker and peers know it (its token's name where tokens are per
    /// agent).
    pub id: AgentId,
    /// `None`: no fleet, only the control API and the origin.
    pub tracker: Option<TrackerClient>,
    /// The directory whose files are shared in place.
    pub share: Option<PathBuf>,
    /// Which symlinks in `share` are followed.
    pub symlinks: Symlinks,
    /// Where fetched contents, the manifest cache and resume state live.
    pub data: PathBuf,
    /// Where peers reach this agent (told to the tracker).
    pub advertise: SocketAddr,
    /// The piece server's tokens, upload limit and connection cap.
    pub serve: ServeOptions,
    /// How downloads through the agent are made (tokens, connections, timeouts).
    pub fetch: FetchOptions,
    /// Most bytes of fetched contents kept; least recently used go first.
    pub cache_size: Option<u64>,
    /// The shared directory is scanned again this often even without change notices.
    pub rescan_every: Duration,
    /// The control API's TCP door and its token file, besides the Unix socket.
    pub control: ControlOptions,
    /// Serve the piece server and the control API's TCP door over HTTPS only, with this
    /// certificate (`--tls-cert`, `--tls-key`); peers are told to use HTTPS. The CAs this agent
    /// trusts (`--ca`) are in [`FetchOptions::http`] and the tracker client.
    pub tls: Option<ServerTls>,
    /// The HTTP proxy (and registry mirror) door, if one listens.
    pub proxy: ProxyOptions,
    /// The download queue and its aria2-compatible RPC.
    pub queue: DaemonOptions,
}

/// The download queue (always kept, in `queue.json` in the data directory) and the RPC that
/// drives it.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Where the RPC listens (`--rpc-listen`); `None`: no RPC, the queue still resumes.
    pub listen: Option<SocketAddr>,
    /// The file holding the RPC's secret, created (mode 0600) when missing; `None`:
    /// `rpc.secret` in the data directory.
    pub secret_file: Option<PathBuf>,
    /// Where downloads are saved unless they name a `dir`.
    pub dir: PathBuf,
    /// Downloads running at once.
    pub max_concurrent: usize,
    /// The overall download cap, bytes a second (changeable at run time).
    pub download_limit: Option<u64>,
    /// Web pages of other origins that may call the RPC (`--rpc-allow-origin`).
    pub allow_origins: AllowedOrigins,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            listen: None,
            secret_file: None,
            dir: PathBuf::from("."),
            max_concurrent: 5,
            download_limit: None,
            allow_origins: AllowedOrigins::OwnOnly,
        }
    }
}

/// The control API's doors besides its Unix socket, `control.sock` in the data directory.
#[derive(Debug, Clone, Default)]
pub struct ControlOptions {
    /// A TCP listener for the control API, which then requires the token.
    pub listen: Option<SocketAddr>,
    /// The file holding the TCP listener's token, created (mode 0600) when missing; `None`:
    /// `control.token` in the data directory.
    pub token_file: Option<PathBuf>,
}

/// Runs the agent on `listener` until `shutdown` completes: then uploads and downloads stop,
/// and the agent deregisters. Stops by itself with [`AgentError::IdRefused`] when the tracker
/// says another live agent holds this agent's id.
pub async fn run(
    listener: TcpListener,
    options: AgentOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    // First: an open proxy refused leaves nothing behind.
    let proxy_listener = proxy::bind(&options.proxy).await?;
    let catalog = Catalog::new();
    let objects = Objects::open(&options.data, options.cache_size)?;
    let socket = door::bind_socket(&options.data.join(door::SOCKET_FILE)).await?;
    let control_tcp = match options.control.listen {
        Some(addr) => {
            let token_file = (options.control.token_file.clone())
                .unwrap_or_else(|| options.data.join(door::TOKEN_FILE));
            let token = door::token(&token_file)?;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Serve {
                    addr: addr.to_string(),
                    source,
                })?;
            Some((listener, token))
        }
        None => None,
    };
    let rpc_tcp = match options.queue.listen {
        Some(addr) => {
            let secret_file = (options.queue.secret_file.clone())
                .unwrap_or_else(|| options.data.join(rpc::SECRET_FILE));
            let secret = door::token(&secret_file).map_err(AgentError::RpcSecret)?;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Serve {
                    addr: addr.to_string(),
                    source,
                })?;
            Some((listener, secret))
        }
        None => None,
    };
    // Reads every record and checks every object's file: on a blocking thread.
    let seeded = {
        let (objects, catalog) = (objects.clone(), catalog.clone());
        tokio::task::spawn_blocking(move || objects.load(&catalog))
            .await
            .expect("loading does not panic")?
    };
    // Before anything is announced or served: the pieces of downloads a previous run left
    // unfinished are served again from the start.
    let downloads = Downloads::open(&options.data)?;
    let unfinished = downloads.restore(&objects, &catalog);
    let stop = CancellationToken::new();
    // Fires when the tracker refuses this agent's id: the agent then stops.
    let refused = CancellationToken::new();
    if let Some(dir) = &options.share {
        let share = Share::new(ShareOptions {
            symlinks: options.symlinks,
            ..ShareOptions::new(dir, options.data.join("manifests.json"))
        });
        let (share, report) = scan(share, &catalog).await;
        let report = report?;
        info!(
            dir = %dir.display(),
            files = report.0,
            hashed = report.1,
            "sharing"
        );
        tokio::spawn(keep_sharing(
            share,
            dir.clone(),
            catalog.clone(),
            options.rescan_every,
            stop.clone(),
        ));
    }
    let server = PieceServer::new(catalog.clone(), options.serve.clone());
    let fetcher = Fetcher::new(
        options.id.clone(),
        catalog.clone(),
        objects.clone(),
        options.tracker.clone(),
        options.fetch.clone(),
        downloads,
    );
    fetcher.restored(&unfinished);
    let (http, tally) = (options.fetch.http.clone(), fetcher.tally_handle());
    let via = match &options.tracker {
        Some(_) => Via::Swarm {
            fetcher: fetcher.clone(),
            http,
            tally,
        },
        None => Via::Engine { http, tally },
    };
    let caps = Caps::new(
        options.queue.download_limit,
        options.serve.upload_limit,
        Some(server.clone()),
    );
    let queue = Queue::open(
        QueueOptions {
            data: options.data.clone(),
            dir: options.queue.dir.clone(),
            max_concurrent: options.queue.max_concurrent,
        },
        via,
        caps,
        stop.clone(),
    )
    .await?;
    // The queue's own downloads are the queue's to resume: under its caps, and paused ones
    // stay paused.
    let unfinished = (unfinished.into_iter())
        .filter(|d| !matches!(&d.want, Want::Url(url) if queue.holds(url)))
        .collect();
    fetcher.resume(unfinished, &stop);
    let data = DataCheck::new(options.data.clone());
    data.check().await;
    tokio::spawn(data.clone().run(stop.clone()));
    let observed = Observed {
        server: server.clone(),
        fetcher: fetcher.clone(),
        objects,
        catalog: catalog.clone(),
        tracker: options.tracker.clone(),
        data,
    };
    let scheme = if options.tls.is_some() {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let announcer = options.tracker.clone().map(|tracker| {
        let identity = Identity {
            id: options.id.clone(),
            addr: options.advertise,
            scheme,
            upload_capacity: options.serve.upload_limit.unwrap_or(0),
        };
        let announcer = Announcer::new(tracker, identity, catalog.clone(), server.clone());
        let (stop, refused) = (stop.clone(), refused.clone());
        tokio::spawn(async move {
            let result = announcer.run(stop).await;
            if result.is_err() {
                refused.cancel();
            }
            result
        })
    });
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    info!(%addr, advertise = %options.advertise, %scheme, id = %options.id, seeded, "agent listening");
    // Fires on `shutdown` (or a refused id): every server then stops taking connections.
    let closing = CancellationToken::new();
    let stopping = stop.clone();
    let uploads = server.clone();
    let close = closing.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => {}
            _ = refused.cancelled() => {}
        }
        // Long uploads and downloads would hold the graceful shutdown open.
        stopping.cancel();
        uploads.stop_uploads();
        close.cancel();
    });
    // Nothing is forwarded to the agent's own listeners.
    let own: Vec<SocketAddr> = [Some(&listener)]
        .into_iter()
        .chain([
            control_tcp.as_ref().map(|(l, _)| l),
            proxy_listener.as_ref(),
        ])
        .flatten()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    proxy::refuse_own_upstreams(&options.proxy.registry, &own).await?;
    let control_app = |door| control::app(fetcher.clone(), stop.clone(), door);
    let control_socket = axum::serve(socket, control_app(Door::Socket))
        .with_graceful_shutdown(closing.clone().cancelled_owned());
    let control_tcp = control_tcp.map(|(listener, token)| {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "control API listening, with its token");
        }
        shoal_serve::serve_tls(
            listener,
            control_app(Door::Tcp { token }),
            options.serve.limits.clone(),
            options.tls.clone(),
            closing.clone().cancelled_owned(),
        )
    });
    let proxy_served = proxy_listener.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "HTTP proxy listening");
        }
        let proxy = Proxy::new(
            Ordered::new(fetcher.clone(), stop.clone()),
            &options.proxy,
            own,
            options.serve.limits.idle_timeout,
        );
        shoal_serve::serve(
            listener,
            proxy::app(proxy),
            options.serve.limits.clone(),
            closing.clone().cancelled_owned(),
        )
    });
    let rpc_served = rpc_tcp.map(|(listener, secret)| {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, path = rpc::RPC_PATH, "aria2-compatible RPC listening, with its secret");
            if !addr.ip().is_loopback() {
                warn!(
                    %addr,
                    "the RPC listens beyond this machine without TLS: its secret and the URLs \
                     it is given cross the network in clear; prefer a loopback --rpc-listen \
                     behind a TLS proxy"
                );
            }
        }
        let page = ui::app(ui::Fleet {
            id: options.id.clone(),
            advertise: options.advertise,
            tracker: options.tracker.clone(),
            catalog: catalog.clone(),
            server: server.clone(),
            secret: secret.clone(),
        });
        let rpc = Rpc::new(queue.clone(), secret, stop.clone())
            .allowing(options.queue.allow_origins.clone());
        // Every route of the RPC listener: `/jsonrpc`, and beside it the agent's web page
        // (`/ui`), which drives the queue through the same RPC.
        let routes = rpc::app(rpc).merge(page);
        shoal_serve::serve(
            listener,
            routes,
            options.serve.limits.clone(),
            closing.clone().cancelled_owned(),
        )
    });
    let pieces = shoal_serve::serve_tls(
        listener,
        serve::app(server.clone()).merge(metrics::app(observed)),
        options.serve.limits.clone(),
        options.tls.clone(),
        closing.clone().cancelled_owned(),
    );
    let (served, socket_served, tcp_served, proxy_served, rpc_served) = tokio::join!(
        pieces,
        control_socket,
        async move {
            match control_tcp {
                Some(tcp) => tcp.await,
                None => Ok(()),
            }
        },
        async move {
            match proxy_served {
                Some(proxy) => proxy.await,
                None => Ok(()),
            }
        },
        async move {
            match rpc_served {
                Some(rpc) => rpc.await,
                None => Ok(()),
            }
        }
    );
    stop.cancel();
    let _ = std::fs::remove_file(options.data.join(door::SOCKET_FILE));
    if let Some(announcer) = announcer {
        if let Ok(Err(refused)) = announcer.await {
            return Err(refused.into());
        }
    }
    info!("agent stopped");
    served
        .and(socket_served)
        .and(tcp_served)
        .and(proxy_served)
        .and(rpc_served)
        .map_err(|source| AgentError::Serve { addr, source })
}

/// Scans the shared directory off the runtime and puts what it holds in the catalog; returns
/// the share and (files, hashed).
async fn scan(share: Share, catalog: &Catalog) -> (Share, Result<(usize, usize), ShareError>) {
    let (share, report) = tokio::task::spawn_blocking(move || {
        let mut share = share;
        let report = share.scan();
        (share, report)
    })
    .await
    .expect("scanning does not panic");
    let counts = report.map(|report| {
        share::apply(catalog, &report.files);
        (report.files.len(), report.hashed)
    });
    (share, counts)
}

async fn keep_sharing(
    mut share: Share,
    dir: PathBuf,
    catalog: Catalog,
    every: Duration,
    stop: CancellationToken,
) {
    let mut watcher = match share::watch(&dir) {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            warn!("{e}; rescanning every {}s instead", every.as_secs());
            None
        }
    };
    loop {
        let changed = async {
            match &mut watcher {
                Some(w) => w.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            result = changed => {
                if let Err(e) = result {
                    warn!("{e}; rescanning every {}s instead", every.as_secs());
                    watcher = None;
                }
            }
            _ = tokio::time::sleep(every) => {}
        }
        let (s, counts) = scan(share, &catalog).await;
        share = s;
        match counts {
            Ok((files, hashed)) if hashed > 0 => info!(files, hashed, "shared directory changed"),
            Ok(_) => {}
            Err(e) => warn!("{e}"),
        }
    }
}
