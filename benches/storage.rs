//! Storage benchmarks (issue 2): agentlab's redb store beside what it replaces and
//! what a user might pick instead, in one run, on the same disk, with the same task
//! record:
//!
//! - **agentlab**: `Store` with its group-commit writer (fsync before every answer);
//! - **json**: the old bot's way, every record in one JSON file, rewritten to a
//!   temporary file, fsynced and renamed on every change;
//! - **sqlite**: rusqlite (bundled), WAL, `synchronous=FULL`;
//! - **disk**: the floor, a 4 KiB write + `fdatasync` loop.
//!
//! Each case runs for a bounded time and prints one row; the markdown table comes at
//! the end. Run with `cargo bench --bench storage`.

mod common;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use agentlab::storage::{
    NewTask, PRIORITY_NORMAL, Sample, Session, Store, StoreOptions, Task, TaskKind, TaskSource,
    TaskStatus, codec,
};
use common::{Latencies, Table, ms, rate, run_for, thousands};
use rusqlite::{Connection, params};

/// Longest a timed case runs.
const BUDGET: Duration = Duration::from_secs(2);
/// Concurrent submitters of the group-commit case.
const SUBMITTERS: usize = 32;
/// Queue depth of the claim case.
const QUEUED: usize = 100_000;
/// A week of samples at 10 s.
const WEEK_POINTS: usize = 60_480;
/// Samples per series append.
const SERIES_BATCH: usize = 100;
/// Repetitions of the range query.
const QUERIES: usize = 30;
const BOT: &str = "BOT-001";
const T0_MS: u64 = 1_780_000_000_000;

fn main() {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    eprintln!("storage bench on {}", common::machine());
    eprintln!("files in {}", root.path().display());
    print_record_sizes();
    let mut table = Table::new(&[
        "operation",
        "engine",
        "ops",
        "median ms",
        "p99 ms",
        "ops/s",
        "note",
    ]);

    // `cargo bench --bench storage -- claim series` runs only the named sections.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let sections: [(&str, Section); 6] = [
        ("disk", disk_floor),
        ("create", create_task),
        ("claim", claim_next),
        ("session", session_upsert),
        ("series", series_append),
        ("query", week_query),
    ];
    for (name, section) in sections {
        if only.is_empty() || only.iter().any(|o| o == name) {
            section(root.path(), &mut table);
        }
    }

    println!();
    println!("Machine: {}", common::machine());
    println!();
    table.print();
}

/// One part of the run: writes its files under the directory, adds its rows.
type Section = fn(&Path, &mut Table);

fn add_row(
    table: &mut Table,
    op: &str,
    engine: &str,
    lat: &Latencies,
    done: usize,
    elapsed: Duration,
    note: &str,
) {
    table.row(vec![
        op.into(),
        engine.into(),
        thousands(done as f64),
        ms(lat.median()),
        ms(lat.p99()),
        rate(done, elapsed),
        note.into(),
    ]);
}

// ---------------------------------------------------------------- the record

/// The ~200-byte prompt every task carries; with the other fields the stored task is
/// about 300 bytes.
fn prompt(i: usize) -> String {
    let mut p = format!("task {i}: ");
    while p.len() < 200 {
        p.push_str("refactor the retry loop and add a test for the backoff; ");
    }
    p.truncate(200);
    p
}

fn new_task(i: usize, user: i64) -> NewTask {
    NewTask {
        bot_id: BOT.into(),
        user_id: user,
        chat_id: user,
        kind: TaskKind::Chat,
        source: TaskSource::Telegram,
        prompt: prompt(i),
        priority: PRIORITY_NORMAL,
        max_attempts: 3,
        reply_to_message_id: Some(i as i32),
        update_id: None,
    }
}

