//! Telegram bot benchmark (issue 4): the release `agentlab run` as a subprocess,
//! polling the Bot API simulator (in this process) on loopback, with the test agent
//! answering at once.
//!
//! - **1, 10 and 100 concurrent users**: each round every user sends one prompt and
//!   the round ends when all were answered. Latency runs from the injection of the
//!   update to the simulator's receipt of the answer (`SentItem::at`), both on the
//!   simulator's clock; messages/s over the whole level.
//! - **CPU per message**: utime + stime of the service from `/proc/<pid>/stat` over a
//!   level, divided by its messages; the agents' CPU (reaped children) apart.
//! - **Backlog drain**: 1,000 prompts injected before the service starts; durable
//!   acknowledgements ("⏳ Queued as task #N.") per second from the first poll.
//! - **Idle RSS** (VmRSS) of a service with one bot, after a second of idleness, and
//!   **start → first poll** (spawn to the first `getUpdates` the simulator sees).
//!
//! A fresh service (and bot) per level keeps each level's CPU and log apart.
//! Run with `cargo build --release && cargo bench --bench bot`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agentlab::telegram_sim::{SentItem, SentKind, SimHandle};
use common::service::{BotSpec, CpuTimes, PATIENCE, Service, SimClock, rss_kib, start_sim};
use common::{Latencies, Table, ms, thousands};

/// (concurrent users, rounds).
const LEVELS: [(i64, usize); 3] = [(1, 200), (10, 50), (100, 8)];
const BACKLOG: usize = 1_000;
const BACKLOG_USERS: i64 = 100;
const WORKERS: usize = 3;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

/// What one start of the service showed before any load.
struct StartFigures {
    first_poll: Duration,
    idle_rss_kib: u64,
    idle_cpu_per_s: Duration,
}

async fn bench() {
    eprintln!("bot bench on {}", common::machine());
    let sim = start_sim().await;
    let clock = SimClock::calibrate(&sim).await;
    eprintln!(
        "simulator clock calibrated to ±{} ms",
        ms(clock.uncertainty)
    );
    let mut table = Table::new(&[
        "case",
        "messages",
        "p50 ms",
        "p99 ms",
        "messages/s",
        "service CPU ms/msg (kernel part)",
        "agent CPU ms/msg",
    ]);
    let mut starts = Vec::new();
    // Every level's files are kept until the end: on an ext4 without a journal
    // (this machine's disk), each inode freed in the last minutes makes every new
    // one slower to allocate (`recently_deleted`), so removing a level's run files
    // would tax the next level's runs.
    let mut kept = Vec::new();
    for (users, rounds) in LEVELS {
        let bot_id = format!("BOT-U{users}");
        let (service, figures) = start_idle(&sim, &clock, &bot_id, users).await;
        starts.push(figures);
        level(&sim, &clock, &service, users, rounds, &mut table).await;
        kept.push(service.stop());
    }
    kept.push(backlog(&sim, &clock, &mut table).await);

    let mut start_table = Table::new(&[
        "start",
        "spawn -> first getUpdates ms",
        "idle VmRSS MiB",
        "idle CPU ms/s",
    ]);
    for (i, s) in starts.iter().enumerate() {
        start_table.row(vec![
            format!("start {}", i + 1),
            ms(s.first_poll),
            format!("{:.1}", s.idle_rss_kib as f64 / 1024.0),
            ms(s.idle_cpu_per_s),
        ]);
    }
    println!();
    println!(
        "Machine: {}; {WORKERS} workers; clock calibration ±{} ms",
        common::machine(),
        ms(clock.uncertainty)
    );
    println!(
        "Files: {}; service runtime: {} async thread(s); binary: {}",
        common::bench_filesystem(),
        common::async_threads(),
        common::service::release_binary().display()
    );
    println!();
    table.print();
    println!();
    start_table.print();
}

