//! Update-to-answer latency of one user, idle and while a background load runs
//! in a loop (snapshots, offsite uploads): the setup the backup benches share.
//! The service is the bench service with one bot, `BOT-SNAP`, and one user.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use telegram_sim::{SentItem, SentKind, SimHandle};

use super::Latencies;
use super::service::{PATIENCE, Service, SimClock, bench_options, start_in, start_sim};

/// The bot the latency is measured on (the filled store's bot too).
pub const BOT: &str = "BOT-SNAP";

/// The figures of [`idle_then_under_load`].
pub struct UnderLoad {
    /// With nothing else running.
    pub idle: Latencies,
    /// While the load ran.
    pub during: Latencies,
    /// How many load cycles completed meanwhile.
    pub cycles: usize,
}

/// Starts the service on `dir` (a filled store, usually) with `extra_toml`
/// appended to its configuration, measures `rounds` answers idle, then again
/// while `cycle` runs back to back (given an HTTP client and the service's base
/// URL; it says whether the cycle completed), and stops the service.
pub async fn idle_then_under_load<F, Fut>(
    dir: tempfile::TempDir,
    extra_toml: &str,
    rounds: usize,
    cycle: F,
) -> UnderLoad
where
    F: Fn(reqwest::Client, String, Arc<AtomicBool>) -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let sim = start_sim().await;
    let clock = SimClock::calibrate(&sim).await;
    let mut options = bench_options(&[(BOT, 1..=1)], 3);
    options.extra_toml.push_str(extra_toml);
    let mut service = start_in(dir, &sim, options).await;
    let idle = one_user(&sim, &clock, &service, "idle", rounds).await;

    let cycles = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let looper = {
        let (base, cycles, stop) = (service.base_url.clone(), cycles.clone(), stop.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                if cycle(http.clone(), base.clone(), stop.clone()).await {
                    cycles.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let during = one_user(&sim, &clock, &service, "during load", rounds).await;
    stop.store(true, Ordering::Relaxed);
    let _ = looper.await;
    service.stop().await;
    UnderLoad {
        idle,
        during,
        cycles: cycles.load(Ordering::Relaxed),
    }
}

/// User 1 sends a prompt and waits for its answer, `rounds` times; the latency
/// runs from the injection to the simulator's receipt of the answer, both on
/// the simulator's clock.
pub async fn one_user(
    sim: &SimHandle,
    clock: &SimClock,
    service: &Service,
    label: &str,
    rounds: usize,
) -> Latencies {
    let token = &service.tokens[0];
    let is_answer = |i: &SentItem| {
        i.kind == SentKind::Message
            && i.plain_text
                .as_deref()
                .is_some_and(|t| t.starts_with("You said"))
    };
    let mut lat = Latencies::with_capacity(rounds);
    for round in 0..rounds {
        let before = sim
            .sent(token)
            .expect("sent")
            .iter()
            .filter(|i| is_answer(i))
            .count();
        let at = clock.at(Instant::now());
        sim.inject_text(token, 1, 1, &format!("{label} {round}"))
            .expect("inject");
        let log = sim
            .wait_for(
                token,
                |items| items.iter().filter(|i| is_answer(i)).count() > before,
                PATIENCE,
            )
            .await
            .expect("answer");
        let answer = log
            .iter()
            .rev()
            .find(|i| is_answer(i))
            .expect("answer item");
        lat.push(answer.at.saturating_sub(at));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    lat
}
