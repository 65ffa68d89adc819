//! The shutdown signal every long-running part listens to, and the exit codes it
//! carries.
//!
//! It sits below every other part: the composition root creates one and hands a
//! clone to each part it builds; a part asks for a stop (`/restart`, `POST
//! /api/restart`, a signal) by requesting it with an exit code. Invariant: a
//! receiver subscribed after the request still sees it, so no part waits forever.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio::sync::watch;

/// Exit code asking the service manager to start the process again.
pub const RESTART_EXIT_CODE: i32 = 42;

/// The shutdown signal: a watch channel every long-running part listens to, and
/// the exit code the process should end with.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    exit_code: Arc<AtomicI32>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal not yet given.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Shutdown {
            tx: Arc::new(tx),
            exit_code: Arc::new(AtomicI32::new(0)),
        }
    }

    /// Asks everything to stop; the process exits with `code`.
    pub fn request(&self, code: i32) {
        self.exit_code.store(code, Ordering::SeqCst);
        self.tx.send_replace(true);
    }

    /// Whether shutdown was asked for.
    pub fn is_requested(&self) -> bool {
        *self.tx.borrow()
    }

    /// A receiver that turns true at shutdown. Subscribed after the request (a
    /// task first polled just after a stop right after start), it reports the
    /// request as a change still to be seen: a plain subscription counts the
    /// current value as seen, and its `changed()` would wait forever.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        let mut rx = self.tx.subscribe();
        if *rx.borrow() {
            rx.mark_changed();
        }
        rx
    }

    /// Waits until shutdown is asked for.
    pub async fn wait(&self) {
        let mut rx = self.subscribe();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// The exit code asked for.
    pub fn exit_code(&self) -> i32 {
        self.exit_code.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A part whose loop first runs after a stop that came right after start
    /// must still see the stop, or the shutdown waits for it forever.
    #[tokio::test]
    async fn a_receiver_subscribed_after_the_request_sees_it() {
        let shutdown = Shutdown::new();
        let mut before = shutdown.subscribe();
        shutdown.request(0);
        let mut after = shutdown.subscribe();
        for rx in [&mut before, &mut after] {
            tokio::time::timeout(Duration::from_secs(5), rx.changed())
                .await
                .expect("the request is seen")
                .expect("the sender is alive");
            assert!(*rx.borrow_and_update());
        }
        let untouched = Shutdown::new();
        let mut idle = untouched.subscribe();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), idle.changed())
                .await
                .is_err(),
            "a change reported with no request"
        );
    }
}
