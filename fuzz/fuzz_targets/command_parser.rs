//! Any text, with or without a bot username, parses to some command.
#![no_main]

use agentlab::bot::commands::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = parse(text, Some("agentlab_bot"));
    let _ = parse(text, None);
});
