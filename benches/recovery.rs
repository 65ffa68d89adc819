//! Recovery time (issue 10): restart-to-ready (process start → `/readyz` 200) of
//! the real service after a kill -9, on a store of about 100 MB, with redb's
//! quick repair off (the default) and on; beside it, what quick repair costs:
//! durable sequential task submissions per second with it off and on.
//!
//! Run with `cargo build --release && cargo bench --bench recovery`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use agentlab::storage::{NewTask, PRIORITY_NORMAL, Store, StoreOptions, TaskKind, TaskSource};
use common::service::{bench_options, start_in, start_sim};
use common::{Latencies, Table, ms, rate};
use serde_json::json;

const TASKS: u64 = 120_000;
const SAMPLES: u64 = 1_000_000;
const KILLS: usize = 5;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    eprintln!("recovery bench on {}", common::machine());
    let filled = tempfile::tempdir_in(common::bench_dir()).expect("temp dir");
    common::fill::fill_store(filled.path(), TASKS, SAMPLES);
    let db = filled.path().join("data/agentlab.redb");
    let size_mb = std::fs::metadata(&db).map_or(0, |m| m.len()) as f64 / 1e6;

    let mut table = Table::new(&[
        "quick repair",
        "store MB",
        "kills",
        "restart-to-ready p50 ms",
        "max ms",
        "durable submits/s",
    ]);
    for quick_repair in [false, true] {
        let restarts = restart_to_ready(&db, quick_repair, KILLS).await;
        let commits = commit_rate(quick_repair);
        table.row(vec![
            if quick_repair { "on" } else { "off (default)" }.into(),
            format!("{size_mb:.0}"),
            KILLS.to_string(),
            ms(restarts.median()),
            ms(restarts.quantile(1.0)),
            commits,
        ]);
    }
    println!("\nMachine: {}\n", common::machine());
    table.print();
}

/// Copies the filled store, then `kills` times: start the service, let it commit
/// a task (so the file has writes in the chosen mode), kill -9 it, and time the
/// next start to ready.
async fn restart_to_ready(filled_db: &Path, quick_repair: bool, kills: usize) -> Latencies {
    let dir = tempfile::tempdir_in(common::bench_dir()).expect("temp dir");
    std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
    std::fs::copy(filled_db, dir.path().join("data/agentlab.redb")).expect("copy store");
    let sim = start_sim().await;
    let mut options = bench_options(&[("BOT-SNAP", 1..=1)], 1);
    options
        .extra_toml
        .push_str(&format!("\n[storage]\nquick_repair = {quick_repair}\n"));
    let mut service = start_in(dir, &sim, options).await;
    let mut times = Latencies::with_capacity(kills);
    for round in 0..=kills {
        if round > 0 {
            service.restart().await;
            times.push(service.spawned_at().elapsed());
        }
        let (status, created) = service
            .post(
                "/api/tasks",
                json!({"bot_id": "BOT-SNAP", "user_id": 1, "prompt": format!("round {round}")}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        // Past the writer's idle checkpoint (1 s): the task is in the file,
        // written in the chosen mode, not only in the journal.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        service.kill9();
    }
    times
}

/// Durable sequential submissions per second for 2 s on a fresh store.
fn commit_rate(quick_repair: bool) -> String {
    let dir = tempfile::tempdir_in(common::bench_dir()).expect("temp dir");
    let options = StoreOptions {
        quick_repair,
        ..StoreOptions::default()
    };
    let store = Store::open(&dir.path().join("rate.redb"), options).expect("store");
    let started = Instant::now();
    let mut count = 0usize;
    while started.elapsed() < Duration::from_secs(2) {
        let new = NewTask {
            bot_id: "BOT-RATE".into(),
            user_id: 1,
            chat_id: 1,
            kind: TaskKind::Chat,
            source: TaskSource::Api,
            prompt: format!("prompt {count}"),
            priority: PRIORITY_NORMAL,
            max_attempts: 1,
            reply_to_message_id: None,
            update_id: None,
        };
        store
            .submit_task(new, 1_700_000_000_000 + count as u64)
            .wait()
            .expect("submit");
        count += 1;
    }
    let elapsed = started.elapsed();
    store.close();
    rate(count, elapsed)
}
