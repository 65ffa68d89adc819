//! Arbitrary bytes as each of the old bot's JSON files: parsing reports an error
//! or a summary, never panics.
#![no_main]

use agentlab::legacy::{ParseOptions, parse_dir};
use libfuzzer_sys::fuzz_target;

const FILES: [&str; 4] = [
    "sessions.json",
    "tasks.json",
    "costs.json",
    "restart_state.json",
];

fuzz_target!(|input: (u8, &[u8])| {
    let (which, bytes) = input;
    let Ok(dir) = tempfile::tempdir() else { return };
    let name = FILES[usize::from(which) % FILES.len()];
    if std::fs::write(dir.path().join(name), bytes).is_err() {
        return;
    }
    let options = ParseOptions {
        bot_id: "BOT-FUZZ".into(),
        now_ms: 1_800_000_000_000,
        max_attempts: 3,
        show_progress: false,
    };
    let _ = parse_dir(dir.path(), &options);
});
