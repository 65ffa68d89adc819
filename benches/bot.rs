//! Telegram bot benchmark (issue 4): the release `agentlab run` as a subprocess,
//! polling the Bot API simulator (in this process) on loopback, with the test agent
//! answering at once.
//!
//! - **1, 10 and 100 concurrent users**: each round every user sends one prompt and
//!   the round ends when all were answered. Latency runs from the injection of the
//!   update to the simulator's receipt of the answer (`SentItem::at`), both on the
//!   simulator's clock; messages/s over the whole level.
//! - **CPU per message**: utime + stime of the service from `/proc/<pid>/stat` over a
//!   level, divided by its messages (10 ms ticks); the agents' CPU (reaped
//!   children) apart. Beside it the nanosecond on-CPU time of the process's live
//!   threads (`schedstat`), also split by thread name on stderr (the service's
//!   async workers and blocking-pool threads share the name `agentlab`).
//! - **Backlog drain**: 1,000 prompts injected before the service starts; durable
//!   acknowledgements ("⏳ Queued as task #N.") per second from the first poll.
//! - **Idle RSS** (VmRSS) of a service with one bot, after a second of idleness, and
//!   **start → first poll** (spawn to the first `getUpdates` the simulator sees).
//!
//! - **Baseline, same run**: a bare teloxide echo bot (this bench binary in
//!   `echo-bot` mode, its own process, as many async threads as the service):
//!   a hand-written `getUpdates` / `sendMessage` loop on teloxide's `Bot` (not
//!   its Dispatcher), one `sendMessage` "You said: …" per text, nothing stored,
//!   no agent. It stands for the reference bot, measured on this
//!   machine; each level runs it right after the service. Its RSS is that of
//!   the whole bench binary, so not comparable with the reference's.
//!
//! - **What a prompt needs, each part alone** (in this process, whose CPU is
//!   read with `getrusage`; the simulator idles meanwhile): the store's writes of
//!   one prompt in the order the service makes them, a bare `tokio::process`
//!   spawn and wait of the test agent, and the pool's own `agent::spawn` + `wait`
//!   (run files, process identity, output read); redb alone, one record per
//!   non-durable commit; and the bare system calls the
//!   design asks for (a 4 KiB overwrite + `fdatasync`, as a journal record; a
//!   run directory with two files). The pool's run includes the bare spawn.
//!   Beside the echo bot's CPU per message (one exchange and a share of a
//!   poll; the service makes three exchanges per prompt besides polling), they
//!   show how much of the service's CPU per message any implementation of
//!   this design pays on this machine. (With `AGENTLAB_BIN`, the parts still
//!   measure this source's store, not that binary's.)
//!
//! A fresh service (and bot) per level keeps each level's CPU and log apart.
//! Run with `cargo build --release && cargo bench --bench bot`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::service::{
    CpuTimes, PATIENCE, Service, SimClock, ThreadTimes, bench_options, rss_kib, start_sim,
};
use common::{Latencies, Table, ms, thousands};
use telegram_sim::{SentItem, SentKind, SimHandle};

/// (concurrent users, rounds).
const LEVELS: [(i64, usize); 3] = [(1, 200), (10, 50), (100, 8)];
const BACKLOG: usize = 1_000;
const BACKLOG_USERS: i64 = 100;
const WORKERS: usize = 3;