/// The same task as the store keeps it, for the JSON and SQLite baselines.
fn task_record(id: u64, user: i64, now_ms: u64) -> Task {
    let new = new_task(id as usize, user);
    Task {
        id,
        bot_id: new.bot_id,
        user_id: new.user_id,
        chat_id: new.chat_id,
        kind: new.kind,
        source: new.source,
        prompt: new.prompt,
        priority: new.priority,
        status: TaskStatus::Queued,
        attempts: 0,
        max_attempts: new.max_attempts,
        created_ms: now_ms,
        enqueued_ms: now_ms,
        started_ms: None,
        finished_ms: None,
        pid: None,
        pid_start_time: None,
        exit_code: None,
        result: None,
        error_class: None,
        error: None,
        cost_usd: 0.0,
        input_tokens: 0,
        output_tokens: 0,
        session_id: None,
        reply_to_message_id: new.reply_to_message_id,
        update_id: None,
        progress_message_id: None,
        delivery_started_ms: None,
        retry_of: None,
        extra: None,
    }
}

fn session(i: usize) -> Session {
    Session {
        agent_session_id: Some(format!("5f0c6b8e-1d2a-4c3b-9e8f-{i:012}")),
        created_ms: T0_MS,
        last_active_ms: T0_MS + i as u64,
        message_count: i as u64,
        workdir: "/home/agent/projects/agentlab".into(),
        extra: None,
    }
}

fn print_record_sizes() {
    let task = task_record(1, 111, T0_MS);
    eprintln!(
        "task record: {} bytes postcard (agentlab, SQLite blob), {} bytes JSON (json file)",
        codec::encode(&task).len(),
        serde_json::to_vec(&task).map_or(0, |v| v.len())
    );
}

fn open_store(dir: &Path, name: &str) -> Store {
    Store::open(&dir.join(name), StoreOptions::default()).expect("open store")
}

fn open_sqlite(dir: &Path, name: &str) -> Connection {
    let conn = Connection::open(dir.join(name)).expect("open sqlite");
    conn.busy_timeout(Duration::from_secs(30))
        .expect("busy timeout");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("WAL");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous");
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS tasks (
             id INTEGER PRIMARY KEY, bot_id TEXT NOT NULL, user_id INTEGER NOT NULL,
             status INTEGER NOT NULL, priority INTEGER NOT NULL,
             enqueued_ms INTEGER NOT NULL, body BLOB NOT NULL);
         CREATE INDEX IF NOT EXISTS task_queue ON tasks (priority, enqueued_ms, id)
             WHERE status = 0;
         CREATE TABLE IF NOT EXISTS sessions (
             bot_id TEXT NOT NULL, user_id INTEGER NOT NULL, body BLOB NOT NULL,
             PRIMARY KEY (bot_id, user_id)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS samples (
             series INTEGER NOT NULL, at_ms INTEGER NOT NULL, value REAL NOT NULL,
             PRIMARY KEY (series, at_ms)) WITHOUT ROWID;",
    )
    .expect("sqlite schema");
    conn
}

fn sqlite_insert_task(conn: &Connection, task: &Task) {
    conn.prepare_cached(
        "INSERT INTO tasks (id, bot_id, user_id, status, priority, enqueued_ms, body)
         VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6)",
    )
    .expect("prepare insert")
    .execute(params![
        task.id as i64,
        task.bot_id,
        task.user_id,
        task.priority,
        task.enqueued_ms as i64,
        codec::encode(task)
    ])
    .expect("insert task");
}

// ---------------------------------------------------------------- disk floor

/// 4 KiB rewritten in place and `fdatasync`ed: the most durable commits per second
/// this disk allows a single writer.
fn disk_floor(dir: &Path, table: &mut Table) {
    let file = File::create(dir.join("fdatasync.bin")).expect("create");
    file.set_len(4096).expect("set_len");
    file.sync_all().expect("sync");
    let block = [0x5au8; 4096];
    let (lat, elapsed) = run_for(BUDGET, usize::MAX, |_| {
        file.write_all_at(&block, 0).expect("write");
        file.sync_data().expect("fdatasync");
    });
    add_row(
        table,
        "durable write (floor)",
        "disk: 4 KiB pwrite + fdatasync",
        &lat,
        lat.len(),
        elapsed,
        "one writer",
    );
}

// ---------------------------------------------------------------- create-task

