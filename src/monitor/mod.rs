//! Monitors and alerts: sample the service into the store's time series, judge
//! what the samples mean, evaluate alert rules and notify admins. They produce
//! data (the [`Snapshot`] of each tick, [`series`] history); the HTTP layer
//! formats it for the observability API and `/metrics` (the layers:
//! `docs/ARCHITECTURE.md`).
//!
//! Layout: [`process`] (memory, CPU, fds; leak detection), [`api_health`]
//! (dependency latency against its baseline), [`queue`] (depth, waits, throughput),
//! [`availability`] (up intervals and uptime %), [`anomaly`] (EWMA z-scores),
//! [`failures`] (classes, co-occurrence, trend), [`conditions`] and [`rules`]
//! (which rules hold; pending → firing → resolved), [`notify`] (Telegram and the
//! webhook), [`series`] (names, retention, history). Each judgement is a pure
//! function of data with the time passed in; [`Monitor`] gathers the data once per
//! tick from its [`MonitorContext`] (the handles it is built from: the store, the
//! pool, the breakers, the offsite uploader, the bots' Telegram links, the start
//! time, the shutdown signal, and the [`MonitorHandle`] it publishes to) and an injectable [`Clock`].
//!
//! Invariants: one tick hands all its samples and the heartbeat to the store in
//! one call (the store buffers them and writes them durably every
//! [`crate::storage::SERIES_FLUSH`], so a crash loses at most that much); alert state changes are stored durably before their notice is queued;
//! notices are delivered by a separate task, so a slow Telegram or webhook never
//! delays a tick; every spawned task ends at shutdown.

pub(crate) mod anomaly;
pub(crate) mod api_health;
pub mod availability;
pub(crate) mod conditions;
pub(crate) mod failures;
pub mod notify;
pub(crate) mod process;
pub(crate) mod queue;
pub(crate) mod rules;
pub mod series;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::instrument;

use crate::backup::remote::offsite::Offsite;
use crate::breaker::{Circuits, State};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::metrics::{self, CallStats};
use crate::shutdown::Shutdown;
use crate::status::{Started, TelegramLinks};
use crate::storage::{Event, Store, StoreError, TaskStatus};
use crate::worker::Pool;

use anomaly::{AnomalyDetector, AnomalyParams};
use api_health::{ApiHealth, DependencyHealth, HealthParams};
use availability::AvailabilityReport;
use conditions::{BotFacts, TickFacts};
use failures::{Failure, FailureLog, FailureParams, FailureReport};
use notify::{Notice, Targets};
use process::{LeakVerdict, ProcessSample, ProcessSampler, RssWindow};
use queue::{QueueEvent, QueueLog, QueueReport};
use rules::{Change, RuleEngine};
pub use series::MAX_HISTORY_POINTS;
pub(crate) use series::{HistoryError, SampleBatch, downsample, series_name};

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
/// Events re-read each tick to catch ones stamped slightly in the past.
const EVENT_OVERLAP_MS: u64 = 30_000;
/// Most events read in one tick (a burst beyond is read over the next ticks).
const EVENTS_PER_TICK: usize = 5_000;
/// Dependencies whose calls [`crate::metrics`] records.
const DEPENDENCIES: [&str; 3] = ["telegram", "agent", "http"];
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
const NOTICE_QUEUE: usize = 256;

/// The latest snapshot of the monitors, shared with the HTTP API.
#[derive(Debug, Clone, Default)]
pub struct MonitorHandle {
    latest: Arc<Mutex<Option<Arc<Snapshot>>>>,
}

impl MonitorHandle {
    /// The snapshot of the last tick, if one ran.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        // A std Mutex: held to clone an Arc, never across an await.
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, snapshot: Snapshot) {
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(snapshot));
    }
}

