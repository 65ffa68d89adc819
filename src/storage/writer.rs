//! The single writer: group commit for every mutation of the store.
//!
//! All write operations are jobs sent over one channel to one thread. The thread
//! takes whatever jobs are waiting (up to [`MAX_BATCH`]), applies them in one write
//! transaction, commits once, and only then answers each caller. So submissions that
//! arrive together share one fsync, and no caller is told "done" before its change
//! is durable.
//!
//! Invariants:
//! - a job's answer is sent only after the commit that contains it returned;
//! - a job that fails is answered with its error and the rest of the batch is
//!   re-applied in a fresh transaction without it, so one bad job never takes its
//!   neighbours down (jobs are `FnMut` to be re-runnable; their only effects are on
//!   the transaction, which the abort undoes);
//! - every answer follows a durable commit, or, for a batch of journaled jobs
//!   (task operations), a non-durable commit whose records the journal has
//!   fsynced ([`super::journal`]); a later durable commit or checkpoint (idle, or
//!   at most [`WriterOptions::checkpoint_max_age`] later) persists it in redb and
//!   lets the journal start over;
//! - a *relaxed* job ([`Durability::Relaxed`]) is the one exception: bookkeeping
//!   whose loss in a crash is harmless by design (a claim that a later journaled
//!   record redoes, a delivered mark whose loss shows as a re-send with a note, a
//!   progress message id). It is answered after a non-durable commit and reaches
//!   the disk with the next durable commit or checkpoint, at most
//!   [`WriterOptions::checkpoint_max_age`] later;
//! - a *deferred* job is a relaxed one that nobody needs to see at once (a
//!   progress message id, a delivered mark): it is parked beside the channel
//!   without waking the writer, and committed in the transaction of the next
//!   job sent after it (ahead of that job), or just before the idle checkpoint, so it
//!   costs neither a commit nor a wake-up of its own while the store is busy.
//!   Only when the writer would sleep past [`PARKED_MAX_WAIT`] (nothing owed,
//!   or a checkpoint far off) does a parked job keep it awake or wake it, and
//!   then it waits up to [`DEFER_MAX`] for company ([`Parked`]). Jobs are
//!   applied in the order they were sent: every job is numbered as it is
//!   sent, and a batch is applied in that order.
//!
//! Monitor samples, which arrive every few seconds, do not come here one tick
//! at a time: the series layer buffers them and writes them in one job per
//! flush interval ([`super::series`]), so they cost one fsync per interval, not
//! one per tick.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::oneshot;

use super::batch::Tables;
use super::error::StoreError;
use super::journal::{self, Journal};

/// Jobs committed together at most.
pub(crate) const MAX_BATCH: usize = 512;
/// A write job: applied to a transaction (through the batch's shared
/// [`Tables`]), answered after the commit.
pub(crate) trait WriteJob: Send {
    fn apply(&mut self, tables: &Tables<'_>) -> Result<(), StoreError>;
    fn answer(self: Box<Self>, outcome: Result<(), StoreError>);
    /// What the job needs before its caller may be answered.
    fn durability(&self) -> JobDurability<'_>;
    /// When the job was sent to the writer.
    fn sent(&self) -> Instant;
    /// Its place in the order jobs were sent ([`Parked::next_seq`]).
    fn seq(&self) -> u64;
    /// Whether it is a [`Wake`], which only wakes the writer for parked jobs.
    fn is_wake(&self) -> bool {
        false
    }
}

/// What a write job needs before it is answered.
#[derive(Debug, Clone, Copy)]
pub(crate) enum JobDurability<'a> {
    /// A durable redb commit.
    Durable,
    /// Its redo record fsynced in the journal (or a durable commit).
    Journaled(&'a [u8]),
    /// Nothing: a non-durable commit, persisted by the next durable one.
    Relaxed,
}

impl<'a> JobDurability<'a> {
    fn payload(self) -> Option<&'a [u8]> {
        match self {
            JobDurability::Journaled(p) => Some(p),
            _ => None,
        }
    }
}

/// How a job asks to be made durable, as given to [`WriterHandle`].
pub(crate) enum Wanted {
    /// A durable commit.
    Durable,
    /// The job is one that this journal record redoes (see [`super::journal`]):
    /// it may be made durable by the journal instead of a durable commit.
    Journaled(Vec<u8>),
    /// Its loss in a crash is harmless (see the module comment): answered after
    /// a non-durable commit.
    Relaxed,
    /// Relaxed, and it may wait for company (see the module comment).
    Deferred,
}

/// Longest a deferred job that woke an idle writer waits for other jobs before
/// it is committed alone. Nobody waits on one (see the module comment), and
/// its commit is not durable either way, so it may wait for company; short,
/// because the store's readers (the outbox's listing, a progress edit) see it
/// only once committed.
pub(crate) const DEFER_MAX: Duration = Duration::from_millis(50);

/// What the writer and its handles share: the numbering of jobs, and the
/// deferred jobs parked beside the channel.
///
/// Every job is numbered and sent (over the channel, or parked) under one lock,
/// so the numbers are the order of sending, and the writer, draining both under
/// that lock, sees every job sent before the newest it takes.
///
/// Invariant: a parked job is committed by the next batch holding a job sent
/// after it, or at the writer's next timed wake-up (a checkpoint) if that is
/// at most [`PARKED_MAX_WAIT`] away; otherwise (the writer would sleep longer,
/// or without a deadline) the writer does not go to sleep with jobs parked, and
/// a job parked while it sleeps so sends a [`Wake`]: the writer then waits
/// [`DEFER_MAX`] for company and commits them. Once the writer has stopped
/// (ended, or its thread panicked) a job is answered [`StoreError::Closed`].
struct Parked {
    /// The number the next job sent gets.
    next_seq: AtomicU64,
    queue: Mutex<ParkedQueue>,
    /// While the writer sleeps: when it wakes by itself, in nanoseconds after
    /// `epoch` ([`u64::MAX`]: only a job wakes it); 0 while it is awake.
    writer_asleep_until: AtomicU64,
    epoch: Instant,
}

#[derive(Default)]
struct ParkedQueue {
    /// Deferred jobs in the order they were sent.
    jobs: VecDeque<Box<dyn WriteJob>>,
    /// The writer has stopped: nothing sent now would ever be answered.
    closed: bool,
}

/// Longest a parked job waits for the writer's own next wake-up (the default
/// [`WriterOptions::checkpoint_idle`]); a later one is not waited for.
const PARKED_MAX_WAIT: Duration = Duration::from_secs(1);

