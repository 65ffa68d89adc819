//! What a running task's agent is doing right now, for its progress message: the
//! tool calls so far and the newest text, kept in memory while the task runs and
//! announced on a broadcast channel as they change.
//!
//! Invariants: at most [`MAX_LIVE_STEPS`] steps are held per task (older ones are
//! only counted); an entry exists from the run's first event until the task is
//! concluded. The durable copy of the steps is the store's `task_events` table.

use super::stream::{Event, cut_chars};

/// Most steps held in memory per running task.
pub const MAX_LIVE_STEPS: usize = 100;
/// Longest newest-text kept, in characters.
const MAX_TEXT_CHARS: usize = 2000;

/// A running task's progress so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveProgress {
    /// Steps no longer held, before `steps`.
    pub earlier: u32,
    /// The newest tool calls, oldest first, one short line each.
    pub steps: Vec<String>,
    /// The newest text the agent wrote.
    pub text: Option<String>,
    /// Grows with every visible change (a new step, a different text).
    pub version: u64,
}

impl LiveProgress {
    /// Takes in a run's events; returns the summaries of the new tool calls.
    pub fn apply(&mut self, events: &[Event]) -> Vec<String> {
        let mut new_steps = Vec::new();
        for event in events {
            match event {
                Event::ToolUse(call) => {
                    let summary = call.summary();
                    self.steps.push(summary.clone());
                    new_steps.push(summary);
                    self.version += 1;
                }
                Event::Text(text) if !text.trim().is_empty() => {
                    let text = cut_chars(text.trim(), MAX_TEXT_CHARS);
                    // The same text again shows nothing new.
                    if self.text.as_ref() != Some(&text) {
                        self.text = Some(text);
                        self.version += 1;
                    }
                }
                _ => {}
            }
        }
        if self.steps.len() > MAX_LIVE_STEPS {
            let drop = self.steps.len() - MAX_LIVE_STEPS;
            self.steps.drain(..drop);
            self.earlier = self
                .earlier
                .saturating_add(u32::try_from(drop).unwrap_or(u32::MAX));
        }
        new_steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::stream::ToolCall;

    fn tool(n: usize) -> Event {
        Event::ToolUse(ToolCall {
            id: n.to_string(),
            name: "Read".into(),
            input: serde_json::json!({"file_path": format!("f{n}")}),
        })
    }

    #[test]
    fn tool_calls_and_text_are_kept_bounded_and_versioned() {
        let mut live = LiveProgress::default();
        let new = live.apply(&[tool(0), Event::Thinking, Event::Text("  looking  ".into())]);
        assert_eq!(new, ["Read: f0"]);
        assert_eq!(live.text.as_deref(), Some("looking"));
        assert_eq!(live.version, 2);
        // The same text again is no change.
        live.apply(&[Event::Text("looking".into()), Event::Thinking]);
        assert_eq!(live.version, 2);
        live.apply(&[Event::Text("found it".into())]);
        assert_eq!(live.version, 3);
        let many: Vec<Event> = (1..=MAX_LIVE_STEPS + 4).map(tool).collect();
        live.apply(&many);
        assert_eq!(live.steps.len(), MAX_LIVE_STEPS);
        assert_eq!(live.earlier, 5);
        assert_eq!(live.steps.last().map(String::as_str), Some("Read: f104"));
    }
}
