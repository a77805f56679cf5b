//! aria2's methods on the queue: names, parameters and answers as aria2 1.37 has them, for
//! the options shoal has. `aria2.*` calls need the secret first; `system.*` calls do not (as
//! with aria2), and each call in a `system.multicall` brings its own.

use base64::Engine as _;
use serde_json::{json, Map, Value};
use shoal_engine::urllist::EntryOptions;
use url::Url;

use super::jsonrpc::RpcError;
use super::{status, Rpc};
use crate::queue::{self, Gid, QueueError, Whence};

/// Every method served, for `system.listMethods`.
const METHODS: [&str; 30] = [
    "aria2.addUri",
    "aria2.addMetalink",
    "aria2.remove",
    "aria2.forceRemove",
    "aria2.pause",
    "aria2.forcePause",
    "aria2.pauseAll",
    "aria2.forcePauseAll",
    "aria2.unpause",
    "aria2.unpauseAll",
    "aria2.tellStatus",
    "aria2.getUris",
    "aria2.getFiles",
    "aria2.tellActive",
    "aria2.tellWaiting",
    "aria2.tellStopped",
    "aria2.changePosition",
    "aria2.getGlobalStat",
    "aria2.getVersion",
    "aria2.getSessionInfo",
    "aria2.getOption",
    "aria2.changeOption",
    "aria2.getGlobalOption",
    "aria2.changeGlobalOption",
    "aria2.purgeDownloadResult",
    "aria2.removeDownloadResult",
    "shoal.exportQueue",
    "system.multicall",
    "system.listMethods",
    "system.listNotifications",
];

const NOTIFICATIONS: [&str; 5] = [
    "aria2.onDownloadStart",
    "aria2.onDownloadPause",
    "aria2.onDownloadStop",
    "aria2.onDownloadComplete",
    "aria2.onDownloadError",
];

/// The most calls one `system.multicall` may hold.
const MAX_MULTICALL: usize = 10_000;

