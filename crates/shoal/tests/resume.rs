//! Crash-safe resume as users meet it: the real `shoal get` killed with SIGKILL at random
//! moments, interrupted with SIGINT and SIGTERM, facing damaged state files and a file that
//! changed on the server, and run again with the same command.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shoal_core::Bitfield;
use shoal_engine::resume::{self, State};
use shoal_engine::BLOCK;
use shoal_testkit::{random_bytes, sha256_hex, Origin, OriginConfig};
use tempfile::TempDir;
use url::Url;

mod common;
use common::{finish, Finished, DEADLINE};

/// Far longer than any of these downloads takes; only a hung binary reaches it.
const CONNS: u64 = 4;

fn get(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = common::get(
        dir,
        &[
            "-c",
            &CONNS.to_string(),
            "--min-split",
            "256K",
            "-o",
            "f.bin",
        ],
    );
    cmd.args(args);
    cmd
}

fn run(dir: &Path, args: &[&str]) -> Finished {
    finish(get(dir, args).spawn().expect("spawn shoal"))
}

fn assert_ok(run: &Finished) {
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
}

fn throttled(content: &[u8], per_connection: u64) -> Origin {
    Origin::start_blocking(OriginConfig {
        content: content.to_vec().into(),
        rate_limit: Some(per_connection),
        ..OriginConfig::default()
    })
}

fn out(dir: &TempDir) -> PathBuf {
    dir.path().join("f.bin")
}

fn part(dir: &TempDir) -> PathBuf {
    dir.path().join("f.bin.part")
}

fn state(dir: &TempDir) -> PathBuf {
    dir.path().join("f.bin.part.shoal")
}

fn assert_complete(dir: &TempDir, content: &[u8]) {
    let bytes = std::fs::read(out(dir)).expect("the file is in place");
    assert_eq!(sha256_hex(&bytes), sha256_hex(content));
    assert!(!part(dir).exists() && !state(dir).exists(), "nothing left");
}

