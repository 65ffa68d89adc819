//! The one codec for stored values: a format-version byte followed by postcard.
//!
//! Invariant: decoding never panics. A value with an unknown version byte or bytes
//! postcard cannot read is a typed [`DecodeError`], so a damaged record surfaces as
//! an error naming its table instead of taking the service down. When a record's
//! layout changes, bump [`FORMAT_VERSION`] and teach [`decode`] (or a migration) the
//! old one.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Version byte written in front of every value.
pub const FORMAT_VERSION: u8 = 1;

/// A stored value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The value was empty: not even a version byte.
    #[error("empty value")]
    Empty,
    /// The version byte is not one this build knows.
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    /// postcard could not decode the bytes.
    #[error("malformed value: {0}")]
    Malformed(String),
}

/// Encodes a value with the current format version.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let out = vec![FORMAT_VERSION];
    // postcard only fails on writer errors (none for a Vec) or on serde types it
    // cannot express (maps with unknown length, which our records never use).
    match postcard::to_extend(value, out) {
        Ok(bytes) => bytes,
        Err(e) => unreachable_encode(e),
    }
}

#[cold]
fn unreachable_encode(e: postcard::Error) -> Vec<u8> {
    // Every stored type is a plain struct/enum; reaching this is a programming error
    // caught by the codec property tests, never by user input.
    panic!("record type not encodable by postcard: {e}")
}

/// Like [`decode`], but bytes left over after the value are an error (for
/// records whose length is known exactly, like the journal's).
pub fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    match postcard::take_from_bytes(body) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(DecodeError::Malformed(format!(
            "{} bytes left over after the value",
            rest.len()
        ))),
        Err(e) => Err(DecodeError::Malformed(e.to_string())),
    }
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    match version {
        FORMAT_VERSION => {
            postcard::from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))
        }
        other => Err(DecodeError::UnknownVersion(other)),
    }
}
