//! `shoal-liar`: a lying agent for benches (`bench/chaos.sh liar`). It waits until the tracker
//! lists a content whose name holds `--name` (a URL swarm's file, say), registers with the
//! tracker as agent `--id` holding every piece of it (looked up with `--find-token-file`'s
//! token, since an agent's may not list contents), keeps its lease, and serves wrong bytes
//! for every piece with the test kit's [`shoal_testkit::Peer`] on `--listen`. Not part of the
//! shipped `shoal` binary.
//!
//! ```text
//! shoal-liar --tracker http://10.77.0.10:7700 --token-file fleet.token --id liar \
//!            --listen 10.77.0.14:7702 --name big.iso --find-token-file reader.token \
//!            [--wait 120] [--for 3600]
//! ```
//!
//! Exit status: 0 when `--for` ran out, 1 when the content never appeared or the tracker
//! refused it, 2 for a usage error.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_core::wire::{
    path, AgentId, ContentList, HeartbeatRequest, Holding, LeaseGrant, RegisterRequest,
};
use shoal_testkit::{OriginConfig, Peer, PeerConfig};

/// How often the tracker is asked for the content while it has not appeared.
const LOOK_EVERY: Duration = Duration::from_millis(100);
/// Every request to the tracker is given up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the command line says.
struct Args {
    /// The tracker's base URL, `http://HOST:PORT` (plain HTTP only).
    tracker: SocketAddr,
    token: String,
    /// A token that may list contents (a reader's).
    find_token: String,
    id: AgentId,
    listen: SocketAddr,
    name: String,
    wait: Duration,
    run_for: Duration,
}

fn usage(why: &str) -> ExitCode {
    eprintln!(
        "shoal-liar: {why}\nusage: shoal-liar --tracker http://HOST:PORT --token-file FILE \
         --id ID --listen IP:PORT --name NAME --find-token-file FILE [--wait SECS] [--for SECS]"
    );
    ExitCode::from(2)
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut tracker, mut token, mut id, mut listen, mut name) = (None, None, None, None, None);
    let mut find_token = None;
    let (mut wait, mut run_for) = (Duration::from_secs(120), Duration::from_secs(3600));
    while let Some(flag) = argv.next() {
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let secs = || {
            value
                .parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--tracker" => {
                let hostport = value
                    .strip_prefix("http://")
                    .ok_or("--tracker must be http://HOST:PORT")?
                    .trim_end_matches('/');
                tracker = Some(
                    hostport
                        .parse::<SocketAddr>()
                        .map_err(|e| format!("--tracker {value}: {e}"))?,
                );
            }
            "--token-file" => token = Some(read_token(&value)?),
            "--find-token-file" => find_token = Some(read_token(&value)?),
            "--id" => id = Some(AgentId::new(&value).map_err(|e| format!("--id {value}: {e}"))?),
            "--listen" => {
                listen = Some(
                    value
                        .parse()
                        .map_err(|e| format!("--listen {value}: {e}"))?,
                )
            }
            "--name" => name = Some(value),
            "--wait" => wait = secs()?,
            "--for" => run_for = secs()?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(Args {
        tracker: tracker.ok_or("--tracker is required")?,
        token: token.ok_or("--token-file is required")?,
        find_token: find_token.ok_or("--find-token-file is required")?,
        id: id.ok_or("--id is required")?,
        listen: listen.ok_or("--listen is required")?,
        name: name.ok_or("--name is required")?,
        wait,
        run_for,
    })
}

fn read_token(file: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the token file {file}: {e}"))?;
    Ok(text.trim().to_string())
}

/// One request to the tracker with `token` on a fresh connection: the status and the body.
fn call(
    args: &Args,
    token: &str,
    method: &str,
    target: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let said = |e: std::io::Error| format!("{method} {target} at {}: {e}", args.tracker);
    let mut tcp = TcpStream::connect_timeout(&args.tracker, REQUEST_TIMEOUT).map_err(said)?;
    tcp.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(said)?;
    write!(
        tcp,
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        args.tracker,
        token,
        body.len()
    )
    .map_err(said)?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).map_err(said)?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {target}: no HTTP status in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// The content whose name holds `args.name`, once the tracker lists it.
fn find(args: &Args) -> Result<shoal_core::wire::ContentSummary, String> {
    let start = Instant::now();
    let target = format!("{}?name={}", path::CONTENT, args.name);
    while start.elapsed() < args.wait {
        if let Ok((200, body)) = call(args, &args.find_token, "GET", &target, "") {
            let list: ContentList =
                serde_json::from_str(&body).map_err(|e| format!("the content list: {e}"))?;
            if let Some(content) = list.contents.into_iter().next() {
                return Ok(content);
            }
        }
        std::thread::sleep(LOOK_EVERY);
    }
    Err(format!(
        "no content named like {:?} at the tracker within {:?}",
        args.name, args.wait
    ))
}

fn run(args: &Args) -> Result<(), String> {
    let content = find(args)?;
    let layout = content.layout;
    let pieces = layout.piece_count();
    // Every piece a lie: zeros served inverted, which no real file's digest matches.
    let peer = Peer::start_on(
        PeerConfig {
            content: Bytes::from(vec![0u8; layout.size() as usize]),
            piece_size: layout.piece_size(),
            lies: (0..pieces).collect(),
            token: Some(args.token.clone()),
            origin: OriginConfig::default(),
        },
        args.listen,
    );
    let register = RegisterRequest {
        addr: args.listen,
        scheme: Default::default(),
        upload_capacity: 0,
        holdings: vec![Holding {
            content: content.id,
            name: content.name.clone(),
            layout,
            pieces: None,
        }],
    };
    let body = serde_json::to_string(&register).expect("a register request serializes");
    let (status, answer) = call(args, &args.token, "PUT", &path::agent(&args.id), &body)?;
    if status != 200 {
        return Err(format!(
            "the tracker refused the registration: {status} {answer}"
        ));
    }
    let lease: LeaseGrant =
        serde_json::from_str(&answer).map_err(|e| format!("the lease grant: {e}"))?;
    eprintln!(
        "shoal-liar: {} claims all {pieces} pieces of {} ({}) at {}, serving wrong bytes",
        args.id, content.id, content.name, args.listen
    );
    let every = Duration::from_millis(lease.lease_ms / 3).max(Duration::from_millis(100));
    let heartbeat =
        serde_json::to_string(&HeartbeatRequest::default()).expect("a heartbeat serializes");
    let start = Instant::now();
    while start.elapsed() < args.run_for {
        std::thread::sleep(every);
        match call(
            args,
            &args.token,
            "POST",
            &path::heartbeat(&args.id),
            &heartbeat,
        ) {
            Ok((200, _)) => {}
            // Forgotten (a tracker restarted, or the liar was hidden): claim it all again.
            Ok(_) | Err(_) => {
                let _ = call(args, &args.token, "PUT", &path::agent(&args.id), &body);
            }
        }
    }
    drop(peer);
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(why) => return usage(&why),
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal-liar: {e}");
            ExitCode::FAILURE
        }
    }
}
