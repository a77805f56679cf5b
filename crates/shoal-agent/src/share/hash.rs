//! Hashing shared files into manifests on a few OS threads at low priority, so that serving
//! pieces wins the CPU over hashing.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use shoal_core::manifest::digest_piece;
use shoal_core::{Manifest, PieceDigest, PieceIndex};
use tracing::debug;

use super::Found;

/// Hashing threads run at this nice value so that serving pieces wins the CPU over hashing.
const HASH_NICE: i32 = 10;

/// Hashes the files on `threads` OS threads at low priority. The work queue holds pieces, not
/// files, so one big file keeps every thread busy. One result per file, in order.
pub(super) fn hash_files(files: &[Found], threads: usize) -> Vec<io::Result<Manifest>> {
    let jobs: Vec<(&Found, PieceIndex)> = files
        .iter()
        .flat_map(|f| f.layout.pieces().map(move |p| (f, p)))
        .collect();
    let slots: Vec<OnceLock<io::Result<PieceDigest>>> =
        jobs.iter().map(|_| OnceLock::new()).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, jobs.len().max(1)) {
            std::thread::Builder::new()
                .name("shoal-hash".into())
                .spawn_scoped(scope, || hash_pieces(&jobs, &slots, &next))
                .expect("cannot start a hashing thread");
        }
    });
    let mut slots = slots
        .into_iter()
        .map(|s| s.into_inner().expect("every piece was hashed"));
    files
        .iter()
        .map(|f| {
            // Taken whole before checking, so a failed piece leaves the next file's in place.
            let piece_results: Vec<_> = slots
                .by_ref()
                .take(f.layout.piece_count() as usize)
                .collect();
            let digests = piece_results.into_iter().collect::<io::Result<Vec<_>>>()?;
            Ok(Manifest::new(f.layout, digests).expect("one digest per piece of the layout"))
        })
        .collect()
}

fn hash_pieces(
    jobs: &[(&Found, PieceIndex)],
    slots: &[OnceLock<io::Result<PieceDigest>>],
    next: &AtomicUsize,
) {
    lower_priority();
    let mut buf = Vec::new();
    // Consecutive pieces mostly belong to one file: open it once per thread, not per piece.
    let mut open: Option<(&Path, File)> = None;
    loop {
        let job = next.fetch_add(1, Ordering::Relaxed);
        let Some(&(found, piece)) = jobs.get(job) else {
            return;
        };
        let range = found.layout.range(piece);
        buf.resize(range.len() as usize, 0);
        let result = (|| {
            let file = match &open {
                Some((path, file)) if *path == found.path => file,
                _ => &open.insert((&found.path, File::open(&found.path)?)).1,
            };
            file.read_exact_at(&mut buf, range.start())?;
            Ok(digest_piece(&buf))
        })();
        let _ = slots[job].set(result);
    }
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: both calls only read and set the calling thread's scheduling attributes. On
    // Linux the nice value is per thread, so this leaves the runtime's threads untouched.
    let rc =
        unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, HASH_NICE) };
    if rc != 0 {
        debug!(
            "cannot lower the hashing thread's priority: {}",
            io::Error::last_os_error()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}
