//! The backup schedule keeps firing after the process was suspended across a tick
//! (the drift report against tokio-cron-scheduler, which is why croner is used).

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

/// Evidence for the module comment of `backup::schedule`: tokio-cron-scheduler's
/// repeated job, suspended across its tick, stops firing for good.
#[test]
fn tokio_cron_scheduler_repeated_job_stops_firing_after_a_suspension() {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let fired_after = runtime.block_on(async {
        let fired = Arc::new(AtomicUsize::new(0));
        let scheduler = JobScheduler::new().await.expect("scheduler");
        let counter = fired.clone();
        let job = Job::new_repeated(Duration::from_secs(1), move |_, _| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .expect("job");
        scheduler.add(job).await.expect("add");
        scheduler.start().await.expect("start");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            fired.load(Ordering::SeqCst) >= 1,
            "fires before the suspension"
        );
        suspend_everything(Duration::from_millis(3500));
        let before = fired.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(4)).await;
        fired.load(Ordering::SeqCst) - before
    });
    eprintln!(
        "tokio-cron-scheduler repeated job fired {fired_after} times in the 4 s after the suspension"
    );
    // A healthy schedule fires ~4 times here; the drift bug makes it 0 or 1. Only
    // report, never fail: this documents a third-party behaviour.
    if fired_after <= 1 {
        eprintln!("drift bug reproduced: the repeated job stopped firing");
    }
}
