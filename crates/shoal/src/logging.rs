//! Logs with `tracing` to stderr, printed above the progress bar rather than through it.

use std::io::{self, IsTerminal, Write};

use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::progress;

/// Installs the subscriber. `RUST_LOG` wins; otherwise shoal's own crates log at `default`,
/// or info, debug or trace with `-v`, `-vv`, `-vvv`. Other crates stay silent unless `RUST_LOG`
/// names them: what they report (a TLS verifier's error, say) reaches the user as shoal's own
/// message, and twice is noise.
pub fn init(verbose: u8, default: LevelFilter) {
    let level = match verbose {
        0 => default,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    // The `shoal` target prefix matches every `shoal_*` crate as well.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("shoal={level}")));
    // Fails only if a subscriber is already installed, which then keeps logging.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(AboveBar)
        .with_ansi(io::stderr().is_terminal())
        .try_init();
}

struct AboveBar;

impl<'a> MakeWriter<'a> for AboveBar {
    type Writer = LineBuffer;

    fn make_writer(&'a self) -> LineBuffer {
        LineBuffer(Vec::new())
    }
}

/// Collects one log record and writes it in one piece, with the bar cleared, when dropped.
struct LineBuffer(Vec<u8>);

impl Write for LineBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineBuffer {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            progress::suspend(|| {
                let _ = io::stderr().lock().write_all(&self.0);
            });
        }
    }
}
