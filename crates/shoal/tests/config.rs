//! The daemons' configuration through the real binary: a `--config` file under `SHOAL_*`
//! variables under flags (seen through `--print-config`), bad files refused with exit code 2
//! and a message naming the file and the key, and an agent that runs from its file alone.

use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

mod common;
use common::{finish, free_port, shoal, wait_listening, Finished};

fn run(mut cmd: Command) -> Finished {
    finish(cmd.spawn().expect("spawn shoal"))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// The value line of `key` in `--print-config` output.
fn line<'a>(printed: &'a str, key: &str) -> &'a str {
    printed
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{printed}"))
}

#[test]
fn file_under_environment_under_flags() {
    let dir = TempDir::new().unwrap();
    let config = write(
        dir.path(),
        "agent.toml",
        "data = \"/var/lib/shoal-agent\"\ntoken-file = \"/etc/shoal/agent.token\"\n\
         listen = \"127.0.0.1:1111\"\nmax-uploads = 8\nper-peer = 3\nproxy-timeout = \"90s\"\n",
    );
    let print = |env: &[(&str, &str)], flags: &[&str]| {
        let mut cmd = shoal(&["agent", "--config", &config, "--print-config"]);
        cmd.args(flags).envs(env.iter().copied());
        let out = run(cmd);
        assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
        out.stdout
    };

    let printed = print(&[], &[]);
    assert_eq!(
        line(&printed, "listen"),
        "listen = \"127.0.0.1:1111\"  # file"
    );
    assert_eq!(line(&printed, "max-uploads"), "max-uploads = 8  # file");
    assert_eq!(
        line(&printed, "proxy-timeout"),
        "proxy-timeout = \"90s\"  # file"
    );
    assert_eq!(line(&printed, "connections"), "connections = 32  # default");
    assert!(printed.contains("# share is not set"), "{printed}");

    let env = [("SHOAL_LISTEN", "127.0.0.1:2222"), ("SHOAL_PER_PEER", "4")];
    let printed = print(&env, &[]);
    assert_eq!(
        line(&printed, "listen"),
        "listen = \"127.0.0.1:2222\"  # env SHOAL_LISTEN"
    );
    assert_eq!(
        line(&printed, "per-peer"),
        "per-peer = 4  # env SHOAL_PER_PEER"
    );
    assert_eq!(line(&printed, "max-uploads"), "max-uploads = 8  # file");

    let printed = print(
        &env,
        &["--listen", "127.0.0.1:3333", "--log-format", "json"],
    );
    assert_eq!(
        line(&printed, "listen"),
        "listen = \"127.0.0.1:3333\"  # flag"
    );
    assert_eq!(
        line(&printed, "per-peer"),
        "per-peer = 4  # env SHOAL_PER_PEER"
    );
    assert_eq!(
        line(&printed, "log-format"),
        "log-format = \"json\"  # flag"
    );

    // What --print-config prints is a config file the loader takes back, value for value.
    let again = write(dir.path(), "again.toml", &printed);
    let reprinted = run(shoal(&["agent", "--config", &again, "--print-config"])).stdout;
    for key in [
        "listen",
        "per-peer",
        "max-uploads",
        "proxy-timeout",
        "data",
        "log-format",
    ] {
        let value = |text: &str| line(text, key).split("  #").next().unwrap().to_string();
        assert_eq!(value(&reprinted), value(&printed), "{key}");
    }
}