/// Runs `method` with `params`.
pub(crate) async fn call(rpc: &Rpc, method: &str, params: Vec<Value>) -> Result<Value, RpcError> {
    match method {
        "system.listMethods" => return Ok(json!(METHODS)),
        "system.listNotifications" => return Ok(json!(NOTIFICATIONS)),
        "system.multicall" => return Box::pin(multicall(rpc, params)).await,
        _ if !METHODS.contains(&method) => return Err(RpcError::no_method()),
        _ => {}
    }
    let mut params = Params::new(authorized(rpc, params)?);
    let queue = rpc.queue();
    let ok = || Ok(json!("OK"));
    match method {
        "aria2.addUri" => {
            let uris = params.uris()?;
            let options = params.options()?;
            let position = params.position()?;
            let gid = queue.add(uris, options, position).await.map_err(refused)?;
            Ok(json!(gid.to_string()))
        }
        "aria2.addMetalink" => add_metalink(rpc, &mut params).await,
        "aria2.remove" | "aria2.forceRemove" => {
            let gid = queue.remove(params.gid()?).await.map_err(refused)?;
            Ok(json!(gid.to_string()))
        }
        "aria2.pause" | "aria2.forcePause" => {
            let gid = queue.pause(params.gid()?).await.map_err(refused)?;
            Ok(json!(gid.to_string()))
        }
        "aria2.pauseAll" | "aria2.forcePauseAll" => {
            queue.pause_all().await.map_err(refused)?;
            ok()
        }
        "aria2.unpause" => {
            let gid = queue.unpause(params.gid()?).await.map_err(refused)?;
            Ok(json!(gid.to_string()))
        }
        "aria2.unpauseAll" => {
            queue.unpause_all().await.map_err(refused)?;
            ok()
        }
        "aria2.tellStatus" => {
            let gid = params.gid()?;
            let keys = params.keys()?;
            let download = queue.get(gid).map_err(refused)?;
            Ok(status::of(&download, keys.as_deref()))
        }
        "aria2.getUris" => Ok(status::uris(&queue.get(params.gid()?).map_err(refused)?)),
        "aria2.getFiles" => Ok(status::files(&queue.get(params.gid()?).map_err(refused)?)),
        "aria2.tellActive" => {
            let keys = params.keys()?;
            Ok(listed(&queue.active(), keys.as_deref()))
        }
        "aria2.tellWaiting" | "aria2.tellStopped" => {
            let offset = params.int("offset")?;
            let num = usize::try_from(params.int("num")?).unwrap_or(0);
            let keys = params.keys()?;
            let downloads = if method == "aria2.tellWaiting" {
                queue.waiting(offset, num)
            } else {
                queue.stopped(offset, num)
            };
            Ok(listed(&downloads, keys.as_deref()))
        }
        "aria2.changePosition" => {
            let gid = params.gid()?;
            let pos = params.int("pos")?;
            let whence = match params.string("how")?.as_str() {
                "POS_SET" => Whence::Start,
                "POS_CUR" => Whence::Current,
                "POS_END" => Whence::End,
                other => {
                    return Err(RpcError::params(format!(
                        "how is POS_SET, POS_CUR or POS_END, not {other:?}"
                    )))
                }
            };
            let at = (queue.change_position(gid, pos, whence).await).map_err(refused)?;
            Ok(json!(at))
        }
        "aria2.getGlobalStat" => {
            let totals = queue.totals();
            Ok(json!({
                "downloadSpeed": totals.download_speed.to_string(),
                "uploadSpeed": totals.upload_speed.to_string(),
                "numActive": totals.active.to_string(),
                "numWaiting": totals.waiting.to_string(),
                "numStopped": totals.stopped.to_string(),
                "numStoppedTotal": totals.stopped.to_string(),
            }))
        }
        "aria2.getVersion" => Ok(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "enabledFeatures": ["HTTPS", "Metalink", "Message Digest"],
        })),
        "aria2.getSessionInfo" => Ok(json!({ "sessionId": session_id(rpc) })),
        "aria2.getOption" => {
            let download = queue.get(params.gid()?).map_err(refused)?;
            let mut map = options_map(&download.options.pairs());
            map.insert(
                "dir".into(),
                json!(download.dir.to_string_lossy().into_owned()),
            );
            Ok(Value::Object(map))
        }
        "aria2.changeOption" => {
            let gid = params.gid()?;
            let mut options = queue.get(gid).map_err(refused)?.options;
            params.options_into(&mut options)?;
            queue.change_options(gid, options).await.map_err(refused)?;
            ok()
        }
        "aria2.getGlobalOption" => Ok(Value::Object(options_map(&queue.global()))),
        "aria2.changeGlobalOption" => {
            let pairs = params.pairs()?;
            for (key, value) in &pairs {
                queue::check_global(key, value)
                    .map_err(|reason| RpcError::aria2(format!("{key}: {reason}")))?;
            }
            queue.change_global(&pairs).await.map_err(refused)?;
            ok()
        }
        "aria2.purgeDownloadResult" => {
            queue.purge().await.map_err(refused)?;
            ok()
        }
        "aria2.removeDownloadResult" => {
            queue.remove_result(params.gid()?).await.map_err(refused)?;
            ok()
        }
        "shoal.exportQueue" => Ok(json!(queue.export())),
        _ => Err(RpcError::no_method()),
    }
}

/// The parameters after the secret, if the secret is right.
fn authorized(rpc: &Rpc, mut params: Vec<Value>) -> Result<Vec<Value>, RpcError> {
    let given = match params.first() {
        Some(Value::String(first)) => first.strip_prefix("token:").map(str::to_string),
        _ => None,
    };
    match given {
        Some(secret) if rpc.authorized(&secret) => {
            params.remove(0);
            Ok(params)
        }
        _ => Err(RpcError::unauthorized()),
    }
}

