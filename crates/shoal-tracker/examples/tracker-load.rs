//! Preloads a tracker for `bench/tracker-load.sh`: registers `--agents` agents named `a0`,
//! `a1`, … each holding `--per-agent` of `--contents` contents, the first `--partial` of them
//! partially. Content `c` has the id `0…0<c as 16 hex digits>` so that the wrk script can name
//! the same contents without hashing. Every agent registers once: the run is bounded.
//!
//! `cargo run --release --features loadgen --example tracker-load -- --url http://127.0.0.1:7700
//!  --token SECRET`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

struct Args {
    url: String,
    token: String,
    agents: usize,
    contents: usize,
    per_agent: usize,
    partial: usize,
    concurrency: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        url: "http://127.0.0.1:7700".into(),
        token: String::new(),
        agents: 10_000,
        contents: 10_000,
        per_agent: 100,
        partial: 10,
        concurrency: 16,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let number = || {
            value
                .parse::<usize>()
                .unwrap_or_else(|_| panic!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--url" => args.url = value.clone(),
            "--token" => args.token = value.clone(),
            "--agents" => args.agents = number(),
            "--contents" => args.contents = number(),
            "--per-agent" => args.per_agent = number(),
            "--partial" => args.partial = number(),
            "--concurrency" => args.concurrency = number(),
            _ => panic!("unknown flag {flag}"),
        }
    }
    assert!(!args.token.is_empty(), "--token is required");
    assert!(args.per_agent <= args.contents && args.partial <= args.per_agent);
    args
}

fn content_id(c: usize) -> String {
    format!("{:048}{c:016x}", 0)
}

/// The `j`th content of agent `i`; with as many agents as contents every content gets exactly
/// `per_agent` holders.
fn content_of(args: &Args, i: usize, j: usize) -> usize {
    (i + j * (args.contents / args.per_agent)) % args.contents
}

fn registration(args: &Args, i: usize) -> serde_json::Value {
    // 256 MiB in 1 MiB pieces: 256 pieces, 32 bitfield bytes.
    let have = i % 32;
    let bits = format!("{}{}", "ff".repeat(have), "00".repeat(32 - have));
    let holdings: Vec<_> = (0..args.per_agent)
        .map(|j| {
            let c = content_of(args, i, j);
            let mut h = json!({"content": content_id(c), "name": format!("file-{c}.img"),
                "layout": {"size": 256u64 << 20, "piece_size": 1u64 << 20}});
            if j < args.partial {
                h["pieces"] = json!(bits);
            }
            h
        })
        .collect();
    json!({"addr": format!("127.0.0.{}:{}", 1 + i / 60_000, 1024 + i % 60_000),
        "upload_capacity": 100_000_000u64, "holdings": holdings})
}

#[tokio::main]
async fn main() {
    let args = Arc::new(parse_args());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (args, client, next) = (args.clone(), client.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= args.agents {
                        break;
                    }
                    let response = client
                        .put(format!("{}/v1/agents/a{i}", args.url))
                        .bearer_auth(&args.token)
                        .json(&registration(&args, i))
                        .send()
                        .await
                        .expect("tracker reachable");
                    let status = response.status();
                    assert!(
                        status.is_success(),
                        "registering a{i}: {status} {}",
                        response.text().await.unwrap_or_default()
                    );
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    println!(
        "preloaded {} agents x {} holdings of {} contents in {:.1} s",
        args.agents,
        args.per_agent,
        args.contents,
        start.elapsed().as_secs_f64()
    );
}
