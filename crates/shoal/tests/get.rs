//! `shoal get` as users run it: the real binary against the test kit's origin, checking exit
//! codes, messages and the files left behind.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_testkit::{random_bytes, sha256_hex, Origin, OriginConfig};
use tempfile::TempDir;

mod common;
use common::{assert_code, assert_saved, finish, get, run, DEADLINE};

fn origin_with(content_len: usize, config: OriginConfig) -> Origin {
    Origin::start_blocking(OriginConfig {
        content: random_bytes(content_len, 7),
        ..config
    })
}

fn origin(content_len: usize) -> Origin {
    origin_with(content_len, OriginConfig::default())
}

mod usage {
    use super::*;

    /// Usage errors are caught before any request: this port has nothing listening.
    const URL: &str = "http://127.0.0.1:9/file.bin";

    fn usage_error(args: &[&str], message: &str) {
        let dir = TempDir::new().unwrap();
        let run = run(dir.path(), args);
        assert_code(&run, 2);
        assert!(
            run.stderr.contains(message),
            "{args:?}: expected {message:?} in:\n{}",
            run.stderr
        );
    }

    #[test]
    fn connections_out_of_range() {
        usage_error(
            &["-c", "0", URL],
            "connections must be between 1 and 1024, got 0",
        );
        usage_error(&["-c", "1025", URL], "between 1 and 1024, got 1025");
        usage_error(&["-c", "many", URL], "expected a number from 1 to 1024");
    }

    #[test]
    fn bad_checksum() {
        usage_error(&["--checksum", "sha256=abcd", URL], "64 hex digits");
        usage_error(
            &["--checksum", &format!("crc32={}", "0".repeat(8)), URL],
            "unknown checksum algorithm",
        );
        usage_error(&["--checksum", "deadbeef", URL], "expected ALGO=HEX");
    }

    #[test]
    fn bad_rate_and_sizes() {
        usage_error(&["--limit-rate", "fast", URL], "such as 500K or 20M");
        usage_error(&["--limit-rate", "0", URL], "--limit-rate");
        usage_error(&["--min-split", "100000", URL], "multiple of 64 KiB");
        usage_error(&["--stall-timeout", "0", URL], "positive number of seconds");
        usage_error(&["--max-tries", "0", URL], "--max-tries");
        usage_error(&["--max-wait", "0", URL], "such as 90, 30s, 10m or 1h");
    }

    #[test]
    fn bad_header_hides_its_value() {
        let dir = TempDir::new().unwrap();
        let run = run(dir.path(), &["-H", "Authorization Bearer s3cret", URL]);
        assert_code(&run, 2);
        assert!(run.stderr.contains("'Name: value'"), "{}", run.stderr);
        assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);
        usage_error(
            &["-H", "Bad Name: v", URL],
            "invalid -H header name \"Bad Name\"",
        );
    }

    #[test]
    fn bad_url() {
        usage_error(
            &["example.org/file.iso"],
            "invalid URL \"example.org/file.iso\"",
        );
        let dir = TempDir::new().unwrap();
        let run = run(dir.path(), &["ftp://bob:hunter2@example.org/file.iso"]);
        assert_code(&run, 2);
        assert!(
            run.stderr.contains("unsupported URL scheme \"ftp\""),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
    }

    #[test]
    fn output_conflicts_with_dir() {
        usage_error(&["-o", "a.bin", "-d", "out", URL], "cannot be used with");
    }

    #[test]
    fn quiet_conflicts_with_progress() {
        usage_error(&["-q", "--progress", "json", URL], "cannot be used with");
    }

    #[test]
    fn help_is_success() {
        let dir = TempDir::new().unwrap();
        let run = run(dir.path(), &["--help"]);
        assert_code(&run, 0);
        assert!(run.stdout.contains("--limit-rate"), "{}", run.stdout);
    }
}

mod download {
    use super::*;