async fn multicall(rpc: &Rpc, params: Vec<Value>) -> Result<Value, RpcError> {
    let Some(Value::Array(calls)) = params.into_iter().next() else {
        return Err(RpcError::params("system.multicall takes an array of calls"));
    };
    if calls.len() > MAX_MULTICALL {
        return Err(RpcError::params(format!(
            "at most {MAX_MULTICALL} calls at once"
        )));
    }
    let queue = rpc.queue().clone();
    queue
        .batched(multicall_each(rpc, calls))
        .await
        .map_err(refused)?
}

async fn multicall_each(rpc: &Rpc, calls: Vec<Value>) -> Result<Value, RpcError> {
    let mut answers = Vec::with_capacity(calls.len());
    for one in calls {
        let (method, params) = match one {
            Value::Object(mut fields) => (fields.remove("methodName"), fields.remove("params")),
            _ => (None, None),
        };
        let answer = match (method, params) {
            (Some(Value::String(method)), None) if method != "system.multicall" => {
                call(rpc, &method, Vec::new()).await
            }
            (Some(Value::String(method)), Some(Value::Array(params)))
                if method != "system.multicall" =>
            {
                call(rpc, &method, params).await
            }
            (Some(Value::String(method)), _) if method == "system.multicall" => {
                Err(RpcError::aria2("system.multicall cannot be nested"))
            }
            _ => Err(RpcError::params(
                "each call is {\"methodName\": …, \"params\": […]}",
            )),
        };
        // Results come back each in an array of one, errors as the fault struct.
        answers.push(match answer {
            Ok(result) => json!([result]),
            Err(error) => error.to_value(),
        });
    }
    Ok(Value::Array(answers))
}

async fn add_metalink(rpc: &Rpc, params: &mut Params) -> Result<Value, RpcError> {
    let text = params.string("metalink")?;
    let xml = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| RpcError::params("metalink: expected a base64-encoded Metalink document"))?;
    let metalink = shoal_engine::metalink::parse(&xml)
        .map_err(|e| RpcError::aria2(format!("the Metalink does not parse: {e}")))?;
    let options = params.options()?;
    let mut position = params.position()?;
    let mut gids = Vec::new();
    for file in metalink.files {
        let uris: Vec<Url> = file.urls.into_iter().map(|m| m.url).collect();
        if uris.is_empty() {
            continue;
        }
        let mut options = options.clone();
        if options.out.is_none() {
            options.out = Some(file.name.into());
        }
        if options.checksum.is_none() {
            options.checksum = file.hashes.into_iter().next();
        }
        let gid = rpc
            .queue()
            .add(uris, options, position)
            .await
            .map_err(refused)?;
        position = position.map(|p| p + 1);
        gids.push(gid.to_string());
    }
    Ok(json!(gids))
}

/// The session's id: the first 16 hex digits of the secret's hash, so it stays the same across
/// restarts and says nothing about the secret.
fn session_id(rpc: &Rpc) -> String {
    let hash = blake3::hash(rpc.inner.secret.as_bytes());
    shoal_core::hex::encode(&hash.as_bytes()[..8])
}

fn listed(downloads: &[queue::Download], keys: Option<&[String]>) -> Value {
    Value::Array(downloads.iter().map(|d| status::of(d, keys)).collect())
}

