//! Many sources and many files from one command, as users run them: `shoal get release.meta4`
//! and `shoal get -i LIST --jobs K`, the real binary against the test kit's origins.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use shoal_testkit::{random_bytes, sha256_hex, Origin, OriginConfig};
use tempfile::TempDir;

mod common;
use common::{assert_code, assert_saved, finish, run, sha256_of, DEADLINE};

/// An origin serving `content` at every path, each connection paced so that a download of a
/// few MiB lasts long enough for every source to take part.
fn paced(content: Bytes) -> Origin {
    Origin::start_blocking(OriginConfig {
        content,
        rate_limit: Some(2 << 20),
        ..OriginConfig::default()
    })
}

fn saw_ranges(origin: &Origin) -> bool {
    origin.requests().iter().any(|r| r.range.is_some())
}

const PIECE: usize = 1 << 20;

/// A Metalink v4 document for one file served by `urls` (priority 1, 2, …), with its size,
/// the given sha-256, 1 MiB sha-256 pieces, and two entries shoal cannot use.
fn meta4(name: &str, content: &[u8], sha256: &str, urls: &[String]) -> String {
    let pieces: String = content
        .chunks(PIECE)
        .map(|piece| format!("      <hash>{}</hash>\n", sha256_hex(piece)))
        .collect();
    let urls: String = urls
        .iter()
        .enumerate()
        .map(|(i, url)| format!("    <url priority=\"{}\">{url}</url>\n", i + 1))
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<metalink xmlns="urn:ietf:params:xml:ns:metalink">
  <file name="{name}">
    <size>{size}</size>
    <hash type="sha-256">{sha256}</hash>
    <hash type="gost">00</hash>
    <pieces length="{PIECE}" type="sha-256">
{pieces}    </pieces>
{urls}    <url priority="9">ftp://ftp.example.org/{name}</url>
  </file>
</metalink>
"#,
        size = content.len()
    )
}

mod metalink {
    use super::*;

    /// Mirrors that do not say their size can still send no more than the Metalink's size:
    /// the stream is stopped as it passes it, not checked after.
    #[test]
    fn a_stream_longer_than_its_size_is_stopped_as_it_arrives() {
        let promised = random_bytes(1 << 20, 12);
        let origins: Vec<Origin> = (0..2)
            .map(|_| {
                Origin::start_blocking(OriginConfig {
                    content: random_bytes(8 << 20, 13),
                    content_length: false,
                    rate_limit: Some(2 << 20),
                    ..OriginConfig::default()
                })
            })
            .collect();
        let dir = TempDir::new().unwrap();
        let doc = meta4(
            "f.iso",
            &promised,
            &sha256_hex(&promised),
            &[origins[0].url("/f.iso"), origins[1].url("/f.iso")],
        );
        std::fs::write(dir.path().join("f.meta4"), doc).unwrap();
        let run = run(dir.path(), &["f.meta4", "-d", "out"]);
        assert_code(&run, 3);
        assert!(
            run.stderr
                .contains("sent more than the 1048576 bytes its Metalink gives"),
            "{}",
            run.stderr
        );
        let sent: u64 = origins.iter().map(Origin::bytes_sent).sum();
        assert!(sent < 4 << 20, "the origins sent {sent} bytes");
        let part = std::fs::metadata(dir.path().join("out/f.iso.part")).unwrap();
        assert!(part.len() <= 1 << 20, "{} bytes written", part.len());
    }