fn create_task(dir: &Path, table: &mut Table) {
    for records in [1_000usize, 10_000] {
        json_create(dir, records, table);
    }

    for (journal, engine) in [
        (true, "agentlab (journal + group commit)"),
        (false, "agentlab (group commit, no journal)"),
    ] {
        agentlab_create(dir, journal, engine, table);
    }
    redb_single_record(dir, table);

    let conn = open_sqlite(dir, "create.sqlite");
    let (lat, elapsed) = run_for(BUDGET, usize::MAX, |i| {
        sqlite_insert_task(&conn, &task_record(i as u64 + 1, 111, T0_MS + i as u64));
    });
    let next_id = lat.len() as u64 + 1;
    add_row(
        table,
        "create task, sequential",
        "SQLite WAL FULL",
        &lat,
        lat.len(),
        elapsed,
        "one transaction per task",
    );
    drop(conn);
    let ids = std::sync::atomic::AtomicU64::new(next_id);
    let (lat, done, elapsed) = concurrently_with(
        SUBMITTERS,
        |_| open_sqlite(dir, "create.sqlite"),
        |conn, thread, _| {
            let id = ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            sqlite_insert_task(conn, &task_record(id, thread as i64, T0_MS + id));
        },
    );
    add_row(
        table,
        "create task, 32 concurrent",
        "SQLite WAL FULL",
        &lat,
        done,
        elapsed,
        "32 connections; SQLite serialises writers",
    );
}

/// agentlab's submissions: sequential, then 32 threads, then 32 tokio tasks.
fn agentlab_create(dir: &Path, journal: bool, engine: &str, table: &mut Table) {
    let options = StoreOptions {
        journal,
        ..StoreOptions::default()
    };
    let name = format!("create-{journal}.redb");
    let store = Store::open(&dir.join(name), options).expect("open store");
    let (lat, elapsed) = run_for(BUDGET, usize::MAX, |i| {
        store
            .submit_task(new_task(i, 111), agentlab::storage::now_ms())
            .wait()
            .expect("submit");
    });
    add_row(
        table,
        "create task, sequential",
        engine,
        &lat,
        lat.len(),
        elapsed,
        "one thread blocks on each durable ack (Pending::wait)",
    );
    let (lat, elapsed) = sequential_async(&store);
    add_row(
        table,
        "create task, sequential, awaited",
        engine,
        &lat,
        lat.len(),
        elapsed,
        "one tokio task (2 runtime threads, as the service) awaits each durable ack",
    );
    let (lat, done, elapsed) = concurrently(SUBMITTERS, |thread, i| {
        store
            .submit_task(
                new_task(thread * 1_000_000 + i, thread as i64),
                agentlab::storage::now_ms(),
            )
            .wait()
            .expect("submit");
    });
    add_row(
        table,
        "create task, 32 concurrent",
        engine,
        &lat,
        done,
        elapsed,
        "32 threads, each waits for its durable ack",
    );
    let (lat, done, elapsed) = concurrently_async(&store);
    add_row(
        table,
        "create task, 32 concurrent",
        engine,
        &lat,
        done,
        elapsed,
        "32 tokio tasks on 2 threads, each awaits its durable ack",
    );
    store.close();
}

/// The reference: redb alone, one task record per durable commit, one table.
fn redb_single_record(dir: &Path, table: &mut Table) {
    const TASKS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("tasks");
    let db = redb::Database::builder()
        .set_cache_size(32 * 1024 * 1024)
        .create(dir.join("single.redb"))
        .expect("open redb");
    let record = codec::encode(&task_record(1, 111, T0_MS));
    let (lat, elapsed) = run_for(BUDGET, usize::MAX, |i| {
        let mut tx = db.begin_write().expect("begin");
        tx.set_durability(redb::Durability::Immediate)
            .expect("durability");
        tx.open_table(TASKS)
            .expect("table")
            .insert(i as u64, record.as_slice())
            .expect("insert");
        tx.commit().expect("commit");
    });
    add_row(
        table,
        "create task, sequential",
        "redb alone: one record, one table",
        &lat,
        lat.len(),
        elapsed,
        "one Immediate commit per record (the issue's reference)",
    );
}

