//! The backup schedule keeps firing after the process was suspended across a tick
//! (what tokio-cron-scheduler's repeated jobs do not do, which is why croner is used:
//! see `backup::schedule`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agentlab::backup::schedule::run_on_schedule;
use agentlab::config::parse_cron;

/// Blocks the runtime's only thread: to the scheduler this is the process being
/// suspended (SIGSTOP, a laptop asleep, a starved box) while the wall clock runs on.
fn suspend_everything(for_: Duration) {
    std::thread::sleep(for_);
}

#[test]
fn schedule_keeps_firing_after_the_process_is_suspended_across_ticks() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let fired = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let cron = parse_cron("* * * * * *").expect("every second");
        let counter = fired.clone();
        let scheduler = tokio::spawn(run_on_schedule(cron, stop_rx, move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }));
        wait_for(&fired, 1, Duration::from_secs(5)).await;
        suspend_everything(Duration::from_millis(2500));
        let after_suspension = fired.load(Ordering::SeqCst);
        wait_for(&fired, after_suspension + 3, Duration::from_secs(6)).await;
        let _ = stop_tx.send(true);
        scheduler.await.expect("scheduler ends at shutdown");
    });
}

async fn wait_for(counter: &AtomicUsize, at_least: usize, patience: Duration) {
    let deadline = tokio::time::Instant::now() + patience;
    while counter.load(Ordering::SeqCst) < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} ticks fired, expected {at_least}",
            counter.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
