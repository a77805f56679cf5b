//! [`Catalog`]: every content this agent holds, whole or in part, by content id. The piece
//! server answers only from here (never from a path in a request), the announcer reports it to
//! the tracker, and downloads add to it piece by piece.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use shoal_core::manifest::PieceDigest;
use shoal_core::wire::peer::{KnownPeer, MAX_PEERS};
use shoal_core::wire::{AgentId, Holding, PackedBits, Scheme, SwarmDigests};
use shoal_core::{Bitfield, ByteRange, ContentId, Layout, Manifest, PieceIndex};
use tokio::sync::watch;

use crate::meter::Meter;

/// How the agent came to hold a content, which says what keeps the entry up to date: the
/// shared directory's scans, or the store of fetched contents (and its eviction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provenance {
    /// A file in the shared directory, served in place.
    Shared,
    /// Fetched into the data directory; kept and seeded until evicted.
    Fetched,
}

/// One content the agent holds.
#[derive(Debug)]
pub struct Entry {
    id: ContentId,
    layout: Layout,
    /// `None` for a URL swarm still learning its digests (its id is the swarm's).
    manifest: Option<Arc<Manifest>>,
    /// The name people search by (the file name).
    pub name: String,
    /// Whether the shared directory or the fetched store keeps this entry up to date.
    pub provenance: Provenance,
    /// Where the bytes are read from now: a `.part` file while downloading, the final file
    /// after.
    path: RwLock<PathBuf>,
    /// The file, opened at the first read and kept: the download renaming it into place
    /// cannot break serving, and requests cost no `open`.
    file: Mutex<Option<Arc<File>>>,
    /// Verified pieces; only these are served.
    have: RwLock<Bitfield>,
    /// How many pieces are verified, for peers that wait for more.
    count: watch::Sender<u32>,
    /// The other members of this content's swarm this agent knows (at most [`MAX_PEERS`]),
    /// told to peers that ask while the tracker is down.
    peers: Mutex<BTreeMap<AgentId, (SocketAddr, Scheme)>>,
    /// The piece digests learned for a URL swarm (by its leader from the origin, by a
    /// follower from the leader), told to peers that ask while the tracker is down.
    digests: Mutex<BTreeMap<u32, PieceDigest>>,
    /// Bytes of this content served to peers: dropped with the entry when it is evicted.
    uploaded: Meter,
}

impl Entry {
    /// An entry with a known manifest and no piece verified yet: a download about to start, whose
    /// bytes will be at `path`.
    pub fn new(
        manifest: Arc<Manifest>,
        name: String,
        provenance: Provenance,
        path: PathBuf,
    ) -> Self {
        let have = Bitfield::new(manifest.layout().piece_count());
        Self {
            id: manifest.id(),
            layout: manifest.layout(),
            manifest: Some(manifest),
            name,
            provenance,
            path: RwLock::new(path),
            file: Mutex::new(None),
            have: RwLock::new(have),
            count: watch::Sender::new(0),
            peers: Mutex::default(),
            digests: Mutex::default(),
            uploaded: Meter::default(),
        }
    }

    /// A URL swarm's content before its manifest is known: pieces are marked as their
    /// digests are learned or checked against the leader's.
    pub fn provisional(id: ContentId, layout: Layout, name: String, path: PathBuf) -> Self {
        Self {
            id,
            layout,
            manifest: None,
            name,
            provenance: Provenance::Fetched,
            path: RwLock::new(path),
            file: Mutex::new(None),
            have: RwLock::new(Bitfield::new(layout.piece_count())),
            count: watch::Sender::new(0),
            peers: Mutex::default(),
            digests: Mutex::default(),
            uploaded: Meter::default(),
        }
    }

    /// An entry whose every piece is held (a shared file, or a finished download).
    pub fn complete(
        manifest: Arc<Manifest>,
        name: String,
        provenance: Provenance,
        path: PathBuf,
    ) -> Self {
        let entry = Self::new(manifest, name, provenance, path);
        *entry.have.write().expect("have lock") = Bitfield::full(entry.piece_count());
        entry.count.send_replace(entry.piece_count());
        entry
    }

    /// Bytes of this content served to peers while this entry was in the catalog.
    pub fn uploaded(&self) -> &Meter {
        &self.uploaded
    }

    /// The content id (for a URL swarm still learning its digests, the swarm id).
    pub fn id(&self) -> ContentId {
        self.id
    }

    /// The file size and piece size.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The manifest; `None` for a URL swarm whose digests are still being learned.
    pub fn manifest(&self) -> Option<&Arc<Manifest>> {
        self.manifest.as_ref()
    }

    /// The content's length in bytes.
    pub fn size(&self) -> u64 {
        self.layout.size()
    }

    /// The number of pieces, the last one possibly shorter.
    pub fn piece_count(&self) -> u32 {
        self.layout.piece_count()
    }

    /// Where the bytes are read from now: the `.part` while downloading, the final file after.
    pub fn path(&self) -> PathBuf {
        self.path.read().expect("path lock").clone()
    }

    /// Records where the bytes are after a rename; a file already open stays in use (it is the same
    /// file).
    pub fn set_path(&self, path: PathBuf) {
        *self.path.write().expect("path lock") = path;
    }

