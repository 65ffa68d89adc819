//! The storage layer: every piece of agentlab's state, in one redb file.
//!
//! This is the only module that names redb. Everything above it — bots, worker
//! pool, monitors, HTTP, backups — calls typed operations here. Each operation is
//! one transaction:
//! - reads run on the caller's thread in a read transaction (MVCC: they never wait
//!   for the writer and always see one consistent commit);
//! - writes are jobs for the single writer thread ([`writer`]), which group-commits
//!   whatever is waiting and answers each caller only after its commit returned, so
//!   an acknowledged write is durable;
//! - task operations (submit, claim, process, finish, delivery steps) are made
//!   durable by the [`journal`] (`<db>.journal`, one small fsync) and applied to
//!   redb in a non-durable commit that the next durable one (any other write, or
//!   the writer's checkpoint within five seconds) persists; after a crash, open redoes
//!   the journaled operations redb lost. Acknowledged still means durable.
//!
//! The one exception is monitor samples: they are buffered in memory ([`series`])
//! and written in one durable job every [`SERIES_FLUSH`] and at close, so an
//! acknowledged sample may be lost in a crash within that interval. Series reads
//! merge the buffer, so they see every acknowledged sample.
//!
//! Values are serde records ([`records`]) encoded by one codec ([`codec`]); tables
//! are defined in [`tables`]; the schema evolves through the numbered migrations in
//! the top-level `migrations/` folder, applied at open.
//!
//! Task state is kept by what it stores: [`tasks`] (the records and their status
//! and user indexes), [`queue`] (run order, each user's running task), [`outbox`]
//! (answers to deliver), [`costs`] and [`sessions`] (sessions and history). The
//! steps of a task's life that change several of them at once are in
//! [`lifecycle`]; the journaled operations are data in [`task_ops`], redone at
//! open by [`replay`]. They work on the batch's shared tables ([`batch`]), each
//! opened once per commit. Lower files never import higher ones: no import
//! circles.

mod alerts;
mod approval_answers;
mod approvals;
mod batch;
mod choices;
pub mod codec;
mod costs;
mod dump;
mod error;
mod events;
mod heartbeat;
mod journal;
mod kv;
mod legacy;
mod lifecycle;
mod limits;
mod outbox;
mod projects;
mod queue;
pub mod records;
mod replay;
mod scratch;
mod series;
mod series_buffer;
pub mod series_codec;
mod sessions;
mod snapshot;
pub(crate) mod tables;
mod task_events;
mod task_ops;
mod tasks;
mod writer;

#[path = "../../migrations/mod.rs"]
mod migrations;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadTransaction, ReadableDatabase};

pub use approval_answers::{PicksUpdate, QuestionPick};
pub use approvals::{Approval, ApprovalDecision, ApprovalVerdict, DecideOutcome, NewApproval};
pub use costs::utc_day;
pub use dump::{DumpFormat, DumpRow, DumpWriter, TableCount, event_json, iso8601};
pub use error::StoreError;
pub use legacy::{
    ImportCounts, KindCounts, LEGACY_EXTRA_PREFIX, LegacyBatch, LegacyCost, LegacyRestart,
    LegacySession, LegacyTask, META_LEGACY_IMPORT, cost_extra_key, restart_extra_key,
};
pub use lifecycle::{Claimed, NO_CHAT, TaskSubmitted};
pub use limits::{MAX_PROMPT_BYTES, bound_text};
pub use projects::DEFAULT_PROJECT;
pub use records::*;
pub use scratch::ScratchStore;
pub use series::{SERIES_FLUSH, SeriesPoint, SeriesResolution};
pub use snapshot::{SnapshotInfo, inspect_snapshot};
pub use task_events::{MAX_TASK_STEPS, TaskStep, TaskSteps};
pub use task_ops::TaskFinish;
pub use tasks::TaskFilter;
pub use writer::Pending;

use series_buffer::SeriesBuffer;
use writer::WriterHandle;

/// Result of a storage operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// redb page cache, MiB.
    pub cache_mb: usize,
    /// Conversation messages kept per (bot, user).
    pub history_messages: usize,
    /// redb quick repair: commits also save the allocator state, so the first
    /// open after a crash need not rebuild it (faster restart, slower commits).
    pub quick_repair: bool,
    /// Make task operations durable through the journal ([`journal`]) instead of
    /// a durable redb commit each. Both are durable before the answer; the journal
    /// is cheaper per operation. Off only to measure the difference.
    pub journal: bool,
    /// The writer checkpoints (a durable commit that lets the journal start over)
    /// after this long idle with journaled operations pending...
    pub checkpoint_idle: std::time::Duration,
    /// ...and at the latest this long after the oldest of them.
    pub checkpoint_max_age: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_mb: 32,
            history_messages: 50,
            quick_repair: false,
            journal: true,
            // A checkpoint is a durable commit (page writes and fsyncs). Prompts a
            // few hundred ms apart would make one after nearly every prompt with a
            // shorter idle time, a third of the service's CPU per warm prompt
            // (BENCHMARKS.md, the agent). Nothing acknowledged is less durable:
            // a crash leaves more journal records to replay (at most
            // CHECKPOINT_MAX_BYTES of them), and relaxed bookkeeping written in
            // the last five seconds, not one, may be lost (a delivered mark shows
            // as an answer sent again with a note).
            checkpoint_idle: std::time::Duration::from_secs(1),
            checkpoint_max_age: std::time::Duration::from_secs(5),
        }
    }
}

