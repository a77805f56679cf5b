//! The aria2-compatible RPC as a client sees it, message in and answer out (no listener: the
//! HTTP and WebSocket doors hand their bodies to the same `Rpc::answer`): the secret, aria2's
//! errors for unknown methods and bad parameters, `system.multicall`, `tellStatus` with
//! `keys` over a real download from the test origin, and the queue found again, in order and
//! paused, when it is opened anew from the same data directory.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{engine_queue, SECRET};
use serde_json::{json, Value};
use shoal_agent::rpc::Rpc;
use shoal_engine::CancellationToken;
use shoal_testkit::{random_bytes, sha256_hex, Origin, OriginConfig};

async fn open(data: &Path, out: &Path, stop: &CancellationToken) -> Rpc {
    let queue = engine_queue(data, out, 2, stop).await;
    Rpc::new(queue, SECRET.into(), stop.clone())
}

/// The answer to `body`, sent as is.
async fn raw(rpc: &Rpc, body: &str) -> Value {
    rpc.answer(body.as_bytes()).await.expect("an answer")
}

/// Calls `method` with the secret before `params`; the whole answer.
async fn call(rpc: &Rpc, method: &str, params: Value) -> Value {
    let mut all = vec![json!(format!("token:{SECRET}"))];
    all.extend(params.as_array().cloned().unwrap_or_default());
    let body = json!({ "jsonrpc": "2.0", "id": "t", "method": method, "params": all });
    raw(rpc, &body.to_string()).await
}

async fn result(rpc: &Rpc, method: &str, params: Value) -> Value {
    let answer = call(rpc, method, params).await;
    assert!(answer.get("error").is_none(), "{method}: {answer}");
    answer["result"].clone()
}

fn error_code(answer: &Value) -> i64 {
    answer["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error: {answer}"))
}

#[tokio::test]
async fn calls_without_the_right_secret_get_aria2s_unauthorized() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let rpc = open(&dir.path().join("data"), dir.path(), &stop).await;
    for params in [
        json!([]),
        json!(["token:wrong"]),
        json!([SECRET]),
        json!([1]),
    ] {
        let body =
            json!({"jsonrpc": "2.0", "id": 7, "method": "aria2.getVersion", "params": params});
        let answer = raw(&rpc, &body.to_string()).await;
        assert_eq!(
            answer,
            json!({"jsonrpc": "2.0", "id": 7, "error": {"code": 1, "message": "Unauthorized"}}),
            "{params}"
        );
    }
    let version = result(&rpc, "aria2.getVersion", json!([])).await;
    assert!(version["version"].is_string(), "{version}");
    // As with aria2, listing the methods needs no secret.
    let answer = raw(
        &rpc,
        r#"{"jsonrpc":"2.0","id":1,"method":"system.listMethods"}"#,
    )
    .await;
    let methods = answer["result"].as_array().unwrap();
    for name in ["aria2.addUri", "aria2.tellStatus", "system.multicall"] {
        assert!(methods.contains(&json!(name)), "{name} in {methods:?}");
    }
}

