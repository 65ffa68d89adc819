//! Crash recovery of journaled task operations: at open, the operations the
//! journal holds beyond the sequence number the database has applied are redone,
//! in order, then committed durably.
//!
//! Invariants: a record is redone only if the journal continues this database
//! (its first pending sequence number follows the applied one); records that are
//! not redone are copied aside for a human, never silently dropped.

use std::path::Path;

use redb::{Database, Durability};

use super::StoreResult;
use super::batch::Tables;
use super::error::StoreError;
use super::journal::{Journal, JournalRecord};
use super::kv::{journal_seq, set_journal_seq};
use super::lifecycle::{
    Decide, claim_tx, finish_tx, process_tx, started_tx, submit_prompt_tx, submit_started_tx,
    submit_tx,
};
use super::outbox::{begin_delivery_tx, delivered_tx, delivery_failed_tx, progress_tx};
use super::projects::DEFAULT_PROJECT;
use super::sessions::append_message_tx;
use super::task_ops::TaskOp;
use super::writer::JournalState;

/// Opens the journal of the database at `db_path` and redoes the task operations
/// it holds that the database does not (the last run ended without a
/// checkpoint), then commits durably. Returns the journal, ready for writing, and
/// how many operations were redone.
pub(super) fn replay_journal(db: &Database, db_path: &Path) -> StoreResult<(JournalState, u64)> {
    let path = Journal::path_for(db_path);
    let (mut journal, records) = Journal::open(&path)
        .map_err(|e| StoreError::Io(format!("cannot open the journal {}: {e}", path.display())))?;
    let applied = {
        let tx = db.begin_write()?;
        let seq = journal_seq(&tx)?;
        tx.abort()?;
        seq
    };
    let pending: Vec<JournalRecord> = records.into_iter().filter(|r| r.seq > applied).collect();
    let ready = |journal| JournalState {
        journal,
        last_seq: applied,
        seal: None,
    };
    let Some(first) = pending.first() else {
        journal.restart();
        return Ok((ready(journal), 0));
    };
    if first.seq != applied + 1 {
        // Records written against another database (this one was restored or
        // recreated): redoing them here would apply operations to the wrong tasks.
        let kept = keep_journal_copy(&path, "orphaned");
        tracing::error!(
            journal = %path.display(),
            first_seq = first.seq,
            database_seq = applied,
            kept_at = ?kept,
            "the journal does not continue this database (it was replaced by a restore or recreated); its operations are not redone"
        );
        clear_journal(&mut journal);
        return Ok((ready(journal), 0));
    }
    let mut redone = 0;
    let mut failed = Vec::new();
    // One transaction per record, so one that cannot be redone leaves no trace;
    // non-durable, made durable together by the last commit.
    for record in &pending {
        let mut tx = db.begin_write()?;
        tx.set_durability(Durability::None)?;
        let redone_op =
            TaskOp::from_record(&record.payload).and_then(|op| redo(&op, &Tables::new(&tx)));
        match redone_op {
            Ok(()) => {
                tx.commit()?;
                redone += 1;
            }
            Err(e) => {
                tx.abort()?;
                failed.push(format!("seq {}: {e}", record.seq));
            }
        }
    }
    let last_seq = pending.last().map_or(applied, |r| r.seq);
    let mut tx = db.begin_write()?;
    tx.set_durability(Durability::Immediate)?;
    set_journal_seq(&tx, last_seq)?;
    tx.commit()?;
    tracing::warn!(
        operations = redone,
        journal = %path.display(),
        "redid task operations the last run acknowledged but had not checkpointed (it did not shut down cleanly)"
    );
    if !failed.is_empty() {
        let kept = keep_journal_copy(&path, "unredone");
        tracing::error!(
            journal = %path.display(),
            kept_at = ?kept,
            failures = ?failed,
            "journaled task operations could not be redone; the journal was copied aside"
        );
    }
    journal.restart();
    Ok((
        JournalState {
            journal,
            last_seq,
            seal: None,
        },
        redone,
    ))
}

/// A copy of the journal for a human, `<journal>.<label>-<unix ms>`: records this
/// open does not redo are never silently dropped.
fn keep_journal_copy(path: &Path, label: &str) -> Option<std::path::PathBuf> {
    let mut aside = path.as_os_str().to_os_string();
    aside.push(format!(".{label}-{}", super::now_ms()));
    let aside = std::path::PathBuf::from(aside);
    match std::fs::copy(path, &aside) {
        Ok(_) => Some(aside),
        Err(e) => {
            tracing::error!(journal = %path.display(), error = %e, "cannot copy the journal aside");
            None
        }
    }
}

fn clear_journal(journal: &mut Journal) {
    if let Err(e) = journal.clear() {
        tracing::error!(journal = %journal.path().display(), error = %e, "cannot clear the journal");
    }
}

/// Applies an operation again, as the [`super::Store`] method that journaled it did.
fn redo(op: &TaskOp, tx: &Tables<'_>) -> StoreResult<()> {
    match op {
        TaskOp::Submit { new, now_ms } => submit_tx(tx, new, DEFAULT_PROJECT, *now_ms).map(drop),
        TaskOp::SubmitInProject {
            new,
            project,
            now_ms,
        } => submit_tx(tx, new, project, *now_ms).map(drop),
        TaskOp::SubmitPromptInProject {
            new,
            project,
            now_ms,
            history,
        } => submit_prompt_tx(tx, new, project, *now_ms, *history).map(drop),
        TaskOp::Claim {
            now_ms,
            blocked_bots,
        } => claim_tx(tx, *now_ms, blocked_bots).map(drop),
        TaskOp::Process {
            task_id,
            pid,
            start_time,
        } => process_tx(tx, *task_id, *pid, *start_time),
        TaskOp::Finish {
            task_id,
            finish,
            now_ms,
            history,
        } => finish_tx(tx, *task_id, finish, *now_ms, *history).map(drop),
        TaskOp::Progress {
            task_id,
            message_id,
        } => progress_tx(tx, *task_id, *message_id),
        TaskOp::BeginDelivery { task_id, now_ms } => {
            begin_delivery_tx(tx, *task_id, *now_ms).map(drop)
        }
        TaskOp::DeliveryFailed { task_id } => delivery_failed_tx(tx, *task_id),
        TaskOp::Delivered { task_id } => delivered_tx(tx, *task_id),
        TaskOp::Message {
            bot_id,
            user_id,
            role,
            text,
            now_ms,
            history,
        } => append_message_tx(
            tx,
            bot_id,
            *user_id,
            DEFAULT_PROJECT,
            role,
            text,
            *now_ms,
            *history,
        ),
        TaskOp::SubmitPrompt {
            new,
            now_ms,
            history,
        } => submit_prompt_tx(tx, new, DEFAULT_PROJECT, *now_ms, *history).map(drop),
        TaskOp::Started {
            task_id,
            claimed_ms,
            pid,
            start_time,
        } => started_tx(tx, *task_id, *claimed_ms, *pid, *start_time),
        TaskOp::SubmitStarted {
            new,
            project,
            now_ms,
            history,
            pid,
            start_time,
        } => submit_started_tx(
            tx,
            new,
            project,
            *now_ms,
            *history,
            (*pid, *start_time),
            Decide::Decided,
        )
        .map(drop),
    }
}
