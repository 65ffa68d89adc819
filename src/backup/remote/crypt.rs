//! Encryption of snapshots before they leave the machine: a chunked, versioned,
//! authenticated format, processed as a stream so a 100 MB snapshot never has to
//! be held in memory.
//!
//! Format, version 1 (all integers big-endian):
//!
//! ```text
//! header (41 bytes)
//!   magic        8  b"agentlab"
//!   version      1  1
//!   algorithm    1  1 = XChaCha20-Poly1305, STREAM construction (BE32)
//!   chunk size   4  plaintext bytes per chunk (the last one may be shorter)
//!   key id       8  first 8 bytes of SHA-256("agentlab snapshot key id v1" || key)
//!   nonce prefix 19 random, fresh for every object
//! chunks
//!   ciphertext of chunk i || 16-byte Poly1305 tag, i = 0, 1, ...
//! ```
//!
//! Each chunk's nonce is the prefix, the chunk counter (4 bytes) and a last-chunk
//! flag (1 byte) — the STREAM construction of Hoang, Reyhanitabar, Rogaway and
//! Vizár, as implemented by the `aead` crate — and the whole header is each
//! chunk's associated data. So: a changed byte anywhere, a chunk moved, dropped or
//! repeated, a stream cut at a chunk boundary (its last chunk lacks the flag) or an
//! edited header is refused; the key id tells a wrong key apart from tampering.
//! Every chunk but the last holds exactly `chunk size` plaintext bytes, so a reader
//! knows a chunk is the last one only when the input ends: [`Decryptor`] keeps one
//! chunk back until it sees more bytes or the end.

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::aead::{KeyInit, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305};
use sha2::{Digest, Sha256};

/// The first bytes of every encrypted snapshot.
pub const MAGIC: &[u8; 8] = b"agentlab";
/// The format version written.
pub const VERSION: u8 = 1;
/// XChaCha20-Poly1305 in the STREAM construction, 32-bit big-endian counter.
const ALGORITHM_XCHACHA20POLY1305_STREAM_BE32: u8 = 1;
/// Plaintext bytes per chunk written (read back from the header).
pub const CHUNK_SIZE: usize = 64 * 1024;
const TAG_LEN: usize = 16;
const NONCE_PREFIX_LEN: usize = 19;
const KEY_ID_LEN: usize = 8;
/// Length of the header.
pub const HEADER_LEN: usize = 8 + 1 + 1 + 4 + KEY_ID_LEN + NONCE_PREFIX_LEN;
/// Largest chunk size a header may announce (a guard against a hostile header
/// asking for a huge buffer).
const MAX_CHUNK_SIZE: usize = 16 * 1024 * 1024;

/// Why encrypted data could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptError {
    /// The key in the environment is not 64 hex characters.
    #[error("the key must be 64 hex characters (32 bytes, e.g. `openssl rand -hex 32`); {0}")]
    BadKey(String),
    /// Not an encrypted snapshot, or one of a format this build does not know.
    #[error("not an encrypted agentlab snapshot of a known format: {0}")]
    Format(String),
    /// Encrypted with another key.
    #[error(
        "encrypted with a different key (key id {found}, the configured key's id is {expected})"
    )]
    WrongKey {
        /// The key id in the object's header.
        found: String,
        /// The configured key's id.
        expected: String,
    },
    /// A chunk failed authentication: the data was altered, reordered or cut.
    #[error("chunk {chunk} failed authentication: the object was altered, reordered or truncated")]
    Tampered {
        /// The chunk's index.
        chunk: u64,
    },
    /// The data ended inside the header or a chunk tag.
    #[error("the object is truncated ({0})")]
    Truncated(String),
}

/// A 256-bit snapshot key.
#[derive(Clone)]
pub struct SnapshotKey {
    key: [u8; 32],
}

impl std::fmt::Debug for SnapshotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SnapshotKey(id {})", self.id_hex())
    }
}