/// Options as aria2 answers them: strings, and `header` as an array.
fn options_map(pairs: &[(&'static str, String)]) -> Map<String, Value> {
    let mut map = Map::new();
    for (key, value) in pairs {
        if *key == "header" {
            let headers = map.entry("header").or_insert_with(|| json!([]));
            if let Value::Array(list) = headers {
                list.push(json!(value));
            }
        } else {
            map.insert((*key).to_string(), json!(value));
        }
    }
    map
}

fn refused(error: QueueError) -> RpcError {
    RpcError::aria2(shoal_core::chain::chain(&error))
}

/// A call's parameters, read in order.
struct Params(std::vec::IntoIter<Value>);

impl Params {
    fn new(params: Vec<Value>) -> Self {
        Self(params.into_iter())
    }

    fn next(&mut self) -> Option<Value> {
        self.0.next()
    }

    fn string(&mut self, name: &str) -> Result<String, RpcError> {
        match self.next() {
            Some(Value::String(text)) => Ok(text),
            _ => Err(RpcError::params(format!("{name}: expected a string"))),
        }
    }

    fn gid(&mut self) -> Result<Gid, RpcError> {
        let text = self.string("gid")?;
        text.parse()
            .map_err(|_| RpcError::params(format!("gid: {text:?} is not 16 hex digits")))
    }

    /// An integer, given as a number or as a string of one (aria2 takes both).
    fn int(&mut self, name: &str) -> Result<i64, RpcError> {
        match self.next() {
            Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64().expect("checked")),
            Some(Value::String(s)) if s.parse::<i64>().is_ok() => Ok(s.parse().expect("checked")),
            _ => Err(RpcError::params(format!("{name}: expected an integer"))),
        }
    }

    fn uris(&mut self) -> Result<Vec<Url>, RpcError> {
        let Some(Value::Array(list)) = self.next() else {
            return Err(RpcError::params("uris: expected an array of URIs"));
        };
        let mut uris = Vec::new();
        for uri in list {
            let Value::String(text) = uri else {
                return Err(RpcError::params("uris: expected strings"));
            };
            let url = Url::parse(&text)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
                .ok_or_else(|| {
                    RpcError::aria2("uris: only http and https URIs can be downloaded")
                })?;
            if !uris.contains(&url) {
                uris.push(url);
            }
        }
        if uris.is_empty() {
            return Err(RpcError::aria2("No URI to download."));
        }
        Ok(uris)
    }

    /// The options object (missing: none), as name and value pairs.
    fn pairs(&mut self) -> Result<Vec<(String, String)>, RpcError> {
        let fields = match self.next() {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Object(fields)) => fields,
            Some(_) => return Err(RpcError::params("options: expected an object")),
        };
        let mut pairs = Vec::new();
        for (key, value) in fields {
            match value {
                Value::String(value) => pairs.push((key, value)),
                Value::Array(values) => {
                    for value in values {
                        let Value::String(value) = value else {
                            return Err(RpcError::params(format!("{key}: expected strings")));
                        };
                        pairs.push((key.clone(), value));
                    }
                }
                _ => return Err(RpcError::params(format!("{key}: expected a string"))),
            }
        }
        Ok(pairs)
    }

    fn options(&mut self) -> Result<EntryOptions, RpcError> {
        let mut options = EntryOptions::default();
        self.options_into(&mut options)?;
        Ok(options)
    }

    /// Sets the options object's options on `options`; options aria2 has and shoal does not
    /// are ignored, as aria2 ignores those of other protocols.
    fn options_into(&mut self, options: &mut EntryOptions) -> Result<(), RpcError> {
        let mut headers_given = false;
        for (key, value) in self.pairs()? {
            if key == "header" && !headers_given {
                options.headers.clear();
                headers_given = true;
            }
            options
                .set(&key, &value)
                .map_err(|e| RpcError::aria2(e.to_string()))?;
        }
        Ok(())
    }

    /// A position in the waiting list (missing: the end).
    fn position(&mut self) -> Result<Option<usize>, RpcError> {
        match self.next() {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                Ok(n.as_u64().and_then(|n| usize::try_from(n).ok()))
            }
            _ => Err(RpcError::params("position: expected a number from 0")),
        }
    }

    /// The `keys` filter (missing: every key).
    fn keys(&mut self) -> Result<Option<Vec<String>>, RpcError> {
        match self.next() {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(keys)) => keys
                .into_iter()
                .map(|k| match k {
                    Value::String(k) => Ok(k),
                    _ => Err(RpcError::params("keys: expected strings")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            _ => Err(RpcError::params("keys: expected an array of strings")),
        }
    }
}
