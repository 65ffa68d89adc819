//! Encoding of a block (chunk) of samples of one series.
//!
//! A chunk is bit-packed in the style of Facebook's Gorilla paper (the scheme
//! Prometheus' TSDB uses): timestamps as delta-of-delta with variable-length
//! codes, values as the XOR with the previous value, storing only the bits that
//! changed. Regular scrapes with constant or slowly changing values cost a
//! couple of bytes per sample instead of the 10+ of a varint delta and a raw
//! `f64`.
//!
//! # Layout (format version [`CHUNK_VERSION`] = 2)
//!
//! ```text
//! byte 0     2                      format tag
//! varint     n                      sample count, LEB128, n <= MAX_CHUNK_SAMPLES
//! if n > 0:
//!   varint   at_ms of sample 0      LEB128
//!   8 bytes  value of sample 0      raw f64 bits, big-endian
//!   bits     samples 1..n           MSB first; per sample a timestamp code then a value code
//!   padding  0-7 zero bits to the byte boundary; nothing after
//! ```
//!
//! Timestamp code: with `delta = at - prev_at` and `dod = delta - prev_delta`
//! (both wrapping `u64` arithmetic, `dod` read as `i64`, `prev_delta` starting
//! at 0, so the first code carries the first delta):
//!
//! | code               | `dod` range               | note                              |
//! |--------------------|---------------------------|-----------------------------------|
//! | `0`                | 0                         | exactly regular                   |
//! | `10` + 7 bits      | -64 ..= 63                | ms jitter of a 10 s scrape        |
//! | `110` + 13 bits    | -4096 ..= 4095            | jitter of seconds                 |
//! | `1110` + 20 bits   | -524288 ..= 524287        | first delta, missed scrapes       |
//! | `1111` + 64 bits   | any                       | huge gaps                         |
//!
//! Payloads are two's complement. Value code, with `x = bits(value) ^
//! bits(prev_value)`:
//!
//! | code                                   | meaning                                           |
//! |----------------------------------------|---------------------------------------------------|
//! | `0`                                    | same bits as the previous value                   |
//! | `10` + `len` bits                      | `x` fits the current window `(lead, len)`         |
//! | `11` + 5 bits lead + 6 bits (len - 1) + `len` bits | new window; `lead` <= 31, `lead + len` <= 64 |
//!
//! The window is the span of meaningful bits: `lead` leading zeros, then `len`
//! bits, then `64 - lead - len` trailing zeros. The first value code of a chunk
//! has no window to reuse. The encoder reuses the window only when that is no
//! longer than opening a new one; the decoder accepts either choice.
//!
//! Chunks whose first byte is 1 are the original postcard format (varint time
//! deltas and raw values through [`codec`]); they still decode, and are written
//! in the current format whenever the store re-encodes them (appending to a
//! series' open chunk, trimming old samples).
//!
//! # Invariants
//!
//! - `decode_chunk(&encode_chunk(s))` returns `s` exactly: same timestamps and
//!   bit-identical values (NaN payloads, `-0.0`, infinities, subnormals). The
//!   arithmetic is wrapping, so this holds for any timestamps, though callers
//!   store samples in time order.
//! - A chunk holds at most [`MAX_CHUNK_SAMPLES`] samples.
//! - Decoding arbitrary bytes returns a [`DecodeError`], never panics, and
//!   allocates at most in proportion to the input (every sample after the first
//!   costs at least 2 bits, which is checked before allocating).

use serde::{Deserialize, Serialize};

use super::codec::{self, DecodeError};
use super::records::Sample;

/// Tag byte of the original postcard chunk format, which is [`codec`]'s version byte.
const LEGACY_VERSION: u8 = 1;

/// Tag byte of the bit-packed chunk format described in the module docs.
pub const CHUNK_VERSION: u8 = 2;

/// Most samples a chunk may hold; the decoder rejects larger counts.
pub const MAX_CHUNK_SAMPLES: usize = 1_000_000;

// Legacy chunks are decoded by `codec::decode`, which accepts only its current
// version. If that version is ever bumped, decode legacy chunks with postcard
// directly instead of through `codec`.
const _: () = assert!(codec::FORMAT_VERSION == LEGACY_VERSION);

/// Delta-of-delta codes after `0`: the `i`-th is `i + 1` one bits and a zero bit,
/// followed by a payload of this many bits. Four one bits mean 64 raw bits.
const DOD_PAYLOAD_BITS: [u32; 3] = [7, 13, 20];

