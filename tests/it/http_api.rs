//! The HTTP API against the real binary: every route, its errors, its auth, the
//! Prometheus exposition and the OpenAPI document.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, Options, PATIENCE, Service, StoreAccess};

/// A raw request: the status, the content type and the body text.
async fn call(
    service: &Service,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, String, String) {
    let client = reqwest::Client::new();
    let mut req = client.request(method, format!("{}{path}", service.base_url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, content_type, resp.text().await.expect("body"))
}

/// Asserts an error answer: the status and the JSON `{"error", "code"}` shape.
fn assert_json_error(what: &str, got: &(StatusCode, String, String), status: u16) -> Value {
    assert_eq!(got.0.as_u16(), status, "{what}: {got:?}");
    assert!(
        got.1.starts_with("application/json"),
        "{what}: content type {got:?}"
    );
    let body: Value =
        serde_json::from_str(&got.2).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {got:?}"));
    assert!(
        body["error"].is_string() && body["code"].is_string(),
        "{what}: {body}"
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_routes_answer_with_their_documented_shapes() {
    let service = Service::start(Options::default()).await;

    let (status, content_type, text) = call(&service, Method::GET, "/health", None, None).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type, "application/health+json");
    let health: Value = serde_json::from_str(&text).expect("health JSON");
    assert!(
        matches!(health["status"].as_str(), Some("pass" | "warn")),
        "{health:#}"
    );
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
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
        let entries = health["checks"][key]
            .as_array()
            .unwrap_or_else(|| panic!("check {key} missing: {health:#}"));
        for entry in entries {
            assert!(
                entry["status"].is_string() && entry["time"].is_string(),
                "{key}: {entry}"
            );
        }
    }
    assert_eq!(
        health["checks"]["telegram:lastPollAge"][0]["componentId"],
        "BOT-001"
    );

    assert_eq!(
        service.get("/livez").await,
        (200, json!({"status": "pass"}))
    );
    assert_eq!(
        service.get("/readyz").await,
        (200, json!({"status": "pass"}))
    );

    let (status, bots) = service.get("/api/bots").await;
    assert_eq!(status, 200);
    assert_eq!(bots["bots"][0]["id"], "BOT-001");
    assert_eq!(bots["bots"][0]["circuit"]["agent"], "closed");

    let (status, bot) = service.get("/api/bot/BOT-001/status").await;
    assert_eq!(status, 200, "{bot}");
    for field in [
        "state",
        "uptime_s",
        "queue_depth",
        "busy_workers",
        "cost_today_usd",
        "circuit",
    ] {
        assert!(!bot[field].is_null(), "{field} missing: {bot:#}");
    }

    let (status, circuits) = service.get("/api/bot/BOT-001/circuit-status").await;
    assert_eq!(status, 200, "{circuits}");
    for dependency in ["agent", "telegram"] {
        let d = circuits["dependencies"]
            .as_array()
            .and_then(|deps| deps.iter().find(|d| d["dependency"] == dependency))
            .unwrap_or_else(|| panic!("no {dependency} breaker: {circuits:#}"));
        assert_eq!(d["state"], "closed", "{circuits:#}");
        assert!(
            d["failure_count"].is_u64() && d["failure_rate"].is_number(),
            "{d}"
        );
        assert!(
            d.get("last_transition").is_some() && d.get("next_probe_at_ms").is_some(),
            "{d}"
        );
    }

    let (status, tasks) = service.get("/api/tasks?limit=5").await;
    assert_eq!((status, tasks), (200, json!([])));

    let (status, snapshot) = service.get("/api/observability/metrics").await;
    assert_eq!(status, 200);
    for gauge in ["uptime_s", "queue_depth", "busy_workers", "workers"] {
        assert!(snapshot[gauge].is_u64(), "{gauge} missing: {snapshot}");
    }

    let (status, alerts) = service.get("/api/observability/alerts?state=firing").await;
    assert_eq!(status, 200);
    assert!(alerts["alerts"].is_array(), "{alerts}");

    let (status, _) = service
        .get("/api/observability/history/no_such_metric?from=1&to=2")
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_unknown_ids_get_json_errors_never_a_500() {
    let service = Service::start(Options::default()).await;
    let cases: &[(Method, &str, u16)] = &[
        (Method::GET, "/api/bot/NOPE/status", 404),
        (Method::GET, "/api/bot/NOPE/circuit-status", 404),
        (Method::GET, "/api/tasks/999999", 404),
        (Method::GET, "/api/tasks/abc", 400),
        (Method::GET, "/api/tasks/-1", 400),
        (Method::GET, "/api/tasks?status=sleeping", 400),
        (Method::GET, "/api/tasks?limit=abc", 400),
        (Method::GET, "/api/tasks?limit=0", 400),
        (Method::GET, "/api/tasks?limit=1000000", 400),
        (Method::GET, "/api/tasks?bot=NOPE", 404),
        (Method::GET, "/api/tasks?unknown=1", 400),
        (Method::GET, "/api/observability/alerts?state=bogus", 400),
        (Method::GET, "/api/observability/alerts?limit=-3", 400),
        (Method::GET, "/api/observability/approvals?limit=0", 400),
        (Method::GET, "/api/observability/approvals?limit=1001", 400),
        (Method::GET, "/api/observability/history/x?to=-5", 400),
        (Method::GET, "/api/tasks?status=", 400),
        (Method::GET, "/api/observability/alerts?state=", 400),
        (
            Method::GET,
            "/api/admin/dump?since=18446744073709551616",
            400,
        ),
        (
            Method::GET,
            "/api/observability/history/x?from=yesterday",
            400,
        ),
        (Method::GET, "/api/observability/history/x?step=0", 400),
        (Method::GET, "/no/such/route", 404),
        (Method::DELETE, "/api/tasks", 405),
        (Method::POST, "/health", 405),
        (Method::POST, "/api/tasks/999999/cancel", 404),
        (Method::POST, "/api/tasks/abc/cancel", 400),
        (Method::GET, "/api/admin/dump?table=nope", 400),
        (Method::GET, "/api/admin/dump?table=", 400),
        (Method::GET, "/api/admin/dump?format=csv", 400),
        (Method::GET, "/api/admin/dump?since=later", 400),
    ];
    for (method, path, status) in cases {
        let got = call(&service, method.clone(), path, Some(ADMIN_TOKEN), None).await;
        assert_json_error(&format!("{method} {path}"), &got, *status);
    }

    let long_query = format!("/api/tasks?bot={}", "x".repeat(4096));
    assert_json_error(
        "long query",
        &call(&service, Method::GET, &long_query, None, None).await,
        414,
    );

    let bodies: &[(Value, u16)] = &[
        (json!({"bot_id": "NOPE", "user_id": 1, "prompt": "hi"}), 404),
        (
            json!({"bot_id": "BOT-001", "user_id": 1, "prompt": "   "}),
            400,
        ),
        (json!({"bot_id": "BOT-001", "prompt": "hi"}), 400),
        (
            json!({"bot_id": "BOT-001", "user_id": "one", "prompt": "hi"}),
            400,
        ),
        (
            json!({"bot_id": "BOT-001", "user_id": 1.5, "prompt": "hi"}),
            400,
        ),
        (
            json!({"bot_id": "BOT-001", "user_id": 1, "prompt": "hi", "extra": true}),
            400,
        ),
        (json!([1, 2, 3]), 400),
        (
            json!({"bot_id": "BOT-001", "user_id": 1, "prompt": "x".repeat(2 * 1024 * 1024)}),
            413,
        ),
    ];
    for (body, status) in bodies {
        let got = call(
            &service,
            Method::POST,
            "/api/tasks",
            Some(ADMIN_TOKEN),
            Some(body.clone()),
        )
        .await;
        let what = format!(
            "POST /api/tasks {}",
            body.to_string().chars().take(80).collect::<String>()
        );
        assert_json_error(&what, &got, *status);
    }
    let resp = reqwest::Client::new()
        .post(format!("{}/api/tasks", service.base_url))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 400);
    let plain = resp.text().await.expect("body");
    assert!(
        serde_json::from_str::<Value>(&plain).is_ok_and(|v| v["code"] == "bad_request"),
        "{plain}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_the_right_bearer_token() {
    let service = Service::start(Options::default()).await;
    let admin: &[(Method, &str)] = &[
        (Method::POST, "/api/tasks"),
        (Method::POST, "/api/tasks/1/cancel"),
        (Method::POST, "/api/restart"),
        (Method::POST, "/api/backup"),
        (Method::GET, "/api/admin/dump"),
    ];
    let body = json!({"bot_id": "BOT-001", "user_id": 1, "prompt": "hi"});
    for (method, path) in admin {
        let missing = call(&service, method.clone(), path, None, Some(body.clone())).await;
        assert_eq!(
            assert_json_error(&format!("{method} {path} no token"), &missing, 401)["code"],
            "unauthorized"
        );
        let wrong = call(
            &service,
            method.clone(),
            path,
            Some("not-the-token"),
            Some(body.clone()),
        )
        .await;
        assert_json_error(&format!("{method} {path} wrong token"), &wrong, 401);
    }
    // Nothing was done on the refused requests.
    assert_eq!(service.get("/api/tasks").await, (200, json!([])));
    assert_eq!(
        service.get("/readyz").await.0,
        200,
        "the refused restart did not stop the service"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_are_refused_when_no_token_is_configured() {
    let service = Service::start(Options {
        admin_token: false,
        ..Options::default()
    })
    .await;
    let got = call(
        &service,
        Method::POST,
        "/api/restart",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    let body = assert_json_error("restart without a configured token", &got, 403);
    assert_eq!(body["code"], "forbidden");
    let got = call(
        &service,
        Method::GET,
        "/api/admin/dump",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_json_error("dump without a configured token", &got, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_submitted_over_http_runs_and_a_hanging_one_can_be_cancelled() {
    let service = Service::start(Options::default()).await;
    let (status, created) = service
        .post(
            "/api/tasks",
            json!({"bot_id": "BOT-001", "user_id": 111, "prompt": "hello over http"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_u64().expect("task id");
    let done = service.wait_task_done(id).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert!(
        done["result"]
            .as_str()
            .is_some_and(|r| r.contains("hello over http")),
        "{done:#}"
    );

    let (status, listed) = service.get("/api/tasks?status=succeeded&bot=BOT-001").await;
    assert_eq!(status, 200);
    assert_eq!(listed[0]["id"], id);

    let (_, hanging) = service
        .post(
            "/api/tasks",
            json!({"bot_id": "BOT-001", "user_id": 111, "prompt": "hang"}),
        )
        .await;
    let hang_id = hanging["id"].as_u64().expect("task id");
    let deadline = Instant::now() + PATIENCE;
    while service.get(&format!("/api/tasks/{hang_id}")).await.1["status"] != "running" {
        assert!(Instant::now() < deadline, "the hanging task never ran");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (status, cancel) = service
        .post(&format!("/api/tasks/{hang_id}/cancel"), json!({}))
        .await;
    assert_eq!(
        (status, cancel["status"].as_str()),
        (200, Some("cancelling")),
        "{cancel}"
    );
    let cancelled = service.wait_task_done(hang_id).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled:#}");
    let (status, again) = service
        .post(&format!("/api/tasks/{hang_id}/cancel"), json!({}))
        .await;
    assert_eq!((status, again["code"].as_str()), (409, Some("conflict")));

    let (status, bot) = service.get("/api/bot/BOT-001/status").await;
    assert_eq!(status, 200);
    assert!(
        bot["tasks_today"].as_u64().is_some_and(|n| n >= 1),
        "{bot:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_exposition_parses_with_process_and_service_metrics() {
    let service = Service::start(Options::default()).await;
    let (_, created) = service
        .post(
            "/api/tasks",
            json!({"bot_id": "BOT-001", "user_id": 111, "prompt": "measure me"}),
        )
        .await;
    service
        .wait_task_done(created["id"].as_u64().expect("id"))
        .await;

    let (status, content_type, text) = call(&service, Method::GET, "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    let names: std::collections::BTreeSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
        "agentlab_tasks",
        "agentlab_queue_depth",
        "agentlab_task_duration_seconds",
        "agentlab_circuit_breaker_state",
        "agentlab_circuit_breaker_calls_total",
        "agentlab_circuit_breaker_transitions_total",
        "agentlab_cost_today_usd",
        "agentlab_call_duration_seconds",
    ] {
        assert!(
            names.contains(name),
            "{name} missing from /metrics:\n{text}"
        );
    }
    let value = |metric: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| s.value.clone())
    };
    match value("agentlab_tasks", &[("status", "succeeded")]) {
        Some(prometheus_parse::Value::Gauge(n)) => assert!(n >= 1.0),
        other => panic!("agentlab_tasks{{status=succeeded}}: {other:?}"),
    }
    match value("agentlab_task_duration_seconds", &[("status", "succeeded")]) {
        Some(prometheus_parse::Value::Histogram(buckets)) => {
            assert!(
                buckets.last().is_some_and(|b| b.count >= 1.0),
                "{buckets:?}"
            )
        }
        other => panic!("task duration histogram: {other:?}"),
    }
    match value(
        "agentlab_circuit_breaker_state",
        &[
            ("bot_id", "BOT-001"),
            ("dependency", "agent"),
            ("state", "closed"),
        ],
    ) {
        Some(prometheus_parse::Value::Gauge(v)) => assert_eq!(v, 1.0),
        other => panic!("breaker state: {other:?}"),
    }
    // Telegram API latency (getMe at least) and our own routes are histograms.
    for dependency in ["telegram", "http"] {
        let found = scrape.samples.iter().any(|s| {
            s.metric == "agentlab_call_duration_seconds"
                && s.labels.get("dependency") == Some(dependency)
                && matches!(s.value, prometheus_parse::Value::Histogram(_))
        });
        assert!(found, "no {dependency} latency histogram:\n{text}");
    }
}

/// Fills the path parameters of a documented route with known values.
fn concrete(path: &str) -> String {
    path.replace("{bot_id}", "BOT-001")
        .replace("{id}", "1")
        .replace("{metric_type}", "no_such_metric")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_every_route_and_only_routes_that_exist() {
    let service = Service::start(Options {
        admin_token: false,
        ..Options::default()
    })
    .await;
    let (status, doc) = service.get("/api/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        ("get", "/health"),
        ("get", "/livez"),
        ("get", "/readyz"),
        ("get", "/api/bots"),
        ("get", "/api/bot/{bot_id}/status"),
        ("get", "/api/bot/{bot_id}/circuit-status"),
        ("get", "/api/tasks"),
        ("post", "/api/tasks"),
        ("get", "/api/tasks/{id}"),
        ("post", "/api/tasks/{id}/cancel"),
        ("get", "/api/approvals"),
        ("post", "/api/approvals/{id}"),
        ("get", "/api/observability/metrics"),
        ("get", "/api/observability/history/{metric_type}"),
        ("get", "/api/observability/alerts"),
        ("get", "/api/observability/approvals"),
        ("get", "/metrics"),
        ("post", "/api/restart"),
        ("post", "/api/backup"),
        ("get", "/api/admin/dump"),
        ("get", "/api/openapi.json"),
        ("get", "/"),
        ("get", "/api/dashboard"),
    ];
    let documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .map(move |(m, _)| (m.clone(), path.clone()))
        })
        .collect();
    assert_eq!(documented.len(), expected.len(), "{documented:?}");
    for (method, path) in expected {
        let op = &paths[path][method];
        assert!(
            op["operationId"].is_string() && op["responses"].is_object(),
            "{method} {path} not documented"
        );
    }
    // Every documented operation is routed: none answers the router's "no such route".
    // (No admin token is configured, so admin operations answer 403 and do nothing.)
    for (method, path) in &documented {
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let (status, _, body) = call(&service, method.clone(), &concrete(path), None, None).await;
        assert_ne!(status, 405, "{method} {path} is documented but not routed");
        assert!(
            !body.contains("no such route"),
            "{method} {path} is documented but not routed"
        );
        assert!(
            status.as_u16() < 500 || status == 503,
            "{method} {path}: {status} {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_dump_streams_ndjson_rows_from_the_store() {
    let service = Service::start(Options::default()).await;
    let (_, created) = service
        .post(
            "/api/tasks",
            json!({"bot_id": "BOT-001", "user_id": 111, "prompt": "dump me"}),
        )
        .await;
    let id = created["id"].as_u64().expect("id");
    service.wait_task_done(id).await;

    let (status, content_type, text) = call(
        &service,
        Method::GET,
        "/api/admin/dump?table=tasks&table=events&format=ndjson",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type, "application/x-ndjson");
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert!(
        rows.iter().any(|r| r["table"] == "tasks" && r["id"] == id),
        "{text}"
    );
    assert!(
        rows.iter()
            .any(|r| r["event"] == "service_started" || r["kind"] == "service_started"),
        "{text}"
    );
    assert!(
        rows.iter()
            .all(|r| r["table"] == "tasks" || r.get("table").is_none()),
        "only the asked tables: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_restart_records_the_restart_and_exits_with_42() {
    let mut service = Service::start(Options::default()).await;
    let (status, body) = service.post("/api/restart", json!({})).await;
    assert_eq!(
        (status, body["exit_code"].as_i64()),
        (202, Some(42)),
        "{body}"
    );
    assert_eq!(service.wait_exit(PATIENCE).await, Some(42));
    let store = service.open_store();
    let events = store
        .recent_events(Some("service_stopped"), 5)
        .expect("events");
    store.close();
    assert!(
        events.iter().any(|e| e.payload_json.contains("42")),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_backup_answers_in_json_either_way() {
    let service = Service::start(Options::default()).await;
    let (status, _, text) = call(
        &service,
        Method::POST,
        "/api/backup",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    let body: Value = serde_json::from_str(&text).expect("JSON");
    match status.as_u16() {
        200 => assert!(body["path"].is_string(), "{body}"),
        503 => assert_eq!(body["code"], "backup_failed", "{body}"),
        other => panic!("POST /api/backup answered {other}: {body}"),
    }
}

/// Schemathesis found 414 (over-long query string) answered but undocumented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_query_is_a_documented_414() {
    let service = Service::start(Options::default()).await;
    let query = "limit=1&".repeat(400);
    let (status, body) = service.get(&format!("/api/tasks?{query}")).await;
    assert_eq!(status, 414, "{body}");
    assert_eq!(body["code"], "query_too_long");
    let (_, doc) = service.get("/api/openapi.json").await;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("operations") {
            assert!(
                op["responses"]["414"].is_object(),
                "{method} {path} does not document 414"
            );
        }
    }
}

/// A reversed history range (swapped bounds, seconds for milliseconds) is bad
/// input like any other: a JSON 400 that names both bounds, not a 200 with no
/// points. Leaving `to` out means now, and the error says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reversed_history_range_is_a_400_naming_both_bounds() {
    let service = Service::start(Options::default()).await;
    let future = u64::MAX / 2;
    let (future_query, future_from) = (
        format!("service_up?from={future}"),
        format!("`from` ({future})"),
    );
    let cases: [(&str, &[&str]); 4] = [
        ("service_up?from=10&to=5", &["`from` (10)", "`to` (5)"]),
        ("no_such_metric?from=10&to=5", &["`from` (10)", "`to` (5)"]),
        (&future_query, &[&future_from, "`to` (now, "]),
        (
            "service_up?from=2000&to=1000&step=10",
            &["`from` (2000)", "`to` (1000)"],
        ),
    ];
    for (query, named) in cases {
        let path = format!("/api/observability/history/{query}");
        let (status, body) = service.get(&path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["code"], "bad_request", "{path}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        for part in named {
            assert!(error.contains(part), "{path}: {part} not in {error:?}");
        }
    }
}

/// What schemathesis' full check set found (`CHECKS=all tests/schemathesis.sh`):
/// a whole number written as `225.0` is a JSON Schema integer, and a range with
/// `from == to` is valid input with no points (`from > to` is refused: see
/// `a_reversed_history_range_is_a_400_naming_both_bounds`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_valid_inputs_found_by_schemathesis_are_accepted() {
    let service = Service::start(Options::default()).await;
    let (status, created) = service
        .post(
            "/api/tasks",
            json!({"bot_id": "BOT-001", "user_id": 111.0, "chat_id": -565.0, "prompt": "floats"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_u64().expect("task id");
    let (_, task) = service.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(
        (&task["user_id"], &task["chat_id"]),
        (&json!(111), &json!(-565)),
        "{task}"
    );

    // The monitors sample `service_up` every second; wait for its first point.
    let deadline = Instant::now() + PATIENCE;
    while service.get("/api/observability/history/service_up").await.0 != 200 {
        assert!(Instant::now() < deadline, "service_up was never sampled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for range in ["from=7&to=7"] {
        let (status, empty) = service
            .get(&format!("/api/observability/history/service_up?{range}"))
            .await;
        assert_eq!(status, 200, "{range}: {empty}");
        let series = empty["series"].as_array().expect("series");
        assert!(!series.is_empty(), "{empty}");
        assert!(series.iter().all(|s| s["points"] == json!([])), "{empty}");
    }
}

/// The schemathesis run of `tests/schemathesis.sh` with every check, short and
/// seeded (ignored, and said so, where schemathesis is not installed).
#[test]
#[cfg_attr(
    missing_tool = "schemathesis",
    ignore = "schemathesis not installed: pip install schemathesis"
)]
fn schemathesis_with_every_check_finds_nothing() {
    crate::harness::require_tool("schemathesis");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .env("AGENTLAB_BIN", crate::harness::binary())
        .env("CHECKS", "all")
        .env("MAX_TIME", "60")
        .env("MAX_EXAMPLES", "20")
        .env("SEED", "2026")
        .output()
        .expect("run tests/schemathesis.sh");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}"
    );
}
