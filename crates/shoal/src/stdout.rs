//! `shoal get -o -`: the download streamed to standard output in file order while it runs;
//! progress, warnings and errors go to stderr as always. A closed standard output (`| head`)
//! ends the run quietly with [`exit::BROKEN_PIPE`].

use std::io::{self, Write};
use std::process::ExitCode;

use shoal_engine::stream::{self, StreamReader};
use shoal_engine::{CancellationToken, DownloadOptions, Output, Window};
use tokio::io::AsyncReadExt;

use crate::batch;
use crate::exit::{self, say};
use crate::progress::{Mode, View};

/// Bytes handed to standard output per write.
const WRITE: usize = 256 * 1024;

/// How copying the stream to standard output ended.
enum Copied {
    /// Every byte, then the end of the file.
    Whole,
    /// The download failed; the engine's error says why.
    Failed,
    /// Standard output was closed by its reader.
    Closed,
    /// Writing to standard output failed otherwise.
    WriteFailed(io::Error),
}

/// Runs `options` (its output replaced by a stream of `window` bytes) with its bytes going to
/// standard output.
pub(crate) async fn run(
    mut options: DownloadOptions,
    window: Window,
    mode: Mode,
    cancel: CancellationToken,
) -> ExitCode {
    let (sink, reader) = stream::channel(window);
    options.output = Output::Stream(sink);
    let view = View::new(mode, &options.url);
    let copying = tokio::task::spawn_blocking(move || copy(reader));
    let outcome = batch::drive(options, view, cancel).await;
    let copied = copying.await.unwrap_or(Copied::Failed);
    match copied {
        Copied::Closed => ExitCode::from(exit::BROKEN_PIPE),
        Copied::WriteFailed(err) => {
            say(&format!(
                "shoal: writing to standard output failed: {err}; the output is incomplete"
            ));
            ExitCode::from(exit::LOCAL_IO)
        }
        Copied::Whole | Copied::Failed => ExitCode::from(outcome.code()),
    }
}

/// Copies the stream to standard output until its end, a failure, or a closed output (the
/// reader is dropped then, which stops the download). Writes to a pipe block for as long as
/// its reader waits: on a blocking thread, not on the runtime's.
fn copy(mut reader: StreamReader) -> Copied {
    let runtime = tokio::runtime::Handle::current();
    let mut out = io::stdout().lock();
    let mut buf = vec![0u8; WRITE];
    loop {
        let n = match runtime.block_on(reader.read(&mut buf)) {
            Ok(0) => break,
            Ok(n) => n,
            // The prefix written so far still goes out.
            Err(_) => return out.flush().map_or_else(written, |()| Copied::Failed),
        };
        if let Err(err) = out.write_all(&buf[..n]) {
            return written(err);
        }
    }
    match out.flush() {
        Ok(()) => Copied::Whole,
        Err(err) => written(err),
    }
}

fn written(err: io::Error) -> Copied {
    match err.kind() {
        io::ErrorKind::BrokenPipe => Copied::Closed,
        _ => Copied::WriteFailed(err),
    }
}