    #[test]
    fn saves_to_output_path() {
        let origin = origin(3 << 20);
        let dir = TempDir::new().unwrap();
        let run = run(dir.path(), &["-o", "out.bin", &origin.url("/file.bin")]);
        assert_code(&run, 0);
        assert_saved(&dir.path().join("out.bin"), &origin);
        assert!(!dir.path().join("out.bin.part").exists());
        assert!(
            run.stderr.contains("saved out.bin: 3.00 MiB in "),
            "{}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }

    #[test]
    fn names_the_file_from_the_url_in_dir() {
        let origin = origin(1 << 20);
        let dir = TempDir::new().unwrap();
        std::fs::create_dir(dir.path().join("downloads")).unwrap();
        let run = run(
            dir.path(),
            &["-d", "downloads", &origin.url("/pub/disk%20image.iso")],
        );
        assert_code(&run, 0);
        let saved = dir.path().join("downloads/disk image.iso");
        assert_saved(&saved, &origin);
        assert!(run.stderr.contains("disk image.iso"), "{}", run.stderr);
    }

    #[test]
    fn default_dir_is_the_current_one() {
        let origin = origin(256 << 10);
        let dir = TempDir::new().unwrap();
        let run = run(dir.path(), &[&origin.url("/here.bin")]);
        assert_code(&run, 0);
        assert_saved(&dir.path().join("here.bin"), &origin);
    }

    #[test]
    fn existing_output_is_refused_and_untouched() {
        let origin = origin(1 << 20);
        let dir = TempDir::new().unwrap();
        std::fs::write(dir.path().join("out.bin"), b"precious").unwrap();
        let run = run(dir.path(), &["-o", "out.bin", &origin.url("/file.bin")]);
        assert_code(&run, 7);
        assert!(
            run.stderr.contains("out.bin already exists"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("--overwrite"), "{}", run.stderr);
        assert_eq!(
            std::fs::read(dir.path().join("out.bin")).unwrap(),
            b"precious"
        );
    }

    #[test]
    fn overwrite_replaces_existing_output() {
        let origin = origin(1 << 20);
        let dir = TempDir::new().unwrap();
        std::fs::write(dir.path().join("out.bin"), b"old").unwrap();
        let run = run(
            dir.path(),
            &["--overwrite", "-o", "out.bin", &origin.url("/file.bin")],
        );
        assert_code(&run, 0);
        assert_saved(&dir.path().join("out.bin"), &origin);
    }

    #[test]
    fn not_found_is_http_error_naming_the_url() {
        let origin = origin_with(
            1024,
            OriginConfig {
                status: Some(404),
                ..Default::default()
            },
        );
        let dir = TempDir::new().unwrap();
        let url = origin.url("/missing.bin");
        let run = run(dir.path(), &["-o", "out.bin", &url]);
        assert_code(&run, 4);
        assert!(run.stderr.contains(&url), "{}", run.stderr);
        assert!(run.stderr.contains("404"), "{}", run.stderr);
        assert!(run.stderr.starts_with("shoal: "), "{}", run.stderr);
        assert!(!dir.path().join("out.bin").exists());
    }

    #[test]
    fn connection_refused_is_network_error() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = TempDir::new().unwrap();
        let url = format!("http://127.0.0.1:{port}/file.bin");
        let run = run(dir.path(), &["--max-tries", "2", "-o", "out.bin", &url]);
        assert_code(&run, 3);
        assert!(run.stderr.contains(&url), "{}", run.stderr);
    }

    #[test]
    fn checksum_mismatch_keeps_the_part_file() {
        let origin = origin(1 << 20);
        let dir = TempDir::new().unwrap();
        let wrong = format!("sha256={}", "0".repeat(64));
        let run = run(
            dir.path(),
            &[
                "--checksum",
                &wrong,
                "-o",
                "out.bin",
                &origin.url("/file.bin"),
            ],
        );
        assert_code(&run, 5);
        assert!(run.stderr.contains("checksum mismatch"), "{}", run.stderr);
        assert!(!dir.path().join("out.bin").exists());
        assert!(dir.path().join("out.bin.part").exists());
    }

    #[test]
    fn matching_checksum_succeeds() {
        let origin = origin(1 << 20);
        let dir = TempDir::new().unwrap();
        let sum = format!("sha256={}", sha256_hex(&origin.content()));
        let run = run(
            dir.path(),
            &["--checksum", &sum, "-o", "out.bin", &origin.url("/f")],
        );
        assert_code(&run, 0);
        assert_saved(&dir.path().join("out.bin"), &origin);
    }

    #[test]
    fn json_progress_is_one_object_per_line() {
        let origin = origin(2 << 20);
        let dir = TempDir::new().unwrap();
        let sum = format!("sha256={}", sha256_hex(&origin.content()));
        let run = run(
            dir.path(),
            &[
                "--progress",
                "json",
                "--checksum",
                &sum,
                "-o",
                "out.bin",
                &origin.url("/f"),
            ],
        );
        assert_code(&run, 0);
        let events: Vec<Value> = run
            .stderr
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
            .collect();
        let names: Vec<&str> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(names.first(), Some(&"started"), "{names:?}");
        assert_eq!(names.last(), Some(&"finished"), "{names:?}");
        assert!(names.contains(&"verifying"), "{names:?}");
        let started = &events[0];
        assert_eq!(started["size"], 2 << 20);
        assert_eq!(started["ranges"], true);
        let finished = events.last().unwrap();
        assert_eq!(finished["size"], 2 << 20);
        assert!(finished["path"].as_str().unwrap().ends_with("out.bin"));
        for progress in events.iter().filter(|e| e["event"] == "progress") {
            assert!(progress["done"].as_u64().unwrap() <= 2 << 20, "{progress}");
        }
    }

    #[test]
    fn json_reports_errors_as_json() {
        let origin = origin_with(
            1024,
            OriginConfig {
                status: Some(404),
                ..Default::default()
            },
        );
        let dir = TempDir::new().unwrap();
        let run = run(dir.path(), &["--progress", "json", &origin.url("/gone")]);
        assert_code(&run, 4);
        let last: Value = serde_json::from_str(run.stderr.lines().last().unwrap()).unwrap();
        assert_eq!(last["event"], "error");
        assert_eq!(last["kind"], "http_status");
        assert_eq!(last["exit_code"], 4);
    }

    #[test]
    fn quiet_prints_nothing_on_success() {
        let origin = origin(1 << 20);
        let dir = TempDir::new().unwrap();
        let run = run(
            dir.path(),
            &["-q", "-o", "out.bin", &origin.url("/file.bin")],
        );
        assert_code(&run, 0);
        assert_eq!(run.stderr, "");
        assert_eq!(run.stdout, "");
        assert!(dir.path().join("out.bin").exists());
    }

    #[test]
    fn headers_user_agent_and_connections_reach_the_server() {
        let origin = origin_with(
            512 << 10,
            OriginConfig {
                required_header: Some(("X-Token".into(), "abc 123".into())),
                ..Default::default()
            },
        );
        let dir = TempDir::new().unwrap();
        let args = [
            "-H",
            "X-Token: abc 123",
            "--user-agent",
            "tester/1",
            "-c",
            "1",
            "-o",
            "out.bin",
        ];
        let url = origin.url("/file.bin");
        let run = run(dir.path(), &[&args[..], &[url.as_str()]].concat());
        assert_code(&run, 0);
        let requests = origin.requests();
        assert!(!requests.is_empty());
        for request in &requests {
            assert_eq!(request.headers["user-agent"], "tester/1");
        }
        assert_eq!(
            origin.connections(),
            1,
            "-c 1 used more than one connection"
        );
    }

    #[test]
    fn credentials_never_printed() {
        let origin = origin_with(
            256 << 10,
            OriginConfig {
                basic_auth: Some(("alice".into(), "hunter2".into())),
                ..Default::default()
            },
        );
        let dir = TempDir::new().unwrap();
        let url = origin.url("/file.bin").replace("://", "://alice:hunter2@");
        let run = run(
            dir.path(),
            &["-vv", "--progress", "json", "-o", "out.bin", &url],
        );
        assert_code(&run, 0);
        assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
    }

    #[test]
    fn insecure_accepts_a_self_signed_certificate() {
        let origin = origin_with(
            256 << 10,
            OriginConfig {
                tls: true,
                ..Default::default()
            },
        );
        let dir = TempDir::new().unwrap();
        let url = origin.url("/file.bin");
        let run = run(dir.path(), &["--max-tries", "1", "-o", "strict.bin", &url]);
        assert_code(&run, 3);
        let run = super::run(dir.path(), &["-k", "-o", "out.bin", &url]);
        assert_code(&run, 0);
        assert_saved(&dir.path().join("out.bin"), &origin);
    }

    #[test]
    fn unwritable_output_is_local_io_error() {
        let origin = origin(256 << 10);
        let dir = TempDir::new().unwrap();
        // A path under a regular file cannot be created, even by root.
        std::fs::write(dir.path().join("plain"), b"").unwrap();
        let run = run(
            dir.path(),
            &["-o", "plain/out.bin", &origin.url("/file.bin")],
        );
        assert_code(&run, 6);
        assert!(run.stderr.contains("plain/out.bin"), "{}", run.stderr);
    }

    #[test]
    fn sigint_interrupts_with_exit_130() {
        interrupts_with("-INT");
    }

    #[test]
    fn sigterm_interrupts_with_exit_130() {
        interrupts_with("-TERM");
    }

    #[test]
    fn max_wait_ends_an_origin_outage_with_what_is_missing_and_the_network_code() {
        // 4 MiB at 256 KiB/s per connection over 2 connections: still running when it dies.
        let origin = origin_with(
            4 << 20,
            OriginConfig {
                rate_limit: Some(256 << 10),
                ..Default::default()
            },
        );
        let dir = TempDir::new().unwrap();
        let url = origin.url("/file.bin");
        let args = [
            "-c",
            "2",
            "--max-tries",
            "2",
            "--max-wait",
            "2s",
            "-o",
            "out.bin",
            &url,
        ];
        let child = get(dir.path(), &args).spawn().expect("spawn shoal");
        let start = Instant::now();
        while origin.bytes_sent() < 1 << 20 {
            assert!(start.elapsed() < DEADLINE, "no bytes sent to shoal");
            std::thread::sleep(Duration::from_millis(20));
        }
        origin.go_down();
        let run = finish(child);
        assert_code(&run, 3);
        let said = format!("{url}: no source sent anything for 2s, and ");
        assert!(run.stderr.contains(&said), "{}", run.stderr);
        assert!(run.stderr.contains("4.0 MiB (bytes "), "{}", run.stderr);
        assert!(
            run.stderr.contains(
                "still missing (last failure: {url}: could not connect"
                    .replace("{url}", &url)
                    .as_str()
            ),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains(
                "what arrived is kept: run the same command again to resume, or allow a longer \
                 --max-wait"
            ),
            "{}",
            run.stderr
        );
        assert!(dir.path().join("out.bin.part").exists());
        assert!(!dir.path().join("out.bin").exists());
    }

    fn interrupts_with(signal: &str) {
        // 8 MiB at 256 KiB/s per connection over 2 connections: about 16 s, far past the signal.
        let origin = origin_with(
            8 << 20,
            OriginConfig {
                rate_limit: Some(256 << 10),
                ..Default::default()
            },
        );
        let dir = TempDir::new().unwrap();
        let child = get(
            dir.path(),
            &["-c", "2", "-o", "out.bin", &origin.url("/file.bin")],
        )
        .spawn()
        .expect("spawn shoal");
        // Signal once bytes are flowing, so the interrupt lands mid-download.
        let start = Instant::now();
        while origin.bytes_sent() < 256 << 10 {
            assert!(start.elapsed() < DEADLINE, "no bytes sent to shoal");
            std::thread::sleep(Duration::from_millis(20));
        }
        let kill = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success());
        let run = finish(child);
        assert_code(&run, 130);
        assert!(
            run.stderr
                .contains("shoal: interrupted: run the same command again to resume"),
            "{}",
            run.stderr
        );
        assert!(!dir.path().join("out.bin").exists());
    }
}

/// `Authorization`, `Cookie` and URL credentials go only to the origin the user named, as
/// curl's; `--location-trusted` opts in to other origins, never over a downgrade to http.
mod credentials {
    use super::*;

