//! Encoding of a block (chunk) of samples of one series.
//!
//! A chunk holds samples in time order. This first encoding stores zig-zag varint
//! time deltas and raw values through postcard; it is replaced by a
//! delta-of-delta / XOR encoding (see BENCHMARKS.md for bytes per sample).
//!
//! Invariant: `decode_chunk(encode_chunk(s)) == s` for samples in time order, and
//! decoding arbitrary bytes returns an error, never panics.

use serde::{Deserialize, Serialize};

use super::codec::{self, DecodeError};
use super::records::Sample;

#[derive(Serialize, Deserialize)]
struct Block {
    first_ms: u64,
    deltas: Vec<u64>,
    values: Vec<f64>,
}

/// Encodes samples (in time order) into a chunk.
pub fn encode_chunk(samples: &[Sample]) -> Vec<u8> {
    let first_ms = samples.first().map_or(0, |s| s.at_ms);
    let mut prev = first_ms;
    let mut deltas = Vec::with_capacity(samples.len());
    for s in samples {
        deltas.push(s.at_ms.saturating_sub(prev));
        prev = s.at_ms;
    }
    let values = samples.iter().map(|s| s.value).collect();
    codec::encode(&Block {
        first_ms,
        deltas,
        values,
    })
}

/// Decodes a chunk written by [`encode_chunk`].
pub fn decode_chunk(bytes: &[u8]) -> Result<Vec<Sample>, DecodeError> {
    let block: Block = codec::decode(bytes)?;
    if block.deltas.len() != block.values.len() {
        return Err(DecodeError::Malformed("time and value counts differ".into()));
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
