//! Ctrl-C and SIGTERM: the first asks the engine to stop cleanly (so the `.part` file and its
//! state stay usable), a second exits at once.

use std::io;

use shoal_engine::CancellationToken;
use tokio::signal::unix::{signal, SignalKind};

use crate::exit;
use crate::progress::{self, Mode};

/// Installs the handlers now, so a signal that arrives before the first poll is not lost,
/// and watches for signals in a background task.
pub(crate) fn watch(cancel: CancellationToken, mode: Mode) -> io::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        cancel.cancel();
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        progress::interrupted_now(mode);
        std::process::exit(exit::INTERRUPTED.into());
    });
    Ok(())
}

/// Resolves at the first Ctrl-C or SIGTERM: how a server (`shoal tracker`, `shoal agent`) is
/// told to stop. The handlers are installed now, so an early signal is not lost.
pub(crate) fn stop_requested() -> io::Result<impl std::future::Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
    })
}