/// The old approach: the whole list serialised and atomically replaced per change.
fn json_create(dir: &Path, records: usize, table: &mut Table) {
    let path = dir.join(format!("tasks-{records}.json"));
    let tmp = dir.join(format!("tasks-{records}.json.tmp"));
    let mut tasks: Vec<Task> = (1..=records as u64)
        .map(|id| task_record(id, 111, T0_MS + id))
        .collect();
    let (lat, elapsed) = run_for(BUDGET, usize::MAX, |i| {
        let id = (records + i + 1) as u64;
        tasks.push(task_record(id, 111, T0_MS + id));
        let bytes = serde_json::to_vec(&tasks).expect("json");
        let mut file = File::create(&tmp).expect("create tmp");
        file.write_all(&bytes).expect("write");
        file.sync_all().expect("fsync");
        drop(file);
        std::fs::rename(&tmp, &path).expect("rename");
    });
    add_row(
        table,
        "create task, sequential",
        &format!("json file, {} records", thousands(records as f64)),
        &lat,
        lat.len(),
        elapsed,
        "rewrite + fsync + rename per task",
    );
}

/// One tokio task on the service's runtime shape submitting one task after
/// another: the path of a bot handler or an API request, which `.await`.
fn sequential_async(store: &Store) -> (Latencies, Duration) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let store = store.clone();
    runtime.block_on(async move {
        tokio::spawn(async move {
            let started = Instant::now();
            let mut lat = Latencies::with_capacity(8192);
            let mut i = 0;
            while started.elapsed() < BUDGET {
                let t = Instant::now();
                store
                    .submit_task(new_task(90_000_000 + i, 111), agentlab::storage::now_ms())
                    .await
                    .expect("submit");
                lat.push(t.elapsed());
                i += 1;
            }
            (lat, started.elapsed())
        })
        .await
        .expect("sequential submitter")
    })
}

/// [`SUBMITTERS`] tokio tasks on a two-thread runtime (as in the service), each
/// submitting and awaiting one task after another for [`BUDGET`].
fn concurrently_async(store: &Store) -> (Latencies, usize, Duration) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let started = Instant::now();
        let mut submitters = tokio::task::JoinSet::new();
        for submitter in 0..SUBMITTERS {
            let store = store.clone();
            submitters.spawn(async move {
                let mut lat = Latencies::with_capacity(4096);
                let mut i = 0;
                while started.elapsed() < BUDGET {
                    let t = Instant::now();
                    let task = new_task(50_000_000 + submitter * 1_000_000 + i, submitter as i64);
                    store
                        .submit_task(task, agentlab::storage::now_ms())
                        .await
                        .expect("submit");
                    lat.push(t.elapsed());
                    i += 1;
                }
                lat
            });
        }
        let mut all = Latencies::default();
        while let Some(lat) = submitters.join_next().await {
            all.extend(lat.expect("submitter"));
        }
        let done = all.len();
        (all, done, started.elapsed())
    })
}

/// Runs `op(thread, i)` on `threads` threads for [`BUDGET`]; returns every call's
/// latency, the number of calls and the wall time.
fn concurrently(threads: usize, op: impl Fn(usize, usize) + Sync) -> (Latencies, usize, Duration) {
    concurrently_with(threads, |_| (), |_, thread, i| op(thread, i))
}

/// Like [`concurrently`], with per-thread state made by `init` before the clock
/// starts.
fn concurrently_with<S>(
    threads: usize,
    init: impl Fn(usize) -> S + Sync,
    op: impl Fn(&mut S, usize, usize) + Sync,
) -> (Latencies, usize, Duration) {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let (barrier, init, op) = (&barrier, &init, &op);
                scope.spawn(move || {
                    let mut state = init(thread);
                    barrier.wait();
                    let started = Instant::now();
                    let mut lat = Latencies::with_capacity(4096);
                    let mut i = 0;
                    while started.elapsed() < BUDGET {
                        let t = Instant::now();
                        op(&mut state, thread, i);
                        lat.push(t.elapsed());
                        i += 1;
                    }
                    lat
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        let mut all = Latencies::default();
        for handle in handles {
            all.extend(handle.join().expect("bench thread"));
        }
        let elapsed = started.elapsed();
        let done = all.len();
        (all, done, elapsed)
    })
}

// ---------------------------------------------------------------- claim-next

