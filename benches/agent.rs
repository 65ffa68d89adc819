//! The agent benchmark (issue 21): the release `agentlab run` driving the real
//! Claude Code CLI against the test kit's instant Messages API stand-in, through
//! the Telegram simulator. 50 prompts from 5 users (each user's prompts one after
//! the other, a second apart, as a person would send them), once with a process
//! per prompt (`keep_warm_s = 0`) and once warm (`keep_warm_s = 600`).
//!
//! - **Prompt → first progress**: from the prompt's injection to the first edit of
//!   its progress message that shows the agent's own output (its text, `💬`), on
//!   the simulator's clock.
//! - **Prompt → answer**: to the answer message.
//! - **CPU per prompt**, agentlab's (the service process) and the CLI's (every
//!   process below it, reaped) apart. agentlab's is given gross (its CPU over the
//!   prompt phase / prompts) and net of its **idle baseline**: the same service,
//!   ready, with no prompts, measured for [`IDLE_WINDOW`] before the prompts; its
//!   rate times the prompt phase's length is what the service would have spent
//!   anyway (monitor ticks, long polls), and the rest is what the prompts cost.
//!   Those come from `/proc/<pid>/stat`, in 10 ms ticks (a warm phase is ~15 of
//!   them); **on-CPU** is the same phase to the nanosecond, the sum of the
//!   service's threads' `schedstat` (a thread that ends during the phase, an idle
//!   blocking-pool thread, is left out).
//! - **Peak RSS**: agentlab's `VmHWM`, the
//!   largest CLI process (`ru_maxrss` of the reaped descendants), and for warm the
//!   idle warm processes together at the end.
//!
//! Each mode runs in a process of its own (this binary with `mode cold|warm`), so
//! its reaped-children figures are its own. Needs the pinned CLI (see `.ci/run`).
//! Run with `cargo build --release && cargo bench --bench agent`.

mod common;

use std::time::{Duration, Instant};

use agentlab_testkit::claude::{claude_env, find_claude, install_hint};
use agentlab_testkit::model::ModelSim;
use agentlab_testkit::service::start_sim;
use common::service::{CpuTimes, SimClock, ThreadTimes, bench_options, start_in};
use common::{Latencies, Table};
use serde_json::Value;
use telegram_sim::SentKind;

const USERS: i64 = 5;
const PROMPTS_PER_USER: usize = 10;
const WORKERS: usize = 3;
/// Between a user's answer and their next prompt: the per-chat edit pace is 1/s.
const THINK_TIME: Duration = Duration::from_millis(1100);
const PATIENCE: Duration = Duration::from_secs(120);
/// The idle baseline's window: long enough for CPU counted in 10 ms ticks.
const IDLE_WINDOW: Duration = Duration::from_secs(20);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("mode") {
        let warm = args.get(1).map(String::as_str) == Some("warm");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let figures = runtime.block_on(run_mode(warm));
        println!("{figures}");
        return;
    }
    if find_claude().is_none() {
        eprintln!(
            "the agent bench needs the Claude Code CLI: {}",
            install_hint()
        );
        std::process::exit(1);
    }
    let exe = std::env::current_exe().expect("bench binary");
    let mut rows = Vec::new();
    for mode in ["cold", "warm"] {
        let out = std::process::Command::new(&exe)
            .args(["mode", mode])
            .output()
            .expect("run a mode");
        assert!(
            out.status.success(),
            "{mode} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        let figures: Value = line
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .expect("the mode's figures");
        rows.push((mode, figures));
    }
    println!("{}", common::machine());
    let mut table = Table::new(&[
        "mode",
        "prompt → first progress p50",
        "p99",
        "prompt → answer p50",
        "p99",
        "agentlab CPU / prompt (gross)",
        "idle baseline / prompt",
        "agentlab CPU / prompt (net)",
        "agentlab on-CPU / prompt (schedstat)",
        "CLI CPU / prompt",
        "agentlab peak RSS",
        "CLI peak RSS (largest)",
        "warm idle RSS (all)",
    ]);
    for (mode, f) in &rows {
        let msf = |key: &str| format!("{:.0} ms", f[key].as_f64().unwrap_or(f64::NAN));
        let cpu = |key: &str| format!("{:.2} ms", f[key].as_f64().unwrap_or(f64::NAN));
        let mib = |key: &str| format!("{:.0} MiB", f[key].as_f64().unwrap_or(0.0) / 1024.0);
        table.row(vec![
            (*mode).to_string(),
            msf("first_p50_ms"),
            msf("first_p99_ms"),
            msf("answer_p50_ms"),
            msf("answer_p99_ms"),
            cpu("agentlab_cpu_ms_per_prompt"),
            cpu("agentlab_idle_ms_per_prompt"),
            cpu("agentlab_net_ms_per_prompt"),
            cpu("agentlab_on_cpu_ms_per_prompt"),
            msf("cli_cpu_ms_per_prompt"),
            mib("agentlab_peak_kib"),
            mib("cli_peak_kib"),
            mib("warm_idle_kib"),
        ]);
    }
    table.print();
    if let [(_, cold), (_, warm)] = rows.as_slice() {
        let get = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let share = |v: &Value, k: &str| 100.0 * get(v, k) / get(v, "cli_cpu_ms_per_prompt");
        println!(
            "warm first progress is {:.1}x faster than cold; agentlab's CPU is {:.2}% gross, {:.2}% net, {:.2}% on-CPU (cold) and {:.2}% gross, {:.2}% net, {:.2}% on-CPU (warm) of the CLI's",
            get(cold, "first_p50_ms") / get(warm, "first_p50_ms"),
            share(cold, "agentlab_cpu_ms_per_prompt"),
            share(cold, "agentlab_net_ms_per_prompt"),
            share(cold, "agentlab_on_cpu_ms_per_prompt"),
            share(warm, "agentlab_cpu_ms_per_prompt"),
            share(warm, "agentlab_net_ms_per_prompt"),
            share(warm, "agentlab_on_cpu_ms_per_prompt"),
        );
        for (mode, f) in &rows {
            println!(
                "{mode}: idle baseline {:.2} ms CPU/s over {:.0} s; prompt phase {:.1} s",
                get(f, "idle_cpu_ms_per_s"),
                IDLE_WINDOW.as_secs_f64(),
                get(f, "phase_s"),
            );
        }
    }
}