impl Default for Parked {
    fn default() -> Self {
        Parked {
            next_seq: AtomicU64::new(0),
            queue: Mutex::default(),
            writer_asleep_until: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Parked {
    /// `at` as stored in `writer_asleep_until` (never 0).
    fn nanos(&self, at: Option<Instant>) -> u64 {
        at.map_or(u64::MAX, |at| {
            u64::try_from(at.saturating_duration_since(self.epoch).as_nanos())
                .unwrap_or(u64::MAX)
                .max(1)
        })
    }

    /// Whether the writer sleeps past the longest wait a parked job accepts.
    fn writer_sleeps_too_long(&self) -> bool {
        let until = self.writer_asleep_until.load(Ordering::SeqCst);
        until != 0 && until > self.nanos(Some(Instant::now() + PARKED_MAX_WAIT))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ParkedQueue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Numbers a job and sends it: parked if `deferred` (with a [`Wake`] over
    /// `tx` when the writer sleeps too long), else over `tx`. False if the
    /// writer has stopped (the job is dropped unsent).
    fn send(
        &self,
        tx: &Sender<Box<dyn WriteJob>>,
        deferred: bool,
        make: impl FnOnce(u64) -> Box<dyn WriteJob>,
    ) -> bool {
        let mut queue = self.lock();
        if queue.closed {
            return false;
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        if !deferred {
            return tx.send(make(seq)).is_ok();
        }
        queue.jobs.push_back(make(seq));
        if self.writer_sleeps_too_long() {
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            let sent = Instant::now();
            // A failed send means the writer is gone: its guard answers the job.
            let _ = tx.send(Box::new(Wake { seq, sent }));
        }
        true
    }

    /// The parked jobs sent before job number `before`, oldest first.
    fn take_before(&self, before: u64) -> Vec<Box<dyn WriteJob>> {
        let mut queue = self.lock();
        let n = queue
            .jobs
            .iter()
            .take_while(|job| job.seq() < before)
            .count();
        queue.jobs.drain(..n).collect()
    }

    /// Every parked job and every job waiting in the channel (all sent before
    /// the last parked one among them), in the order they were sent, wake-ups
    /// left out.
    fn take_all(&self, rx: &Receiver<Box<dyn WriteJob>>) -> Vec<Box<dyn WriteJob>> {
        let mut queue = self.lock();
        let mut jobs: Vec<Box<dyn WriteJob>> = queue.jobs.drain(..).collect();
        if jobs.is_empty() {
            return jobs;
        }
        jobs.extend(rx.try_iter().filter(|job| !job.is_wake()));
        drop(queue);
        jobs.sort_by_key(|job| job.seq());
        jobs
    }

    /// The writer is about to sleep until `until` (`None`: until a job comes).
    /// False (and it stays awake) if jobs are parked that would wait too long
    /// so: it must commit them first. A job parked after this check sees when
    /// the writer wakes and sends a [`Wake`] if that is too late.
    fn writer_may_sleep(&self, until: Option<Instant>) -> bool {
        let until = self.nanos(until);
        self.writer_asleep_until.store(until, Ordering::SeqCst);
        if self.lock().jobs.is_empty() || !self.writer_sleeps_too_long() {
            return true;
        }
        self.writer_awake();
        false
    }

    fn writer_awake(&self) {
        self.writer_asleep_until.store(0, Ordering::SeqCst);
    }

    /// The writer has stopped: parked jobs are answered `Closed`, and so is
    /// every job sent from now on.
    fn close(&self) {
        let jobs: Vec<_> = {
            let mut queue = self.lock();
            queue.closed = true;
            queue.jobs.drain(..).collect()
        };
        for job in jobs {
            job.answer(Err(StoreError::Closed));
        }
    }
}

/// Closes [`Parked`] when the writer's loop ends, by return or by panic.
struct CloseOnExit(Arc<Parked>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Sent over the channel when a deferred job was parked while the writer slept
/// without a deadline: it wakes the writer, which then commits the parked jobs
/// (after [`DEFER_MAX`] for company). It writes nothing.
struct Wake {
    seq: u64,
    sent: Instant,
}

impl WriteJob for Wake {
    fn apply(&mut self, _tables: &Tables<'_>) -> Result<(), StoreError> {
        Ok(())
    }

    fn answer(self: Box<Self>, _outcome: Result<(), StoreError>) {}

    fn durability(&self) -> JobDurability<'_> {
        JobDurability::Relaxed
    }

    fn sent(&self) -> Instant {
        self.sent
    }

    fn seq(&self) -> u64 {
        self.seq
    }

    fn is_wake(&self) -> bool {
        true
    }
}

/// A closure applied to the transaction; once the outcome is known (the commit
/// returned, or the job or commit failed), `then` turns it into the caller's
/// answer. It runs on the writer thread, so it can release state that must
/// outlive the commit and no longer, or note a failure nobody awaits.
struct ClosureJob<T, U, F, C> {
    f: F,
    wanted: Wanted,
    value: Option<T>,
    then: C,
    reply: oneshot::Sender<Result<U, StoreError>>,
    sent: Instant,
    seq: u64,
}

impl<T, U, F, C> WriteJob for ClosureJob<T, U, F, C>
where
    T: Send,
    U: Send,
    F: FnMut(&Tables<'_>) -> Result<T, StoreError> + Send,
    C: FnOnce(Result<T, StoreError>) -> Result<U, StoreError> + Send,
{
    fn apply(&mut self, tables: &Tables<'_>) -> Result<(), StoreError> {
        self.value = Some((self.f)(tables)?);
        Ok(())
    }

    fn answer(self: Box<Self>, outcome: Result<(), StoreError>) {
        let result = match (outcome, self.value) {
            (Ok(()), Some(v)) => Ok(v),
            (Ok(()), None) => Err(StoreError::Internal("job answered without a value".into())),
            (Err(e), _) => Err(e),
        };
        // The caller may have gone away (e.g. a timed-out request); the write stands.
        let _ = self.reply.send((self.then)(result));
    }

    fn durability(&self) -> JobDurability<'_> {
        match &self.wanted {
            Wanted::Durable => JobDurability::Durable,
            Wanted::Journaled(record) => JobDurability::Journaled(record),
            Wanted::Relaxed | Wanted::Deferred => JobDurability::Relaxed,
        }
    }

    fn sent(&self) -> Instant {
        self.sent
    }

    fn seq(&self) -> u64 {
        self.seq
    }
}

/// The answer to a write, available once its commit returned.
///
/// `.await` it in async code; call [`Pending::wait`] from plain threads.
#[must_use = "a write is only known to be durable once its Pending is awaited"]
pub struct Pending<T>(PendingInner<T>);

enum PendingInner<T> {
    Waiting(oneshot::Receiver<Result<T, StoreError>>),
    Failed(Option<StoreError>),
}

impl<T> Pending<T> {
    pub(crate) fn failed(e: StoreError) -> Self {
        Pending(PendingInner::Failed(Some(e)))
    }

    /// An answer known without a write.
    pub(crate) fn ready(value: T) -> Self {
        let (reply, rx) = oneshot::channel();
        // The receiver is alive right here, so the send cannot fail.
        let _ = reply.send(Ok(value));
        Pending(PendingInner::Waiting(rx))
    }

    /// Blocks the current thread until the write is committed. Works on any
    /// thread, inside an async runtime too (it yields, then parks the thread,
    /// rather than using the runtime; see [`WAIT_SPIN`]), but async code should
    /// `.await` instead of blocking a worker.
    pub fn wait(self) -> Result<T, StoreError> {
        block_on(self)
    }

    /// Lets the write go ahead without anyone waiting for it: its outcome is
    /// dropped (a failed commit is still logged by the writer; a job that fails,
    /// e.g. on a task that is gone, is not). For bookkeeping
    /// whose caller would do nothing with the answer; it saves the wake-up of a
    /// task that would only end. Later writes are still applied after it: the
    /// writer takes jobs in the order they were sent.
    pub fn detach(self) {}
}

impl<T> std::future::Future for Pending<T> {
    type Output = Result<T, StoreError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        match &mut self.0 {
            PendingInner::Waiting(rx) => match std::pin::Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(result)) => Poll::Ready(result),
                Poll::Ready(Err(_)) => Poll::Ready(Err(StoreError::Closed)),
                Poll::Pending => Poll::Pending,
            },
            PendingInner::Failed(e) => Poll::Ready(Err(e.take().unwrap_or(StoreError::Closed))),
        }
    }
}

/// Drives a future to completion on the current thread, yielding (for at most
/// [`WAIT_SPIN`]) and then parking between polls. Only for futures that need no
/// runtime (a channel receiver).
///
/// The future is polled outside tokio's cooperative budget: on a runtime worker
/// thread whose task has used up its budget, tokio's channels answer every poll
/// with "pending, wake me at once" until the task yields to the scheduler, which a
/// thread blocked here never does, so it would spin forever.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let future = tokio::task::unconstrained(future);
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    let mut spin = Spinner::claim();
    loop {
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(value) => return value,
            std::task::Poll::Pending if spin.again() => std::thread::yield_now(),
            std::task::Poll::Pending => std::thread::park(),
        }
    }
}

/// The right of one blocking waiter at a time to spin (see [`WAIT_SPIN`]):
/// a second spinner would only take CPU from the writer it waits for.
struct Spinner {
    until: Option<Instant>,
    right: &'static AtomicBool,
}

static SPINNING: AtomicBool = AtomicBool::new(false);

impl Spinner {
    fn claim() -> Self {
        Self::claim_from(&SPINNING, WAIT_SPIN)
    }