fn claim_next(dir: &Path, table: &mut Table) {
    // One user per task, so no queued task is held back by its user's running one.
    let store = open_store(dir, "claim.redb");
    let filled = Instant::now();
    let pending: Vec<_> = (0..QUEUED)
        .map(|i| store.submit_task(new_task(i, 1_000_000 + i as i64), T0_MS + i as u64))
        .collect();
    for p in pending {
        p.wait().expect("fill queue");
    }
    eprintln!(
        "  (queued {} tasks in agentlab in {:.1} s)",
        thousands(QUEUED as f64),
        filled.elapsed().as_secs_f64()
    );
    let now = T0_MS + QUEUED as u64 + 1;
    let (lat, elapsed) = run_for(BUDGET, 5_000, |_| {
        let claimed = store
            .claim_next_task(now, Vec::new())
            .wait()
            .expect("claim");
        assert!(claimed.is_some(), "queue ran dry");
    });
    add_row(
        table,
        "claim next, 100k queued",
        "agentlab, claim alone",
        &lat,
        lat.len(),
        elapsed,
        "relaxed: task -> running + event, visible at once, not fsynced",
    );
    // What the pool does: the claim, then the agent's process record, whose
    // journal record makes the claim durable (and redoes it after a crash).
    let (lat, elapsed) = run_for(BUDGET, 5_000, |_| {
        let claimed = store
            .claim_next_task(now, Vec::new())
            .wait()
            .expect("claim")
            .expect("queue ran dry");
        let task = claimed.task;
        store
            .record_task_process(task.id, task.started_ms.unwrap_or(now), 4242, 7)
            .wait()
            .expect("process record");
    });
    add_row(
        table,
        "claim next, 100k queued",
        "agentlab, claim + process record",
        &lat,
        lat.len(),
        elapsed,
        "durable (journal): the claim and the pid, as the pool makes them",
    );
    store.close();

    let mut conn = open_sqlite(dir, "claim.sqlite");
    {
        let tx = conn.transaction().expect("begin");
        for i in 0..QUEUED {
            sqlite_insert_task(
                &tx,
                &task_record(i as u64 + 1, 1_000_000 + i as i64, T0_MS + i as u64),
            );
        }
        tx.commit().expect("commit fill");
    }
    let (lat, elapsed) = run_for(BUDGET, 5_000, |_| {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .expect("begin");
        let (id, body): (i64, Vec<u8>) = tx
            .query_row(
                "SELECT id, body FROM tasks WHERE status = 0
                 ORDER BY priority, enqueued_ms, id LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .expect("select next");
        let mut task: Task = codec::decode(&body).expect("decode");
        task.status = TaskStatus::Running;
        task.attempts += 1;
        tx.execute(
            "UPDATE tasks SET status = 1, body = ?2 WHERE id = ?1",
            params![id, codec::encode(&task)],
        )
        .expect("update");
        tx.commit().expect("commit");
    });
    add_row(
        table,
        "claim next, 100k queued",
        "SQLite WAL FULL",
        &lat,
        lat.len(),
        elapsed,
        "select + update in one transaction",
    );
}

// ---------------------------------------------------------------- sessions

fn session_upsert(dir: &Path, table: &mut Table) {
    let store = open_store(dir, "sessions.redb");
    let (lat, elapsed) = run_for(BUDGET, usize::MAX, |i| {
        store
            .upsert_session(BOT, (i % 50) as i64, session(i))
            .wait()
            .expect("upsert");
    });
    add_row(
        table,
        "session upsert",
        "agentlab (redb, group commit)",
        &lat,
        lat.len(),
        elapsed,
        "durable redb commit (not journaled), 50 users",
    );
    store.close();

    let conn = open_sqlite(dir, "sessions.sqlite");
    let (lat, elapsed) = run_for(BUDGET, usize::MAX, |i| {
        conn.prepare_cached(
            "INSERT INTO sessions (bot_id, user_id, body) VALUES (?1, ?2, ?3)
             ON CONFLICT (bot_id, user_id) DO UPDATE SET body = excluded.body",
        )
        .expect("prepare")
        .execute(params![BOT, (i % 50) as i64, codec::encode(&session(i))])
        .expect("upsert");
    });
    add_row(
        table,
        "session upsert",
        "SQLite WAL FULL",
        &lat,
        lat.len(),
        elapsed,
        "durable, 50 users",
    );
}

// ---------------------------------------------------------------- series

/// One monitor tick: 100 series, one sample each, 10 s after the previous tick.
fn tick(i: usize) -> Vec<(String, Sample)> {
    (0..SERIES_BATCH)
        .map(|s| {
            (
                format!("bench_series_{s}"),
                Sample {
                    at_ms: T0_MS + i as u64 * 10_000,
                    value: (i * s) as f64,
                },
            )
        })
        .collect()
}

fn series_append(dir: &Path, table: &mut Table) {
    let store = open_store(dir, "series.redb");
    let (lat, elapsed) = run_for(BUDGET, usize::MAX, |i| {
        store.append_samples(tick(i)).wait().expect("append");
    });
    add_row(
        table,
        "series append, batch of 100",
        "agentlab (redb, group commit)",
        &lat,
        lat.len() * SERIES_BATCH,
        elapsed,
        "ops = samples; buffered, durable flush every 30 s of sample time",
    );
    store.close();

    let mut conn = open_sqlite(dir, "series.sqlite");
    for synchronous in ["FULL", "NORMAL"] {
        conn.pragma_update(None, "synchronous", synchronous)
            .expect("synchronous");
        let offset = if synchronous == "FULL" { 0 } else { 1_000_000 };
        let (lat, elapsed) = run_for(BUDGET, usize::MAX, |i| {
            let tx = conn.transaction().expect("begin");
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO samples (series, at_ms, value) VALUES (?1, ?2, ?3)",
                    )
                    .expect("prepare");
                for (s, (_, sample)) in tick(offset + i).into_iter().enumerate() {
                    insert
                        .execute(params![s as i64, sample.at_ms as i64, sample.value])
                        .expect("insert sample");
                }
            }
            tx.commit().expect("commit");
        });
        add_row(
            table,
            "series append, batch of 100",
            &format!("SQLite WAL {synchronous}"),
            &lat,
            lat.len() * SERIES_BATCH,
            elapsed,
            if synchronous == "FULL" {
                "ops = samples; durable"
            } else {
                "ops = samples; not durable (WAL, no fsync)"
            },
        );
    }
}