impl SnapshotKey {
    /// Parses 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, CryptError> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(CryptError::BadKey(format!(
                "it has {} characters",
                text.chars().count()
            )));
        }
        let mut key = [0u8; 32];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(hi), Some(lo)) => key[i] = (hi * 16 + lo) as u8,
                _ => {
                    return Err(CryptError::BadKey(
                        "it holds a character that is not a hex digit".into(),
                    ));
                }
            }
        }
        Ok(SnapshotKey { key })
    }

    /// The key id written in headers (no secret: a truncated hash of the key).
    pub fn id(&self) -> [u8; KEY_ID_LEN] {
        let digest = Sha256::new()
            .chain_update(b"agentlab snapshot key id v1")
            .chain_update(self.key)
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        id
    }

    /// [`SnapshotKey::id`] as hex.
    pub fn id_hex(&self) -> String {
        hex(&self.id())
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.key))
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Encrypts a stream pushed to it in pieces of any size.
pub struct Encryptor {
    header: [u8; HEADER_LEN],
    inner: Option<EncryptorBE32<XChaCha20Poly1305>>,
    pending: Vec<u8>,
    chunk_size: usize,
}

impl Encryptor {
    /// A new stream under `key`, with a fresh random nonce prefix.
    pub fn new(key: &SnapshotKey) -> Self {
        Self::with_chunk_size(key, CHUNK_SIZE)
    }

