//! A fleet on loopback, as real processes: one `shoal tracker`, several `shoal agent`s, a test
//! origin, and `shoal get --agent` as users run it. Asserts what users care about: every
//! copy hashes to the original, the origin served the file about once, and faults (a lying
//! agent, a killed agent, a killed tracker, a dead origin) do not spoil a download.

mod common;
mod fleet;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use shoal_testkit::{random_bytes, Origin, OriginConfig};

use fleet::{content_id, done, wait_sent, Fleet, Process, FLEET, MIB, READER};

#[test]
fn a_shared_file_reaches_every_agent() {
    let fleet = Fleet::start();
    let data = random_bytes(6 * MIB + 4321, 1);
    let share = fleet.share("share", "image.raw", &data);
    let _seeder = fleet.agent("seeder", Some(&share), &[]);
    let id = content_id(&data);
    fleet.wait_holders(&id, 1);
    let agents: Vec<Process> = (1..=4)
        .map(|i| fleet.agent(&format!("a{i}"), None, &[]))
        .collect();
    let gets: Vec<Child> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| fleet.get(a, &format!("shoal:blake3:{id}"), &format!("out{i}")))
        .collect();
    for get in gets {
        done(get, &fleet, &["seeder", "a1", "a2", "a3", "a4"]);
    }
    for i in 0..4 {
        fleet.assert_file(&format!("out{i}"), &data);
    }
    // Each fetcher seeds what it fetched, and `shoal ls` says so.
    fleet.wait_holders(&id, 5);
    let ls = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "ls",
            "image",
            "--tracker",
            &format!("http://127.0.0.1:{}", fleet.tracker.port),
        ])
        .arg("--token-file")
        .arg(fleet.path("admin-token"))
        .output()
        .unwrap();
    assert!(ls.status.success(), "{ls:?}");
    let listing = String::from_utf8(ls.stdout).unwrap();
    let row = listing
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{listing}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns[3..], ["5", "0", "image.raw"], "{listing}");
}

#[test]
fn a_url_many_agents_want_crosses_the_origin_about_once() {
    let fleet = Fleet::start();
    let data = random_bytes(8 * MIB, 2);
    // Slow enough per connection that the agents' requests overlap.
    let origin = Origin::start_blocking(OriginConfig {
        content: data.clone(),
        rate_limit: Some(512 * 1024),
        ..OriginConfig::default()
    });
    let url = origin.url("/dataset.tar");
    let agents: Vec<Process> = (1..=4)
        .map(|i| fleet.agent(&format!("a{i}"), None, &[]))
        .collect();
    let gets: Vec<Child> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| fleet.get(a, &url, &format!("out{i}")))
        .collect();
    for get in gets {
        done(get, &fleet, &["a1", "a2", "a3", "a4"]);
    }
    for i in 0..4 {
        fleet.assert_file(&format!("out{i}"), &data);
    }
    let after_four = origin.bytes_sent();
    assert!(
        after_four <= data.len() as u64 * 11 / 10,
        "the origin sent {after_four} bytes for four agents of a {} byte file",
        data.len()
    );
    // A later agent finds the URL's content at the tracker and takes it from the swarm, but
    // for one piece (1 MiB) it checks against the origin.
    let late = fleet.agent("late", None, &[]);
    done(fleet.get(&late, &url, "late-out"), &fleet, &["late"]);
    fleet.assert_file("late-out", &data);
    let later = origin.bytes_sent() - after_four;
    assert!(
        later <= MIB as u64 + 4096,
        "the origin sent {later} more bytes to the late agent"
    );
    assert!(
        fleet
            .log("late")
            .contains("the origin agrees with the mapped content"),
        "{}",
        fleet.log("late")
    );
}

