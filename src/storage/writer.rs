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
//! - a batch holding only relaxed jobs (monitor samples) commits without fsync; a
//!   durable commit follows within [`RELAXED_FLUSH`], and any durable commit also
//!   persists the relaxed ones before it. That is the documented loss window for
//!   samples; prompts, tasks, costs and restart state are always durable.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::oneshot;

use super::error::StoreError;

/// Jobs committed together at most.
pub(crate) const MAX_BATCH: usize = 512;
/// Longest time relaxed (non-fsynced) commits may stay unflushed.
pub(crate) const RELAXED_FLUSH: Duration = Duration::from_secs(1);

/// How durable a job's commit must be before its caller is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durable {
    /// fsync before answering.
    Yes,
    /// May be lost in a crash within [`RELAXED_FLUSH`] (monitor samples only).
    Relaxed,
}

/// A write job: applied to a transaction, answered after the commit.
pub(crate) trait WriteJob: Send {
    fn apply(&mut self, tx: &WriteTransaction) -> Result<(), StoreError>;
    fn durability(&self) -> Durable;
    fn answer(self: Box<Self>, outcome: Result<(), StoreError>);
}

struct ClosureJob<T, F> {
    f: F,
    value: Option<T>,
    durable: Durable,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for ClosureJob<T, F>
where
    T: Send,
    F: FnMut(&WriteTransaction) -> Result<T, StoreError> + Send,
{
    fn apply(&mut self, tx: &WriteTransaction) -> Result<(), StoreError> {
        self.value = Some((self.f)(tx)?);
        Ok(())
    }

    fn durability(&self) -> Durable {
        self.durable
    }

    fn answer(self: Box<Self>, outcome: Result<(), StoreError>) {
        let result = match (outcome, self.value) {
            (Ok(()), Some(v)) => Ok(v),
            (Ok(()), None) => Err(StoreError::Internal("job answered without a value".into())),
            (Err(e), _) => Err(e),
        };
        // The caller may have gone away (e.g. a timed-out request); the write stands.
        let _ = self.reply.send(result);
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

    /// Blocks the current thread until the write is committed. Works on any
    /// thread, inside an async runtime too (it parks the thread rather than using
    /// the runtime), but async code should `.await` instead of blocking a worker.
    pub fn wait(self) -> Result<T, StoreError> {
        block_on(self)
    }
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

/// Drives a future to completion on the current thread by parking it between
/// polls. Only for futures that need no runtime (a channel receiver).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(value) => return value,
            std::task::Poll::Pending => std::thread::park(),
        }
    }
}

pub(crate) enum Command {
    Job(Box<dyn WriteJob>),
    /// Commit durably now (used by shutdown and by tests).
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

/// Handle for sending jobs to the writer thread.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    tx: Sender<Command>,
}

impl WriterHandle {
    pub(crate) fn submit<T, F>(&self, durable: Durable, f: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = ClosureJob {
            f,
            value: None,
            durable,
            reply,
        };
        match self.tx.send(Command::Job(Box::new(job))) {
            Ok(()) => Pending(PendingInner::Waiting(rx)),
            Err(_) => Pending::failed(StoreError::Closed),
        }
    }

    pub(crate) fn flush(&self) -> Pending<()> {
        let (reply, rx) = oneshot::channel();
        match self.tx.send(Command::Flush(reply)) {
            Ok(()) => Pending(PendingInner::Waiting(rx)),
            Err(_) => Pending::failed(StoreError::Closed),
        }
    }
}

/// Starts the writer thread. It ends when every [`WriterHandle`] is dropped, after a
/// final durable commit of anything relaxed.
pub(crate) fn start(
    db: Arc<Database>,
    quick_repair: bool,
) -> (WriterHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("agentlab-store-writer".into())
        .spawn(move || Writer::new(db, quick_repair).run(rx))
        .unwrap_or_else(|e| panic!("cannot start the storage writer thread: {e}"));
    (WriterHandle { tx }, thread)
}

struct Writer {
    db: Arc<Database>,
    /// Every commit also saves the allocator state (redb's quick repair).
    quick_repair: bool,
    /// Oldest relaxed commit not yet followed by a durable one.
    unflushed_since: Option<Instant>,
}

