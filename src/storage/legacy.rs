//! Importing the old bot's state: one write transaction for the whole import.
//!
//! The legacy parser (`crate::legacy`) turns the old JSON files into a
//! [`LegacyBatch`] of ready-made records; this file writes it. Invariants:
//! - the whole batch is one transaction: either every record is written or none;
//! - every imported record leaves a marker in `meta` (`legacy:task:<legacy id>`,
//!   `legacy:session:<bot>:<user>`, `legacy:cost:<bot>:<yyyymmdd>`,
//!   `legacy:restart:<fingerprint>`), written in the same transaction, so a second
//!   import of the same files imports nothing twice and reports it as
//!   "already imported";
//! - imported tasks take fresh ids from the same counter as `submit_task` and go
//!   through `insert_new_task`, so queue and index invariants hold as for any task;
//! - state the running service created is never overwritten: an existing session
//!   of the same (bot, user) or a pending restart state is kept ("kept existing",
//!   no marker written, so the decision is the same on every run);
//! - a cost day is *added* to the bot's existing day, once (its marker);
//! - cost and restart records have no `extra` field (their layout is shared with
//!   the running service), so what the old files held beyond the modelled fields
//!   is kept in `meta` beside the marker, as a JSON object string:
//!   `legacy:extra:cost:<bot>:<yyyymmdd>` (keyed by the record's place in
//!   costs.json) and `legacy:extra:restart:<fingerprint>`.

use std::collections::HashSet;

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::Serialize;
use serde_json::json;

use super::codec;
use super::error::StoreError;
use super::events::insert_event;
use super::kv::RESTART_KEY;
use super::lifecycle::insert_new_task;
use super::limits::{MAX_RESULT_BYTES, bound_text};
use super::records::{CostDay, RestartState, Session, Task, TaskStatus};
use super::tables::{COSTS, META, RESTART_STATE, SESSIONS};
use super::tasks::next_task_id;
use super::{Pending, Store, StoreResult};

/// Key in `meta` of the last import's summary (JSON).
pub const META_LEGACY_IMPORT: &str = "legacy_import";

/// Everything one legacy import writes, already converted to agentlab's records.
#[derive(Debug, Clone, Default)]
pub struct LegacyBatch {
    /// The bot every record belongs to.
    pub bot_id: String,
    /// Where the records came from (the legacy directory), for the event log.
    pub source: String,
    /// Time of the import, unix ms.
    pub now_ms: u64,
    /// Tasks; their `id` is ignored and assigned by the import.
    pub tasks: Vec<LegacyTask>,
    /// Sessions, one per user.
    pub sessions: Vec<LegacySession>,
    /// Cost days, one per day.
    pub costs: Vec<LegacyCost>,
    /// The pending restart, if the old bot recorded one.
    pub restart: Option<LegacyRestart>,
}

/// A task of the old bot.
#[derive(Debug, Clone)]
pub struct LegacyTask {
    /// The old bot's id of the task (its idempotence key).
    pub legacy_id: String,
    /// The converted task; `id` is replaced by a fresh one.
    pub task: Task,
}

/// The session of one user of the old bot.
#[derive(Debug, Clone)]
pub struct LegacySession {
    /// The Telegram user.
    pub user_id: i64,
    /// The converted session.
    pub session: Session,
}

/// The costs of one UTC day of the old bot (all its users together).
#[derive(Debug, Clone)]
pub struct LegacyCost {
    /// yyyymmdd.
    pub day: u32,
    /// What is added to the bot's day.
    pub cost: CostDay,
    /// Unmodelled fields of the day's entries, as a JSON object string keyed by
    /// each entry's place in the file; kept in `meta` (see the module doc).
    pub extra: Option<String>,
}

/// The old bot's pending restart.
#[derive(Debug, Clone)]
pub struct LegacyRestart {
    /// A stable fingerprint of the legacy record (its idempotence key).
    pub fingerprint: String,
    /// The converted state.
    pub state: RestartState,
    /// Unmodelled fields, as a JSON object string; kept in `meta`.
    pub extra: Option<String>,
}

/// What happened to the records of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KindCounts {
    /// Written by this import (or, in a preview, would be).
    pub imported: u64,
    /// Found a marker of an earlier import: not written again.
    pub already_imported: u64,
    /// The store already had its own record there, which was kept.
    pub kept_existing: u64,
}

/// What an import wrote (or, in a preview, would write).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportCounts {
    /// Tasks.
    pub tasks: KindCounts,
    /// Sessions.
    pub sessions: KindCounts,
    /// Cost days.
    pub costs: KindCounts,
    /// Restart state (0 or 1).
    pub restart: KindCounts,
    /// Imported tasks put in the queue (pending and interrupted ones).
    pub queued: u64,
}

impl Store {
    /// Writes a legacy batch in one durable transaction; see the module invariants.
    pub fn import_legacy(&self, batch: LegacyBatch) -> Pending<ImportCounts> {
        self.write(move |tx| import_tx(tx, &batch))
    }