    #[test]
    fn mirrors_size_and_hashes_from_a_local_file() {
        let content = random_bytes(6 << 20, 11);
        let (a, b) = (paced(content.clone()), paced(content.clone()));
        let dir = TempDir::new().unwrap();
        let doc = meta4(
            "release.iso",
            &content,
            &sha256_hex(&content),
            &[a.url("/release.iso"), b.url("/mirror/release.iso")],
        );
        std::fs::write(dir.path().join("release.meta4"), doc).unwrap();
        let run = run(
            dir.path(),
            &[
                "release.meta4",
                "-d",
                "out",
                "--min-split",
                "256K",
                "--max-connections-per-server",
                "2",
            ],
        );
        assert_code(&run, 0);
        assert_eq!(
            sha256_of(&dir.path().join("out/release.iso")),
            sha256_hex(&content)
        );
        assert!(saw_ranges(&a), "first mirror: {:?}", a.requests());
        assert!(saw_ranges(&b), "second mirror: {:?}", b.requests());
        // What the Metalink holds that shoal cannot use is named, not silently dropped.
        assert!(run.stderr.contains("gost"), "{}", run.stderr);
        assert!(
            run.stderr
                .contains("skipping source ftp://ftp.example.org/release.iso"),
            "{}",
            run.stderr
        );
    }

    #[test]
    fn fetched_from_a_url() {
        let content = random_bytes(1 << 20, 12);
        let mirror = paced(content.clone());
        let doc = meta4(
            "fetched.bin",
            &content,
            &sha256_hex(&content),
            &[mirror.url("/fetched.bin")],
        );
        let publisher = Origin::start_blocking(OriginConfig {
            content: Bytes::from(doc),
            ..OriginConfig::default()
        });
        let dir = TempDir::new().unwrap();
        let run = run(
            dir.path(),
            &["-o", "saved.bin", &publisher.url("/release.meta4")],
        );
        assert_code(&run, 0);
        assert_eq!(
            sha256_of(&dir.path().join("saved.bin")),
            sha256_hex(&content)
        );
    }

    #[test]
    fn v3_with_json_progress() {
        let content = random_bytes(1 << 20, 14);
        let origin = paced(content.clone());
        let dir = TempDir::new().unwrap();
        let doc = format!(
            r#"<?xml version="1.0"?>
<metalink version="3.0" xmlns="http://www.metalinker.org/">
  <files>
    <file name="old.bin">
      <size>{size}</size>
      <verification><hash type="sha256">{sha}</hash></verification>
      <resources>
        <url type="ftp" preference="100">ftp://ftp.example.org/old.bin</url>
        <url type="http" preference="90">{url}</url>
      </resources>
    </file>
  </files>
</metalink>
"#,
            size = content.len(),
            sha = sha256_hex(&content),
            url = origin.url("/old.bin"),
        );
        std::fs::write(dir.path().join("old.metalink"), doc).unwrap();
        let run = run(dir.path(), &["old.metalink", "--progress", "json"]);
        assert_code(&run, 0);
        let lines: Vec<Value> = run
            .stderr
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
            .collect();
        assert_eq!(lines[0]["event"], "metalink_skipped", "{}", run.stderr);
        assert_eq!(lines[0]["file"], "old.bin");
        assert_eq!(lines[0]["urls"][0]["url"], "ftp://ftp.example.org/old.bin");
        assert!(
            lines.iter().any(|l| l["event"] == "verifying"),
            "{}",
            run.stderr
        );
        assert_eq!(lines.last().unwrap()["event"], "finished");
        assert_eq!(sha256_of(&dir.path().join("old.bin")), sha256_hex(&content));
    }

    #[test]
    fn wrong_sha256_is_a_checksum_failure() {
        let content = random_bytes(1 << 20, 13);
        let origin = paced(content.clone());
        let dir = TempDir::new().unwrap();
        // Pieces match, so only the whole-file hash can catch it.
        let doc = meta4("f.bin", &content, &"ab".repeat(32), &[origin.url("/f.bin")]);
        std::fs::write(dir.path().join("f.meta4"), doc).unwrap();
        let run = run(dir.path(), &["--metalink", "f.meta4"]);
        assert_code(&run, 5);
        assert!(!dir.path().join("f.bin").exists());
    }

