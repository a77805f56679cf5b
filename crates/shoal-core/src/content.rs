//! [`ContentId`]: the name of a content everywhere in shoal, BLAKE3 of its manifest.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::hex;

/// BLAKE3 of a [`Manifest`](crate::Manifest)'s canonical encoding, so a content id names
/// exactly one list of piece digests and anyone can check a manifest against its id. The text
/// form is 64 lowercase hex digits (upper case is accepted when parsing).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentId([u8; 32]);

/// A content id's text was not 64 hex digits; holds the text as given.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("a content id is 64 hex digits, got {0:?}")]
pub struct ContentIdError(String);

impl ContentId {
    /// The id whose 32 BLAKE3 bytes are `bytes`; no check is possible, so use
    /// [`ContentId::of_canonical`] for a manifest you hold.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 raw BLAKE3 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The id of the given canonical manifest bytes; see [`Manifest::canonical_bytes`].
    ///
    /// [`Manifest::canonical_bytes`]: crate::Manifest::canonical_bytes
    pub fn of_canonical(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({self})")
    }
}

impl FromStr for ContentId {
    type Err = ContentIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        hex::decode_array(s).map(Self).ok_or_else(|| {
            // Quote at most a prefix: the error text ends up in HTTP answers and logs.
            ContentIdError(s.chars().take(80).collect())
        })
    }
}

impl Serialize for ContentId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContentId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let id = ContentId::of_canonical(b"x");
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<ContentId>().unwrap(), id);
        assert_eq!(text.to_uppercase().parse::<ContentId>().unwrap(), id);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{text}\""));
        assert!("abc".parse::<ContentId>().is_err());
        assert!(serde_json::from_str::<ContentId>("\"zz\"").is_err());
    }
}
