//! Bot latency during a snapshot (issue 8): update-to-answer latency of one user on
//! a store with 100,000 tasks and 1,000,000 samples, first idle, then while
//! snapshots are taken back to back (`POST /api/backup` in a loop). Target: no
//! worse than 2x the idle figure.
//!
//! Run with `cargo build --release && cargo bench --bench snapshot_latency`.

mod common;

use std::time::{Duration, Instant};

use common::service::{BotSpec, PATIENCE, Service, SimClock, start_sim};
use common::{Latencies, Table, ms};
use telegram_sim::{SentKind, SimHandle};

const TASKS: u64 = 100_000;
const SAMPLES: u64 = 1_000_000;
const ROUNDS: usize = 150;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    eprintln!("snapshot latency bench on {}", common::machine());
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    common::fill::fill_store(dir.path(), TASKS, SAMPLES);
    let size = std::fs::metadata(dir.path().join("data/agentlab.redb")).map_or(0, |m| m.len());
    let sim = start_sim().await;
    let clock = SimClock::calibrate(&sim).await;
    let bots = [BotSpec {
        id: "BOT-SNAP".into(),
        users: 1..=1,
        agent: None,
    }];
    let mut service = Service::spawn_in(dir, &sim, &bots, 3);
    service.wait_ready().await;
    let idle = measure(&sim, &clock, &service, "idle").await;

    let snapshots = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looper = {
        let (base, snapshots, stop) = (service.base_url.clone(), snapshots.clone(), stop.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let resp = http
                    .post(format!("{base}/api/backup"))
                    .bearer_auth(common::service::ADMIN_TOKEN)
                    .send()
                    .await;
                if resp.is_ok_and(|r| r.status().is_success()) {
                    snapshots.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };
    let during = measure(&sim, &clock, &service, "during snapshots").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = looper.await;
    let _removed = service.stop();

    let mut table = Table::new(&["case", "messages", "p50 ms", "p99 ms"]);
    table.row(vec![
        "idle".into(),
        ROUNDS.to_string(),
        ms(idle.median()),
        ms(idle.p99()),
    ]);
    table.row(vec![
        format!(
            "during back-to-back snapshots ({} taken)",
            snapshots.load(std::sync::atomic::Ordering::Relaxed)
        ),
        ROUNDS.to_string(),
        ms(during.median()),
        ms(during.p99()),
    ]);
    println!();
    println!(
        "Machine: {}; store {TASKS} tasks + {SAMPLES} samples = {:.1} MB",
        common::machine(),
        size as f64 / 1e6
    );
    println!();
    table.print();
    let ratio = during.median().as_secs_f64() / idle.median().as_secs_f64().max(1e-9);
    println!("\nmedian ratio during/idle: {ratio:.2} (target <= 2)");
}

/// One user sends a prompt, waits for the answer, `ROUNDS` times.
async fn measure(sim: &SimHandle, clock: &SimClock, service: &Service, label: &str) -> Latencies {
    let token = &service.tokens[0];
    let mut lat = Latencies::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let before = sim
            .sent(token)
            .expect("sent")
            .iter()
            .filter(|i| {
                i.kind == SentKind::Message
                    && i.plain_text
                        .as_deref()
                        .is_some_and(|t| t.starts_with("You said"))
            })
            .count();
        let at = clock.at(Instant::now());
        sim.inject_text(token, 1, 1, &format!("{label} {round}"))
            .expect("inject");
        let log = sim
            .wait_for(
                token,
                |items| {
                    items
                        .iter()
                        .filter(|i| {
                            i.kind == SentKind::Message
                                && i.plain_text
                                    .as_deref()
                                    .is_some_and(|t| t.starts_with("You said"))
                        })
                        .count()
                        > before
                },
                PATIENCE,
            )
            .await
            .expect("answer");
        let answer = log
            .iter()
            .rev()
            .find(|i| {
                i.kind == SentKind::Message
                    && i.plain_text
                        .as_deref()
                        .is_some_and(|t| t.starts_with("You said"))
            })
            .expect("answer item");
        lat.push(answer.at.saturating_sub(at));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    lat
}