    /// What [`Store::import_legacy`] would do with `batch`, without writing.
    pub fn preview_legacy_import(&self, batch: &LegacyBatch) -> StoreResult<ImportCounts> {
        self.read(|tx| Ok(plan(batch, tx)?.counts))
    }
}

impl LegacyBatch {
    /// What an import into an empty store would do (a dry run with no database yet).
    pub fn preview_into_empty_store(&self) -> ImportCounts {
        match plan(self, &NoStore) {
            Ok(plan) => plan.counts,
            // NoStore never fails; an empty answer keeps this infallible.
            Err(_) => ImportCounts::default(),
        }
    }
}

/// The meta key marking an imported legacy task.
pub fn task_marker(legacy_id: &str) -> String {
    format!("legacy:task:{legacy_id}")
}

/// The meta key marking an imported legacy session.
pub fn session_marker(bot_id: &str, user_id: i64) -> String {
    format!("legacy:session:{bot_id}:{user_id}")
}

/// The meta key marking an imported legacy cost day.
pub fn cost_marker(bot_id: &str, day: u32) -> String {
    format!("legacy:cost:{bot_id}:{day}")
}

/// Prefix of the meta keys holding unmodelled legacy fields (JSON object strings).
pub const LEGACY_EXTRA_PREFIX: &str = "legacy:extra:";

/// The meta key of a legacy cost day's unmodelled fields.
pub fn cost_extra_key(bot_id: &str, day: u32) -> String {
    format!("{LEGACY_EXTRA_PREFIX}cost:{bot_id}:{day}")
}

/// The meta key of a legacy restart state's unmodelled fields.
pub fn restart_extra_key(fingerprint: &str) -> String {
    format!("{LEGACY_EXTRA_PREFIX}restart:{fingerprint}")
}

