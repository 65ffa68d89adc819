//! The HTTP server: health, status, observability, Prometheus and admin routes,
//! the second way in besides Telegram.
//!
//! Layout: [`routes`] is the table every route is mounted and documented from;
//! one file per route group (`health`, `status`, `observability`, `prometheus`,
//! `admin`, `dashboard`); [`error`] is the one error type; `extract` wraps axum's extractors so
//! their rejections are ours.
//!
//! Handles: the server is built from an [`HttpContext`] — the store, the pool,
//! the intake (`POST /api/tasks` submits through it), the backups, the breakers,
//! the monitors' latest snapshot, the readiness flag, the start time, each bot's
//! Telegram link, the operator notices, the shutdown signal and the admin token —
//! and keeps it, with what it derives from the configuration once, in its own
//! state (`AppState`). It names nothing that builds it.
//!
//! Invariants: binds `http.bind` (loopback by default); admin routes need the
//! bearer token (constant-time compare) and are refused when none is configured;
//! off loopback every route but the health probes needs a token ([`access`]);
//! every error is JSON `{"error", "code"}` with a fitting status, never a 500 for
//! bad input (bodies axum or tower produce bare — no route, wrong method, too
//! large, timed out — are rewritten here); query strings and bodies are bounded;
//! every route has a timeout; every request's latency is recorded in
//! [`crate::metrics`] under the route's template, so label cardinality is bounded.

mod access;
mod admin;
mod approvals;
mod dashboard;
mod error;
mod extract;
mod health;
mod observability;
mod openapi;
mod prometheus;
mod routes;
mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::task::JoinSet;

use crate::backup::Backups;
use crate::backup::remote::offsite::Offsite;
use crate::breaker::Circuits;
use crate::config::Config;
use crate::intake::Intake;
use crate::metrics::{self, CallOutcome};
use crate::monitor::MonitorHandle;
use crate::shutdown::Shutdown;
use crate::status::{Notices, Readiness, Started, TelegramLinks};
use crate::storage::Store;
use crate::worker::Pool;

pub use error::ApiError;

/// Largest request body accepted (a prompt is at most 256 KiB, JSON-escaped).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest query string accepted.
pub const MAX_QUERY_BYTES: usize = 2048;
/// Longest any route may take to produce its response head.
pub const ROUTE_TIMEOUT: Duration = Duration::from_secs(10);

/// The handles the HTTP layer is built from.
pub struct HttpContext {
    /// The configuration.
    pub config: Arc<Config>,
    /// The store.
    pub store: Store,
    /// The circuit breakers.
    pub circuits: Circuits,
    /// The worker pool (busy workers, cancelling a run).
    pub pool: Pool,
    /// Where `POST /api/tasks` submits.
    pub intake: Intake,
    /// Snapshots on demand and the offsite uploader's report.
    pub backups: Backups,
    /// The shutdown signal (`POST /api/restart` requests it; the server stops on it).
    pub shutdown: Shutdown,
    /// Whether the start-up barrier has passed.
    pub readiness: Readiness,
    /// When the process started.
    pub started: Started,
    /// Each bot's Telegram link.
    pub links: TelegramLinks,
    /// Operator notices, shown by `/health`.
    pub notices: Notices,
    /// The monitors' latest snapshot.
    pub monitor: MonitorHandle,
    /// The admin bearer token (`http.admin_token_env`), if configured.
    pub admin_token: Option<String>,
}

impl HttpContext {
    /// Whether the service takes work (ready and not shutting down).
    pub fn is_ready(&self) -> bool {
        self.readiness.is_ready()
    }

    /// Seconds since start.
    pub fn uptime_s(&self) -> u64 {
        self.started.uptime_s()
    }

    /// The offsite uploader.
    pub fn offsite(&self) -> &Offsite {
        self.backups.offsite()
    }
}