/// Leading zeros are stored in 5 bits.
const MAX_LEAD: u32 = 31;

/// Bits a new window costs beyond its payload: 5 (lead) + 6 (len - 1).
const NEW_WINDOW_HEADER_BITS: u32 = 11;

/// Encodes samples (in time order) into a chunk.
///
/// Holding more than [`MAX_CHUNK_SAMPLES`] samples makes a chunk the decoder
/// rejects; the store cuts chunks far below that.
pub fn encode_chunk(samples: &[Sample]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + samples.len() * 4);
    out.push(CHUNK_VERSION);
    write_varint(&mut out, samples.len() as u64);
    let Some((first, rest)) = samples.split_first() else {
        return out;
    };
    write_varint(&mut out, first.at_ms);
    out.extend_from_slice(&first.value.to_bits().to_be_bytes());

    let mut bits = BitWriter::new(out);
    let mut prev_at = first.at_ms;
    let mut prev_delta = 0u64;
    let mut prev_value = first.value.to_bits();
    let mut window = None;
    for sample in rest {
        let delta = sample.at_ms.wrapping_sub(prev_at);
        write_dod(&mut bits, delta.wrapping_sub(prev_delta) as i64);
        prev_at = sample.at_ms;
        prev_delta = delta;

        let value = sample.value.to_bits();
        write_xor(&mut bits, value ^ prev_value, &mut window);
        prev_value = value;
    }
    bits.finish()
}

/// Decodes a chunk written by [`encode_chunk`] (either format version).
pub fn decode_chunk(bytes: &[u8]) -> Result<Vec<Sample>, DecodeError> {
    match bytes.first() {
        None => Err(DecodeError::Empty),
        Some(&LEGACY_VERSION) => decode_legacy(bytes),
        Some(&CHUNK_VERSION) => decode_packed(&bytes[1..]),
        Some(&other) => Err(DecodeError::UnknownVersion(other)),
    }
}

fn decode_packed(mut bytes: &[u8]) -> Result<Vec<Sample>, DecodeError> {
    let count = read_varint(&mut bytes)?;
    if count > MAX_CHUNK_SAMPLES as u64 {
        return Err(malformed("sample count over the chunk limit"));
    }
    // Fits: bounded by MAX_CHUNK_SAMPLES.
    let count = count as usize;
    if count == 0 {
        return if bytes.is_empty() {
            Ok(Vec::new())
        } else {
            Err(malformed("bytes after an empty chunk"))
        };
    }
    let first_at = read_varint(&mut bytes)?;
    let (value_bytes, body) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| malformed("chunk truncated in its header"))?;
    let first_value = u64::from_be_bytes(*value_bytes);

    let mut bits = BitReader::new(body);
    // Each further sample takes at least one timestamp bit and one value bit;
    // checking that first bounds the allocation by the input length.
    if (count - 1) * 2 > bits.remaining() {
        return Err(malformed("sample count exceeds the chunk's bits"));
    }
    let mut out = Vec::with_capacity(count);
    out.push(Sample {
        at_ms: first_at,
        value: f64::from_bits(first_value),
    });
    let mut prev_at = first_at;
    let mut prev_delta = 0u64;
    let mut prev_value = first_value;
    let mut window = None;
    for _ in 1..count {
        let delta = prev_delta.wrapping_add(read_dod(&mut bits)? as u64);
        let at_ms = prev_at.wrapping_add(delta);
        prev_at = at_ms;
        prev_delta = delta;

        let value = prev_value ^ read_xor(&mut bits, &mut window)?;
        prev_value = value;
        out.push(Sample {
            at_ms,
            value: f64::from_bits(value),
        });
    }
    bits.finish()?;
    Ok(out)
}

fn malformed(what: &str) -> DecodeError {
    DecodeError::Malformed(format!("series chunk: {what}"))
}

// ---- timestamps -------------------------------------------------------------

fn write_dod(bits: &mut BitWriter, dod: i64) {
    if dod == 0 {
        bits.write(0, 1);
        return;
    }
    for (i, &payload) in DOD_PAYLOAD_BITS.iter().enumerate() {
        if fits_signed(dod, payload) {
            // `i + 1` ones then a zero, e.g. 0b110 for i = 1.
            let prefix_len = i as u32 + 2;
            let prefix = (1u64 << prefix_len) - 2;
            let code = (prefix << payload) | (dod as u64 & low_mask(payload));
            bits.write(code, prefix_len + payload);
            return;
        }
    }
    bits.write(0b1111, 4);
    bits.write(dod as u64, 64);
}

