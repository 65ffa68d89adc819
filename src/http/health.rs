//! `GET /health`, `/livez`, `/readyz`: is the service alive, ready, healthy?
//!
//! Invariant: every answer comes from state kept current in memory (Telegram
//! links, breakers, the pool) plus O(1) store reads (MVCC: a read never waits for
//! the writer) and one `statvfs`, so health never blocks on a slow dependency.
//! `/health` follows the IETF health-check draft: `status` pass/warn/fail, checks
//! keyed `component:measurement`, 200 for pass/warn and 503 for fail. One computed
//! answer is served again for [`HEALTH_TTL`] (single-flight), so a monitoring
//! system or a load test polling hard costs one document per 100 ms, not one per
//! request.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::AppState;
use crate::storage::{iso8601, now_ms};

/// Content type of the health document (IETF draft).
pub(crate) const HEALTH_CONTENT_TYPE: &str = "application/health+json";
/// A bot with no successful poll for this long is a warning (polls take ≤ 10 s).
const POLL_STALE_MS: u64 = 60_000;
/// Grace after start before a bot that never polled is a warning.
const FIRST_POLL_GRACE_MS: u64 = 60_000;
/// Queue depth from which the worker pool is reported as falling behind.
const QUEUE_WARN_DEPTH: u64 = 100;
/// Free space of the data folder below which health warns / fails.
const DISK_WARN_BYTES: u64 = 1024 * 1024 * 1024;
const DISK_FAIL_BYTES: u64 = 64 * 1024 * 1024;

/// Health of one check or of the whole service; ordered from best to worst.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Status {
    #[default]
    Pass,
    Warn,
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// `GET /livez`: the process answers.
pub(crate) async fn livez() -> Json<Value> {
    Json(json!({"status": "pass"}))
}

/// `GET /readyz`: 503 until the start-up barrier has passed, and during shutdown.
pub(crate) async fn readyz(State(api): State<AppState>) -> Response {
    if api.ctx.is_ready() {
        (StatusCode::OK, Json(json!({"status": "pass"}))).into_response()
    } else {
        let reason = if api.ctx.shutdown.is_requested() {
            "shutting down"
        } else {
            "starting"
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "fail", "reason": reason})),
        )
            .into_response()
    }
}

/// How long one computed health answer is served again.
pub(crate) const HEALTH_TTL: Duration = Duration::from_millis(100);

/// The last health answer and when it was computed.
#[derive(Default)]
pub(crate) struct HealthCache(Mutex<Option<(Instant, StatusCode, Bytes)>>);

impl HealthCache {
    /// The cached answer while younger than [`HEALTH_TTL`], else a fresh one from
    /// `compute`. Never waits for another caller: while one refreshes the cache
    /// (microseconds every 100 ms), the others compute their own answer, so a slow
    /// disk under `statvfs` cannot park every runtime thread on this lock.
    fn get_or_compute(&self, compute: impl FnOnce() -> (StatusCode, Bytes)) -> (StatusCode, Bytes) {
        let mut slot = match self.0.try_lock() {
            Ok(slot) => slot,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return compute(),
        };
        if let Some((at, code, body)) = slot.as_ref()
            && at.elapsed() < HEALTH_TTL
        {
            return (*code, body.clone());
        }
        let (code, body) = compute();
        *slot = Some((Instant::now(), code, body.clone()));
        (code, body)
    }
}

