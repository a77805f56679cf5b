//! `shoal get -o -` as users run it: the real binary streaming to its standard output (a file
//! outside the working directory, or a pipe the test closes), against the test kit's origin.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;

use shoal_testkit::{random_bytes, sha256_hex, Origin, OriginConfig};
use tempfile::TempDir;

mod common;
use common::{assert_code, finish, get, Finished};

const MIB: usize = 1 << 20;

fn origin(len: usize, config: OriginConfig) -> Origin {
    Origin::start_blocking(OriginConfig {
        content: random_bytes(len, 61),
        ..config
    })
}

/// `shoal get ARGS` in an empty working directory, its standard output going to a file
/// elsewhere: the run, the bytes it wrote to stdout, and whether the working directory is
/// still empty.
fn streamed(args: &[&str]) -> (Finished, Vec<u8>, bool) {
    let work = TempDir::new().unwrap();
    let elsewhere = TempDir::new().unwrap();
    let out = elsewhere.path().join("stdout");
    let mut cmd = get(work.path(), args);
    cmd.stdout(File::create(&out).unwrap());
    let run = finish(cmd.spawn().expect("spawn shoal"));
    let empty = std::fs::read_dir(work.path()).unwrap().next().is_none();
    (run, std::fs::read(&out).unwrap(), empty)
}

#[test]
fn dash_o_dash_streams_over_eight_connections_and_creates_nothing() {
    let origin = origin(8 * MIB, OriginConfig::default());
    let url = origin.url("/f.bin");
    let (run, stdout, empty) = streamed(&["-o", "-", "-c", "8", "--window", "2M", &url]);
    assert_code(&run, 0);
    assert_eq!(sha256_hex(&stdout), sha256_hex(&origin.content()));
    assert!(empty, "nothing is created on disk");
    assert!(
        origin.connections() > 1,
        "{} connections",
        origin.connections()
    );
    assert!(
        run.stderr.contains("streamed to standard output"),
        "{}",
        run.stderr
    );
}

#[test]
fn without_ranges_one_connection_streams() {
    let origin = origin(
        3 * MIB,
        OriginConfig {
            ranges: false,
            ..OriginConfig::default()
        },
    );
    let (run, stdout, empty) = streamed(&["-o", "-", "-c", "8", &origin.url("/f.bin")]);
    assert_code(&run, 0);
    assert_eq!(sha256_hex(&stdout), sha256_hex(&origin.content()));
    assert!(empty);
    assert_eq!(origin.requests().len(), 1);
}

#[test]
fn a_failure_mid_stream_exits_non_zero_leaving_a_prefix() {
    let origin = origin(
        8 * MIB,
        OriginConfig {
            reset_after: Some(3 * MIB as u64 / 2),
            reset_count: 1000,
            ..OriginConfig::default()
        },
    );
    let url = origin.url("/f.bin");
    let args = [
        "-o",
        "-",
        "-c",
        "1",
        "--window",
        "4M",
        "--max-tries",
        "1",
        &url,
    ];
    let (run, stdout, empty) = streamed(&args);
    assert_code(&run, 3);
    assert!(run.stderr.contains(&url), "{}", run.stderr);
    let content = origin.content();
    assert!(stdout.len() < content.len(), "{} bytes", stdout.len());
    assert_eq!(stdout[..], content[..stdout.len()], "a prefix of the file");
    assert!(empty);
}

#[test]
fn a_checksum_mismatch_says_the_output_is_wrong() {
    let origin = origin(3 * MIB, OriginConfig::default());
    let wrong = format!("sha256={}", sha256_hex(b"another file"));
    let (run, stdout, _) = streamed(&["-o", "-", "--checksum", &wrong, &origin.url("/f.bin")]);
    assert_code(&run, 5);
    assert!(
        run.stderr
            .contains("already streamed to the output are NOT the expected file: discard them"),
        "{}",
        run.stderr
    );
    assert_eq!(stdout.len(), origin.content().len());
}

#[test]
fn a_closed_stdout_ends_quietly_with_141() {
    let origin = origin(
        16 * MIB,
        OriginConfig {
            rate_limit: Some(4 * MIB as u64),
            ..OriginConfig::default()
        },
    );
    let work = TempDir::new().unwrap();
    let mut cmd = get(work.path(), &["-o", "-", &origin.url("/f.bin")]);
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn shoal");
    let mut first = vec![0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe's reading end is closed here, as `| head -c 100` closes it.
    let run = finish(child);
    assert_eq!(first[..], origin.content()[..100]);
    assert_code(&run, 141);
    assert!(!run.stderr.contains("shoal:"), "{}", run.stderr);
}

#[test]
fn a_reader_that_stops_holds_the_origin_back_by_the_window() {
    let origin = origin(32 * MIB, OriginConfig::default());
    let work = TempDir::new().unwrap();
    let url = origin.url("/f.bin");
    let mut cmd = get(work.path(), &["-o", "-", "-c", "4", "--window", "1M", &url]);
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn shoal");
    let mut stdout = child.stdout.take().unwrap();
    let mut got = vec![0u8; MIB];
    stdout.read_exact(&mut got).unwrap();
    // The reader stops; wait for the origin's count to settle (bounded: 100 looks).
    let mut sent = origin.bytes_sent();
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = origin.bytes_sent();
        if now == sent {
            break;
        }
        sent = now;
    }
    // The window, 4 MiB per connection in flight (socket buffers, the HTTP client's and the
    // connection's buffers), and 1 MiB between the window and the test (shoal's copy buffer
    // and the pipe).
    let bound = (MIB + 4 * 4 * MIB + MIB) as u64;
    let ahead = sent - got.len() as u64;
    assert!(
        ahead <= bound,
        "the origin sent {ahead} bytes ahead of the reader"
    );
    stdout.read_to_end(&mut got).unwrap();
    let run = finish(child);
    assert_code(&run, 0);
    assert_eq!(sha256_hex(&got), sha256_hex(&origin.content()));
}

#[test]
fn a_file_named_dash_is_dot_slash_dash() {
    let origin = origin(MIB, OriginConfig::default());
    let work = TempDir::new().unwrap();
    let run = finish(
        get(work.path(), &["-o", "./-", &origin.url("/f.bin")])
            .spawn()
            .unwrap(),
    );
    assert_code(&run, 0);
    assert!(run.stdout.is_empty());
    let saved = std::fs::read(work.path().join(Path::new("-"))).unwrap();
    assert_eq!(sha256_hex(&saved), sha256_hex(&origin.content()));
}

#[test]
fn a_window_too_small_and_a_metalink_are_refused() {
    let work = TempDir::new().unwrap();
    let url = "http://127.0.0.1:9/f.bin";
    let run = finish(
        get(work.path(), &["-o", "-", "--window", "100K", url])
            .spawn()
            .unwrap(),
    );
    assert_code(&run, 2);
    assert!(
        run.stderr.contains("between 1 MiB and 4 GiB"),
        "{}",
        run.stderr
    );
    let meta = work.path().join("f.meta4");
    std::fs::write(
        &meta,
        r#"<?xml version="1.0"?><metalink xmlns="urn:ietf:params:xml:ns:metalink">
<file name="f.bin"><url>http://127.0.0.1:9/f.bin</url></file></metalink>"#,
    )
    .unwrap();
    let run = finish(
        get(work.path(), &["-o", "-", meta.to_str().unwrap()])
            .spawn()
            .unwrap(),
    );
    assert_code(&run, 2);
    assert!(
        run.stderr.contains("-o - streams one URL"),
        "{}",
        run.stderr
    );
}