    /// As [`Encryptor::new`] with another chunk size (tests use small ones).
    pub fn with_chunk_size(key: &SnapshotKey, chunk_size: usize) -> Self {
        let chunk_size = chunk_size.clamp(1, MAX_CHUNK_SIZE);
        let mut prefix = [0u8; NONCE_PREFIX_LEN];
        OsRng.fill_bytes(&mut prefix);
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8] = VERSION;
        header[9] = ALGORITHM_XCHACHA20POLY1305_STREAM_BE32;
        header[10..14].copy_from_slice(&(chunk_size as u32).to_be_bytes());
        header[14..14 + KEY_ID_LEN].copy_from_slice(&key.id());
        header[14 + KEY_ID_LEN..].copy_from_slice(&prefix);
        let inner = EncryptorBE32::from_aead(key.cipher(), prefix.as_ref().into());
        Encryptor {
            header,
            inner: Some(inner),
            pending: Vec::with_capacity(chunk_size + 1),
            chunk_size,
        }
    }

    /// The header, to be written before the first output of [`Encryptor::push`].
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// Takes plaintext; returns the ciphertext of the chunks it completed. A full
    /// chunk is held back until more plaintext (or the end) shows it is not the last.
    pub fn push(&mut self, mut plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while !plain.is_empty() {
            let room = self.chunk_size + 1 - self.pending.len();
            let take = room.min(plain.len());
            self.pending.extend_from_slice(&plain[..take]);
            plain = &plain[take..];
            if self.pending.len() > self.chunk_size {
                let rest = self.pending.split_off(self.chunk_size);
                let chunk = std::mem::replace(&mut self.pending, rest);
                out.extend(self.seal_next(&chunk));
            }
        }
        out
    }

    /// Ends the stream: the ciphertext of the last chunk.
    pub fn finish(mut self) -> Vec<u8> {
        let chunk = std::mem::take(&mut self.pending);
        let aad = self.header;
        match self.inner.take() {
            Some(inner) => inner
                .encrypt_last(Payload {
                    msg: &chunk,
                    aad: &aad,
                })
                // Encryption fails only past 2^32 chunks (256 TiB at 64 KiB).
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    fn seal_next(&mut self, chunk: &[u8]) -> Vec<u8> {
        let aad = self.header;
        match self.inner.as_mut() {
            Some(inner) => inner
                .encrypt_next(Payload {
                    msg: chunk,
                    aad: &aad,
                })
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }
}

/// Decrypts a stream pushed to it in pieces of any size.
pub struct Decryptor {
    key: SnapshotKey,
    header: Vec<u8>,
    inner: Option<DecryptorBE32<XChaCha20Poly1305>>,
    pending: Vec<u8>,
    sealed_chunk: usize,
    chunk: u64,
}

impl Decryptor {
    /// A decryptor expecting a stream made under `key`.
    pub fn new(key: &SnapshotKey) -> Self {
        Decryptor {
            key: key.clone(),
            header: Vec::with_capacity(HEADER_LEN),
            inner: None,
            pending: Vec::new(),
            sealed_chunk: 0,
            chunk: 0,
        }
    }

    /// Takes ciphertext; returns the plaintext of the chunks it completed.
    pub fn push(&mut self, mut data: &[u8]) -> Result<Vec<u8>, CryptError> {
        if self.inner.is_none() {
            let take = (HEADER_LEN - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.header.len() < HEADER_LEN {
                return Ok(Vec::new());
            }
            self.start()?;
        }
        let mut out = Vec::new();
        while !data.is_empty() {
            let room = self.sealed_chunk + 1 - self.pending.len();
            let take = room.min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() > self.sealed_chunk {
                let rest = self.pending.split_off(self.sealed_chunk);
                let sealed = std::mem::replace(&mut self.pending, rest);
                out.extend(self.open_next(&sealed)?);
            }
        }
        Ok(out)
    }

    /// Ends the stream: the plaintext of the last chunk, or why the stream is not
    /// a complete one.
    pub fn finish(mut self) -> Result<Vec<u8>, CryptError> {
        if self.inner.is_none() {
            return Err(CryptError::Truncated(format!(
                "{} of the header's {HEADER_LEN} bytes",
                self.header.len()
            )));
        }
        if self.pending.len() < TAG_LEN {
            return Err(CryptError::Truncated(format!(
                "chunk {} is shorter than its tag",
                self.chunk
            )));
        }
        let sealed = std::mem::take(&mut self.pending);
        let chunk = self.chunk;
        let aad = self.header.clone();
        let inner = self.inner.take().ok_or(CryptError::Tampered { chunk })?;
        inner
            .decrypt_last(Payload {
                msg: &sealed,
                aad: &aad,
            })
            .map_err(|_| CryptError::Tampered { chunk })
    }

    fn start(&mut self) -> Result<(), CryptError> {
        let h = &self.header;
        if &h[..8] != MAGIC {
            return Err(CryptError::Format("the magic bytes are missing".into()));
        }
        if h[8] != VERSION {
            return Err(CryptError::Format(format!(
                "format version {} (this build reads version {VERSION})",
                h[8]
            )));
        }
        if h[9] != ALGORITHM_XCHACHA20POLY1305_STREAM_BE32 {
            return Err(CryptError::Format(format!("unknown algorithm {}", h[9])));
        }
        let chunk_size = u32::from_be_bytes([h[10], h[11], h[12], h[13]]) as usize;
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(CryptError::Format(format!("chunk size {chunk_size}")));
        }
        let found = &h[14..14 + KEY_ID_LEN];
        let expected = self.key.id();
        if found != expected {
            return Err(CryptError::WrongKey {
                found: hex(found),
                expected: hex(&expected),
            });
        }
        let prefix = &h[14 + KEY_ID_LEN..];
        self.inner = Some(DecryptorBE32::from_aead(self.key.cipher(), prefix.into()));
        self.sealed_chunk = chunk_size + TAG_LEN;
        self.pending = Vec::with_capacity(self.sealed_chunk + 1);
        Ok(())
    }

    fn open_next(&mut self, sealed: &[u8]) -> Result<Vec<u8>, CryptError> {
        let chunk = self.chunk;
        let inner = self.inner.as_mut().ok_or(CryptError::Tampered { chunk })?;
        let plain = inner
            .decrypt_next(Payload {
                msg: sealed,
                aad: &self.header,
            })
            .map_err(|_| CryptError::Tampered { chunk })?;
        self.chunk += 1;
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(byte: u8) -> SnapshotKey {
        SnapshotKey::from_hex(&hex(&[byte; 32])).expect("valid key")
    }

    fn encrypt(key: &SnapshotKey, plain: &[u8], chunk: usize, piece: usize) -> Vec<u8> {
        let mut enc = Encryptor::with_chunk_size(key, chunk);
        let mut out = enc.header().to_vec();
        for part in plain.chunks(piece.max(1)) {
            out.extend(enc.push(part));
        }
        out.extend(enc.finish());
        out
    }

    fn decrypt(key: &SnapshotKey, data: &[u8], piece: usize) -> Result<Vec<u8>, CryptError> {
        let mut dec = Decryptor::new(key);
        let mut out = Vec::new();
        for part in data.chunks(piece.max(1)) {
            out.extend(dec.push(part)?);
        }
        out.extend(dec.finish()?);
        Ok(out)
    }

    proptest! {
        #[test]
        fn any_plaintext_round_trips_whatever_the_piece_sizes(
            plain in proptest::collection::vec(any::<u8>(), 0..3000),
            chunk in 1usize..300,
            enc_piece in 1usize..500,
            dec_piece in 1usize..500,
        ) {
            let k = key(7);
            let sealed = encrypt(&k, &plain, chunk, enc_piece);
            let expected_chunks = plain.len().div_ceil(chunk).max(1);
            prop_assert_eq!(sealed.len(), HEADER_LEN + plain.len() + expected_chunks * TAG_LEN);
            prop_assert_eq!(decrypt(&k, &sealed, dec_piece).expect("decrypts"), plain);
        }

        #[test]
        fn any_flipped_bit_is_refused(
            plain in proptest::collection::vec(any::<u8>(), 1..2000),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let k = key(7);
            let mut sealed = encrypt(&k, &plain, 100, 77);
            let i = at.index(sealed.len());
            sealed[i] ^= 1 << bit;
            prop_assert!(decrypt(&k, &sealed, 64).is_err());
        }
    }

    #[test]
    fn a_wrong_key_is_told_apart_from_tampering() {
        let sealed = encrypt(&key(1), b"snapshot bytes", 4, 3);
        let err = decrypt(&key(2), &sealed, 5).expect_err("wrong key");
        assert!(matches!(err, CryptError::WrongKey { .. }), "{err}");
        assert!(err.to_string().contains("different key"), "{err}");
    }

    #[test]
    fn truncation_at_a_chunk_boundary_and_reordering_are_refused() {
        let k = key(3);
        let plain: Vec<u8> = (0..40u8).collect();
        let sealed = encrypt(&k, &plain, 10, 40);
        let sealed_chunk = 10 + TAG_LEN;
        // Cut after the third of four chunks: that chunk lacks the last flag.
        let cut = &sealed[..HEADER_LEN + 3 * sealed_chunk];
        assert!(matches!(
            decrypt(&k, cut, 7),
            Err(CryptError::Tampered { chunk: 2 })
        ));
        // Swap chunks 0 and 1.
        let mut swapped = sealed.clone();
        let (a, b) = (HEADER_LEN, HEADER_LEN + sealed_chunk);
        let first = sealed[a..b].to_vec();
        swapped.copy_within(b..b + sealed_chunk, a);
        swapped[b..b + sealed_chunk].copy_from_slice(&first);
        assert!(matches!(
            decrypt(&k, &swapped, 7),
            Err(CryptError::Tampered { chunk: 0 })
        ));
        // A header cut short.
        assert!(matches!(
            decrypt(&k, &sealed[..20], 7),
            Err(CryptError::Truncated(_))
        ));
    }

    #[test]
    fn an_unknown_version_is_named() {
        let k = key(4);
        let mut sealed = encrypt(&k, b"x", 10, 1);
        sealed[8] = 9;
        let err = decrypt(&k, &sealed, 100).expect_err("unknown version");
        assert!(err.to_string().contains("format version 9"), "{err}");
    }

    #[test]
    fn keys_must_be_64_hex_characters() {
        assert!(SnapshotKey::from_hex(&"ab".repeat(32)).is_ok());
        assert!(SnapshotKey::from_hex(&format!(" {}\n", "AB".repeat(32))).is_ok());
        let short = SnapshotKey::from_hex("abcd").expect_err("short");
        assert!(short.to_string().contains("has 4 characters"), "{short}");
        assert!(SnapshotKey::from_hex(&"zz".repeat(32)).is_err());
        // The debug form never shows the key.
        let shown = format!("{:?}", key(0xab));
        assert!(!shown.contains(&"ab".repeat(32)), "{shown}");
    }
}
