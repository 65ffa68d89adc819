//! Tool approvals the agent asked for: one row per `can_use_tool` request, pending
//! until someone decides it (a button, the HTTP API, the CLI or the timeout).
//!
//! Invariants:
//! - a request is stored once: the index `approval_requests` maps (task id, the
//!   CLI's request id) to the approval, so a turn followed again after a restart
//!   finds the approval it already asked for instead of asking twice;
//! - a decision is taken once: [`Store::decide_approval`] checks and sets in one
//!   write transaction, so of two presses at the same time one decides and the
//!   other reads "already decided".

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec;
use super::error::StoreError;
use super::tables::{APPROVAL_REQUESTS, APPROVALS};
use super::{Pending, Store, StoreResult};

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApprovalDecision {
    /// The tool may run this once.
    Allow,
    /// The tool may run, and runs without asking for the rest of the session.
    AlwaysAllow,
    /// The tool may not run.
    Deny,
    /// Nobody answered in time: denied.
    TimedOut,
    /// The agent stopped (ended, killed, or lost with a restart) before anyone
    /// answered; nothing is left to answer.
    Expired,
}

impl ApprovalDecision {
    /// The name used in the API, events and dumps.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalDecision::Allow => "allow",
            ApprovalDecision::AlwaysAllow => "always_allow",
            ApprovalDecision::Deny => "deny",
            ApprovalDecision::TimedOut => "timed_out",
            ApprovalDecision::Expired => "expired",
        }
    }

    /// Whether the tool may run.
    pub fn allows(self) -> bool {
        matches!(
            self,
            ApprovalDecision::Allow | ApprovalDecision::AlwaysAllow
        )
    }
}

/// A decision, by whom and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalVerdict {
    /// What was decided.
    pub decision: ApprovalDecision,
    /// Who decided: a Telegram user's name, `api`, `cli` or `timeout`.
    pub by: String,
    /// The Telegram user who decided, if one did.
    pub by_user: Option<i64>,
    /// When, unix ms.
    pub at_ms: u64,
}

/// One approval request of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Its id (callback data and the HTTP API name it).
    pub id: u64,
    /// The task whose agent asks.
    pub task_id: u64,
    /// The task's bot.
    pub bot_id: String,
    /// The task's user.
    pub user_id: i64,
    /// The chat the request is shown in.
    pub chat_id: i64,
    /// The CLI's `request_id`, echoed in the answer.
    pub request_id: String,
    /// The tool, e.g. `Bash`.
    pub tool_name: String,
    /// The tool's input, as the JSON text the CLI sent.
    pub input_json: String,
    /// The folder of the agent process (its `stdin` pipe takes the answer).
    pub process_dir: String,
    /// When it was asked, unix ms.
    pub created_ms: u64,
    /// The message showing it, once sent.
    pub message_id: Option<i32>,
    /// The decision, once taken.
    pub verdict: Option<ApprovalVerdict>,
}

/// What [`Store::decide_approval`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecideOutcome {
    /// This call decided it.
    Decided(Approval),
    /// It had been decided before.
    AlreadyDecided(Approval),
    /// No such approval.
    Unknown,
}

/// A request to store (everything but the id, message and verdict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApproval {
    /// See [`Approval::task_id`].
    pub task_id: u64,
    /// See [`Approval::bot_id`].
    pub bot_id: String,
    /// See [`Approval::user_id`].
    pub user_id: i64,
    /// See [`Approval::chat_id`].
    pub chat_id: i64,
    /// See [`Approval::request_id`].
    pub request_id: String,
    /// See [`Approval::tool_name`].
    pub tool_name: String,
    /// See [`Approval::input_json`].
    pub input_json: String,
    /// See [`Approval::process_dir`].
    pub process_dir: String,
    /// See [`Approval::created_ms`].
    pub created_ms: u64,
}

impl Store {
    /// Stores a request; returns it and whether it is new (a request already
    /// stored for the same task and request id is returned as it is).
    pub fn create_approval(&self, new: NewApproval) -> Pending<(Approval, bool)> {
        self.write(move |tx| create(tx, &new))
    }

    /// Records the message that shows an approval.
    pub fn set_approval_message(&self, id: u64, message_id: i32) -> Pending<()> {
        self.write(move |tx| {
            let mut table = tx.open_table(APPROVALS)?;
            let found = match table.get(id)? {
                Some(value) => Some(decode(value.value())?),
                None => None,
            };
            if let Some(mut approval) = found {
                approval.message_id = Some(message_id);
                table.insert(id, codec::encode(&approval).as_slice())?;
            }
            Ok(())
        })
    }

    /// Decides an approval unless it was decided already.
    pub fn decide_approval(&self, id: u64, verdict: ApprovalVerdict) -> Pending<DecideOutcome> {
        self.write(move |tx| {
            let mut table = tx.open_table(APPROVALS)?;
            let found = match table.get(id)? {
                Some(value) => Some(decode(value.value())?),
                None => None,
            };
            let Some(mut approval) = found else {
                return Ok(DecideOutcome::Unknown);
            };
            if approval.verdict.is_some() {
                return Ok(DecideOutcome::AlreadyDecided(approval));
            }
            approval.verdict = Some(verdict.clone());
            table.insert(id, codec::encode(&approval).as_slice())?;
            Ok(DecideOutcome::Decided(approval))
        })
    }

