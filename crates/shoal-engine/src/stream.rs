//! A download's bytes in file order, while it runs: the output of `shoal get -o -`, and what a
//! door of the agent (a proxy client) streams on. The one scheduler fetches as always; its
//! connections write into a ring of `window` bytes that starts at the reader's position, and
//! the reader takes bytes as the written frontier passes them. A connection whose bytes lie
//! beyond the ring waits without reading its socket, so the servers feel the reader's pace
//! (TCP back-pressure) and memory holds at most the window.
//!
//! The seam: [`channel`] gives a [`StreamSink`], which goes into the download's options as
//! [`crate::Output::Stream`], and a [`StreamReader`], a [`tokio::io::AsyncRead`] of the file
//! from byte 0. The reader ends with EOF once the download succeeded (checksum included), or
//! with an error naming why it failed; dropping it stops the download.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use shoal_core::ChecksumAlgo;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::digest::Hasher;

/// How many bytes of a streamed download ([`crate::Output::Stream`]) may be held in memory: those
/// between the reader's position and this far past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window(u64);

impl Window {
    /// The smallest window: a connection writes in steps of up to half of it, and each step
    /// must fit whole.
    pub const MIN: u64 = 1 << 20;
    /// The largest window, 4 GiB.
    pub const MAX: u64 = 4 << 30;

    /// `bytes` as the window; an error unless it is from [`Window::MIN`] to [`Window::MAX`].
    /// The default is 64 MiB.
    pub fn new(bytes: u64) -> Result<Self, WindowError> {
        if (Self::MIN..=Self::MAX).contains(&bytes) {
            Ok(Self(bytes))
        } else {
            Err(WindowError(bytes))
        }
    }

    /// The window in bytes.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl Default for Window {
    fn default() -> Self {
        Self(64 << 20)
    }
}

/// A window size out of [`Window::MIN`]..=[`Window::MAX`] (the bytes given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stream window must be between 1 MiB and 4 GiB, got {0} bytes")]
pub struct WindowError(u64);

/// An ordered output holding at most `window` bytes: give the sink to one download
/// ([`crate::Output::Stream`]) and read the file from the reader.
pub fn channel(window: Window) -> (StreamSink, StreamReader) {
    let ring = Arc::new(Ring {
        window: window.get(),
        state: Mutex::new(State::default()),
        room: Notify::new(),
    });
    (
        StreamSink(Arc::new(Writer(ring.clone()))),
        StreamReader(ring),
    )
}

/// Where a streamed download writes: one end of a [`channel`]. It serves one download; a
/// second one given the same sink fails before fetching.
#[derive(Clone)]
pub struct StreamSink(Arc<Writer>);

impl StreamSink {
    pub(crate) fn ring(&self) -> &Arc<Ring> {
        &self.0 .0
    }
}

/// The writing end, shared by the sink's clones: when the last goes (the download ended,
/// however it ended), a reader still waiting is not left waiting.
struct Writer(Arc<Ring>);

impl Drop for Writer {
    fn drop(&mut self) {
        self.0.finish(Err(
            "the download stopped before the end of the file".to_string()
        ));
    }
}

impl std::fmt::Debug for StreamSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamSink(window {} bytes)", self.ring().window)
    }
}

impl PartialEq for StreamSink {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for StreamSink {}

/// The file in order, from byte 0, as the download writes it. Ends with EOF once the download
/// succeeded, or with an error ([`io::ErrorKind::Other`], the download's failure in words)
/// after the bytes written before the failure. Dropping it stops the download with
/// [`crate::DownloadError::StreamClosed`].
pub struct StreamReader(Arc<Ring>);

/// The reader went away: nothing written now would be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// The shared ring: bytes `[read, read + capacity)` of the file live at their offset modulo
/// the capacity; those below `written` are complete.
pub(crate) struct Ring {
    window: u64,
    state: Mutex<State>,
    /// Woken when the reader moves on or goes away: connections waiting for room, and the
    /// download waiting for the reader to take the last byte.
    room: Notify,
}

#[derive(Default)]
struct State {
    /// Allocated by [`Ring::start`]: the window, or the whole file when it is smaller.
    buf: Vec<u8>,
    started: bool,
    /// The reader's position: every byte before it was handed out.
    read: u64,
    /// Every byte before it is written.
    written: u64,
    /// The file's size, once known.
    end: Option<u64>,
    /// Hashes what the reader takes, when a checksum is to be checked.
    hasher: Option<Hasher>,
    /// How the download ended, once it did: the reader's EOF, or its error.
    outcome: Option<Result<(), String>>,
    reader_gone: bool,
    reader: Option<Waker>,
}

impl State {
    fn capacity(&self) -> u64 {
        self.buf.len() as u64
    }