    /// Whether a request carried `Authorization` and `Cookie`.
    type Carried = (bool, bool);

    /// What each origin saw, one pair per request, and what shoal printed.
    struct Seen {
        front: Vec<Carried>,
        back: Vec<Carried>,
        stderr: String,
    }

    /// Runs `shoal get` with credentials on `front`'s URL, which redirects to another origin.
    fn through_redirect(front: OriginConfig, extra: &[&str]) -> Seen {
        let back = origin(4 << 20);
        let front = Origin::start_blocking(OriginConfig {
            redirect_to: Some(back.url("/f.bin")),
            ..front
        });
        let dir = TempDir::new().unwrap();
        let mut args = vec!["-H", "Authorization: Bearer s3cret", "-H", "Cookie: c=1"];
        args.extend_from_slice(extra);
        let url = front.url("/f.bin").replace("://", "://user:pw@");
        args.extend_from_slice(&["-c", "4", "-o", "out.bin", &url]);
        let run = run(dir.path(), &args);
        assert_code(&run, 0);
        assert_saved(&dir.path().join("out.bin"), &back);
        let seen = |o: &Origin| {
            o.requests()
                .iter()
                .map(|r| {
                    (
                        r.headers.contains_key("authorization"),
                        r.headers.contains_key("cookie"),
                    )
                })
                .collect::<Vec<_>>()
        };
        Seen {
            front: seen(&front),
            back: seen(&back),
            stderr: run.stderr,
        }
    }