/// Everything the monitors know after one tick.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// When the tick ran, unix ms.
    pub at_ms: u64,
    /// How long the tick took, microseconds.
    pub tick_us: u64,
    /// The service and each running agent.
    pub processes: Vec<ProcessSample>,
    /// The leak detector's verdict.
    pub leak: LeakVerdict,
    /// Each dependency's health.
    pub api: BTreeMap<String, DependencyHealth>,
    /// Two or more dependencies degraded together.
    pub cascading: bool,
    /// Queue analytics.
    pub queue: QueueReport,
    /// Failure analysis.
    pub failures: FailureReport,
    /// Uptime and restarts.
    pub availability: AvailabilityReport,
    /// The latest anomaly verdict of each key series.
    pub anomalies: BTreeMap<String, anomaly::AnomalyVerdict>,
    /// The facts the rules looked at.
    pub facts: TickFacts,
    /// Open (pending or firing) alerts.
    pub open_alerts: Vec<crate::storage::Alert>,
    /// Samples written by the tick.
    pub samples_written: usize,
}

/// The handles the monitors are built from.
pub struct MonitorContext {
    /// The configuration (`monitor`, `alerts`, the bots, `limits`).
    pub config: Arc<Config>,
    /// The store the samples go to.
    pub store: Store,
    /// The circuit breakers (their states are sampled; their timer ticks here).
    pub circuits: Circuits,
    /// The worker pool (busy workers).
    pub pool: Pool,
    /// The shutdown signal.
    pub shutdown: Shutdown,
    /// Where each tick's snapshot is published.
    pub monitor: MonitorHandle,
    /// The offsite uploader (its breaker feeds a rule).
    pub offsite: Offsite,
    /// When the process started.
    pub started: Started,
    /// Each bot's Telegram link (the `bot_down` rule reads it).
    pub links: TelegramLinks,
}

impl MonitorContext {
    /// Seconds since start.
    pub fn uptime_s(&self) -> u64 {
        self.started.uptime_s()
    }
}

impl Snapshot {
    /// The periods of `[from_ms, to_ms]` when the service was not running, as this
    /// tick's availability report knows them.
    pub fn down_periods(&self, from_ms: u64, to_ms: u64) -> Vec<availability::DownPeriod> {
        let report = &self.availability;
        let mut runs = report.restarts.clone();
        runs.push(availability::UpInterval {
            start_ms: report.current_start_ms,
            end_ms: self.at_ms.max(report.current_start_ms),
            cause: availability::EndCause::Running,
            exit_code: None,
        });
        availability::down_periods(&runs, from_ms, to_ms)
    }
}

/// The monitors' state between ticks.
pub struct Monitor {
    ctx: Arc<MonitorContext>,
    clock: Arc<dyn Clock>,
    sampler: ProcessSampler,
    rss: RssWindow,
    api: ApiHealth,
    anomalies: AnomalyDetector,
    failures: FailureLog,
    queue: QueueLog,
    lifecycle: Vec<Event>,
    rules: RuleEngine,
    seen_events: BTreeSet<(u64, u32)>,
    events_from_ms: u64,
    notices: Option<mpsc::Sender<Notice>>,
}

impl Monitor {
    /// A monitor over `ctx` with its state rebuilt from the store: the last 25 h of
    /// events, this process's memory samples, the open alerts; and a crash of
    /// the previous run recorded (call before the first tick writes a heartbeat).
    pub async fn start(
        ctx: Arc<MonitorContext>,
        clock: Arc<dyn Clock>,
    ) -> Result<Monitor, StoreError> {
        let now = clock.wall_ms();
        let store = &ctx.store;
        let open = store.open_alerts()?;
        let mut monitor = Monitor {
            rules: RuleEngine::new(&ctx.config.alerts, open),
            clock,
            sampler: ProcessSampler::new(),
            rss: RssWindow::default(),
            api: ApiHealth::default(),
            anomalies: AnomalyDetector::default(),
            failures: FailureLog::default(),
            queue: QueueLog::default(),
            lifecycle: Vec::new(),
            seen_events: BTreeSet::new(),
            events_from_ms: now.saturating_sub(failures::KEPT_MS),
            notices: None,
            ctx,
        };
        monitor.load_lifecycle(now)?;
        monitor.record_crash(now).await?;
        // This process's samples only (see `RssWindow`): none unless the monitor
        // is started again within the same process.
        let window_ms = monitor.leak_window_ms();
        let since = now
            .saturating_sub(window_ms)
            .max(monitor.ctx.started.unix_ms());
        let rss_name = series_name("process_rss_bytes", &[("proc", "service")]);
        for s in monitor.ctx.store.series_range(&rss_name, since, now)? {
            monitor.rss.push(s.at_ms, s.value, window_ms);
        }
        Ok(monitor)
    }

