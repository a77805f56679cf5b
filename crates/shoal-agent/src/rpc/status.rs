//! The struct `aria2.tellStatus` (and `tellActive`, `tellWaiting`, `tellStopped`) answers for
//! one download, with aria2's key names and every number as a string, cut down to the `keys`
//! asked for.

use serde_json::{json, Map, Value};

use crate::queue::Download;

/// Every key a status struct has, in aria2's order.
const KEYS: [&str; 15] = [
    "gid",
    "status",
    "totalLength",
    "completedLength",
    "uploadLength",
    "downloadSpeed",
    "uploadSpeed",
    "connections",
    "numPieces",
    "pieceLength",
    "errorCode",
    "errorMessage",
    "dir",
    "files",
    "numSeeders",
];

/// The status of `download`; with `keys`, only those (unknown ones are left out, as aria2
/// does).
pub(crate) fn of(download: &Download, keys: Option<&[String]>) -> Value {
    let wanted = |key: &str| keys.is_none_or(|keys| keys.iter().any(|k| k == key));
    let mut map = Map::new();
    for key in KEYS.iter().filter(|k| wanted(k)) {
        map.insert((*key).to_string(), field(download, key));
    }
    Value::Object(map)
}

fn field(d: &Download, key: &str) -> Value {
    let total = d.total.unwrap_or(0);
    match key {
        "gid" => d.gid.to_string().into(),
        "status" => d.status.name().into(),
        "totalLength" => total.to_string().into(),
        "completedLength" => d.done.to_string().into(),
        "uploadLength" => d.upload_length.to_string().into(),
        "uploadSpeed" => d.upload_speed.to_string().into(),
        "numSeeders" => "0".into(),
        "downloadSpeed" => d.speed.to_string().into(),
        "connections" => d.connections.to_string().into(),
        "numPieces" => pieces(d).0.to_string().into(),
        "pieceLength" => pieces(d).1.to_string().into(),
        "errorCode" => d.error.as_ref().map_or(0, |e| e.0).to_string().into(),
        "errorMessage" => d.error.as_ref().map_or("", |e| e.1.as_str()).into(),
        "dir" => d.dir.to_string_lossy().into_owned().into(),
        "files" => files(d),
        _ => Value::Null,
    }
}

/// aria2's piece length for an HTTP download (its `--piece-length` default, 1M).
const HTTP_PIECE_LENGTH: u64 = 1 << 20;

/// The piece count and length: the swarm's layout for a download through the swarm, else
/// aria2's for HTTP, 1 MiB pieces over the known length.
fn pieces(d: &Download) -> (u64, u64) {
    match d.layout {
        Some(layout) => (u64::from(layout.piece_count()), layout.piece_size()),
        None => (
            d.total.unwrap_or(0).div_ceil(HTTP_PIECE_LENGTH),
            HTTP_PIECE_LENGTH,
        ),
    }
}

/// `files`, as `aria2.getFiles` answers too: one file, its mirrors as its URIs.
pub(crate) fn files(d: &Download) -> Value {
    // The file the user gets, as aria2 reports it while it still downloads: a running
    // download's own path may be the agent's object store (a swarm fetch), named by content id.
    let path = match (&d.path, &d.options.out) {
        (Some(path), _) if d.status == crate::queue::Status::Complete => {
            path.to_string_lossy().into_owned()
        }
        (_, Some(out)) => d.dir.join(out).to_string_lossy().into_owned(),
        (Some(path), None) => path.to_string_lossy().into_owned(),
        (None, None) => String::new(),
    };
    json!([{
        "index": "1",
        "path": path,
        "length": d.total.unwrap_or(0).to_string(),
        "completedLength": d.done.to_string(),
        "selected": "true",
        "uris": uris(d),
    }])
}

/// `uris`, as `aria2.getUris` answers: each mirror, `used` while the download runs.
pub(crate) fn uris(d: &Download) -> Value {
    let state = if d.status == crate::queue::Status::Active {
        "used"
    } else {
        "waiting"
    };
    Value::Array(
        d.uris
            .iter()
            .map(|uri| json!({ "uri": uri, "status": state }))
            .collect(),
    )
}
