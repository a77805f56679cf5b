//! The shared directory end to end on real files: scans, the manifest cache, hashing, the
//! catalog kept in step, and the watcher.

use std::fs::{self, File};
use std::time::Duration;

use shoal_core::Layout;

use super::*;
use crate::catalog::Change;
use crate::piece_size::MIN_PIECE;

/// Deterministic bytes that differ per seed.
fn bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    let mut hasher = blake3::Hasher::new();
    hasher.update(seed.as_bytes()).finalize_xof().fill(&mut out);
    out
}

/// A shared directory and a cache path in a data directory that does not exist yet.
fn setup() -> (tempfile::TempDir, ShareOptions) {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("share")).unwrap();
    let options = ShareOptions::new(tmp.path().join("share"), tmp.path().join("data/m.json"));
    (tmp, options)
}

fn write(options: &ShareOptions, name: &str, data: &[u8]) -> PathBuf {
    let path = options.dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, data).unwrap();
    fs::canonicalize(path).unwrap()
}

fn scan(share: &mut Share) -> (Vec<String>, usize, usize) {
    let report = share.scan().unwrap();
    let names = report.files.into_iter().map(|f| f.name).collect();
    (names, report.hashed, report.reused)
}

fn file<'a>(report: &'a ScanReport, name: &str) -> &'a SharedFile {
    report.files.iter().find(|f| f.name == name).unwrap()
}

#[test]
fn multi_piece_file_hashes_like_of_bytes() {
    let (_tmp, options) = setup();
    // Three and a half pieces.
    let data = bytes("big", 7 * MIN_PIECE as usize / 2);
    let path = write(&options, "big.bin", &data);
    write(&options, "empty", b"");
    let report = Share::new(options).scan().unwrap();
    let big = file(&report, "big.bin");
    assert_eq!((big.path.clone(), big.size), (path, data.len() as u64));
    assert_eq!(big.manifest.layout().piece_count(), 4);
    assert_eq!(*big.manifest, Manifest::of_bytes(&data, MIN_PIECE).unwrap());
    assert_eq!(file(&report, "empty").manifest.layout().piece_count(), 0);
    assert_eq!((report.hashed, report.reused, report.skipped), (2, 0, 0));
}

#[test]
fn pieces_of_one_file_are_spread_over_threads() {
    let (_tmp, options) = setup();
    let data = bytes("small pieces", 300 * 1024 + 7);
    let path = write(&options, "f", &data);
    let found = |piece| Found {
        path: path.clone(),
        name: "f".into(),
        size: data.len() as u64,
        mtime_ns: 0,
        layout: Layout::new(data.len() as u64, piece).unwrap(),
    };
    let manifests = hash_files(&[found(4096), found(1 << 16)], 4);
    for (manifest, piece) in manifests.into_iter().zip([4096, 1 << 16]) {
        assert_eq!(manifest.unwrap(), Manifest::of_bytes(&data, piece).unwrap());
    }
}

#[test]
fn only_new_or_touched_files_are_hashed_even_after_a_restart() {
    let (_tmp, options) = setup();
    write(&options, "keep", &bytes("keep", 1000));
    let edit = write(&options, "sub/edit", &bytes("before", 2000));
    let mut share = Share::new(options.clone());
    let names = vec!["keep".to_string(), "sub/edit".to_string()];
    assert_eq!(scan(&mut share), (names.clone(), 2, 0));
    assert_eq!(scan(&mut share), (names.clone(), 0, 2));
    let mut share = Share::new(options.clone());
    assert_eq!(scan(&mut share), (names.clone(), 0, 2));

    let after = bytes("after", 3000);
    fs::write(&edit, &after).unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    File::options()
        .write(true)
        .open(&edit)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let report = share.scan().unwrap();
    assert_eq!((report.hashed, report.reused), (1, 1));
    let manifest = &file(&report, "sub/edit").manifest;
    assert_eq!(**manifest, Manifest::of_bytes(&after, MIN_PIECE).unwrap());
}

#[test]
fn a_damaged_cache_is_ignored_and_replaced() {
    let (_tmp, options) = setup();
    write(&options, "a", b"bytes");
    fs::create_dir_all(options.cache.parent().unwrap()).unwrap();
    fs::write(&options.cache, b"{\"files\": {\"a\": tru").unwrap();
    assert_eq!(
        scan(&mut Share::new(options.clone())),
        (vec!["a".into()], 1, 0)
    );
    assert_eq!(scan(&mut Share::new(options)), (vec!["a".into()], 0, 1));
}

#[test]
fn walks_nested_directories_and_skips_hidden_names_and_directory_links() {
    let (_tmp, options) = setup();
    for name in ["top", "a/b/c.bin", ".hidden", ".git/config", "a/.swap"] {
        write(&options, name, name.as_bytes());
    }
    std::os::unix::fs::symlink(&options.dir, options.dir.join("a/loop")).unwrap();
    std::os::unix::fs::symlink(options.dir.join("top"), options.dir.join("link")).unwrap();
    let (names, ..) = scan(&mut Share::new(options));
    assert_eq!(names, ["a/b/c.bin", "link", "top"]);
}

