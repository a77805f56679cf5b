//! What the RPC tests share: the secret they use and a queue whose downloads run on the engine
//! (no tracker).

use std::path::Path;
use std::sync::Arc;

use shoal_agent::queue::{Caps, Queue, QueueOptions, Via};
use shoal_engine::{CancellationToken, HttpOptions};

/// The RPC secret every test's daemon takes.
pub(crate) const SECRET: &str = "rpc-secret-for-tests";

/// A queue kept in `data`, saving into `out`, running `max_concurrent` downloads on the
/// engine, without caps; it stops with `stop`.
pub(crate) async fn engine_queue(
    data: &Path,
    out: &Path,
    max_concurrent: usize,
    stop: &CancellationToken,
) -> Queue {
    Queue::open(
        QueueOptions {
            data: data.to_path_buf(),
            dir: out.to_path_buf(),
            max_concurrent,
        },
        Via::Engine {
            http: HttpOptions::default(),
            tally: Arc::default(),
        },
        Caps::new(None, None, None),
        stop.clone(),
    )
    .await
    .unwrap()
}
