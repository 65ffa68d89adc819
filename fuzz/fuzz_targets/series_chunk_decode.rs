//! Arbitrary bytes decoded as a series chunk: an error, never a panic; a chunk
//! that decodes re-encodes to one that decodes to the same samples.
#![no_main]

use agentlab::storage::series_codec::{decode_chunk, encode_chunk};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(samples) = decode_chunk(bytes) {
        let again = decode_chunk(&encode_chunk(&samples)).expect("round trip");
        assert_eq!(samples.len(), again.len());
        for (a, b) in samples.iter().zip(&again) {
            assert_eq!(a.at_ms, b.at_ms);
            assert_eq!(a.value.to_bits(), b.value.to_bits());
        }
    }
});
