//! The approval benchmark (issue 22): the release `agentlab run` with the
//! binary's test agent, which asks for a tool as Claude Code does
//! (`approve:Bash ...`: a `control_request` on its stdout, then it waits on its
//! stdin), through the Telegram simulator on loopback. One user, one prompt at
//! a time, so every press meets a warm agent waiting for it.
//!
//! - **Press → `control_response` on the agent's stdin**: from just before the
//!   press (the `callback_query` with the Allow button's data) is injected into
//!   the simulator to the moment the test agent reads the answer, both on the
//!   system's real-time clock (the agent notes it on stderr,
//!   `test_agent::RESPONSE_RECEIVED_NOTE`). The target: p99 < 20 ms.
//! - **Press → `answerCallbackQuery`**: to the bot's answer to the press, as the
//!   simulator received it (its clock).
//! - **Baseline, same run — prompt → first `sendMessage`**: from a prompt's
//!   injection to the bot's "Queued as task" message: one update in, one durable
//!   write, one Bot API call out, the same path a press takes without the agent.
//!
//! Run with `cargo build --release && cargo bench --bench approval`.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agentlab::worker::test_agent::RESPONSE_RECEIVED_NOTE;
use common::service::{PATIENCE, Service, SimClock, bench_options, start_in, start_sim};
use common::{Latencies, Table, ms};
use telegram_sim::{SentItem, SentKind, SimHandle};

/// Presses measured.
const PRESSES: usize = 200;
/// Presses before those measured: the first process start, first writes.
const WARM_UP: usize = 5;
const USER: i64 = 1;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

/// One press's timings.
struct Press {
    /// The press's injection, unix ns.
    injected_unix_ns: u128,
    /// Prompt → "Queued" message, on the simulator's clock.
    queued: Duration,
    /// Press → `answerCallbackQuery`, on the simulator's clock.
    answered: Duration,
}

async fn bench() {
    eprintln!("approval bench on {}", common::machine());
    let sim = start_sim().await;
    let clock = SimClock::calibrate(&sim).await;
    eprintln!(
        "simulator clock calibrated to ±{} ms",
        ms(clock.uncertainty)
    );
    let dir = tempfile::tempdir_in(common::bench_dir()).expect("bench dir");
    let options = bench_options(&[("BOT-APPROVE", USER..=USER)], 1);
    let service = start_in(dir, &sim, options).await;

    let mut presses = Vec::with_capacity(PRESSES);
    for n in 0..WARM_UP + PRESSES {
        let press = press_once(&sim, &clock, &service, n).await;
        if n >= WARM_UP {
            presses.push(press);
        }
    }
    let received = received_notes(&service);
    assert_eq!(
        received.len(),
        WARM_UP + PRESSES,
        "one control_response per press"
    );
    let mut to_agent = Latencies::with_capacity(PRESSES);
    let mut answered = Latencies::with_capacity(PRESSES);
    let mut queued = Latencies::with_capacity(PRESSES);
    for (press, at) in presses.iter().zip(&received[WARM_UP..]) {
        let waited = at
            .checked_sub(press.injected_unix_ns)
            .expect("the answer arrives after the press");
        to_agent.push(Duration::from_nanos(
            u64::try_from(waited).unwrap_or(u64::MAX),
        ));
        answered.push(press.answered);
        queued.push(press.queued);
    }
    let mut table = Table::new(&["measure", "n", "p50 ms", "p99 ms", "max ms"]);
    for (label, latencies) in [
        ("press → control_response on the agent's stdin", &to_agent),
        ("press → answerCallbackQuery", &answered),
        ("baseline: prompt → first sendMessage", &queued),
    ] {
        table.row(vec![
            label.into(),
            latencies.len().to_string(),
            ms(latencies.median()),
            ms(latencies.p99()),
            ms(latencies.quantile(1.0)),
        ]);
    }
    let mut service = service;
    service.stop().await;
    table.print();
}

/// Sends prompt `n`, waits for its approval message, presses Allow and waits for
/// the agent's answer.
async fn press_once(sim: &SimHandle, clock: &SimClock, service: &Service, n: usize) -> Press {
    let token = &service.tokens[0];
    let seen = sim.sent(token).expect("sent").last().map_or(0, |i| i.seq);
    let command = format!("echo {n}");
    let prompt_at = clock.at(std::time::Instant::now());
    service.send(0, USER, &format!("approve:Bash {command}"));
    let asked = wait_for(sim, token, seen, |i| {
        i.kind == SentKind::Message && i.reply_markup.is_some()
    })
    .await;
    let queued = wait_for(sim, token, seen, |i| {
        i.kind == SentKind::Message
            && i.plain_text
                .as_deref()
                .is_some_and(|t| t.contains("Queued"))
    })
    .await;
    let data =
        asked.reply_markup.as_ref().expect("buttons")["inline_keyboard"][0][0]["callback_data"]
            .as_str()
            .expect("the Allow button's data")
            .to_owned();
    let message_id = asked.message_id.expect("the approval's message id");
    let injected_unix_ns = unix_ns();
    let press_at = clock.at(std::time::Instant::now());
    let injected = sim
        .inject_callback(token, USER, USER, message_id, &data)
        .expect("press");
    let answer = wait_for(sim, token, asked.seq, |i| {
        i.kind == SentKind::CallbackAnswer
            && i.callback_query_id.as_deref() == Some(&injected.callback_query_id)
    })
    .await;
    let allowed = format!("Bash was allowed: {command}");
    wait_for(sim, token, asked.seq, |i| {
        i.plain_text
            .as_deref()
            .is_some_and(|t| t.contains(&allowed))
    })
    .await;
    Press {
        injected_unix_ns,
        queued: queued.at.saturating_sub(prompt_at),
        answered: answer.at.saturating_sub(press_at),
    }
}

/// The first item after `seq` that satisfies `pred`, once it is there.
async fn wait_for(
    sim: &SimHandle,
    token: &str,
    seq: u64,
    pred: impl Fn(&SentItem) -> bool,
) -> SentItem {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let sent = sim.sent(token).expect("sent");
        if let Some(item) = sent.into_iter().find(|i| i.seq > seq && pred(i)) {
            return item;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing matched in time"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// When the agents read each `control_response` (unix ns), in order: the notes
/// on the stderr of every agent process, in its run folder.
fn received_notes(service: &Service) -> Vec<u128> {
    let runs = service.data_dir().join("runs");
    let mut times: Vec<u128> = std::fs::read_dir(&runs)
        .expect("runs folder")
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("stderr")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|line| line.strip_prefix(RESPONSE_RECEIVED_NOTE))
                .filter_map(|rest| rest.rsplit(' ').next()?.parse().ok())
                .collect::<Vec<u128>>()
        })
        .collect();
    times.sort_unstable();
    times
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