/// Starts a service with one bot for users `1..=users`; waits until it polls, then
/// a second of idleness for the RSS and idle CPU.
async fn start_idle(
    sim: &SimHandle,
    clock: &SimClock,
    bot_id: &str,
    users: i64,
) -> (Service, StartFigures) {
    let mut service = Service::spawn(
        sim,
        &[BotSpec {
            id: bot_id.into(),
            users: 1..=users.max(BACKLOG_USERS),
            agent: None,
        }],
        WORKERS,
    );
    let first_poll = first_poll(sim, clock, &service).await;
    service.wait_ready().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu_before = CpuTimes::of(service.pid());
    let idle = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_cpu = CpuTimes::of(service.pid()).since(cpu_before).own;
    let figures = StartFigures {
        first_poll,
        idle_rss_kib: rss_kib(service.pid()),
        idle_cpu_per_s: idle_cpu.div_f64(idle.elapsed().as_secs_f64()),
    };
    (service, figures)
}

/// Spawn → the first `getUpdates` call of the service's bot.
async fn first_poll(sim: &SimHandle, clock: &SimClock, service: &Service) -> Duration {
    let calls = sim
        .wait_for_calls(
            &service.tokens[0],
            |calls| calls.iter().any(|c| c.method == "getUpdates"),
            PATIENCE,
        )
        .await
        .expect("a first getUpdates");
    let at = calls
        .iter()
        .find(|c| c.method == "getUpdates")
        .map(|c| c.at)
        .expect("getUpdates");
    at.saturating_sub(clock.at(service.spawned_at))
}

fn cpu_per_message(cpu: CpuTimes, messages: usize) -> String {
    format!(
        "{} ({})",
        ms(cpu.own / messages as u32),
        ms(cpu.system / messages as u32)
    )
}

fn is_answer(item: &SentItem) -> bool {
    matches!(item.kind, SentKind::Message)
        && item
            .plain_text
            .as_deref()
            .or(item.text.as_deref())
            .is_some_and(|t| t.starts_with("You said"))
}

fn is_ack(item: &SentItem) -> bool {
    matches!(item.kind, SentKind::Message)
        && item
            .plain_text
            .as_deref()
            .or(item.text.as_deref())
            .is_some_and(|t| t.contains("Queued as task #"))
}

