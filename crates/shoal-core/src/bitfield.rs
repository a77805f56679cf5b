//! A fixed-length set of bits: finished blocks of a download, or verified pieces of a content.

use serde::{Deserialize, Serialize};

/// A bit per block or piece, most significant bit first within each byte (the BitTorrent
/// convention), so the byte form can be sent over the wire as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bitfield {
    len: u32,
    bytes: Vec<u8>,
}

impl Bitfield {
    /// An empty set of `len` bits, all clear.
    pub fn new(len: u32) -> Self {
        Self {
            len,
            bytes: vec![0; (len as usize).div_ceil(8)],
        }
    }

    /// A set of `len` bits, all set: every block or piece held.
    pub fn full(len: u32) -> Self {
        let mut field = Self::new(len);
        for i in 0..len {
            field.set(i);
        }
        field
    }

    /// Rebuilds a bitfield from its byte form; `None` when the length does not match or a bit
    /// past `len` is set (so every set has one encoding).
    pub fn from_bytes(len: u32, bytes: Vec<u8>) -> Option<Self> {
        if bytes.len() != (len as usize).div_ceil(8) {
            return None;
        }
        let spare = (bytes.len() * 8) as u32 - len;
        if spare > 0 && bytes.last().is_some_and(|b| b & ((1u8 << spare) - 1) != 0) {
            return None;
        }
        Some(Self { len, bytes })
    }

    /// The wire form: `len.div_ceil(8)` bytes, spare bits of the last byte clear; `from_bytes`
    /// reads it back.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The number of bits (blocks or pieces), set or not.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True when the set has no bits at all (a zero-length file), not when no bit is set.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether bit `i` is set; an `i` past the end reads as clear.
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bytes[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Sets bit `i`. Panics when `i >= len`: an index past the end is a bug in the caller.
    pub fn set(&mut self, i: u32) {
        assert!(i < self.len, "bit {i} out of range {}", self.len);
        self.bytes[(i / 8) as usize] |= 0x80 >> (i % 8);
    }

    /// Clears bit `i`. Panics when `i >= len`.
    pub fn clear(&mut self, i: u32) {
        assert!(i < self.len, "bit {i} out of range {}", self.len);
        self.bytes[(i / 8) as usize] &= !(0x80 >> (i % 8));
    }

    /// How many bits are set.
    pub fn count_ones(&self) -> u32 {
        self.bytes.iter().map(|b| b.count_ones()).sum()
    }

    /// True when every bit is set (a zero-length set is full).
    pub fn is_full(&self) -> bool {
        self.count_ones() == self.len
    }

    /// The indices of the set bits, in increasing order.
    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_count() {
        let mut field = Bitfield::new(10);
        field.set(0);
        field.set(9);
        assert!(field.get(0) && field.get(9) && !field.get(5));
        assert_eq!(field.count_ones(), 2);
        assert_eq!(field.as_bytes(), &[0x80, 0x40]);
        field.clear(0);
        assert_eq!(field.ones().collect::<Vec<_>>(), vec![9]);
    }

    #[test]
    fn from_bytes_rejects_stray_bits_and_lengths() {
        assert!(Bitfield::from_bytes(10, vec![0, 0x20]).is_none());
        assert!(Bitfield::from_bytes(10, vec![0]).is_none());
        assert_eq!(
            Bitfield::from_bytes(10, vec![0xff, 0xc0])
                .unwrap()
                .count_ones(),
            10
        );
        assert!(Bitfield::full(10).is_full());
    }
}
