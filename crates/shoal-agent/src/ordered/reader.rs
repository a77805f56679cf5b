//! A body's reader: the bytes of one content in file order, read from the file the download
//! writes, never past its frontier of pieces known good.
//!
//! The body's last bytes wait while the content is being checked: against the origin (a URL
//! the tracker maps to a content), or against the SHA-256 expected, which the fetch hashes
//! as the bytes land. Bytes sent before the check's outcome can be taken back only by ending
//! the body with an error, which a content that fails does. A reader that took some but sent
//! none of a content failing the origin's check starts over from the fetch's next download,
//! the origin's. A content already whole when the body opens was checked by the fetch that
//! kept it, unless it was kept under another name: with a digest expected, the reader hashes
//! it to its end itself before the body's last bytes go out.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest, Sha256};
use shoal_core::SafeUrl;
use tokio::sync::watch;

use super::{End, Landed, OrderedError, Trust};
use crate::fetch::Fetched;

/// The most read from the file at once: one chunk of the body.
const CHUNK: u64 = 256 << 10;
/// The run a whole content's file belongs to (downloads' runs count from 1).
const WHOLE: u64 = u64::MAX;

/// Where the next bytes can be read.
struct Readable {
    /// The download run (or [`WHOLE`]) whose file holds them.
    run: u64,
    /// The file once whole; its `.part` is tried first while the download runs.
    path: PathBuf,
    /// The bytes up to here (exclusive) are known good.
    upto: u64,
    /// They are being checked against the origin.
    checking: bool,
}

/// Bytes read from the file.
struct Chunk {
    /// Where in the content they start.
    at: u64,
    bytes: Bytes,
    /// They were being checked against the origin when read.
    checking: bool,
}

/// What a reader took of a content whose check against the origin had not passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Unchecked {
    Nothing,
    /// Read, but none of it sent.
    Read,
    /// Some of it sent.
    Sent,
}

/// Reads one body; see the module's documentation.
pub(super) struct Reader {
    landed: watch::Receiver<Landed>,
    url: SafeUrl,
    /// The body's bytes within the content.
    span: Range<u64>,
    /// The next byte to read.
    pos: u64,
    /// Where reading stops: the span's end, or the content's end when hashing.
    stop: u64,
    /// The hash so far and the digest it must come to.
    hashing: Option<(Sha256, [u8; 32])>,
    /// The body's last bytes, held back until the whole content is hashed.
    held: Option<Bytes>,
    /// The file read now and the run it belongs to.
    file: Option<(u64, Arc<File>)>,
    /// The whole content, pinned while it is read.
    whole: Option<Arc<Fetched>>,
    /// What it took of a content not checked yet.
    unchecked: Unchecked,
}

impl Reader {
    /// A reader of `span` of the content of `size` bytes `landed` follows; with `sha256`, a
    /// content already whole is hashed and checked against it (one still landing is checked
    /// by its fetch).
    pub(super) fn new(
        landed: watch::Receiver<Landed>,
        url: SafeUrl,
        size: u64,
        span: Range<u64>,
        sha256: Option<[u8; 32]>,
    ) -> Self {
        let whole = matches!(landed.borrow().end, Some(End::Whole(_)));
        let hashing = sha256
            .filter(|_| whole)
            .map(|digest| (Sha256::new(), digest));
        let stop = match hashing {
            Some(_) => size,
            None => span.end,
        };
        let mut reader = Self {
            landed,
            url,
            span,
            pos: 0,
            stop,
            hashing,
            held: None,
            file: None,
            whole: None,
            unchecked: Unchecked::Nothing,
        };
        reader.start_over();
        reader
    }

    /// Back to the first byte to read, nothing taken.
    fn start_over(&mut self) {
        self.pos = match &mut self.hashing {
            Some((hasher, _)) => {
                *hasher = Sha256::new();
                0
            }
            None => self.span.start,
        };
        self.held = None;
        self.file = None;
        self.unchecked = Unchecked::Nothing;
    }