/// Waits until the bot made `count` `sendMessage` calls in all (cheap to poll: a
/// counter, not the log).
async fn wait_send_count(sim: &SimHandle, token: &str, count: u64) {
    let deadline = Instant::now() + PATIENCE;
    while sim.call_count(token, "sendMessage").unwrap_or(0) < count {
        assert!(Instant::now() < deadline, "the bot stopped answering");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn level(
    sim: &SimHandle,
    clock: &SimClock,
    service: &Service,
    users: i64,
    rounds: usize,
    table: &mut Table,
) {
    let token = &service.tokens[0];
    let cpu_before = CpuTimes::of(service.pid());
    let mut injected: BTreeMap<i64, Vec<Duration>> = BTreeMap::new();
    let mut sends = sim.call_count(token, "sendMessage").unwrap_or(0);
    for round in 0..rounds {
        for user in 1..=users {
            let at = clock.at(Instant::now());
            sim.inject_text(token, user, user, &format!("hello {round}"))
                .expect("inject");
            injected.entry(user).or_default().push(at);
        }
        // Each prompt is acknowledged ("queued") and answered: two new messages.
        sends += 2 * users as u64;
        wait_send_count(sim, token, sends).await;
    }
    let total = users as usize * rounds;
    // Wait for every answer (a round may end on acks of the next prompts).
    let log = sim
        .wait_for(
            token,
            |items| items.iter().filter(|i| is_answer(i)).count() >= total,
            PATIENCE,
        )
        .await
        .expect("all answers");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu = CpuTimes::of(service.pid()).since(cpu_before);

    let calls = sim.call_counts(token).unwrap_or_default();
    let per_message: Vec<String> = calls
        .iter()
        .filter(|(method, _)| method.as_str() != "getUpdates")
        .map(|(method, n)| format!("{method} {:.2}", *n as f64 / total as f64))
        .collect();
    eprintln!(
        "  Bot API calls per message at {users} user(s): {}",
        per_message.join(", ")
    );
    let mut answers: BTreeMap<i64, Vec<Duration>> = BTreeMap::new();
    for item in log.iter().filter(|i| is_answer(i)) {
        answers
            .entry(item.chat_id.expect("chat"))
            .or_default()
            .push(item.at);
    }
    let mut lat = Latencies::with_capacity(total);
    let (mut first, mut last) = (Duration::MAX, Duration::ZERO);
    for (user, sent) in &injected {
        let got = answers.get(user).cloned().unwrap_or_default();
        assert_eq!(got.len(), sent.len(), "answers to user {user}");
        for (s, a) in sent.iter().zip(&got) {
            lat.push(a.saturating_sub(*s));
            first = first.min(*s);
            last = last.max(*a);
        }
    }
    table.row(vec![
        format!("{users} concurrent user(s)"),
        total.to_string(),
        ms(lat.median()),
        ms(lat.p99()),
        thousands(total as f64 / (last - first).as_secs_f64()),
        cpu_per_message(cpu, total),
        ms(cpu.children / total as u32),
    ]);
}

async fn backlog(sim: &SimHandle, clock: &SimClock, table: &mut Table) -> tempfile::TempDir {
    let bot_id = "BOT-BACKLOG";
    // Register the bot and queue the prompts before the service exists.
    let token = &common::service::bot_token(0, bot_id);
    sim.register_bot_as(token, "bench_bot_0", bot_id)
        .expect("register");
    for i in 0..BACKLOG {
        let user = 1 + (i as i64 % BACKLOG_USERS);
        sim.inject_text(token, user, user, &format!("backlog {i}"))
            .expect("inject");
    }
    let service = Service::spawn(
        sim,
        &[BotSpec {
            id: bot_id.into(),
            users: 1..=BACKLOG_USERS,
            agent: None,
        }],
        WORKERS,
    );
    assert_eq!(&service.tokens[0], token, "token layout changed");
    let poll = first_poll(sim, clock, &service).await;
    let spawned = clock.at(service.spawned_at);
    let first_poll_at = spawned + poll;
    let log = sim
        .wait_for(
            token,
            |items| items.iter().filter(|i| is_ack(i)).count() >= BACKLOG,
            PATIENCE,
        )
        .await
        .expect("all acknowledgements");
    let acks: Vec<Duration> = log.iter().filter(|i| is_ack(i)).map(|i| i.at).collect();
    let last_ack = acks.iter().max().copied().unwrap_or_default();
    let log = sim
        .wait_for(
            token,
            |items| items.iter().filter(|i| is_answer(i)).count() >= BACKLOG,
            PATIENCE,
        )
        .await
        .expect("all answers");
    let last_answer = log
        .iter()
        .filter(|i| is_answer(i))
        .map(|i| i.at)
        .max()
        .unwrap_or_default();
    // Since spawn: start-up included, so a slight overestimate.
    let cpu = CpuTimes::of(service.pid());
    let drain = last_ack.saturating_sub(first_poll_at);
    table.row(vec![
        format!("backlog of {BACKLOG}: acks after first poll"),
        BACKLOG.to_string(),
        "-".into(),
        "-".into(),
        format!(
            "{} acks/s ({} ms)",
            thousands(BACKLOG as f64 / drain.as_secs_f64()),
            ms(drain)
        ),
        "-".into(),
        "-".into(),
    ]);
    let answered = last_answer.saturating_sub(first_poll_at);
    table.row(vec![
        format!("backlog of {BACKLOG}: answers after first poll"),
        BACKLOG.to_string(),
        "-".into(),
        "-".into(),
        format!(
            "{} answers/s ({} ms)",
            thousands(BACKLOG as f64 / answered.as_secs_f64()),
            ms(answered)
        ),
        cpu_per_message(cpu, BACKLOG),
        ms(cpu.children / BACKLOG as u32),
    ]);
    service.stop()
}