#[test]
fn a_lying_agent_is_dropped_and_reported() {
    let fleet = Fleet::start();
    let data = random_bytes(8 * MIB, 3);
    let honest_dir = fleet.share("honest", "model.bin", &data);
    let liar_dir = fleet.share("liar", "model.bin", &data);
    let _honest = fleet.agent("honest", Some(&honest_dir), &[]);
    let liar = fleet.agent("liar", Some(&liar_dir), &[]);
    let id = content_id(&data);
    fleet.wait_holders(&id, 2);
    // The liar's file changes under it, keeping its size and time: its cached manifest still
    // names the original, so it serves other bytes under the original's id.
    let file = liar_dir.join("model.bin");
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    let mut bad = data.to_vec();
    for i in (0..bad.len()).step_by(1000) {
        bad[i] ^= 0x5a;
    }
    std::fs::write(&file, &bad).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let fetcher = fleet.agent("fetcher", None, &["--per-peer", "2"]);
    done(
        fleet.get(&fetcher, &format!("shoal:blake3:{id}"), "out"),
        &fleet,
        &["honest", "liar", "fetcher"],
    );
    fleet.assert_file("out", &data);
    let log = fleet.log("fetcher");
    assert!(
        log.contains("reported a peer that sent a bad piece") && log.contains("liar"),
        "{log}"
    );
    // One agent's report is not enough to hide the liar from everyone (the reporter could be
    // the liar); an admin's is.
    let peers_path = format!("/v1/content/{id}/peers");
    let (status, peers) = fleet.tracker_call("GET", &peers_path);
    assert_eq!(status, 200, "{peers}");
    assert!(peers.contains("\"liar\""), "{peers}");
    let report = r#"{"agent": "liar", "piece": 0, "reason": "checked by hand"}"#;
    let (status, body) = common::call(
        fleet.tracker.port,
        READER,
        "POST",
        &format!("/v1/content/{id}/reports"),
        report,
    );
    assert_eq!(status, 202, "{body}");
    let (_, peers) = fleet.tracker_call("GET", &peers_path);
    assert!(!peers.contains("\"liar\""), "{peers}");
    assert!(peers.contains("\"honest\""), "{peers}");
    drop(liar);
}