fn read_dod(bits: &mut BitReader<'_>) -> Result<i64, DecodeError> {
    let mut ones = 0;
    while ones <= DOD_PAYLOAD_BITS.len() && bits.read(1)? == 1 {
        ones += 1;
    }
    Ok(match ones {
        0 => 0,
        n if n <= DOD_PAYLOAD_BITS.len() => {
            let payload = DOD_PAYLOAD_BITS[n - 1];
            sign_extend(bits.read(payload)?, payload)
        }
        _ => bits.read(64)? as i64,
    })
}

/// Whether `v` is representable in `bits`-bit two's complement (`bits` in 1..64).
fn fits_signed(v: i64, bits: u32) -> bool {
    let shift = 64 - bits;
    (v << shift) >> shift == v
}

/// Reads the low `bits` bits of `v` as two's complement (`bits` in 1..64).
fn sign_extend(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// The low `bits` bits set (`bits` in 0..64).
fn low_mask(bits: u32) -> u64 {
    (1u64 << bits) - 1
}

// ---- values -------------------------------------------------------------------

/// The meaningful-bit window of the last new-window value code: `(lead, len)`.
type Window = Option<(u32, u32)>;

fn write_xor(bits: &mut BitWriter, xor: u64, window: &mut Window) {
    if xor == 0 {
        bits.write(0, 1);
        return;
    }
    let lead = xor.leading_zeros().min(MAX_LEAD);
    let trail = xor.trailing_zeros();
    let len = 64 - lead - trail;
    if let Some((w_lead, w_len)) = *window {
        let w_trail = 64 - w_lead - w_len;
        if lead >= w_lead && trail >= w_trail && w_len <= len + NEW_WINDOW_HEADER_BITS {
            bits.write(0b10, 2);
            bits.write(xor >> w_trail, w_len);
            return;
        }
    }
    bits.write(
        (0b11 << 11) | (u64::from(lead) << 6) | u64::from(len - 1),
        13,
    );
    bits.write(xor >> trail, len);
    *window = Some((lead, len));
}

fn read_xor(bits: &mut BitReader<'_>, window: &mut Window) -> Result<u64, DecodeError> {
    if bits.read(1)? == 0 {
        return Ok(0);
    }
    let (lead, len) = if bits.read(1)? == 0 {
        window.ok_or_else(|| malformed("value reuses a window before one was set"))?
    } else {
        let header = bits.read(11)? as u32;
        let lead = header >> 6;
        let len = (header & 0x3f) + 1;
        if lead + len > 64 {
            return Err(malformed("value window wider than 64 bits"));
        }
        *window = Some((lead, len));
        (lead, len)
    };
    Ok(bits.read(len)? << (64 - lead - len))
}

// ---- bit I/O ----------------------------------------------------------------

/// Appends bits most-significant first to a byte vector.
struct BitWriter {
    out: Vec<u8>,
    /// Pending bits, in the low `used` bits.
    acc: u64,
    /// Number of pending bits, always < 64.
    used: u32,
}

impl BitWriter {
    fn new(out: Vec<u8>) -> Self {
        Self {
            out,
            acc: 0,
            used: 0,
        }
    }

    /// Appends the low `n` bits of `value` (`n` in 1..=64; higher bits must be zero).
    fn write(&mut self, value: u64, n: u32) {
        debug_assert!((1..=64).contains(&n));
        debug_assert!(n == 64 || value >> n == 0);
        let free = 64 - self.used;
        if n < free {
            self.acc = (self.acc << n) | value;
            self.used += n;
            return;
        }
        // Fill the accumulator to a whole word, flush it, keep the rest.
        let spill = n - free;
        let word = if free == 64 {
            value
        } else {
            (self.acc << free) | (value >> spill)
        };
        self.out.extend_from_slice(&word.to_be_bytes());
        self.acc = value & low_mask(spill);
        self.used = spill;
    }

    /// Flushes pending bits, zero-padded to a byte boundary.
    fn finish(mut self) -> Vec<u8> {
        if self.used > 0 {
            let word = self.acc << (64 - self.used);
            let bytes = self.used.div_ceil(8) as usize;
            self.out.extend_from_slice(&word.to_be_bytes()[..bytes]);
        }
        self.out
    }
}

/// Reads bits most-significant first from a byte slice.
struct BitReader<'a> {
    /// Bytes not yet loaded into `acc`.
    bytes: &'a [u8],
    /// Loaded bits, in the low `avail` bits (higher bits are stale).
    acc: u64,
    avail: u32,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            acc: 0,
            avail: 0,
        }
    }

    fn remaining(&self) -> usize {
        self.avail as usize + self.bytes.len() * 8
    }

    fn refill(&mut self) {
        while self.avail <= 56 {
            let Some((&byte, rest)) = self.bytes.split_first() else {
                break;
            };
            self.acc = (self.acc << 8) | u64::from(byte);
            self.avail += 8;
            self.bytes = rest;
        }
    }

    /// Reads `n` bits (`n` in 1..=64).
    fn read(&mut self, n: u32) -> Result<u64, DecodeError> {
        if n > 56 {
            let high = self.read(n - 32)?;
            return Ok((high << 32) | self.read(32)?);
        }
        if self.avail < n {
            self.refill();
            if self.avail < n {
                return Err(malformed("chunk truncated"));
            }
        }
        self.avail -= n;
        Ok((self.acc >> self.avail) & low_mask(n))
    }

    /// Checks that only zero padding, less than a byte, is left.
    fn finish(self) -> Result<(), DecodeError> {
        if self.remaining() >= 8 {
            return Err(malformed("bytes after the last sample"));
        }
        if self.acc & low_mask(self.avail) != 0 {
            return Err(malformed("nonzero padding"));
        }
        Ok(())
    }
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(bytes: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes
            .split_first()
            .ok_or_else(|| malformed("chunk truncated in its header"))?;
        *bytes = rest;
        if shift == 63 && byte > 1 {
            return Err(malformed("varint overflows u64"));
        }
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(malformed("varint overflows u64"))
}

