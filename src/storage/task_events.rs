//! What an agent did while it ran a task: its tool calls, one row each, kept with
//! the task so `/task ID` and the HTTP API can list them after the fact.
//!
//! Invariant: at most [`MAX_TASK_STEPS`] rows per task; the append that goes past
//! the bound removes the oldest in the same transaction, and the sequence number
//! keeps counting, so the first kept row's `seq` is how many were folded away.

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec;
use super::error::StoreError;
use super::tables::TASK_EVENTS;
use super::{Pending, Store, StoreResult};

/// Most steps kept per task.
pub const MAX_TASK_STEPS: u32 = 200;
/// Longest stored step summary, bytes.
const MAX_SUMMARY_BYTES: usize = 512;

/// One step of an agent's run: a tool call, as a short line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStep {
    /// When the agent asked for it, unix ms.
    pub at_ms: u64,
    /// e.g. `Bash: cargo test`, `Edit: src/lib.rs`.
    pub summary: String,
}

/// The steps kept for a task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskSteps {
    /// Steps folded away by the bound, before the first kept one.
    pub earlier: u32,
    /// The kept steps, oldest first.
    pub steps: Vec<TaskStep>,
}

impl Store {
    /// Adds steps to a task's list, oldest first, dropping the oldest beyond
    /// [`MAX_TASK_STEPS`].
    pub fn append_task_steps(&self, task_id: u64, steps: Vec<TaskStep>) -> Pending<()> {
        self.write(move |tx| append_steps(tx, task_id, &steps))
    }

    /// The steps kept for a task (none for a task that has none, or an older store
    /// without the table).
    pub fn task_steps(&self, task_id: u64) -> StoreResult<TaskSteps> {
        self.read(|tx| {
            let table = match tx.open_table(TASK_EVENTS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(TaskSteps::default()),
                Err(e) => return Err(e.into()),
            };
            let mut out = TaskSteps::default();
            for (n, row) in table.range((task_id, 0)..=(task_id, u32::MAX))?.enumerate() {
                let (key, value) = row?;
                if n == 0 {
                    out.earlier = key.value().1;
                }
                out.steps.push(decode_step(value.value())?);
            }
            Ok(out)
        })
    }
}

fn append_steps(tx: &WriteTransaction, task_id: u64, steps: &[TaskStep]) -> StoreResult<()> {
    let mut table = tx.open_table(TASK_EVENTS)?;
    let mut next = table
        .range((task_id, 0)..=(task_id, u32::MAX))?
        .next_back()
        .transpose()?
        .map_or(0, |(key, _)| key.value().1.saturating_add(1));
    for step in steps {
        let mut step = step.clone();
        if step.summary.len() > MAX_SUMMARY_BYTES {
            let mut end = MAX_SUMMARY_BYTES;
            while !step.summary.is_char_boundary(end) {
                end -= 1;
            }
            step.summary.truncate(end);
        }
        table.insert((task_id, next), codec::encode(&step).as_slice())?;
        next = next.saturating_add(1);
    }
    if let Some(first_kept) = next.checked_sub(MAX_TASK_STEPS)
        && first_kept > 0
    {
        table.retain_in((task_id, 0)..(task_id, first_kept), |_, _| false)?;
    }
    Ok(())
}

fn decode_step(bytes: &[u8]) -> StoreResult<TaskStep> {
    codec::decode(bytes).map_err(|e| StoreError::decode("task_events", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StoreOptions;

    fn step(n: u32) -> TaskStep {
        TaskStep {
            at_ms: u64::from(n),
            summary: format!("Bash: step {n}"),
        }
    }

    #[test]
    fn steps_are_kept_per_task_in_order_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(&dir.path().join("agentlab.redb"), StoreOptions::default()).expect("open");
        assert_eq!(store.task_steps(1).expect("read"), TaskSteps::default());
        store
            .append_task_steps(1, vec![step(0), step(1)])
            .wait()
            .expect("append");
        store
            .append_task_steps(2, vec![step(9)])
            .wait()
            .expect("append");
        let first = store.task_steps(1).expect("read");
        assert_eq!(first.earlier, 0);
        assert_eq!(first.steps, [step(0), step(1)]);
        let more: Vec<TaskStep> = (2..MAX_TASK_STEPS + 5).map(step).collect();
        store.append_task_steps(1, more).wait().expect("append");
        let bounded = store.task_steps(1).expect("read");
        assert_eq!(bounded.steps.len(), MAX_TASK_STEPS as usize);
        assert_eq!(bounded.earlier, 5);
        assert_eq!(bounded.steps[0], step(5));
        assert_eq!(store.task_steps(2).expect("read").steps, [step(9)]);
    }
}