/// The meta key marking an imported legacy restart state.
pub fn restart_marker(fingerprint: &str) -> String {
    format!("legacy:restart:{fingerprint}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Import,
    AlreadyImported,
    KeepExisting,
}

struct Plan {
    tasks: Vec<Decision>,
    sessions: Vec<Decision>,
    costs: Vec<Decision>,
    restart: Option<Decision>,
    counts: ImportCounts,
}

/// What the store already holds, as far as an import needs to know.
trait Existing {
    fn has_marker(&self, key: &str) -> StoreResult<bool>;
    fn has_session(&self, bot_id: &str, user_id: i64) -> StoreResult<bool>;
    fn has_pending_restart(&self) -> StoreResult<bool>;
}

impl Existing for ReadTransaction {
    fn has_marker(&self, key: &str) -> StoreResult<bool> {
        Ok(self.open_table(META)?.get(key)?.is_some())
    }
    fn has_session(&self, bot_id: &str, user_id: i64) -> StoreResult<bool> {
        Ok(self.open_table(SESSIONS)?.get((bot_id, user_id))?.is_some())
    }
    fn has_pending_restart(&self) -> StoreResult<bool> {
        Ok(self.open_table(RESTART_STATE)?.get(RESTART_KEY)?.is_some())
    }
}

impl Existing for WriteTransaction {
    fn has_marker(&self, key: &str) -> StoreResult<bool> {
        Ok(self.open_table(META)?.get(key)?.is_some())
    }
    fn has_session(&self, bot_id: &str, user_id: i64) -> StoreResult<bool> {
        Ok(self.open_table(SESSIONS)?.get((bot_id, user_id))?.is_some())
    }
    fn has_pending_restart(&self) -> StoreResult<bool> {
        Ok(self.open_table(RESTART_STATE)?.get(RESTART_KEY)?.is_some())
    }
}

struct NoStore;

impl Existing for NoStore {
    fn has_marker(&self, _: &str) -> StoreResult<bool> {
        Ok(false)
    }
    fn has_session(&self, _: &str, _: i64) -> StoreResult<bool> {
        Ok(false)
    }
    fn has_pending_restart(&self) -> StoreResult<bool> {
        Ok(false)
    }
}

/// Decides every record against the store's state before the import. Markers of
/// records earlier in the same batch count as written, so a batch holding a record
/// twice imports it once.
fn plan(batch: &LegacyBatch, existing: &impl Existing) -> StoreResult<Plan> {
    let mut seen = HashSet::new();
    let mut counts = ImportCounts::default();
    let mut decide = |marker: String,
                      exists_in_store: &dyn Fn() -> StoreResult<bool>,
                      counts: &mut KindCounts| {
        let decision = if seen.contains(&marker) || existing.has_marker(&marker)? {
            counts.already_imported += 1;
            Decision::AlreadyImported
        } else if exists_in_store()? {
            counts.kept_existing += 1;
            Decision::KeepExisting
        } else {
            counts.imported += 1;
            Decision::Import
        };
        seen.insert(marker);
        Ok::<_, StoreError>(decision)
    };
    let never = || Ok(false);
    let mut tasks = Vec::with_capacity(batch.tasks.len());
    for t in &batch.tasks {
        let d = decide(task_marker(&t.legacy_id), &never, &mut counts.tasks)?;
        if d == Decision::Import && is_queued(t.task.status) {
            counts.queued += 1;
        }
        tasks.push(d);
    }
    let mut sessions = Vec::with_capacity(batch.sessions.len());
    for s in &batch.sessions {
        let in_store = || existing.has_session(&batch.bot_id, s.user_id);
        sessions.push(decide(
            session_marker(&batch.bot_id, s.user_id),
            &in_store,
            &mut counts.sessions,
        )?);
    }
    let mut costs = Vec::with_capacity(batch.costs.len());
    for c in &batch.costs {
        costs.push(decide(
            cost_marker(&batch.bot_id, c.day),
            &never,
            &mut counts.costs,
        )?);
    }
    let restart = match &batch.restart {
        Some(r) => {
            let in_store = || existing.has_pending_restart();
            Some(decide(
                restart_marker(&r.fingerprint),
                &in_store,
                &mut counts.restart,
            )?)
        }
        None => None,
    };
    Ok(Plan {
        tasks,
        sessions,
        costs,
        restart,
        counts,
    })
}

fn is_queued(status: TaskStatus) -> bool {
    matches!(status, TaskStatus::Queued | TaskStatus::Interrupted)
}

/// The import transaction. Re-runnable (the writer may re-apply it after a
/// neighbour's failure): it reads everything it needs from `tx` and `batch`.
fn import_tx(tx: &WriteTransaction, batch: &LegacyBatch) -> StoreResult<ImportCounts> {
    let plan = plan(batch, tx)?;
    let stamp = batch.now_ms.to_le_bytes();
    for (item, _) in batch
        .tasks
        .iter()
        .zip(&plan.tasks)
        .filter(|(_, d)| **d == Decision::Import)
    {
        let mut task = item.task.clone();
        task.id = next_task_id(tx)?;
        task.bot_id = batch.bot_id.clone();
        task.result = task
            .result
            .as_deref()
            .map(|r| bound_text(r, MAX_RESULT_BYTES));
        insert_new_task(tx, &task)?;
        tx.open_table(META)?.insert(
            task_marker(&item.legacy_id).as_str(),
            task.id.to_le_bytes().as_slice(),
        )?;
    }
    for (item, _) in batch
        .sessions
        .iter()
        .zip(&plan.sessions)
        .filter(|(_, d)| **d == Decision::Import)
    {
        tx.open_table(SESSIONS)?.insert(
            (batch.bot_id.as_str(), item.user_id),
            codec::encode(&item.session).as_slice(),
        )?;
        tx.open_table(META)?.insert(
            session_marker(&batch.bot_id, item.user_id).as_str(),
            stamp.as_slice(),
        )?;
    }
    for (item, _) in batch
        .costs
        .iter()
        .zip(&plan.costs)
        .filter(|(_, d)| **d == Decision::Import)
    {
        let mut costs = tx.open_table(COSTS)?;
        let key = (batch.bot_id.as_str(), item.day);
        let mut day: CostDay = costs
            .get(key)?
            .map(|v| codec::decode(v.value()))
            .transpose()
            .map_err(|e| StoreError::decode("costs", e))?
            .unwrap_or_default();
        day.usd += item.cost.usd;
        day.tasks += item.cost.tasks;
        day.input_tokens += item.cost.input_tokens;
        day.output_tokens += item.cost.output_tokens;
        costs.insert(key, codec::encode(&day).as_slice())?;
        let mut meta = tx.open_table(META)?;
        meta.insert(
            cost_marker(&batch.bot_id, item.day).as_str(),
            stamp.as_slice(),
        )?;
        if let Some(extra) = &item.extra {
            meta.insert(
                cost_extra_key(&batch.bot_id, item.day).as_str(),
                extra.as_bytes(),
            )?;
        }
    }
    if let (Some(item), Some(Decision::Import)) = (&batch.restart, plan.restart) {
        let mut state = item.state.clone();
        state.bot_id = Some(batch.bot_id.clone());
        tx.open_table(RESTART_STATE)?
            .insert(RESTART_KEY, codec::encode(&state).as_slice())?;
        let mut meta = tx.open_table(META)?;
        meta.insert(restart_marker(&item.fingerprint).as_str(), stamp.as_slice())?;
        if let Some(extra) = &item.extra {
            meta.insert(
                restart_extra_key(&item.fingerprint).as_str(),
                extra.as_bytes(),
            )?;
        }
    }
    let payload = json!({
        "source": batch.source,
        "counts": plan.counts,
    });
    tx.open_table(META)?
        .insert(META_LEGACY_IMPORT, payload.to_string().as_bytes())?;
    insert_event(
        tx,
        batch.now_ms,
        0,
        "legacy_import",
        Some(&batch.bot_id),
        &payload,
    )?;
    Ok(plan.counts)
}
