//! The monitors against a real store: ticks, crash detection, retention, history
//! bounds, and alert notices reaching a stand-in Bot API and webhook.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentlab::breaker::Circuits;
use agentlab::clock::{Clock, ManualClock};
use agentlab::config::{BotConfig, Config};
use agentlab::monitor::availability::EndCause;
use agentlab::monitor::notify::Targets;
use agentlab::monitor::series::{history_from_store, prune_expired};
use agentlab::monitor::{Monitor, MonitorContext, run_notifier};
use agentlab::shutdown::Shutdown;
use agentlab::status::{Started, TelegramLinks};
use agentlab::storage::{AlertState, Sample, SeriesResolution, Store, StoreOptions};
use agentlab::worker::{Pool, pool_events};
use tempfile::TempDir;
use tokio::sync::mpsc;

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;
/// An hour boundary, so rollup buckets line up with the test's days.
const T0: u64 = 486_112 * HOUR;

struct Service {
    ctx: Arc<MonitorContext>,
    clock: Arc<ManualClock>,
    _dir: TempDir,
}

fn service_with(dir: TempDir, config: Config, started_ms: u64) -> Service {
    let store =
        Store::open(&dir.path().join("agentlab.redb"), StoreOptions::default()).expect("store");
    let config = Arc::new(config);
    let bot_ids: Vec<String> = config.bots.iter().map(|b| b.id.clone()).collect();
    let circuits = Circuits::load(&store, &bot_ids, &config.breaker);
    let (events, _) = pool_events();
    let pool = Pool::new(config.clone(), store.clone(), circuits.clone(), events);
    let ctx = Arc::new(MonitorContext {
        links: TelegramLinks::new(bot_ids.iter().map(String::as_str)),
        started: Started::at(std::time::Instant::now(), started_ms),
        shutdown: Shutdown::new(),
        monitor: Default::default(),
        offsite: Default::default(),
        config,
        store,
        circuits,
        pool,
    });
    Service {
        ctx,
        clock: Arc::new(ManualClock::new(started_ms)),
        _dir: dir,
    }
}

fn quiet_config(dir: &TempDir) -> Config {
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    // The test machine's disk may be nearly full: keep disk_full out of the way.
    config.alerts.disk_used_ratio = 1.0;
    config
}

async fn start(service: &Service) -> Monitor {
    let clock: Arc<dyn Clock> = service.clock.clone();
    Monitor::start(service.ctx.clone(), clock)
        .await
        .expect("monitor starts")
}

