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

/// One approval request of an agent: what was asked, and what became of it.
///
/// Stored with postcard, which writes a struct as its fields in order, so the
/// nested [`NewApproval`] takes the same bytes as its fields written in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Its id (callback data and the HTTP API name it).
    pub id: u64,
    /// What the agent asked.
    pub asked: NewApproval,
    /// The message showing it, once sent.
    pub message_id: Option<i32>,
    /// The decision, once taken.
    pub verdict: Option<ApprovalVerdict>,
}

impl Approval {
    /// The approval as one flat JSON object: its id, what was asked, the message
    /// and the verdict side by side (`dump`'s rows).
    pub fn to_flat_json(&self) -> serde_json::Value {
        let mut row = serde_json::json!({
            "id": self.id,
            "message_id": self.message_id,
            "verdict": self.verdict,
        });
        if let (Some(row), Ok(serde_json::Value::Object(asked))) =
            (row.as_object_mut(), serde_json::to_value(&self.asked))
        {
            row.extend(asked);
        }
        row
    }
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

/// What an agent asks: a request to store (everything but the id, message and
/// verdict).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewApproval {
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
        asked: new.clone(),
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

    /// The same record with every field in place, not nested: the layout of
    /// the records written by earlier versions.
    #[derive(Serialize)]
    struct FlatApproval {
        id: u64,
        task_id: u64,
        bot_id: String,
        user_id: i64,
        chat_id: i64,
        request_id: String,
        tool_name: String,
        input_json: String,
        process_dir: String,
        created_ms: u64,
        message_id: Option<i32>,
        verdict: Option<ApprovalVerdict>,
    }

    #[test]
    fn a_flat_record_decodes_and_encodes_to_the_same_bytes_and_dump_row() {
        let asked = request(3, "r9");
        let flat = FlatApproval {
            id: 12,
            task_id: asked.task_id,
            bot_id: asked.bot_id.clone(),
            user_id: asked.user_id,
            chat_id: asked.chat_id,
            request_id: asked.request_id.clone(),
            tool_name: asked.tool_name.clone(),
            input_json: asked.input_json.clone(),
            process_dir: asked.process_dir.clone(),
            created_ms: asked.created_ms,
            message_id: Some(77),
            verdict: Some(verdict(ApprovalDecision::Deny)),
        };
        let bytes = codec::encode(&flat);
        let approval = decode(&bytes).expect("an old record decodes");
        assert_eq!(
            approval,
            Approval {
                id: 12,
                asked,
                message_id: Some(77),
                verdict: Some(verdict(ApprovalDecision::Deny)),
            }
        );
        assert_eq!(codec::encode(&approval), bytes);
        let row = approval.to_flat_json();
        assert_eq!(row, serde_json::to_value(&flat).expect("json"));
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
