//! Half-open byte ranges `[start, end)`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A half-open byte range `[start, end)`. `start <= end` always holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ByteRange {
    start: u64,
    end: u64,
}

impl ByteRange {
    /// The range `[start, end)`, or `None` when `start > end`.
    pub fn new(start: u64, end: u64) -> Option<Self> {
        (start <= end).then_some(Self { start, end })
    }

    /// The first byte's offset.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The offset one past the last byte (exclusive).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The number of bytes, `end - start`.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// True when the range holds no bytes (`start == end`).
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Whether byte `offset` is inside `[start, end)`.
    pub fn contains(&self, offset: u64) -> bool {
        self.start <= offset && offset < self.end
    }

    /// The value of an HTTP `Range` header asking for exactly this range. Empty ranges cannot be
    /// asked for over HTTP, so callers never send one.
    pub fn http_header(&self) -> String {
        debug_assert!(!self.is_empty());
        format!("bytes={}-{}", self.start, self.end - 1)
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_reversed_ranges() {
        assert!(ByteRange::new(5, 4).is_none());
        assert_eq!(ByteRange::new(4, 4).unwrap().len(), 0);
    }

    #[test]
    fn http_header_is_inclusive() {
        assert_eq!(ByteRange::new(0, 100).unwrap().http_header(), "bytes=0-99");
    }
}
