//! `--log-format json` through the real binary: with `get --progress json -v` every line on
//! stderr, progress and logs alike, is one JSON object.

use tempfile::TempDir;

mod common;
use common::{free_port, run};

#[test]
fn json_logs_and_json_progress_share_stderr_line_by_line() {
    let dir = TempDir::new().unwrap();
    // Nothing listens there: retries are logged and reported, then the download fails.
    let url = format!("http://127.0.0.1:{}/f.bin", free_port());
    let out = run(
        dir.path(),
        &[
            "--log-format",
            "json",
            "-vv",
            "--progress",
            "json",
            "--max-tries",
            "2",
            &url,
        ],
    );
    assert_eq!(out.code, 3, "stderr:\n{}", out.stderr);
    let lines: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"].is_string()),
        "{}",
        out.stderr
    );
    assert_eq!(lines.last().unwrap()["event"], "error", "{}", out.stderr);
}

#[test]
fn text_is_the_default_and_progress_json_stays_quiet_without_v() {
    let dir = TempDir::new().unwrap();
    let url = format!("http://127.0.0.1:{}/f.bin", free_port());
    let out = run(
        dir.path(),
        &["--progress", "json", "--max-tries", "1", &url],
    );
    assert_eq!(out.code, 3, "stderr:\n{}", out.stderr);
    for line in out.stderr.lines() {
        let event: serde_json::Value = serde_json::from_str(line).expect(line);
        assert!(event["event"].is_string(), "only progress lines: {line}");
    }
}