    /// One approval.
    pub fn approval(&self, id: u64) -> StoreResult<Option<Approval>> {
        self.read(|tx| {
            let table = match tx.open_table(APPROVALS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            match table.get(id)? {
                Some(value) => Ok(Some(decode(value.value())?)),
                None => Ok(None),
            }
        })
    }

    /// The approvals nobody decided yet, oldest first.
    pub fn pending_approvals(&self) -> StoreResult<Vec<Approval>> {
        self.read(|tx| {
            let table = match tx.open_table(APPROVALS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::new();
            for row in table.iter()? {
                let approval = decode(row?.1.value())?;
                if approval.verdict.is_none() {
                    out.push(approval);
                }
            }
            Ok(out)
        })
    }
}

fn create(tx: &WriteTransaction, new: &NewApproval) -> StoreResult<(Approval, bool)> {
    let mut index = tx.open_table(APPROVAL_REQUESTS)?;
    let mut table = tx.open_table(APPROVALS)?;
    let known = index
        .get((new.task_id, new.request_id.as_str()))?
        .map(|id| id.value());
    if let Some(id) = known
        && let Some(value) = table.get(id)?
    {
        return Ok((decode(value.value())?, false));
    }
    let id = table
        .last()?
        .map_or(1, |(key, _)| key.value().saturating_add(1));
    let approval = Approval {
        id,
        task_id: new.task_id,
        bot_id: new.bot_id.clone(),
        user_id: new.user_id,
        chat_id: new.chat_id,
        request_id: new.request_id.clone(),
        tool_name: new.tool_name.clone(),
        input_json: new.input_json.clone(),
        process_dir: new.process_dir.clone(),
        created_ms: new.created_ms,
        message_id: None,
        verdict: None,
    };
    table.insert(id, codec::encode(&approval).as_slice())?;
    index.insert((new.task_id, new.request_id.as_str()), id)?;
    Ok((approval, true))
}

pub(crate) fn decode(bytes: &[u8]) -> StoreResult<Approval> {
    codec::decode(bytes).map_err(|e| StoreError::decode("approvals", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StoreOptions;

    fn request(task_id: u64, request_id: &str) -> NewApproval {
        NewApproval {
            task_id,
            bot_id: "B".into(),
            user_id: 7,
            chat_id: 7,
            request_id: request_id.into(),
            tool_name: "Bash".into(),
            input_json: r#"{"command":"ls"}"#.into(),
            process_dir: "/tmp/runs/1".into(),
            created_ms: 5,
        }
    }

    fn verdict(decision: ApprovalDecision) -> ApprovalVerdict {
        ApprovalVerdict {
            decision,
            by: "ann".into(),
            by_user: Some(7),
            at_ms: 9,
        }
    }

    #[test]
    fn a_request_is_stored_once_and_decided_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(&dir.path().join("agentlab.redb"), StoreOptions::default()).expect("open");
        assert!(store.pending_approvals().expect("read").is_empty());
        let (first, new) = store
            .create_approval(request(1, "r1"))
            .wait()
            .expect("create");
        assert!(new);
        let (again, new) = store
            .create_approval(request(1, "r1"))
            .wait()
            .expect("create");
        assert!(!new);
        assert_eq!(again, first);
        let (other, new) = store
            .create_approval(request(2, "r1"))
            .wait()
            .expect("create");
        assert!(new);
        assert_ne!(other.id, first.id);
        store
            .set_approval_message(first.id, 42)
            .wait()
            .expect("message");
        assert_eq!(store.pending_approvals().expect("read").len(), 2);

        let decided = store
            .decide_approval(first.id, verdict(ApprovalDecision::Allow))
            .wait()
            .expect("decide");
        let DecideOutcome::Decided(decided) = decided else {
            panic!("not decided: {decided:?}");
        };
        assert_eq!(decided.message_id, Some(42));
        let twice = store
            .decide_approval(first.id, verdict(ApprovalDecision::Deny))
            .wait()
            .expect("decide");
        let DecideOutcome::AlreadyDecided(kept) = twice else {
            panic!("decided twice: {twice:?}");
        };
        assert_eq!(
            kept.verdict.map(|v| v.decision),
            Some(ApprovalDecision::Allow)
        );
        assert_eq!(
            store
                .decide_approval(999, verdict(ApprovalDecision::Deny))
                .wait()
                .expect("decide"),
            DecideOutcome::Unknown
        );
        let pending = store.pending_approvals().expect("read");
        assert_eq!(pending.iter().map(|a| a.id).collect::<Vec<_>>(), [other.id]);
        // Asked again after a restart: the decided request is not asked anew.
        let (replayed, new) = store
            .create_approval(request(1, "r1"))
            .wait()
            .expect("create");
        assert!(!new);
        assert!(replayed.verdict.is_some());
    }
}
