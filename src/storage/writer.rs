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
//! - every commit is durable (fsync before answering). Monitor samples, which
//!   arrive every few seconds, do not come here one tick at a time: the series
//!   layer buffers them and writes them in one job per flush interval
//!   ([`super::series`]), so they cost one fsync per interval, not one per tick.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::oneshot;

use super::error::StoreError;

/// Jobs committed together at most.
pub(crate) const MAX_BATCH: usize = 512;
/// A write job: applied to a transaction, answered after the commit.
pub(crate) trait WriteJob: Send {
    fn apply(&mut self, tx: &WriteTransaction) -> Result<(), StoreError>;
    fn answer(self: Box<Self>, outcome: Result<(), StoreError>);
}

/// A closure applied to the transaction; once the outcome is known (the commit
/// returned, or the job or commit failed), `then` turns it into the caller's
/// answer. It runs on the writer thread, so it can release state that must
/// outlive the commit and no longer, or note a failure nobody awaits.
struct ClosureJob<T, U, F, C> {
    f: F,
    value: Option<T>,
    then: C,
    reply: oneshot::Sender<Result<U, StoreError>>,
}

impl<T, U, F, C> WriteJob for ClosureJob<T, U, F, C>
where
    T: Send,
    U: Send,
    F: FnMut(&WriteTransaction) -> Result<T, StoreError> + Send,
    C: FnOnce(Result<T, StoreError>) -> Result<U, StoreError> + Send,
{
    fn apply(&mut self, tx: &WriteTransaction) -> Result<(), StoreError> {
        self.value = Some((self.f)(tx)?);
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
    loop {
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(value) => return value,
            std::task::Poll::Pending => std::thread::park(),
        }
    }
}

/// Handle for sending jobs to the writer thread.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    tx: Sender<Box<dyn WriteJob>>,
}

impl WriterHandle {
    pub(crate) fn submit<T, U, F, C>(&self, f: F, then: C) -> Pending<U>
    where
        T: Send + 'static,
        U: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
        C: FnOnce(Result<T, StoreError>) -> Result<U, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = ClosureJob {
            f,
            value: None,
            then,
            reply,
        };
        match self.tx.send(Box::new(job)) {
            Ok(()) => Pending(PendingInner::Waiting(rx)),
            Err(_) => Pending::failed(StoreError::Closed),
        }
    }
}

/// Starts the writer thread. It ends when every [`WriterHandle`] is dropped, after
/// committing every job already sent.
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
}

impl Writer {
    fn new(db: Arc<Database>, quick_repair: bool) -> Self {
        Writer { db, quick_repair }
    }

    fn run(self, rx: Receiver<Box<dyn WriteJob>>) {
        while let Ok(first) = rx.recv() {
            self.commit_batch(collect_batch(first, &rx));
        }
    }

    /// Applies and commits a batch; answers every job (a failed commit with its
    /// error).
    fn commit_batch(&self, mut jobs: Vec<Box<dyn WriteJob>>) {
        loop {
            match self.try_commit(&mut jobs) {
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

    fn try_commit(&self, jobs: &mut [Box<dyn WriteJob>]) -> Result<(), BatchError> {
        let mut tx = self
            .db
            .begin_write()
            .map_err(|e| BatchError::Commit(e.into()))?;
        tx.set_durability(Durability::Immediate)
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