/// The argument that makes this binary the baseline echo bot.
const ECHO_ARG: &str = "echo-bot";

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some(ECHO_ARG) {
        let token = args.next().expect("echo-bot TOKEN API_URL");
        let api_url = args.next().expect("echo-bot TOKEN API_URL");
        echo_bot(token, &api_url);
        return;
    }
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
    if std::env::var("AGENTLAB_BENCH_ONLY").as_deref() == Ok("parts") {
        // The parts alone (e.g. to profile one): `AGENTLAB_BENCH_ONLY=parts`.
        prompt_parts().await.print();
        return;
    }
    let sim = start_sim().await;
    let clock = SimClock::calibrate(&sim).await;
    eprintln!(
        "simulator clock calibrated to ±{} ms",
        ms(clock.uncertainty)
    );
    let mut table = level_table();
    if let Some((users, rounds)) = only_level("service:") {
        let (service, _) = start_idle(&sim, &clock, &format!("BOT-U{users}"), users).await;
        let measured = Measured {
            label: format!("{users} concurrent user(s)"),
            pid: service.pid().expect("the service runs"),
            token: service.tokens[0].clone(),
            sends_per_prompt: 2,
        };
        level(&sim, &clock, &measured, users, rounds, &mut table).await;
        stop(service).await;
        table.print();
        return;
    }
    if let Some((users, rounds)) = only_level("echo:") {
        let echo = EchoBot::spawn(&sim, &format!("ECHO-U{users}")).await;
        let measured = Measured {
            label: format!("baseline: bare teloxide echo bot, {users} user(s)"),
            pid: echo.pid(),
            token: echo.token.clone(),
            sends_per_prompt: 1,
        };
        level(&sim, &clock, &measured, users, rounds, &mut table).await;
        echo.stop();
        table.print();
        return;
    }
    let mut starts = Vec::new();
    // Every level's files are kept until the end: on an ext4 without a journal
    // (this machine's disk), each inode freed in the last minutes makes every new
    // one slower to allocate (`recently_deleted`), so removing a level's run files
    // would tax the next level's runs.
    let mut kept = Vec::new();
    let mut echo_figures = Vec::new();
    for (users, rounds) in LEVELS {
        let bot_id = format!("BOT-U{users}");
        let (service, figures) = start_idle(&sim, &clock, &bot_id, users).await;
        starts.push(figures);
        let measured = Measured {
            label: format!("{users} concurrent user(s)"),
            pid: service.pid().expect("the service runs"),
            token: service.tokens[0].clone(),
            sends_per_prompt: 2,
        };
        level(&sim, &clock, &measured, users, rounds, &mut table).await;
        kept.push(stop(service).await);

        let echo = EchoBot::spawn(&sim, &format!("ECHO-U{users}")).await;
        let measured = Measured {
            label: format!("baseline: bare teloxide echo bot, {users} user(s)"),
            pid: echo.pid(),
            token: echo.token.clone(),
            sends_per_prompt: 1,
        };
        level(&sim, &clock, &measured, users, rounds, &mut table).await;
        echo_figures.push((users, echo.idle_rss_kib));
    }
    kept.push(backlog(&sim, &clock, &mut table).await);
    let parts = prompt_parts().await;

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
    println!();
    parts.print();
    println!();
    for (users, rss) in echo_figures {
        println!(
            "Baseline echo bot of the {users}-user level: VmRSS {:.1} MiB after its first poll",
            rss as f64 / 1024.0
        );
    }
}

/// The columns of the levels' table.
fn level_table() -> Table {
    Table::new(&[
        "case",
        "messages",
        "p50 ms",
        "p99 ms",
        "messages/s",
        "process CPU ms/msg (kernel part)",
        "on-CPU ms/msg (schedstat)",
        "agent CPU ms/msg",
    ])
}

/// `AGENTLAB_BENCH_ONLY=service:USERS:ROUNDS` (or `echo:USERS:ROUNDS`): only the
/// service (or the baseline echo bot) at one level, e.g. under a profiler such as
/// callgrind, through an `AGENTLAB_BIN` (or `AGENTLAB_BENCH_ECHO_WRAPPER`) wrapper.
fn only_level(prefix: &str) -> Option<(i64, usize)> {
    let only = std::env::var("AGENTLAB_BENCH_ONLY").ok()?;
    let (users, rounds) = only.strip_prefix(prefix)?.split_once(':')?;
    let usage = "AGENTLAB_BENCH_ONLY=service:USERS:ROUNDS or echo:USERS:ROUNDS";
    Some((users.parse().expect(usage), rounds.parse().expect(usage)))
}