/// `GET /health`
pub(crate) async fn health(State(api): State<AppState>) -> Response {
    let (code, body) = api.health_cache.get_or_compute(|| {
        let (status, doc) = health_document(&api);
        let code = if status == Status::Fail {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        (code, Bytes::from(doc.to_string()))
    });
    (code, [(header::CONTENT_TYPE, HEALTH_CONTENT_TYPE)], body).into_response()
}

/// Collects the checks into one document; also used by `agentlab status`'s tests.
pub(crate) fn health_document(api: &super::Api) -> (Status, Value) {
    let ctx = &api.ctx;
    let now = now_ms();
    let time = iso8601(now);
    let mut checks = Checks::default();
    let mut notes: Vec<String> = ctx.notices.list();

    // Storage: a real read, timed, and a writer that still takes writes.
    let started = Instant::now();
    let depth = ctx.store.queue_depth();
    let read_ms = started.elapsed().as_secs_f64() * 1000.0;
    let writable = ctx.store.is_writable();
    let storage_status = match (&depth, writable) {
        (Ok(_), true) => Status::Pass,
        (Err(e), _) => {
            tracing::error!(error = %e, "health: storage read failed");
            notes.push("the store cannot be read; see the service log".into());
            Status::Fail
        }
        (Ok(_), false) => {
            notes.push("the store no longer accepts writes".into());
            Status::Fail
        }
    };
    checks.add(
        "storage:responseTime",
        storage_status,
        &time,
        json!({
            "componentType": "datastore",
            "observedValue": round3(read_ms),
            "observedUnit": "ms",
        }),
    );

    // Worker pool.
    let busy = ctx.pool.busy();
    let workers = ctx.pool.workers();
    checks.add(
        "worker_pool:utilization",
        Status::Pass,
        &time,
        json!({
            "componentType": "component",
            "observedValue": busy,
            "observedUnit": format!("busy of {workers} workers"),
            "workers": workers,
        }),
    );
    if let Ok(depth) = depth {
        let status = if depth >= QUEUE_WARN_DEPTH {
            Status::Warn
        } else {
            Status::Pass
        };
        checks.add(
            "worker_pool:queueDepth",
            status,
            &time,
            json!({
                "componentType": "component",
                "observedValue": depth,
                "observedUnit": "tasks",
            }),
        );
    }

    // Each bot's Telegram link.
    let uptime_ms = ctx.started.elapsed().as_millis() as u64;
    for (bot_id, link) in &ctx.links {
        let last_ok = link.last_poll_ok_ms.load(Ordering::Relaxed);
        let (age, status) = if last_ok == 0 {
            let status = if uptime_ms > FIRST_POLL_GRACE_MS {
                Status::Warn
            } else {
                Status::Pass
            };
            (Value::Null, status)
        } else {
            let age_ms = now.saturating_sub(last_ok);
            let status = if age_ms > POLL_STALE_MS {
                Status::Warn
            } else {
                Status::Pass
            };
            (json!(age_ms / 1000), status)
        };
        let mut entry = json!({
            "componentId": bot_id,
            "componentType": "system",
            "observedValue": age,
            "observedUnit": "s",
        });
        if let Some(error) = link.last_error().filter(|_| status != Status::Pass) {
            entry["output"] = json!(error);
        }
        checks.add("telegram:lastPollAge", status, &time, entry);
        let conflicting = link.in_conflict.load(Ordering::Relaxed);
        checks.add(
            "telegram:conflicts",
            if conflicting {
                Status::Warn
            } else {
                Status::Pass
            },
            &time,
            json!({
                "componentId": bot_id,
                "componentType": "system",
                "observedValue": link.conflicts.load(Ordering::Relaxed),
                "observedUnit": "409 responses",
            }),
        );
    }

    // Breakers: an open circuit degrades the service, it does not kill it.
    for (bot_id, dependency, snapshot) in ctx.circuits.snapshots() {
        let state = snapshot.state.as_str();
        let status = if state == "closed" {
            Status::Pass
        } else {
            Status::Warn
        };
        checks.add(
            "circuit:state",
            status,
            &time,
            json!({
                "componentId": format!("{bot_id}/{}", dependency.as_str()),
                "componentType": "component",
                "observedValue": state,
                "consecutiveFailures": snapshot.consecutive_failures,
            }),
        );
    }

    // Disk of the data folder.
    if let Some(free) = disk_free_bytes(&ctx.config.data_dir) {
        let status = if free < DISK_FAIL_BYTES {
            Status::Fail
        } else if free < DISK_WARN_BYTES {
            Status::Warn
        } else {
            Status::Pass
        };
        checks.add(
            "disk:free",
            status,
            &time,
            json!({
                "componentType": "system",
                "observedValue": free,
                "observedUnit": "bytes",
            }),
        );
    }

    // Backup age, once there is a backup.
    if let Ok(Some(backup)) = ctx.store.last_backup() {
        let age_s = now.saturating_sub(backup.taken_ms) / 1000;
        let overdue = api
            .backup_interval_ms
            .is_some_and(|interval| now.saturating_sub(backup.taken_ms) > 2 * interval + 300_000);
        let status = if overdue || !backup.verified {
            Status::Warn
        } else {
            Status::Pass
        };
        checks.add(
            "backup:age",
            status,
            &time,
            json!({
                "componentType": "component",
                "observedValue": age_s,
                "observedUnit": "s",
                "verified": backup.verified,
            }),
        );
    }

    // The offsite copies: a warning at worst, the service runs without them.
    if let Some(report) = ctx.offsite().report(now) {
        let status =
            if report.stale || report.circuit != "closed" || report.status.last_error.is_some() {
                Status::Warn
            } else {
                Status::Pass
            };
        checks.add(
            "backup:offsite",
            status,
            &time,
            json!({
                "componentType": "component",
                "componentId": report.url,
                "observedValue": report.age_s,
                "observedUnit": "s",
                "circuit": report.circuit,
                "encrypted": report.encrypted,
                "lastError": report.status.last_error,
                "newest": report.status.newest.as_ref().map(|n| n.object.clone()),
            }),
        );
    }

    checks.add(
        "process:uptime",
        Status::Pass,
        &time,
        json!({
            "componentType": "system",
            "observedValue": ctx.uptime_s(),
            "observedUnit": "s",
        }),
    );

    let status = checks.worst;
    let mut doc = json!({
        "status": status.as_str(),
        "version": env!("CARGO_PKG_VERSION"),
        "releaseId": env!("CARGO_PKG_VERSION"),
        "serviceId": "agentlab",
        "description": "agentlab: an AI coding agent driven from Telegram",
        "uptime_s": ctx.uptime_s(),
        "ready": ctx.is_ready(),
        "checks": Value::Object(checks.map),
    });
    if !notes.is_empty() {
        doc["notes"] = json!(notes);
    }
    (status, doc)
}

#[derive(Default)]
struct Checks {
    map: Map<String, Value>,
    worst: Status,
}

impl Checks {
    fn add(&mut self, key: &str, status: Status, time: &str, mut entry: Value) {
        entry["status"] = json!(status.as_str());
        entry["time"] = json!(time);
        self.worst = self.worst.max(status);
        match self
            .map
            .entry(key.to_string())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(list) => list.push(entry),
            other => *other = Value::Array(vec![entry]),
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Free bytes available to this user on the filesystem holding `dir`.
pub(crate) fn disk_free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a valid NUL-terminated string and `stat` points to writable
    // memory of the right size; statvfs only writes into it.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let stat = unsafe { stat.assume_init() };
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {

    #[test]
    fn one_health_answer_is_served_again_within_its_ttl() {
        let cache = super::HealthCache::default();
        let mut computed = 0;
        let answer = |n: &mut i32| {
            cache.get_or_compute(|| {
                *n += 1;
                (super::StatusCode::OK, super::Bytes::from(n.to_string()))
            })
        };
        assert_eq!(answer(&mut computed).1, "1");
        assert_eq!(answer(&mut computed).1, "1", "recomputed within the TTL");
        std::thread::sleep(super::HEALTH_TTL + std::time::Duration::from_millis(10));
        assert_eq!(
            answer(&mut computed).1,
            "2",
            "stale answer served after the TTL"
        );
    }

    use std::sync::Arc;

    use axum::extract::State;
    use axum::http::StatusCode;
    use serde_json::Value;

    use super::{health, readyz};
    use crate::breaker::{Circuits, Dependency};
    use crate::clock::ManualClock;
    use crate::config::{BotConfig, Config};
    use crate::http::HttpContext;
    use crate::http::{Api, AppState};
    use crate::storage::{Store, StoreOptions};
    use crate::worker::Pool;

    /// A service context over a real temporary store, with one bot, a manual
    /// breaker clock and nothing running.
    fn test_api(dir: &tempfile::TempDir) -> AppState {
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.bots.push(BotConfig {
            id: "BOT-001".into(),
            ..BotConfig::default()
        });
        let config = Arc::new(config);
        let store =
            Store::open(&config.database_path(), StoreOptions::default()).expect("store opens");
        let bots = vec!["BOT-001".to_string()];
        let clock = Arc::new(ManualClock::new(1_760_000_000_000));
        let circuits = Circuits::load_with_clock(&store, &bots, &config.breaker, clock);
        let (events, _) = crate::worker::pool_events();
        let pool = Pool::new(config.clone(), store.clone(), circuits.clone(), events);
        let shutdown = crate::shutdown::Shutdown::new();
        let ctx = HttpContext {
            intake: crate::intake::Intake::new(config.clone(), store.clone(), pool.clone()),
            backups: crate::backup::Backups::new(config.clone(), store.clone(), Default::default()),
            readiness: crate::status::Readiness::new(shutdown.clone()),
            started: crate::status::Started::now(),
            links: crate::status::TelegramLinks::new(bots.iter().map(String::as_str)),
            notices: Default::default(),
            monitor: Default::default(),
            admin_token: None,
            shutdown,
            config,
            store,
            circuits,
            pool,
        };
        Arc::new(Api::new(Arc::new(ctx)))
    }

    async fn body_json(response: axum::response::Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("JSON body")
    }

    #[tokio::test]
    async fn readyz_is_503_until_ready_and_again_during_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = test_api(&dir);
        let starting = readyz(State(api.clone())).await;
        assert_eq!(starting.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body_json(starting).await["reason"], "starting");

        api.ctx.readiness.set(true);
        assert_eq!(readyz(State(api.clone())).await.status(), StatusCode::OK);

        api.ctx.shutdown.request(0);
        let stopping = readyz(State(api.clone())).await;
        assert_eq!(stopping.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body_json(stopping).await["reason"], "shutting down");
        api.ctx.store.close();
    }

    #[tokio::test]
    async fn health_passes_then_warns_while_a_breaker_is_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = test_api(&dir);
        api.ctx
            .links
            .get("BOT-001")
            .expect("link")
            .poll_ok(crate::storage::now_ms());

        let response = health(State(api.clone())).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            super::HEALTH_CONTENT_TYPE
        );
        let doc = body_json(response).await;
        assert_eq!(doc["status"], "pass", "{doc:#}");
        for key in [
            "storage:responseTime",
            "worker_pool:utilization",
            "worker_pool:queueDepth",
            "telegram:lastPollAge",
            "telegram:conflicts",
            "circuit:state",
            "disk:free",
            "process:uptime",
        ] {
            let entry = &doc["checks"][key][0];
            assert!(
                entry["status"].is_string() && entry["time"].is_string(),
                "{key}: {doc:#}"
            );
        }

        let breaker = api
            .ctx
            .circuits
            .get("BOT-001", Dependency::Agent)
            .expect("agent breaker");
        for _ in 0..api.ctx.config.breaker.failure_threshold {
            breaker.record_failure("test failure");
        }
        // The first answer is served again for HEALTH_TTL; let it age out.
        tokio::time::sleep(super::HEALTH_TTL).await;
        let response = health(State(api.clone())).await;
        assert_eq!(response.status(), StatusCode::OK, "warn still answers 200");
        let doc = body_json(response).await;
        assert_eq!(doc["status"], "warn", "{doc:#}");
        let open: Vec<&Value> = doc["checks"]["circuit:state"]
            .as_array()
            .expect("breaker checks")
            .iter()
            .filter(|c| c["status"] == "warn")
            .collect();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0]["componentId"], "BOT-001/agent");
        assert_eq!(open[0]["observedValue"], "open");
        api.ctx.store.close();
    }

    #[tokio::test]
    async fn health_fails_with_503_when_the_store_takes_no_more_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = test_api(&dir);
        api.ctx.store.close();
        let response = health(State(api.clone())).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let doc = body_json(response).await;
        assert_eq!(doc["status"], "fail");
        assert_eq!(doc["checks"]["storage:responseTime"][0]["status"], "fail");
    }
}