    #[test]
    fn malformed_is_a_usage_error_naming_the_line() {
        let dir = TempDir::new().unwrap();
        let doc = "<?xml version=\"1.0\"?>\n<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">\n  <file name=\"x\">\n    <size>1</size\n</metalink>\n";
        std::fs::write(dir.path().join("bad.meta4"), doc).unwrap();
        let run = run(dir.path(), &["bad.meta4"]);
        assert_code(&run, 2);
        assert!(run.stderr.contains("bad.meta4"), "{}", run.stderr);
        assert!(run.stderr.contains("line 5"), "{}", run.stderr);
    }

    #[test]
    fn output_path_with_several_files_is_refused() {
        let dir = TempDir::new().unwrap();
        let file = |name: &str| {
            format!("<file name=\"{name}\"><url>http://127.0.0.1:9/{name}</url></file>")
        };
        let doc = format!(
            "<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">{}{}</metalink>",
            file("a"),
            file("b")
        );
        std::fs::write(dir.path().join("two.meta4"), doc).unwrap();
        let run = run(dir.path(), &["-o", "x", "two.meta4"]);
        assert_code(&run, 2);
        assert!(run.stderr.contains("use -d DIR"), "{}", run.stderr);
    }
}

mod lists {
    use super::*;

    /// Three origins with different files; the last answers 404 to everything.
    fn three() -> (Vec<Origin>, Vec<Bytes>) {
        let contents: Vec<Bytes> = (0..3).map(|i| random_bytes(3 << 20, 20 + i)).collect();
        let mut origins: Vec<Origin> = contents[..2].iter().cloned().map(paced).collect();
        origins.push(Origin::start_blocking(OriginConfig {
            status: Some(404),
            ..OriginConfig::default()
        }));
        (origins, contents)
    }

    #[test]
    fn jobs_at_once_with_one_failure() {
        let (origins, contents) = three();
        let dir = TempDir::new().unwrap();
        let gone = origins[2].url("/c.bin");
        let list = format!(
            "# three files\n{}\n\n{}\n  # the last one is gone\n{gone}\n",
            origins[0].url("/a.bin"),
            origins[1].url("/b.bin"),
        );
        std::fs::write(dir.path().join("urls.txt"), list).unwrap();
        let run = run(dir.path(), &["-i", "urls.txt", "--jobs", "2", "-d", "out"]);
        assert_code(&run, 4);
        for (name, content) in ["a.bin", "b.bin"].iter().zip(&contents) {
            assert_eq!(
                sha256_of(&dir.path().join("out").join(name)),
                sha256_hex(content)
            );
        }
        assert!(!dir.path().join("out/c.bin").exists());
        let failed_line = run
            .stderr
            .lines()
            .find(|line| line.contains("FAILED"))
            .unwrap_or_else(|| panic!("no FAILED line:\n{}", run.stderr));
        assert!(failed_line.contains(&gone), "{failed_line}");
        assert!(failed_line.contains("404"), "{failed_line}");
        let last = run.stderr.lines().last().unwrap();
        assert!(last.contains("1 of 3 files failed"), "{last}");
    }

    /// Servers that name two files alike (`Content-Disposition`) get them saved side by side,
    /// numbered as aria2c numbers them, whether they run at once or one after the other.
    #[test]
    fn files_the_servers_name_alike_get_numbered_names() {
        for jobs in ["1", "2"] {
            let contents: Vec<Bytes> = (0..3).map(|i| random_bytes(1 << 20, 40 + i)).collect();
            let origins: Vec<Origin> = contents
                .iter()
                .map(|content| {
                    Origin::start_blocking(OriginConfig {
                        content: content.clone(),
                        rate_limit: Some(2 << 20),
                        content_disposition: Some("attachment; filename=\"same.tar.gz\"".into()),
                        ..OriginConfig::default()
                    })
                })
                .collect();
            let dir = TempDir::new().unwrap();
            let list: String = ["a", "b", "c"]
                .iter()
                .zip(&origins)
                .map(|(name, o)| o.url(name) + "\n")
                .collect();
            std::fs::write(dir.path().join("urls.txt"), list).unwrap();
            let run = run(dir.path(), &["-i", "urls.txt", "--jobs", jobs, "-d", "out"]);
            assert_code(&run, 0);
            let mut saved: Vec<String> = ["same.tar.gz", "same.tar.1.gz", "same.tar.2.gz"]
                .iter()
                .map(|name| sha256_of(&dir.path().join("out").join(name)))
                .collect();
            let mut expected: Vec<String> = contents.iter().map(|c| sha256_hex(c)).collect();
            saved.sort();
            expected.sort();
            assert_eq!(saved, expected, "jobs {jobs}");
        }
    }