    /// The body: its chunks, ending with an error when the download fails, the bytes do not
    /// match, or the file cannot be read.
    pub(super) fn into_stream(
        self,
    ) -> impl Stream<Item = Result<Bytes, OrderedError>> + Send + 'static {
        futures_util::stream::unfold(Some(self), |reader| async move {
            let mut reader = reader?;
            match reader.next().await {
                Ok(Some(bytes)) => Some((Ok(bytes), Some(reader))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    /// The body's next chunk; `None` at its end.
    async fn next(&mut self) -> Result<Option<Bytes>, OrderedError> {
        loop {
            if self.pos >= self.stop {
                if !self.vouched().await? {
                    continue;
                }
                self.check()?;
                return Ok(self.held.take());
            }
            let Chunk {
                at,
                bytes,
                checking,
            } = self.read().await?;
            if checking {
                self.unchecked = self.unchecked.max(Unchecked::Read);
            }
            self.pos = at + bytes.len() as u64;
            if let Some((hasher, _)) = &mut self.hashing {
                hasher.update(&bytes);
            }
            let (from, to) = (self.span.start.max(at), self.span.end.min(self.pos));
            if from >= to {
                continue;
            }
            let part = bytes.slice((from - at) as usize..(to - at) as usize);
            if (self.hashing.is_some() || checking) && to == self.span.end {
                self.held = Some(part);
                continue;
            }
            if checking {
                self.unchecked = Unchecked::Sent;
            }
            return Ok(Some(part));
        }
    }

    /// Waits until what the reader took is known to be the URL's (at once when it took
    /// nothing unchecked); `false` when it is not and the reader starts over, having sent
    /// none of it.
    async fn vouched(&mut self) -> Result<bool, OrderedError> {
        if self.unchecked == Unchecked::Nothing {
            return Ok(true);
        }
        loop {
            let trust = {
                let now = self.landed.borrow_and_update();
                if let Some(End::Failed(message)) = &now.end {
                    return Err(OrderedError::Failed {
                        url: self.url.clone(),
                        message: message.clone(),
                    });
                }
                now.trust.clone()
            };
            match trust {
                Trust::Trusted => return Ok(true),
                Trust::Refused(why) => {
                    self.refused(why)?;
                    return Ok(false);
                }
                Trust::Checking => self.wait().await?,
            }
        }
    }

    /// Takes the news that the content read failed its check (`why`): the body ends with an
    /// error if some of it went out, else the reader starts over.
    fn refused(&mut self, why: String) -> Result<(), OrderedError> {
        if self.unchecked == Unchecked::Sent {
            return Err(OrderedError::Untrusted {
                url: self.url.clone(),
                message: why,
            });
        }
        self.start_over();
        Ok(())
    }

    /// Compares the hash of the whole content with the digest expected, once.
    fn check(&mut self) -> Result<(), OrderedError> {
        let Some((hasher, expected)) = self.hashing.take() else {
            return Ok(());
        };
        let actual: [u8; 32] = hasher.finalize().into();
        if actual != expected {
            self.held = None;
            return Err(OrderedError::Mismatch {
                url: self.url.clone(),
                expected: shoal_core::checksum::to_hex(&expected),
                actual: shoal_core::checksum::to_hex(&actual),
            });
        }
        Ok(())
    }

    /// The next bytes from `pos`, once some are known good.
    async fn read(&mut self) -> Result<Chunk, OrderedError> {
        loop {
            let Some(readable) = self.readable()? else {
                self.wait().await?;
                continue;
            };
            let open = self
                .file
                .as_ref()
                .filter(|(run, _)| *run == readable.run)
                .map(|(_, file)| file.clone());
            let (at, len) = (self.pos, (readable.upto - self.pos).min(CHUNK) as usize);
            let path = readable.path.clone();
            let whole = readable.run == WHOLE;
            let read = tokio::task::spawn_blocking(move || -> io::Result<_> {
                let file = match open {
                    Some(file) => file,
                    None => match open_landed(&path, whole)? {
                        Some(file) => Arc::new(file),
                        None => return Ok(None),
                    },
                };
                let buf = shoal_engine::storage::read_exact_at(&file, at, len)?;
                Ok(Some((file, buf)))
            })
            .await
            .expect("reading does not panic");
            match read {
                Ok(Some((file, buf))) => {
                    self.file = Some((readable.run, file));
                    return Ok(Chunk {
                        at,
                        bytes: Bytes::from(buf),
                        checking: readable.checking,
                    });
                }
                // Moved into place meanwhile: the fetch's end names where it is now.
                Ok(None) => {
                    self.file = None;
                    self.wait().await?;
                }
                Err(e) => {
                    return Err(OrderedError::Read {
                        url: self.url.clone(),
                        path: readable.path,
                        message: e.to_string(),
                    })
                }
            }
        }
    }

    /// Where the bytes from `pos` can be read now, if any are known good.
    fn readable(&mut self) -> Result<Option<Readable>, OrderedError> {
        let refused = match &self.landed.borrow().trust {
            Trust::Refused(why) if self.unchecked != Unchecked::Nothing => Some(why.clone()),
            _ => None,
        };
        if let Some(why) = refused {
            self.refused(why)?;
        }
        let now = self.landed.borrow_and_update();
        let checking = now.trust == Trust::Checking;
        match &now.end {
            Some(End::Whole(fetched)) => {
                self.whole = Some(fetched.clone());
                return Ok(Some(Readable {
                    run: WHOLE,
                    path: fetched.path.clone(),
                    upto: self.stop,
                    checking,
                }));
            }
            Some(End::Failed(message)) => {
                return Err(OrderedError::Failed {
                    url: self.url.clone(),
                    message: message.clone(),
                })
            }
            None => {}
        }
        let Some((path, layout)) = &now.file else {
            return Ok(None);
        };
        let mut upto = self.pos;
        let mut piece = layout.piece_at(self.pos);
        while let Some(index) = piece.filter(|p| now.ready.get(p.get())) {
            upto = layout.range(index).end();
            piece = layout.piece(index.get() + 1);
        }
        Ok((upto > self.pos).then(|| Readable {
            run: now.run,
            path: path.clone(),
            upto: upto.min(self.stop),
            checking,
        }))
    }

    /// Until the download lands more, or ends.
    async fn wait(&mut self) -> Result<(), OrderedError> {
        self.landed
            .changed()
            .await
            .map_err(|_| OrderedError::Stopped {
                url: self.url.clone(),
            })
    }
}

/// Opens the file a download writes to `path`: its `.part` while it runs, else the file (the
/// engine renames the `.part` once whole); `None` when neither is there (moved into the
/// objects: the fetch's end says where).
fn open_landed(path: &Path, whole: bool) -> io::Result<Option<File>> {
    let tries = if whole {
        vec![path.to_path_buf()]
    } else {
        vec![shoal_engine::naming::part_path(path), path.to_path_buf()]
    };
    for path in tries {
        match File::open(&path) {
            Ok(file) => return Ok(Some(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}
