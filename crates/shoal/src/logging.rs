//! Logs with `tracing` to stderr, printed above the progress bar rather than through it, as
//! text for people or as one JSON object per line for log collectors.

use std::io::{self, IsTerminal, Write};

use clap::ValueEnum;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::progress;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// One readable line per record, colored on a terminal
    Text,
    /// One JSON object per record: timestamp, level, target, fields (with the message)
    Json,
}

/// What the command line says about logging; every subcommand gets it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// `-v` given this many times.
    pub verbose: u8,
    pub format: Format,
}

/// Installs the subscriber. `RUST_LOG` wins; otherwise shoal's own crates log at `default`,
/// or info, debug or trace with `-v`, `-vv`, `-vvv`. Other crates stay silent unless `RUST_LOG`
/// names them: what they report (a TLS verifier's error, say) reaches the user as shoal's own
/// message, and twice is noise.
pub(crate) fn init(options: Options, default: LevelFilter) {
    let level = match options.verbose {
        0 => default,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    // The `shoal` target prefix matches every `shoal_*` crate as well.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("shoal={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(AboveBar);
    // Fails only if a subscriber is already installed, which then keeps logging.
    let _ = match options.format {
        Format::Text => builder.with_ansi(io::stderr().is_terminal()).try_init(),
        Format::Json => builder.json().with_ansi(false).try_init(),
    };
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
