//! Snapshot and restore of a store with 100,000 tasks and 1,000,000 samples
//! (BENCHMARKS.md, "Backups"). Run: `cargo bench --bench backup`.

use std::time::Instant;

use agentlab::backup;
use agentlab::config::Config;
use agentlab::storage::{
    NewTask, PRIORITY_NORMAL, Sample, Store, StoreOptions, TaskKind, TaskSource, now_ms,
};

const TASKS: u64 = 100_000;
const SAMPLES: u64 = 1_000_000;
const SERIES: u64 = 20;

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = Config {
        data_dir: dir.path().join("data"),
        backup_dir: dir.path().join("backups"),
        log_dir: dir.path().join("logs"),
        ..Config::default()
    };
    let store = Store::open(&config.database_path(), StoreOptions::default())?;

    let started = Instant::now();
    let mut pending = Vec::with_capacity(4096);
    for n in 0..TASKS {
        let task = NewTask {
            bot_id: "BOT-001".into(),
            user_id: (n % 50) as i64,
            chat_id: (n % 50) as i64,
            kind: TaskKind::Chat,
            source: TaskSource::Api,
            prompt: format!("benchmark prompt number {n}: please refactor the parser"),
            priority: PRIORITY_NORMAL,
            max_attempts: 3,
            reply_to_message_id: None,
            update_id: Some(n as i64),
        };
        pending.push(store.submit_task(task, now_ms()));
        if pending.len() == 4096 {
            for p in pending.drain(..) {
                p.wait()?;
            }
        }
    }
    for p in pending.drain(..) {
        p.wait()?;
    }
    let base = now_ms() - SAMPLES / SERIES * 10_000;
    for chunk in 0..(SAMPLES / 10_000) {
        let batch = (0..10_000)
            .map(|i| {
                let n = chunk * 10_000 + i;
                let series = n % SERIES;
                let at = base + (n / SERIES) * 10_000;
                (
                    format!("bench_metric{{n=\"{series}\"}}"),
                    Sample {
                        at_ms: at,
                        value: (n % 97) as f64,
                    },
                )
            })
            .collect();
        store.append_samples(batch).wait()?;
    }
    store.flush().wait()?;
    let db_size = std::fs::metadata(config.database_path())?.len();
    println!(
        "filled in {:.1} s; database {:.1} MB",
        started.elapsed().as_secs_f64(),
        db_size as f64 / 1e6
    );
    println!(
        "tables: {:?}",
        store
            .table_counts()?
            .iter()
            .filter(|c| c.rows > 0)
            .map(|c| (c.table.clone(), c.rows))
            .collect::<Vec<_>>()
    );

    let mut snapshot_times = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let t = Instant::now();
        let outcome = backup::backup_now(&store, &config)?;
        snapshot_times.push(t.elapsed().as_secs_f64());
        last = Some(outcome);
    }
    let outcome = last.expect("three snapshots");
    println!(
        "snapshot (copy + fsync + verify + rename + record): {:?} s; snapshot file {:.1} MB",
        snapshot_times
            .iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>(),
        outcome.file.size_bytes as f64 / 1e6
    );
    store.close();
    drop(store);

    let mut restore_times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        backup::restore_snapshot(&config, &outcome.file.path)?;
        restore_times.push(t.elapsed().as_secs_f64());
    }
    println!(
        "restore (verify + move aside + copy + fsync + checked open): {:?} s",
        restore_times
            .iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
    );

    let t = Instant::now();
    let opened = backup::open_store_or_restore(&config)?;
    println!(
        "start-up open with full integrity check: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    opened.store.close();
    Ok(())
}
