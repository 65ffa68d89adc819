//! Worker-pool benchmark (issue 3): the release `agentlab run` with the test agent
//! answering at once, driven through the HTTP API.
//!
//! - **Throughput**: tasks submitted by 16 concurrent API clients, until all ran;
//!   tasks/s from the first submission to the last finish (the tasks' own stamps).
//! - **Submit → agent start** with an idle pool, one task at a time: from just before
//!   `POST /api/tasks` to the first instruction of the agent's `main`. For that the
//!   agent is this bench binary in `agent-probe` mode: it writes the wall-clock time
//!   to stderr (the run's `stderr` file), then runs the very same test agent.
//! - **Spawn baselines**, same run: `/bin/true` spawn + exit + wait, and the probe's
//!   own spawn → `main`, which is the part of the latency the kernel and the loader
//!   own. The pool's overhead is the latency beyond it.
//!
//! Run with `cargo build --release && cargo bench --bench pool`.

mod common;

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::service::{ADMIN_TOKEN, PATIENCE, Service, bench_options, start_sim};
use common::{Latencies, Table, ms, thousands};
use serde_json::{Value, json};

const PROBE_ARG: &str = "agent-probe";
const STAMP: &str = "agent-start-unix-ns ";
/// Tasks in the throughput run.
const THROUGHPUT_TASKS: usize = 400;
/// Concurrent API clients in the throughput run.
const CLIENTS: usize = 16;
/// Tasks in the latency run.
const LATENCY_TASKS: usize = 300;
/// Spawns of each baseline.
const SPAWNS: usize = 300;
const WORKERS: usize = 3;

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some(PROBE_ARG) {
        std::process::exit(probe(args.collect()));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The agent of the latency run: stamps its start, then is the test agent.
fn probe(args: Vec<String>) -> i32 {
    let started = unix_ns();
    eprintln!("{STAMP}{started}");
    agentlab::worker::test_agent::run_with_args(args)
}

async fn bench() {
    eprintln!("pool bench on {}", common::machine());
    let mut table = Table::new(&["measure", "n", "p50 ms", "p99 ms", "rate", "note"]);
    spawn_baselines(&mut table);

    let sim = start_sim().await;
    let me = std::env::current_exe().expect("current exe");
    let mut options = bench_options(&[("BOT-001", 1..=100), ("PROBE", 1..=100)], WORKERS);
    options.bots[1].agent_toml = Some(format!(
        "command = {:?}",
        [me.display().to_string(), PROBE_ARG.to_string()]
    ));
    let mut service = Service::start_with_sim(sim, options).await;

    throughput(&service, &mut table).await;
    latency(&service, &mut table).await;

    // API tasks have no chat, so delivering their answers fails with "chat not
    // found" (one refused sendMessage per task, as it would in production).
    let log = service.stderr_tail();
    let other: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("chat not found"))
        .collect();
    eprintln!(
        "service log tail (chat-less deliveries left out):\n{}",
        other.join("\n")
    );
    service.stop().await;
    println!();
    println!("Machine: {}; pool of {WORKERS} workers", common::machine());
    println!(
        "Files: {}; service runtime: {} async thread(s)",
        common::bench_filesystem(),
        common::async_threads()
    );
    println!();
    table.print();
}

/// `/bin/true` spawned and reaped, and this binary's spawn → `main`.
fn spawn_baselines(table: &mut Table) {
    let mut whole = Latencies::with_capacity(SPAWNS);
    for _ in 0..SPAWNS {
        let t = Instant::now();
        let status = Command::new("/bin/true").status().expect("/bin/true");
        whole.push(t.elapsed());
        assert!(status.success());
    }
    table.row(vec![
        "spawn + exit + wait of /bin/true".into(),
        SPAWNS.to_string(),
        ms(whole.median()),
        ms(whole.p99()),
        "-".into(),
        "std::process::Command".into(),
    ]);

    let me = std::env::current_exe().expect("current exe");
    let mut to_main = Latencies::with_capacity(SPAWNS);
    let mut whole = Latencies::with_capacity(SPAWNS);
    for _ in 0..SPAWNS {
        let before = unix_ns();
        let t = Instant::now();
        let mut child = Command::new(&me)
            .arg(PROBE_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn probe");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"hello")
            .expect("prompt");
        let mut err = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .expect("stderr");
        child.wait().expect("wait probe");
        whole.push(t.elapsed());
        to_main.push(Duration::from_nanos(
            (stamp_of(&err).expect("stamp") - before) as u64,
        ));
    }
    table.row(vec![
        "spawn -> main of the agent probe".into(),
        SPAWNS.to_string(),
        ms(to_main.median()),
        ms(to_main.p99()),
        "-".into(),
        "the kernel's and loader's share of agent start".into(),
    ]);
    table.row(vec![
        "whole run of the agent probe (test agent)".into(),
        SPAWNS.to_string(),
        ms(whole.median()),
        ms(whole.p99()),
        "-".into(),
        "spawn, answer, exit, wait".into(),
    ]);
}

fn stamp_of(stderr: &str) -> Option<u128> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(STAMP))
        .and_then(|v| v.trim().parse().ok())
}