    /// Sends notices to `tx` (without it they are only stored).
    pub fn set_notices(&mut self, tx: mpsc::Sender<Notice>) {
        self.notices = Some(tx);
    }

    fn leak_window_ms(&self) -> u64 {
        self.ctx.config.monitor.leak_window_hours * HOUR_MS
    }

    fn load_lifecycle(&mut self, now: u64) -> Result<(), StoreError> {
        // Events are keyed by time only, so the 30 days are read once here; later
        // lifecycle events arrive through the tick's event cursor.
        let mut from = now.saturating_sub(30 * DAY_MS);
        loop {
            let batch = self.ctx.store.events_between(from, now + 1, 10_000)?;
            let full = batch.len() == 10_000;
            let last = batch.last().map(|e| e.at_ms);
            self.lifecycle
                .extend(batch.into_iter().filter(|e| e.kind.starts_with("service_")));
            match last {
                Some(at) if full && at > from => from = at,
                _ => break,
            }
        }
        self.lifecycle.dedup_by_key(|e| (e.at_ms, e.seq));
        Ok(())
    }

    async fn record_crash(&mut self, now: u64) -> Result<(), StoreError> {
        let heartbeat = self.ctx.store.last_heartbeat()?;
        let Some((run_start, last_heartbeat)) =
            availability::detect_crash(&self.lifecycle, self.ctx.started.unix_ms(), heartbeat)
        else {
            return Ok(());
        };
        tracing::warn!(
            run_started_ms = run_start,
            last_heartbeat_ms = last_heartbeat,
            "the previous run ended without a clean stop"
        );
        let payload =
            serde_json::json!({"run_started_ms": run_start, "last_heartbeat_ms": last_heartbeat});
        // Stamped just before the current start so the history reads in order.
        let at = self
            .ctx
            .started
            .unix_ms()
            .saturating_sub(1)
            .max(last_heartbeat);
        self.ctx
            .store
            .append_event("service_crashed", None, payload.clone(), at)
            .await?;
        let position = self.lifecycle.partition_point(|e| e.at_ms <= at);
        self.lifecycle.insert(
            position,
            Event {
                at_ms: at,
                seq: 0,
                kind: "service_crashed".into(),
                bot_id: None,
                payload_json: payload.to_string(),
            },
        );
        let _ = now;
        Ok(())
    }

