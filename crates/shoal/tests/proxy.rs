//! Proxies from the environment (`HTTP_PROXY`, `NO_PROXY`), as curl and wget take them. The
//! variables are set for the spawned binary only, so no other test sees them.

use shoal_testkit::{random_bytes, sha256_hex, Origin, OriginConfig};

mod common;

/// Runs `shoal get` with `env` added for the child only; returns the exit code and stderr.
fn get(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = common::get(dir, args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let done = common::finish(cmd.spawn().expect("spawn shoal"));
    (done.code, done.stderr)
}

#[test]
fn http_proxy_from_the_environment_carries_every_request() {
    let content = random_bytes(3 << 20, 50);
    // The test origin answers any request target, so it can stand in for a forward proxy:
    // a proxied request arrives in absolute form, naming the real URL.
    let proxy = Origin::start_blocking(OriginConfig {
        content: content.clone(),
        rate_limit: Some(2 << 20),
        ..OriginConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 9 here: without the proxy this download cannot succeed.
    let target = "http://127.0.0.1:9/through-proxy.bin";
    let (code, stderr) = get(
        dir.path(),
        &["-q", "-c", "4", target],
        &[("HTTP_PROXY", &proxy.url("/"))],
    );
    assert_eq!(code, 0, "{stderr}");
    let saved = std::fs::read(dir.path().join("through-proxy.bin")).unwrap();
    assert_eq!(sha256_hex(&saved), sha256_hex(&content));
    let requests = proxy.requests();
    assert!(
        requests.len() > 1,
        "range requests went through the proxy too"
    );
    assert!(
        requests.iter().all(|r| r.path == target),
        "{:?}",
        requests[0].path
    );
}

#[test]
fn no_proxy_bypasses_the_proxy() {
    let content = random_bytes(1 << 20, 51);
    let origin = Origin::start_blocking(OriginConfig {
        content: content.clone(),
        ..OriginConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = get(
        dir.path(),
        &["-q", &origin.url("/direct.bin")],
        &[
            ("HTTP_PROXY", "http://127.0.0.1:9"),
            ("NO_PROXY", "127.0.0.1"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let saved = std::fs::read(dir.path().join("direct.bin")).unwrap();
    assert_eq!(sha256_hex(&saved), sha256_hex(&content));
}