#[test]
fn symlinks_out_of_the_shared_directory_are_not_shared_unless_followed() {
    let (tmp, mut options) = setup();
    let inside = write(&options, "top", b"inside");
    let secret = tmp.path().join("secret");
    fs::write(&secret, b"not for the fleet").unwrap();
    std::os::unix::fs::symlink(&secret, options.dir.join("out")).unwrap();
    std::os::unix::fs::symlink(&inside, options.dir.join("in")).unwrap();
    let report = Share::new(options.clone()).scan().unwrap();
    let names: Vec<_> = report.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["in", "top"]);
    // Read at the target checked, whatever the link says later.
    assert_eq!(file(&report, "in").path, inside);
    // In the catalog (what is served and announced): the one content of `in` and `top`.
    let catalog = Catalog::new();
    apply(&catalog, &report.files);
    assert_eq!(catalog.entries().len(), 1);
    assert_eq!(catalog.entries()[0].path(), inside);

    options.symlinks = Symlinks::Follow;
    let (names, ..) = scan(&mut Share::new(options));
    assert_eq!(names, ["in", "out", "top"]);
}

#[test]
fn apply_follows_additions_changes_and_removals() {
    let (_tmp, options) = setup();
    let catalog = Catalog::new();
    let fetched = Arc::new(Entry::new(
        Arc::new(Manifest::of_bytes(b"fetched", 4).unwrap()),
        "fetched".into(),
        Provenance::Fetched,
        PathBuf::from("/data/fetched"),
    ));
    catalog.insert(fetched.clone());
    let gone = write(&options, "gone", b"will be removed");
    let edit = write(&options, "edit", b"old bytes");
    let mut share = Share::new(options);
    let report = share.scan().unwrap();
    apply(&catalog, &report.files);
    let gone_id = file(&report, "gone").manifest.id();
    let old_id = file(&report, "edit").manifest.id();
    assert_eq!(catalog.entries().len(), 3);
    let entry = catalog.get(&gone_id).unwrap();
    assert!(entry.is_complete() && entry.provenance == Provenance::Shared && entry.name == "gone");
    catalog.take_changes();

    fs::remove_file(&gone).unwrap();
    fs::write(&edit, b"new bytes, longer").unwrap();
    let report = share.scan().unwrap();
    apply(&catalog, &report.files);
    let new_id = file(&report, "edit").manifest.id();
    let changes = catalog.take_changes();
    assert_eq!(changes.len(), 3, "{changes:?}");
    for change in [
        Change::Removed(gone_id),
        Change::Removed(old_id),
        Change::Added(new_id),
    ] {
        assert!(changes.contains(&change), "{changes:?}");
    }
    assert!(catalog.get(&gone_id).is_none() && catalog.get(&old_id).is_none());
    assert_eq!(catalog.get(&new_id).unwrap().path(), edit);
    assert!(Arc::ptr_eq(&catalog.get(&fetched.id()).unwrap(), &fetched));
    apply(&catalog, &report.files);
    assert!(
        catalog.take_changes().is_empty(),
        "applying twice changes nothing"
    );
}

#[test]
fn identical_files_share_one_entry_until_both_are_gone() {
    let (_tmp, options) = setup();
    let catalog = Catalog::new();
    let paths = [
        write(&options, "one", b"same"),
        write(&options, "two", b"same"),
    ];
    let mut share = Share::new(options);
    let report = share.scan().unwrap();
    apply(&catalog, &report.files);
    let id = report.files[0].manifest.id();
    assert_eq!(catalog.entries().len(), 1);

    let held = catalog.get(&id).unwrap().path();
    let other = paths.iter().find(|p| **p != held).unwrap();
    fs::remove_file(&held).unwrap();
    apply(&catalog, &share.scan().unwrap().files);
    assert_eq!(catalog.get(&id).expect("a copy remains").path(), *other);

    fs::remove_file(other).unwrap();
    catalog.take_changes();
    apply(&catalog, &share.scan().unwrap().files);
    assert_eq!(catalog.take_changes(), [Change::Removed(id)]);
}

#[test]
fn a_missing_directory_is_named_in_the_error() {
    let (_tmp, mut options) = setup();
    options.dir.push("nope");
    let text = Share::new(options.clone()).scan().unwrap_err().to_string();
    assert!(text.contains(&*options.dir.to_string_lossy()), "{text}");
    assert!(text.contains("--share"), "{text}");
    assert!(matches!(
        watch(&options.dir),
        Err(ShareError::MissingDir { .. })
    ));
}

#[tokio::test]
async fn the_watcher_signals_each_burst_of_changes() {
    let (_tmp, options) = setup();
    let mut watcher = watch(&options.dir).unwrap();
    for name in ["sub/new", "sub/other"] {
        write(&options, name, b"hello");
        tokio::time::timeout(Duration::from_secs(10), watcher.changed())
            .await
            .expect("no change signalled within 10 s")
            .unwrap();
    }
}