/// What every handler shares: the handles and what was derived from the
/// configuration once.
pub(crate) struct Api {
    pub ctx: Arc<HttpContext>,
    /// Expected time between scheduled backups, for the backup-age check.
    pub backup_interval_ms: Option<u64>,
    /// The last `/health` answer.
    pub health_cache: health::HealthCache,
    /// The read-only bearer token (`http.read_token_env`), when set.
    pub read_token: Option<String>,
    /// `http.bind` is a loopback address: read routes need no token.
    pub loopback: bool,
}

pub(crate) type AppState = Arc<Api>;

impl Api {
    pub(crate) fn new(ctx: Arc<HttpContext>) -> Self {
        let backup_interval_ms = backup_interval_ms(&ctx.config.backup.schedule);
        Api {
            read_token: crate::config::secret_from_env(&ctx.config.http.read_token_env),
            loopback: access::is_loopback(&ctx.config.http.bind),
            ctx,
            backup_interval_ms,
            health_cache: health::HealthCache::default(),
        }
    }
}

/// The interval of a cron schedule, from its next two occurrences.
fn backup_interval_ms(schedule: &str) -> Option<u64> {
    let cron = crate::config::parse_cron(schedule).ok()?;
    let mut next = cron.iter_after(chrono::Utc::now());
    let (a, b) = (next.next()?, next.next()?);
    u64::try_from((b - a).num_milliseconds()).ok()
}

/// Binds the server and spawns it; returns the bound address (port 0 → chosen).
pub async fn serve(ctx: Arc<HttpContext>, tasks: &mut JoinSet<()>) -> anyhow::Result<SocketAddr> {
    let bind = &ctx.config.http.bind;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} (http.bind)"))?;
    let addr = listener.local_addr()?;
    let app = router(ctx.clone());
    let shutdown = ctx.shutdown.clone();
    tasks.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    tracing::info!(%addr, "HTTP server listening");
    Ok(addr)
}

/// The whole API, built from the route table.
pub fn router(ctx: Arc<HttpContext>) -> Router {
    let state: AppState = Arc::new(Api::new(ctx));
    let mut router: Router<AppState> = Router::new();
    for route in routes::ROUTES {
        let mut handler = (route.mount)(route.verb.filter());
        if route.access == access::Access::Read {
            handler = handler.route_layer(middleware::from_fn_with_state(
                state.clone(),
                access::require_reader,
            ));
        }
        router = router.route(route.path, handler);
    }
    router
        .fallback(|| async { ApiError::for_bare_status(StatusCode::NOT_FOUND) })
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_BODY_BYTES,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            ROUTE_TIMEOUT,
        ))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(bound_query))
        .layer(middleware::from_fn(record_latency))
        .with_state(state)
}

/// Records each request's latency under its route template (`http`, `GET /api/tasks/{id}`).
async fn record_latency(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = match req.extensions().get::<MatchedPath>() {
        Some(path) => format!("{} {}", req.method(), path.as_str()),
        None => "unmatched".to_string(),
    };
    let response = next.run(req).await;
    let outcome = match response.status() {
        s if s.is_server_error() => CallOutcome::Error,
        _ => CallOutcome::Ok,
    };
    metrics::observe(
        "http",
        &route,
        started.elapsed().as_secs_f64() * 1000.0,
        outcome,
    );
    response
}

/// Refuses query strings longer than [`MAX_QUERY_BYTES`].
async fn bound_query(req: Request, next: Next) -> Response {
    if req.uri().query().is_some_and(|q| q.len() > MAX_QUERY_BYTES) {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "query_too_long",
            format!("the query string is longer than {MAX_QUERY_BYTES} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

/// Gives error answers that axum or a tower layer produced in plain text or with
/// no body (wrong method, body too large, timeout) our JSON shape. Our handlers'
/// own errors are JSON already and pass unchanged.
async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let mut fixed = ApiError::for_bare_status(status).into_response();
        if let Some(allow) = response.headers().get(header::ALLOW) {
            fixed.headers_mut().insert(header::ALLOW, allow.clone());
        }
        return fixed;
    }
    response
}
