//! The queue's global options as aria2 names them (`getGlobalOption`, `changeGlobalOption`):
//! the directory, the concurrency cap and the overall rate caps.

use std::path::PathBuf;

use super::{Caps, State};

pub(super) fn global_pairs(state: &State, caps: &Caps) -> Vec<(&'static str, String)> {
    vec![
        ("dir", state.dir.to_string_lossy().into_owned()),
        ("max-concurrent-downloads", state.max_concurrent.to_string()),
        (
            "max-overall-download-limit",
            caps.download().unwrap_or(0).to_string(),
        ),
        (
            "max-overall-upload-limit",
            caps.upload().unwrap_or(0).to_string(),
        ),
    ]
}

/// Sets one global option; unknown ones and bad values are ignored (the RPC checks them
/// first with [`check_global`]).
pub(super) fn apply_global(state: &mut State, caps: &Caps, key: &str, value: &str) {
    match (key, check_global(key, value)) {
        ("dir", Ok(_)) => state.dir = PathBuf::from(value),
        ("max-concurrent-downloads", Ok(Some(n))) => state.max_concurrent = n.max(1) as usize,
        ("max-overall-download-limit", Ok(rate)) => caps.set_download(rate),
        ("max-overall-upload-limit", Ok(rate)) => caps.set_upload(rate),
        _ => {}
    }
}

/// Checks a global option's value: its number, if it has one (`0` or `None` for "no limit").
/// `Err` names what the option takes; unknown options are `Err` too.
pub fn check_global(key: &str, value: &str) -> Result<Option<u64>, String> {
    match key {
        "dir" if !value.is_empty() => Ok(None),
        "max-concurrent-downloads" => value
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .map(Some)
            .ok_or_else(|| "expected a number from 1 to 1000".to_string()),
        "max-overall-download-limit" | "max-overall-upload-limit" => {
            if value.trim() == "0" {
                return Ok(None);
            }
            shoal_engine::Rate::parse(value)
                .map(|r| Some(r.bytes_per_sec()))
                .map_err(|_| "expected a rate such as 500K or 2M, or 0 for none".to_string())
        }
        _ => Err("not an option shoal has".to_string()),
    }
}
