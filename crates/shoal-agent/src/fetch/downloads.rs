//! Downloads in progress, recorded in the data directory (`downloads/KEY.json`, one per URL
//! or content asked for) so that an agent killed mid-download finds them again when it
//! starts: what was asked (with the content's SHA-256, when known), and once the download has
//! an entry in the catalog, which content it becomes, its layout, its name, the part this
//! agent played and the pieces it verified.
//!
//! At start, [`Downloads::restore`] puts every unfinished download's verified pieces back in
//! the catalog before the agent announces or serves anything, without hashing a byte: a piece
//! is trusted when this record names it verified *and* the engine's resume state names all
//! its blocks durable. The record is written only after the `.part` is synced, so a piece it
//! names was on disk with the bytes that matched; the engine writes its state after syncing
//! the bytes it names, and continues a `.part` only when that state is intact, so a piece it
//! names will not be overwritten when the download resumes (without an intact state the
//! engine starts the file over, and then nothing of it may be served). A piece that only the
//! engine's state names is checked by the engine when the download resumes, and served once
//! it matches.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shoal_core::wire::PackedBits;
use shoal_core::{Bitfield, ContentId, Layout, SafeUrl};
use shoal_engine::{resume, BLOCK};
use tracing::{info, warn};
use url::Url;

use super::Want;
use crate::catalog::{Catalog, Entry};
use crate::objects::{Objects, ObjectsError};

/// The directory of the records, in the data directory.
pub(crate) const DOWNLOADS_DIR: &str = "downloads";

/// What one record holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Record {
    /// What was asked for.
    pub want: Wanted,
    /// The content's SHA-256, when the fetch was asked with it (a registry blob): resumed
    /// with it, the download is shared under the digest and checked against it as before.
    /// In hex; records written before it was kept have none.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "sha256_hex")]
    pub sha256: Option<[u8; 32]>,
    /// The download's entry in the catalog, once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
}

/// What a download was asked for, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Wanted {
    /// A URL, as given: with its credentials, which the download needs to go on (the record
    /// is readable by the agent's user alone, like the control token).
    Url(String),
    /// A content id.
    Content(ContentId),
}

/// A download's entry in the catalog, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Held {
    /// The entry's id: the content's, or a URL swarm's.
    pub content: ContentId,
    pub layout: Layout,
    pub name: String,
    pub part: Part,
    /// The pieces verified (and synced to the `.part`) when the record was written.
    pub verified: PackedBits,
}

/// The part this agent played in a download, which decides how the engine wrote the `.part`:
/// the engine continues a `.part` only for the same URL and validator, so restored pieces are
/// carried into a resumed download only when it plays the same part (otherwise the engine
/// starts the file over, and the pieces must not be served meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Part {
    /// Led a URL swarm: fetched from the origin, learning the digests.
    Lead,
    /// Followed a URL swarm: fetched from its members, checked against published digests.
    Follow,
    /// Fetched a content by id from peers, with the origin URL the tracker mapped to it as a
    /// fallback.
    WithOrigin,
    /// Fetched a content by id from peers alone.
    PeersOnly,
}

impl Wanted {
    /// The record of `want`.
    pub(crate) fn of(want: &Want) -> Self {
        match want {
            Want::Url(url) => Self::Url(url.to_string()),
            Want::Content(id) => Self::Content(*id),
        }
    }

    /// What to fetch again; `None` for a URL that no longer parses.
    pub(crate) fn want(&self) -> Option<Want> {
        match self {
            Self::Url(url) => Url::parse(url).ok().map(Want::Url),
            Self::Content(id) => Some(Want::Content(*id)),
        }
    }
}

/// An unfinished download found at start, to be resumed.
#[derive(Debug)]
pub(crate) struct Unfinished {
    pub want: Want,
    /// The content's SHA-256 the download was asked with, if any.
    pub sha256: Option<[u8; 32]>,
    /// The entry put back in the catalog and the part played, when pieces were restored.
    pub restored: Option<(ContentId, Part)>,
}

/// The records; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Downloads {
    dir: Arc<PathBuf>,
}

impl Downloads {
    /// The records of the data directory `data` (the directory is made when missing).
    pub(crate) fn open(data: &Path) -> Result<Self, ObjectsError> {
        let dir = data.join(DOWNLOADS_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| ObjectsError {
            path: dir.clone(),
            op: "create",
            source,
        })?;
        Ok(Self { dir: Arc::new(dir) })
    }

    /// Where the record of the download asked for with `key` (a URL or a content id) lives:
    /// named by a hash, so that no URL (nor its credentials) appears in a file name.
    fn path(&self, key: &str) -> PathBuf {
        let hash = blake3::hash(key.as_bytes()).to_hex();
        self.dir.join(format!("{}.json", &hash[..32]))
    }

