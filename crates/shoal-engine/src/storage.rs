//! The file being downloaded: `NAME.part`, preallocated, written with positional writes only.
//!
//! Connections never share a file cursor: each writes its own byte range with `pwrite`
//! (`FileExt::write_all_at`), so no seek/write pair can race another connection's. The final
//! name is given only by [`PartFile::commit`], after every byte is written and synced, so a
//! file with the final name is always complete.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use crate::error::DownloadError;
use crate::naming::part_path;
use crate::options::Existing;
use crate::stream::Ring;

/// Where a transfer's bytes go: the part file, or the ring of a stream, which a reader drains
/// in file order.
#[derive(Clone)]
pub(crate) enum Store {
    Part(Arc<PartFile>),
    Stream(Arc<Ring>),
}

impl Store {
    /// The part file, when the bytes go to one.
    pub(crate) fn part(&self) -> Option<&Arc<PartFile>> {
        match self {
            Store::Part(part) => Some(part),
            Store::Stream(_) => None,
        }
    }

    /// The stream's ring, when the bytes go to one.
    pub(crate) fn stream(&self) -> Option<&Arc<Ring>> {
        match self {
            Store::Part(_) => None,
            Store::Stream(ring) => Some(ring),
        }
    }
}

/// `NAME.part`, open (created when missing) and exclusively locked (`flock`) before anything
/// reads or changes it, so two downloads to one name never write one file. The lock goes
/// with the [`PartFile`] made from it, and ends when its last descriptor closes (at the
/// latest, when the process exits).
#[derive(Debug)]
pub struct PartLock {
    file: File,
    part: PathBuf,
    path: PathBuf,
    created: bool,
}

impl PartLock {
    /// Opens and locks the `.part` of `path` without waiting: another process (or download)
    /// holding it is [`DownloadError::Busy`].
    pub fn acquire(path: &Path) -> Result<Self, DownloadError> {
        let part = part_path(path);
        let open = |create_new| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(create_new)
                .open(&part)
        };
        let (file, created) = match open(true) {
            Ok(file) => (Ok(file), true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (open(false), false),
            Err(e) => (Err(e), true),
        };
        let file = file.map_err(|e| DownloadError::io(&part, "create", e))?;
        // SAFETY: flock on an owned, open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => DownloadError::Busy { part },
                _ => DownloadError::io(&part, "lock", e),
            });
        }
        Ok(Self {
            file,
            part,
            path: path.to_path_buf(),
            created,
        })
    }

    /// The `.part` file's path.
    pub fn part(&self) -> &Path {
        &self.part
    }

    /// Whether the `.part` did not exist before: nothing of a previous run is in it.
    pub fn created(&self) -> bool {
        self.created
    }
}

/// The locked, preallocated `NAME.part` a download writes into with positional writes, and the
/// final path it is renamed to once complete.
#[derive(Debug)]
pub struct PartFile {
    file: File,
    part: PathBuf,
    path: PathBuf,
    size: Option<u64>,
}

impl PartFile {
    /// Empties the locked `.part`; reserves `size` bytes when known, so a disk that is too
    /// small fails now rather than halfway.
    pub fn create(lock: &PartLock, size: Option<u64>) -> Result<Self, DownloadError> {
        let part = lock.part.clone();
        let file = lock
            .file
            .try_clone()
            .map_err(|e| DownloadError::io(&part, "open", e))?;
        file.set_len(0)
            .map_err(|e| DownloadError::io(&part, "truncate", e))?;
        if let Some(size) = size {
            if let Err(e) = preallocate(&file, size) {
                // Whatever was reserved would only hold space the user needs to free.
                let _ = std::fs::remove_file(&part);
                return Err(DownloadError::io_space(&part, "reserve space", e, size));
            }
        }
        Ok(Self {
            file,
            part,
            path: lock.path.clone(),
            size,
        })
    }

    /// Continues the locked `.part` a previous run left, keeping its bytes; it must be `size`
    /// bytes long (it was preallocated), else it is not the file the resume state describes.
    pub fn open_existing(lock: &PartLock, size: u64) -> Result<Self, ExistingPart> {
        let part = lock.part.clone();
        if lock.created {
            return Err(ExistingPart::Missing);
        }
        let failed = |op, e| ExistingPart::Failed(Box::new(DownloadError::io(&part, op, e)));
        let file = lock.file.try_clone().map_err(|e| failed("open", e))?;
        let len = file.metadata().map_err(|e| failed("stat", e))?.len();
        if len != size {
            return Err(ExistingPart::WrongLength { len });
        }
        Ok(Self {
            file,
            part,
            path: lock.path.clone(),
            size: Some(size),
        })
    }

