//! The text of a task's progress message while its agent works: a header (which
//! task, how long, which attempt), the agent's tool calls one short line each, and
//! the newest thing it said.
//!
//! Invariants: the result is Telegram HTML with every piece of agent text escaped;
//! it is never longer than the limit it is given (UTF-16 units, as Telegram
//! counts); when the steps do not fit, the oldest are folded into one
//! "… N earlier steps" line and the newest stay.

use super::render::{escape_html, telegram_len};
use crate::worker::stream::cut_chars;

/// Longest quote of the agent's newest text, in characters.
pub(crate) const NEWEST_TEXT_CHARS: usize = 600;

/// What a progress message shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ProgressView<'a> {
    /// The first line(s), plain text: task, elapsed time, attempt.
    pub header: &'a str,
    /// Steps folded away before `steps` (already out of the list).
    pub earlier: u32,
    /// The tool calls, oldest first, one short line each.
    pub steps: &'a [String],
    /// The newest text the agent wrote, if any.
    pub text: Option<&'a str>,
}

/// Renders `view` as Telegram HTML of at most `limit` UTF-16 units.
pub(crate) fn render_progress(view: &ProgressView<'_>, limit: usize) -> String {
    let header = escape_html(view.header);
    let text = view
        .text
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(|text| {
            format!(
                "\n💬 <i>{}</i>",
                escape_html(&cut_chars(text, NEWEST_TEXT_CHARS))
            )
        });
    let lines: Vec<String> = view
        .steps
        .iter()
        .map(|step| format!("\n• {}", escape_html(step)))
        .collect();
    let fold = |n: usize| format!("\n… {n} earlier step{}", if n == 1 { "" } else { "s" });
    let mut tail = text.unwrap_or_default();
    // Keep the newest steps that fit after the header, the fold line and the text.
    let mut kept = 0;
    let mut used = telegram_len(&header) + telegram_len(&tail);
    let folded_max = view.earlier as usize + lines.len();
    let fold_room = telegram_len(&fold(folded_max));
    for line in lines.iter().rev() {
        let needed = telegram_len(line);
        let fold_needed = if kept + 1 < lines.len() || view.earlier > 0 {
            fold_room
        } else {
            0
        };
        if used + needed + fold_needed > limit {
            break;
        }
        used += needed;
        kept += 1;
    }
    let folded = view.earlier as usize + lines.len() - kept;
    let mut out = header;
    if folded > 0 {
        out.push_str(&fold(folded));
    }
    for line in &lines[lines.len() - kept..] {
        out.push_str(line);
    }
    if telegram_len(&out) + telegram_len(&tail) > limit {
        // Only a header near the limit gets here: the text goes, then the header is cut.
        tail.clear();
    }
    out.push_str(&tail);
    if telegram_len(&out) > limit {
        return escape_html(&cut_chars(view.header, limit / 6));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn steps_and_the_newest_text_follow_the_header_escaped() {
        let steps = vec![
            "Bash: cargo test".to_owned(),
            "Edit: src/<lib>.rs".to_owned(),
        ];
        let html = render_progress(
            &ProgressView {
                header: "⚙️ Running task #7… 3 s",
                earlier: 0,
                steps: &steps,
                text: Some("Tests pass & done"),
            },
            4096,
        );
        assert_eq!(
            html,
            "⚙️ Running task #7… 3 s\n• Bash: cargo test\n• Edit: src/&lt;lib&gt;.rs\n💬 <i>Tests pass &amp; done</i>"
        );
    }

    #[test]
    fn steps_that_do_not_fit_are_folded_oldest_first() {
        let steps: Vec<String> = (0..500).map(|n| format!("Read: file-{n}.rs")).collect();
        let html = render_progress(
            &ProgressView {
                header: "⚙️ Running task #1… 99 s",
                earlier: 12,
                steps: &steps,
                text: Some("working"),
            },
            4096,
        );
        assert!(telegram_len(&html) <= 4096);
        assert!(html.contains("earlier steps"), "{html}");
        assert!(html.contains("Read: file-499.rs"));
        assert!(!html.contains("Read: file-0.rs\n"));
        assert!(html.ends_with("💬 <i>working</i>"));
        let kept = html.matches("\n• ").count();
        let folded: usize = html
            .split("\n… ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("a fold line");
        assert_eq!(kept + folded, 512);
    }

    #[test]
    fn earlier_steps_alone_are_still_counted() {
        let html = render_progress(
            &ProgressView {
                header: "h",
                earlier: 1,
                steps: &[],
                text: None,
            },
            4096,
        );
        assert_eq!(html, "h\n… 1 earlier step");
    }

    proptest! {
        #[test]
        fn the_message_never_exceeds_the_limit(
            steps in proptest::collection::vec("[a-z<>&é😀 ]{0,200}", 0..80),
            text in proptest::option::of("[a-z<>&é😀 \n]{0,2000}"),
            earlier in 0u32..1000,
            limit in 200usize..4096,
        ) {
            let html = render_progress(
                &ProgressView { header: "⚙️ Running task #1… 1 s", earlier, steps: &steps, text: text.as_deref() },
                limit,
            );
            prop_assert!(telegram_len(&html) <= limit, "{} > {}", telegram_len(&html), limit);
        }
    }
}
