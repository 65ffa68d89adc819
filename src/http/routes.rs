//! The route table: every route, its handler and its documentation, in one place.
//!
//! Invariant: the router is built from [`ROUTES`] and the OpenAPI document is
//! generated from [`ROUTES`], so a route cannot exist undocumented, nor a
//! documented route be missing or take another method, nor its access differ
//! from what the document says.

use axum::routing::{MethodFilter, MethodRouter, on};

pub(crate) use super::access::Access;
use super::{AppState, admin, approvals, dashboard, health, observability, prometheus, status};

/// An HTTP method the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Get,
    Post,
}

impl Verb {
    pub(crate) fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
        }
    }

    /// Lower-case, as OpenAPI keys operations.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
        }
    }
}

/// Where a parameter goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum In {
    Path,
    Query,
}

/// What a parameter holds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// A non-negative integer, optionally bounded.
    Unsigned { min: u64, max: Option<u64> },
    /// Any text.
    Text,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// One or more of these words (comma-separated or repeated).
    SomeOf(&'static [&'static str]),
}

/// A documented parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Param {
    pub name: &'static str,
    pub location: In,
    pub required: bool,
    pub kind: Kind,
    pub description: &'static str,
}

/// A successful answer: status, content type, schema name in the components.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub schema: &'static str,
    /// Other content types the route may answer with (chosen by a parameter).
    pub also: &'static [&'static str],
}

/// One route.
pub(crate) struct Route {
    pub verb: Verb,
    pub path: &'static str,
    pub operation_id: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    /// Who may call it.
    pub access: Access,
    pub params: &'static [Param],
    /// Schema name of the JSON body, if any.
    pub body: Option<&'static str>,
    pub answer: Answer,
    /// Error statuses it may answer with (besides the timeout and size limits).
    pub errors: &'static [u16],
    /// Mounts the handler for the route's method.
    pub mount: fn(MethodFilter) -> MethodRouter<AppState>,
}

const JSON: &str = "application/json";

const fn json(schema: &'static str) -> Answer {
    Answer {
        status: 200,
        content_type: JSON,
        schema,
        also: &[],
    }
}

const BOT_ID: Param = Param {
    name: "bot_id",
    location: In::Path,
    required: true,
    kind: Kind::Text,
    description: "A configured bot's id.",
};
const TASK_ID: Param = Param {
    name: "id",
    location: In::Path,
    required: true,
    kind: Kind::Unsigned { min: 0, max: None },
    description: "A task id.",
};
const APPROVAL_ID: Param = Param {
    name: "id",
    location: In::Path,
    required: true,
    kind: Kind::Unsigned { min: 0, max: None },
    description: "An approval id (GET /api/approvals).",
};
const TASK_STATUSES: &[&str] = &[
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "interrupted",
];
/// The store's tables, as the dump route accepts them.
pub(crate) const DUMP_TABLES: &[&str] = &crate::storage::tables::ALL_TABLES;