async fn submit(service: &Service, bot: &str, user: i64, prompt: &str) -> u64 {
    let (status, body) = service
        .post(
            "/api/tasks",
            json!({"bot_id": bot, "user_id": user, "prompt": prompt}),
        )
        .await;
    assert_eq!(status, 201, "submit answered {status}: {body}");
    body["id"].as_u64().expect("task id")
}

async fn throughput(service: &Service, table: &mut Table) {
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let ids: Vec<usize> = (client..THROUGHPUT_TASKS).step_by(CLIENTS).collect();
        clients.spawn(submit_share(service.base_url.clone(), ids));
    }
    let mut acks = Latencies::with_capacity(THROUGHPUT_TASKS);
    while let Some(joined) = clients.join_next().await {
        acks.extend(joined.expect("client"));
    }
    let submitted = started.elapsed();
    let done = wait_all_succeeded(service, "BOT-001", THROUGHPUT_TASKS).await;
    let first_created = done.iter().filter_map(|t| t["created_ms"].as_u64()).min();
    let last_finished = done.iter().filter_map(|t| t["finished_ms"].as_u64()).max();
    let span_ms = last_finished.unwrap_or(0) - first_created.unwrap_or(0);
    let per_s = THROUGHPUT_TASKS as f64 / (span_ms as f64 / 1e3);
    table.row(vec![
        format!("submit ack (POST -> 201), {CLIENTS} clients"),
        THROUGHPUT_TASKS.to_string(),
        ms(acks.median()),
        ms(acks.p99()),
        format!(
            "{} submits/s",
            thousands(THROUGHPUT_TASKS as f64 / submitted.as_secs_f64())
        ),
        "durable before 201".into(),
    ]);
    table.row(vec![
        "tasks through the pool (submit -> finished)".into(),
        THROUGHPUT_TASKS.to_string(),
        "-".into(),
        "-".into(),
        format!("{} tasks/s", thousands(per_s)),
        format!("{WORKERS} workers, test agent, {span_ms} ms in all"),
    ]);
}

/// One API client: submits its tasks one after another; returns each POST's time.
async fn submit_share(base_url: String, ids: Vec<usize>) -> Latencies {
    let http = reqwest::Client::new();
    let mut lat = Latencies::with_capacity(ids.len());
    for i in ids {
        let t = Instant::now();
        let resp = http
            .post(format!("{base_url}/api/tasks"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"bot_id": "BOT-001", "user_id": 1 + (i % 100) as i64, "prompt": format!("hello {i}")}))
            .send()
            .await
            .expect("POST");
        assert_eq!(resp.status().as_u16(), 201);
        lat.push(t.elapsed());
    }
    lat
}

/// Waits until `n` tasks of `bot` succeeded; returns them.
async fn wait_all_succeeded(service: &Service, bot: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, list) = service
            .get(&format!("/api/tasks?status=succeeded&bot={bot}&limit=1000"))
            .await;
        let tasks = list.as_array().cloned().unwrap_or_default();
        if tasks.len() >= n {
            return tasks;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} tasks succeeded:\n{}",
            tasks.len(),
            service.stderr_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn latency(service: &Service, table: &mut Table) {
    let runs = service.dir.path().join("data/runs");
    let mut to_start = Latencies::with_capacity(LATENCY_TASKS);
    let mut acks = Latencies::with_capacity(LATENCY_TASKS);
    let mut claim_ms = Latencies::with_capacity(LATENCY_TASKS);
    for i in 0..LATENCY_TASKS {
        let before = unix_ns();
        let t = Instant::now();
        let id = submit(service, "PROBE", 1 + (i % 100) as i64, "hello").await;
        acks.push(t.elapsed());
        // Let the task run before looking, so polling does not compete with it.
        tokio::time::sleep(Duration::from_millis(15)).await;
        let task = wait_task_done(service, id).await;
        let stderr =
            std::fs::read_to_string(runs.join(id.to_string()).join("stderr")).unwrap_or_default();
        let started = stamp_of(&stderr).expect("the probe's stamp");
        to_start.push(Duration::from_nanos((started - before) as u64));
        if let (Some(c), Some(s)) = (task["created_ms"].as_u64(), task["started_ms"].as_u64()) {
            claim_ms.push(Duration::from_millis(s - c));
        }
    }
    table.row(vec![
        "idle pool: submit ack (POST -> 201)".into(),
        LATENCY_TASKS.to_string(),
        ms(acks.median()),
        ms(acks.p99()),
        "-".into(),
        "one fsync'd commit".into(),
    ]);
    table.row(vec![
        "idle pool: created_ms -> started_ms (service stamps)".into(),
        LATENCY_TASKS.to_string(),
        ms(claim_ms.median()),
        ms(claim_ms.p99()),
        "-".into(),
        "1 ms resolution; started = claim, before spawn".into(),
    ]);
    table.row(vec![
        "idle pool: submit -> agent main".into(),
        LATENCY_TASKS.to_string(),
        ms(to_start.median()),
        ms(to_start.p99()),
        "-".into(),
        "HTTP + durable submit + relaxed claim + spawn".into(),
    ]);
}

async fn wait_task_done(service: &Service, id: u64) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, task) = service.get(&format!("/api/tasks/{id}")).await;
        if matches!(
            task["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            assert_eq!(task["status"], "succeeded", "task {id}: {task}");
            return task;
        }
        assert!(Instant::now() < deadline, "task {id} not done: {task}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
