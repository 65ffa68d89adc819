//! "Nothing lost": the service is SIGKILLed at random (seeded) moments while users
//! send prompts; at the end every prompt sent reached a terminal state, its answer
//! reached the user, no answer arrived twice except an explicitly marked re-send
//! after a crash interrupted its delivery, the store passes redb's integrity check,
//! and the costs equal the sum of the finished tasks' costs.
//!
//! `AGENTLAB_CRASH_KILLS` (default 20) and `AGENTLAB_CRASH_SEED` (default 42) set
//! the length and the randomness; the long run in RELIABILITY.md uses 500 kills.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agentlab::storage::{Store, TaskStatus};

use crate::harness::{Options, Service, StoreAccess};

/// A tiny deterministic generator (xorshift64*), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const USERS: [i64; 3] = [111, 222, 333];
const REPEAT_MARK: &str = "Sent again after a restart";

#[tokio::test(flavor = "multi_thread")]
async fn every_prompt_survives_a_kill_9_loop_and_is_answered_once() {
    let kills = env_u64("AGENTLAB_CRASH_KILLS", 20);
    let seed = env_u64("AGENTLAB_CRASH_SEED", 42).max(1);
    let mut rng = Rng(seed);
    // The `fail` prompts are the agent failing on purpose; keep them from opening
    // the agent's breaker (that path has its own acceptance test) so the run
    // measures crashes, not recovery timeouts.
    // Likewise budgets and rates: 1,500 prompts at $0.01 pass the default $10 a
    // day, and the bot would (rightly) refuse the rest with a budget message.
    let options = Options {
        limits_toml: "daily_cost_usd = 100000.0\nmonthly_cost_usd = 1000000.0\n\
                      rate_per_minute = 100000\nrate_per_hour = 1000000"
            .into(),
        extra_toml: "\n[breaker]\nfailure_threshold = 100000\nmin_calls = 100000\n".into(),
        ..Options::default()
    };
    let mut service = Service::start(options).await;
    let mut prompts: BTreeMap<String, i64> = BTreeMap::new();
    let started = Instant::now();
    for cycle in 0..kills {
        for _ in 0..3 {
            let n = prompts.len();
            let user = USERS[rng.below(USERS.len() as u64) as usize];
            let tag = format!("p{n}x");
            let text = match rng.below(5) {
                0 => format!("sleep:0.{} cost:0.01 {tag}", rng.below(5)),
                1 => format!("fail {tag}"),
                _ => format!("cost:0.01 {tag}"),
            };
            service.send(0, user, &text);
            prompts.insert(tag, user);
        }
        tokio::time::sleep(Duration::from_millis(20 + rng.below(400))).await;
        service.kill9();
        service.restart().await;
        if cycle % 5 == 4 {
            eprintln!(
                "crash loop: {} kills, {} prompts, {:?}",
                cycle + 1,
                prompts.len(),
                started.elapsed()
            );
        }
    }

    // Settle: every prompt stored and finished, every answer delivered.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let counts = task_counts(&service).await;
        let stored: u64 = counts.values().sum();
        let open: u64 = counts
            .iter()
            .filter(|(status, _)| !TERMINAL.contains(&status.as_str()))
            .map(|(_, n)| n)
            .sum();
        if open == 0 && stored >= prompts.len() as u64 && outbox_empty(&service).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled: {counts:?} for {} prompts\n{}",
            prompts.len(),
            service.stderr_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(service.stop().await, Some(0));

    let tasks = service.all_tasks();
    let mut by_tag: BTreeMap<String, Vec<&agentlab::storage::Task>> = BTreeMap::new();
    for task in &tasks {
        let tag = task
            .prompt
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string();
        by_tag.entry(tag).or_default().push(task);
    }
    let mut repeats = 0;
    for (tag, user) in &prompts {
        let stored = by_tag.get(tag).map_or(0, Vec::len);
        assert_eq!(stored, 1, "prompt {tag} stored exactly once (got {stored})");
        let task = by_tag[tag][0];
        assert!(task.status.is_terminal(), "{tag}: {:?}", task.status);
        if tag.starts_with('p') && task.prompt.starts_with("fail") {
            assert_eq!(task.status, TaskStatus::Failed);
        } else {
            assert_eq!(task.status, TaskStatus::Succeeded, "{tag}: {task:?}");
        }
        let answers = answers_for(&service, *user, task);
        assert!(
            !answers.is_empty(),
            "{tag} was not answered: {task:#?}\nsent to {user}: {:#?}",
            service.sent_to(0, *user)
        );
        let unmarked = answers.iter().filter(|a| !a.contains(REPEAT_MARK)).count();
        assert!(
            unmarked <= 1,
            "{tag} answered twice without the re-send mark: {answers:#?}"
        );
        repeats += answers.len() - 1;
    }
    // Costs equal the sum of the finished tasks' costs.
    let store = service.open_store();
    let cost_rows: f64 = store
        .list_costs()
        .expect("costs")
        .iter()
        .map(|(_, _, c)| c.usd)
        .sum();
    let task_costs: f64 = tasks.iter().map(|t| t.cost_usd).sum();
    assert!(
        (cost_rows - task_costs).abs() < 1e-9,
        "costs {cost_rows} vs tasks {task_costs}"
    );
    store.close();
    drop(store);
    let db = service.data_dir().join("agentlab.redb");
    assert!(
        Store::check_file_integrity(&db).expect("integrity check runs"),
        "store integrity"
    );
    eprintln!(
        "crash loop done: {kills} kills, {} prompts, 0 lost, {repeats} marked re-sends, {:?}",
        prompts.len(),
        started.elapsed()
    );
}