    fn claim_from(right: &'static AtomicBool, spin: Duration) -> Self {
        let free = right
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        Spinner {
            until: free.then(|| Instant::now() + spin),
            right,
        }
    }

    /// Whether to spin once more; the right is given up once the time is over.
    fn again(&mut self) -> bool {
        match self.until {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                self.release();
                false
            }
            None => false,
        }
    }

    fn release(&mut self) {
        if self.until.take().is_some() {
            self.right.store(false, Ordering::Release);
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.release();
    }
}

/// How long a blocking wait yields instead of parking. A durable write takes
/// about one fsync (~0.1–0.2 ms); a parked thread on a VM costs its waker an
/// inter-processor interrupt and itself a wake-up of ~50 µs, a third of that.
/// Only blocking waits spin (the CLI, importers, start-up, backups, and
/// `Store::close`, also when called from async code); the service's prompts and
/// API requests `.await` and never spin.
const WAIT_SPIN: Duration = Duration::from_micros(500);

/// Handle for sending jobs to the writer thread.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    tx: Sender<Box<dyn WriteJob>>,
    parked: Arc<Parked>,
}

impl WriterHandle {
    pub(crate) fn submit<T, U, F, C>(&self, f: F, then: C) -> Pending<U>
    where
        T: Send + 'static,
        U: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
        C: FnOnce(Result<T, StoreError>) -> Result<U, StoreError> + Send + 'static,
    {
        self.submit_job(Wanted::Durable, raw(f), then)
    }

    /// A job working on the batch's shared [`Tables`] (the task operations),
    /// made durable as `wanted` says.
    pub(crate) fn submit_job<T, U, F, C>(&self, wanted: Wanted, f: F, then: C) -> Pending<U>
    where
        T: Send + 'static,
        U: Send + 'static,
        F: FnMut(&Tables<'_>) -> Result<T, StoreError> + Send + 'static,
        C: FnOnce(Result<T, StoreError>) -> Result<U, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let sent = Instant::now();
        let deferred = matches!(wanted, Wanted::Deferred);
        let job = move |seq| -> Box<dyn WriteJob> {
            Box::new(ClosureJob {
                f,
                wanted,
                value: None,
                then,
                reply,
                sent,
                seq,
            })
        };
        if self.parked.send(&self.tx, deferred, job) {
            Pending(PendingInner::Waiting(rx))
        } else {
            Pending::failed(StoreError::Closed)
        }
    }
}