/// Waits until the origin has sent at least `bytes` in total.
fn wait_for_bytes(origin: &Origin, bytes: u64) {
    let start = Instant::now();
    while origin.bytes_sent() < bytes {
        assert!(start.elapsed() < DEADLINE, "no bytes sent to shoal");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// splitmix64: reproducible "random" moments without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

#[test]
fn kill_9_at_ten_random_moments_then_resume() {
    // 4 MiB at 128 KiB/s per connection over 4 connections: about 8 s of transfer, spread
    // over the ten killed runs and the last one.
    let content = random_bytes(4 << 20, 51);
    let size = content.len() as u64;
    let origin = throttled(&content, 128 << 10);
    let url = origin.url("/f.bin");
    let dir = TempDir::new().unwrap();
    let mut rng = Rng(0x5eed);
    let kills = 10;
    for i in 0..kills {
        let child = get(dir.path(), &[&url]).spawn().expect("spawn shoal");
        let moment = Duration::from_millis(200 + rng.below(700));
        std::thread::sleep(moment);
        let mut child = child;
        child.kill().expect("SIGKILL");
        let status = child.wait().unwrap();
        assert!(status.code().is_none(), "run {i} was killed, not finished");
        // Whatever is on disk now must be a valid state or none at all.
        if let Err(damaged) = resume::load(&state(&dir)) {
            panic!("run {i}: kill -9 left a damaged state: {damaged}");
        }
    }
    assert!(!out(&dir).exists());
    let last = run(dir.path(), &[&url]);
    assert_ok(&last);
    assert!(last.stderr.contains("resuming: "), "{}", last.stderr);
    assert_complete(&dir, &content);
    let served = origin.bytes_sent();
    let bound = size + kills * CONNS * 2 * BLOCK;
    eprintln!(
        "served {served} bytes for {size} over {kills} kills: {:.1} KiB re-fetched per kill",
        (served - size) as f64 / kills as f64 / 1024.0
    );
    assert!(
        served <= bound,
        "the origin served {served} bytes for a {size}-byte file over {kills} kills (bound {bound})"
    );
}

#[test]
fn sigint_and_sigterm_flush_state_then_the_same_command_resumes() {
    for name in ["-INT", "-TERM"] {
        let content = random_bytes(4 << 20, 52);
        let origin = throttled(&content, 256 << 10);
        let url = origin.url("/f.bin");
        let dir = TempDir::new().unwrap();
        let child = get(dir.path(), &[&url]).spawn().unwrap();
        wait_for_bytes(&origin, 1 << 20);
        common::signal(&child, name);
        let stopped = finish(child);
        assert_eq!(stopped.code, 130, "{name}: {}", stopped.stderr);
        assert!(
            stopped
                .stderr
                .contains("interrupted: run the same command again to resume"),
            "{}",
            stopped.stderr
        );
        let saved = resume::load(&state(&dir)).unwrap().expect("state kept");
        let done = u64::from(saved.done.count_ones()) * BLOCK;
        assert!(
            done >= 1 << 19,
            "{name}: the flushed state holds the work: {done}"
        );
        let served_before = origin.bytes_sent();

        let again = run(dir.path(), &[&url]);
        assert_ok(&again);
        assert!(again.stderr.contains("resuming: "), "{}", again.stderr);
        assert_complete(&dir, &content);
        // A clean stop flushes every buffer before its final state: next to nothing is
        // fetched twice.
        let served = origin.bytes_sent();
        assert!(
            served <= content.len() as u64 + CONNS * 2 * BLOCK,
            "{name}: served {served} ({served_before} before the resume)"
        );
    }
}

#[test]
fn second_ctrl_c_exits_at_once_with_a_valid_state() {
    let content = random_bytes(4 << 20, 53);
    let origin = throttled(&content, 256 << 10);
    let url = origin.url("/f.bin");
    let dir = TempDir::new().unwrap();
    let child = get(dir.path(), &[&url]).spawn().unwrap();
    wait_for_bytes(&origin, 1 << 20);
    common::signal(&child, "-INT");
    common::signal(&child, "-INT");
    let stopped = finish(child);
    assert_eq!(stopped.code, 130, "{}", stopped.stderr);
    if let Err(damaged) = resume::load(&state(&dir)) {
        panic!("the state after a second Ctrl-C is damaged: {damaged}");
    }
    assert_ok(&run(dir.path(), &[&url]));
    assert_complete(&dir, &content);
}

#[test]
fn file_changed_between_runs_is_never_spliced() {
    let old = random_bytes(4 << 20, 54);
    let new = random_bytes(4 << 20, 55);
    let origin = throttled(&old, 256 << 10);
    let url = origin.url("/f.bin");
    let dir = TempDir::new().unwrap();
    let mut child = get(dir.path(), &[&url]).spawn().unwrap();
    wait_for_bytes(&origin, 1 << 20);
    // Past the first checkpoint, so there is a state that names old blocks.
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(resume::load(&state(&dir)).unwrap().is_some());
    origin.set_content(new.clone());
    let again = run(dir.path(), &[&url]);
    assert_ok(&again);
    assert!(
        again
            .stderr
            .contains("shoal: the file on the server changed (ETag"),
        "{}",
        again.stderr
    );
    assert!(again.stderr.contains("starting"), "{}", again.stderr);
    assert_complete(&dir, &new);
}

/// A `.part` holding the first half of `content`, garbage elsewhere, and a state saying the
/// first half is done: what an interrupted run leaves.
fn lay_down(origin: &Origin, url: &str, dir: &TempDir, content: &[u8]) {
    let size = content.len() as u64;
    let blocks = size.div_ceil(BLOCK) as u32;
    let mut bytes = vec![0x55u8; content.len()];
    let half = (u64::from(blocks / 2) * BLOCK) as usize;
    bytes[..half].copy_from_slice(&content[..half]);
    std::fs::write(part(dir), &bytes).unwrap();
    let mut done = Bitfield::new(blocks);
    for b in 0..blocks / 2 {
        done.set(b);
    }
    resume::save(
        &state(dir),
        &State {
            url_hash: resume::url_hash(&Url::parse(url).unwrap()),
            size,
            block: BLOCK,
            etag: origin.etag(),
            last_modified: origin.last_modified(),
            done,
        },
    )
    .unwrap();
}

#[test]
fn damaged_states_are_reported_in_one_line_and_never_trusted() {
    let content = random_bytes(2 << 20, 56);
    let origin = Origin::start_blocking(OriginConfig {
        content: content.clone(),
        ..OriginConfig::default()
    });
    let url = origin.url("/f.bin");
    type Damage = fn(&TempDir);
    let cases: [(&str, Damage, &str); 5] = [
        (
            "truncated",
            |d| {
                let bytes = std::fs::read(state(d)).unwrap();
                std::fs::write(state(d), &bytes[..20]).unwrap();
            },
            "f.bin.part.shoal is truncated (20 bytes); starting over",
        ),
        (
            "random bytes",
            |d| std::fs::write(state(d), random_bytes(500, 1)).unwrap(),
            "f.bin.part.shoal is not a shoal state file; starting over",
        ),
        (
            "wrong version",
            |d| {
                let mut bytes = std::fs::read(state(d)).unwrap();
                bytes[8..12].copy_from_slice(&9u32.to_le_bytes());
                std::fs::write(state(d), &bytes).unwrap();
            },
            "has format version 9; this shoal reads version 1; starting over",
        ),
        (
            "state without its part",
            |d| std::fs::remove_file(part(d)).unwrap(),
            "has no ",
        ),
        (
            "part shorter than recorded",
            |d| {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(part(d))
                    .unwrap();
                file.set_len(1000).unwrap();
            },
            "f.bin.part is 1000 bytes, not the 2097152 its resume state records; starting over",
        ),
    ];
    for (what, damage, expected) in cases {
        let dir = TempDir::new().unwrap();
        lay_down(&origin, &url, &dir, &content);
        damage(&dir);
        let again = run(dir.path(), &[&url]);
        assert_ok(&again);
        let lines: Vec<&str> = again
            .stderr
            .lines()
            .filter(|l| l.contains("starting over"))
            .collect();
        assert_eq!(lines.len(), 1, "{what}: one line:\n{}", again.stderr);
        assert!(lines[0].starts_with("shoal: "), "{what}: {}", lines[0]);
        assert!(lines[0].contains(expected), "{what}: {}", lines[0]);
        assert_complete(&dir, &content);
    }
}

#[test]
fn no_resume_starts_over_and_unvalidated_resume_says_so() {
    let content = random_bytes(2 << 20, 57);
    let origin = Origin::start_blocking(OriginConfig {
        content: content.clone(),
        etag: false,
        last_modified: false,
        ..OriginConfig::default()
    });
    let url = origin.url("/f.bin");
    let dir = TempDir::new().unwrap();

    lay_down(&origin, &url, &dir, &content);
    let unverified = run(dir.path(), &[&url]);
    assert_ok(&unverified);
    assert!(
        unverified.stderr.contains("resuming: 1.00 MiB of 2.00 MiB")
            && unverified.stderr.contains("unverified")
            && unverified.stderr.contains("--checksum"),
        "{}",
        unverified.stderr
    );
    assert_complete(&dir, &content);

    std::fs::remove_file(out(&dir)).unwrap();
    lay_down(&origin, &url, &dir, &content);
    let checksum = format!("sha256={}", sha256_hex(&content));
    let checked = run(dir.path(), &["--checksum", &checksum, &url]);
    assert_ok(&checked);
    assert!(
        checked.stderr.contains("resuming: ") && !checked.stderr.contains("unverified"),
        "{}",
        checked.stderr
    );
    assert_complete(&dir, &content);

    std::fs::remove_file(out(&dir)).unwrap();
    lay_down(&origin, &url, &dir, &content);
    let before = origin.bytes_sent();
    let fresh = run(dir.path(), &["--no-resume", &url]);
    assert_ok(&fresh);
    assert!(!fresh.stderr.contains("resuming"), "{}", fresh.stderr);
    assert!(origin.bytes_sent() - before >= content.len() as u64);
    assert_complete(&dir, &content);
}

#[test]
fn without_validators_a_file_changed_between_runs_is_caught_by_a_sample() {
    let old = random_bytes(2 << 20, 62);
    let new = random_bytes(2 << 20, 63);
    let origin = Origin::start_blocking(OriginConfig {
        content: old.clone(),
        etag: false,
        last_modified: false,
        ..OriginConfig::default()
    });
    let url = origin.url("/f.bin");
    let dir = TempDir::new().unwrap();
    lay_down(&origin, &url, &dir, &old);
    // Same size and no validator: only the bytes tell the versions apart.
    origin.set_content(new.clone());
    let again = run(dir.path(), &[&url]);
    assert_ok(&again);
    let lines: Vec<&str> = again
        .stderr
        .lines()
        .filter(|l| l.contains("starting over"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", again.stderr);
    assert!(
        lines[0].starts_with("shoal: ")
            && lines[0].contains("f.bin.part: ")
            && lines[0].contains(&format!("{url} sends other bytes at bytes 983040-1048575"))
            && lines[0].contains("no ETag or Last-Modified"),
        "{}",
        lines[0]
    );
    assert!(!again.stderr.contains("resuming"), "{}", again.stderr);
    assert_complete(&dir, &new);
}

/// A small tmpfs mounted on a temporary directory for one test, unmounted when dropped (even
/// when the test fails).
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// `None` where mounting is not allowed (not root, or no CAP_SYS_ADMIN), after a `SKIP:`
    /// line naming `test`: nextest shows these tests' output even when they pass
    /// (`.config/nextest.toml`) and `scripts/test` lists the skips in its summary.
    fn mount(test: &str, size: &str) -> Option<Tmpfs> {
        let dir = TempDir::new().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("SKIP: {test}: needs root (CAP_SYS_ADMIN) to mount a small tmpfs");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fills the file system holding `path` until it is full; returns how much it wrote.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    let mut written = 0;
    // Bounded by the file system's size.
    while file.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    // The last partial chunk may have landed; whatever fits a page more does too.
    while file.write_all(&[0u8; 512]).is_ok() {
        written += 512;
    }
    written
}

#[test]
fn disk_full_up_front_names_the_space_needed() {
    let Some(fs) = Tmpfs::mount("disk_full_up_front_names_the_space_needed", "4m") else {
        return;
    };
    let content = random_bytes(6 << 20, 58);
    let origin = throttled(&content, 64 << 20);
    let url = origin.url("/f.bin");
    let full = finish(get(fs.path(), &[&url]).spawn().unwrap());
    assert_eq!(full.code, 6, "{}", full.stderr);
    assert!(
        full.stderr
            .contains("f.bin.part: the disk is full: 6.0 MiB more needed (")
            && full.stderr.contains("run the same command again"),
        "{}",
        full.stderr
    );
    assert!(
        !fs.path().join("f.bin.part").exists(),
        "nothing half-made left"
    );
}

#[test]
fn disk_full_mid_download_keeps_the_state_and_resumes_once_space_is_freed() {
    let Some(fs) = Tmpfs::mount(
        "disk_full_mid_download_keeps_the_state_and_resumes_once_space_is_freed",
        "16m",
    ) else {
        return;
    };
    let content = random_bytes(8 << 20, 59);
    let origin = throttled(&content, 512 << 10);
    let url = origin.url("/f.bin");
    let child = get(fs.path(), &[&url]).spawn().unwrap();
    let state_path = fs.path().join("f.bin.part.shoal");
    let start = Instant::now();
    while !state_path.exists() {
        assert!(start.elapsed() < DEADLINE, "no state saved");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The .part is reserved in full; what fills the disk now is the next state save.
    let filler = fs.path().join("filler");
    fill(&filler);
    let full = finish(child);
    assert_eq!(full.code, 6, "{}", full.stderr);
    assert!(
        full.stderr.contains("f.bin.part.shoal: the disk is full: ")
            && full.stderr.contains("more needed (")
            && full
                .stderr
                .contains("run the same command again to continue"),
        "{}",
        full.stderr
    );
    let saved = resume::load(&state_path)
        .expect("the state on a full disk is still valid")
        .expect("and still there");
    assert!(saved.done.count_ones() > 0);

    std::fs::remove_file(&filler).unwrap();
    let again = run(fs.path(), &[&url]);
    assert_ok(&again);
    assert!(again.stderr.contains("resuming: "), "{}", again.stderr);
    let bytes = std::fs::read(fs.path().join("f.bin")).unwrap();
    assert_eq!(sha256_hex(&bytes), sha256_hex(&content));
    let left: Vec<_> = std::fs::read_dir(fs.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the file is left: {left:?}");
}

#[test]
fn file_changed_mid_download_starts_over_once_and_says_so_in_json() {
    let new = random_bytes(2 << 20, 61);
    let origin = Origin::start_blocking(OriginConfig {
        content: random_bytes(2 << 20, 60),
        rate_limit: Some(1 << 20),
        // The probe sees the old file, every later request the new one: If-Range answers 200.
        etag_changes_after: Some(1),
        content_after: new.clone(),
        ..OriginConfig::default()
    });
    let url = origin.url("/f.bin");
    let dir = TempDir::new().unwrap();
    let changed = run(dir.path(), &["--progress", "json", &url]);
    assert_ok(&changed);
    let restarted: Vec<serde_json::Value> = changed
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["event"] == "restarted")
        .collect();
    assert_eq!(restarted.len(), 1, "{}", changed.stderr);
    let reason = restarted[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("changed while downloading") && reason.contains("f.bin.part"),
        "{reason}"
    );
    assert_complete(&dir, &new);
}

#[test]
fn a_second_run_on_the_same_target_is_refused_until_the_first_exits() {
    let content = random_bytes(2 << 20, 53);
    let origin = throttled(&content, 128 << 10);
    let url = origin.url("/f.bin");
    let dir = TempDir::new().unwrap();
    let first = get(dir.path(), &[&url]).spawn().expect("spawn shoal");
    wait_for_bytes(&origin, 128 << 10);
    let second = run(dir.path(), &[&url]);
    assert_eq!(second.code, 6, "stderr:\n{}", second.stderr);
    let message = "another shoal is writing f.bin.part; wait for it or choose another name";
    assert!(second.stderr.contains(message), "{}", second.stderr);
    assert_ok(&finish(first));
    assert_complete(&dir, &content);

    // The lock dies with its process: a run killed mid-way is continued by the next.
    std::fs::remove_file(out(&dir)).unwrap();
    let mut killed = get(dir.path(), &[&url]).spawn().expect("spawn shoal");
    let start = Instant::now();
    while !state(&dir).exists() {
        assert!(start.elapsed() < DEADLINE, "no resume state written");
        std::thread::sleep(Duration::from_millis(10));
    }
    killed.kill().expect("SIGKILL");
    killed.wait().unwrap();
    let again = run(dir.path(), &[&url]);
    assert_ok(&again);
    assert!(again.stderr.contains("resuming: "), "{}", again.stderr);
    assert_complete(&dir, &content);
}
