//! The start-up barrier and the shutdown of `agentlab run`.
//!
//! Order (`docs/ARCHITECTURE.md`): configuration (done by the caller) → store (with automatic
//! restore of a corrupt file) → recovery of tasks left running → worker pool,
//! monitors, backups → HTTP (not ready yet) → restart notices → ready, Telegram
//! polling. A prompt is a stored task before it is acknowledged, so whatever arrives
//! during start-up waits in Telegram or in the store, never only in memory.
//!
//! Shutdown, on every path (signal, `/restart`, an error after the store opened):
//! stop taking updates, let in-flight writes finish, detach the agents (they keep
//! running and are adopted next time), stop HTTP, then close the store.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::task::JoinSet;

use crate::backup::Backups;
use crate::bot::{BotContext, BotSet};
use crate::breaker::Circuits;
use crate::config::{Config, MissingToken, secret_from_env};
use crate::http::HttpContext;
use crate::intake::Intake;
use crate::monitor::{MonitorContext, MonitorHandle};
use crate::shutdown::Shutdown;
use crate::status::{Notices, Readiness, Started, TelegramLinks};
use crate::storage::{Store, now_ms};
use crate::worker::{Pool, pool_events, recovery};

/// How `run` was invoked (beyond the configuration).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Shutdown handle to use (the demo keeps one to stop the service).
    pub shutdown: Option<Shutdown>,
    /// Tell systemd when ready (`NOTIFY_SOCKET`), on by default in `run`.
    pub systemd_notify: bool,
    /// Bot tokens given in-process (the demo's simulator), by bot id; other bots'
    /// tokens come from their `token_env` variables.
    pub tokens: BTreeMap<String, String>,
    /// Set to the HTTP server's address once it listens (the demo waits on it: an
    /// address file may be another process's).
    pub bound: Option<Arc<std::sync::OnceLock<SocketAddr>>>,
}

/// Runs the service until shutdown; returns the process exit code.
pub async fn run(config: Config, options: RunOptions) -> anyhow::Result<i32> {
    let config = Arc::new(config);
    let shutdown = options.shutdown.clone().unwrap_or_default();
    let started = Instant::now();
    crate::clock::watch_test_skew();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        bots = config.bots.len(),
        "agentlab starting"
    );
    // 1. Configuration: the bots and their tokens too, so a missing one fails
    //    before anything starts.
    config.require_bots()?;
    let tokens = resolve_tokens(&config, &options.tokens)?;
    crate::backup::remote::key_from_env(&config.backup.remote)?;

    // 2. The store; a corrupt file is moved aside and the newest snapshot restored.
    let opened = crate::backup::open_store_or_restore(&config).context("opening the store")?;
    let store = opened.store.clone();
    // The clock resumes no earlier than the newest stored time: a wall clock set
    // back while the service was down must not reorder or stall the queue.
    match store.newest_event_ms() {
        Ok(Some(newest)) => {
            crate::clock::resume_after(newest);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the newest event time"),
    }
    let base = Base {
        config,
        store: store.clone(),
        shutdown,
        started: Started::at(started, now_ms()),
        tokens,
    };
    let outcome = run_with_store(base, opened.notices, &options).await;
    // Close on every path, error or not.
    store.close();
    tracing::info!("store closed; agentlab stopped");
    outcome
}

/// What start-up has once the store is open, before the parts are built.
struct Base {
    config: Arc<Config>,
    store: Store,
    shutdown: Shutdown,
    started: Started,
    tokens: BTreeMap<String, String>,
}

fn resolve_tokens(
    config: &Config,
    given: &BTreeMap<String, String>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut tokens = BTreeMap::new();
    for bot in &config.bots {
        let token = given
            .get(&bot.id)
            .cloned()
            .or_else(|| secret_from_env(&bot.token_env))
            .ok_or_else(|| MissingToken::of(bot))?;
        tokens.insert(bot.id.clone(), token);
    }
    Ok(tokens)
}