/// The store: cheap to clone, shared by every part of the service.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: Arc<Database>,
    writer: Mutex<Option<WriterHandle>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    event_seq: AtomicU32,
    options: StoreOptions,
    /// Samples not yet written (see [`series`]); shared with the writer thread,
    /// which marks what a flush stored once its commit returned.
    series: Arc<Mutex<SeriesBuffer>>,
    /// Journaled task operations redone at open (the last run ended without a
    /// checkpoint: a crash or kill).
    replayed: u64,
    /// Tasks whose answer this process's `finish_task` queued for delivery: that
    /// commit also recorded the delivery as begun, so the first
    /// `begin_delivery` of each needs no write of its own (see
    /// [`Store::begin_delivery`]). Memory only: after a restart the recorded
    /// start says an earlier process may have sent the answer. A std Mutex: held
    /// for a set operation, never across an await.
    delivery_begun_by_finish: outbox::FreshDeliveries,
    /// Tasks marked delivered whose mark waits for its commit.
    delivered_unsaved: outbox::FreshDeliveries,
    /// Whether the last claim took a task: then the queue likely holds more,
    /// and the next claim goes to the writer without a read first (see
    /// [`Store::claim_next_task`]).
    last_claim_took_task: Arc<AtomicBool>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and applies pending
    /// migrations. Distinguishes a file held by another process from a corrupt one.
    pub fn open(path: &Path, options: StoreOptions) -> StoreResult<Store> {
        Self::open_with(path, options, false)
    }

    /// Like [`Store::open`], but first verifies the checksum of every page of the
    /// file, so a damaged file is [`StoreError::Corrupt`] at open rather than a
    /// failure (or a panic in redb) at the first read of a damaged page. Reads the
    /// whole file: used once at service start-up and after a restore.
    pub fn open_checked(path: &Path, options: StoreOptions) -> StoreResult<Store> {
        Self::open_with(path, options, true)
    }

    fn open_with(path: &Path, options: StoreOptions, check_integrity: bool) -> StoreResult<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", dir.display())))?;
        }
        let started = std::time::Instant::now();
        // A file of a newer schema is refused before it is opened for writing: the
        // write open itself touches the file (redb's header), and such a file must
        // be left exactly as the newer build wrote it. (A file needing repair cannot
        // be opened read-only; it is checked after the repair, below.)
        let read_only = read_only_schema_version(path);
        if let Ok(Some(found)) = read_only
            && found > migrations::latest_version()
        {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: migrations::latest_version(),
            });
        }
        // redb reports its full check on open through the repair callback too, so
        // only a file that did not open read-only (it was not shut down cleanly)
        // is being repaired; a clean one is only being verified.
        let only_verifying = check_integrity && matches!(read_only, Ok(Some(_)));
        let db = Database::builder()
            .set_cache_size(options.cache_mb.max(1) * 1024 * 1024)
            .set_check_integrity_on_open(check_integrity)
            .set_repair_callback(move |session| {
                if only_verifying {
                    tracing::debug!(
                        progress = session.progress(),
                        "verifying every page of the database file"
                    );
                } else {
                    tracing::warn!(
                        progress = session.progress(),
                        "repairing database after an unclean exit"
                    );
                }
            })
            .create(path)
            .map_err(|e| error::open_error(path, e))?;
        let db = Arc::new(db);
        migrations::apply_pending(&db).map_err(|e| with_path(e, path))?;
        let (journal, replayed) = if options.journal {
            let (state, replayed) = replay::replay_journal(&db, path)?;
            (Some(state), replayed)
        } else {
            (None, 0)
        };
        let (handle, thread) = writer::start(
            db.clone(),
            writer::WriterOptions {
                quick_repair: options.quick_repair,
                checkpoint_idle: options.checkpoint_idle,
                checkpoint_max_age: options.checkpoint_max_age,
            },
            journal,
        );
        tracing::debug!(path = %path.display(), elapsed_ms = started.elapsed().as_millis() as u64, "store opened");
        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                db,
                writer: Mutex::new(Some(handle)),
                writer_thread: Mutex::new(Some(thread)),
                event_seq: AtomicU32::new(0),
                options,
                series: Arc::new(Mutex::new(SeriesBuffer::new(series::SERIES_FLUSH))),
                replayed,
                delivery_begun_by_finish: outbox::FreshDeliveries::default(),
                delivered_unsaved: outbox::FreshDeliveries::default(),
                last_claim_took_task: Arc::new(AtomicBool::new(false)),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Schema version recorded in the file.
    pub fn schema_version(&self) -> StoreResult<u32> {
        self.read(migrations::current_version_read)
    }

    /// Newest schema version this build knows.
    pub fn latest_schema_version() -> u32 {
        migrations::latest_version()
    }

    /// Runs `f` in one read transaction.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let tx = self.inner.db.begin_read()?;
        f(&tx)
    }

    /// Queues a durable write.
    pub(crate) fn write<T, F>(&self, f: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnMut(&redb::WriteTransaction) -> StoreResult<T> + Send + 'static,
    {
        // The lock only guards the Option around the handle (taken at close); it is
        // held for a channel send, never across an await.
        let guard = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(handle) => handle.submit(f, |outcome| outcome),
            None => Pending::failed(StoreError::Closed),
        }
    }

    /// Queues a write on the batch's shared tables ([`batch::Tables`]), made
    /// durable as `wanted` says; `then` runs on the writer thread once the
    /// outcome is known (see [`writer`]).
    pub(crate) fn write_tables<T, F, C>(&self, wanted: writer::Wanted, f: F, then: C) -> Pending<T>
    where
        T: Send + 'static,
        F: FnMut(&batch::Tables<'_>) -> StoreResult<T> + Send + 'static,
        C: FnOnce(StoreResult<T>) -> StoreResult<T> + Send + 'static,
    {
        let guard = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(handle) => handle.submit_job(wanted, f, then),
            None => Pending::failed(StoreError::Closed),
        }
    }

    /// How many journaled task operations were redone when this store opened
    /// (after a crash: acknowledged but not yet checkpointed into the database).
    pub fn replayed_at_open(&self) -> u64 {
        self.inner.replayed
    }

    /// Whether close() has not been called yet (the writer handle is still there).
    fn is_open_for_writes(&self) -> bool {
        self.inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Whether writes are still taken: the writer is neither closed nor dead.
    /// O(1), never waits for a commit (health checks call it).
    pub fn is_writable(&self) -> bool {
        let open = self.is_open_for_writes();
        let alive = self
            .inner
            .writer_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|t| !t.is_finished());
        open && alive
    }

    /// Writes every buffered sample now (durably); answered after the commit.
    pub fn flush(&self) -> Pending<()> {
        self.flush_series()
    }

    /// Writes the buffered samples, then stops the writer once it has committed
    /// every job already queued. Later writes fail with [`StoreError::Closed`]; the
    /// file itself closes when the last clone is dropped.
    pub fn close(&self) {
        // Blocking waits only (no async primitive), so close() is safe from async
        // code and plain threads.
        if let Err(e) = self.flush_series().wait()
            && !matches!(e, StoreError::Closed)
        {
            tracing::error!(error = %e, "writing buffered samples at close failed");
        }
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(handle);
        let thread = self
            .inner
            .writer_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("storage writer thread panicked");
        }
    }

    /// Runs redb's integrity check on a closed copy of this store's file.
    /// Needs exclusive access, so it is for tools and tests, not the live service.
    pub fn check_file_integrity(path: &Path) -> StoreResult<bool> {
        let mut db = Database::builder()
            .set_cache_size(16 * 1024 * 1024)
            .open(path)
            .map_err(|e| error::open_error(path, e))?;
        db.check_integrity().map_err(|e| error::open_error(path, e))
    }

    fn next_event_seq(&self) -> u32 {
        self.inner.event_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn options(&self) -> &StoreOptions {
        &self.inner.options
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A store dropped without close(): write the buffered samples first.
        if let Ok(Some(handle)) = self.writer.get_mut().map(|w| w.take())
            && let Err(e) = series::flush_with(&handle, &self.series, series::Detached::No).wait()
        {
            tracing::error!(error = %e, "writing buffered samples at drop failed");
        }
        if let Ok(slot) = self.writer_thread.get_mut()
            && let Some(thread) = slot.take()
        {
            let _ = thread.join();
        }
    }
}

/// The schema version of the file at `path` through redb's read-only handle,
/// which never writes: `None` when there is no file. Fails when the file needs a
/// repair, is held by another process, or is not a database.
fn read_only_schema_version(path: &Path) -> StoreResult<Option<u32>> {
    if !path.is_file() {
        return Ok(None);
    }
    let db = Database::builder()
        .set_cache_size(4 * 1024 * 1024)
        .open_read_only(path)
        .map_err(|e| error::open_error(path, e))?;
    let version = migrations::current_version_read(&db.begin_read()?)?;
    Ok(Some(version))
}

fn with_path(e: StoreError, path: &Path) -> StoreError {
    match e {
        StoreError::Corrupt { detail, .. } => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail,
        },
        other => other,
    }
}

/// The service clock in unix milliseconds: the wall clock, never running backwards
/// (see [`crate::clock`]).
pub fn now_ms() -> u64 {
    crate::clock::now_ms()
}

#[cfg(test)]
mod tests;
