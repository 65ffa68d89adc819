//! What an operator relies on: the watchdog checks the address the service listens
//! on, the HTTP API is closed off loopback, Prometheus counts never go down, and
//! the monitors show figures only when they mean something.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use agentlab::monitor::series::METRIC_TYPES;
use agentlab::storage::{NewTask, TaskFinish, TaskKind, TaskSource, TaskStatus};
use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, Options, PATIENCE, Service, StoreAccess, binary};

const READ_TOKEN: &str = "test-read-token-9876543210";

async fn start_sim() -> telegram_sim::SimHandle {
    telegram_sim::TelegramSim::start(([127, 0, 0, 1], 0).into(), Vec::new())
        .await
        .expect("sim")
}

/// Rewrites the harness's `bind` line of a prepared service's configuration.
fn rebind(service: &Service, replacement: &str) {
    let text = std::fs::read_to_string(&service.config_path).expect("config");
    let changed = text.replace("bind = \"127.0.0.1:0\"", replacement);
    assert_ne!(changed, text, "the harness's bind line changed");
    std::fs::write(&service.config_path, changed).expect("config");
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// GET `path` with an optional bearer token: (status, body text).
async fn get_as(service: &Service, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = client().get(format!("{}{path}", service.base_url));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("GET");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

/// Polls the monitors' snapshot until `done` holds for it.
async fn wait_snapshot(service: &Service, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, snapshot) = service.get("/api/observability/metrics").await;
        if done(&snapshot) {
            return snapshot;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never held: {snapshot}\n{}",
            service.stderr_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_task(service: &Service, prompt: &str) -> Value {
    let (status, created) = service
        .post(
            "/api/tasks",
            json!({"bot_id": "BOT-001", "user_id": 111, "prompt": prompt}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    service
        .wait_task_done(created["id"].as_u64().expect("task id"))
        .await
}

fn agentlab(config: &std::path::Path, args: &[&str], env: &[(String, String)]) -> (i32, String) {
    let out = Command::new(binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("AGENTLAB_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run agentlab");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_checks_the_address_http_bind_names() {
    let service = Service::start(Options::default()).await;
    let addr = service.base_url.trim_start_matches("http://").to_string();
    let port = addr.rsplit_once(':').expect("host:port").1.to_string();
    let original = std::fs::read_to_string(&service.config_path).expect("config");
    let env = service.env();

    // Port 0 in the file: the watchdog finds the service through its address file.
    let (code, out) = agentlab(&service.config_path, &["watchdog", "--once"], &env);
    assert_eq!(code, 0, "{out}");

    for (bind, checked) in [
        (format!("127.0.0.1:{port}"), format!("127.0.0.1:{port}")),
        (format!("0.0.0.0:{port}"), format!("127.0.0.1:{port}")),
    ] {
        let path = service.dir.path().join("bound.toml");
        let text = original.replace("bind = \"127.0.0.1:0\"", &format!("bind = \"{bind}\""));
        assert_ne!(text, original, "the harness's bind line changed");
        std::fs::write(&path, text).expect("write config");
        let (code, out) = agentlab(&path, &["watchdog", "--once"], &env);
        assert_eq!((code, out.trim()), (0, "healthy"), "bind {bind}");
        let (_, shown) = agentlab(&path, &["check-config"], &env);
        assert!(
            shown.contains(&format!("health_url = \"http://{checked}/health\"")),
            "check-config shows the effective URL for bind {bind}:\n{shown}"
        );
    }
}

/// Every route of the OpenAPI document, with its parameters filled in.
fn concrete_routes(doc: &Value, task_id: u64) -> Vec<(String, String)> {
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for verb in item.as_object().expect("operations").keys() {
            let concrete = path
                .replace("{bot_id}", "BOT-001")
                .replace("{id}", &task_id.to_string())
                .replace("{metric_type}", "process_rss_bytes");
            routes.push((verb.clone(), concrete));
        }
    }
    routes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_every_route_but_the_probes_needs_a_token() {
    let sim = start_sim().await;
    let mut service = Service::prepare(
        sim,
        Options {
            extra_env: vec![("AGENTLAB_TEST_READ_TOKEN".into(), READ_TOKEN.into())],
            ..Options::default()
        },
    );
    rebind(
        &service,
        "bind = \"0.0.0.0:0\"\nread_token_env = \"AGENTLAB_TEST_READ_TOKEN\"",
    );
    service.spawn();
    service.wait_ready().await;
    let task = run_task(&service, "hello").await;
    let task_id = task["id"].as_u64().expect("id");

    let (status, doc) = get_as(&service, "/api/openapi.json", Some(READ_TOKEN)).await;
    assert_eq!(status, 200, "{doc}");
    let doc: Value = serde_json::from_str(&doc).expect("document");
    let probes = ["/health", "/livez", "/readyz"];
    let mut checked = 0;
    for (verb, path) in concrete_routes(&doc, task_id) {
        let template = doc["paths"]
            .as_object()
            .and_then(|p| {
                p.iter()
                    .find(|(t, _)| {
                        t.replace("{bot_id}", "BOT-001")
                            .replace("{id}", &task_id.to_string())
                            .replace("{metric_type}", "process_rss_bytes")
                            == path
                    })
                    .map(|(_, item)| item[verb.as_str()].clone())
            })
            .expect("operation");
        let admin_only = template["security"] == json!([{"bearerAuth": []}]);
        let send = |token: Option<&'static str>| {
            let url = format!("{}{path}", service.base_url);
            let mut req = match verb.as_str() {
                "get" => client().get(url),
                "post" => client().post(url).json(&json!({})),
                other => panic!("unexpected verb {other}"),
            };
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            async move { req.send().await.expect("request").status().as_u16() }
        };
        if probes.contains(&path.as_str()) {
            assert!(template["security"].is_null(), "{path} documented as open");
            assert_ne!(send(None).await, 401, "{verb} {path} is a probe");
            continue;
        }
        checked += 1;
        assert_eq!(send(None).await, 401, "{verb} {path} without a token");
        assert_eq!(
            send(Some("wrong-token")).await,
            401,
            "{verb} {path} with a wrong token"
        );
        let with_read = send(Some(READ_TOKEN)).await;
        if admin_only {
            assert_eq!(with_read, 401, "{verb} {path} is for the admin token only");
        } else {
            assert_eq!(
                template["security"],
                json!([{}, {"bearerAuth": []}]),
                "{path} documented as needing a token off loopback"
            );
            assert!(
                with_read == 200,
                "{verb} {path} with the read token: {with_read}"
            );
            let with_admin = send(Some(ADMIN_TOKEN)).await;
            assert_eq!(with_admin, 200, "{verb} {path} with the admin token");
        }
    }
    assert!(checked >= 15, "only {checked} routes checked");
    let (status, _) = get_as(&service, &format!("/?token={READ_TOKEN}"), None).await;
    assert_eq!(status, 200, "the dashboard takes the token in its URL");
    let (status, _) = get_as(&service, "/api/tasks?token={READ_TOKEN}", None).await;
    assert_eq!(status, 401, "only the page takes a token in its URL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_without_any_token_configured_reads_are_refused() {
    let sim = start_sim().await;
    let mut service = Service::prepare(
        sim,
        Options {
            admin_token: false,
            ..Options::default()
        },
    );
    rebind(&service, "bind = \"0.0.0.0:0\"");
    service.spawn();
    service.wait_ready().await;
    for path in ["/api/tasks", "/metrics", "/"] {
        let (status, body) = get_as(&service, path, Some("anything")).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    let (status, _) = get_as(&service, "/health", None).await;
    assert!(status == 200 || status == 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_loopback_read_routes_stay_open() {
    let service = Service::start(Options::default()).await;
    for path in [
        "/api/bots",
        "/api/tasks",
        "/metrics",
        "/api/openapi.json",
        "/api/observability/metrics",
        "/api/dashboard",
        "/",
    ] {
        let (status, body) = get_as(&service, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, _) = client()
        .post(format!("{}/api/backup", service.base_url))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .expect("POST");
    assert_eq!(status, 401, "admin routes still need the token on loopback");
}

/// The samples of `family` in an exposition: series (name with labels) → value.
fn samples(text: &str, family: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with(family) && !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_histograms_only_grow_between_scrapes() {
    let mut service = Service::start(Options::default()).await;
    run_task(&service, "hello").await;
    service.stop().await;
    // History from before this process: more finished tasks than any window of
    // recent tasks holds, each of which ran for 100 s.
    {
        let store = service.open_store();
        let now = agentlab::storage::now_ms() - 3_600_000;
        for i in 0..520u64 {
            let at = now + i * 10;
            let new = NewTask {
                bot_id: "BOT-001".into(),
                user_id: 111,
                chat_id: 111,
                kind: TaskKind::Chat,
                source: TaskSource::Telegram,
                prompt: format!("old {i}"),
                priority: 5,
                max_attempts: 1,
                reply_to_message_id: None,
                update_id: None,
            };
            let id = store.submit_task(new, at).wait().expect("submit").task.id;
            store.claim_next_task(at, vec![]).wait().expect("claim");
            let finish = TaskFinish {
                status: Some(TaskStatus::Succeeded),
                result: Some("old".into()),
                deliver: false,
                ..TaskFinish::default()
            };
            store
                .finish_task(id, finish, at + 100_000)
                .wait()
                .expect("finish");
        }
    }
    service.restart().await;

    let family = "agentlab_task_duration_seconds";
    let (status, first) = get_as(&service, "/metrics", None).await;
    assert_eq!(status, 200);
    let before = samples(&first, family);
    for prompt in ["one", "two", "three"] {
        run_task(&service, prompt).await;
    }
    let (_, second) = get_as(&service, "/metrics", None).await;
    let after = samples(&second, family);
    for (series, value) in &before {
        let later = after.get(series).copied().unwrap_or(0.0);
        assert!(later >= *value, "{series} went down: {value} → {later}");
    }
    let count = format!("{family}_count{{status=\"succeeded\"}}");
    assert_eq!(
        after.get(&count).copied().unwrap_or(0.0) - before.get(&count).copied().unwrap_or(0.0),
        3.0,
        "three tasks finished between the scrapes:\n{first}\n{second}"
    );
    for family in ["agentlab_call_duration_seconds", "agentlab_calls_total"] {
        let (before, after) = (samples(&first, family), samples(&second, family));
        for (series, value) in &before {
            let later = after.get(series).copied().unwrap_or(0.0);
            assert!(later >= *value, "{series} went down: {value} → {later}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_agent_calls_have_a_p95() {
    let service = Service::start(Options::default()).await;
    for prompt in ["a", "b", "c", "d"] {
        run_task(&service, prompt).await;
    }
    let snapshot = wait_snapshot(&service, "four agent calls seen", |s| {
        s["api"]["agent"]["calls"].as_u64() == Some(4)
    })
    .await;
    let p95 = snapshot["api"]["agent"]["p95_ms"].as_f64();
    assert!(p95.is_some_and(|p| p > 0.0), "{}", snapshot["api"]["agent"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leak_trend_before_its_window_nor_across_restarts() {
    let mut service = Service::start(Options::default()).await;
    let snapshot = wait_snapshot(&service, "six memory samples", |s| {
        s["leak"]["samples"].as_u64().is_some_and(|n| n >= 6)
    })
    .await;
    let leak = &snapshot["leak"];
    assert_eq!(leak["judged"], false, "{leak}");
    assert!(
        leak["mb_per_hour"].is_null() && leak["r2"].is_null(),
        "{leak}"
    );
    let samples_before = leak["samples"].as_u64().unwrap_or(0);

    service.stop().await;
    let restarted_ms = agentlab::storage::now_ms();
    service.restart().await;
    let snapshot = wait_snapshot(&service, "a tick after the restart", |s| {
        s["at_ms"].as_u64().is_some_and(|at| at >= restarted_ms)
    })
    .await;
    let samples_after = snapshot["leak"]["samples"].as_u64().unwrap_or(0);
    assert!(
        samples_after < samples_before,
        "the leak window holds the previous process's samples: {} after, {samples_before} before",
        snapshot["leak"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_names_the_downtime_between_runs_and_only_documented_metrics() {
    let mut service = Service::start(Options::default()).await;
    let started_ms = agentlab::storage::now_ms();
    run_task(&service, "hello").await;
    wait_snapshot(&service, "two memory samples", |s| {
        s["leak"]["samples"].as_u64().is_some_and(|n| n >= 2)
    })
    .await;
    service.stop().await;
    let stopped_ms = agentlab::storage::now_ms();
    {
        let store = service.open_store();
        let names = store.series_names().expect("series names");
        assert!(!names.is_empty());
        for name in names {
            let metric = name.split('{').next().unwrap_or_default();
            assert!(
                METRIC_TYPES.iter().any(|(m, _)| *m == metric),
                "`{name}` is not a documented metric type"
            );
        }
    }
    // A visible gap: the next run starts well after the stop.
    let gap_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < gap_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    service.restart().await;
    let restarted_ms = agentlab::storage::now_ms();
    wait_snapshot(&service, "two ticks after the restart", |s| {
        s["leak"]["samples"].as_u64().is_some_and(|n| n >= 2)
            && s["at_ms"].as_u64().is_some_and(|at| at > restarted_ms)
    })
    .await;
    let (status, history) = service
        .get(&format!(
            "/api/observability/history/process_rss_bytes?from={}",
            started_ms - 1000
        ))
        .await;
    assert_eq!(status, 200, "{history}");
    let down = history["down"].as_array().expect("down periods").clone();
    assert_eq!(down.len(), 1, "{history}");
    let (from, to) = (
        down[0]["from_ms"].as_u64().expect("from"),
        down[0]["to_ms"].as_u64().expect("to"),
    );
    assert!(
        from <= stopped_ms && to >= stopped_ms + 1000,
        "{down:?}, stopped at {stopped_ms}"
    );
    let points: Vec<u64> = history["series"][0]["points"]
        .as_array()
        .expect("points")
        .iter()
        .filter_map(|p| p["at_ms"].as_u64())
        .collect();
    assert!(
        points.windows(2).any(|w| w[0] <= from && w[1] >= to),
        "the down period lies between two points: {points:?} {down:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_tool = "chromium",
    ignore = "chromium not installed: apt-get install chromium"
)]
async fn the_memory_chart_breaks_at_downtime_and_waits_for_a_trend_in_chromium() {
    use crate::dashboard::chromium;
    crate::harness::require_tool("chromium");
    let mut service = Service::start(Options::default()).await;
    wait_snapshot(&service, "three memory samples", |s| {
        s["leak"]["samples"].as_u64().is_some_and(|n| n >= 3)
    })
    .await;
    service.stop().await;
    let gap_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < gap_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    service.restart().await;
    let restarted_ms = agentlab::storage::now_ms();
    wait_snapshot(&service, "three ticks after the restart", |s| {
        s["leak"]["samples"].as_u64().is_some_and(|n| n >= 3)
            && s["at_ms"].as_u64().is_some_and(|at| at > restarted_ms)
    })
    .await;

    let dom = chromium(&["--dump-dom", &format!("{}/", service.base_url)]).await;
    assert!(dom.contains("data-loaded=\"true\""), "no refresh:\n{dom}");
    let start = dom.find("data-chart=\"memory\"").expect("memory chart");
    let end = dom[start + 1..]
        .find("data-chart=")
        .map_or(dom.len(), |i| start + 1 + i);
    let memory = &dom[start..end];
    assert!(
        memory.contains("data-segments=\"2\""),
        "the line is not broken at the downtime:\n{memory}"
    );
    assert!(
        memory.contains("trend after") && !memory.contains("MB/h"),
        "a trend is shown before its window is long enough:\n{memory}"
    );
}
