//! The tracker's page and an agent's page (`/ui` on each) as a browser sees them: real
//! `shoal tracker` and `shoal agent` processes, and one headless Chromium session driven by
//! Selenium (`chromium`, `chromium-driver` and `selenium`, which scripts/test installs; without
//! them the browser part says SKIP). Without a token neither page shows anything. With a
//! reader's token in the fragment the tracker's shows the agents, the contents (a file named
//! like an HTML tag, as text) and a swarm, and updates without a reload; with the RPC secret
//! the agent's adds downloads (one finishes, its bytes on disk are the origin's), pauses,
//! resumes, reorders and removes them. The security headers are checked without a browser.
//!
//! `SHOAL_UI_SHOTS=DIR` keeps the screenshots (1280×800 and a 390×844 phone) in `DIR`.

mod common;
mod fleet;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fleet::{Fleet, FLEET, MIB, READER};
use shoal_core::wire::{AnnounceRequest, Holding, PackedBits, SwarmInfo};
use shoal_core::{Bitfield, Layout};
use shoal_testkit::{random_bytes, Origin, OriginConfig};

/// A file name that is HTML if a page ever parses it as such.
const TAG_NAME: &str = "<img src=x onerror=alert(1)>.bin";
/// The agent's RPC secret.
const RPC_SECRET: &str = "rpc-secret-cccccccccccc";
/// A secret in a swarm's URL, which the page must not show.
const URL_SECRET: &str = "s3cr3t-signature";