fn week_query(dir: &Path, table: &mut Table) {
    let week: Vec<Sample> = (0..WEEK_POINTS)
        .map(|i| Sample {
            at_ms: T0_MS + i as u64 * 10_000,
            value: 0.5 + (i % 97) as f64,
        })
        .collect();
    let to_ms = T0_MS + WEEK_POINTS as u64 * 10_000;

    let store = open_store(dir, "week.redb");
    for chunk in week.chunks(1_000) {
        let batch = chunk
            .iter()
            .map(|s| ("cpu_percent".to_string(), *s))
            .collect();
        store.append_samples(batch).wait().expect("fill week");
    }
    store.flush().wait().expect("flush");
    let (lat, elapsed) = run_for(BUDGET, QUERIES, |_| {
        let points = store
            .series_range("cpu_percent", T0_MS, to_ms)
            .expect("range");
        assert_eq!(points.len(), WEEK_POINTS);
    });
    add_row(
        table,
        "range query, 60,480 points",
        "agentlab (redb, group commit)",
        &lat,
        lat.len(),
        elapsed,
        "raw samples, one read transaction",
    );
    store.close();

    let mut conn = open_sqlite(dir, "week.sqlite");
    {
        let tx = conn.transaction().expect("begin");
        {
            let mut insert = tx
                .prepare("INSERT INTO samples (series, at_ms, value) VALUES (7, ?1, ?2)")
                .expect("prepare");
            for s in &week {
                insert
                    .execute(params![s.at_ms as i64, s.value])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    let (lat, elapsed) = run_for(BUDGET, QUERIES, |_| {
        let mut query = conn
            .prepare_cached(
                "SELECT at_ms, value FROM samples
                 WHERE series = 7 AND at_ms >= ?1 AND at_ms < ?2 ORDER BY at_ms",
            )
            .expect("prepare");
        let points: Vec<Sample> = query
            .query_map(params![T0_MS as i64, to_ms as i64], |row| {
                Ok(Sample {
                    at_ms: row.get::<_, i64>(0)? as u64,
                    value: row.get(1)?,
                })
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(points.len(), WEEK_POINTS);
    });
    add_row(
        table,
        "range query, 60,480 points",
        "SQLite WAL FULL",
        &lat,
        lat.len(),
        elapsed,
        "WITHOUT ROWID (series, at_ms) key",
    );
}