    #[test]
    fn tab_separates_mirrors_of_one_file() {
        let content = random_bytes(4 << 20, 30);
        let (a, b) = (paced(content.clone()), paced(content.clone()));
        let other = paced(random_bytes(1 << 20, 31));
        let dir = TempDir::new().unwrap();
        let list = format!(
            "{}\t{}\n{}\n",
            a.url("/img.iso"),
            b.url("/img.iso"),
            other.url("/notes.txt")
        );
        std::fs::write(dir.path().join("urls.txt"), list).unwrap();
        let run = run(
            dir.path(),
            &[
                "-i",
                "urls.txt",
                "--min-split",
                "256K",
                "--max-connections-per-server",
                "2",
            ],
        );
        assert_code(&run, 0);
        assert_eq!(sha256_of(&dir.path().join("img.iso")), sha256_hex(&content));
        assert!(saw_ranges(&a) && saw_ranges(&b));
        assert!(dir.path().join("notes.txt").exists());
        assert!(
            run.stderr
                .lines()
                .last()
                .unwrap()
                .contains("all 2 files saved"),
            "{}",
            run.stderr
        );
    }

    #[test]
    fn json_lines_name_their_file() {
        let (origins, _) = three();
        let dir = TempDir::new().unwrap();
        let urls: Vec<String> = ["/a.bin", "/b.bin", "/c.bin"]
            .iter()
            .zip(&origins)
            .map(|(path, origin)| origin.url(path))
            .collect();
        std::fs::write(dir.path().join("urls.txt"), urls.join("\n")).unwrap();
        let run = run(
            dir.path(),
            &["-i", "urls.txt", "-j", "3", "--progress", "json"],
        );
        assert_code(&run, 4);
        let lines: Vec<Value> = run
            .stderr
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
            .collect();
        let (last, events) = lines.split_last().unwrap();
        for event in events {
            let file = event["file"].as_str().unwrap_or_else(|| panic!("{event}"));
            assert!(urls.iter().any(|u| u == file), "{event}");
        }
        for url in &urls {
            assert!(events.iter().any(|e| e["file"] == url.as_str()), "{url}");
        }
        assert_eq!(last["event"], "batch_finished");
        assert_eq!(last["saved"], 2);
        assert_eq!(last["failed"], 1);
        assert_eq!(last["exit_code"], 4);
        assert_eq!(last["files"][2]["file"], urls[2].as_str());
        assert_eq!(last["files"][2]["ok"], false);
    }