/// Answers in the user's chat for a task: the echo of its text, or its failure.
fn answers_for(service: &Service, user: i64, task: &agentlab::storage::Task) -> Vec<String> {
    let tag = task.prompt.split_whitespace().last().unwrap_or_default();
    let failure = format!("Task #{} failed", task.id);
    service
        .messages_to(0, user)
        .into_iter()
        .filter(|m| m.starts_with(&format!("You said: {tag}\n")) || m.contains(&failure))
        .collect()
}

/// The statuses a task never leaves.
const TERMINAL: [&str; 3] = ["succeeded", "failed", "cancelled"];

/// Tasks in the store by status, all read in one transaction (`agentlab_tasks`
/// in `/metrics`). Counts taken by separate requests, one per status, can miss a
/// task that moves between them (running when the queued ones are listed, queued
/// again for a retry when the running ones are), and call the run settled while
/// that task still waits for its retry.
async fn task_counts(service: &Service) -> BTreeMap<String, u64> {
    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", service.base_url))
        .bearer_auth(crate::harness::ADMIN_TOKEN)
        .send()
        .await
        .expect("GET /metrics");
    assert!(
        resp.status().is_success(),
        "GET /metrics: {}",
        resp.status()
    );
    let text = resp.text().await.expect("the exposition");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the exposition parses");
    scrape
        .samples
        .into_iter()
        .filter(|sample| sample.metric == "agentlab_tasks")
        .filter_map(|sample| {
            let prometheus_parse::Value::Gauge(n) = sample.value else {
                return None;
            };
            Some((sample.labels.get("status")?.to_string(), n as u64))
        })
        .collect()
}

/// No finished task waits for its answer to be delivered.
async fn outbox_empty(service: &Service) -> bool {
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/admin/dump?table=outbox&format=ndjson",
            service.base_url
        ))
        .bearer_auth(crate::harness::ADMIN_TOKEN)
        .send()
        .await;
    match resp {
        Ok(r) if r.status().is_success() => r.text().await.is_ok_and(|t| t.trim().is_empty()),
        _ => false,
    }
}

/// The service sizes its runtime threads itself: with `RUST_MIN_STACK` small in
/// its environment, decoding the Bot API's answer to a `sendMessage` overflowed
/// a worker's stack and the service vanished right after it said it was ready
/// (the crash loop then met "connection refused").
#[tokio::test(flavor = "multi_thread")]
async fn a_small_inherited_thread_stack_does_not_take_the_service_down() {
    let mut service = Service::start(Options {
        extra_env: vec![("RUST_MIN_STACK".into(), (256 * 1024).to_string())],
        ..Options::default()
    })
    .await;
    for user in USERS {
        service.send(0, user, &format!("hello from {user}"));
    }
    for user in USERS {
        service
            .wait_for_message(0, user, |t| t.starts_with("You said: hello from"))
            .await;
    }
    assert_eq!(service.get("/readyz").await.0, 200);
    assert_eq!(service.stop().await, Some(0));
}