    /// One round of every monitor: sample, judge, store, evaluate the rules.
    #[instrument(skip_all, fields(samples, changes))]
    pub async fn tick(&mut self) -> Result<Arc<Snapshot>, StoreError> {
        let started = std::time::Instant::now();
        let now = self.clock.wall_ms();
        let ctx = self.ctx.clone();
        let config = &ctx.config;
        let mut batch = SampleBatch::new(now);

        // Processes.
        let agents: Vec<(u32, u64)> = ctx
            .store
            .tasks_in_status(TaskStatus::Running)?
            .into_iter()
            .filter_map(|t| t.pid.map(|pid| (pid, t.id)))
            .collect();
        let processes = self.sampler.sample(&agents);
        write_process_samples(&mut batch, &processes);
        let own = processes.iter().find(|p| p.role == "service");
        if let Some(own) = own {
            self.rss
                .push(now, own.rss_bytes as f64, self.leak_window_ms());
        }
        let leak = process::assess_leak(&self.rss.samples(), &config.monitor);
        // Idle warm agents (kept for their session's next prompt) are no task's.
        let (warm_count, warm_rss) = ctx.pool.warm_usage();
        batch.push("agent_warm_processes", &[], warm_count as f64);
        batch.push("agent_warm_rss_bytes", &[], warm_rss as f64);

        // Dependencies.
        let totals: Vec<(String, CallStats)> = DEPENDENCIES
            .iter()
            .map(|d| (d.to_string(), metrics::dependency_totals(d)))
            .filter(|(_, s)| s.calls > 0)
            .collect();
        let health_params = HealthParams {
            factor: config.monitor.api_degraded_factor,
            degraded_for_ms: config.monitor.api_degraded_for_s * 1000,
        };
        self.api.update(&totals, now, &health_params);
        let api = self.api.report();
        for (dep, h) in &api {
            let labels = [("dep", dep.as_str())];
            batch.push("api_calls", &labels, h.calls as f64);
            batch.push("api_error_rate", &labels, h.error_rate);
            batch.push("api_timeouts", &labels, h.timeouts as f64);
            if let Some(p95) = h.p95_ms {
                batch.push("api_p95_ms", &labels, p95);
            }
        }

        // Events: failures, queue movements, lifecycle.
        let fresh = self.read_new_events(now)?;
        let mut waits: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut runs: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for event in &fresh {
            if let Some(f) = Failure::from_event(event) {
                self.failures.push(f, now);
            }
            if let Some(q) = QueueEvent::from_event(event) {
                match &q {
                    QueueEvent::Started { kind, wait_ms, .. } => {
                        add_mean(&mut waits, kind, *wait_ms)
                    }
                    QueueEvent::Finished {
                        kind,
                        run_ms: Some(r),
                        ..
                    } => add_mean(&mut runs, kind, *r),
                    QueueEvent::Finished { .. } => {}
                }
                self.queue.push(q, now);
            }
            let known = |e: &Event| e.at_ms == event.at_ms && e.kind == event.kind;
            if event.kind.starts_with("service_") && !self.lifecycle.iter().rev().take(4).any(known)
            {
                let at = self.lifecycle.partition_point(|e| e.at_ms <= event.at_ms);
                self.lifecycle.insert(at, event.clone());
            }
        }
        let failure_params = FailureParams {
            window_ms: config.monitor.cooccurrence_window_s * 1000,
            cascade_min_per_hour: config.alerts.cascade_min_failures_per_hour,
            rising_factor: config.alerts.cascade_rising_factor,
        };
        let failure_report = self.failures.analyze(now, &failure_params);
        batch.push("failures_per_min", &[], failure_report.last_minute as f64);
        batch.push("failures_last_hour", &[], failure_report.last_hour as f64);

        let depth_by_bot: BTreeMap<String, u64> =
            ctx.store.queue_depth_by_bot()?.into_iter().collect();
        let queue_report =
            self.queue
                .analyze(now, depth_by_bot, ctx.pool.busy(), ctx.pool.workers());
        batch.push("queue_depth", &[], queue_report.depth as f64);
        for (bot, depth) in &queue_report.depth_by_bot {
            batch.push("queue_depth", &[("bot", bot)], *depth as f64);
        }
        batch.push("workers_busy", &[], queue_report.busy_workers as f64);
        batch.push(
            "throughput_per_min",
            &[],
            queue_report.throughput_per_min as f64,
        );
        for (kind, (sum, n)) in &waits {
            batch.push("task_wait_ms", &[("kind", kind)], *sum as f64 / *n as f64);
        }
        for (kind, (sum, n)) in &runs {
            batch.push("task_run_ms", &[("kind", kind)], *sum as f64 / *n as f64);
        }
        let percentiles = self.queue.p95_by_kind(now, queue::P95_WINDOW_MS);
        for (kind, p95) in &percentiles.wait_ms {
            batch.push("task_wait_p95_ms", &[("kind", kind)], *p95 as f64);
        }
        for (kind, p95) in &percentiles.run_ms {
            batch.push("task_run_p95_ms", &[("kind", kind)], *p95 as f64);
        }

        // Availability.
        let availability_report = availability::report(&self.lifecycle, now);
        batch.push("service_up", &[], 1.0);
        batch.push("uptime_24h_pct", &[], availability_report.uptime_24h);

        // Anomalies of the key series.
        let params = AnomalyParams {
            alpha: config.monitor.anomaly_alpha,
            z: config.monitor.anomaly_z,
            warmup: config.monitor.anomaly_warmup_samples,
        };
        if let Some(own) = own {
            self.anomalies.observe(
                "process_rss_mb",
                own.rss_bytes as f64 / 1_048_576.0,
                16.0,
                &params,
            );
        }
        self.anomalies.observe(
            "failures_per_min",
            failure_report.last_minute as f64,
            1.0,
            &params,
        );
        for (dep, h) in &api {
            if let Some(p95) = h.p95_ms
                && h.calls >= api_health::MIN_CALLS
            {
                self.anomalies
                    .observe(&format!("{dep}_p95_ms"), p95, 25.0, &params);
            }
        }
        for (kind, (sum, n)) in &runs {
            self.anomalies.observe(
                &format!("task_run_ms_{kind}"),
                *sum as f64 / *n as f64,
                1000.0,
                &params,
            );
        }

        // Facts for the rules.
        let now_bots = self.bot_facts(now);
        for bot in &now_bots {
            batch.push(
                "bot_poll_failures",
                &[("bot", &bot.id)],
                bot.consecutive_failures as f64,
            );
            batch.push("cost_today_usd", &[("bot", &bot.id)], bot.cost_today_usd);
        }
        let disk = process::filesystem_used_ratio(&config.data_dir);
        if let Some(d) = disk {
            batch.push("disk_used_ratio", &[], d);
        }
        let backup_age_hours = ctx
            .store
            .last_backup()?
            .map(|b| now.saturating_sub(b.taken_ms) as f64 / HOUR_MS as f64);
        let mut open_circuits: Vec<String> = ctx
            .circuits
            .snapshots()
            .into_iter()
            .filter(|(_, _, s)| s.state == State::Open)
            .map(|(bot, dep, _)| format!("{bot}/{}", dep.as_str()))
            .collect();
        if ctx.offsite.circuit_open() {
            open_circuits.push(format!(
                "{}/{}",
                crate::breaker::SERVICE_BOT_ID,
                crate::backup::remote::offsite::DEPENDENCY
            ));
        }
        let offsite_age_s = ctx
            .offsite
            .report(now)
            .and_then(|r| r.age_s.map(|age| (age, r.stale_after_s)));
        let facts = TickFacts {
            bots: now_bots,
            daily_cost_limit_usd: config.limits.daily_cost_usd,
            failures_last_minute: failure_report.last_minute,
            queue_depth: queue_report.depth,
            disk_used_ratio: disk,
            leak: leak
                .mb_per_hour
                .zip(leak.r2)
                .map(|(mb_per_hour, r2)| (leak.suspected, mb_per_hour, r2)),
            fd_ratios: processes
                .iter()
                .filter_map(|p| {
                    let label = match p.task_id {
                        Some(task) => format!("agent of task {task}"),
                        None => "service".to_string(),
                    };
                    p.fd_ratio().map(|r| (label, r))
                })
                .collect(),
            open_circuits,
            backup_age_hours,
            offsite_age_s,
            failure_cascade: (
                failure_report.cascade_risk,
                failure_report.last_hour,
                failure_report.previous_per_hour,
            ),
            degraded_dependencies: self.api.degraded(),
            anomalies: self
                .anomalies
                .latest()
                .iter()
                .filter(|(_, v)| v.anomalous)
                .map(|(name, v)| (name.clone(), v.value, v.mean, v.z))
                .collect(),
        };

        // Rules.
        let holding = conditions::conditions(&facts, &config.alerts, &config.monitor);
        let changes = self.rules.evaluate(&holding, now);
        tracing::Span::current().record("changes", changes.len());
        self.apply_changes(changes).await?;
        let open_alerts = self.rules.open_alerts();
        batch.push(
            "alerts_firing",
            &[],
            open_alerts
                .iter()
                .filter(|a| a.state == crate::storage::AlertState::Firing)
                .count() as f64,
        );

        let samples = batch.len();
        tracing::Span::current().record("samples", samples);
        ctx.store
            .append_samples_with_heartbeat(batch.into_samples(), now)
            .await?;

        let snapshot = Snapshot {
            at_ms: now,
            tick_us: started.elapsed().as_micros() as u64,
            processes,
            leak,
            cascading: self.api.cascading(),
            api,
            queue: queue_report,
            failures: failure_report,
            availability: availability_report,
            anomalies: self.anomalies.latest().clone(),
            facts,
            open_alerts,
            samples_written: samples,
        };
        ctx.monitor.set(snapshot);
        Ok(ctx
            .monitor
            .latest()
            .unwrap_or_else(|| unreachable_snapshot(now)))
    }