#[test]
fn several_trackers_from_the_file_the_environment_or_repeated_flags() {
    let dir = TempDir::new().unwrap();
    let config = write(
        dir.path(),
        "agent.toml",
        "data = \"/var/lib/shoal-agent\"\ntoken-file = \"/etc/shoal/agent.token\"\n\
         tracker = [\"http://t1:7700\", \"http://t2:7700\"]\n",
    );
    let print = |env: &[(&str, &str)], flags: &[&str]| {
        let mut cmd = shoal(&["agent", "--config", &config, "--print-config"]);
        cmd.args(flags).envs(env.iter().copied());
        let out = run(cmd);
        assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
        out.stdout
    };
    let printed = print(&[], &[]);
    assert_eq!(
        line(&printed, "tracker"),
        r#"tracker = ["http://t1:7700", "http://t2:7700"]  # file"#
    );
    let printed = print(&[("SHOAL_TRACKER", "http://e1:7700,http://e2:7700")], &[]);
    assert_eq!(
        line(&printed, "tracker"),
        r#"tracker = ["http://e1:7700", "http://e2:7700"]  # env SHOAL_TRACKER"#
    );
    let printed = print(
        &[],
        &["--tracker", "http://f1:7700", "--tracker", "http://f2:7700"],
    );
    assert_eq!(
        line(&printed, "tracker"),
        r#"tracker = ["http://f1:7700", "http://f2:7700"]  # flag"#
    );
    // What it prints is taken back.
    let again = write(dir.path(), "again.toml", &printed);
    let reprinted = run(shoal(&["agent", "--config", &again, "--print-config"])).stdout;
    assert_eq!(
        line(&reprinted, "tracker"),
        r#"tracker = ["http://f1:7700", "http://f2:7700"]  # file"#
    );

    let bad = write(
        dir.path(),
        "bad.toml",
        "data = \"/d\"\ntoken-file = \"/t\"\ntracker = [\"http://t1:7700\", \"not a url\"]\n",
    );
    let out = run(shoal(&["agent", "--config", &bad, "--print-config"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("bad.toml") && out.stderr.contains("key \"tracker\""),
        "{}",
        out.stderr
    );
}

#[test]
fn printed_config_hides_secrets() {
    let dir = TempDir::new().unwrap();
    let config = write(
        dir.path(),
        "tracker.toml",
        "store = \"redis://shoal:hunter2@redis:6379/0\"\ntokens = \"/etc/shoal/tokens.toml\"\n",
    );
    let out = run(shoal(&["tracker", "--config", &config, "--print-config"]));
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    assert!(!out.stdout.contains("hunter2"), "{}", out.stdout);
    assert_eq!(
        line(&out.stdout, "store"),
        "store = \"redis://shoal:***@redis:6379/0\"  # file"
    );
}

#[test]
fn unknown_key_is_a_usage_error_naming_file_and_key() {
    let dir = TempDir::new().unwrap();
    let config = write(
        dir.path(),
        "agent.toml",
        "data = \"/tmp/x\"\nlisen = \"127.0.0.1:1\"\n",
    );
    let out = run(shoal(&["agent", "--config", &config]));
    assert_eq!(out.code, 2, "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains(&config) && out.stderr.contains("unknown key \"lisen\""),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("listen"),
        "the keys are listed: {}",
        out.stderr
    );
}

#[test]
fn bad_values_say_what_is_expected() {
    let dir = TempDir::new().unwrap();
    for (text, expected) in [
        (
            "listen = \"everywhere\"",
            "key \"listen\" = \"everywhere\": expected ADDR",
        ),
        ("cache-size = \"lots\"", "expected a size such as 50G"),
        ("log-format = \"xml\"", "expected one of text, json"),
        (
            "share = [\"a\", \"b\"]",
            "expected DIR, as a string or a number",
        ),
        ("data = ", "line 1: "),
    ] {
        let config = write(dir.path(), "agent.toml", text);
        let out = run(shoal(&["agent", "--config", &config, "--print-config"]));
        assert_eq!(out.code, 2, "{text}: {}", out.stderr);
        assert!(
            out.stderr.starts_with(&format!("shoal agent: {config}: "))
                && out.stderr.contains(expected),
            "{text}: {}",
            out.stderr
        );
    }
    let config = write(
        dir.path(),
        "tracker.toml",
        "store = \"rediss://u:hunter2@r/\"",
    );
    let out = run(shoal(&["tracker", "--config", &config]));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("key \"store\"") && !out.stderr.contains("hunter2"),
        "{}",
        out.stderr
    );
}

#[test]
fn tracker_needs_exactly_one_of_data_and_store_wherever_they_come_from() {
    let dir = TempDir::new().unwrap();
    let tokens = write(dir.path(), "tokens.toml", "");
    let config = write(dir.path(), "tracker.toml", "data = \"/tmp/tracker\"\n");
    let out = run(shoal(&[
        "tracker",
        "--config",
        &config,
        "--tokens",
        &tokens,
        "--store",
        "redis://127.0.0.1:1/0",
    ]));
    assert_eq!(out.code, 2, "stderr:\n{}", out.stderr);
    assert!(out.stderr.contains("exclude each other"), "{}", out.stderr);
    let out = run(shoal(&["tracker", "--tokens", &tokens]));
    assert_eq!(out.code, 2, "stderr:\n{}", out.stderr);
    assert!(out.stderr.contains("give --data DIR"), "{}", out.stderr);
}

#[test]
fn agent_runs_from_its_config_file_alone() {
    let dir = TempDir::new().unwrap();
    let token = write(dir.path(), "agent.token", "a-fleet-token-of-some-length\n");
    let port = free_port();
    let config = write(
        dir.path(),
        "agent.toml",
        &format!(
            "data = \"{}\"\ntoken-file = \"{token}\"\nlisten = \"127.0.0.1:{port}\"\n\
             log-format = \"json\"\n",
            dir.path().join("data").display()
        ),
    );
    let mut child = shoal(&["agent", "--config", &config]).spawn().unwrap();
    wait_listening(&mut child, port, "the agent");
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let out = finish(child);
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    // Its logs were JSON, as the file asked.
    let first = out.stderr.lines().next().expect("the agent logs");
    let record: serde_json::Value = serde_json::from_str(first).expect(first);
    assert_eq!(record["level"], "INFO", "{first}");
    assert!(dir.path().join("data").is_dir());
}