    /// The open file of the bytes (blocking: it may open it).
    pub fn file(&self) -> io::Result<Arc<File>> {
        let mut file = self.file.lock().expect("file lock");
        if let Some(open) = &*file {
            return Ok(open.clone());
        }
        let open = Arc::new(File::open(self.path())?);
        *file = Some(open.clone());
        Ok(open)
    }

    /// A copy of the verified pieces.
    pub fn have(&self) -> Bitfield {
        self.have.read().expect("have lock").clone()
    }

    /// True when every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.have.read().expect("have lock").is_full()
    }

    /// Marks a verified piece; returns false when it was already marked, or is past this
    /// entry's pieces (an index made by another layout).
    pub fn mark(&self, piece: PieceIndex) -> bool {
        let mut have = self.have.write().expect("have lock");
        let piece = piece.get();
        if piece >= have.len() || have.get(piece) {
            return false;
        }
        have.set(piece);
        self.count.send_replace(have.count_ones());
        true
    }

    /// Wakes when more pieces are verified; the value is how many are.
    pub fn watch_count(&self) -> watch::Receiver<u32> {
        self.count.subscribe()
    }

    /// Whether every piece touching `range` is verified: only then may it be served.
    pub fn holds(&self, range: ByteRange) -> bool {
        if range.is_empty() {
            return true;
        }
        let layout = self.layout;
        let (Some(first), Some(last)) = (
            layout.piece_at(range.start()),
            layout.piece_at(range.end() - 1),
        ) else {
            return false;
        };
        let have = self.have.read().expect("have lock");
        (first.get()..=last.get()).all(|p| have.get(p))
    }

    /// Adds members of this content's swarm, up to [`MAX_PEERS`] (the ones known first stay;
    /// a known one's address is updated).
    pub fn meet(&self, peers: impl IntoIterator<Item = KnownPeer>) {
        let mut known = self.peers.lock().expect("peers lock");
        for peer in peers {
            if known.len() < MAX_PEERS || known.contains_key(&peer.id) {
                known.insert(peer.id, (peer.addr, peer.scheme));
            }
        }
    }

    /// The members of this content's swarm this agent knows.
    pub fn peers(&self) -> Vec<KnownPeer> {
        let known = self.peers.lock().expect("peers lock");
        known
            .iter()
            .map(|(id, &(addr, scheme))| KnownPeer {
                id: id.clone(),
                addr,
                scheme,
            })
            .collect()
    }

    /// Where the member `id` of this content's swarm listens, if known.
    pub fn peer(&self, id: &AgentId) -> Option<KnownPeer> {
        let known = self.peers.lock().expect("peers lock");
        let &(addr, scheme) = known.get(id)?;
        Some(KnownPeer {
            id: id.clone(),
            addr,
            scheme,
        })
    }

    /// Records the digest of a piece of a URL swarm; pieces past the layout are ignored.
    pub fn learn(&self, piece: u32, digest: PieceDigest) {
        if piece < self.piece_count() {
            self.digests
                .lock()
                .expect("digests lock")
                .insert(piece, digest);
        }
    }

    /// The piece digests known here: the manifest's when there is one, else those learned.
    pub fn digests(&self) -> SwarmDigests {
        match &self.manifest {
            Some(manifest) => SwarmDigests::of(
                &manifest
                    .digests()
                    .iter()
                    .copied()
                    .map(Some)
                    .collect::<Vec<_>>(),
            ),
            None => SwarmDigests::from_known(
                self.piece_count(),
                &self.digests.lock().expect("digests lock"),
            ),
        }
    }

    /// What the tracker is told about this entry.
    pub fn holding(&self) -> Holding {
        let have = self.have();
        Holding {
            content: self.id(),
            name: self.name.clone(),
            layout: self.layout,
            pieces: (!have.is_full()).then(|| PackedBits::of(&have)),
        }
    }
}

/// A change the announcer passes on to the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A content was added or replaced whole.
    Added(ContentId),
    /// A content is no longer held (deleted from the shared directory, or evicted).
    Removed(ContentId),
    /// Newly verified pieces of a content already announced.
    Pieces(ContentId, Vec<PieceIndex>),
}

/// Every content the agent holds. Cheap to clone; all clones share one index.
#[derive(Clone, Default)]
pub struct Catalog {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: RwLock<HashMap<ContentId, Arc<Entry>>>,
    changes: std::sync::Mutex<Vec<Change>>,
    /// Bumped on every change so the announcer wakes up.
    version: watch::Sender<u64>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry of `id`, if the agent holds it.
    pub fn get(&self, id: &ContentId) -> Option<Arc<Entry>> {
        self.inner
            .entries
            .read()
            .expect("catalog lock")
            .get(id)
            .cloned()
    }

