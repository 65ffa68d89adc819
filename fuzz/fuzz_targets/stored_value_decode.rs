//! Arbitrary bytes decoded as every stored record type: an error, never a panic;
//! what decodes re-encodes to bytes that decode to the same value.
#![no_main]

use agentlab::storage::codec;
use agentlab::storage::records::{Event, Session, Task};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(task) = codec::decode::<Task>(bytes) {
        let again: Task = codec::decode(&codec::encode(&task)).expect("round trip");
        assert_eq!(format!("{task:?}"), format!("{again:?}"));
    }
    let _ = codec::decode::<Session>(bytes);
    let _ = codec::decode::<Event>(bytes);
});