/// A job on the transaction itself (it opens its own tables).
fn raw<T, F>(mut f: F) -> impl FnMut(&Tables<'_>) -> Result<T, StoreError> + Send + 'static
where
    F: FnMut(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
{
    move |tables: &Tables<'_>| f(tables.tx()?)
}

/// Starts the writer thread. It ends when every [`WriterHandle`] is dropped, after
/// committing every job already sent (and, with a journal, a last durable commit
/// that lets the journal be emptied).
pub(crate) fn start(
    db: Arc<Database>,
    options: WriterOptions,
    journal: Option<JournalState>,
) -> (WriterHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let parked = Arc::new(Parked::default());
    let writer = Writer::new(db, options, journal, parked.clone());
    let thread = std::thread::Builder::new()
        .name("agentlab-store-writer".into())
        .spawn(move || writer.run(rx))
        .unwrap_or_else(|e| panic!("cannot start the storage writer thread: {e}"));
    (WriterHandle { tx, parked }, thread)
}

/// The journal handed to the writer, with the last sequence number applied.
pub(crate) struct JournalState {
    pub journal: Journal,
    pub last_seq: u64,
    /// Set after a journaled batch failed once its records may have reached the
    /// file: the highest sequence number given out. Until a durable commit has
    /// recorded it as applied (which makes those records unreplayable, however
    /// the erase went) and the journal has started over, nothing is journaled.
    pub seal: Option<u64>,
}

/// How the writer commits.
pub(crate) struct WriterOptions {
    /// Every durable commit also saves the allocator state (redb's quick repair).
    pub quick_repair: bool,
    /// A checkpoint (a durable commit, after which the journal starts over) is made
    /// when the writer has been idle this long with journaled records pending...
    pub checkpoint_idle: Duration,
    /// ...or when the oldest pending record is this old (or the journal holds
    /// [`CHECKPOINT_MAX_BYTES`]).
    pub checkpoint_max_age: Duration,
}

/// Journal size that forces a checkpoint.
const CHECKPOINT_MAX_BYTES: u64 = 4 * 1024 * 1024;
/// Journal size past which (checkpoints failing) writes take durable commits.
const JOURNAL_MAX_BYTES: u64 = 4 * CHECKPOINT_MAX_BYTES;
/// First pause after a failed checkpoint; it doubles up to [`CHECKPOINT_MAX_BACKOFF`].
const CHECKPOINT_BACKOFF: Duration = Duration::from_millis(100);
const CHECKPOINT_MAX_BACKOFF: Duration = Duration::from_secs(10);

struct Writer {
    db: Arc<Database>,
    options: WriterOptions,
    journal: Option<JournalState>,
    /// When the oldest journaled record not yet durable in redb was written.
    pending_since: Option<Instant>,
    /// Checkpoints failed in a row, and when the next may be tried.
    checkpoint_failures: u32,
    checkpoint_retry_at: Option<Instant>,
    /// One-job batches in a row whose job came within [`WRITER_SPIN`] of the
    /// batch before it: a lone caller submitting step after step.
    quick_lone_jobs: u32,
    /// Deferred jobs parked beside the channel.
    parked: Arc<Parked>,
    /// Since when parked jobs that woke the writer wait for company.
    waiting_since: Option<Instant>,
}

/// How long the writer looks for the next job before it sleeps, once
/// [`SPIN_AFTER_QUICK_JOBS`] lone jobs in a row each came this soon after the
/// answer to the one before: a lone caller submitting write after write (an
/// awaited loop, an import) then finds the writer awake instead of paying its
/// wake-up (~20–50 µs on a VM, where waking a sleeping CPU is an interrupt
/// through the host). A spin that finds nothing ends the streak, so a service
/// whose writes come a millisecond apart (the bot: submit, claim, pid, finish,
/// each after a Bot API call or the agent's run) does not spin: on 2 cores a
/// spinning writer takes the CPU the tokio threads and the agent need. Many
/// callers at once do not need it: their jobs meet in one batch.
const WRITER_SPIN: Duration = Duration::from_micros(100);
const SPIN_AFTER_QUICK_JOBS: u32 = 4;

impl Writer {
    fn new(
        db: Arc<Database>,
        options: WriterOptions,
        journal: Option<JournalState>,
        parked: Arc<Parked>,
    ) -> Self {
        Writer {
            db,
            options,
            journal,
            pending_since: None,
            checkpoint_failures: 0,
            checkpoint_retry_at: None,
            quick_lone_jobs: 0,
            parked,
            waiting_since: None,
        }
    }

    /// The jobs to commit now: `batch` with the parked jobs sent before any of
    /// it, in the order they were sent; or nothing when `batch` only woke the
    /// writer for parked jobs (they wait for company).
    fn take_batch(&mut self, batch: Vec<Box<dyn WriteJob>>) -> Option<Vec<Box<dyn WriteJob>>> {
        let mut jobs: Vec<Box<dyn WriteJob>> =
            batch.into_iter().filter(|job| !job.is_wake()).collect();
        if jobs.is_empty() {
            self.waiting_since.get_or_insert_with(Instant::now);
            return None;
        }
        let last = jobs.iter().map(|job| job.seq()).max().unwrap_or(0);
        let earlier = self.parked.take_before(last);
        if !earlier.is_empty() {
            jobs.extend(earlier);
            jobs.sort_by_key(|job| job.seq());
        }
        self.waiting_since = None;
        Some(jobs)
    }

    /// Commits whatever is parked, if anything, with the jobs sent before it
    /// that wait in the channel (none wait for company any more).
    fn commit_parked(&mut self, rx: &Receiver<Box<dyn WriteJob>>) {
        self.waiting_since = None;
        let jobs = self.parked.take_all(rx);
        if !jobs.is_empty() {
            self.commit_batch(jobs);
        }
    }

    /// The next job if a streak of quick lone jobs makes one likely within
    /// [`WRITER_SPIN`]; a spin that finds none ends the streak.
    fn spin_for_job(&mut self, rx: &Receiver<Box<dyn WriteJob>>) -> Option<Box<dyn WriteJob>> {
        if self.quick_lone_jobs < SPIN_AFTER_QUICK_JOBS {
            return None;
        }
        let until = Instant::now() + WRITER_SPIN;
        loop {
            match rx.try_recv() {
                Ok(job) => return Some(job),
                Err(std::sync::mpsc::TryRecvError::Empty) if Instant::now() < until => {
                    std::thread::yield_now()
                }
                Err(_) => {
                    self.quick_lone_jobs = 0;
                    return None;
                }
            }
        }
    }

    /// Counts the streak [`Self::spin_for_job`] looks for.
    fn note_batch(&mut self, first_sent: Instant, batch_len: usize, previous_done: Instant) {
        let quick = first_sent.saturating_duration_since(previous_done) < WRITER_SPIN;
        self.quick_lone_jobs = if quick && batch_len == 1 {
            self.quick_lone_jobs.saturating_add(1)
        } else {
            0
        };
    }

    fn run(mut self, rx: Receiver<Box<dyn WriteJob>>) {
        let _close = CloseOnExit(self.parked.clone());
        let mut batch_done = Instant::now();
        loop {
            let first = match self.waiting_since {
                Some(since) => match rx
                    .recv_timeout((since + DEFER_MAX).saturating_duration_since(Instant::now()))
                {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        // No company came: the deferred jobs are committed alone.
                        self.commit_parked(&rx);
                        batch_done = Instant::now();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match self.spin_for_job(&rx) {
                    Some(job) => job,
                    None => match self.next_job(&rx) {
                        Next::Job(job) => job,
                        Next::Idle => continue,
                        Next::Closed => break,
                    },
                },
            };
            let first_sent = first.sent();
            let Some(batch) = self.take_batch(collect_batch(first, &rx)) else {
                continue;
            };
            self.note_batch(first_sent, batch.len(), batch_done);
            self.commit_batch(batch);
            if self.checkpoint_due() {
                self.checkpoint();
            }
            batch_done = Instant::now();
        }
        self.commit_parked(&rx);
        self.close_journal();
    }

    /// Sleeps until the next job, making a checkpoint if it has been idle
    /// long enough with journaled records pending.
    fn next_job(&mut self, rx: &Receiver<Box<dyn WriteJob>>) -> Next {
        let Some(since) = self.pending_since else {
            if !self.parked.writer_may_sleep(None) {
                return self.wait_for_company();
            }
            let next = rx.recv();
            self.parked.writer_awake();
            return next.map_or(Next::Closed, Next::Job);
        };
        let age_left = self
            .options
            .checkpoint_max_age
            .saturating_sub(since.elapsed());
        let mut wait = self.options.checkpoint_idle.min(age_left);
        if let Some(retry_at) = self.checkpoint_retry_at {
            wait = wait.max(retry_at.saturating_duration_since(Instant::now()));
        }
        if !self.parked.writer_may_sleep(Some(Instant::now() + wait)) {
            return self.wait_for_company();
        }
        let next = rx.recv_timeout(wait);
        self.parked.writer_awake();
        match next {
            Ok(job) => Next::Job(job),
            Err(RecvTimeoutError::Timeout) => {
                self.commit_parked(rx);
                self.checkpoint();
                self.quick_lone_jobs = 0;
                Next::Idle
            }
            Err(RecvTimeoutError::Disconnected) => Next::Closed,
        }
    }

    /// Parked jobs that the writer's next wake-up comes too late for wait
    /// [`DEFER_MAX`] for company instead.
    fn wait_for_company(&mut self) -> Next {
        self.waiting_since = Some(Instant::now());
        Next::Idle
    }

    fn checkpoint_due(&self) -> bool {
        let Some(since) = self.pending_since else {
            return false;
        };
        if self
            .checkpoint_retry_at
            .is_some_and(|at| Instant::now() < at)
        {
            return false;
        }
        since.elapsed() >= self.options.checkpoint_max_age
            || self
                .journal
                .as_ref()
                .is_some_and(|j| j.journal.written() >= CHECKPOINT_MAX_BYTES)
    }

    /// An empty durable commit: every earlier non-durable one becomes durable, so
    /// the journal can start over. On failure the journal keeps its records and a
    /// later checkpoint tries again, after a pause that doubles with each failure.
    fn checkpoint(&mut self) {
        let seal = self.journal.as_ref().and_then(|state| state.seal);
        let committed = (|| -> Result<(), StoreError> {
            let mut tx = self.db.begin_write()?;
            tx.set_durability(Durability::Immediate)?;
            tx.set_quick_repair(self.options.quick_repair);
            if let Some(seq) = seal {
                super::kv::set_journal_seq(&tx, seq)?;
            }
            tx.commit()?;
            Ok(())
        })();
        match committed {
            Ok(()) => {
                if self.checkpoint_failures > 0 {
                    tracing::info!(
                        failures = self.checkpoint_failures,
                        "storage checkpoint succeeded again"
                    );
                }
                self.checkpoint_failures = 0;
                self.checkpoint_retry_at = None;
                self.durable_commit_done();
            }
            Err(e) => {
                self.checkpoint_failures = self.checkpoint_failures.saturating_add(1);
                let pause = CHECKPOINT_BACKOFF
                    .saturating_mul(1 << self.checkpoint_failures.min(10))
                    .min(CHECKPOINT_MAX_BACKOFF);
                self.checkpoint_retry_at = Some(Instant::now() + pause);
                if self.checkpoint_failures.is_power_of_two() {
                    tracing::error!(
                        error = %e,
                        failures = self.checkpoint_failures,
                        "storage checkpoint failed; the journal keeps its records"
                    );
                }
            }
        }
    }

    /// After any durable commit (which records a pending seal too).
    fn durable_commit_done(&mut self) {
        self.pending_since = None;
        if let Some(state) = self.journal.as_mut() {
            state.seal = None;
            state.journal.restart();
        }
    }

    /// How a batch of these jobs is committed.
    fn plan(&self, jobs: &[Box<dyn WriteJob>]) -> Plan {
        if self
            .journal
            .as_ref()
            .is_some_and(|state| state.seal.is_some())
        {
            // Sealed-off records must be made unreplayable by the very next
            // commit (a durable one records the seal), relaxed jobs or not.
            return Plan::Durable;
        }
        let mut records = 0;
        for job in jobs {
            match job.durability() {
                JobDurability::Durable => return Plan::Durable,
                JobDurability::Journaled(p) if p.len() <= journal::MAX_PAYLOAD => records += 1,
                JobDurability::Journaled(_) => return Plan::Durable,
                JobDurability::Relaxed => {}
            }
        }
        if records == 0 {
            return Plan::Relaxed;
        }
        let journal_usable = self.journal.as_ref().is_some_and(|state| {
            state.seal.is_none() && state.journal.written() < JOURNAL_MAX_BYTES
        });
        if journal_usable {
            Plan::Journaled
        } else {
            Plan::Durable
        }
    }

    /// At the end: a last checkpoint, then a journal with nothing to replay.
    fn close_journal(&mut self) {
        if self.pending_since.is_some() {
            self.checkpoint();
        }
        if self.pending_since.is_none()
            && let Some(state) = self.journal.as_mut()
            && let Err(e) = state.journal.clear()
        {
            tracing::error!(path = %state.journal.path().display(), error = %e, "cannot empty the journal at close");
        }
    }

    /// Applies and commits a batch; answers every job (a failed commit with its
    /// error).
    fn commit_batch(&mut self, mut jobs: Vec<Box<dyn WriteJob>>) {
        loop {
            let outcome = match self.plan(&jobs) {
                Plan::Durable => self.try_commit(&mut jobs),
                Plan::Journaled => self.try_commit_journaled(&mut jobs),
                Plan::Relaxed => self.try_commit_relaxed(&mut jobs),
            };
            match outcome {
                Ok(()) => {
                    for job in jobs {
                        job.answer(Ok(()));
                    }
                    return;
                }
                Err(BatchError::Job(index, e)) => {
                    // Answer the failed job; retry the rest without it.
                    let failed = jobs.remove(index);
                    failed.answer(Err(e));
                    if jobs.is_empty() {
                        return;
                    }
                }
                Err(BatchError::Commit(e)) => {
                    tracing::error!(error = %e, jobs = jobs.len(), "group commit failed");
                    for job in jobs {
                        job.answer(Err(e.clone()));
                    }
                    return;
                }
            }
        }
    }

    fn begin(&self, durable: bool) -> Result<WriteTransaction, BatchError> {
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        let mut tx = self
            .db
            .begin_write()
            .map_err(|e| BatchError::Commit(e.into()))?;
        tx.set_durability(durability)
            .map_err(|e| BatchError::Commit(e.into()))?;
        if self.options.quick_repair && durable {
            tx.set_quick_repair(true);
        }
        Ok(tx)
    }

    fn try_commit(&mut self, jobs: &mut [Box<dyn WriteJob>]) -> Result<(), BatchError> {
        let tx = self.begin(true)?;
        let seal = self.journal.as_ref().and_then(|state| state.seal);
        let applied = apply_all(&tx, jobs, seal);
        if let Err(e) = applied {
            // Aborting undoes every job's writes.
            let _ = tx.abort();
            return Err(e);
        }
        tx.commit().map_err(|e| BatchError::Commit(e.into()))?;
        self.durable_commit_done();
        Ok(())
    }

    /// A batch of relaxed jobs only: a non-durable commit, which the next
    /// durable commit or checkpoint persists.
    fn try_commit_relaxed(&mut self, jobs: &mut [Box<dyn WriteJob>]) -> Result<(), BatchError> {
        let tx = self.begin(false)?;
        if let Err(e) = apply_all(&tx, jobs, None) {
            let _ = tx.abort();
            return Err(e);
        }
        tx.commit().map_err(|e| BatchError::Commit(e.into()))?;
        self.pending_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// A batch of journaled (and relaxed) jobs: their records are appended to the journal (on
    /// the journal's thread when there are several) while the jobs are applied in a non-durable
    /// transaction that also records the last sequence number; once both are
    /// done the transaction is committed (visible). Any failure erases the
    /// appended records again before a caller hears of it.
    fn try_commit_journaled(&mut self, jobs: &mut [Box<dyn WriteJob>]) -> Result<(), BatchError> {
        let tx = self.begin(false)?;
        let Some(state) = self.journal.as_mut() else {
            return Err(BatchError::Commit(StoreError::Internal(
                "no journal".into(),
            )));
        };
        let payloads: Vec<&[u8]> = jobs
            .iter()
            .filter_map(|j| j.durability().payload())
            .collect();
        let first_seq = state.last_seq + 1;
        let last_seq = state.last_seq + payloads.len() as u64;
        let records = state.journal.encode(first_seq, &payloads);
        let bytes = records.len() as u64;
        let apply = |jobs: &mut [Box<dyn WriteJob>]| apply_all(&tx, jobs, Some(last_seq));
        // One record's job (alone, or with relaxed bookkeeping riding along) is
        // cheaper to apply than the hand-over to the journal's thread and back, so
        // it is applied first and appended on this thread; a batch of several
        // records is applied while the journal's thread writes it.
        let (applied, synced) = if payloads.len() <= 1 {
            let applied = apply(jobs);
            let synced = if applied.is_ok() {
                state.journal.append_encoded(&records).map(|()| true)
            } else {
                Ok(false)
            };
            (applied, synced)
        } else {
            let appending = state.journal.start_append(records);
            let applied = apply(jobs);
            (
                applied,
                state.journal.finish_append(appending).map(|()| true),
            )
        };
        // `synced` is Ok(whether the records were written).
        let attempted = !matches!(synced, Ok(false));
        let failure = match (applied, synced) {
            (Ok(()), Ok(_)) => None,
            (Err(e), synced) => {
                if synced.is_ok_and(|written| written) {
                    state.journal.unappend(bytes);
                }
                Some(e)
            }
            (Ok(()), Err(e)) => {
                let path = state.journal.path().display();
                Some(BatchError::Commit(StoreError::Io(format!("{path}: {e}"))))
            }
        };
        let failure = match failure {
            Some(e) => {
                let _ = tx.abort();
                Some(e)
            }
            None => tx.commit().err().map(|e| {
                state.journal.unappend(bytes);
                BatchError::Commit(e.into())
            }),
        };
        if let Some(e) = failure {
            if attempted {
                // The records may be in the file whatever the erase did: their
                // numbers are sealed off (see JournalState::seal).
                state.seal = Some(last_seq);
                state.last_seq = last_seq;
                self.pending_since.get_or_insert_with(Instant::now);
            }
            return Err(e);
        }
        state.last_seq = last_seq;
        self.pending_since.get_or_insert_with(Instant::now);
        Ok(())
    }
}

/// Applies every job, then records `journal_seq` (the last journal record
/// applied) if given, with the tables shared for the batch; the first failure
/// names the job, and the caller aborts the transaction (undoing every job's
/// writes). Every table is closed when this returns.
fn apply_all(
    tx: &WriteTransaction,
    jobs: &mut [Box<dyn WriteJob>],
    journal_seq: Option<u64>,
) -> Result<(), BatchError> {
    let tables = Tables::new(tx);
    for (index, job) in jobs.iter_mut().enumerate() {
        if let Err(e) = job.apply(&tables) {
            return Err(BatchError::Job(index, e));
        }
    }
    if let Some(seq) = journal_seq {
        super::kv::set_journal_seq_in(&mut *tables.meta().map_err(BatchError::Commit)?, seq)
            .map_err(BatchError::Commit)?;
    }
    Ok(())
}

enum BatchError {
    Job(usize, StoreError),
    Commit(StoreError),
}

/// What the writer's wait for work ended with.
enum Next {
    Job(Box<dyn WriteJob>),
    /// Nothing came in time (a checkpoint was made), or parked jobs wait for
    /// company before the writer may sleep.
    Idle,
    /// Every handle is gone.
    Closed,
}

/// How one batch is committed: see [`Writer::plan`].
enum Plan {
    Durable,
    Journaled,
    Relaxed,
}

fn collect_batch(
    first: Box<dyn WriteJob>,
    rx: &Receiver<Box<dyn WriteJob>>,
) -> Vec<Box<dyn WriteJob>> {
    let mut jobs = vec![first];
    while jobs.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tables::META;
    use redb::ReadableDatabase as _;

    const T: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("t");

    /// A journaled job writing `key` (or failing), answering on the receiver.
    fn job(key: u64, fail: bool) -> (Box<dyn WriteJob>, oneshot::Receiver<Result<(), StoreError>>) {
        let (reply, rx) = oneshot::channel();
        let job = ClosureJob {
            f: move |tables: &Tables<'_>| {
                let tx = tables.tx()?;
                if fail {
                    return Err(StoreError::Conflict("refused".into()));
                }
                tx.open_table(T)?.insert(key, key)?;
                Ok(())
            },
            wanted: Wanted::Journaled(key.to_le_bytes().to_vec()),
            value: None,
            then: |outcome| outcome,
            reply,
            sent: Instant::now(),
            seq: TEST_SEQ.fetch_add(1, Ordering::Relaxed),
        };
        (Box::new(job), rx)
    }

    fn writer(dir: &tempfile::TempDir) -> Writer {
        let db = Arc::new(Database::create(dir.path().join("db")).unwrap());
        let (journal, _) = Journal::open(&dir.path().join("db.journal")).unwrap();
        let options = WriterOptions {
            quick_repair: false,
            checkpoint_idle: Duration::from_secs(3600),
            checkpoint_max_age: Duration::from_secs(3600),
        };
        let state = JournalState {
            journal,
            last_seq: 0,
            seal: None,
        };
        Writer::new(db, options, Some(state), Arc::default())
    }

    fn journal_seq(writer: &Writer) -> Option<String> {
        let tx = writer.db.begin_read().unwrap();
        let meta = tx.open_table(META).ok()?;
        let value = meta.get("journal_seq").unwrap()?;
        Some(String::from_utf8(value.value().to_vec()).unwrap())
    }

    #[test]
    fn a_failed_job_in_a_journaled_batch_can_never_be_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(&dir);
        let (a, a_rx) = job(1, false);
        let (b, b_rx) = job(2, true);
        let (c, c_rx) = job(3, false);
        // Three jobs: the records are written while the jobs are applied, so the
        // failing one's record reaches the file before its failure is known.
        writer.commit_batch(vec![a, b, c]);
        assert!(a_rx.blocking_recv().unwrap().is_ok());
        assert!(b_rx.blocking_recv().unwrap().is_err());
        assert!(c_rx.blocking_recv().unwrap().is_ok());
        // The retry of a and c was a durable commit that sealed seqs 1..=3 off.
        let state = writer.journal.as_ref().unwrap();
        assert_eq!(state.seal, None);
        assert_eq!(journal_seq(&writer).as_deref(), Some("3"));
        let (_, records) = Journal::open(&dir.path().join("db.journal")).unwrap();
        assert!(records.iter().all(|r| r.seq <= 3), "{records:?}");

        // Journaling resumes after the seal, numbering after it.
        let (d, d_rx) = job(4, false);
        writer.commit_batch(vec![d]);
        assert!(d_rx.blocking_recv().unwrap().is_ok());
        let (_, records) = Journal::open(&dir.path().join("db.journal")).unwrap();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [4]);
        assert_eq!(journal_seq(&writer).as_deref(), Some("4"));
    }

    /// A relaxed job writing `key`, answering on the receiver.
    fn relaxed_job(key: u64) -> (Box<dyn WriteJob>, oneshot::Receiver<Result<(), StoreError>>) {
        let (reply, rx) = oneshot::channel();
        let job = ClosureJob {
            f: move |tables: &Tables<'_>| {
                tables.tx()?.open_table(T)?.insert(key, key)?;
                Ok(())
            },
            wanted: Wanted::Relaxed,
            value: None,
            then: |outcome| outcome,
            reply,
            sent: Instant::now(),
            seq: TEST_SEQ.fetch_add(1, Ordering::Relaxed),
        };
        (Box::new(job), rx)
    }

    fn stored(writer: &Writer, key: u64) -> bool {
        let tx = writer.db.begin_read().unwrap();
        tx.open_table(T)
            .ok()
            .is_some_and(|t| t.get(key).unwrap().is_some())
    }

    #[test]
    fn relaxed_jobs_write_no_record_and_the_next_checkpoint_persists_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(&dir);
        let (a, a_rx) = relaxed_job(1);
        writer.commit_batch(vec![a]);
        assert!(a_rx.blocking_recv().unwrap().is_ok());
        assert!(stored(&writer, 1), "visible at once");
        assert!(writer.pending_since.is_some(), "a checkpoint is owed");
        let (_, records) = Journal::open(&dir.path().join("db.journal")).unwrap();
        assert!(records.is_empty());

        // Beside a journaled job: only the journaled one gets a record.
        let (b, b_rx) = relaxed_job(2);
        let (c, c_rx) = job(3, false);
        writer.commit_batch(vec![b, c]);
        assert!(b_rx.blocking_recv().unwrap().is_ok());
        assert!(c_rx.blocking_recv().unwrap().is_ok());
        let (_, records) = Journal::open(&dir.path().join("db.journal")).unwrap();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1]);
        assert_eq!(journal_seq(&writer).as_deref(), Some("1"));

        writer.checkpoint();
        assert!(writer.pending_since.is_none());
        let db_path = dir.path().join("db");
        drop(writer);
        let db = Database::open(&db_path).unwrap();
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(T).unwrap();
        assert!((1..=3).all(|k| t.get(k).unwrap().is_some()), "all durable");
    }

    /// What a test job's caller hears.
    type Answer = oneshot::Receiver<Result<(), StoreError>>;

    /// Test jobs' numbers, in the order they are made.
    static TEST_SEQ: AtomicU64 = AtomicU64::new(0);

    /// A job writing `key`, made with the number [`Parked::send`] gives it.
    fn numbered_job(key: u64, wanted: Wanted) -> (impl FnOnce(u64) -> Box<dyn WriteJob>, Answer) {
        let (reply, rx) = oneshot::channel();
        let make = move |seq| -> Box<dyn WriteJob> {
            Box::new(ClosureJob {
                f: move |tables: &Tables<'_>| {
                    tables.tx()?.open_table(T)?.insert(key, key)?;
                    Ok(())
                },
                wanted,
                value: None,
                then: |outcome| outcome,
                reply,
                sent: Instant::now(),
                seq,
            })
        };
        (make, rx)
    }

    #[test]
    fn parked_jobs_join_the_next_batch_sent_after_them_and_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(&dir);
        let (tx, rx) = std::sync::mpsc::channel();
        let (a, a_rx) = numbered_job(1, Wanted::Deferred);
        assert!(writer.parked.send(&tx, true, a));
        assert!(rx.try_recv().is_err(), "the writer is awake: no wake-up");
        assert!(!stored(&writer, 1), "not applied yet");

        let (b, b_rx) = numbered_job(2, Wanted::Journaled(b"2".to_vec()));
        writer.parked.send(&tx, false, b);
        let (late, _late_rx) = numbered_job(3, Wanted::Deferred);
        writer.parked.send(&tx, true, late);
        let jobs = writer
            .take_batch(vec![rx.try_recv().unwrap()])
            .expect("company came");
        assert_eq!(jobs.len(), 2, "a job parked after the batch's stays parked");
        assert!(
            jobs[0].seq() < jobs[1].seq(),
            "the deferred job first, as it was sent"
        );
        assert_eq!(writer.parked.lock().jobs.len(), 1);
        assert!(writer.waiting_since.is_none());
        writer.commit_batch(jobs);
        assert!(a_rx.blocking_recv().unwrap().is_ok());
        assert!(b_rx.blocking_recv().unwrap().is_ok());
        assert!(stored(&writer, 1) && stored(&writer, 2));
        let (_, records) = Journal::open(&dir.path().join("db.journal")).unwrap();
        assert_eq!(
            records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [1],
            "one commit, and the deferred job has no record"
        );
    }

    #[test]
    fn parked_jobs_taken_alone_bring_the_jobs_sent_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(&dir);
        let (tx, rx) = std::sync::mpsc::channel();
        let (a, _a_rx) = numbered_job(1, Wanted::Relaxed);
        writer.parked.send(&tx, false, a);
        let (p, _p_rx) = numbered_job(2, Wanted::Deferred);
        writer.parked.send(&tx, true, p);
        let jobs = writer.parked.take_all(&rx);
        assert_eq!(jobs.len(), 2, "the channel's job comes along");
        assert!(jobs[0].seq() < jobs[1].seq(), "in the order they were sent");
    }

    /// A writer thread on a new database in `dir`, without a journal, that
    /// checkpoints after `checkpoint_idle` (and an hour at most).
    fn started_writer(
        dir: &tempfile::TempDir,
        checkpoint_idle: Duration,
    ) -> (Arc<Database>, WriterHandle, std::thread::JoinHandle<()>) {
        let db = Arc::new(Database::create(dir.path().join("db")).unwrap());
        let options = WriterOptions {
            quick_repair: false,
            checkpoint_idle,
            checkpoint_max_age: Duration::from_secs(3600),
        };
        let (handle, thread) = start(db.clone(), options, None);
        (db, handle, thread)
    }

    #[test]
    fn a_stopped_writer_answers_deferred_jobs_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, handle, thread) = started_writer(&dir, Duration::from_secs(3600));
        let parked = handle.parked.clone();
        // The thread ends as a panicking one would, handles still alive.
        let killed = handle.submit_job(
            Wanted::Relaxed,
            |_tables: &Tables<'_>| -> Result<(), StoreError> { panic!("a job that panics") },
            |outcome| outcome,
        );
        assert!(thread.join().is_err(), "the writer's thread panicked");
        assert!(matches!(killed.wait(), Err(StoreError::Closed)));
        assert!(parked.lock().closed);
        let deferred = handle.submit_job(
            Wanted::Deferred,
            |_tables: &Tables<'_>| Ok(()),
            |outcome| outcome,
        );
        assert!(matches!(deferred.wait(), Err(StoreError::Closed)));
    }

    #[test]
    fn a_deferred_job_without_company_is_committed_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (db, handle, thread) = started_writer(&dir, Duration::from_secs(3600));
        let answered = handle.submit_job(
            Wanted::Deferred,
            |tables: &Tables<'_>| {
                tables.tx()?.open_table(T)?.insert(7, 7)?;
                Ok(())
            },
            |outcome| outcome,
        );
        // Answered only once committed: no other job is ever sent.
        answered.wait().unwrap();
        let read = db.begin_read().unwrap();
        assert!(read.open_table(T).unwrap().get(7).unwrap().is_some());
        drop(read);
        drop(handle);
        thread.join().unwrap();
    }

    #[test]
    fn a_job_parked_while_a_checkpoint_is_owed_soon_is_answered() {
        parked_job_with_a_checkpoint_owed(Duration::from_millis(20));
    }

    #[test]
    fn a_job_parked_while_the_owed_checkpoint_is_far_off_is_committed_soon() {
        parked_job_with_a_checkpoint_owed(Duration::from_secs(3600));
    }

    /// A relaxed job owes a checkpoint `checkpoint_idle` later; a deferred job
    /// sent then is answered (so committed) either way.
    fn parked_job_with_a_checkpoint_owed(checkpoint_idle: Duration) {
        let dir = tempfile::tempdir().unwrap();
        let (db, handle, thread) = started_writer(&dir, checkpoint_idle);
        let insert = |key: u64| {
            move |tables: &Tables<'_>| {
                tables.tx()?.open_table(T)?.insert(key, key)?;
                Ok(())
            }
        };
        // A relaxed commit owes a checkpoint: the writer sleeps until then.
        handle
            .submit_job(Wanted::Relaxed, insert(1), |outcome| outcome)
            .wait()
            .unwrap();
        let parked = handle.submit_job(Wanted::Deferred, insert(2), |outcome| outcome);
        parked.wait().unwrap();
        drop(handle);
        thread.join().unwrap();
        let read = db.begin_read().unwrap();
        let table = read.open_table(T).unwrap();
        assert!(
            table.get(2).unwrap().is_some(),
            "committed, and durable at close"
        );
    }

    #[test]
    fn a_lone_failing_job_writes_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(&dir);
        let (b, b_rx) = job(2, true);
        writer.commit_batch(vec![b]);
        assert!(b_rx.blocking_recv().unwrap().is_err());
        assert_eq!(writer.journal.as_ref().unwrap().seal, None);
        let (_, records) = Journal::open(&dir.path().join("db.journal")).unwrap();
        assert!(records.is_empty());
    }

    #[test]
    fn one_blocking_waiter_spins_at_a_time_and_gives_the_right_back() {
        // Its own right, so that other tests' waits cannot take it meanwhile.
        static RIGHT: AtomicBool = AtomicBool::new(false);
        // A long spin, so that a preempted test thread cannot see it run out.
        let claim = || Spinner::claim_from(&RIGHT, Duration::from_secs(600));
        let mut first = claim();
        let mut second = claim();
        assert!(first.again(), "the first waiter may spin");
        assert!(!second.again(), "a second one parks at once");
        drop(first);
        drop(second);
        let mut third = claim();
        assert!(
            third.again(),
            "the right is free again once its holder is done"
        );
        third.until = Some(Instant::now());
        assert!(!third.again(), "spinning ends when its time is over");
        assert!(claim().again(), "and the right is given back then");
    }

    #[test]
    fn the_writer_spins_only_after_a_streak_of_quick_lone_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(&dir);
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn WriteJob>>();
        let done = Instant::now();
        for _ in 1..SPIN_AFTER_QUICK_JOBS {
            writer.note_batch(done, 1, done);
        }
        assert!(writer.spin_for_job(&rx).is_none());
        assert_eq!(
            writer.quick_lone_jobs,
            SPIN_AFTER_QUICK_JOBS - 1,
            "too short a streak: no spin (a spin that found nothing would end it)"
        );
        writer.note_batch(done, 1, done);
        assert!(writer.spin_for_job(&rx).is_none());
        assert_eq!(
            writer.quick_lone_jobs, 0,
            "a spin that finds nothing ends the streak"
        );

        for _ in 0..SPIN_AFTER_QUICK_JOBS {
            writer.note_batch(done, 1, done);
        }
        let (job, _answer) = relaxed_job(1);
        tx.send(job).unwrap();
        assert!(
            writer.spin_for_job(&rx).is_some(),
            "the spin takes a waiting job"
        );

        writer.note_batch(done, 2, done);
        assert_eq!(
            writer.quick_lone_jobs, 0,
            "a batch of several ends the streak"
        );
        writer.note_batch(done, 1, done);
        writer.note_batch(done + WRITER_SPIN, 1, done);
        assert_eq!(writer.quick_lone_jobs, 0, "so does a job that came late");
    }
}
