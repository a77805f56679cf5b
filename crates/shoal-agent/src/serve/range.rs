//! The `Range` header of a piece request, as the piece server takes it: one range, in bytes.

use shoal_core::ByteRange;

use super::ServeError;

/// The one byte range a `Range` header asks for in a file of `size` bytes (RFC 9110 §14.1.2):
/// `bytes=a-b` (`b` past the end is cut to the end), `bytes=a-`, or `bytes=-n` (the last `n`
/// bytes). Never empty.
pub(crate) fn parse_range(value: &[u8], size: u64) -> Result<ByteRange, ServeError> {
    use ServeError::{BadRange, MultipleRanges, Unsatisfiable};
    let value = std::str::from_utf8(value).map_err(|_| BadRange)?;
    let (unit, set) = value.trim().split_once('=').ok_or(BadRange)?;
    if !unit.trim_end().eq_ignore_ascii_case("bytes") {
        return Err(BadRange);
    }
    if set.contains(',') {
        return Err(MultipleRanges { size });
    }
    let (first, last) = set.trim().split_once('-').ok_or(BadRange)?;
    let number = |text: &str| {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadRange);
        }
        // Only overflow is left, and a position past u64 is simply past the end.
        Ok(text.parse::<u64>().unwrap_or(u64::MAX))
    };
    let (start, end) = if first.is_empty() {
        let suffix = number(last)?;
        if suffix == 0 || size == 0 {
            return Err(Unsatisfiable { size });
        }
        (size - suffix.min(size), size)
    } else {
        let start = number(first)?;
        let last = if last.is_empty() {
            u64::MAX
        } else {
            number(last)?
        };
        if start > last {
            return Err(BadRange);
        }
        if start >= size {
            return Err(Unsatisfiable { size });
        }
        (start, last.saturating_add(1).min(size))
    };
    ByteRange::new(start, end).ok_or(BadRange)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Option<(u64, u64)> {
        parse_range(text.as_bytes(), 100)
            .ok()
            .map(|r| (r.start(), r.end()))
    }

    #[test]
    fn parses_single_ranges() {
        assert_eq!(parse("bytes=0-9"), Some((0, 10)));
        assert_eq!(parse("bytes=90-"), Some((90, 100)));
        assert_eq!(parse("bytes=95-200"), Some((95, 100)));
        assert_eq!(parse("bytes=-10"), Some((90, 100)));
        assert_eq!(parse("bytes=-1000"), Some((0, 100)));
        assert_eq!(parse(" Bytes = 5-5 "), Some((5, 6)));
        assert_eq!(parse("bytes=0-99999999999999999999999"), Some((0, 100)));
    }

    #[test]
    fn refuses_what_cannot_be_served() {
        let refusal = |value: &[u8], size| parse_range(value, size).unwrap_err();
        for (value, size) in [
            (&b"bytes=100-"[..], 100),
            (b"bytes=-0", 100),
            (b"bytes=0-", 0),
        ] {
            assert!(matches!(
                refusal(value, size),
                ServeError::Unsatisfiable { .. }
            ));
        }
        let multiple = refusal(b"bytes=0-1,5-6", 100);
        assert!(matches!(multiple, ServeError::MultipleRanges { size: 100 }));
        let malformed = [
            "bytes=5-1",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "items=0-1",
            "0-1",
        ];
        for bad in malformed
            .iter()
            .map(|s| s.as_bytes())
            .chain([&b"bytes=\xff-1"[..]])
        {
            assert!(matches!(refusal(bad, 100), ServeError::BadRange), "{bad:?}");
        }
    }
}