    /// The `.part` file's path (`NAME.part`).
    pub fn part(&self) -> &Path {
        &self.part
    }

    /// The final path the file takes when committed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open `.part`, for reading back (verification, hashing pieces).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Writes `data` at `offset`. Safe to call from many threads at once for disjoint (or
    /// identical-content) ranges.
    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<(), DownloadError> {
        self.file
            .write_all_at(data, offset)
            .map_err(|e| DownloadError::io_space(&self.part, "write", e, self.unallocated()))?;
        start_writeback(&self.file, offset, data.len());
        Ok(())
    }

    /// Makes every byte written so far durable.
    pub fn sync(&self) -> Result<(), DownloadError> {
        self.file
            .sync_data()
            .map_err(|e| DownloadError::io_space(&self.part, "sync", e, self.unallocated()))
    }

    /// Bytes of the file the disk has not reserved yet: what a full disk must still find.
    /// Zero once preallocation succeeded.
    pub fn unallocated(&self) -> u64 {
        let allocated = self.file.metadata().map(|m| m.blocks() * 512).unwrap_or(0);
        self.size.unwrap_or(0).saturating_sub(allocated)
    }

    /// Sets the final length (for downloads whose size was unknown) and syncs the data.
    pub fn finish(&self, size: u64) -> Result<(), DownloadError> {
        let len = self
            .file
            .metadata()
            .map_err(|e| DownloadError::io(&self.part, "stat", e))?
            .len();
        if len != size {
            self.file
                .set_len(size)
                .map_err(|e| DownloadError::io(&self.part, "truncate", e))?;
        }
        self.sync()
    }

    /// Gives the synced `.part` its final name. With [`Existing::Refuse`], a file that appeared
    /// at the final path meanwhile is not replaced.
    pub fn commit(self, existing: Existing) -> Result<PathBuf, DownloadError> {
        if existing == Existing::Refuse && self.path.exists() {
            return Err(DownloadError::OutputExists { path: self.path });
        }
        std::fs::rename(&self.part, &self.path)
            .map_err(|e| DownloadError::io(&self.path, "rename", e))?;
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            // The rename is durable only once the directory is synced.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(self.path)
    }
}

/// Why a previous run's `.part` cannot be continued.
#[derive(Debug)]
pub enum ExistingPart {
    /// There was no `.part` (the lock created it just now).
    Missing,
    /// The `.part` is not the preallocated length; the size is wrong or it was truncated.
    WrongLength {
        /// Its length in bytes.
        len: u64,
    },
    /// Reading the `.part`'s metadata failed.
    Failed(Box<DownloadError>),
}

/// Asks the kernel to start writing these pages to disk now, without waiting. Syncs (the
/// checkpoints and the one before the rename) then find little left to do, so durability
/// costs about nothing while the disk is faster than the network, instead of a long pause
/// at the end. Only a hint: failure changes nothing.
fn start_writeback(file: &File, offset: u64, len: usize) {
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return;
    };
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor is open.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Up to `len` bytes of `file` from offset `at`, with positional reads (no shared cursor):
/// fewer only where the file ends. The buffer is not zeroed first: the bytes read are about
/// all a reader of a piece or a body chunk does with it, and zeroing every buffer first took
/// about 2.5 % of an agent's CPU in `bench/registry.sh`. Blocking.
pub fn read_at_most(file: &File, at: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    // Bounded: each round reads at least one byte or ends.
    while buf.len() < len {
        let filled = buf.len();
        let offset = libc::off_t::try_from(at + filled as u64)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset past off_t"))?;
        let spare = &mut buf.spare_capacity_mut()[..len - filled];
        // SAFETY: pread writes at most `spare.len()` bytes into `spare`, memory `buf` owns
        // and does not read, and returns how many it wrote.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                offset,
            )
        };
        match n {
            0 => break,
            n if n > 0 => {
                // SAFETY: the `n` bytes after the initialised ones were just written by pread.
                unsafe { buf.set_len(filled + n as usize) };
            }
            _ => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
    Ok(buf)
}