#[test]
fn pages_show_the_fleet_and_drive_the_queue_only_with_a_token() {
    let fleet = Fleet::start();
    let port = fleet.tracker.port;
    assert_secure_page(port, "/ui/events");

    let data = random_bytes(MIB, 7);
    let tagged = random_bytes(MIB + 5, 8);
    let share_a = fleet.share("share-a", TAG_NAME, &tagged);
    std::fs::write(share_a.join("plain.bin"), &data).unwrap();
    let share_b = fleet.share("share-b", "plain.bin", &data);
    let rpc_port = common::free_port();
    std::fs::write(fleet.path("rpc.secret"), RPC_SECRET).unwrap();
    let owner_only = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(fleet.path("rpc.secret"), owner_only).unwrap();
    let downloads = fleet.path("downloads");
    let rpc_listen = format!("127.0.0.1:{rpc_port}");
    let secret_file = fleet.path("rpc.secret");
    let dir = downloads.to_str().unwrap();
    let _a = fleet.agent(
        "ui-a",
        Some(&share_a),
        &[
            "--rpc-listen",
            &rpc_listen,
            "--rpc-secret-file",
            secret_file.to_str().unwrap(),
            "--max-concurrent-downloads",
            "1",
            "-d",
            dir,
        ],
    );
    let b = fleet.agent("ui-b", Some(&share_b), &[]);
    common::wait_complete_holdings(port, READER, &["ui-a", "ui-b"], "the tracker");
    assert_secure_page(rpc_port, "/ui/fleet");
    // ui-b fetches the tag-named file from ui-a: ui-a's heartbeats then report what it served.
    let id = fleet::content_id(&tagged);
    let fetch = fleet.get(&b, &format!("shoal:blake3:{id}"), "fetched");
    fleet::done(fetch, &fleet, &["ui-a", "ui-b"]);
    fleet.assert_file("fetched", &tagged);
    wait_served(&fleet, "ui-a", tagged.len() as u64);
    wait_contents(&fleet, 2);
    run_swarm(&fleet);

    let fast = Origin::start_blocking(OriginConfig {
        content: random_bytes(MIB, 9),
        ..OriginConfig::default()
    });
    // Slow enough that the three downloads stay in the queue while the page acts on them.
    let slow = Origin::start_blocking(OriginConfig {
        content: random_bytes(64 * MIB, 10),
        rate_limit: Some(256 << 10),
        ..OriginConfig::default()
    });

    let Some(python) = python_with_selenium() else {
        return;
    };
    let shots = std::env::var_os("SHOAL_UI_SHOTS").map_or_else(|| fleet.path("shots"), Into::into);
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/pages.py"))
        .arg(format!("http://127.0.0.1:{port}"))
        .args([READER, FLEET])
        .arg(&shots)
        .arg(format!("http://{rpc_listen}"))
        .arg(RPC_SECRET)
        .args([fast.url("/fast.bin"), slow.url("/slow.bin")])
        .arg(TAG_NAME)
        .output()
        .expect("run pages.py");
    assert!(
        out.status.success(),
        "pages.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pages.py's JSON");
    println!("the page as Chromium saw it: {seen:#}");

    let none = &seen["no_token"];
    assert_eq!(none["app_hidden"], true, "{none}");
    assert_eq!(
        (&none["agent_rows"], &none["content_rows"]),
        (&0.into(), &0.into())
    );
    let text = none["text"].as_str().unwrap();
    assert!(
        !text.contains("ui-a") && !text.contains("plain.bin"),
        "{text}"
    );

    let wrong = &seen["wrong_token"];
    assert!(
        wrong["error"].as_str().unwrap().contains("refused"),
        "{wrong}"
    );
    assert_eq!(wrong["agent_rows"], 0);
    assert_eq!(
        wrong["stored"],
        serde_json::Value::Null,
        "a refused token is forgotten"
    );

    let shown = &seen["fleet"];
    assert_eq!(shown["hash"], "", "the token leaves the address bar");
    assert_eq!(shown["stored"], true);
    let agents: Vec<&str> = shown["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[0].as_str().unwrap())
        .collect();
    assert!(
        agents.contains(&"ui-a") && agents.contains(&"ui-b"),
        "{agents:?}"
    );
    let ui_a = shown["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row[0] == "ui-a")
        .unwrap();
    assert_ne!(
        ui_a[4], "0 B",
        "bytes served, from ui-a's heartbeats: {ui_a}"
    );
    let names: Vec<&str> = shown["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        names.contains(&TAG_NAME),
        "the tag-like name as text: {names:?}"
    );
    assert!(names.contains(&"plain.bin"), "{names:?}");
    assert_eq!(shown["images"], 0, "no element came from a file name");
    assert_eq!(shown["alerts"], serde_json::json!([]));
    assert_eq!(shown["bars"], shown["contents"].as_array().unwrap().len());
    let plain = shown["contents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row[0].as_str().unwrap().starts_with("plain.bin"))
        .unwrap();
    assert!(plain[2].as_str().unwrap().starts_with("2 whole"), "{plain}");
    let swarm = shown["swarms"][0].as_str().unwrap();
    assert!(swarm.contains("origin.invalid/big.iso"), "{swarm}");
    assert!(
        !swarm.contains(URL_SECRET),
        "the URL's secret is hidden: {swarm}"
    );
    assert!(
        swarm.contains("4.0 MiB of 64 MiB"),
        "origin bytes against the size: {swarm}"
    );
    let members: Vec<&str> = shown["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(members.contains(&"ui-aleader25 %"), "{members:?}");
    assert!(members.contains(&"ui-b13 %"), "{members:?}");

    assert_eq!(seen["live"]["same_page"], true, "updated without a reload");
    assert_eq!(
        seen["filtered"],
        serde_json::json!(["plain.bin"]),
        "filtered by name"
    );
    assert!(
        seen["phone"]["scroll_width"].as_u64().unwrap() <= 390,
        "{}",
        seen["phone"]
    );
    assert!(seen["phone"]["agent_rows"].as_u64().unwrap() >= 2);
    assert!(seen["reload"]["agent_rows"].as_u64().unwrap() >= 2);
    assert_eq!(seen["reload"]["alerts"], serde_json::json!([]));

    let none = &seen["agent_no_secret"];
    assert_eq!(none["app_hidden"], true, "{none}");
    assert!(!none["text"].as_str().unwrap().contains("ui-a"), "{none}");
    let role = seen["agent_role"].as_str().unwrap();
    assert!(
        role.contains("fleet member") && role.contains("2 holdings"),
        "{role}"
    );
    let column = |key: &str, at: usize| -> Vec<String> {
        seen[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row[at].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        column("agent_reordered", 0),
        ["slow-1.bin", "slow-3.bin", "slow-2.bin"],
        "slow-3 moved up one place"
    );
    // Paused, slow-1 lets slow-3 run (active downloads are listed first).
    let paused = &seen["agent_paused"];
    let status_of = |name: &str| {
        let row = paused.as_array().unwrap().iter().find(|r| r[0] == name);
        row.unwrap_or_else(|| panic!("no {name} in {paused}"))[1].clone()
    };
    assert_eq!(status_of("slow-1.bin"), "paused");
    assert_eq!(status_of("slow-2.bin"), "waiting");
    let mut queued = column("agent_queue", 0);
    queued.sort();
    assert_eq!(queued, ["slow-1.bin", "slow-3.bin"], "slow-2 removed");
    let stopped = column("agent_stopped", 0);
    assert!(stopped.contains(&"slow-2.bin".to_string()), "{stopped:?}");
    assert!(stopped.contains(&TAG_NAME.to_string()), "{stopped:?}");
    assert_eq!(seen["agent_images"], 0);
    assert_eq!(seen["agent_alerts"], serde_json::json!([]));
    assert!(seen["agent_phone"]["scroll_width"].as_u64().unwrap() <= 390);
    common::assert_saved(&downloads.join(TAG_NAME), &fast);
}

/// The page at `/ui` on `port` carries the security headers and no inline script, and its data
/// at `data` needs a token.
fn assert_secure_page(port: u16, data: &str) {
    let (head, body) = get_head(port, "/ui");
    for header in [
        "content-security-policy: default-src 'self'; script-src 'self';",
        "frame-ancestors 'none'",
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
        "content-type: text/html",
    ] {
        assert!(head.contains(header), "no {header:?} in\n{head}");
    }
    assert!(!body.contains("<script>"), "no inline script: {body}");
    let (refused, _) = get_head(port, data);
    assert!(refused.starts_with("http/1.1 401"), "{data}: {refused}");
}

/// `GET path` without a token: the response head (header names in lower case) and the body.
fn get_head(port: u16, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_ascii_lowercase(), body.to_string())
}

/// Waits until the tracker lists `agent` with at least `bytes` served.
fn wait_served(fleet: &Fleet, agent: &str, bytes: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = fleet.tracker_call("GET", "/v1/agents");
        assert_eq!(status, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        let served = list["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == agent)
            .and_then(|a| a["served"].as_u64());
        if served.is_some_and(|s| s >= bytes) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{agent} served: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the tracker lists `count` contents.
fn wait_contents(fleet: &Fleet, count: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = fleet.tracker_call("GET", "/v1/content");
        assert_eq!(status, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        if list["contents"].as_array().unwrap().len() >= count {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "contents: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A URL swarm of 64 one-MiB pieces led by `ui-a`: the leader published 4 digests, `ui-a`
/// holds 16 pieces and `ui-b` 8 (announced for them with the fleet's token, which owns them).
fn run_swarm(fleet: &Fleet) {
    let layout = Layout::new(64 * MIB as u64, MIB as u64).unwrap();
    let create = serde_json::json!({
        "key": {
            "url": format!("https://origin.invalid/big.iso?X-Amz-Signature={URL_SECRET}"),
            "size": layout.size(),
        },
        "layout": layout,
        "agent": "ui-a",
    });
    let port = fleet.tracker.port;
    let (status, body) = common::call(port, FLEET, "POST", "/v1/swarms", &create.to_string());
    assert_eq!(status, 201, "{body}");
    let swarm: SwarmInfo = serde_json::from_str(&body).unwrap();
    let digests: Vec<_> = (0..4)
        .map(|i| serde_json::json!({"index": i, "digest": "ab".repeat(32)}))
        .collect();
    let path = format!("/v1/swarms/{}/digests", swarm.id);
    let body = serde_json::json!({ "pieces": digests }).to_string();
    let (status, answer) = common::call(port, FLEET, "POST", &path, &body);
    assert_eq!(status, 200, "{answer}");
    for (agent, pieces) in [("ui-a", 16), ("ui-b", 8)] {
        let mut bits = Bitfield::new(layout.piece_count());
        (0..pieces).for_each(|i| bits.set(i));
        let announce = AnnounceRequest {
            holdings: vec![Holding {
                content: swarm.id,
                name: "big.iso".into(),
                layout,
                pieces: Some(PackedBits::of(&bits)),
            }],
            ..AnnounceRequest::default()
        };
        let path = format!("/v1/agents/{agent}/announce");
        let body = serde_json::to_string(&announce).unwrap();
        let (status, answer) = common::call(port, FLEET, "POST", &path, &body);
        assert_eq!(status, 200, "{answer}");
    }
}

/// The Python with Selenium (scripts/test's virtualenv, `SHOAL_TEST_PYTHON`), when it and
/// Chromium are installed; `None` after a SKIP line saying what is missing.
fn python_with_selenium() -> Option<String> {
    let python = std::env::var("SHOAL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let missing = ["/usr/bin/chromium", "/usr/bin/chromedriver"]
        .into_iter()
        .find(|tool| !Path::new(tool).exists());
    if let Some(tool) = missing {
        println!("SKIP: the tracker page's browser checks: no {tool} (apt-get install chromium chromium-driver)");
        return None;
    }
    let probe = Command::new(&python)
        .args(["-c", "import selenium"])
        .output();
    if !probe.is_ok_and(|out| out.status.success()) {
        println!("SKIP: the tracker page's browser checks: {python} has no selenium (pip install selenium)");
        return None;
    }
    Some(python)
}
