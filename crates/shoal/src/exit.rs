//! Exit codes, all in one place so the README's table and the code cannot drift apart.

use std::error::Error;
use std::io::{self, Write};
use std::process::ExitCode;

use shoal_engine::{DownloadError, ErrorKind};

pub(crate) const OK: u8 = 0;
/// A bug or a failure that fits no other code.
pub(crate) const INTERNAL: u8 = 1;
/// The command line was wrong; nothing was fetched.
pub(crate) const USAGE: u8 = 2;
pub(crate) const NETWORK: u8 = 3;
pub(crate) const HTTP_STATUS: u8 = 4;
pub(crate) const CHECKSUM: u8 = 5;
pub(crate) const LOCAL_IO: u8 = 6;
pub(crate) const OUTPUT_EXISTS: u8 = 7;
/// 128 + SIGINT, what shells report for a command stopped by Ctrl-C.
pub(crate) const INTERRUPTED: u8 = 130;
/// 128 + SIGPIPE, what shells report for `cat` or `gzip -dc` whose reader closed the pipe
/// (`| head`): `shoal get -o -` ends quietly with it when standard output is closed.
pub(crate) const BROKEN_PIPE: u8 = 141;

/// The code of a failed download: its kind's, except that a stream whose reader went away
/// (standard output closed) ends with [`BROKEN_PIPE`].
pub(crate) fn for_error(err: &DownloadError) -> u8 {
    match err {
        DownloadError::StreamClosed { .. } => BROKEN_PIPE,
        _ => for_kind(err.kind()),
    }
}

pub(crate) fn for_kind(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Network => NETWORK,
        ErrorKind::HttpStatus => HTTP_STATUS,
        ErrorKind::Checksum => CHECKSUM,
        ErrorKind::LocalIo => LOCAL_IO,
        ErrorKind::OutputExists => OUTPUT_EXISTS,
        ErrorKind::Cancelled => INTERRUPTED,
    }
}

/// Prints a clap error (or the help and version text clap hands back as one) and picks the
/// code: help and version are successes, everything else is a usage error.
pub(crate) fn usage(err: &clap::Error) -> ExitCode {
    let _ = err.print();
    ExitCode::from(if err.use_stderr() { USAGE } else { OK })
}

/// Reports a failure that is not a download error (a signal handler that cannot be installed,
/// the engine panicking) as `shoal: <cause chain>` and exits with [`INTERNAL`].
pub(crate) fn internal(err: &anyhow::Error) -> ExitCode {
    let chain: &dyn Error = err.as_ref();
    say(&format!("shoal: {}", message(chain)));
    ExitCode::from(INTERNAL)
}

pub(crate) use shoal_core::chain::chain as message;

/// Writes one line to stderr. A closed stderr is no reason to panic or to change the exit code.
pub(crate) fn say(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}