#[test]
fn a_poisoned_url_mapping_is_caught_against_the_origin_and_withdrawn() {
    let fleet = Fleet::start();
    let data = random_bytes(4 * MIB, 5);
    let fake = random_bytes(4 * MIB, 6);
    let origin = Origin::start_blocking(OriginConfig {
        content: data.clone(),
        ..OriginConfig::default()
    });
    let url = origin.url("/dataset.tar");
    // A holder of the fleet token shares other bytes of the same size, and maps the origin's
    // URL version (its size and validators copied from the origin) to them.
    let fake_dir = fleet.share("poisoner", "dataset.tar", &fake);
    let _poisoner = fleet.agent("poisoner", Some(&fake_dir), &[]);
    let fake_id = content_id(&fake);
    fleet.wait_holders(&fake_id, 1);
    fleet.map_url(&origin, &url, &fake_id);
    let lookup = format!(
        "/v1/urls?{}",
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("url", &url)
            .append_pair("size", &data.len().to_string())
            .append_pair("etag", &origin.etag().unwrap())
            .append_pair("last_modified", &origin.last_modified().unwrap())
            .finish()
    );
    let mapped = || {
        let (status, body) = fleet.tracker_call("GET", &lookup);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(mapped(), fake_id);

    // Each agent that wants the URL checks a piece against the origin, gets the origin's
    // bytes, and reports the mapping; the second report withdraws it.
    for (i, agent) in ["b", "c"].into_iter().enumerate() {
        let process = fleet.agent(agent, None, &[]);
        let out = format!("out-{agent}");
        done(
            fleet.get(&process, &url, &out),
            &fleet,
            &["poisoner", agent],
        );
        fleet.assert_file(&out, &data);
        let log = fleet.log(agent);
        assert!(
            log.contains("reported a URL mapping the origin disagrees with"),
            "{log}"
        );
        if i == 0 {
            // One agent's word does not withdraw a mapping.
            assert_eq!(mapped(), fake_id);
        }
    }
    // Withdrawn, and published again by the agent that fetched from the origin.
    assert_eq!(mapped(), content_id(&data));
    let tracker_log = std::fs::read_to_string(fleet.path("tracker.log")).unwrap();
    assert!(
        tracker_log.contains("a URL mapping was reported")
            && tracker_log.contains("withdrawn=true"),
        "{tracker_log}"
    );
}

#[test]
fn a_killed_agent_leaves_its_pieces_to_others() {
    let fleet = Fleet::start();
    let data = random_bytes(12 * MIB, 4);
    let a_dir = fleet.share("a", "disk.img", &data);
    let b_dir = fleet.share("b", "disk.img", &data);
    let mut a = fleet.agent("a", Some(&a_dir), &["--upload-limit", "2M"]);
    let _b = fleet.agent("b", Some(&b_dir), &["--upload-limit", "2M"]);
    let id = content_id(&data);
    fleet.wait_holders(&id, 2);
    let fetcher = fleet.agent("fetcher", None, &[]);
    let get = fleet.get(&fetcher, &format!("shoal:blake3:{id}"), "out");
    std::thread::sleep(Duration::from_millis(1200));
    assert!(!fleet.path("out").exists(), "finished before the kill");
    a.kill();
    done(get, &fleet, &["a", "b", "fetcher"]);
    fleet.assert_file("out", &data);
}

#[test]
fn a_killed_tracker_does_not_stop_a_download() {
    let mut fleet = Fleet::start();
    let data = random_bytes(8 * MIB, 5);
    let dir = fleet.share("s", "pkg.deb", &data);
    let _seeder = fleet.agent("seeder", Some(&dir), &["--upload-limit", "2M"]);
    let id = content_id(&data);
    fleet.wait_holders(&id, 1);
    let fetcher = fleet.agent("fetcher", None, &[]);
    let get = fleet.get(&fetcher, &format!("shoal:blake3:{id}"), "out");
    std::thread::sleep(Duration::from_millis(1200));
    assert!(!fleet.path("out").exists(), "finished before the kill");
    fleet.tracker.kill();
    done(get, &fleet, &["seeder", "fetcher"]);
    fleet.assert_file("out", &data);
    assert!(
        fleet
            .log("fetcher")
            .contains("going on with the 1 peers known"),
        "{}",
        fleet.log("fetcher")
    );
}

#[test]
fn a_dead_origin_is_no_loss_when_peers_hold_every_piece() {
    let fleet = Fleet::start();
    let data = random_bytes(5 * MIB, 6);
    let origin = Origin::start_blocking(OriginConfig {
        content: data.clone(),
        ..OriginConfig::default()
    });
    let url = origin.url("/iso/live.iso");
    let first = fleet.agent("first", None, &[]);
    done(fleet.get(&first, &url, "out1"), &fleet, &["first"]);
    fleet.wait_holders(&content_id(&data), 1);
    drop(origin);
    let second = fleet.agent("second", None, &[]);
    done(
        fleet.get(&second, &url, "out2"),
        &fleet,
        &["first", "second"],
    );
    fleet.assert_file("out2", &data);
    assert!(
        fleet.log("second").contains("from peers alone"),
        "{}",
        fleet.log("second")
    );
}

/// A URL swarm whose leader is killed (`kill -9`) after it published some digests: a follower
/// takes over the origin from the pieces no one holds, the other follows it, both keep what
/// they hold, and the origin sends at most one extra copy.
#[test]
fn a_killed_leader_is_replaced_and_the_origin_sends_at_most_one_extra_copy() {
    let fleet = Fleet::start();
    let data = random_bytes(12 * MIB, 7);
    // 8 leader connections at 128 KiB/s each: a piece about every second, well inside the
    // leader's stall limit (5.5 s for 1 MiB pieces), and 12 s for the whole file.
    let origin = Origin::start_blocking(OriginConfig {
        content: data.clone(),
        rate_limit: Some(128 * 1024),
        ..OriginConfig::default()
    });
    let url = origin.url("/weights.bin");
    let mut leader = fleet.agent("lead", None, &[]);
    let mut led = fleet.get(&leader, &url, "out-lead");
    fleet.wait_log(&mut led, "lead", "leading the swarm");
    let swarm = fleet.swarm_led_by("lead");
    let followers: Vec<Process> = ["f1", "f2"]
        .iter()
        .map(|id| fleet.agent(id, None, &[]))
        .collect();
    let gets: Vec<Child> = followers
        .iter()
        .enumerate()
        .map(|(i, a)| fleet.get(a, &url, &format!("out{i}")))
        .collect();
    // Killed once it published a few digests, well before it has the file.
    let published = |fleet: &Fleet| fleet.published(&swarm);
    let deadline = Instant::now() + common::DEADLINE;
    while published(&fleet) < 3 {
        assert!(
            Instant::now() < deadline,
            "the leader never published 3 digests"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    leader.kill();
    let before = published(&fleet);
    assert!(before < 12, "the leader finished before the kill");
    let _ = common::finish(led);
    for get in gets {
        done(get, &fleet, &["lead", "f1", "f2"]);
    }
    for i in 0..2 {
        fleet.assert_file(&format!("out{i}"), &data);
    }
    let sent = origin.bytes_sent();
    assert!(
        sent <= 2 * data.len() as u64,
        "the origin sent {sent} bytes ({:.2} copies) for a {} byte file",
        sent as f64 / data.len() as f64,
        data.len()
    );
    let logs = [fleet.log("f1"), fleet.log("f2")];
    assert!(
        logs.iter().any(|l| l.contains("leading it now")),
        "no follower took over:\n{}\n{}",
        logs[0],
        logs[1]
    );
    assert!(
        logs.iter().all(|l| !l.contains("did not finish")),
        "a follower fell back to the origin alone:\n{}\n{}",
        logs[0],
        logs[1]
    );
    eprintln!(
        "leader killed after {before} of 12 digests; the origin sent {:.2} copies",
        sent as f64 / data.len() as f64
    );
}

/// A URL swarm's leader that stalls (stopped with SIGSTOP) is taken over from; once it is back
/// (SIGCONT) it stops fetching from the origin and follows the new leader: every copy, its own
/// too, is right, and the origin sends the file about once, not the rest of it twice.
#[test]
fn a_stalled_leader_that_comes_back_follows_its_successor() {
    let fleet = Fleet::start();
    let data = random_bytes(6 * MIB, 8);
    let size = data.len() as u64;
    // A piece about every second from 8 connections at 128 KiB/s: 6 s for the whole file.
    let origin = Origin::start_blocking(OriginConfig {
        content: data.clone(),
        rate_limit: Some(128 * 1024),
        ..OriginConfig::default()
    });
    let url = origin.url("/deposed.bin");
    let leader = fleet.agent("lead", None, &[]);
    let mut led = fleet.get(&leader, &url, "out-lead");
    fleet.wait_log(&mut led, "lead", "leading the swarm");
    let swarm = fleet.swarm_led_by("lead");
    let followers: Vec<Process> = ["f1", "f2"]
        .iter()
        .map(|id| fleet.agent(id, None, &[]))
        .collect();
    let mut gets: Vec<Child> = followers
        .iter()
        .enumerate()
        .map(|(i, a)| fleet.get(a, &url, &format!("out{i}")))
        .collect();
    let deadline = Instant::now() + common::DEADLINE;
    while fleet.published(&swarm) < 2 {
        assert!(Instant::now() < deadline, "the leader never published");
        std::thread::sleep(Duration::from_millis(50));
    }
    common::signal(&leader.child, "-STOP");
    // A follower takes over once the leader published nothing for its stall limit.
    while fleet.swarm(&swarm).leader.as_str() == "lead" {
        assert!(Instant::now() < deadline, "no follower took over");
        std::thread::sleep(Duration::from_millis(50));
    }
    common::signal(&leader.child, "-CONT");
    gets.push(led);
    for get in gets {
        done(get, &fleet, &["lead", "f1", "f2"]);
    }
    for out in ["out0", "out1", "out-lead"] {
        fleet.assert_file(out, &data);
    }
    let log = fleet.log("lead");
    assert!(
        log.contains("another member took over the swarm's lead"),
        "{log}"
    );
    let sent = origin.bytes_sent();
    assert!(
        sent <= size * 14 / 10,
        "the origin sent {sent} bytes ({:.2} copies) for a {size} byte file",
        sent as f64 / size as f64
    );
}

/// The origin dies for good once the leader fetched a third of the file: every member's get
/// fails (exit 3) once nothing arrived for `--max-wait`, naming the pieces missing, not the
/// refusal of a fallback to the origin alone. The wait spans takeovers (a stalled leader is
/// taken over after about 5 s): members taking the lead from each other must not start their
/// wait over at every change, or they would wait for ever.
#[test]
fn with_the_origin_gone_every_member_names_the_missing_pieces() {
    let fleet = Fleet::start();
    let data = random_bytes(6 * MIB, 9);
    let origin = Origin::start_blocking(OriginConfig {
        content: data.clone(),
        rate_limit: Some(128 * 1024),
        ..OriginConfig::default()
    });
    let url = origin.url("/gone.bin");
    let agents: Vec<Process> = ["g1", "g2", "g3"]
        .iter()
        .map(|n| fleet.agent(n, None, &["--max-wait", "12s"]))
        .collect();
    let gets: Vec<Child> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| fleet.get(a, &url, &format!("out{i}")))
        .collect();
    wait_sent(&origin, 2 * MIB as u64);
    origin.go_down();
    for get in gets {
        let run = common::finish(get);
        common::assert_code(&run, 3);
        assert!(
            run.stderr.contains("pieces:") && run.stderr.contains("still missing"),
            "{}",
            run.stderr
        );
    }
    let logs: Vec<String> = ["g1", "g2", "g3"].iter().map(|n| fleet.log(n)).collect();
    assert!(
        logs.iter()
            .any(|log| log.contains("the swarm's leader stalled or died; leading it now")),
        "no member took over: {logs:#?}"
    );
}

#[test]
fn a_live_agent_id_is_refused_elsewhere_and_taken_back_by_a_restart() {
    let fleet = Fleet::start();
    let port = common::free_port();
    let data = fleet.path("twin-data");
    let mut cmd = fleet.agent_command("twin", port, &data, "twin.log");
    let mut first = Process {
        child: cmd.spawn().unwrap(),
        port,
        data: data.clone(),
    };
    fleet.wait_log(&mut first.child, "twin", "registered");

    // A clone with the same id at another address exits, naming the id, both addresses and --id.
    let other = common::free_port();
    let mut cmd = fleet.agent_command("twin", other, &fleet.path("clone-data"), "clone.log");
    let clone = common::finish(cmd.spawn().unwrap());
    let said = fleet.log("clone");
    assert_ne!(clone.code, 0, "{said}");
    for needle in [
        "twin".to_string(),
        format!("127.0.0.1:{port}"),
        format!("127.0.0.1:{other}"),
        "--id".to_string(),
    ] {
        assert!(said.contains(&needle), "no {needle:?} in:\n{said}");
    }

    // Killed without deregistering, the agent restarts at its address and registers at once,
    // well within the lapsed agent's lease.
    first.kill();
    let mut cmd = fleet.agent_command("twin", port, &data, "twin.log");
    let mut again = Process {
        child: cmd.spawn().unwrap(),
        port,
        data,
    };
    fleet.wait_log(&mut again.child, "twin", "registered");
    assert!(
        again.child.try_wait().unwrap().is_none(),
        "{}",
        fleet.log("twin")
    );
}

/// The pieces an agent's download record (`DATA/downloads/*.json`) names verified whose
/// blocks its engine's resume state (`DATA/objects/ID.part.shoal`) names durable: what a
/// restart may serve before checking anything.
fn recorded_pieces(data: &Path, swarm: &str, piece: u64) -> Vec<u64> {
    let Some(record) = std::fs::read_dir(data.join("downloads"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .find_map(|e| {
            let text = std::fs::read(e.path()).ok()?;
            serde_json::from_slice::<serde_json::Value>(&text).ok()
        })
    else {
        return Vec::new();
    };
    let verified = record["held"]["verified"].as_str().unwrap_or_default();
    let state = shoal_engine::resume::load(&data.join(format!("objects/{swarm}.part.shoal")));
    let Ok(Some(state)) = state else {
        return Vec::new();
    };
    let blocks = piece / shoal_engine::BLOCK;
    (0..verified.len() as u64 / 2)
        .flat_map(|byte| {
            let bits = u8::from_str_radix(&verified[2 * byte as usize..][..2], 16).unwrap();
            (0..8)
                .filter(move |b| bits & (0x80 >> b) != 0)
                .map(move |b| byte * 8 + b)
        })
        .filter(|p| (p * blocks..(p + 1) * blocks).all(|b| state.done.get(b as u32)))
        .collect()
}

#[test]
fn restart_resumes_a_killed_agents_download_and_serves_its_pieces_at_once() {
    let fleet = Fleet::start();
    let data = random_bytes(16 * MIB, 7);
    let piece = shoal_agent::piece_size::for_size(data.len() as u64);
    let origin = Origin::start_blocking(OriginConfig {
        content: data.clone(),
        rate_limit: Some(256 * 1024),
        ..OriginConfig::default()
    });
    let url = origin.url("/images/disk.img");
    let mut agent = fleet.agent("r", None, &[]);
    let (port, dir) = (agent.port, agent.data.clone());
    let mut get = fleet.get(&agent, &url, "killed-out");
    fleet.wait_log(&mut agent.child, "r", "leading the swarm");
    let log = fleet.log("r");
    let swarm = log
        .split("swarm=")
        .nth(1)
        .and_then(|rest| rest.get(..64))
        .unwrap_or_else(|| panic!("no swarm id in:\n{log}"))
        .to_string();

    // Killed (SIGKILL) once a couple of pieces are recorded verified and durable.
    let deadline = Instant::now() + common::DEADLINE;
    let held = loop {
        let held = recorded_pieces(&dir, &swarm, piece);
        if held.len() >= 2 {
            break held;
        }
        assert!(
            get.try_wait().unwrap().is_none(),
            "the download finished without recording two verified pieces in {}:\n{}",
            dir.join("downloads").display(),
            fleet.log("r")
        );
        assert!(
            Instant::now() < deadline,
            "no piece recorded:\n{}",
            fleet.log("r")
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    agent.kill();
    let pieces = data.len() as u64 / piece;
    assert!((held.len() as u64) < pieces, "finished before the kill");
    let _ = common::finish(get);
    let sent_before = origin.bytes_sent();

    // Started again on the same data with the same id: the first request it answers gets a
    // piece it had.
    let mut cmd = fleet.agent_command("r", port, &dir, "r2.log");
    let started = Instant::now();
    let mut again = Process {
        child: cmd.spawn().unwrap(),
        port,
        data: dir,
    };
    common::wait_listening(&mut again.child, port, "the restarted agent");
    let p = held[0];
    let range = (p * piece, (p + 1) * piece - 1);
    let (status, body) = common::get_range(port, FLEET, &format!("/v1/pieces/{swarm}"), range);
    eprintln!(
        "piece {p} served {:?} after the restarted agent was spawned",
        started.elapsed()
    );
    assert_eq!(
        status,
        206,
        "piece {p} right after the restart:\n{}",
        fleet.log("r2")
    );
    assert!(
        body == data[range.0 as usize..=range.1 as usize],
        "piece {p} differs"
    );

    // The download goes on by itself, with nobody asking: the agent comes to hold every piece.
    let deadline = Instant::now() + common::DEADLINE;
    loop {
        let (status, have) = common::call(
            port,
            FLEET,
            "GET",
            &format!("/v1/pieces/{swarm}/have?after={}", pieces - 1),
            "",
        );
        if status == 200
            && serde_json::from_str::<serde_json::Value>(&have).unwrap()["count"] == pieces
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never finished: {status} {have}\n{}",
            fleet.log("r2")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A client asking again gets the file, and the origin sent the pieces held only once.
    done(fleet.get(&again, &url, "out"), &fleet, &["r", "r2"]);
    fleet.assert_file("out", &data);
    let sent = origin.bytes_sent();
    eprintln!(
        "the origin sent {sent} bytes ({sent_before} before the kill) for a {} byte file",
        data.len()
    );
    assert!(
        sent < data.len() as u64 * 3 / 2,
        "the origin sent {sent} bytes ({sent_before} before the kill) for a {} byte file",
        data.len()
    );
    let log = fleet.log("r2");
    assert!(
        log.contains("serving the verified pieces of an unfinished download again"),
        "{log}"
    );
}

/// Waits until all agents but the leader (which follows no peers) know every other member of
/// the swarm of the file `name`, asking each agent's piece server as a peer would: what a
/// swarm knows when its tracker goes away.
fn wait_members_known(fleet: &Fleet, agents: &[Process], name: &str) {
    let deadline = Instant::now() + common::DEADLINE;
    let swarm = loop {
        let (status, body) = fleet.tracker_call("GET", &format!("/v1/content?name={name}"));
        let list: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if let (200, Some(id)) = (status, list["contents"][0]["id"].as_str()) {
            break id.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no swarm for {name}: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    loop {
        let knowing = agents
            .iter()
            .filter(|agent| {
                let path = format!("/v1/pieces/{swarm}/peers");
                let (status, body) = common::call(agent.port, FLEET, "GET", &path, "");
                let list: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                status == 200 && list["peers"].as_array().map_or(0, Vec::len) + 1 >= agents.len()
            })
            .count();
        if knowing + 1 >= agents.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the swarm's members never knew each other"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What happens to the tracker of a URL swarm once the origin sent 30 % of the file and the
/// members know each other.
#[derive(PartialEq)]
enum Outage {
    /// Killed, and started again on its `--data` once the origin sent 50 %.
    Restarted,
    /// Killed for good.
    ForGood,
}

/// Three agents fetch one URL while the tracker goes through `outage`: every copy is right,
/// and the origin sent the file about once (nobody gave up on the swarm for the origin).
/// Returns the fleet, with the tracker running again if it was restarted, and the agents.
fn url_swarm_through(outage: Outage, names: &[&str]) -> (Fleet, Vec<Process>) {
    let mut fleet = Fleet::start();
    let data = random_bytes(8 * MIB, 7);
    let size = data.len() as u64;
    // Slow enough that the tracker is away for a good part of the download.
    let origin = Origin::start_blocking(OriginConfig {
        content: data.clone(),
        rate_limit: Some(192 * 1024),
        ..OriginConfig::default()
    });
    let url = origin.url("/outage.iso");
    let agents: Vec<Process> = names.iter().map(|n| fleet.agent(n, None, &[])).collect();
    let gets: Vec<Child> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| fleet.get(a, &url, &format!("out{i}")))
        .collect();
    wait_sent(&origin, size * 3 / 10);
    wait_members_known(&fleet, &agents, "outage.iso");
    fleet.tracker.kill();
    // The swarm goes on without it: the leader offers pieces and tells their digests itself.
    wait_sent(&origin, size / 2);
    if outage == Outage::Restarted {
        fleet.restart_tracker();
    }
    for get in gets {
        done(get, &fleet, names);
    }
    for i in 0..names.len() {
        fleet.assert_file(&format!("out{i}"), &data);
    }
    let sent = origin.bytes_sent();
    if sent > size * 12 / 10 {
        for name in names {
            eprintln!("--- {name}.log\n{}", fleet.log(name));
        }
        panic!("the origin sent {sent} bytes for three agents of a {size} byte file");
    }
    (fleet, agents)
}

#[test]
fn a_url_swarm_whose_tracker_dies_for_good_completes() {
    url_swarm_through(Outage::ForGood, &["g1", "g2", "g3"]);
}

#[test]
fn a_tracker_restarted_mid_swarm_is_repopulated_and_the_swarm_completes() {
    let names = ["r1", "r2", "r3"];
    let (fleet, _agents) = url_swarm_through(Outage::Restarted, &names);
    // The restarted tracker heard again from every agent, with what each holds.
    common::wait_complete_holdings(fleet.tracker.port, READER, &names, "the restarted tracker");
    fleet.wait_holders(&content_id(&random_bytes(8 * MIB, 7)), 3);
}
