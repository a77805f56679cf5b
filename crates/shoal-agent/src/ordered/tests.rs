use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use shoal_core::ContentId;

use super::*;
use crate::objects::Objects;

const PIECE: u64 = 64 << 10;

fn bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A download of `data` into `dir/obj` (its `.part` written whole already, as the engine
/// preallocates and fills it), followed through a `Landed` the test drives.
struct Fake {
    dir: tempfile::TempDir,
    path: PathBuf,
    layout: Layout,
    landed: watch::Sender<Landed>,
}

impl Fake {
    fn new(data: &[u8]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("obj");
        std::fs::write(shoal_engine::naming::part_path(&path), data).unwrap();
        let layout = Layout::new(data.len() as u64, PIECE).unwrap();
        let (landed, _) = watch::channel(Landed::default());
        let fake = Self {
            dir,
            path,
            layout,
            landed,
        };
        fake.land(Landing::Started {
            path: fake.path.clone(),
            layout,
        });
        fake
    }

    fn land(&self, landing: Landing) {
        self.landed.send_modify(|now| now.land(landing));
    }

    fn piece(&self, i: u32) {
        self.land(Landing::Piece(self.layout.piece(i).unwrap()));
    }

    fn reader(&self, span: Range<u64>, sha256: Option<[u8; 32]>) -> Reader {
        let url = SafeUrl::new(Url::parse("http://origin.test/f").unwrap());
        Reader::new(
            self.landed.subscribe(),
            url,
            self.layout.size(),
            span,
            sha256,
        )
    }

    /// Ends the fetch with the content whole, moved from the `.part` to another place.
    fn finish(&self) {
        let objects = Objects::open(self.dir.path(), None).unwrap();
        let target = self.dir.path().join("moved");
        std::fs::rename(shoal_engine::naming::part_path(&self.path), &target).unwrap();
        let id = ContentId::from_bytes([3; 32]);
        let fetched = Fetched {
            content: id,
            name: "f".into(),
            path: target,
            size: self.layout.size(),
            summary: None,
            pin: objects.pin(id),
        };
        self.landed
            .send_modify(|now| now.end = Some(End::Whole(Arc::new(fetched))));
    }
}

async fn collect(reader: Reader) -> (Vec<u8>, Option<OrderedError>) {
    let mut stream = std::pin::pin!(reader.into_stream());
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(b) => out.extend_from_slice(&b),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

#[tokio::test]
async fn bytes_go_out_in_file_order_as_pieces_land_and_never_past_the_frontier() {
    let data = bytes(4 * PIECE as usize + 1000);
    let fake = Fake::new(&data);
    let mut stream = Box::pin(fake.reader(0..data.len() as u64, None).into_stream());
    // Piece 1 first: nothing can go out before piece 0.
    fake.piece(1);
    let early = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    assert!(early.is_err(), "a byte went out before piece 0 landed");
    fake.piece(0);
    let mut out = Vec::new();
    while out.len() < 2 * PIECE as usize {
        out.extend_from_slice(&stream.next().await.unwrap().unwrap());
    }
    assert_eq!(out, data[..2 * PIECE as usize]);
    let stalled = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    assert!(stalled.is_err(), "a byte past the frontier went out");
    fake.piece(2);
    // The rest only from the whole content, moved away from the `.part` meanwhile.
    fake.finish();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(out, data);
}

#[tokio::test]
async fn a_range_is_served_from_the_same_content() {
    let data = bytes(3 * PIECE as usize);
    let fake = Fake::new(&data);
    for i in 0..3 {
        fake.piece(i);
    }
    let span = PIECE - 10..2 * PIECE + 5;
    let (out, error) = collect(fake.reader(span.clone(), None)).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(out, data[span.start as usize..span.end as usize]);
}

#[tokio::test]
async fn a_failed_download_ends_the_body_with_an_error() {
    let data = bytes(3 * PIECE as usize);
    let fake = Fake::new(&data);
    fake.piece(0);
    let reader = fake.reader(0..data.len() as u64, None);
    fake.landed
        .send_modify(|now| now.end = Some(End::Failed("the origin went away".into())));
    let (out, error) = collect(reader).await;
    assert!(
        matches!(&error, Some(OrderedError::Failed { message, .. }) if message.contains("went away")),
        "{error:?}"
    );
    assert!(out.len() < data.len());
}

#[tokio::test]
async fn a_content_whole_already_is_hashed_by_its_reader_before_the_last_byte_goes_out() {
    let data = bytes(2 * PIECE as usize + 17);
    let good: [u8; 32] = Sha256::digest(&data).into();
    let fake = Fake::new(&data);
    fake.finish();
    let (out, error) = collect(fake.reader(0..data.len() as u64, Some(good))).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(out, data);
    // A range of a content whose bytes do not match: its last bytes never go out.
    let (out, error) = collect(fake.reader(10..PIECE + 10, Some([0; 32]))).await;
    assert!(
        matches!(error, Some(OrderedError::Mismatch { .. })),
        "{error:?}"
    );
    assert!(out.len() < PIECE as usize, "{} bytes went out", out.len());
}

#[tokio::test]
async fn a_content_still_landing_is_checked_by_its_fetch_and_the_body_waits_for_it() {
    let data = bytes(5 * PIECE as usize + 9);
    // The reader does not hash what its fetch checks: a digest it would refuse passes.
    let wrong = Some([0; 32]);
    let fake = Fake::new(&data);
    fake.land(Landing::Checking);
    for i in 0..fake.layout.piece_count() {
        fake.piece(i);
    }
    let mut stream = Box::pin(fake.reader(0..data.len() as u64, wrong).into_stream());
    let mut out = stream.next().await.unwrap().unwrap().to_vec();
    let held = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    assert!(
        held.is_err(),
        "the body's end went out before the fetch's check"
    );
    fake.land(Landing::Trusted);
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(out, data);
    // The fetch's check fails: it fails the fetch, and the body's end never goes out.
    let fake = Fake::new(&data);
    fake.land(Landing::Checking);
    for i in 0..fake.layout.piece_count() {
        fake.piece(i);
    }
    let reader = fake.reader(0..data.len() as u64, wrong);
    fake.landed.send_modify(|now| {
        now.end = Some(End::Failed("the download hashes to sha256:00".into()));
    });
    let (out, error) = collect(reader).await;
    assert!(
        matches!(error, Some(OrderedError::Failed { .. })),
        "{error:?}"
    );
    assert!(out.len() < data.len(), "the whole body went out");
}

/// A reader of `fake`'s content whose check against the origin is under way, every piece
/// landed: the body's stream.
fn checked_body(fake: &Fake, span: Range<u64>) -> impl Stream<Item = Result<Bytes, OrderedError>> {
    fake.land(Landing::Checking);
    for i in 0..fake.layout.piece_count() {
        fake.piece(i);
    }
    fake.reader(span, None).into_stream()
}

#[tokio::test]
async fn the_end_of_a_body_waits_for_the_check_against_the_origin() {
    // Two chunks: the second, the body's end, waits.
    let data = bytes(5 * PIECE as usize + 9);
    let fake = Fake::new(&data);
    let mut stream = Box::pin(checked_body(&fake, 0..data.len() as u64));
    let mut out = stream.next().await.unwrap().unwrap().to_vec();
    let held = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    assert!(held.is_err(), "the body's end went out before the check");
    fake.land(Landing::Trusted);
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(out, data);
}

#[tokio::test]
async fn a_content_failing_its_check_after_bytes_went_out_ends_the_body_with_an_error() {
    let data = bytes(5 * PIECE as usize + 9);
    let fake = Fake::new(&data);
    let mut stream = Box::pin(checked_body(&fake, 0..data.len() as u64));
    let sent = stream.next().await.unwrap().unwrap();
    assert_eq!(sent, data[..sent.len()]);
    let held = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    assert!(held.is_err(), "the body's end went out before the check");
    fake.land(Landing::Untrusted("piece 3 differs".into()));
    // The download the fetch goes on with cannot make the bytes sent right.
    fake.land(Landing::Started {
        path: fake.path.clone(),
        layout: fake.layout,
    });
    for i in 0..fake.layout.piece_count() {
        fake.piece(i);
    }
    let end = stream.next().await.unwrap();
    assert!(
        matches!(&end, Err(OrderedError::Untrusted { message, .. }) if message == "piece 3 differs"),
        "{end:?}"
    );
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn a_reader_that_sent_nothing_of_a_content_failing_its_check_goes_on_with_the_next_download()
{
    let data = bytes(2 * PIECE as usize);
    let fake = Fake::new(&data);
    // One chunk, the body's end: read, held, never sent.
    let span = 10..1000;
    let mut stream = Box::pin(checked_body(&fake, span.clone()));
    let held = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    assert!(held.is_err(), "the body's end went out before the check");
    fake.land(Landing::Untrusted("piece 0 differs".into()));
    let origin: Vec<u8> = data.iter().map(|b| !b).collect();
    let path = fake.dir.path().join("from-origin");
    std::fs::write(shoal_engine::naming::part_path(&path), &origin).unwrap();
    fake.land(Landing::Started {
        path,
        layout: fake.layout,
    });
    fake.piece(0);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(out, origin[span.start as usize..span.end as usize]);
}
