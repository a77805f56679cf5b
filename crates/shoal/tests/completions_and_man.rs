//! `shoal completions SHELL` and `shoal man` through the real binary: a bash script that bash
//! accepts and that registers a completion for `shoal`, every other shell's script, and roff
//! man pages.

use std::process::{Command, Stdio};

use tempfile::TempDir;

mod common;
use common::{finish, Finished};

fn shoal(args: &[&str]) -> Finished {
    let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shoal");
    let out = finish(child);
    assert_eq!(out.code, 0, "shoal {args:?}: {}", out.stderr);
    out
}

fn bash(script: &str) -> std::process::Output {
    Command::new("bash")
        .args(["--noprofile", "--norc", "-c", script])
        .output()
        .expect("run bash")
}

#[test]
fn bash_completion_parses_and_registers() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("shoal.bash");
    std::fs::write(&path, shoal(&["completions", "bash"]).stdout).unwrap();
    let path = path.to_str().unwrap();

    let syntax = bash(&format!("bash -n {path}"));
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );

    let registered = bash(&format!("source {path} && complete -p shoal"));
    let shown = String::from_utf8_lossy(&registered.stdout);
    assert!(
        registered.status.success() && shown.contains("complete") && shown.contains("shoal"),
        "stdout: {shown}\nstderr: {}",
        String::from_utf8_lossy(&registered.stderr)
    );
    // The daemons' options, --config included, are completed.
    let script = std::fs::read_to_string(path).unwrap();
    assert!(script.contains("--print-config") && script.contains("--token-file"));
}

#[test]
fn every_shell_gets_a_script() {
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let script = shoal(&["completions", shell]).stdout;
        assert!(
            script.contains("shoal") && script.contains("print-config"),
            "{shell}"
        );
    }
}

/// A roff man page: its title (`.TH`) comes first, after nothing but roff requests (clap_mangen
/// defines the apostrophe string `Aq` before it), and a NAME section follows.
fn assert_roff(page: &str, name: &str) {
    let mut lines = page.lines().skip_while(|l| !l.starts_with(".TH"));
    let preamble = page.lines().take_while(|l| !l.starts_with(".TH"));
    assert!(
        preamble.into_iter().all(|l| l.starts_with('.')),
        "{name}: {page}"
    );
    assert!(lines.next().is_some(), "{name} has no .TH: {page}");
    assert!(lines.any(|l| l == ".SH NAME"), "{name}: {page}");
}

#[test]
fn man_pages_are_roff() {
    let page = shoal(&["man"]).stdout;
    assert_roff(&page, "shoal man");
    assert!(page.contains("tracker") && page.contains("agent"));

    let dir = TempDir::new().unwrap();
    shoal(&["man", "--dir", dir.path().to_str().unwrap()]);
    for name in ["shoal.1", "shoal-get.1", "shoal-agent.1", "shoal-tracker.1"] {
        let page = std::fs::read_to_string(dir.path().join(name)).expect(name);
        assert_roff(&page, name);
    }
    let agent = std::fs::read_to_string(dir.path().join("shoal-agent.1")).unwrap();
    assert!(
        agent.contains("SHOAL_TOKEN_FILE"),
        "the variables are documented"
    );
}