async fn run_with_store(
    base: Base,
    notices: Vec<String>,
    options: &RunOptions,
) -> anyhow::Result<i32> {
    let Base {
        config,
        store,
        shutdown,
        started,
        tokens,
    } = base;
    let bot_ids: Vec<String> = config.bots.iter().map(|b| b.id.clone()).collect();
    let circuits = Circuits::load(&store, &bot_ids, &config.breaker);
    let (events_tx, events_rx) = pool_events();
    let pool = Pool::new(config.clone(), store.clone(), circuits.clone(), events_tx);
    let intake = Intake::new(config.clone(), store.clone(), pool.clone());
    let offsite = crate::backup::remote::offsite::Offsite::new(&config, &store)
        .context("setting up [backup.remote]")?;
    let backups = Backups::new(config.clone(), store.clone(), offsite.clone());
    let readiness = Readiness::new(shutdown.clone());
    let links = TelegramLinks::new(bot_ids.iter().map(String::as_str));
    let monitor = MonitorHandle::default();
    let operator_notices = Notices::default();
    for notice in notices {
        operator_notices.add(notice);
    }
    record_start(&store, started).await;

    let mut tasks: JoinSet<()> = JoinSet::new();
    listen_for_signals(&mut tasks, shutdown.clone());

    // 3. Runs left by the previous process: adopt the live ones, settle the rest.
    let recovered = recovery::recover_running_tasks(&store, &pool)
        .await
        .context("recovering tasks left running")?;
    tracing::info!(
        adopt = recovered.adopt.len(),
        settled = recovered.settled,
        "recovery done"
    );

    // 4. Pool, monitors, backups. Each bot hears of approvals from here on, so
    // what adopted agents' approvals do before the bots start is not lost.
    let approval_news = bot_ids
        .iter()
        .map(|_| pool.approvals().subscribe())
        .collect();
    tasks.spawn(pool.clone().run(recovered.adopt, shutdown.subscribe()));
    let monitor_ctx = MonitorContext {
        config: config.clone(),
        store: store.clone(),
        circuits: circuits.clone(),
        pool: pool.clone(),
        shutdown: shutdown.clone(),
        monitor: monitor.clone(),
        offsite,
        started,
        links: links.clone(),
    };
    crate::monitor::spawn_monitors(&Arc::new(monitor_ctx), &mut tasks);
    backups.spawn(&shutdown, started, &mut tasks);

    // 5. HTTP (answers /readyz 503 until ready).
    let http_ctx = HttpContext {
        config: config.clone(),
        store: store.clone(),
        circuits: circuits.clone(),
        pool: pool.clone(),
        intake: intake.clone(),
        backups: backups.clone(),
        shutdown: shutdown.clone(),
        readiness: readiness.clone(),
        started,
        links: links.clone(),
        notices: operator_notices.clone(),
        monitor,
        admin_token: secret_from_env(&config.http.admin_token_env),
    };
    let addr = crate::http::serve(Arc::new(http_ctx), &mut tasks)
        .await
        .context("starting the HTTP server")?;
    write_addr_file(&config, addr);
    if let Some(bound) = &options.bound {
        let _ = bound.set(addr);
    }

    // 6. Restart notices, then 7. ready and polling.
    let bots = BotSet::connect(BotContext {
        config: config.clone(),
        store: store.clone(),
        circuits,
        pool,
        intake,
        backups,
        shutdown: shutdown.clone(),
        started,
        notices: operator_notices,
        links,
        tokens,
    })
    .context("setting up the Telegram bots")?;
    bots.send_restart_notices().await;
    readiness.set(true);
    if options.systemd_notify {
        crate::systemd::notify_ready();
        crate::systemd::spawn_watchdog_pings(store.clone(), &shutdown, &mut tasks);
    }
    bots.start(events_rx, approval_news, &mut tasks);
    tracing::info!(http = %addr, elapsed_ms = started.elapsed().as_millis() as u64, "agentlab ready");

    shutdown.wait().await;
    tracing::info!(exit_code = shutdown.exit_code(), "shutting down");
    readiness.set(false);
    while tasks.join_next().await.is_some() {}
    record_stop(&store, &shutdown, started).await;
    remove_addr_file(&config);
    Ok(shutdown.exit_code())
}

fn listen_for_signals(tasks: &mut JoinSet<()>, shutdown: Shutdown) {
    tasks.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot listen for SIGTERM/SIGINT");
            return;
        };
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received"); shutdown.request(0) }
            _ = int.recv() => { tracing::info!("SIGINT received"); shutdown.request(0) }
            _ = shutdown.wait() => {}
        }
    });
}

async fn record_start(store: &Store, started: Started) {
    let payload =
        serde_json::json!({"version": env!("CARGO_PKG_VERSION"), "pid": std::process::id()});
    if let Err(e) = store
        .append_event("service_started", None, payload, started.unix_ms())
        .await
    {
        tracing::warn!(error = %e, "cannot record the start event");
    }
}

async fn record_stop(store: &Store, shutdown: &Shutdown, started: Started) {
    let payload =
        serde_json::json!({"exit_code": shutdown.exit_code(), "uptime_s": started.uptime_s()});
    if let Err(e) = store
        .append_event("service_stopped", None, payload, now_ms())
        .await
    {
        tracing::warn!(error = %e, "cannot record the stop event");
    }
}

/// File where a running service writes its HTTP address (for tests and tools).
pub fn addr_file(config: &Config) -> PathBuf {
    config.data_dir.join("agentlab.addr")
}

fn write_addr_file(config: &Config, addr: SocketAddr) {
    if let Err(e) = std::fs::write(addr_file(config), addr.to_string()) {
        tracing::warn!(error = %e, "cannot write the address file");
    }
}

fn remove_addr_file(config: &Config) {
    let _ = std::fs::remove_file(addr_file(config));
}