// ---- legacy format (version 1) ------------------------------------------------

/// The original chunk layout: varint time deltas and raw values through postcard.
#[derive(Serialize, Deserialize)]
struct LegacyBlock {
    first_ms: u64,
    deltas: Vec<u64>,
    values: Vec<f64>,
}

fn decode_legacy(bytes: &[u8]) -> Result<Vec<Sample>, DecodeError> {
    let block: LegacyBlock = codec::decode(bytes)?;
    if block.deltas.len() != block.values.len() {
        return Err(DecodeError::Malformed(
            "time and value counts differ".into(),
        ));
    }
    let mut at = block.first_ms;
    let mut out = Vec::with_capacity(block.values.len());
    for (delta, value) in block.deltas.into_iter().zip(block.values) {
        at = at
            .checked_add(delta)
            .ok_or_else(|| DecodeError::Malformed("time overflow".into()))?;
        out.push(Sample { at_ms: at, value });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The version-1 encoder, kept to produce legacy chunks.
    fn encode_legacy(samples: &[Sample]) -> Vec<u8> {
        let first_ms = samples.first().map_or(0, |s| s.at_ms);
        let mut prev = first_ms;
        let deltas = samples
            .iter()
            .map(|s| {
                let d = s.at_ms.saturating_sub(prev);
                prev = s.at_ms;
                d
            })
            .collect();
        let values = samples.iter().map(|s| s.value).collect();
        codec::encode(&LegacyBlock {
            first_ms,
            deltas,
            values,
        })
    }

    fn assert_same(back: &[Sample], samples: &[Sample]) {
        assert_eq!(back.len(), samples.len());
        for (i, (a, b)) in back.iter().zip(samples).enumerate() {
            assert_eq!(a.at_ms, b.at_ms, "timestamp {i}");
            assert_eq!(a.value.to_bits(), b.value.to_bits(), "value {i}");
        }
    }

    fn round_trip(samples: &[Sample]) {
        let bytes = encode_chunk(samples);
        assert_eq!(bytes[0], CHUNK_VERSION);
        assert_same(&decode_chunk(&bytes).unwrap(), samples);
    }

    /// Values with awkward bit patterns.
    const SPECIAL: [u64; 14] = [
        0x7ff8_0000_0000_0000, // quiet NaN
        0xfff8_0000_0000_0000, // negative quiet NaN
        0x7ff0_0000_0000_0001, // signalling NaN, payload 1
        0x7ff4_dead_beef_0001, // signalling NaN with a payload
        0xffff_ffff_ffff_ffff, // NaN, all payload bits
        0x7ff0_0000_0000_0000, // +inf
        0xfff0_0000_0000_0000, // -inf
        0x8000_0000_0000_0000, // -0.0
        0,                     // +0.0
        1,                     // smallest subnormal
        0x000f_ffff_ffff_ffff, // largest subnormal
        0x8000_0000_0000_0001, // negative subnormal
        0x7fef_ffff_ffff_ffff, // f64::MAX
        0x0010_0000_0000_0000, // f64::MIN_POSITIVE
    ];

    fn value_bits() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            any::<f64>().prop_map(f64::to_bits),
            proptest::sample::select(&SPECIAL[..]),
            (0u32..21).prop_map(|n| f64::from(n).to_bits()),
            (0u32..1001).prop_map(|n| (f64::from(n) / 10.0).to_bits()),
            (100_000_000u64..100_100_000).prop_map(|n| ((n * 4096) as f64).to_bits()),
        ]
    }

    fn time_step() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(10_000u64),
            9_980u64..10_021,
            0u64..1_000_000,
            any::<u64>(),
        ]
    }

    fn start_ms() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..1 << 50, any::<u64>(), u64::MAX - 1_000_000..=u64::MAX,]
    }

    /// Samples in time order; `None` value repeats the previous one.
    fn ordered_samples() -> impl Strategy<Value = Vec<Sample>> {
        (
            start_ms(),
            proptest::collection::vec((time_step(), proptest::option::of(value_bits())), 0..400),
        )
            .prop_map(|(start, steps)| {
                let mut at = start;
                let mut bits = 0u64;
                steps
                    .into_iter()
                    .map(|(step, value)| {
                        at = at.saturating_add(step);
                        bits = value.unwrap_or(bits);
                        Sample {
                            at_ms: at,
                            value: f64::from_bits(bits),
                        }
                    })
                    .collect()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn ordered_samples_round_trip_bit_exact(samples in ordered_samples()) {
            let back = decode_chunk(&encode_chunk(&samples)).unwrap();
            prop_assert_eq!(back.len(), samples.len());
            for (a, b) in back.iter().zip(&samples) {
                prop_assert_eq!(a.at_ms, b.at_ms);
                prop_assert_eq!(a.value.to_bits(), b.value.to_bits());
            }
        }

        #[test]
        fn any_timestamps_round_trip_even_unordered(
            samples in proptest::collection::vec((any::<u64>(), value_bits()), 0..100),
        ) {
            let samples: Vec<Sample> = samples
                .into_iter()
                .map(|(at_ms, bits)| Sample { at_ms, value: f64::from_bits(bits) })
                .collect();
            let back = decode_chunk(&encode_chunk(&samples)).unwrap();
            prop_assert_eq!(back.len(), samples.len());
            for (a, b) in back.iter().zip(&samples) {
                prop_assert_eq!(a.at_ms, b.at_ms);
                prop_assert_eq!(a.value.to_bits(), b.value.to_bits());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            tag in prop_oneof![Just(CHUNK_VERSION), Just(LEGACY_VERSION), any::<u8>()],
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut bytes = vec![tag];
            bytes.extend(body);
            let _ = decode_chunk(&bytes);
            let _ = decode_chunk(&bytes[1..]);
        }

        #[test]
        fn damaged_chunks_never_panic(
            samples in ordered_samples(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = encode_chunk(&samples);
            let mut flipped = bytes.clone();
            for (at, bit) in flips {
                let i = at.index(flipped.len());
                flipped[i] ^= 1 << bit;
            }
            let _ = decode_chunk(&flipped);
            let truncated = &bytes[..cut.index(bytes.len())];
            prop_assert!(decode_chunk(truncated).is_err());
        }

        #[test]
        fn legacy_chunks_still_decode(samples in ordered_samples()) {
            let legacy = encode_legacy(&samples);
            prop_assert_eq!(legacy[0], LEGACY_VERSION);
            let back = decode_chunk(&legacy).unwrap();
            prop_assert_eq!(back.len(), samples.len());
            for (a, b) in back.iter().zip(&samples) {
                prop_assert_eq!(a.at_ms, b.at_ms);
                prop_assert_eq!(a.value.to_bits(), b.value.to_bits());
            }
        }
    }

    #[test]
    fn legacy_fixture_decodes() {
        // Written by the version-1 encoder for these samples.
        let samples = [
            Sample {
                at_ms: 1_000,
                value: 1.5,
            },
            Sample {
                at_ms: 11_000,
                value: -0.0,
            },
            Sample {
                at_ms: 21_005,
                value: f64::INFINITY,
            },
        ];
        let fixture: &[u8] = &LEGACY_FIXTURE;
        assert_eq!(encode_legacy(&samples), fixture);
        assert_same(&decode_chunk(fixture).unwrap(), &samples);
    }

    const LEGACY_FIXTURE: [u8; 34] = [
        1, 232, 7, 3, 0, 144, 78, 149, 78, 3, 0, 0, 0, 0, 0, 0, 248, 63, 0, 0, 0, 0, 0, 0, 0, 128,
        0, 0, 0, 0, 0, 0, 240, 127,
    ];

    #[test]
    fn edge_chunks_round_trip() {
        round_trip(&[]);
        round_trip(&[Sample {
            at_ms: 0,
            value: 0.0,
        }]);
        round_trip(&[Sample {
            at_ms: u64::MAX,
            value: f64::NAN,
        }]);
        let same_time: Vec<Sample> = SPECIAL
            .iter()
            .map(|&b| Sample {
                at_ms: 42,
                value: f64::from_bits(b),
            })
            .collect();
        round_trip(&same_time);
        round_trip(&[
            Sample {
                at_ms: 0,
                value: 1.0,
            },
            Sample {
                at_ms: u64::MAX - 1,
                value: 1.0,
            },
            Sample {
                at_ms: u64::MAX,
                value: -1.0,
            },
            Sample {
                at_ms: u64::MAX,
                value: -1.0,
            },
        ]);
        // Every delta-of-delta bucket boundary.
        let mut at = 1u64 << 40;
        let mut delta = 10_000i64;
        let mut samples = vec![Sample {
            at_ms: at,
            value: 0.0,
        }];
        for dod in [
            0, 63, -64, 64, -65, 4095, -4096, 4096, -4097, 524_287, -524_288, 524_288, -524_289, 0,
        ] {
            delta += dod;
            at = at.wrapping_add(delta as u64);
            samples.push(Sample {
                at_ms: at,
                value: dod as f64,
            });
        }
        round_trip(&samples);
    }

    #[test]
    fn empty_chunk_is_two_bytes() {
        assert_eq!(encode_chunk(&[]), [CHUNK_VERSION, 0]);
    }

    #[test]
    fn malformed_headers_are_errors() {
        assert_eq!(decode_chunk(&[]), Err(DecodeError::Empty));
        assert_eq!(decode_chunk(&[9, 0]), Err(DecodeError::UnknownVersion(9)));
        let bad = |bytes: &[u8]| {
            assert!(
                matches!(decode_chunk(bytes), Err(DecodeError::Malformed(_))),
                "{bytes:?}"
            )
        };
        bad(&[CHUNK_VERSION]);
        bad(&[CHUNK_VERSION, 0, 0]);
        bad(&[CHUNK_VERSION, 0x80]);
        bad(&[CHUNK_VERSION, 1, 5]);
        bad(&[CHUNK_VERSION, 1, 5, 0, 0, 0]);
        // Count over the cap, and a count the remaining bits cannot hold
        // (rejected before allocating for it).
        let mut over = vec![CHUNK_VERSION];
        write_varint(&mut over, MAX_CHUNK_SAMPLES as u64 + 1);
        bad(&over);
        let mut big = vec![CHUNK_VERSION];
        write_varint(&mut big, MAX_CHUNK_SAMPLES as u64);
        big.extend([0; 9]);
        big.extend([0; 100]);
        bad(&big);
        // An 11-byte varint overflows.
        let mut long = vec![CHUNK_VERSION];
        long.extend([0xff; 10]);
        long.push(1);
        bad(&long);
        // Reusing a window before any was set.
        let mut reuse = vec![CHUNK_VERSION, 2, 0];
        reuse.extend([0; 8]);
        reuse.push(0b0100_0000);
        bad(&reuse);
        // A trailing byte, and nonzero padding.
        let mut ok = encode_chunk(&[
            Sample {
                at_ms: 1,
                value: 1.0,
            },
            Sample {
                at_ms: 2,
                value: 1.0,
            },
        ]);
        assert!(decode_chunk(&ok).is_ok());
        *ok.last_mut().unwrap() |= 1;
        bad(&ok);
        ok.push(0);
        bad(&ok);
    }

    #[test]
    fn chunk_at_the_sample_limit_round_trips() {
        let samples: Vec<Sample> = (0..MAX_CHUNK_SAMPLES as u64)
            .map(|i| Sample {
                at_ms: i * 1000,
                value: 7.0,
            })
            .collect();
        let bytes = encode_chunk(&samples);
        assert_same(&decode_chunk(&bytes).unwrap(), &samples);
    }

    // ---- size on realistic series ----------------------------------------------

    /// Small deterministic generator (splitmix64) so sizes are reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform in `lo..=hi`.
        fn range(&mut self, lo: i64, hi: i64) -> i64 {
            lo + (self.next() % (hi - lo + 1) as u64) as i64
        }

        fn chance(&mut self, p: f64) -> bool {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
        }
    }

    /// 360 timestamps 10 s apart with ±20 ms jitter.
    fn scrape_times(rng: &mut Rng) -> Vec<u64> {
        let start = 1_750_000_000_000u64;
        (0..360)
            .map(|i| (start + i * 10_000).wrapping_add_signed(rng.range(-20, 20)))
            .collect()
    }

    fn series(kind: &str, seed: u64) -> Vec<Sample> {
        let mut rng = Rng(seed);
        let times = scrape_times(&mut rng);
        let mut rss = 180_000_000i64 / 4096 * 4096;
        let mut cpu = 35.0f64;
        let mut depth = 3i64;
        times
            .into_iter()
            .map(|at_ms| {
                let value = match kind {
                    "constant" => 1_073_741_824.0,
                    // RSS in bytes, whole pages: mostly unchanged, small growth,
                    // an occasional step of several MB.
                    "rss" => {
                        if rng.chance(0.3) {
                            rss += rng.range(-2, 6) * 4096;
                        }
                        if rng.chance(0.02) {
                            rss += rng.range(1, 64) * 1_048_576;
                        }
                        rss as f64
                    }
                    // CPU %, noisy around a wandering mean, one decimal.
                    "cpu" => {
                        cpu = (cpu + rng.range(-30, 30) as f64 / 10.0).clamp(5.0, 95.0);
                        let noisy = (cpu + rng.range(-80, 80) as f64 / 10.0).clamp(0.0, 100.0);
                        (noisy * 10.0).round() / 10.0
                    }
                    // Queue depth, integer random walk in 0..=20.
                    "queue" => {
                        if rng.chance(0.4) {
                            depth = (depth + rng.range(-3, 3)).clamp(0, 20);
                        }
                        depth as f64
                    }
                    _ => unreachable!(),
                };
                Sample { at_ms, value }
            })
            .collect()
    }

    #[test]
    fn realistic_series_are_compact() {
        let kinds = ["constant", "rss", "cpu", "queue"];
        let (mut total_bytes, mut total_samples) = (0, 0);
        for kind in kinds {
            let (mut bytes, mut count) = (0, 0);
            for seed in 0..20 {
                let samples = series(kind, seed);
                let chunk = encode_chunk(&samples);
                assert_same(&decode_chunk(&chunk).unwrap(), &samples);
                let legacy = encode_legacy(&samples).len();
                assert!(
                    chunk.len() < legacy,
                    "{kind}: {} vs legacy {legacy}",
                    chunk.len()
                );
                bytes += chunk.len();
                count += samples.len();
            }
            let per = bytes as f64 / count as f64;
            println!("{kind:>8}: {per:.2} bytes/sample");
            total_bytes += bytes;
            total_samples += count;
        }
        let legacy: usize = kinds
            .iter()
            .map(|k| encode_legacy(&series(k, 0)).len())
            .sum();
        println!(
            "  legacy: {:.2} bytes/sample",
            legacy as f64 / (4.0 * 360.0)
        );
        let mix = total_bytes as f64 / total_samples as f64;
        println!("     mix: {mix:.2} bytes/sample");
        assert!(mix < 4.0, "realistic mix takes {mix:.2} bytes/sample");
    }
}