    fn bot_facts(&self, now: u64) -> Vec<BotFacts> {
        use std::sync::atomic::Ordering::Relaxed;
        self.ctx
            .links
            .iter()
            .map(|(id, link)| BotFacts {
                id: id.clone(),
                consecutive_failures: link.consecutive_failures.load(Relaxed),
                last_poll_ok_ms: link.last_poll_ok_ms.load(Relaxed),
                cost_today_usd: self
                    .ctx
                    .store
                    .cost_today(id, now)
                    .map(|c| c.usd)
                    .unwrap_or(0.0),
            })
            .collect()
    }

    fn read_new_events(&mut self, now: u64) -> Result<Vec<Event>, StoreError> {
        let from = self.events_from_ms;
        let events = self
            .ctx
            .store
            .events_between(from, now + 1, EVENTS_PER_TICK)?;
        let full = events.len() == EVENTS_PER_TICK;
        let fresh: Vec<Event> = events
            .into_iter()
            .filter(|e| self.seen_events.insert((e.at_ms, e.seq)))
            .collect();
        // Next time, re-read the overlap (events may be stamped a little in the
        // past); when the read was cut short, go on from where it stopped.
        self.events_from_ms = match (full, fresh.last()) {
            (true, Some(last)) => last.at_ms,
            _ => now.saturating_sub(EVENT_OVERLAP_MS).max(from),
        };
        let keep_from = self.events_from_ms;
        self.seen_events = self.seen_events.split_off(&(keep_from, 0));
        Ok(fresh)
    }

