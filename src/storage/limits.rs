//! How much text the store keeps: the bounds on prompts, results and history
//! messages, and the cut that keeps a text within one.
//!
//! Invariant: no stored text exceeds its bound, and a text that was cut says so
//! (the full agent output stays in the task's run files).

/// Longest stored prompt, bytes. Telegram caps a message at 4,096 characters; the
/// API may send more, but not without bound.
pub const MAX_PROMPT_BYTES: usize = 256 * 1024;
/// Longest stored result, bytes (the full output stays in the run files).
pub(super) const MAX_RESULT_BYTES: usize = 64 * 1024;
/// Longest stored history message, bytes.
pub(super) const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// Cuts text to at most `max` bytes on a char boundary, saying so.
pub fn bound_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let marker = "\n\n[… output truncated; the full output is in the task's run files]";
    let mut cut = max.saturating_sub(marker.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{marker}", &text[..cut])
}
