//! Any Unicode answer: every part fits Telegram's limit, the parts' plain text
//! reassembles to the whole, and the plain fallback reassembles to the input.
#![no_main]

use agentlab::bot::render::{markdown_to_plain, plain_fallback, split_for_telegram, telegram_len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, &str)| {
    let (limit, text) = input;
    let limit = usize::from(limit % 4096).max(2);
    let parts = split_for_telegram(text, limit);
    let mut joined = String::new();
    for part in &parts {
        assert!(telegram_len(&part.plain) <= limit, "a part over the limit");
        joined.push_str(&part.plain);
    }
    assert_eq!(joined, markdown_to_plain(text));
    let fallback: String = plain_fallback(text, limit).concat();
    assert_eq!(fallback, text);
});
