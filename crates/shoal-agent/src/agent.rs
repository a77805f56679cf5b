//! The daemon put together: the store of fetched contents, the shared directory kept in the
//! catalog, the piece server and the control API on one listener, and the announcer.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shoal_core::wire::AgentId;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::announce::{Announcer, Identity};
use crate::catalog::Catalog;
use crate::control;
use crate::fetch::{FetchOptions, Fetcher};
use crate::objects::{Objects, ObjectsError};
use crate::serve::{self, PieceServer, ServeOptions};
use crate::share::{self, Share, ShareError, ShareOptions};
use crate::tracker::TrackerClient;

#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Objects(#[from] ObjectsError),
    #[error(transparent)]
    Share(#[from] ShareError),
    #[error("serving on {addr} failed: {source}")]
    Serve {
        addr: String,
        #[source]
        source: io::Error,
    },
}

/// Everything `shoal agent` is told.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub id: AgentId,
    /// `None`: no fleet, only the control API and the origin.
    pub tracker: Option<TrackerClient>,
    /// The directory whose files are shared in place.
    pub share: Option<PathBuf>,
    /// Where fetched contents, the manifest cache and resume state live.
    pub data: PathBuf,
    /// Where peers reach this agent (told to the tracker).
    pub advertise: SocketAddr,
    pub serve: ServeOptions,
    pub fetch: FetchOptions,
    /// Most bytes of fetched contents kept; least recently used go first.
    pub cache_size: Option<u64>,
    /// The shared directory is scanned again this often even without change notices.
    pub rescan_every: Duration,
}

/// Runs the agent on `listener` until `shutdown` completes: then uploads and downloads stop,
/// and the agent deregisters.
pub async fn run(
    listener: TcpListener,
    options: AgentOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let catalog = Catalog::new();
    let objects = Objects::open(&options.data, options.cache_size)?;
    let seeded = objects.load(&catalog)?;
    let stop = CancellationToken::new();
    if let Some(dir) = &options.share {
        let share = Share::new(ShareOptions::new(dir, options.data.join("manifests.json")));
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
        objects,
        options.tracker.clone(),
        options.fetch.clone(),
    );
    let announcer = options.tracker.clone().map(|tracker| {
        let identity = Identity {
            id: options.id.clone(),
            addr: options.advertise,
            upload_capacity: options.serve.upload_limit.unwrap_or(0),
        };
        let announcer = Announcer::new(tracker, identity, catalog.clone(), server.clone());
        tokio::spawn(announcer.run(stop.clone()))
    });
    let router = serve::app(server.clone()).merge(control::app(fetcher, stop.clone()));
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    info!(%addr, advertise = %options.advertise, id = %options.id, seeded, "agent listening");
    let stopping = stop.clone();
    let uploads = server.clone();
    let served = shoal_serve::serve(listener, router, options.serve.limits.clone(), async move {
        shutdown.await;
        // Long uploads and downloads would hold the graceful shutdown open.
        stopping.cancel();
        uploads.stop_uploads();
    })
    .await;
    stop.cancel();
    if let Some(announcer) = announcer {
        let _ = announcer.await;
    }
    info!("agent stopped");
    served.map_err(|source| AgentError::Serve { addr, source })
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