#[tokio::test]
async fn a_tick_writes_every_monitor_to_the_store_and_the_snapshot() {
    let dir = TempDir::new().expect("tempdir");
    let config = quiet_config(&dir);
    let service = service_with(dir, config, T0);
    let mut monitor = start(&service).await;
    let snapshot = monitor.tick().await.expect("tick");
    assert!(
        snapshot.samples_written >= 15,
        "{}",
        snapshot.samples_written
    );
    let names: Vec<String> = service.ctx.store.series_names().expect("names");
    for expected in [
        "process_rss_bytes{proc=\"service\"}",
        "queue_depth",
        "failures_per_min",
        "service_up",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    assert_eq!(
        service.ctx.store.last_heartbeat().expect("heartbeat"),
        Some(T0)
    );
    let json = serde_json::to_value(&*snapshot).expect("snapshot serializes");
    for key in [
        "processes",
        "leak",
        "api",
        "queue",
        "failures",
        "availability",
        "anomalies",
        "open_alerts",
    ] {
        assert!(json.get(key).is_some(), "{key} missing");
    }
    let own = snapshot.processes.iter().find(|p| p.role == "service");
    assert!(
        own.is_some_and(|p| p.rss_bytes > 0),
        "{:?}",
        snapshot.processes
    );
}

#[tokio::test]
async fn a_kill_minus_9_shows_as_a_crash_and_uptime_accounts_for_the_gap() {
    let dir = TempDir::new().expect("tempdir");
    let config = quiet_config(&dir);
    let restart_at = T0 + 12 * HOUR;
    {
        // The first run: started, heartbeats until T0 + 10 h, then killed (no stop event).
        let store =
            Store::open(&dir.path().join("agentlab.redb"), StoreOptions::default()).expect("store");
        store
            .append_event("service_started", None, serde_json::json!({}), T0)
            .await
            .expect("start");
        for h in 0..=10 {
            let sample = (
                "service_up".to_string(),
                Sample {
                    at_ms: T0 + h * HOUR,
                    value: 1.0,
                },
            );
            store
                .append_samples_with_heartbeat(vec![sample], T0 + h * HOUR)
                .await
                .expect("heartbeat");
        }
        tokio::task::spawn_blocking(move || store.close())
            .await
            .expect("close");
    }
    let service = service_with(dir, config, restart_at);
    service
        .ctx
        .store
        .append_event("service_started", None, serde_json::json!({}), restart_at)
        .await
        .expect("start");
    let mut monitor = start(&service).await;
    let crashed = service
        .ctx
        .store
        .recent_events(Some("service_crashed"), 10)
        .expect("events");
    assert_eq!(crashed.len(), 1);
    service.clock.advance(Duration::from_millis(12 * HOUR));
    let snapshot = monitor.tick().await.expect("tick");
    let a = &snapshot.availability;
    assert!((a.uptime_24h - 22.0 / 24.0 * 100.0).abs() < 0.01, "{a:?}");
    assert_eq!(a.restarts.len(), 1);
    assert_eq!(a.restarts[0].cause, EndCause::CrashOrKill);
    assert_eq!(a.restarts[0].end_ms, T0 + 10 * HOUR);
    // A second monitor start in the same run records no second crash.
    drop(start(&service).await);
    assert_eq!(
        service
            .ctx
            .store
            .recent_events(Some("service_crashed"), 10)
            .expect("events")
            .len(),
        1
    );
}

#[tokio::test]
async fn retention_prunes_exactly_what_is_older_than_the_limit() {
    let dir = TempDir::new().expect("tempdir");
    let store =
        Store::open(&dir.path().join("agentlab.redb"), StoreOptions::default()).expect("store");
    let now = T0 + 10 * DAY;
    // Every 10 minutes for 10 days, one append per hour.
    for hour in 0..240 {
        let batch: Vec<(String, Sample)> = (0..6)
            .map(|i| {
                let at_ms = T0 + hour * HOUR + i * 600_000;
                (
                    "x".to_string(),
                    Sample {
                        at_ms,
                        value: at_ms as f64,
                    },
                )
            })
            .collect();
        store.append_samples(batch).await.expect("append");
    }
    let raw_cut = now - 7 * DAY;
    let expected = (0..1440u64).filter(|i| T0 + i * 600_000 >= raw_cut).count();
    prune_expired(&store, now, 7, 8).await.expect("prune");
    let kept = store.series_range("x", 0, u64::MAX).expect("range");
    assert_eq!(kept.len(), expected);
    assert!(kept.iter().all(|s| s.at_ms >= raw_cut));
    let minutes = store
        .series_rollups("x", 0, u64::MAX, SeriesResolution::Minute)
        .expect("minutes");
    assert!(minutes.iter().all(|p| p.at_ms >= raw_cut));
    assert_eq!(minutes.len(), expected);
    let hours = store
        .series_rollups("x", 0, u64::MAX, SeriesResolution::Hour)
        .expect("hours");
    assert_eq!(
        hours.first().map(|p| p.at_ms),
        Some(
            (now - 8 * DAY) / HOUR * HOUR
                + if (now - 8 * DAY).is_multiple_of(HOUR) {
                    0
                } else {
                    HOUR
                }
        )
    );
    assert!(hours.iter().all(|p| p.at_ms >= now - 8 * DAY));
}

#[tokio::test]
async fn a_30_day_history_query_returns_rolled_up_points_within_the_bound() {
    let dir = TempDir::new().expect("tempdir");
    let store =
        Store::open(&dir.path().join("agentlab.redb"), StoreOptions::default()).expect("store");
    for day in 0..30u64 {
        let batch: Vec<(String, Sample)> = (0..1440u64)
            .map(|m| {
                (
                    "queue_depth".to_string(),
                    Sample {
                        at_ms: T0 + day * DAY + m * 60_000,
                        value: (m % 60) as f64,
                    },
                )
            })
            .collect();
        store.append_samples(batch).await.expect("append");
    }
    let history =
        history_from_store(&store, "queue_depth", T0, T0 + 30 * DAY, None).expect("history");
    assert_eq!(history.resolution, SeriesResolution::Hour);
    let (_, points) = &history.series[0];
    assert_eq!(points.len(), 720);
    assert!(points.len() <= agentlab::monitor::MAX_HISTORY_POINTS);
    assert!(
        points.iter().all(|p| p.count == 60
            && p.min == 0.0
            && p.max == 59.0
            && (p.value - 29.5).abs() < 1e-9)
    );
}

/// What the stand-in Bot API and webhook received.
#[derive(Default)]
struct Received {
    telegram: Vec<serde_json::Value>,
    webhook: Vec<serde_json::Value>,
}

async fn stand_in(received: Arc<Mutex<Received>>) -> String {
    use axum::Json;
    use axum::extract::{Path, State};
    use axum::routing::post;
    async fn send(
        State(r): State<Arc<Mutex<Received>>>,
        Path((_bot, method)): Path<(String, String)>,
        Json(body): Json<serde_json::Value>,
    ) -> Json<serde_json::Value> {
        assert!(method.eq_ignore_ascii_case("sendMessage"), "{method}");
        r.lock().expect("lock").telegram.push(body);
        Json(serde_json::json!({"ok": true, "result": {}}))
    }
    async fn hook(
        State(r): State<Arc<Mutex<Received>>>,
        Json(body): Json<serde_json::Value>,
    ) -> &'static str {
        r.lock().expect("lock").webhook.push(body);
        "ok"
    }
    let app = axum::Router::new()
        .route("/{bot}/{method}", post(send))
        .route("/hook", post(hook))
        .with_state(received);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{addr}")
}

