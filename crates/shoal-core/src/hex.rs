//! Lowercase hexadecimal, the text form of content ids, piece digests and bitfields on the wire.
//! Decoding is strict (exactly two digits per byte, no signs or spaces) so that every value has
//! one accepted spelling apart from letter case.

use thiserror::Error;

/// Why hex text did not decode.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HexError {
    /// The text has an odd number of digits (the count given), so the last byte is half missing.
    #[error("hex text has an odd number of digits ({0})")]
    OddLength(usize),
    /// The character at this byte offset (from 0) is not `0-9`, `a-f` or `A-F`.
    #[error("character {0} is not a hex digit")]
    NotHex(usize),
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex, two digits per byte.
pub fn encode(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        text.push(DIGITS[usize::from(b >> 4)] as char);
        text.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    text
}

fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The bytes of `text`, two digits per byte, either letter case; anything else is an error naming
/// the offending offset.
pub fn decode(text: &str) -> Result<Vec<u8>, HexError> {
    let raw = text.as_bytes();
    if raw.len() % 2 != 0 {
        return Err(HexError::OddLength(raw.len()));
    }
    raw.chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| {
            let hi = digit(pair[0]).ok_or(HexError::NotHex(2 * i))?;
            let lo = digit(pair[1]).ok_or(HexError::NotHex(2 * i + 1))?;
            Ok(hi << 4 | lo)
        })
        .collect()
}

/// Decodes into a fixed-size array, for ids and digests.
pub fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    decode(text).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_signs_and_odd_lengths() {
        assert_eq!(decode("+f"), Err(HexError::NotHex(0)));
        assert_eq!(decode("abc"), Err(HexError::OddLength(3)));
        assert_eq!(decode("é"), Err(HexError::NotHex(0)));
        assert_eq!(decode("0A"), Ok(vec![10]));
        assert_eq!(decode_array::<2>("00"), None);
    }

    proptest! {
        #[test]
        fn round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(decode(&encode(&bytes)).unwrap(), bytes);
        }

        #[test]
        fn never_panics(text in ".{0,40}") {
            let _ = decode(&text);
        }
    }
}