    #[test]
    fn stay_on_the_origin_named() {
        let Seen { front, back, .. } = through_redirect(OriginConfig::default(), &[]);
        assert!(
            !front.is_empty() && front.iter().all(|&s| s == (true, true)),
            "{front:?}"
        );
        assert!(
            back.len() > 1,
            "range requests went to the redirect's target: {back:?}"
        );
        assert!(back.iter().all(|&s| s == (false, false)), "{back:?}");
    }

    #[test]
    fn location_trusted_sends_them_on() {
        let Seen { back, .. } = through_redirect(OriginConfig::default(), &["--location-trusted"]);
        assert!(
            back.len() > 1 && back.iter().all(|&s| s == (true, true)),
            "{back:?}"
        );
    }

    #[test]
    fn never_over_a_downgrade_to_http() {
        let tls = OriginConfig {
            tls: true,
            ..OriginConfig::default()
        };
        let Seen {
            front,
            back,
            stderr,
        } = through_redirect(tls, &["-k", "--location-trusted"]);
        assert!(front.iter().all(|&s| s == (true, true)), "{front:?}");
        assert!(back.iter().all(|&s| s == (false, false)), "{back:?}");
        assert!(stderr.contains("from https to plain http"), "{stderr}");
        assert!(
            !stderr.contains("s3cret") && !stderr.contains("pw@"),
            "{stderr}"
        );
    }