#[tokio::test]
async fn notifications_reach_the_admin_chat_and_the_webhook_once_per_transition() {
    let received = Arc::new(Mutex::new(Received::default()));
    let base = stand_in(received.clone()).await;
    let dir = TempDir::new().expect("tempdir");
    let mut config = quiet_config(&dir);
    let token_env = "AGENTLAB_TEST_MONITOR_TOKEN";
    // SAFETY: set once, before anything in this binary reads it; no other test uses it.
    unsafe { std::env::set_var(token_env, "123456:monitor-test-secret") };
    config.bots = vec![BotConfig {
        id: "b1".into(),
        token_env: token_env.into(),
        api_url: base.clone(),
        admins: vec![42],
        ..BotConfig::default()
    }];
    config.alerts.webhook_url = format!("{base}/hook");
    config.alerts.bot_down_for_s = 20;
    let service = service_with(dir, config, T0);
    let mut monitor = start(&service).await;
    let (tx, rx) = mpsc::channel(16);
    monitor.set_notices(tx);
    let targets = Targets::from_config(&service.ctx.config);
    let notifier = tokio::spawn(run_notifier(targets, rx));

    let link = service.ctx.links.get("b1").expect("link").clone();
    let bot_down = |r: &Received| -> (usize, usize) {
        let t = r
            .telegram
            .iter()
            .filter(|m| m["text"].as_str().is_some_and(|t| t.contains("bot_down")))
            .count();
        let w = r.webhook.iter().filter(|m| m["rule"] == "bot_down").count();
        (t, w)
    };
    // Polling fails for 10 s: shorter than `for`, nothing is sent.
    link.consecutive_failures.store(3, Ordering::SeqCst);
    monitor.tick().await.expect("tick");
    service.clock.advance(Duration::from_secs(10));
    link.consecutive_failures.store(0, Ordering::SeqCst);
    monitor.tick().await.expect("tick");
    // Then for 40 s: fires once, then resolves once.
    link.consecutive_failures.store(5, Ordering::SeqCst);
    for _ in 0..5 {
        service.clock.advance(Duration::from_secs(10));
        monitor.tick().await.expect("tick");
    }
    link.consecutive_failures.store(0, Ordering::SeqCst);
    for _ in 0..3 {
        service.clock.advance(Duration::from_secs(10));
        monitor.tick().await.expect("tick");
    }
    drop(monitor);
    notifier
        .await
        .expect("notifier ends when the monitor is gone");
    let r = received.lock().expect("lock");
    assert_eq!(
        bot_down(&r),
        (2, 2),
        "telegram {:?} webhook {:?}",
        r.telegram,
        r.webhook
    );
    assert!(r.telegram.iter().all(|m| m["chat_id"] == 42));
    let events: Vec<&str> = r
        .webhook
        .iter()
        .filter(|m| m["rule"] == "bot_down")
        .filter_map(|m| m["event"].as_str())
        .collect();
    assert_eq!(events, vec!["fired", "resolved"]);
    let alerts = service.ctx.store.list_alerts(None, 100).expect("alerts");
    let fired: Vec<_> = alerts
        .iter()
        .filter(|a| a.rule == "bot_down" && a.fired_ms.is_some())
        .collect();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].state, AlertState::Resolved);
}