    /// The issue's aria2 input file, which failed on its second line before: indented
    /// `key=value` lines set the download above them, and options shoal does not have are
    /// named in one warning.
    #[test]
    fn aria2_input_files_set_each_downloads_options() {
        let a = paced(random_bytes(1 << 20, 31));
        let b = Origin::start_blocking(OriginConfig {
            content: random_bytes(1 << 20, 32),
            required_header: Some(("x-token".into(), "abc".into())),
            ..OriginConfig::default()
        });
        let dir = TempDir::new().unwrap();
        let list = format!(
            "{}\n  out=list-a.bin\n{}\n  dir=sub\n  header=X-Token: abc\n  continue=true\n  \
             split=2\n  allow-overwrite=true\n",
            a.url("/a.bin"),
            b.url("/b.bin"),
        );
        std::fs::write(dir.path().join("urls.txt"), list).unwrap();
        let run = run(dir.path(), &["-i", "urls.txt", "-d", "out"]);
        assert_code(&run, 0);
        assert_saved(&dir.path().join("out/list-a.bin"), &a);
        assert_saved(&dir.path().join("sub/b.bin"), &b);
        let warnings: Vec<&str> = run
            .stderr
            .lines()
            .filter(|line| line.contains("warning"))
            .collect();
        assert_eq!(
            warnings,
            ["shoal: warning: urls.txt: ignoring options shoal does not have: allow-overwrite, continue"],
            "{}",
            run.stderr
        );
    }

    #[test]
    fn list_errors_are_usage_errors() {
        let dir = TempDir::new().unwrap();
        std::fs::write(dir.path().join("bad.txt"), "# ok\nftp://h/x\n").unwrap();
        let run = run(dir.path(), &["-i", "bad.txt"]);
        assert_code(&run, 2);
        assert!(run.stderr.contains("bad.txt: line 2"), "{}", run.stderr);
        std::fs::write(dir.path().join("empty.txt"), "# nothing\n").unwrap();
        let run = super::run(dir.path(), &["-i", "empty.txt"]);
        assert_code(&run, 2);
        assert!(run.stderr.contains("lists no URL"), "{}", run.stderr);
        let run = super::run(dir.path(), &["-i", "empty.txt", "-o", "x"]);
        assert_code(&run, 2);
        // Nothing listens on port 9: the clash is caught before any request.
        let clash = "http://127.0.0.1:9/a/f.iso\n# x\nhttp://127.0.0.1:9/b/f.iso\n";
        std::fs::write(dir.path().join("clash.txt"), clash).unwrap();
        let run = super::run(dir.path(), &["-i", "clash.txt", "-j", "2"]);
        assert_code(&run, 2);
        assert!(
            run.stderr
                .contains("lines 1 and 3 would both be saved as f.iso"),
            "{}",
            run.stderr
        );
    }

    #[test]
    fn ctrl_c_stops_every_job() {
        // 8 MiB per file at 256 KiB/s per connection over 2 connections: far past the signal.
        let slow = |seed| {
            Origin::start_blocking(OriginConfig {
                content: random_bytes(8 << 20, seed),
                rate_limit: Some(256 << 10),
                ..OriginConfig::default()
            })
        };
        let origins = [slow(40), slow(41), slow(42)];
        let dir = TempDir::new().unwrap();
        let list: Vec<String> = ["/a.bin", "/b.bin", "/c.bin"]
            .iter()
            .zip(&origins)
            .map(|(path, origin)| origin.url(path))
            .collect();
        std::fs::write(dir.path().join("urls.txt"), list.join("\n")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["get", "-i", "urls.txt", "-j", "2", "-c", "2"])
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shoal");
        // Signal once both running files are flowing, so the interrupt lands mid-download.
        let start = Instant::now();
        while origins[..2].iter().any(|o| o.bytes_sent() < 256 << 10) {
            assert!(start.elapsed() < DEADLINE, "no bytes sent to shoal");
            std::thread::sleep(Duration::from_millis(20));
        }
        let kill = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success());
        let run = finish(child);
        assert_code(&run, 130);
        // Both running downloads kept their resume state; the third never started.
        for name in ["a.bin", "b.bin"] {
            assert!(dir.path().join(format!("{name}.part")).exists(), "{name}");
        }
        assert_eq!(origins[2].requests().len(), 0);
        assert!(
            run.stderr.contains("not started: interrupted"),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr
                .lines()
                .last()
                .unwrap()
                .contains("3 of 3 files failed"),
            "{}",
            run.stderr
        );
    }
}