    fn wake_reader(&mut self) {
        if let Some(waker) = self.reader.take() {
            waker.wake();
        }
    }
}

impl Ring {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("stream lock")
    }

    /// Readies the ring for a file of `size` bytes (`None`: unknown until its end) whose bytes
    /// are hashed with `algo` as they are read. False when a download already used it.
    pub(crate) fn start(&self, size: Option<u64>, algo: Option<ChecksumAlgo>) -> bool {
        let mut state = self.state();
        if state.started {
            return false;
        }
        let capacity = size
            .map_or(self.window, |size| size.min(self.window))
            .max(1);
        state.buf = vec![0; capacity as usize];
        state.started = true;
        state.end = size;
        state.hasher = algo.map(Hasher::new);
        true
    }

    /// Waits until bytes up to `end` fit in the ring, which they do once the reader has taken
    /// all but the window before them.
    pub(crate) async fn room(&self, end: u64) -> Result<(), Closed> {
        loop {
            let moved = self.room.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            {
                let state = self.state();
                if state.reader_gone {
                    return Err(Closed);
                }
                if end <= state.read + state.capacity() {
                    return Ok(());
                }
            }
            moved.await;
        }
    }

    /// The most bytes one call to [`Ring::room`] waits for, so that a step always fits.
    fn step(&self) -> usize {
        (self.window / 2).max(1) as usize
    }

    /// Puts `data`, the file's bytes at `offset`, in the ring; [`Ring::room`] said they fit.
    /// Bytes the reader already took (a connection racing another for the same range) are
    /// left out.
    pub(crate) fn write_at(&self, data: &[u8], offset: u64) -> Result<(), Closed> {
        let mut state = self.state();
        if state.reader_gone {
            return Err(Closed);
        }
        let skip = state.read.saturating_sub(offset).min(data.len() as u64) as usize;
        let limit = state.read + state.capacity();
        let offset = offset + skip as u64;
        let len = (data.len() - skip).min(limit.saturating_sub(offset) as usize);
        debug_assert_eq!(len, data.len() - skip, "written without room");
        let data = &data[skip..skip + len];
        let capacity = state.capacity();
        let at = (offset % capacity) as usize;
        let first = data.len().min(state.buf.len() - at);
        state.buf[at..at + first].copy_from_slice(&data[..first]);
        state.buf[..data.len() - first].copy_from_slice(&data[first..]);
        Ok(())
    }

    /// Writes `data`, the file's bytes at `offset`, in steps that each wait for room (the
    /// reader's pace); returns how many were written, fewer when `stop` fired first.
    pub(crate) async fn write_when_room(
        &self,
        data: &[u8],
        offset: u64,
        stop: &CancellationToken,
    ) -> Result<usize, Closed> {
        let mut done = 0;
        for step in data.chunks(self.step()) {
            let at = offset + done as u64;
            tokio::select! {
                biased;
                room = self.room(at + step.len() as u64) => room?,
                _ = stop.cancelled() => return Ok(done),
            }
            self.write_at(step, at)?;
            done += step.len();
        }
        Ok(done)
    }

    /// Every byte before `frontier` is written: the reader may take them.
    pub(crate) fn written_to(&self, frontier: u64) {
        let mut state = self.state();
        if frontier > state.written {
            state.written = frontier;
            state.wake_reader();
        }
    }

    /// The file ends at `size` (a stream whose length was unknown).
    pub(crate) fn set_end(&self, size: u64) {
        self.state().end = Some(size);
        self.room.notify_waiters();
    }

    /// The most bytes held at once.
    pub(crate) fn window(&self) -> u64 {
        self.window
    }

    /// Every byte before this is written.
    pub(crate) fn written(&self) -> u64 {
        self.state().written
    }

    /// Bytes the reader has taken.
    pub(crate) fn sent(&self) -> u64 {
        self.state().read
    }

    /// Waits until the reader has taken every byte of the file, and gives the digest of them
    /// when a checksum was asked for.
    pub(crate) async fn drained(&self) -> Result<Option<String>, Closed> {
        loop {
            let moved = self.room.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            {
                let mut state = self.state();
                if state.end == Some(state.read) {
                    let hasher = state.hasher.take();
                    return Ok(hasher.map(|h| shoal_core::checksum::to_hex(&h.finish())));
                }
                if state.reader_gone {
                    return Err(Closed);
                }
            }
            moved.await;
        }
    }

