//! Reading the secret out of an `Authorization: Bearer <secret>` header value, the one way the
//! tracker and the agents' piece servers accept credentials.
//!
//! The scheme is matched without regard to case (RFC 7235 §2.1) and is followed by one or more
//! spaces; whitespace around the secret is dropped. Anything that could not have come through an
//! HTTP header as text (control characters, bytes outside ASCII) is refused outright rather than
//! looked up, and so is an empty secret.

use thiserror::Error;

/// Why a header value yields no secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BearerError {
    /// Not bearer credentials: another scheme, no space after the scheme, or no secret.
    #[error("not bearer credentials")]
    NotBearer,
    /// Characters no secret is made of: control characters or bytes outside ASCII.
    #[error("the credentials hold characters outside visible ASCII")]
    Malformed,
}

/// The secret in the `Authorization` header value `value`.
pub fn parse(value: &[u8]) -> Result<&str, BearerError> {
    let value = std::str::from_utf8(value)
        .ok()
        .filter(|v| {
            v.bytes()
                .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
        })
        .ok_or(BearerError::Malformed)?;
    let (scheme, secret) = value.split_once(' ').ok_or(BearerError::NotBearer)?;
    let secret = secret.trim_matches([' ', '\t']);
    if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() {
        return Err(BearerError::NotBearer);
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_secret() {
        assert_eq!(parse(b"Bearer s3cret-token"), Ok("s3cret-token"));
        assert_eq!(parse(b"bearer s3cret"), Ok("s3cret"));
        assert_eq!(parse(b"BEARER   s3cret \t"), Ok("s3cret"));
        assert_eq!(parse(b"Bearer a=/+~._-"), Ok("a=/+~._-"));
    }

    #[test]
    fn refuses_other_schemes_and_empty_secrets() {
        for value in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"Bearer  \t ",
            b"Bearer\ts3cret",
            b"Basic czNjcmV0",
            b" Bearer s3cret",
            b"Bearers s3cret",
        ] {
            assert_eq!(
                parse(value),
                Err(BearerError::NotBearer),
                "{}",
                value.escape_ascii()
            );
        }
    }

    #[test]
    fn refuses_what_no_header_text_holds() {
        for value in [
            &b"Bearer s3cr\x00t"[..],
            b"Bearer s3cret\r\n",
            b"Bearer na\xc3\xafve",
            b"Bearer \xff",
            b"Basic \x7f",
        ] {
            assert_eq!(
                parse(value),
                Err(BearerError::Malformed),
                "{}",
                value.escape_ascii()
            );
        }
    }
}
