//! Bot latency during a snapshot (issue 8): update-to-answer latency of one user on
//! a store with 100,000 tasks and 1,000,000 samples, first idle, then while
//! snapshots are taken back to back (`POST /api/backup` in a loop). Target: no
//! worse than 2x the idle figure.
//!
//! Run with `cargo build --release && cargo bench --bench snapshot_latency`.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use common::latency::idle_then_under_load;
use common::service::ADMIN_TOKEN;
use common::{Table, ms};

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
    let dir = tempfile::tempdir_in(common::bench_dir()).expect("temp dir");
    common::fill::fill_store(dir.path(), TASKS, SAMPLES);
    let size = std::fs::metadata(dir.path().join("data/agentlab.redb")).map_or(0, |m| m.len());
    let figures = idle_then_under_load(dir, "", ROUNDS, snapshot).await;

    let mut table = Table::new(&["case", "messages", "p50 ms", "p99 ms"]);
    table.row(vec![
        "idle".into(),
        ROUNDS.to_string(),
        ms(figures.idle.median()),
        ms(figures.idle.p99()),
    ]);
    table.row(vec![
        format!("during back-to-back snapshots ({} taken)", figures.cycles),
        ROUNDS.to_string(),
        ms(figures.during.median()),
        ms(figures.during.p99()),
    ]);
    println!();
    println!(
        "Machine: {}; store {TASKS} tasks + {SAMPLES} samples = {:.1} MB",
        common::machine(),
        size as f64 / 1e6
    );
    println!();
    table.print();
    let ratio =
        figures.during.median().as_secs_f64() / figures.idle.median().as_secs_f64().max(1e-9);
    println!("\nmedian ratio during/idle: {ratio:.2} (target <= 2)");
}

/// One snapshot through `POST /api/backup`; true if it was taken.
async fn snapshot(http: reqwest::Client, base: String, _stop: Arc<AtomicBool>) -> bool {
    let resp = http
        .post(format!("{base}/api/backup"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await;
    resp.is_ok_and(|r| r.status().is_success())
}
