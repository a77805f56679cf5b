//! What `dist/` gives a machine running systemd: the example configurations load through the
//! real binary, and the service units pass `systemd-analyze verify`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

mod common;
use common::{finish, Finished};

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist")
}

fn shoal(args: &[&str]) -> Finished {
    let mut cmd = common::shoal(args);
    finish(cmd.spawn().expect("spawn shoal"))
}

/// Present when `program --version` runs.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn example_configs_load_and_every_key_counts() {
    for daemon in ["agent", "tracker"] {
        let path = dist().join(format!("{daemon}.toml"));
        let path = path.to_str().unwrap();
        let out = shoal(&[daemon, "--config", path, "--print-config"]);
        assert_eq!(out.code, 0, "{path}: {}", out.stderr);
        let text = std::fs::read_to_string(path).unwrap();
        let keys = text
            .lines()
            .filter_map(|l| l.split_once(" = "))
            .filter(|(key, _)| !key.starts_with('#'))
            .map(|(key, _)| key);
        for key in keys {
            let line = out
                .stdout
                .lines()
                .find(|l| l.starts_with(&format!("{key} = ")))
                .unwrap_or_else(|| panic!("{key} missing from:\n{}", out.stdout));
            assert!(line.ends_with("# file"), "{line}");
        }
    }
}

/// `systemd-analyze verify` loads each unit as systemd would and checks it. It refuses a unit
/// whose `ExecStart=` binary does not exist, so it is given copies that run the binary under
/// test instead of /usr/bin/shoal (nothing else differs), and it runs `man` for the
/// `Documentation=man:` pages, which `shoal man --dir` writes into a `MANPATH` of its own.
#[test]
fn systemd_units_verify() {
    if !installed("systemd-analyze") {
        println!(
            "SKIP: systemd-analyze is not installed (apt-get install systemd; scripts/test \
             installs it): dist/systemd's units are not verified"
        );
        return;
    }
    let dir = TempDir::new().unwrap();
    let man = dir.path().join("man");
    let pages = man.join("man1");
    std::fs::create_dir_all(&pages).unwrap();
    shoal(&["man", "--dir", pages.to_str().unwrap()]);

    let mut units = Vec::new();
    for name in ["shoal-agent.service", "shoal-tracker.service"] {
        let text = std::fs::read_to_string(dist().join("systemd").join(name)).unwrap();
        assert!(text.contains("\nExecStart=/usr/bin/shoal "), "{name}");
        let copy = text.replace(
            "\nExecStart=/usr/bin/shoal ",
            &format!("\nExecStart={} ", env!("CARGO_BIN_EXE_shoal")),
        );
        let path = dir.path().join(name);
        std::fs::write(&path, copy).unwrap();
        units.push(path);
    }
    let mut verify = Command::new("systemd-analyze");
    verify.arg("verify");
    if !installed("man") {
        println!("note: man is not installed: the units' Documentation= pages are not checked");
        verify.arg("--man=no");
    }
    let out = verify.args(&units).env("MANPATH", &man).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    // Warnings about the units come with a zero exit code too; other units may be mentioned.
    assert!(!said.contains("shoal-"), "systemd-analyze verify:\n{said}");
}