    /// The record of the download asked for with `key`, if a readable one is there.
    pub(crate) fn get(&self, key: &str) -> Option<Record> {
        read(&self.path(key)).ok().flatten()
    }

    /// Replaces the record of `key` atomically (a temporary file, synced, renamed, and the
    /// directory synced): a crash leaves the old record or the new one, never a mix.
    pub(crate) fn save(&self, key: &str, record: &Record) -> Result<(), ObjectsError> {
        let path = self.path(key);
        let text = serde_json::to_vec(record).expect("a record serializes");
        crate::durable::replace(&path, &text).map_err(|source| ObjectsError {
            path: path.clone(),
            op: "record the download in",
            source,
        })?;
        Ok(())
    }

    /// Removes the record of `key`, if any.
    pub(crate) fn remove(&self, key: &str) {
        let path = self.path(key);
        match std::fs::remove_file(&path) {
            Ok(()) => resume::sync_dir(&path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => warn!("cannot remove {}: {e}", path.display()),
        }
    }

    /// Every readable record; one that cannot be read is named in the log and removed.
    fn load(&self) -> Vec<Record> {
        let items = match std::fs::read_dir(&*self.dir) {
            Ok(items) => items,
            Err(e) => {
                warn!(
                    "cannot read {}: {e}; unfinished downloads are not resumed",
                    self.dir.display()
                );
                return Vec::new();
            }
        };
        let mut records = Vec::new();
        for item in items.flatten() {
            let path = item.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                // A save cut short: the record it was replacing is still there.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let why = match read(&path) {
                Ok(Some(record)) if record.want.want().is_some() => {
                    records.push(record);
                    continue;
                }
                Ok(Some(_)) => "its URL does not parse".to_string(),
                Ok(None) => continue,
                Err(why) => why,
            };
            warn!(
                "the record of an unfinished download {} is damaged ({why}); forgetting it \
                 (ask for the download again to resume it)",
                path.display()
            );
            let _ = std::fs::remove_file(&path);
        }
        records
    }

    /// Finds the unfinished downloads recorded, puts the pieces each verified back in
    /// `catalog` (see the module's doc for which are trusted), and returns them to be
    /// resumed. Reads the records and the engine's resume states, never the bytes.
    pub(crate) fn restore(&self, objects: &Objects, catalog: &Catalog) -> Vec<Unfinished> {
        let mut found = Vec::new();
        for record in self.load() {
            let Some(want) = record.want.want() else {
                continue;
            };
            let restored = record.held.as_ref().and_then(|held| {
                let path = objects.path(&held.content);
                let part = shoal_engine::naming::part_path(&path);
                let trusted = match trusted(held, &path, &part) {
                    Ok(trusted) => trusted,
                    Err(why) => {
                        info!(content = %held.content, "not serving the pieces of an unfinished download until they are checked: {why}");
                        return None;
                    }
                };
                let entry = Entry::provisional(held.content, held.layout, held.name.clone(), part);
                for piece in trusted.ones() {
                    entry.mark(held.layout.piece(piece).expect("a piece of the layout"));
                }
                info!(
                    content = %held.content,
                    pieces = trusted.count_ones(),
                    of = held.layout.piece_count(),
                    "serving the verified pieces of an unfinished download again"
                );
                catalog.insert(Arc::new(entry));
                Some((held.content, held.part))
            });
            found.push(Unfinished {
                want,
                sha256: record.sha256,
                restored,
            });
        }
        found
    }
}