/// Exactly `len` bytes of `file` from offset `at`, as [`read_at_most`]; a file that ends
/// sooner is [`io::ErrorKind::UnexpectedEof`]. Blocking.
pub fn read_exact_at(file: &File, at: u64, len: usize) -> io::Result<Vec<u8>> {
    let buf = read_at_most(file, at, len)?;
    if buf.len() < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the file ends at {} bytes, before {}",
                at + buf.len() as u64,
                at + len as u64
            ),
        ));
    }
    Ok(buf)
}

fn preallocate(file: &File, size: u64) -> io::Result<()> {
    if size == 0 {
        return Ok(());
    }
    let len = libc::off_t::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: fallocate on an owned, open descriptor with in-range arguments.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // File systems without fallocate get a sparse file of the right length instead.
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => file.set_len(size),
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_at_an_offset_return_the_files_bytes_and_stop_at_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..=255u8).cycle().take(3 << 20).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(
            read_at_most(&file, 5, 1 << 20).unwrap(),
            data[5..5 + (1 << 20)]
        );
        assert_eq!(read_exact_at(&file, 7, 300).unwrap(), data[7..307]);
        let tail = read_at_most(&file, (3 << 20) - 10, 64).unwrap();
        assert_eq!(tail, data[(3 << 20) - 10..]);
        assert!(read_at_most(&file, 3 << 20, 64).unwrap().is_empty());
        let short = read_exact_at(&file, (3 << 20) - 10, 64).unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn positional_writes_from_threads_land_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let part = PartFile::create(&PartLock::acquire(&path).unwrap(), Some(8 * 4096)).unwrap();
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let part = &part;
                s.spawn(move || part.write_at(&[i; 4096], u64::from(i) * 4096).unwrap());
            }
        });
        part.finish(8 * 4096).unwrap();
        assert!(!path.exists(), "final name appears only on commit");
        let done = part.commit(Existing::Refuse).unwrap();
        let bytes = std::fs::read(done).unwrap();
        for i in 0..8u8 {
            assert!(bytes[usize::from(i) * 4096..][..4096]
                .iter()
                .all(|&b| b == i));
        }
    }

    #[test]
    fn commit_refuses_to_replace_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, b"old").unwrap();
        let part = PartFile::create(&PartLock::acquire(&path).unwrap(), Some(3)).unwrap();
        part.write_at(b"new", 0).unwrap();
        part.finish(3).unwrap();
        assert!(matches!(
            part.commit(Existing::Refuse),
            Err(DownloadError::OutputExists { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let part = PartFile::create(&PartLock::acquire(&path).unwrap(), Some(3)).unwrap();
        part.write_at(b"new", 0).unwrap();
        part.finish(3).unwrap();
        part.commit(Existing::Overwrite).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn existing_part_keeps_its_bytes_and_must_have_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z");
        let lock = PartLock::acquire(&path).unwrap();
        assert!(matches!(
            PartFile::open_existing(&lock, 4),
            Err(ExistingPart::Missing)
        ));
        let part = PartFile::create(&lock, Some(4)).unwrap();
        drop(lock);
        part.write_at(b"ab", 0).unwrap();
        part.sync().unwrap();
        assert_eq!(part.unallocated(), 0);
        drop(part);
        let lock = PartLock::acquire(&path).unwrap();
        assert!(matches!(
            PartFile::open_existing(&lock, 5),
            Err(ExistingPart::WrongLength { len: 4 })
        ));
        let part = PartFile::open_existing(&lock, 4).unwrap();
        part.write_at(b"cd", 2).unwrap();
        part.finish(4).unwrap();
        assert_eq!(std::fs::read(part.part()).unwrap(), b"abcd");
    }

    #[test]
    fn a_locked_part_is_busy_until_its_file_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w");
        std::fs::write(part_path(&path), b"kept").unwrap();
        let lock = PartLock::acquire(&path).unwrap();
        assert!(!lock.created());
        let part = PartFile::open_existing(&lock, 4).unwrap();
        drop(lock);
        match PartLock::acquire(&path) {
            Err(DownloadError::Busy { part }) => assert_eq!(part, part_path(&path)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            std::fs::read(part_path(&path)).unwrap(),
            b"kept",
            "untouched"
        );
        drop(part);
        PartLock::acquire(&path).unwrap();
    }

    #[test]
    fn unknown_size_is_fixed_at_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("y");
        let part = PartFile::create(&PartLock::acquire(&path).unwrap(), None).unwrap();
        part.write_at(b"hello", 0).unwrap();
        part.finish(5).unwrap();
        assert_eq!(std::fs::read(part.part()).unwrap(), b"hello");
    }
}