impl Writer {
    fn new(db: Arc<Database>, quick_repair: bool) -> Self {
        Writer {
            db,
            quick_repair,
            unflushed_since: None,
        }
    }

    fn run(mut self, rx: Receiver<Command>) {
        loop {
            let first = match self.unflushed_since {
                Some(since) => {
                    let wait = RELAXED_FLUSH.saturating_sub(since.elapsed());
                    match rx.recv_timeout(wait) {
                        Ok(cmd) => cmd,
                        Err(RecvTimeoutError::Timeout) => {
                            self.flush_relaxed();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match rx.recv() {
                    Ok(cmd) => cmd,
                    Err(_) => break,
                },
            };
            let (jobs, flushes) = collect_batch(first, &rx);
            let force_durable = !flushes.is_empty();
            let outcome = self.commit_batch(jobs, force_durable);
            for reply in flushes {
                let _ = reply.send(outcome.clone());
            }
        }
        self.flush_relaxed();
    }

    fn flush_relaxed(&mut self) {
        if self.unflushed_since.is_some()
            && let Err(e) = self.commit_batch(Vec::new(), true)
        {
            tracing::error!(error = %e, "durable flush of relaxed commits failed");
        }
    }

    /// Applies and commits a batch; answers every job. Returns the commit outcome.
    fn commit_batch(
        &mut self,
        mut jobs: Vec<Box<dyn WriteJob>>,
        force_durable: bool,
    ) -> Result<(), StoreError> {
        loop {
            let durable = force_durable || jobs.iter().any(|j| j.durability() == Durable::Yes);
            match self.try_commit(&mut jobs, durable) {
                Ok(()) => {
                    if durable {
                        self.unflushed_since = None;
                    } else if self.unflushed_since.is_none() {
                        self.unflushed_since = Some(Instant::now());
                    }
                    for job in jobs {
                        job.answer(Ok(()));
                    }
                    return Ok(());
                }
                Err(BatchError::Job(index, e)) => {
                    // Answer the failed job; retry the rest without it.
                    let failed = jobs.remove(index);
                    failed.answer(Err(e));
                    if jobs.is_empty() && !force_durable {
                        return Ok(());
                    }
                }
                Err(BatchError::Commit(e)) => {
                    tracing::error!(error = %e, jobs = jobs.len(), "group commit failed");
                    for job in jobs {
                        job.answer(Err(e.clone()));
                    }
                    return Err(e);
                }
            }
        }
    }

    fn try_commit(&self, jobs: &mut [Box<dyn WriteJob>], durable: bool) -> Result<(), BatchError> {
        let mut tx = self
            .db
            .begin_write()
            .map_err(|e| BatchError::Commit(e.into()))?;
        let level = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        tx.set_durability(level)
            .map_err(|e| BatchError::Commit(e.into()))?;
        if self.quick_repair {
            tx.set_quick_repair(true);
        }
        for (index, job) in jobs.iter_mut().enumerate() {
            if let Err(e) = job.apply(&tx) {
                // Dropping the transaction aborts it; every job's writes are undone.
                let _ = tx.abort();
                return Err(BatchError::Job(index, e));
            }
        }
        tx.commit().map_err(|e| BatchError::Commit(e.into()))
    }
}

enum BatchError {
    Job(usize, StoreError),
    Commit(StoreError),
}

type FlushReply = oneshot::Sender<Result<(), StoreError>>;

fn collect_batch(
    first: Command,
    rx: &Receiver<Command>,
) -> (Vec<Box<dyn WriteJob>>, Vec<FlushReply>) {
    let mut jobs = Vec::new();
    let mut flushes = Vec::new();
    let mut next = Some(first);
    while let Some(cmd) = next.take() {
        match cmd {
            Command::Job(job) => jobs.push(job),
            Command::Flush(reply) => flushes.push(reply),
        }
        if jobs.len() < MAX_BATCH {
            next = rx.try_recv().ok();
        }
    }
    (jobs, flushes)
}