    /// Stores each alert change durably, then queues its notice.
    async fn apply_changes(&mut self, changes: Vec<Change>) -> Result<(), StoreError> {
        for change in changes {
            let id = self.ctx.store.upsert_alert(change.alert.clone()).await?;
            let mut alert = change.alert;
            if alert.id == 0 {
                alert.id = id;
                self.rules.set_id(&alert.rule, &alert.subject, id);
            }
            tracing::info!(rule = %alert.rule, subject = %alert.subject, state = alert.state.as_str(), "alert state changed");
            if let (Some(announce), Some(tx)) = (change.announce, &self.notices)
                && tx.try_send(Notice { announce, alert }).is_err()
            {
                tracing::warn!("alert notice queue full; notice dropped (the alert is stored)");
            }
        }
        Ok(())
    }
}

fn unreachable_snapshot(now: u64) -> Arc<Snapshot> {
    // The snapshot was just set; this only satisfies the type without a panic.
    Arc::new(Snapshot {
        at_ms: now,
        tick_us: 0,
        processes: Vec::new(),
        leak: process::assess_leak(&[], &Default::default()),
        api: BTreeMap::new(),
        cascading: false,
        queue: QueueReport::default(),
        failures: FailureLog::default().analyze(
            now,
            &FailureParams {
                window_ms: 0,
                cascade_min_per_hour: 0,
                rising_factor: 2.0,
            },
        ),
        availability: availability::report(&[], now),
        anomalies: BTreeMap::new(),
        facts: TickFacts::default(),
        open_alerts: Vec::new(),
        samples_written: 0,
    })
}

fn add_mean(map: &mut BTreeMap<String, (u64, u64)>, key: &str, value: u64) {
    let entry = map.entry(key.to_string()).or_default();
    entry.0 += value;
    entry.1 += 1;
}