/// What a level measures: a process polling the simulator with one token.
struct Measured {
    label: String,
    pid: u32,
    token: String,
    /// `sendMessage` calls per prompt: the service acknowledges and answers, the
    /// echo bot only answers.
    sends_per_prompt: u64,
}

/// The baseline bot as a child process; killed when dropped.
struct EchoBot {
    child: std::process::Child,
    token: String,
    idle_rss_kib: u64,
}

impl EchoBot {
    /// Registers a token for it, starts it and waits for its first poll.
    async fn spawn(sim: &SimHandle, bot_id: &str) -> EchoBot {
        let token = common::service::bot_token(0, bot_id);
        sim.register_bot_as(&token, "echo_bot", bot_id)
            .expect("register the echo bot");
        let own = std::env::current_exe().expect("own path");
        // `AGENTLAB_BENCH_ECHO_WRAPPER`: a program the echo bot runs under (e.g. a
        // callgrind wrapper), given the bench binary and its arguments.
        let mut command = match std::env::var_os("AGENTLAB_BENCH_ECHO_WRAPPER") {
            Some(wrapper) => {
                let mut c = std::process::Command::new(wrapper);
                c.arg(own);
                c
            }
            None => std::process::Command::new(own),
        };
        let child = command
            .arg(ECHO_ARG)
            .arg(&token)
            .arg(sim.url())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn the echo bot");
        // Owned (killed on drop) before anything can panic.
        let mut echo = EchoBot {
            child,
            token,
            idle_rss_kib: 0,
        };
        sim.wait_for_calls(
            &echo.token,
            |calls| calls.iter().any(|c| c.method == "getUpdates"),
            PATIENCE,
        )
        .await
        .expect("the echo bot polls");
        tokio::time::sleep(Duration::from_millis(300)).await;
        echo.idle_rss_kib = rss_kib(echo.pid());
        echo
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl EchoBot {
    /// Ends it with SIGTERM, so that a profiler it runs under writes its output.
    fn stop(mut self) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for EchoBot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Consecutive failed polls after which the echo bot gives up (the simulator
/// is gone: the bench ended or died), so it never outlives the bench for long.
const ECHO_MAX_FAILED_POLLS: u32 = 50;

/// A bare teloxide echo bot, the shape of the reference: a
/// multi-threaded runtime with the service's thread count, long polling, every
/// text of a batch answered concurrently with one `sendMessage`, then the next
/// poll.
fn echo_bot(token: String, api_url: &str) {
    use teloxide::payloads::GetUpdatesSetters;
    use teloxide::prelude::Requester;
    use teloxide::types::UpdateKind;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(common::async_threads())
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let url = reqwest::Url::parse(api_url).expect("api url");
        let bot = teloxide::Bot::new(token).set_api_url(url);
        let mut offset = 0;
        let mut failed_polls = 0;
        while failed_polls < ECHO_MAX_FAILED_POLLS {
            let Ok(updates) = bot.get_updates().offset(offset).timeout(10).await else {
                failed_polls += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            failed_polls = 0;
            let mut sends = tokio::task::JoinSet::new();
            for update in updates {
                offset = update.id.0 as i32 + 1;
                if let UpdateKind::Message(message) = update.kind
                    && let Some(text) = message.text()
                {
                    let (bot, chat, answer) =
                        (bot.clone(), message.chat.id, format!("You said: {text}"));
                    sends.spawn(async move {
                        let _ = bot.send_message(chat, answer).await;
                    });
                }
            }
            while sends.join_next().await.is_some() {}
        }
    });
}

/// Starts a service with one bot for users `1..=users`; waits until it polls, then
/// a second of idleness for the RSS and idle CPU.
async fn start_idle(
    sim: &SimHandle,
    clock: &SimClock,
    bot_id: &str,
    users: i64,
) -> (Service, StartFigures) {
    let mut service = Service::prepare(
        sim.clone(),
        bench_options(&[(bot_id, 1..=users.max(BACKLOG_USERS))], WORKERS),
    );
    service.spawn();
    let first_poll = first_poll(sim, clock, &service).await;
    service.wait_ready().await;
    let pid = service.pid().expect("the service runs");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu_before = CpuTimes::of(pid);
    let idle = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_cpu = CpuTimes::of(pid).since(cpu_before).own;
    let figures = StartFigures {
        first_poll,
        idle_rss_kib: rss_kib(pid),
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
    at.saturating_sub(clock.at(service.spawned_at()))
}

/// SIGTERM and wait for the exit; the stopped service keeps its directory (see
/// `kept` in `bench`).
async fn stop(mut service: Service) -> Service {
    service.stop().await;
    service
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
    measured: &Measured,
    users: i64,
    rounds: usize,
    table: &mut Table,
) {
    let token = &measured.token;
    let pid = measured.pid;
    let cpu_before = CpuTimes::of(pid);
    let threads_before = ThreadTimes::of(pid);
    let mut injected: BTreeMap<i64, Vec<Duration>> = BTreeMap::new();
    let mut sends = sim.call_count(token, "sendMessage").unwrap_or(0);
    for round in 0..rounds {
        for user in 1..=users {
            let at = clock.at(Instant::now());
            sim.inject_text(token, user, user, &format!("hello {round}"))
                .expect("inject");
            injected.entry(user).or_default().push(at);
        }
        sends += measured.sends_per_prompt * users as u64;
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
    let cpu = CpuTimes::of(pid).since(cpu_before);
    let threads = ThreadTimes::of(pid).since(&threads_before);
    let on_cpu: Duration = threads.values().sum();
    let by_thread: Vec<String> = threads
        .iter()
        .map(|(name, spent)| format!("{name} {}", ms(*spent / total as u32)))
        .collect();
    eprintln!(
        "  {}: on-CPU ms per message by thread: {}; not in live threads (ticks minus schedstat, ±10 ms in all): {}",
        measured.label,
        by_thread.join(", "),
        signed_ms(cpu.own.as_secs_f64() - on_cpu.as_secs_f64(), total),
    );

    let calls = sim.call_counts(token).unwrap_or_default();
    let per_message: Vec<String> = calls
        .iter()
        .filter(|(method, _)| method.as_str() != "getUpdates")
        .map(|(method, n)| format!("{method} {:.2}", *n as f64 / total as f64))
        .collect();
    eprintln!(
        "  {}: Bot API calls per message: {}",
        measured.label,
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
        measured.label.clone(),
        total.to_string(),
        ms(lat.median()),
        ms(lat.p99()),
        thousands(total as f64 / (last - first).as_secs_f64()),
        cpu_per_message(cpu, total),
        ms(on_cpu / total as u32),
        ms(cpu.children / total as u32),
    ]);
}

/// `seconds` spread over `messages`, in ms, with its sign.
fn signed_ms(seconds: f64, messages: usize) -> String {
    format!("{:+.3} ms", seconds * 1000.0 / messages as f64)
}

async fn backlog(sim: &SimHandle, clock: &SimClock, table: &mut Table) -> Service {
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
    let mut service = Service::prepare(
        sim.clone(),
        bench_options(&[(bot_id, 1..=BACKLOG_USERS)], WORKERS),
    );
    assert_eq!(&service.tokens[0], token, "token layout changed");
    service.spawn();
    let poll = first_poll(sim, clock, &service).await;
    let spawned = clock.at(service.spawned_at());
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
    let cpu = CpuTimes::of(service.pid().expect("the service runs"));
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
        "-".into(),
        ms(cpu.children / BACKLOG as u32),
    ]);
    stop(service).await
}

/// This process's CPU time so far (user + system, all threads), microsecond grain.
fn own_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Repetitions of each part in [`prompt_parts`].
const PART_RUNS: usize = 500;

/// Each part of a prompt's work alone: CPU of this process per repetition.
async fn prompt_parts() -> Table {
    let mut table = Table::new(&[
        "part of one prompt, alone",
        "runs",
        "CPU ms per run (this process)",
    ]);
    let dir = tempfile::tempdir_in(common::bench_dir()).expect("temp dir");
    let binary = common::service::release_binary();
    let parts = [
        (
            "store: cost reads, submit, progress id, claim, pid record, finish, outbox read, delivered (no disk-space check)",
            store_part(dir.path()).await,
        ),
        (
            "redb alone: one 200-byte record per non-durable commit",
            redb_part(dir.path()),
        ),
        (
            "system calls only: 4 KiB overwrite + fdatasync (a journal record)",
            fsync_part(dir.path()),
        ),
        (
            "system calls only: mkdir + 2 file creates (a run directory)",
            run_dir_part(dir.path()),
        ),
        (
            "tokio::process spawn + wait of the test agent (no files)",
            bare_spawn_part(&binary).await,
        ),
        (
            "the pool's agent::spawn + wait (the spawn above, run files, identity, output read)",
            agent_run_part(&binary, dir.path()).await,
        ),
    ];
    for (part, per_run) in parts {
        table.row(vec![part.into(), PART_RUNS.to_string(), ms(per_run)]);
    }
    table
}

/// CPU of this process per run since `started`.
fn per_run_since(started: Duration) -> Duration {
    (own_cpu() - started) / PART_RUNS as u32
}

/// The store's work for one prompt, in the order the service does it (the
/// handler, the pool, the outbox), one prompt at a time.
async fn store_part(dir: &std::path::Path) -> Duration {
    use agentlab::storage::{
        NewTask, PRIORITY_NORMAL, Store, StoreOptions, TaskFinish, TaskKind, TaskSource, TaskStatus,
    };

    let store = Store::open(&dir.join("parts.redb"), StoreOptions::default()).expect("store");
    let started = own_cpu();
    for i in 0..PART_RUNS {
        let new = NewTask {
            bot_id: "PARTS".into(),
            user_id: 1,
            chat_id: 1,
            kind: TaskKind::Chat,
            source: TaskSource::Telegram,
            prompt: format!("hello {i}"),
            priority: PRIORITY_NORMAL,
            max_attempts: 3,
            reply_to_message_id: Some(i as i32),
            update_id: Some(i as i64),
        };
        let now = agentlab::storage::now_ms();
        // The intake's budget check reads the day's and the month's cost.
        let _ = store
            .cost_today_and_month("PARTS", now)
            .expect("cost today and month");
        let task = store.submit_prompt(new, now).await.expect("submit").task;
        store.set_progress_message(task.id, Some(i as i32)).detach();
        let claimed = store
            .claim_next_task(now, Vec::new())
            .await
            .expect("claim")
            .expect("a task");
        store
            .record_task_process(claimed.task.id, now, 1, 1)
            .await
            .expect("pid record");
        // As the pool records the test agent's answer: the session is kept and
        // resumed by the next claim.
        let finish = TaskFinish {
            status: Some(TaskStatus::Succeeded),
            result: Some(format!("You said: hello {i}")),
            exit_code: Some(0),
            input_tokens: 2,
            output_tokens: 4,
            session_id: Some(
                claimed
                    .session_id
                    .unwrap_or_else(|| "test-parts-session".into()),
            ),
            deliver: true,
            ..TaskFinish::default()
        };
        store
            .finish_task(task.id, finish, now)
            .await
            .expect("finish");
        // The outbox reads what is undelivered, then begins the delivery.
        let pending = store.undelivered("PARTS").expect("undelivered");
        assert_eq!(pending.len(), 1, "one answer to deliver");
        store
            .begin_delivery(task.id, now)
            .await
            .expect("begin delivery");
        store.mark_delivered(task.id).await.expect("delivered");
    }
    per_run_since(started)
}

/// The engine's own floor: redb alone, one small record per non-durable commit
/// (the store makes six commits' worth of writes per prompt; under load, group
/// commit shares them).
fn redb_part(dir: &std::path::Path) -> Duration {
    const RECORDS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("records");
    let db = redb::Database::create(dir.join("floor.redb")).expect("open redb");
    let record = [7u8; 200];
    let started = own_cpu();
    for i in 0..PART_RUNS {
        let mut tx = db.begin_write().expect("begin");
        tx.set_durability(redb::Durability::None)
            .expect("durability");
        tx.open_table(RECORDS)
            .expect("table")
            .insert(i as u64, record.as_slice())
            .expect("insert");
        tx.commit().expect("commit");
    }
    per_run_since(started)
}

/// What a journal record costs the system, with no code around it: a 4 KiB
/// overwrite of written blocks and its `fdatasync` (three per prompt).
fn fsync_part(dir: &std::path::Path) -> Duration {
    use std::os::unix::fs::FileExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("fsync-probe"))
        .expect("probe file");
    let page = [7u8; 4096];
    file.write_all_at(&page, 0).expect("write");
    file.sync_data().expect("fdatasync");
    let started = own_cpu();
    for _ in 0..PART_RUNS {
        file.write_all_at(&page, 0).expect("write");
        file.sync_data().expect("fdatasync");
    }
    per_run_since(started)
}

/// What a run directory costs the system: `mkdir` and two file creates (one per
/// prompt).
fn run_dir_part(dir: &std::path::Path) -> Duration {
    let probes = dir.join("mkdir-probe");
    std::fs::create_dir(&probes).expect("probe dir");
    let started = own_cpu();
    for i in 0..PART_RUNS {
        let run = probes.join(i.to_string());
        std::fs::create_dir(&run).expect("mkdir");
        for name in ["stdout", "stderr"] {
            std::fs::File::create(run.join(name)).expect("create");
        }
    }
    per_run_since(started)
}

/// A bare `tokio::process` spawn and wait of the test agent, no files.
async fn bare_spawn_part(binary: &std::path::Path) -> Duration {
    let started = own_cpu();
    for _ in 0..PART_RUNS {
        let status = tokio::process::Command::new(binary)
            .arg("test-agent")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .expect("run the test agent");
        assert!(status.success(), "test agent failed");
    }
    per_run_since(started)
}

/// The pool's way to run the agent: `agent::spawn` (run files, the prompt,
/// the process identity) and `wait` (the output read and parsed).
async fn agent_run_part(binary: &std::path::Path, dir: &std::path::Path) -> Duration {
    use agentlab::worker::agent::{self, AgentCommand, PromptFormat, RunSpec};

    let command = AgentCommand {
        program: binary.display().to_string(),
        args: vec!["test-agent".into()],
        resume_args: Vec::new(),
        trailing_args: Vec::new(),
        prompt_format: PromptFormat::Raw,
        scrub_env: Vec::new(),
    };
    // The sender is dropped at once: "never cancelled".
    let cancel = tokio::sync::watch::channel(false).1;
    let started = own_cpu();
    for i in 0..PART_RUNS {
        let spec = RunSpec {
            task_id: i as u64,
            prompt: format!("hello {i}"),
            workdir: dir.to_path_buf(),
            run_dir: dir.join("runs").join(i.to_string()),
            session_id: None,
            timeout: Duration::from_secs(60),
            kill_grace: Duration::from_secs(1),
        };
        let running = agent::spawn(&command, &spec).await.expect("spawn");
        let outcome = running.wait(cancel.clone()).await;
        assert!(outcome.succeeded(), "agent run failed");
    }
    per_run_since(started)
}