/// One mode: 50 prompts, then the figures as one JSON line.
async fn run_mode(warm: bool) -> Value {
    let claude = find_claude().expect("the Claude Code CLI");
    let model = ModelSim::start().await.expect("model stand-in");
    let home = tempfile::tempdir().expect("home");
    // The CLI's environment goes through `env`: the service's own stays clean.
    let mut command = vec!["/usr/bin/env".to_string()];
    for (name, value) in claude_env(home.path(), &model.base_url()) {
        command.push(format!("{name}={}", value.to_string_lossy()));
    }
    command.push(claude.display().to_string());
    let sim = start_sim().await;
    let clock = SimClock::calibrate(&sim).await;
    let keep = if warm {
        "keep_warm_s = 600\n"
    } else {
        "keep_warm_s = 0\n"
    };
    let dir = tempfile::tempdir_in(common::bench_dir()).expect("temp dir");
    let command_toml: Vec<String> = command.iter().map(|arg| format!("{arg:?}")).collect();
    let mut options = bench_options(&[("BENCH", 1..=USERS)], WORKERS);
    options.agent_toml = Some(format!("command = [{}]\n{keep}", command_toml.join(", ")));
    let service = start_in(dir, &sim, options).await;
    let pid = service.pid().expect("the service runs");
    let token = service.tokens[0].clone();
    // The idle baseline: the ready service, no prompts.
    let idle_before = CpuTimes::of(pid);
    let idle_started = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_cpu = CpuTimes::of(pid).since(idle_before).own;
    let idle_per_second = idle_cpu.as_secs_f64() / idle_started.elapsed().as_secs_f64();

    let cpu_before = CpuTimes::of(pid);
    let threads_before = ThreadTimes::of(pid);
    let phase_started = Instant::now();
    let mut users = tokio::task::JoinSet::new();
    for user in 1..=USERS {
        let sim = sim.clone();
        let token = token.clone();
        users.spawn(async move {
            let mut first = Latencies::with_capacity(PROMPTS_PER_USER);
            let mut answer = Latencies::with_capacity(PROMPTS_PER_USER);
            for n in 0..PROMPTS_PER_USER {
                let text = format!("prompt {n} of user {user}");
                let sent_at = clock.at(Instant::now());
                sim.inject_text(&token, user, user, &text).expect("inject");
                let (progress, answered) = wait_for_turn(&sim, &token, user, &text, sent_at).await;
                first.push(progress.saturating_sub(sent_at));
                answer.push(answered.saturating_sub(sent_at));
                tokio::time::sleep(THINK_TIME).await;
            }
            (first, answer)
        });
    }
    let mut first = Latencies::with_capacity(50);
    let mut answer = Latencies::with_capacity(50);
    while let Some(done) = users.join_next().await {
        let (f, a) = done.expect("a user");
        first.extend(f);
        answer.extend(a);
    }
    let prompts = first.len() as f64;
    let agentlab_cpu = CpuTimes::of(pid).since(cpu_before).own;
    // The same to the nanosecond: the on-CPU time of the service's threads
    // (`schedstat`), which a thread ending during the phase would leave out.
    let agentlab_on_cpu: Duration = ThreadTimes::of(pid).since(&threads_before).values().sum();
    let phase_s = phase_started.elapsed().as_secs_f64();
    let agentlab_idle_ms = idle_per_second * phase_s * 1000.0;
    let agentlab_own_total = CpuTimes::of(pid).own;
    let agentlab_peak_kib = status_kib(pid, "VmHWM:");
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", service.base_url))
        .bearer_auth(common::service::ADMIN_TOKEN)
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap_or_default();
    let warm_idle_bytes = metrics
        .lines()
        .find_map(|l| l.strip_prefix("agentlab_agent_warm_rss_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    // A graceful stop ends the warm processes; the service reaps them, we reap it.
    let mut service = service;
    service.stop().await;
    let children = children_usage();
    let cli_cpu = children.cpu.saturating_sub(agentlab_own_total);
    serde_json::json!({
        "prompts": prompts,
        "first_p50_ms": ms_f(first.median()),
        "first_p99_ms": ms_f(first.p99()),
        "answer_p50_ms": ms_f(answer.median()),
        "answer_p99_ms": ms_f(answer.p99()),
        "agentlab_cpu_ms_per_prompt": ms_f(agentlab_cpu) / prompts,
        "agentlab_idle_ms_per_prompt": agentlab_idle_ms / prompts,
        "agentlab_net_ms_per_prompt": (ms_f(agentlab_cpu) - agentlab_idle_ms) / prompts,
        "agentlab_on_cpu_ms_per_prompt": ms_f(agentlab_on_cpu) / prompts,
        "idle_cpu_ms_per_s": idle_per_second * 1000.0,
        "phase_s": phase_s,
        "cli_cpu_ms_per_prompt": ms_f(cli_cpu) / prompts,
        "agentlab_peak_kib": agentlab_peak_kib as f64,
        "cli_peak_kib": children.max_rss_kib as f64,
        "warm_idle_kib": warm_idle_bytes / 1024.0,
    })
}

/// Waits for a prompt's first progress edit showing the agent's text and for its
/// answer; returns both on the simulator's clock.
async fn wait_for_turn(
    sim: &telegram_sim::SimHandle,
    token: &str,
    user: i64,
    prompt: &str,
    since: Duration,
) -> (Duration, Duration) {
    let echo = format!("echo: {prompt}");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let sent = sim.sent_to(token, user).expect("sent");
        let mine = |i: &&telegram_sim::SentItem| {
            i.at >= since && i.shown_text().is_some_and(|t| t.contains(&echo))
        };
        let answer = sent
            .iter()
            .filter(mine)
            .find(|i| i.kind == SentKind::Message)
            .map(|i| i.at);
        let progress = sent
            .iter()
            .filter(mine)
            .find(|i| i.kind == SentKind::Edit && i.shown_text().is_some_and(|t| t.contains('💬')))
            .map(|i| i.at);
        if let Some(answer) = answer {
            // No edit before the answer: the answer is the first progress seen.
            return (progress.unwrap_or(answer).min(answer), answer);
        }
        assert!(Instant::now() < deadline, "no answer to {prompt:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn ms_f(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A `/proc/<pid>/status` figure in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// What this process's reaped descendants used.
struct ChildrenUsage {
    cpu: Duration,
    max_rss_kib: u64,
}

fn children_usage() -> ChildrenUsage {
    // SAFETY: getrusage writes into the struct we pass; no other preconditions.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    ChildrenUsage {
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss.max(0) as u64,
    }
}