    #[test]
    fn url_credentials_follow_same_origin_redirects() {
        let origin = origin_with(
            1 << 20,
            OriginConfig {
                redirects: 2,
                basic_auth: Some(("user".into(), "pw".into())),
                ..OriginConfig::default()
            },
        );
        let dir = TempDir::new().unwrap();
        let url = origin.url("/f.bin").replace("://", "://user:pw@");
        let run = run(dir.path(), &["-o", "out.bin", &url]);
        assert_code(&run, 0);
        assert_saved(&dir.path().join("out.bin"), &origin);
    }
}

/// `--max-filesize`: a file announced larger is refused before a byte is written; a stream of
/// unknown length is stopped as soon as it passes the limit.
mod max_filesize {
    use super::*;

    #[test]
    fn an_announced_size_over_the_limit_is_refused_up_front() {
        let origin = origin(2 << 20);
        let dir = TempDir::new().unwrap();
        let url = origin.url("/f.bin");
        let run = run(dir.path(), &["--max-filesize", "1M", &url]);
        assert_code(&run, 6);
        let message =
            format!("{url}: serves 2097152 bytes, more than --max-filesize allows (1048576 bytes)");
        assert!(run.stderr.contains(&message), "{}", run.stderr);
        assert!(!dir.path().join("f.bin.part").exists());
        assert!(!dir.path().join("f.bin").exists());
        let run = super::run(dir.path(), &["--max-filesize", "2M", &url]);
        assert_code(&run, 0);
    }

    #[test]
    fn a_stream_of_unknown_length_is_stopped_at_the_limit() {
        let origin = origin_with(
            8 << 20,
            OriginConfig {
                content_length: false,
                rate_limit: Some(2 << 20),
                ..OriginConfig::default()
            },
        );
        let dir = TempDir::new().unwrap();
        let url = origin.url("/f.bin");
        let run = run(dir.path(), &["--max-filesize", "1M", &url]);
        assert_code(&run, 6);
        let message = format!("{url}: sent more than --max-filesize allows (1048576 bytes)");
        assert!(run.stderr.contains(&message), "{}", run.stderr);
        assert!(
            origin.bytes_sent() < 4 << 20,
            "sent {}",
            origin.bytes_sent()
        );
        let part = std::fs::metadata(dir.path().join("f.bin.part")).unwrap();
        assert!(part.len() <= 1 << 20, "{} bytes written", part.len());
        assert!(!dir.path().join("f.bin").exists());
    }
}