fn write_process_samples(batch: &mut SampleBatch, processes: &[ProcessSample]) {
    let mut agents = (0usize, 0f64, 0f64, 0f64);
    for p in processes {
        if p.role == "service" {
            let labels = [("proc", "service")];
            batch.push("process_rss_bytes", &labels, p.rss_bytes as f64);
            batch.push("process_virtual_bytes", &labels, p.virtual_bytes as f64);
            batch.push("process_cpu_percent", &labels, p.cpu_percent);
            if let Some(t) = p.threads {
                batch.push("process_threads", &labels, t as f64);
            }
            if let Some(fds) = p.open_fds {
                batch.push("process_open_fds", &labels, fds as f64);
            }
            if let Some(limit) = p.fd_limit {
                batch.push("process_fd_limit", &labels, limit as f64);
            }
        } else {
            // Agents come and go: one series for all of them, not one per task.
            agents.0 += 1;
            agents.1 += p.rss_bytes as f64;
            agents.2 += p.cpu_percent;
            agents.3 = agents.3.max(p.open_fds.unwrap_or(0) as f64);
        }
    }
    batch.push("agents_running", &[], agents.0 as f64);
    batch.push("agents_rss_bytes", &[], agents.1);
    batch.push("agents_cpu_percent", &[], agents.2);
    batch.push("agents_max_open_fds", &[], agents.3);
}

/// Starts the monitors: the breaker timer, the sampling tick with its alert
/// notifier, and retention. All end at shutdown.
pub fn spawn_monitors(ctx: &Arc<MonitorContext>, tasks: &mut JoinSet<()>) {
    let breaker_ctx = ctx.clone();
    tasks.spawn(async move {
        let mut shutdown = breaker_ctx.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => breaker_ctx.circuits.tick(),
                _ = shutdown.changed() => break,
            }
        }
    });

    let (notice_tx, notice_rx) = mpsc::channel(NOTICE_QUEUE);
    let targets = Targets::from_config(&ctx.config);
    tasks.spawn(run_notifier(targets, notice_rx));

    let tick_ctx = ctx.clone();
    tasks.spawn(async move {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let mut monitor = match Monitor::start(tick_ctx.clone(), clock).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "monitors cannot start");
                return;
            }
        };
        monitor.set_notices(notice_tx);
        let mut shutdown = tick_ctx.shutdown.subscribe();
        let period = Duration::from_secs(tick_ctx.config.monitor.sample_interval_s.max(1));
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {
                    if let Err(e) = monitor.tick().await {
                        tracing::warn!(error = %e, "monitor tick failed");
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        // Dropping the monitor closes the notice channel; the notifier drains and ends.
    });

    let retention_ctx = ctx.clone();
    tasks.spawn(async move {
        let mut shutdown = retention_ctx.shutdown.subscribe();
        let mut wait = Duration::from_secs(60);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => break,
            }
            wait = RETENTION_EVERY;
            let m = &retention_ctx.config.monitor;
            let now = crate::storage::now_ms();
            match series::prune_expired(
                &retention_ctx.store,
                now,
                m.raw_retention_days,
                m.rollup_retention_days,
            )
            .await
            {
                Ok(rows) => tracing::debug!(rows, "series retention done"),
                Err(e) => tracing::warn!(error = %e, "series retention failed"),
            }
            match series::prune_expired_events(&retention_ctx.store, now, m.rollup_retention_days)
                .await
            {
                Ok(rows) => tracing::debug!(rows, "event retention done"),
                Err(e) => tracing::warn!(error = %e, "event retention failed"),
            }
        }
    });
}

/// Delivers notices one after the other until the channel closes.
pub async fn run_notifier(targets: Targets, mut notices: mpsc::Receiver<Notice>) {
    let client = reqwest::Client::new();
    while let Some(notice) = notices.recv().await {
        let delivery = notify::deliver(&client, &targets, &notice).await;
        tracing::info!(
            rule = %notice.alert.rule,
            telegram_sent = delivery.telegram_sent,
            telegram_failed = delivery.telegram_failed,
            webhook_ok = ?delivery.webhook_ok,
            "alert notice delivered"
        );
    }
}
