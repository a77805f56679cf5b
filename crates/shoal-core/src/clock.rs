//! Wall-clock time as Unix timestamps, the form in which times cross machines (published-at
//! dates, leases shared by tracker replicas). Reading the system clock is the one thing here
//! that is not pure arithmetic; a clock set before 1970 reads as 0.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_agree() {
        let (secs, ms) = (unix_now(), unix_now_ms());
        // 2020-09-13, well in the past on any machine that runs this.
        assert!(secs > 1_600_000_000, "{secs}");
        assert!(ms / 1000 >= secs && ms / 1000 - secs < 60, "{secs} {ms}");
    }
}
