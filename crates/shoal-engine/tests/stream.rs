//! Streamed downloads ([`Output::Stream`]) against the test kit's origin: the reader gets the
//! origin's bytes in order, the window bounds what the origin sends ahead of the reader, and
//! failures reach the reader after a prefix of the right bytes.

use std::time::Duration;

use shoal_engine::stream::{channel, StreamReader};
use shoal_engine::{
    download, CancellationToken, Connections, DownloadError, DownloadOptions, Output, Summary,
    Window,
};
use shoal_testkit::{random_bytes, sha256_hex, Origin, OriginConfig};
use tokio::io::AsyncReadExt;
use url::Url;

const MIB: usize = 1 << 20;
/// What one connection may have in flight beyond the window while the reader waits: the
/// origin's last write (256 KiB), the kernel's socket buffers on both sides, the HTTP
/// client's read buffer and the connection's own 256 KiB buffer.
const PER_CONNECTION: u64 = 4 * MIB as u64;

fn options(url: &str, window: u64, connections: u64) -> (DownloadOptions, StreamReader) {
    let (sink, reader) = channel(Window::new(window).unwrap());
    let mut o = DownloadOptions::new(Url::parse(url).unwrap(), Output::Stream(sink));
    o.connections = Connections::new(connections).unwrap();
    o.stall_timeout = Duration::from_secs(5);
    (o, reader)
}

type Running = tokio::task::JoinHandle<Result<Summary, DownloadError>>;

fn start(o: DownloadOptions) -> Running {
    let (events, _) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(download(o, events, CancellationToken::new()))
}

/// Reads to the end or the first error: the bytes, and the error.
async fn read_all(reader: &mut StreamReader) -> (Vec<u8>, Option<std::io::Error>) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let read = tokio::time::timeout_at(deadline, reader.read(&mut buf))
            .await
            .expect("the stream ends within a minute");
        match read {
            Ok(0) => return (got, None),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Some(e)),
        }
    }
}

