//! The task operations the journal records, as data: what each journaled write
//! was asked to do, so that it can be redone after a crash ([`super::replay`]).
//!
//! Invariants: each operation is a deterministic function of the stored state and
//! its fields, so a redo reproduces exactly what was acknowledged (same ids, same
//! outcome); variants are encoded by position, so new ones are only ever added at
//! the end and old ones stay to redo the journals older builds left behind.

use serde::{Deserialize, Serialize};

use super::batch::Tables;
use super::codec;
use super::error::StoreError;
use super::records::{FailureClass, NewTask, TaskStatus};
use super::writer::Wanted;
use super::{Pending, Store, StoreResult};

/// First byte of every journal record this build writes: the layout of
/// [`TaskOp`]. A record with another value is not redone (it is kept aside).
const JOURNAL_FORMAT: u8 = 1;

/// How a run ended, as recorded by [`Store::finish_task`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskFinish {
    /// `succeeded`, `failed` or `cancelled`.
    pub status: Option<TaskStatus>,
    /// The answer (bounded here).
    pub result: Option<String>,
    /// Failure class.
    pub error_class: Option<FailureClass>,
    /// Failure message.
    pub error: Option<String>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Cost of this run.
    pub cost_usd: f64,
    /// Input tokens of this run.
    pub input_tokens: u64,
    /// Output tokens of this run.
    pub output_tokens: u64,
    /// The agent session the run used or created.
    pub session_id: Option<String>,
    /// Whether the answer should be delivered to the chat.
    pub deliver: bool,
}

/// A task operation as the journal records it.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(super) enum TaskOp {
    Submit {
        new: NewTask,
        now_ms: u64,
    },
    Claim {
        now_ms: u64,
        blocked_bots: Vec<String>,
    },
    Process {
        task_id: u64,
        pid: u32,
        start_time: u64,
    },
    Finish {
        task_id: u64,
        finish: TaskFinish,
        now_ms: u64,
        history: usize,
    },
    Progress {
        task_id: u64,
        message_id: Option<i32>,
    },
    BeginDelivery {
        task_id: u64,
        now_ms: u64,
    },
    DeliveryFailed {
        task_id: u64,
    },
    Delivered {
        task_id: u64,
    },
    /// A conversation message (the user's prompt, recorded beside its task).
    Message {
        bot_id: String,
        user_id: i64,
        role: String,
        text: String,
        now_ms: u64,
        history: usize,
    },
    // Variants are matched by position in the encoding: add new ones below only.
    // This build does not write `Claim`, `Process`, `Progress`, `Delivered` or
    // `Message`; they stay to redo journals an older build left behind.
    /// A submission whose prompt also enters the conversation history.
    SubmitPrompt {
        new: NewTask,
        now_ms: u64,
        history: usize,
    },
    /// A claimed task's agent process; redoes the (relaxed) claim if it was lost.
    Started {
        task_id: u64,
        claimed_ms: u64,
        pid: u32,
        start_time: u64,
    },
    /// `Submit` of a task in a project other than `default` (a `default` one is
    /// journaled as `Submit`, byte for byte as before projects).
    SubmitInProject {
        new: NewTask,
        project: String,
        now_ms: u64,
    },
    /// `SubmitPrompt` of a prompt in a project other than `default`.
    SubmitPromptInProject {
        new: NewTask,
        project: String,
        now_ms: u64,
        history: usize,
    },
    /// A submission started at once on the session's idle warm process: the
    /// task is stored, claimed and given its process in one record. Journaled
    /// only when it was started (the live job decides and fails otherwise);
    /// redone without deciding again. `history` is 0 for a task whose prompt
    /// does not enter the history.
    SubmitStarted {
        new: NewTask,
        project: String,
        now_ms: u64,
        history: usize,
        pid: u32,
        start_time: u64,
    },
}

impl TaskOp {
    /// The journal record of this operation.
    pub(super) fn record(&self) -> Vec<u8> {
        let mut record = vec![JOURNAL_FORMAT];
        record.extend(codec::encode(self));
        record
    }

    /// The operation a journal record holds.
    pub(super) fn from_record(payload: &[u8]) -> StoreResult<TaskOp> {
        match payload.split_first() {
            Some((&JOURNAL_FORMAT, op)) => {
                codec::decode_exact(op).map_err(|e| StoreError::decode("journal", e))
            }
            _ => Err(StoreError::decode(
                "journal",
                codec::DecodeError::Malformed("unknown journal record format".into()),
            )),
        }
    }
}

impl Store {
    /// Queues a journaled write: `f` applies `op` and returns the caller's answer;
    /// the replay at open applies the same op again after a crash.
    pub(super) fn write_op<T, F>(&self, op: &TaskOp, f: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnMut(&Tables<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.write_tables(Wanted::Journaled(op.record()), f, |outcome| outcome)
    }
}