    /// Every entry, in no particular order.
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        self.inner
            .entries
            .read()
            .expect("catalog lock")
            .values()
            .cloned()
            .collect()
    }

    /// The entry holding the file at `path`, if any.
    pub fn by_path(&self, path: &Path) -> Option<Arc<Entry>> {
        self.entries().into_iter().find(|e| e.path() == path)
    }

    /// Adds (or replaces) an entry and queues its announcement.
    pub fn insert(&self, entry: Arc<Entry>) {
        let id = entry.id();
        self.inner
            .entries
            .write()
            .expect("catalog lock")
            .insert(id, entry);
        self.push(Change::Added(id));
    }

    /// Removes an entry and queues its withdrawal; returns it if it was there.
    pub fn remove(&self, id: &ContentId) -> Option<Arc<Entry>> {
        let removed = self.inner.entries.write().expect("catalog lock").remove(id);
        if removed.is_some() {
            self.push(Change::Removed(*id));
        }
        removed
    }

    /// Marks verified pieces of a held content and queues them for announcement.
    pub fn mark(&self, id: &ContentId, pieces: &[PieceIndex]) {
        let Some(entry) = self.get(id) else { return };
        let new: Vec<PieceIndex> = pieces.iter().copied().filter(|&p| entry.mark(p)).collect();
        if !new.is_empty() {
            self.push(Change::Pieces(*id, new));
        }
    }

    /// Whether a queued change adds or removes a content, rather than marking pieces.
    pub fn holdings_changed(&self) -> bool {
        self.inner
            .changes
            .lock()
            .expect("changes lock")
            .iter()
            .any(|c| !matches!(c, Change::Pieces(..)))
    }

    /// Takes the changes queued since the last call.
    pub fn take_changes(&self) -> Vec<Change> {
        std::mem::take(&mut *self.inner.changes.lock().expect("changes lock"))
    }

    /// Wakes when something changed since the receiver last looked.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }

    fn push(&self, change: Change) {
        self.inner
            .changes
            .lock()
            .expect("changes lock")
            .push(change);
        self.inner.version.send_modify(|v| *v += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(data: &[u8], piece: u64) -> Arc<Entry> {
        let manifest = Arc::new(Manifest::of_bytes(data, piece).unwrap());
        Arc::new(Entry::new(
            manifest,
            "f".into(),
            Provenance::Fetched,
            PathBuf::from("/nowhere"),
        ))
    }

    fn pieces(e: &Entry, indexes: &[u32]) -> Vec<PieceIndex> {
        indexes
            .iter()
            .map(|&i| e.layout().piece(i).unwrap())
            .collect()
    }

    #[test]
    fn serves_only_verified_pieces() {
        let e = entry(&[1u8; 10], 4);
        assert!(!e.holds(ByteRange::new(0, 1).unwrap()));
        let one = e.layout().piece(1).unwrap();
        assert!(e.mark(one));
        assert!(!e.mark(one), "marked already");
        let other = Layout::new(100, 4).unwrap();
        assert!(!e.mark(other.piece(20).unwrap()));
        assert!(e.holds(ByteRange::new(4, 8).unwrap()));
        assert!(!e.holds(ByteRange::new(3, 8).unwrap()));
        assert!(!e.holds(ByteRange::new(4, 11).unwrap()));
        assert_eq!(e.holding().pieces.unwrap().as_bytes(), &[0x40]);
    }

    #[test]
    fn an_entry_knows_a_bounded_swarm_and_the_digests_it_learned() {
        let e = Entry::provisional(
            ContentId::from_bytes([3; 32]),
            Layout::new(10, 4).unwrap(),
            "f".into(),
            PathBuf::from("/nowhere"),
        );
        let peer = |i: usize, port: u16| KnownPeer {
            id: AgentId::new(format!("p{i:03}")).unwrap(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            scheme: Scheme::Https,
        };
        e.meet((0..MAX_PEERS + 5).map(|i| peer(i, 1000)));
        assert_eq!(e.peers().len(), MAX_PEERS);
        assert_eq!(e.peer(&peer(MAX_PEERS, 1).id), None, "past the limit");
        // A known peer's new address replaces the old one, even when full.
        e.meet([peer(0, 2000)]);
        assert_eq!(e.peer(&peer(0, 1).id), Some(peer(0, 2000)));

        e.learn(2, [9; 32]);
        e.learn(7, [8; 32]);
        assert_eq!(
            e.digests().to_digests(3).unwrap(),
            vec![None, None, Some([9; 32])],
            "a piece past the layout is not learned"
        );
        let whole = entry(&[1u8; 10], 4);
        let manifest = whole.manifest().unwrap().clone();
        let expected: Vec<_> = manifest.digests().iter().copied().map(Some).collect();
        assert_eq!(whole.digests().to_digests(3).unwrap(), expected);
    }

    #[test]
    fn changes_are_queued_once() {
        let catalog = Catalog::new();
        let e = entry(&[1u8; 10], 4);
        let (id, p) = (e.id(), pieces(&e, &[0, 2]));
        catalog.insert(e);
        catalog.mark(&id, &p);
        catalog.mark(&id, &p[1..]);
        assert_eq!(
            catalog.take_changes(),
            vec![Change::Added(id), Change::Pieces(id, p)]
        );
        catalog.remove(&id);
        assert_eq!(catalog.take_changes(), vec![Change::Removed(id)]);
        assert!(catalog.take_changes().is_empty());
    }
}