async fn finished(run: Running) -> Result<Summary, DownloadError> {
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the download ends within a minute")
        .expect("no panic")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_connections_stream_the_file_in_order() {
    let content = random_bytes(8 * MIB, 41);
    let origin = Origin::start(OriginConfig {
        content: content.clone(),
        ..OriginConfig::default()
    })
    .await;
    let (o, mut reader) = options(&origin.url("/f.bin"), 2 * MIB as u64, 8);
    let run = start(o);
    let (got, error) = read_all(&mut reader).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(sha256_hex(&got), sha256_hex(&content));
    let summary = finished(run).await.unwrap();
    assert_eq!(summary.size, content.len() as u64);
    assert_eq!(summary.path, std::path::Path::new("-"));
    assert!(origin.connections() > 1, "one connection only");
    // Front to back in shares of the window: every request after the probe is a closed range
    // of at most 2 MiB / 8 connections.
    let ranges: Vec<(u64, Option<u64>)> = origin
        .requests()
        .iter()
        .filter_map(|r| r.parsed_range)
        .collect();
    assert_eq!(ranges[0], (0, None));
    for &(start, end) in &ranges[1..] {
        let end = end.expect("a closed range");
        assert!(end + 1 - start <= 256 * 1024, "{start}-{end}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_stream_the_file_in_order_too() {
    let content = random_bytes(8 * MIB, 47);
    let start_origin = || {
        Origin::start(OriginConfig {
            content: content.clone(),
            ..OriginConfig::default()
        })
    };
    let (primary, mirror) = (start_origin().await, start_origin().await);
    let (mut o, mut reader) = options(&primary.url("/f.bin"), 2 * MIB as u64, 4);
    o.mirrors = vec![Url::parse(&mirror.url("/f.bin")).unwrap()];
    let run = start(o);
    let (got, error) = read_all(&mut reader).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(sha256_hex(&got), sha256_hex(&content));
    let summary = finished(run).await.unwrap();
    let served: Vec<u64> = summary.sources.iter().map(|s| s.bytes).collect();
    assert!(served.iter().all(|&b| b > 0), "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_sends_no_more_than_the_window_ahead_of_a_reader_that_waits() {
    let content = random_bytes(32 * MIB, 42);
    let origin = Origin::start(OriginConfig {
        content: content.clone(),
        ..OriginConfig::default()
    })
    .await;
    let window = Window::MIN;
    let connections = 4;
    let (o, mut reader) = options(&origin.url("/f.bin"), window, connections);
    let run = start(o);
    let mut got = vec![0u8; MIB];
    reader.read_exact(&mut got).await.unwrap();
    // The reader stops; the origin goes on until the connections stop reading. Wait for its
    // count to settle (bounded: 100 looks).
    let mut sent = origin.bytes_sent();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = origin.bytes_sent();
        if now == sent {
            break;
        }
        sent = now;
    }
    let ahead = sent - got.len() as u64;
    let bound = window + connections * PER_CONNECTION;
    eprintln!("origin sent {sent} bytes, {ahead} ahead of the reader; bound {bound}");
    assert!(
        ahead <= bound,
        "the origin sent {ahead} bytes ahead of the reader, more than {bound}"
    );
    assert!(!run.is_finished());
    let (rest, error) = read_all(&mut reader).await;
    assert!(error.is_none(), "{error:?}");
    got.extend_from_slice(&rest);
    assert_eq!(sha256_hex(&got), sha256_hex(&content));
    finished(run).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_that_is_not_retried_leaves_the_reader_a_prefix_and_an_error() {
    let content = random_bytes(8 * MIB, 43);
    let origin = Origin::start(OriginConfig {
        content: content.clone(),
        reset_after: Some(3 * MIB as u64 / 2),
        reset_count: 1000,
        ..OriginConfig::default()
    })
    .await;
    // One connection asking for 4 MiB at a time: each response is cut.
    let (mut o, mut reader) = options(&origin.url("/f.bin"), 4 * MIB as u64, 1);
    o.max_tries = 1;
    let run = start(o);
    let (got, error) = read_all(&mut reader).await;
    let error = error.expect("the reader is told the download failed");
    let failed = finished(run).await.unwrap_err();
    assert!(
        matches!(failed, DownloadError::Network { .. }),
        "{failed:?}"
    );
    assert_eq!(error.to_string(), failed.to_string());
    assert!(got.len() < content.len(), "{} bytes", got.len());
    assert_eq!(got[..], content[..got.len()], "a prefix of the file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_mismatch_says_the_streamed_bytes_are_wrong() {
    let content = random_bytes(3 * MIB, 44);
    let origin = Origin::start(OriginConfig {
        content: content.clone(),
        ..OriginConfig::default()
    })
    .await;
    let wrong = sha256_hex(b"another file");
    let (mut o, mut reader) = options(&origin.url("/f.bin"), Window::MIN, 4);
    o.checksum = Some(format!("sha256={wrong}").parse().unwrap());
    let run = start(o);
    let (got, error) = read_all(&mut reader).await;
    assert_eq!(got[..], content[..], "every byte was streamed");
    assert!(error.is_some(), "the end is an error, not EOF");
    match finished(run).await.unwrap_err() {
        DownloadError::StreamMismatch {
            expected,
            actual,
            sent,
            ..
        } => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, sha256_hex(&content));
            assert_eq!(sent, content.len() as u64);
        }
        other => panic!("{other:?}"),
    }
    // The right checksum passes.
    let (mut o, mut reader) = options(&origin.url("/f.bin"), Window::MIN, 4);
    o.checksum = Some(format!("sha256={}", sha256_hex(&content)).parse().unwrap());
    let run = start(o);
    let (got, error) = read_all(&mut reader).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(got.len(), content.len());
    finished(run).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ranges_or_a_length_one_connection_streams() {
    let content = random_bytes(3 * MIB, 45);
    for (ranges, content_length) in [(false, true), (false, false)] {
        let origin = Origin::start(OriginConfig {
            content: content.clone(),
            ranges,
            content_length,
            ..OriginConfig::default()
        })
        .await;
        let (o, mut reader) = options(&origin.url("/f.bin"), Window::MIN, 8);
        let run = start(o);
        let (got, error) = read_all(&mut reader).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(sha256_hex(&got), sha256_hex(&content));
        let summary = finished(run).await.unwrap();
        assert_eq!(summary.max_connections, 1);
        assert_eq!(
            origin.requests().len(),
            1,
            "content_length {content_length}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_filesize_and_a_reader_that_goes_away_stop_the_stream() {
    let content = random_bytes(4 * MIB, 46);
    let origin = Origin::start(OriginConfig {
        content: content.clone(),
        ..OriginConfig::default()
    })
    .await;
    let (mut o, mut reader) = options(&origin.url("/f.bin"), Window::MIN, 4);
    o.max_filesize = Some(MIB as u64);
    let run = start(o);
    let (got, error) = read_all(&mut reader).await;
    assert!(got.is_empty() && error.is_some());
    let failed = finished(run).await.unwrap_err();
    assert!(
        matches!(failed, DownloadError::TooLarge { .. }),
        "{failed:?}"
    );

    let (o, mut reader) = options(&origin.url("/f.bin"), Window::MIN, 4);
    let run = start(o);
    let mut first = vec![0u8; 100];
    reader.read_exact(&mut first).await.unwrap();
    assert_eq!(first[..], content[..100]);
    drop(reader);
    match finished(run).await.unwrap_err() {
        DownloadError::StreamClosed { sent, .. } => assert_eq!(sent, 100),
        other => panic!("{other:?}"),
    }
}
