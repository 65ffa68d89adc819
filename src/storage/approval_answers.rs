//! What has been chosen so far for an approval that asks the user questions
//! (`AskUserQuestion`): one pick per question, kept beside the approval (table
//! `approval_answers`) so that answering several questions one press at a time
//! survives a restart, and the approval's own record keeps its layout.
//!
//! Invariant: picks change only while their approval is pending, in the same
//! write transaction that checks it ([`Store::update_approval_picks`]), so a
//! press racing a decision never changes what was answered.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::codec;
use super::error::StoreError;
use super::tables::{APPROVAL_ANSWERS, APPROVALS};
use super::{Approval, Pending, Store, StoreResult};

/// The chosen option labels of one question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuestionPick {
    /// The question's index in the request's `questions`.
    pub question: u32,
    /// The chosen labels, in the order they were chosen.
    pub labels: Vec<String>,
    /// Whether the question is answered (a multi-select question is answered
    /// once its choice is confirmed).
    pub done: bool,
}

/// What [`Store::update_approval_picks`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PicksUpdate<T> {
    /// The approval is pending: the picks were updated; what the update said.
    Updated(Approval, Vec<QuestionPick>, T),
    /// It was decided before: nothing changed.
    AlreadyDecided(Approval),
    /// No such approval.
    Unknown,
}

impl Store {
    /// The picks of an approval (none when nothing was chosen yet).
    pub fn approval_picks(&self, id: u64) -> StoreResult<Vec<QuestionPick>> {
        self.read(|tx| {
            let table = match tx.open_table(APPROVAL_ANSWERS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            match table.get(id)? {
                Some(value) => decode_picks(value.value()),
                None => Ok(Vec::new()),
            }
        })
    }

    /// Changes the picks of a pending approval with `update`, in one write
    /// transaction with the check that it is pending.
    pub fn update_approval_picks<T, F>(&self, id: u64, update: F) -> Pending<PicksUpdate<T>>
    where
        T: Send + 'static,
        F: Fn(&Approval, &mut Vec<QuestionPick>) -> T + Send + 'static,
    {
        self.write(move |tx| {
            let approvals = tx.open_table(APPROVALS)?;
            let approval = match approvals.get(id)? {
                Some(value) => super::approvals::decode(value.value())?,
                None => return Ok(PicksUpdate::Unknown),
            };
            drop(approvals);
            if approval.verdict.is_some() {
                return Ok(PicksUpdate::AlreadyDecided(approval));
            }
            let mut table = tx.open_table(APPROVAL_ANSWERS)?;
            let mut picks = match table.get(id)? {
                Some(value) => decode_picks(value.value())?,
                None => Vec::new(),
            };
            let said = update(&approval, &mut picks);
            table.insert(id, codec::encode(&picks).as_slice())?;
            Ok(PicksUpdate::Updated(approval, picks, said))
        })
    }
}

pub(crate) fn decode_picks(bytes: &[u8]) -> StoreResult<Vec<QuestionPick>> {
    codec::decode(bytes).map_err(|e| StoreError::decode("approval_answers", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{ApprovalDecision, ApprovalVerdict, NewApproval, StoreOptions};

    #[test]
    fn picks_change_while_pending_and_are_kept_after_the_decision() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(&dir.path().join("agentlab.redb"), StoreOptions::default()).expect("open");
        let (approval, _) = store
            .create_approval(NewApproval {
                task_id: 1,
                bot_id: "B".into(),
                user_id: 7,
                chat_id: 7,
                request_id: "r".into(),
                tool_name: "AskUserQuestion".into(),
                input_json: "{}".into(),
                process_dir: "/x".into(),
                created_ms: 1,
            })
            .wait()
            .expect("create");
        assert!(store.approval_picks(approval.id).expect("read").is_empty());
        let pick = QuestionPick {
            question: 0,
            labels: vec!["Blue".into()],
            done: true,
        };
        let given = pick.clone();
        let updated = store
            .update_approval_picks(approval.id, move |_, picks| {
                picks.push(given.clone());
                picks.len()
            })
            .wait()
            .expect("update");
        assert!(
            matches!(updated, PicksUpdate::Updated(_, _, 1)),
            "{updated:?}"
        );
        assert_eq!(
            store.approval_picks(approval.id).expect("read"),
            std::slice::from_ref(&pick)
        );
        let verdict = ApprovalVerdict {
            decision: ApprovalDecision::Allow,
            by: "ann".into(),
            by_user: None,
            at_ms: 2,
        };
        store
            .decide_approval(approval.id, verdict)
            .wait()
            .expect("decide");
        let late = store
            .update_approval_picks(approval.id, |_, picks| picks.clear())
            .wait()
            .expect("update");
        assert!(matches!(late, PicksUpdate::AlreadyDecided(_)), "{late:?}");
        assert_eq!(store.approval_picks(approval.id).expect("read"), [pick]);
        let unknown = store
            .update_approval_picks(99, |_, _| ())
            .wait()
            .expect("update");
        assert_eq!(unknown, PicksUpdate::Unknown);
    }
}
