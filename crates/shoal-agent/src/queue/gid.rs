//! A download's id in the queue, as aria2 makes them: 16 hex digits.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A queued download's id: 64 random bits, written as 16 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gid(u64);

impl Gid {
    /// A new random gid (never zero, which aria2 clients take for "none").
    pub(crate) fn random() -> Self {
        loop {
            let n = rand::rng().next_u64();
            if n != 0 {
                return Self(n);
            }
        }
    }
}

impl fmt::Display for Gid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Text that is not 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a gid is 16 hex digits")]
pub struct BadGid;

impl FromStr for Gid {
    type Err = BadGid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BadGid);
        }
        u64::from_str_radix(s, 16).map(Self).map_err(|_| BadGid)
    }
}

impl Serialize for Gid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Gid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gids_are_sixteen_hex_digits() {
        let gid = Gid::random();
        let text = gid.to_string();
        assert_eq!(text.len(), 16);
        assert_eq!(text.parse::<Gid>(), Ok(gid));
        assert_eq!(
            "000000000000000a".parse::<Gid>().unwrap().to_string(),
            "000000000000000a"
        );
        for bad in [
            "",
            "abc",
            "000000000000000g",
            "0000000000000000a",
            "+00000000000000a",
        ] {
            assert_eq!(bad.parse::<Gid>(), Err(BadGid), "{bad}");
        }
    }
}