/// Every route of the API.
pub(crate) static ROUTES: &[Route] = &[
    Route {
        verb: Verb::Get,
        path: "/health",
        operation_id: "health",
        summary: "Health of the service and its parts (IETF health-check draft); 503 when failing",
        tag: "health",
        access: Access::Open,
        params: &[],
        body: None,
        answer: Answer {
            status: 200,
            content_type: health::HEALTH_CONTENT_TYPE,
            schema: "Health",
            also: &[],
        },
        errors: &[503],
        mount: |m| on(m, health::health),
    },
    Route {
        verb: Verb::Get,
        path: "/livez",
        operation_id: "livez",
        summary: "Liveness: the process answers",
        tag: "health",
        access: Access::Open,
        params: &[],
        body: None,
        answer: json("Probe"),
        errors: &[],
        mount: |m| on(m, health::livez),
    },
    Route {
        verb: Verb::Get,
        path: "/readyz",
        operation_id: "readyz",
        summary: "Readiness: 503 until the start-up barrier has passed, and during shutdown",
        tag: "health",
        access: Access::Open,
        params: &[],
        body: None,
        answer: json("Probe"),
        errors: &[503],
        mount: |m| on(m, health::readyz),
    },
    Route {
        verb: Verb::Get,
        path: "/api/bots",
        operation_id: "listBots",
        summary: "The configured bots and their states",
        tag: "status",
        access: Access::Read,
        params: &[],
        body: None,
        answer: json("Bots"),
        errors: &[503],
        mount: |m| on(m, status::list_bots),
    },
    Route {
        verb: Verb::Get,
        path: "/api/bot/{bot_id}/status",
        operation_id: "botStatus",
        summary: "One bot: state, uptime, queue depth, busy workers, today's cost, circuit",
        tag: "status",
        access: Access::Read,
        params: &[BOT_ID],
        body: None,
        answer: json("BotStatus"),
        errors: &[404, 503],
        mount: |m| on(m, status::bot_status),
    },
    Route {
        verb: Verb::Get,
        path: "/api/bot/{bot_id}/circuit-status",
        operation_id: "circuitStatus",
        summary: "One bot's circuit breakers: state, failure count and rate, last transition, next probe",
        tag: "status",
        access: Access::Read,
        params: &[BOT_ID],
        body: None,
        answer: json("CircuitStatus"),
        errors: &[404],
        mount: |m| on(m, status::circuit_status),
    },
    Route {
        verb: Verb::Get,
        path: "/api/tasks",
        operation_id: "listTasks",
        summary: "Tasks, newest first",
        tag: "tasks",
        access: Access::Read,
        params: &[
            Param {
                name: "status",
                location: In::Query,
                required: false,
                kind: Kind::OneOf(TASK_STATUSES),
                description: "Only tasks in this status.",
            },
            Param {
                name: "bot",
                location: In::Query,
                required: false,
                kind: Kind::Text,
                description: "Only tasks of this bot (404 when not configured).",
            },
            Param {
                name: "limit",
                location: In::Query,
                required: false,
                kind: Kind::Unsigned {
                    min: 1,
                    max: Some(status::MAX_TASK_LIMIT as u64),
                },
                description: "At most this many (default 50).",
            },
        ],
        body: None,
        answer: json("TaskList"),
        errors: &[400, 404, 503],
        mount: |m| on(m, status::list_tasks),
    },
    Route {
        verb: Verb::Post,
        path: "/api/tasks",
        operation_id: "createTask",
        summary: "Queue a prompt for a bot's agent; the answer is read from GET /api/tasks/{id}",
        tag: "admin",
        access: Access::Admin,
        params: &[],
        body: Some("CreateTask"),
        answer: Answer {
            status: 201,
            content_type: JSON,
            schema: "TaskCreated",
            also: &[],
        },
        errors: &[400, 401, 403, 404, 413, 415, 503],
        mount: |m| on(m, admin::create_task),
    },
    Route {
        verb: Verb::Get,
        path: "/api/approvals",
        operation_id: "listApprovals",
        summary: "The tool approvals agents wait for, oldest first",
        tag: "admin",
        access: Access::Admin,
        params: &[],
        body: None,
        answer: json("ApprovalList"),
        errors: &[401, 403, 503],
        mount: |m| on(m, approvals::list),
    },
    Route {
        verb: Verb::Post,
        path: "/api/approvals/{id}",
        operation_id: "decideApproval",
        summary: "Allow or deny a pending approval, or answer its question; the agent gets the answer",
        tag: "admin",
        access: Access::Admin,
        params: &[APPROVAL_ID],
        body: Some("DecideApproval"),
        answer: json("Approval"),
        errors: &[400, 401, 403, 404, 409, 413, 415, 503],
        mount: |m| on(m, approvals::decide),
    },
    Route {
        verb: Verb::Get,
        path: "/api/tasks/{id}",
        operation_id: "getTask",
        summary: "One task, with its answer once finished",
        tag: "tasks",
        access: Access::Read,
        params: &[TASK_ID],
        body: None,
        answer: json("Task"),
        errors: &[400, 404, 503],
        mount: |m| on(m, status::get_task),
    },
    Route {
        verb: Verb::Post,
        path: "/api/tasks/{id}/cancel",
        operation_id: "cancelTask",
        summary: "Cancel a queued task, or stop a running one",
        tag: "admin",
        access: Access::Admin,
        params: &[TASK_ID],
        body: None,
        answer: json("TaskCancelled"),
        errors: &[400, 401, 403, 404, 409, 503],
        mount: |m| on(m, admin::cancel_task),
    },
    Route {
        verb: Verb::Get,
        path: "/api/observability/metrics",
        operation_id: "monitorSnapshot",
        summary: "A snapshot of every monitor",
        tag: "observability",
        access: Access::Read,
        params: &[],
        body: None,
        answer: json("Snapshot"),
        errors: &[],
        mount: |m| on(m, observability::metrics_snapshot),
    },
    Route {
        verb: Verb::Get,
        path: "/api/observability/history/{metric_type}",
        operation_id: "metricHistory",
        summary: "Time series of a metric, raw or rolled up by range, bounded in points",
        tag: "observability",
        access: Access::Read,
        params: &[
            Param {
                name: "metric_type",
                location: In::Path,
                required: true,
                kind: Kind::Text,
                description: "A series name, or its prefix before `{labels}`.",
            },
            Param {
                name: "from",
                location: In::Query,
                required: false,
                kind: Kind::Unsigned { min: 0, max: None },
                description: "Start, unix ms (default: an hour before `to`); at most `to` (400 otherwise); `from` equal to `to` is an empty range.",
            },
            Param {
                name: "to",
                location: In::Query,
                required: false,
                kind: Kind::Unsigned { min: 0, max: None },
                description: "End, unix ms (default: now).",
            },
            Param {
                name: "step",
                location: In::Query,
                required: false,
                kind: Kind::Unsigned { min: 1, max: None },
                description: "Wanted spacing of points, ms (points are merged to approach it).",
            },
        ],
        body: None,
        answer: json("History"),
        errors: &[400, 404, 503],
        mount: |m| on(m, observability::history),
    },
    Route {
        verb: Verb::Get,
        path: "/api/observability/alerts",
        operation_id: "listAlerts",
        summary: "Current and past alerts, newest first",
        tag: "observability",
        access: Access::Read,
        params: &[
            Param {
                name: "state",
                location: In::Query,
                required: false,
                kind: Kind::OneOf(&["pending", "firing", "resolved", "all"]),
                description: "Only alerts in this state.",
            },
            Param {
                name: "limit",
                location: In::Query,
                required: false,
                kind: Kind::Unsigned {
                    min: 1,
                    max: Some(observability::MAX_ALERT_LIMIT as u64),
                },
                description: "At most this many (default 100).",
            },
        ],
        body: None,
        answer: json("Alerts"),
        errors: &[400, 503],
        mount: |m| on(m, observability::alerts),
    },
    Route {
        verb: Verb::Get,
        path: "/api/observability/approvals",
        operation_id: "approvalDecisions",
        summary: "The audit of approval decisions: who, the tool, a digest of its input, the decision, seconds waited; newest first",
        tag: "observability",
        access: Access::Read,
        params: &[Param {
            name: "limit",
            location: In::Query,
            required: false,
            kind: Kind::Unsigned {
                min: 1,
                max: Some(observability::MAX_DECISION_LIMIT as u64),
            },
            description: "At most this many (default 100).",
        }],
        body: None,
        answer: json("ApprovalDecisions"),
        errors: &[400, 503],
        mount: |m| on(m, observability::approval_decisions),
    },
    Route {
        verb: Verb::Get,
        path: "/metrics",
        operation_id: "prometheus",
        summary: "Prometheus text exposition: process and agentlab metrics",
        tag: "observability",
        access: Access::Read,
        params: &[],
        body: None,
        answer: Answer {
            status: 200,
            content_type: prometheus::PROMETHEUS_CONTENT_TYPE,
            schema: "Text",
            also: &[],
        },
        errors: &[503],
        mount: |m| on(m, prometheus::metrics),
    },
    Route {
        verb: Verb::Post,
        path: "/api/restart",
        operation_id: "restart",
        summary: "Record the restart state and exit with code 42 for the service manager to restart",
        tag: "admin",
        access: Access::Admin,
        params: &[],
        body: None,
        answer: Answer {
            status: 202,
            content_type: JSON,
            schema: "Restarting",
            also: &[],
        },
        errors: &[401, 403, 503],
        mount: |m| on(m, admin::restart),
    },
    Route {
        verb: Verb::Post,
        path: "/api/backup",
        operation_id: "backup",
        summary: "Take a verified snapshot now",
        tag: "admin",
        access: Access::Admin,
        params: &[],
        body: None,
        answer: json("BackupTaken"),
        errors: &[401, 403, 503],
        mount: |m| on(m, admin::backup),
    },
    Route {
        verb: Verb::Get,
        path: "/api/admin/dump",
        operation_id: "dump",
        summary: "Every row of the chosen tables, from one read transaction, as `agentlab dump --format` prints it",
        tag: "admin",
        access: Access::Admin,
        params: &[
            Param {
                name: "table",
                location: In::Query,
                required: false,
                kind: Kind::SomeOf(DUMP_TABLES),
                description: "Only these tables (repeat or comma-separate; default all).",
            },
            Param {
                name: "format",
                location: In::Query,
                required: false,
                kind: Kind::OneOf(&["ndjson", "json", "table"]),
                description: "ndjson (default): one JSON object per row, streamed; json: one document {table: [rows]}; table: `== table ==` headers and key=value lines.",
            },
            Param {
                name: "since",
                location: In::Query,
                required: false,
                kind: Kind::Unsigned { min: 0, max: None },
                description: "Only rows at or after this time, unix ms (events, tasks, alerts).",
            },
        ],
        body: None,
        answer: Answer {
            status: 200,
            content_type: "application/x-ndjson",
            schema: "Text",
            also: &[JSON, "text/plain; charset=utf-8"],
        },
        errors: &[400, 401, 403],
        mount: |m| on(m, admin::dump),
    },
    Route {
        verb: Verb::Get,
        path: "/api/openapi.json",
        operation_id: "openapi",
        summary: "This document",
        tag: "meta",
        access: Access::Read,
        params: &[],
        body: None,
        answer: json("OpenApi"),
        errors: &[],
        mount: |m| on(m, super::openapi::document),
    },
    Route {
        verb: Verb::Get,
        path: "/",
        operation_id: "dashboard",
        summary: "The dashboard page (HTML); off a loopback http.bind it needs the read or admin token (bearer or `?token=`)",
        tag: "dashboard",
        access: Access::Read,
        params: &[],
        body: None,
        answer: Answer {
            status: 200,
            content_type: "text/html; charset=utf-8",
            schema: "Text",
            also: &[],
        },
        errors: &[401, 403],
        mount: |m| on(m, dashboard::page_handler),
    },
    Route {
        verb: Verb::Get,
        path: "/api/dashboard",
        operation_id: "dashboardSummary",
        summary: "What the dashboard shows besides its charts: status, bots, queue, cost, alerts (firing first), recent tasks, last backup",
        tag: "dashboard",
        access: Access::Read,
        params: &[],
        body: None,
        answer: json("Dashboard"),
        errors: &[401, 403, 503],
        mount: |m| on(m, dashboard::summary),
    },
];