#[tokio::test]
async fn unknown_methods_and_bad_params_get_json_rpc_errors() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let rpc = open(&dir.path().join("data"), dir.path(), &stop).await;
    assert_eq!(error_code(&raw(&rpc, "{").await), -32700);
    assert_eq!(error_code(&raw(&rpc, "[]").await), -32600);
    assert_eq!(error_code(&raw(&rpc, r#"{"id":1}"#).await), -32600);
    assert_eq!(
        error_code(&raw(&rpc, r#"{"id":1,"method":"aria2.tellActive","params":{}}"#).await),
        -32602
    );
    assert_eq!(
        error_code(&call(&rpc, "aria2.nope", json!([])).await),
        -32601
    );
    for (method, params) in [
        ("aria2.addUri", json!(["http://h/a"])),
        ("aria2.addUri", json!([[1]])),
        ("aria2.addUri", json!([["http://h/a"], "options"])),
        ("aria2.addUri", json!([["http://h/a"], {}, -1])),
        ("aria2.tellStatus", json!(["zz"])),
        ("aria2.tellStatus", json!([])),
        ("aria2.tellStatus", json!(["0123456789abcdef", "gid"])),
        ("aria2.tellWaiting", json!(["a", 1])),
        (
            "aria2.changePosition",
            json!(["0123456789abcdef", 0, "POS_NOWHERE"]),
        ),
    ] {
        let answer = call(&rpc, method, params.clone()).await;
        assert_eq!(error_code(&answer), -32602, "{method} {params}: {answer}");
    }
    let answer = call(&rpc, "aria2.tellStatus", json!(["0123456789abcdef"])).await;
    assert_eq!(
        answer["error"],
        json!({"code": 1, "message": "GID 0123456789abcdef is not found"})
    );
    let answer = call(&rpc, "aria2.addUri", json!([["ftp://h/a"]])).await;
    assert_eq!(error_code(&answer), 1, "{answer}");
    let answer = call(
        &rpc,
        "aria2.addUri",
        json!([["http://h/a"], {"split": "0"}]),
    )
    .await;
    assert_eq!(error_code(&answer), 1, "{answer}");
    let answer = call(
        &rpc,
        "aria2.changeGlobalOption",
        json!([{"max-overall-download-limit": "fast"}]),
    )
    .await;
    assert_eq!(error_code(&answer), 1, "{answer}");
    // A batch answers each call, errors included.
    let answer = raw(&rpc, r#"[{"id":1,"method":"aria2.nope"},{"id":2}]"#).await;
    assert_eq!(error_code(&answer[0]), -32601);
    assert_eq!(error_code(&answer[1]), -32600);
}

#[tokio::test]
async fn multicall_answers_each_call_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let rpc = open(&dir.path().join("data"), dir.path(), &stop).await;
    let token = format!("token:{SECRET}");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "system.multicall", "params": [[
        {"methodName": "aria2.addUri", "params": [token, ["http://127.0.0.1:9/a.bin"], {"pause": "true"}]},
        {"methodName": "aria2.nope", "params": [token]},
        {"methodName": "aria2.getGlobalStat", "params": ["token:wrong"]},
        {"methodName": "aria2.tellWaiting", "params": [token, 0, 10, ["status"]]},
        "not a call",
    ]]});
    let answer = raw(&rpc, &body.to_string()).await;
    let results = answer["result"].as_array().unwrap();
    assert_eq!(results.len(), 5, "{answer}");
    let gid = results[0][0].as_str().unwrap();
    assert_eq!(gid.len(), 16);
    assert!(gid.bytes().all(|b| b.is_ascii_hexdigit()), "{gid}");
    assert_eq!(results[1]["code"], -32601);
    assert_eq!(results[2], json!({"code": 1, "message": "Unauthorized"}));
    assert_eq!(results[3], json!([[{"status": "paused"}]]));
    assert_eq!(results[4]["code"], -32602);
}

#[tokio::test]
async fn a_download_runs_to_completion_and_keys_filter_its_status() {
    let content = random_bytes(3 << 20, 16);
    let origin = Origin::start(OriginConfig {
        content: content.clone(),
        ..OriginConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let rpc = open(&dir.path().join("data"), dir.path(), &stop).await;
    let gid = result(
        &rpc,
        "aria2.addUri",
        json!([[origin.url("/files/a.bin")], {"out": "renamed.bin", "split": "4"}]),
    )
    .await;
    let keys = json!([
        "gid",
        "status",
        "totalLength",
        "completedLength",
        "nonsense"
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = result(&rpc, "aria2.tellStatus", json!([gid, keys])).await;
        if status["status"] == "complete" || status["status"] == "error" {
            break status;
        }
        assert!(Instant::now() < deadline, "no end in 60 s: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let size = content.len().to_string();
    assert_eq!(
        status,
        json!({"gid": gid, "status": "complete", "totalLength": size, "completedLength": size})
    );
    let saved = std::fs::read(dir.path().join("renamed.bin")).unwrap();
    assert_eq!(sha256_hex(&saved), sha256_hex(&content));
    // Without keys, every field, numbers as strings.
    let full = result(&rpc, "aria2.tellStatus", json!([gid])).await;
    for key in [
        "uploadLength",
        "downloadSpeed",
        "connections",
        "errorCode",
        "dir",
    ] {
        assert!(full[key].is_string(), "{key} in {full}");
    }
    // Without a tracker nothing is uploaded; the pieces are aria2's for HTTP, 1 MiB each.
    assert_eq!(full["uploadLength"], "0");
    assert_eq!(full["uploadSpeed"], "0");
    assert_eq!(full["pieceLength"], "1048576");
    let pieces = content.len().div_ceil(1 << 20).to_string();
    assert_eq!(full["numPieces"], json!(pieces));
    let path = dir.path().join("renamed.bin");
    assert_eq!(full["files"][0]["path"], json!(path.to_string_lossy()));
    assert_eq!(
        full["files"][0]["uris"][0]["uri"],
        origin.url("/files/a.bin")
    );
    let stopped = result(&rpc, "aria2.tellStopped", json!([0, 10, ["gid"]])).await;
    assert_eq!(stopped, json!([{"gid": gid}]));
    assert_eq!(result(&rpc, "aria2.tellActive", json!([])).await, json!([]));
    result(&rpc, "aria2.removeDownloadResult", json!([gid])).await;
    assert_eq!(
        result(&rpc, "aria2.tellStopped", json!([0, 10])).await,
        json!([])
    );
}

#[tokio::test]
async fn the_queue_is_found_again_in_order_and_paused_ones_stay_paused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let stop = CancellationToken::new();
    let rpc = open(&data, dir.path(), &stop).await;
    let mut gids = Vec::new();
    for name in ["a", "b", "c"] {
        let uri = format!("http://127.0.0.1:9/{name}.bin");
        let options = json!({"pause": "true", "out": format!("{name}.out"), "header": ["X-A: 1"]});
        gids.push(result(&rpc, "aria2.addUri", json!([[uri], options])).await);
    }
    // c to the front, a to the end.
    assert_eq!(
        result(&rpc, "aria2.changePosition", json!([gids[2], 0, "POS_SET"])).await,
        json!(0)
    );
    assert_eq!(
        result(&rpc, "aria2.changePosition", json!([gids[0], 0, "POS_END"])).await,
        json!(2)
    );
    result(
        &rpc,
        "aria2.changeGlobalOption",
        json!([{"max-overall-download-limit": "1M", "max-concurrent-downloads": "3"}]),
    )
    .await;
    let exported = result(&rpc, "shoal.exportQueue", json!([])).await;
    assert_eq!(
        exported,
        "http://127.0.0.1:9/c.bin\n out=c.out\n header=X-A: 1\n pause=true\n\
         http://127.0.0.1:9/b.bin\n out=b.out\n header=X-A: 1\n pause=true\n\
         http://127.0.0.1:9/a.bin\n out=a.out\n header=X-A: 1\n pause=true\n"
    );
    stop.cancel();
    drop(rpc);

    let stop = CancellationToken::new();
    let rpc = open(&data, dir.path(), &stop).await;
    let waiting = result(&rpc, "aria2.tellWaiting", json!([0, 10, ["gid", "status"]])).await;
    assert_eq!(
        waiting,
        json!([
            {"gid": gids[2], "status": "paused"},
            {"gid": gids[1], "status": "paused"},
            {"gid": gids[0], "status": "paused"},
        ])
    );
    let options = result(&rpc, "aria2.getOption", json!([gids[1]])).await;
    assert_eq!(options["out"], "b.out");
    assert_eq!(options["header"], json!(["X-A: 1"]));
    let global = result(&rpc, "aria2.getGlobalOption", json!([])).await;
    assert_eq!(global["max-overall-download-limit"], "1048576");
    assert_eq!(global["max-concurrent-downloads"], "3");
    // A negative offset lists from the end, backwards.
    let last = result(&rpc, "aria2.tellWaiting", json!([-1, 1, ["gid"]])).await;
    assert_eq!(last, json!([{"gid": gids[0]}]));
    result(&rpc, "aria2.remove", json!([gids[1]])).await;
    let stopped = result(&rpc, "aria2.tellStopped", json!([0, 10, ["gid", "status"]])).await;
    assert_eq!(stopped, json!([{"gid": gids[1], "status": "removed"}]));
    stop.cancel();
}

#[tokio::test]
async fn a_metalink_adds_one_download_per_file_with_its_name_and_hash() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let rpc = open(&dir.path().join("data"), dir.path(), &stop).await;
    let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<metalink xmlns="urn:ietf:params:xml:ns:metalink">
  <file name="one.bin">
    <hash type="sha-256">{sha}</hash>
    <url priority="1">http://127.0.0.1:9/one.bin</url>
    <url priority="2">http://127.0.0.2:9/one.bin</url>
  </file>
  <file name="two.bin"><url>http://127.0.0.1:9/two.bin</url></file>
</metalink>"#
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(xml);
    let gids = result(
        &rpc,
        "aria2.addMetalink",
        json!([encoded, {"pause": "true"}]),
    )
    .await;
    let gids = gids.as_array().unwrap();
    assert_eq!(gids.len(), 2, "{gids:?}");
    let one = result(&rpc, "aria2.getOption", json!([gids[0]])).await;
    assert_eq!(one["out"], "one.bin");
    assert_eq!(one["checksum"], format!("sha-256={sha}"));
    let uris = result(&rpc, "aria2.getUris", json!([gids[0]])).await;
    assert_eq!(uris.as_array().unwrap().len(), 2, "{uris}");
    let two = result(&rpc, "aria2.getOption", json!([gids[1]])).await;
    assert_eq!(two["out"], "two.bin");
    let answer = call(&rpc, "aria2.addMetalink", json!(["not base64!"])).await;
    assert_eq!(error_code(&answer), -32602, "{answer}");
}
