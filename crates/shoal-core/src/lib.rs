//! Pure types shared by every shoal crate, with no I/O and no async: byte ranges, the
//! [`Layout`] of a file in pieces, checksum specifications, bitfields of finished pieces or
//! blocks, the tracker/agent wire types, and the small helpers every server and client needs
//! alike: URLs that redact themselves ([`SafeUrl`]), a [`TokenBucket`], bearer credentials,
//! safe file names and Unix time. Anything here can be unit- and property-tested without a
//! runtime.

pub mod bearer;
pub mod bitfield;
pub mod chain;
pub mod checksum;
pub mod clock;
pub mod content;
pub mod hex;
pub mod layout;
pub mod manifest;
pub mod metrics;
pub mod naming;
pub mod range;
pub mod rate;
pub mod redact;
pub mod wire;

pub use bitfield::Bitfield;
pub use checksum::{Checksum, ChecksumAlgo, ChecksumParseError};
pub use content::ContentId;
pub use layout::{Layout, LayoutError, PieceIndex};
pub use manifest::{Manifest, ManifestError, PieceDigest, PieceMismatch};
pub use range::ByteRange;
pub use rate::TokenBucket;
pub use redact::SafeUrl;