/// A SHA-256 as a record keeps it: 64 hex digits.
mod sha256_hex {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        digest: &Option<[u8; 32]>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match digest {
            Some(digest) => s.serialize_str(&shoal_core::hex::encode(digest)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<[u8; 32]>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        shoal_core::hex::decode_array(&text)
            .map(Some)
            .ok_or_else(|| de::Error::custom("a sha256 that is not 64 hex digits"))
    }
}

/// Reads the record at `path`: `Ok(None)` when there is none, `Err` naming what is wrong
/// when it cannot be used.
fn read(path: &Path) -> Result<Option<Record>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| e.to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The pieces of `held` that may be served before they are checked again: those the record
/// names verified whose every block the engine's resume state of `path` names durable in
/// `part`. `Err` says why none may.
fn trusted(held: &Held, path: &Path, part: &Path) -> Result<Bitfield, String> {
    let layout = held.layout;
    let verified = held
        .verified
        .to_bitfield(layout.piece_count())
        .map_err(|e| format!("its record's pieces do not fit its layout ({e})"))?;
    let state_path = resume::state_path(path);
    let state = match resume::load(&state_path) {
        Ok(Some(state)) => state,
        Ok(None) => return Err(format!("{} is missing", state_path.display())),
        Err(damaged) => {
            return Err(format!(
                "the resume state {} {damaged}",
                state_path.display()
            ))
        }
    };
    if state.size != layout.size() || state.block != BLOCK {
        return Err(format!(
            "the resume state {} is for another file",
            state_path.display()
        ));
    }
    let len = std::fs::metadata(part).map(|m| m.len());
    if len.as_ref().ok() != Some(&layout.size()) {
        return Err(format!(
            "{} is missing or not {} bytes",
            part.display(),
            layout.size()
        ));
    }
    Ok(within(layout, &verified, &state.done))
}

/// The pieces of `pieces` (of `layout`) whose every block (of [`BLOCK`] bytes) `blocks`
/// names.
pub(super) fn within(layout: Layout, pieces: &Bitfield, blocks: &Bitfield) -> Bitfield {
    let mut within = Bitfield::new(layout.piece_count());
    for piece in pieces.ones() {
        let range = layout.range(layout.piece(piece).expect("a piece of the layout"));
        let mut covering = range.start() / BLOCK..range.end().div_ceil(BLOCK);
        if covering.all(|b| blocks.get(b as u32)) {
            within.set(piece);
        }
    }
    within
}

/// How a download is named in the log: its URL without credentials, or its content id.
pub(crate) fn shown(want: &Want) -> String {
    match want {
        Want::Url(url) => SafeUrl::new(url.clone()).to_string(),
        Want::Content(id) => id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIECE: u64 = 2 * BLOCK;

    fn layout() -> Layout {
        Layout::new(4 * PIECE - 100, PIECE).unwrap()
    }

    fn bits(n: u32, ones: &[u32]) -> Bitfield {
        let mut bits = Bitfield::new(n);
        ones.iter().for_each(|&i| bits.set(i));
        bits
    }

    fn record(url: &str, verified: &[u32]) -> Record {
        let layout = layout();
        Record {
            want: Wanted::Url(url.to_string()),
            sha256: None,
            held: Some(Held {
                content: ContentId::from_bytes([9; 32]),
                layout,
                name: "disk.img".into(),
                part: Part::Lead,
                verified: PackedBits::of(&bits(layout.piece_count(), verified)),
            }),
        }
    }

    fn store() -> (tempfile::TempDir, Downloads, Objects) {
        let dir = tempfile::tempdir().unwrap();
        let downloads = Downloads::open(dir.path()).unwrap();
        let objects = Objects::open(dir.path(), None).unwrap();
        (dir, downloads, objects)
    }

    /// A `.part` of the layout's size for `held` and the engine's resume state naming the
    /// blocks of `durable` pieces done.
    fn engine_left(objects: &Objects, held: &Held, durable: &[u32]) {
        let path = objects.path(&held.content);
        let layout = held.layout;
        std::fs::write(
            shoal_engine::naming::part_path(&path),
            vec![0u8; layout.size() as usize],
        )
        .unwrap();
        let blocks = layout.size().div_ceil(BLOCK) as u32;
        let mut done = Bitfield::new(blocks);
        for &piece in durable {
            let range = layout.range(layout.piece(piece).unwrap());
            for b in range.start() / BLOCK..range.end().div_ceil(BLOCK) {
                done.set(b as u32);
            }
        }
        let state = resume::State {
            url_hash: [1; 32],
            size: layout.size(),
            block: BLOCK,
            etag: Some("\"v1\"".into()),
            last_modified: None,
            done,
        };
        resume::save(&resume::state_path(&path), &state).unwrap();
    }

    #[test]
    fn a_record_round_trips_and_is_removed() {
        let (_dir, downloads, _) = store();
        let record = record("http://user:secret@origin.example/disk.img", &[0, 2]);
        let key = "http://user:secret@origin.example/disk.img";
        downloads.save(key, &record).unwrap();
        assert_eq!(downloads.get(key), Some(record.clone()));
        assert_eq!(downloads.load(), vec![record]);
        let names: Vec<String> = std::fs::read_dir(&*downloads.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
        assert!(!names[0].contains("origin"), "{names:?}");
        downloads.remove(key);
        downloads.remove(key);
        assert_eq!(downloads.get(key), None);
        assert!(downloads.load().is_empty());
    }

    #[test]
    fn a_blobs_digest_is_recorded_and_restored_and_a_record_without_one_still_loads() {
        let (_dir, downloads, objects) = store();
        let key = "http://127.0.0.1:5000/v2/app/blobs/sha256:abab";
        let blob = Record {
            want: Wanted::Url(key.into()),
            sha256: Some([0xab; 32]),
            held: None,
        };
        downloads.save(key, &blob).unwrap();
        let text = std::fs::read_to_string(downloads.path(key)).unwrap();
        assert!(
            text.contains(&format!("\"sha256\":\"{}\"", "ab".repeat(32))),
            "{text}"
        );
        assert_eq!(downloads.get(key), Some(blob));
        // Written before the digest was kept: no such field.
        let dir = &*downloads.dir;
        std::fs::write(
            dir.join("old.json"),
            br#"{"want":{"url":"http://origin.example/a"}}"#,
        )
        .unwrap();
        let mut unfinished = downloads.restore(&objects, &Catalog::new());
        unfinished.sort_by_key(|d| d.sha256.is_none());
        let found: Vec<_> = unfinished.iter().map(|d| (&d.want, d.sha256)).collect();
        assert_eq!(
            found,
            vec![
                (&Want::Url(Url::parse(key).unwrap()), Some([0xab; 32])),
                (
                    &Want::Url(Url::parse("http://origin.example/a").unwrap()),
                    None
                ),
            ]
        );
    }

    #[test]
    fn a_torn_or_garbled_record_is_ignored_and_removed() {
        let (_dir, downloads, objects) = store();
        let good = record("http://origin.example/a", &[]);
        downloads.save("http://origin.example/a", &good).unwrap();
        let text = serde_json::to_vec(&record("http://origin.example/b", &[1])).unwrap();
        let dir = &*downloads.dir;
        std::fs::write(dir.join("torn.json"), &text[..text.len() / 2]).unwrap();
        std::fs::write(dir.join("noise.json"), [0xff, 0x00, 0x17]).unwrap();
        std::fs::write(dir.join("bad-url.json"), br#"{"want":{"url":"not a url"}}"#).unwrap();
        std::fs::write(
            dir.join("bad-digest.json"),
            br#"{"want":{"url":"http://origin.example/c"},"sha256":"abc"}"#,
        )
        .unwrap();
        std::fs::write(dir.join("cut.json.tmp"), b"{").unwrap();
        let catalog = Catalog::new();
        let unfinished = downloads.restore(&objects, &catalog);
        assert_eq!(unfinished.len(), 1, "{unfinished:?}");
        assert_eq!(
            unfinished[0].want,
            Want::Url(Url::parse("http://origin.example/a").unwrap())
        );
        assert_eq!(
            std::fs::read_dir(dir).unwrap().count(),
            1,
            "the damaged ones are gone"
        );
        assert!(catalog.entries().is_empty());
    }

    #[test]
    fn restored_pieces_are_those_verified_and_durable() {
        let (_dir, downloads, objects) = store();
        // Verified: 0, 1, 3; durable in the engine's state: 0, 1, 2.
        let record = record("http://origin.example/disk.img", &[0, 1, 3]);
        let held = record.held.clone().unwrap();
        downloads
            .save("http://origin.example/disk.img", &record)
            .unwrap();
        engine_left(&objects, &held, &[0, 1, 2]);
        let catalog = Catalog::new();
        let unfinished = downloads.restore(&objects, &catalog);
        assert_eq!(unfinished.len(), 1);
        assert_eq!(unfinished[0].restored, Some((held.content, Part::Lead)));
        let entry = catalog.get(&held.content).unwrap();
        assert_eq!(entry.have(), bits(4, &[0, 1]));
        assert_eq!(entry.name, "disk.img");
        assert!(entry.path().ends_with(format!("{}.part", held.content)));
    }

    #[test]
    fn nothing_is_restored_without_the_engines_state_or_the_whole_part() {
        for damage in ["no state", "garbled state", "short part", "no part"] {
            let (_dir, downloads, objects) = store();
            let record = record("http://origin.example/disk.img", &[0, 1]);
            let held = record.held.clone().unwrap();
            downloads
                .save("http://origin.example/disk.img", &record)
                .unwrap();
            engine_left(&objects, &held, &[0, 1]);
            let path = objects.path(&held.content);
            let part = shoal_engine::naming::part_path(&path);
            match damage {
                "no state" => std::fs::remove_file(resume::state_path(&path)).unwrap(),
                "garbled state" => std::fs::write(resume::state_path(&path), b"SHOALST\n").unwrap(),
                "short part" => std::fs::write(&part, b"short").unwrap(),
                _ => std::fs::remove_file(&part).unwrap(),
            }
            let catalog = Catalog::new();
            let unfinished = downloads.restore(&objects, &catalog);
            assert_eq!(unfinished.len(), 1, "{damage}: still resumed");
            assert_eq!(unfinished[0].restored, None, "{damage}");
            assert!(catalog.entries().is_empty(), "{damage}: nothing served");
        }
    }
}