    /// The download ended: the reader gets EOF after the last byte, or `Err(why)` after the
    /// bytes written so far.
    pub(crate) fn finish(&self, outcome: Result<(), String>) {
        let mut state = self.state();
        state.outcome.get_or_insert(outcome);
        state.wake_reader();
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let ring = &self.0;
        let mut state = ring.state();
        if state.read < state.written && out.remaining() > 0 {
            let capacity = state.capacity();
            let at = (state.read % capacity) as usize;
            let n = (state.written - state.read)
                .min(out.remaining() as u64)
                .min(capacity - at as u64) as usize;
            let State { buf, hasher, .. } = &mut *state;
            let bytes = &buf[at..at + n];
            if let Some(hasher) = hasher {
                hasher.update(bytes);
            }
            out.put_slice(bytes);
            state.read += n as u64;
            drop(state);
            ring.room.notify_waiters();
            return Poll::Ready(Ok(()));
        }
        match &state.outcome {
            Some(Err(why)) => Poll::Ready(Err(io::Error::other(why.clone()))),
            Some(Ok(())) if state.end == Some(state.read) => Poll::Ready(Ok(())),
            _ => {
                state.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        self.0.state().reader_gone = true;
        self.0.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn window_bounds() {
        assert!(Window::new(Window::MIN - 1).is_err());
        assert_eq!(Window::new(Window::MIN).unwrap().get(), 1 << 20);
        assert!(Window::new(Window::MAX + 1).is_err());
        assert_eq!(Window::default().get(), 64 << 20);
    }

    fn window(bytes: u64) -> Window {
        Window::new(bytes).unwrap()
    }

    #[tokio::test]
    async fn bytes_come_out_in_order_whatever_order_they_are_written_in() {
        let (sink, mut reader) = channel(window(Window::MIN));
        let ring = sink.ring().clone();
        let file: Vec<u8> = (0..3 * Window::MIN).map(|i| (i % 251) as u8).collect();
        assert!(ring.start(Some(file.len() as u64), Some(ChecksumAlgo::Sha256)));
        let half = (Window::MIN / 2) as usize;
        let writer = tokio::spawn(async move {
            // The second half of each window first: the reader must wait for the first.
            for start in (0..file.len()).step_by(2 * half) {
                let (a, b) = (start, start + half);
                ring.room((b + half) as u64).await.unwrap();
                ring.write_at(&file[b..b + half], b as u64).unwrap();
                ring.write_at(&file[a..b], a as u64).unwrap();
                ring.written_to((b + half) as u64);
            }
            let digest = ring.drained().await.unwrap();
            ring.finish(Ok(()));
            (file, digest)
        });
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        let (file, digest) = writer.await.unwrap();
        assert_eq!(got, file);
        let want = crate::verify::hash_bytes(&file, ChecksumAlgo::Sha256);
        assert_eq!(digest, Some(shoal_core::checksum::to_hex(&want)));
        assert!(!sink.ring().start(None, None), "a sink serves one download");
    }

    #[tokio::test]
    async fn a_writer_beyond_the_window_waits_for_the_reader() {
        let (sink, mut reader) = channel(window(Window::MIN));
        let ring = sink.ring().clone();
        assert!(ring.start(Some(4 * Window::MIN), None));
        ring.room(Window::MIN).await.unwrap();
        ring.write_at(&vec![7; Window::MIN as usize], 0).unwrap();
        ring.written_to(Window::MIN);
        let beyond = tokio::spawn(async move { ring.room(Window::MIN + 1).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!beyond.is_finished(), "the window is full");
        let mut byte = [0u8; 1];
        reader.read_exact(&mut byte).await.unwrap();
        assert_eq!(beyond.await.unwrap(), Ok(()));
        drop(reader);
        assert_eq!(sink.ring().room(3 * Window::MIN).await, Err(Closed));
        assert_eq!(sink.ring().write_at(&[1], Window::MIN), Err(Closed));
    }

    #[tokio::test]
    async fn a_failure_reaches_the_reader_after_the_written_bytes() {
        let (sink, mut reader) = channel(window(Window::MIN));
        assert!(sink.ring().start(Some(10), None));
        sink.ring().write_at(b"abcd", 0).unwrap();
        sink.ring().written_to(4);
        sink.ring().finish(Err("the server went away".into()));
        let mut got = Vec::new();
        let err = reader.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(got, b"abcd");
        assert_eq!(err.to_string(), "the server went away");
    }

    #[tokio::test]
    async fn a_reader_is_not_left_waiting_when_the_download_is_gone() {
        let (sink, mut reader) = channel(window(Window::MIN));
        let copy = sink.clone();
        assert!(sink.ring().start(Some(10), None));
        drop(sink);
        drop(copy);
        let mut got = Vec::new();
        assert!(reader.read_to_end(&mut got).await.is_err());
    }
}
