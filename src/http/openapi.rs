//! `GET /api/openapi.json`: the OpenAPI 3.1 document, generated from the route
//! table ([`super::routes::ROUTES`]) the router is built from, so it lists every
//! route with its method, parameters, body and answers.

use std::sync::OnceLock;

use axum::Json;
use serde_json::{Map, Value, json};

use super::routes::{Access, In, Kind, ROUTES, Route};

/// `GET /api/openapi.json`
pub(crate) async fn document() -> Json<Value> {
    static DOC: OnceLock<Value> = OnceLock::new();
    Json(DOC.get_or_init(build).clone())
}

/// Builds the document from the route table.
pub(crate) fn build() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        item[route.verb.as_str()] = operation(route);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "agentlab",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Health, status, observability and admin API of an agentlab service. \
                Errors are JSON {\"error\", \"code\"}. Admin routes need `Authorization: Bearer <token>` \
                (the token from http.admin_token_env); they answer 403 when no token is configured. \
                When http.bind is not a loopback address every other route but /health, /livez and /readyz \
                needs a bearer token too, the read-only one (http.read_token_env) or the admin one \
                (401 without it, 403 when neither is configured); on loopback they are open.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
    })
}

fn operation(route: &Route) -> Value {
    let mut responses = Map::new();
    let content = if route.answer.schema == "Text" {
        // Text answers; a JSON one among them (the dump's `format=json`) is an object.
        let mut content = Map::new();
        for content_type in std::iter::once(&route.answer.content_type).chain(route.answer.also) {
            let schema = if *content_type == "application/json" {
                json!({"type": "object"})
            } else {
                json!({"type": "string"})
            };
            content.insert(content_type.to_string(), json!({"schema": schema}));
        }
        Value::Object(content)
    } else {
        json!({route.answer.content_type: {"schema": {"$ref": format!("#/components/schemas/{}", route.answer.schema)}}})
    };
    responses.insert(
        route.answer.status.to_string(),
        json!({"description": "success", "content": content}),
    );
    let refusals: &[u16] = if route.access == Access::Read {
        &[401, 403]
    } else {
        &[]
    };
    let mut errors: Vec<u16> = route.errors.iter().chain(refusals).copied().collect();
    errors.sort_unstable();
    errors.dedup();
    for status in &errors {
        let content = if route.path == "/health" && *status == 503 {
            json!({"application/health+json": {"schema": {"$ref": "#/components/schemas/Health"}}})
        } else if route.path == "/readyz" && *status == 503 {
            json!({"application/json": {"schema": {"$ref": "#/components/schemas/Probe"}}})
        } else {
            json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}})
        };
        responses.insert(
            status.to_string(),
            json!({"description": error_description(*status), "content": content}),
        );
    }
    // `bound_query` refuses an over-long query string on every route.
    responses.insert(
        "414".to_string(),
        json!({"description": error_description(414), "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
    );
    let params: Vec<Value> = route
        .params
        .iter()
        .map(|p| {
            let description = if p.name == "metric_type" {
                format!("{} {}", p.description, metric_types_text())
            } else {
                p.description.to_string()
            };
            let mut param = json!({
                "name": p.name,
                "in": match p.location { In::Path => "path", In::Query => "query" },
                "required": p.required,
                "description": description,
                "schema": kind_schema(p.kind),
            });
            if matches!(p.kind, Kind::SomeOf(_)) {
                param["style"] = json!("form");
                param["explode"] = json!(true);
            }
            param
        })
        .collect();
    let mut op = json!({
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "responses": responses,
    });
    if !params.is_empty() {
        op["parameters"] = json!(params);
    }
    if let Some(body) = route.body {
        op["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}},
        });
    }
    match route.access {
        Access::Open => {}
        // Open on a loopback bind, a token on any other: either is acceptable.
        Access::Read => op["security"] = json!([{}, {"bearerAuth": []}]),
        Access::Admin => op["security"] = json!([{"bearerAuth": []}]),
    }
    op
}

/// The metric types the history route answers for, as one sentence.
fn metric_types_text() -> String {
    let listed: Vec<String> = crate::monitor::series::METRIC_TYPES
        .iter()
        .map(|(name, what)| format!("`{name}` ({what})"))
        .collect();
    format!("Metric types: {}.", listed.join("; "))
}

fn kind_schema(kind: Kind) -> Value {
    match kind {
        Kind::Unsigned { min, max } => {
            // Handlers parse u64: without a smaller bound the whole u64 range is
            // valid (`format: int64` would claim a maximum of 2^63 - 1).
            json!({"type": "integer", "minimum": min, "maximum": max.unwrap_or(u64::MAX)})
        }
        Kind::Text => json!({"type": "string"}),
        Kind::OneOf(words) => json!({"type": "string", "enum": words}),
        Kind::SomeOf(words) => json!({"type": "array", "items": {"type": "string", "enum": words}}),
    }
}

fn error_description(status: u16) -> &'static str {
    match status {
        400 => "bad parameter or body",
        401 => "missing or wrong bearer token",
        403 => "no token is configured for this route (admin routes; read routes off loopback)",
        404 => "unknown bot, task or metric",
        409 => "the task is not in a state that allows this",
        413 => "body too large",
        414 => "query string too long",
        415 => "body is not application/json",
        503 => "unhealthy, or the store could not answer",
        _ => "error",
    }
}

fn schemas() -> Value {
    let nullable_int = json!({"type": ["integer", "null"]});
    let nullable_str = json!({"type": ["string", "null"]});
    let approval_questions = json!({
        "type": "array",
        "description": "The questions, for kind `question`, answered in order.",
        "items": {
            "type": "object",
            "required": ["question", "header", "multi_select", "options", "answer"],
            "properties": {
                "question": {"type": "string"},
                "header": {"type": "string"},
                "multi_select": {"type": "boolean"},
                "options": {"type": "array", "items": {"type": "string"}},
                "answer": {"type": ["string", "null"], "description": "The chosen label (labels joined by \", \" for a multi-select question), once answered."},
            },
        },
    });
    json!({
        "Error": {
            "type": "object",
            "required": ["error", "code"],
            "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
        },
        "Probe": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string", "enum": ["pass", "fail"]}, "reason": {"type": "string"}},
        },
        "Health": {
            "type": "object",
            "required": ["status", "version", "checks"],
            "properties": {
                "status": {"type": "string", "enum": ["pass", "warn", "fail"]},
                "version": {"type": "string"},
                "uptime_s": {"type": "integer"},
                "checks": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["status", "time"],
                            "properties": {
                                "componentId": {"type": "string"},
                                "status": {"type": "string", "enum": ["pass", "warn", "fail"]},
                                "observedUnit": {"type": "string"},
                                "time": {"type": "string"},
                            },
                        },
                    },
                },
                "notes": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Bots": {
            "type": "object",
            "required": ["bots"],
            "properties": {"bots": {"type": "array", "items": {
                "type": "object",
                "required": ["id", "state", "queue_depth", "circuit"],
                "properties": {
                    "id": {"type": "string"},
                    "username": nullable_str,
                    "state": {"type": "string"},
                    "queue_depth": {"type": "integer"},
                    "circuit": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            }}},
        },
        "BotStatus": {
            "type": "object",
            "required": ["bot_id", "state", "uptime_s", "queue_depth", "busy_workers", "cost_today_usd", "circuit"],
            "properties": {
                "bot_id": {"type": "string"},
                "state": {"type": "string"},
                "uptime_s": {"type": "integer"},
                "queue_depth": {"type": "integer"},
                "busy_workers": {"type": "integer"},
                "workers": {"type": "integer"},
                "cost_today_usd": {"type": "number"},
                "circuit": {"type": "object", "additionalProperties": {"type": "string"}},
                "telegram": {"type": "object"},
            },
        },
        "CircuitStatus": {
            "type": "object",
            "required": ["bot_id", "dependencies"],
            "properties": {
                "bot_id": {"type": "string"},
                "dependencies": {"type": "array", "items": {
                    "type": "object",
                    "required": ["dependency", "state", "failure_count", "failure_rate", "last_transition", "next_probe_at_ms"],
                    "properties": {
                        "dependency": {"type": "string", "enum": ["agent", "telegram"]},
                        "state": {"type": "string", "enum": ["closed", "open", "half_open"]},
                        "failure_count": {"type": "integer"},
                        "failure_rate": {"type": "number"},
                        "last_transition": {"type": ["object", "null"]},
                        "next_probe_at_ms": nullable_int,
                    },
                }},
            },
        },
        "Task": {
            "type": "object",
            "required": ["id", "bot_id", "user_id", "status", "prompt", "created_ms"],
            "properties": {
                "id": {"type": "integer"},
                "bot_id": {"type": "string"},
                "user_id": {"type": "integer"},
                "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]},
                "prompt": {"type": "string"},
                "created_ms": {"type": "integer"},
                "result": nullable_str,
                "error": nullable_str,
                "cost_usd": {"type": "number"},
                "project": {"type": "string", "description": "GET /api/tasks/{id} only: the project the task runs in (`default`: the bot's workdir)"},
                "steps": {
                    "type": "object",
                    "description": "GET /api/tasks/{id} only: the agent's tool calls, oldest first, at most 200 kept (`earlier` counts the ones folded away)",
                    "properties": {
                        "earlier": {"type": "integer"},
                        "items": {"type": "array", "items": {
                            "type": "object",
                            "properties": {"at_ms": {"type": "integer"}, "summary": {"type": "string"}},
                        }},
                    },
                },
            },
        },
        "TaskList": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
        "CreateTask": {
            "type": "object",
            "required": ["bot_id", "user_id", "prompt"],
            "additionalProperties": false,
            "properties": {
                "bot_id": {"type": "string"},
                "user_id": {"type": "integer", "format": "int64"},
                "prompt": {"type": "string", "minLength": 1},
                "chat_id": {"type": "integer", "format": "int64"},
                "project": {"type": "string", "description": "a project of the bot (`[[bots.projects]]`); absent: `default`; unknown: 400 naming the bot's projects"},
            },
        },
        "TaskCreated": {
            "type": "object",
            "required": ["id", "status"],
            "properties": {"id": {"type": "integer"}, "status": {"type": "string"}},
        },
        "Approval": {
            "type": "object",
            "required": ["id", "task_id", "bot_id", "user_id", "tool", "input", "created_ms"],
            "properties": {
                "id": {"type": "integer"},
                "task_id": {"type": "integer"},
                "bot_id": {"type": "string"},
                "user_id": {"type": "integer", "format": "int64"},
                "tool": {"type": "string"},
                "input": {"description": "The tool's input as the agent sent it."},
                "created_ms": {"type": "integer"},
                "message_id": {"type": ["integer", "null"], "description": "The Telegram message that shows it, once Telegram has taken it."},
                "decision": {"type": ["string", "null"], "enum": ["allow", "always_allow", "deny", "timed_out", null]},
                "decided_by": {"type": ["string", "null"]},
                "decided_ms": nullable_int,
                "kind": {"type": "string", "enum": ["tool", "question", "plan"], "description": "What is asked: to run a tool, to answer the agent's questions (AskUserQuestion), or to approve its plan (ExitPlanMode: allow approves it, deny keeps the agent planning)."},
                "options": {"type": "array", "items": {"type": "string"}, "description": "What may be chosen now: the labels of the first open question for a question (send one as `answer`), `allow` and `deny` otherwise (send one as `decision`)."},
                "plan": {"type": ["string", "null"], "description": "The plan, for kind `plan`."},
                "questions": approval_questions,
            },
        },
        "ApprovalList": {"type": "array", "items": {"$ref": "#/components/schemas/Approval"}},
        "ApprovalDecisions": {
            "type": "object",
            "required": ["decisions"],
            "properties": {"decisions": {"type": "array", "items": {
                "type": "object",
                "required": ["timestamp", "at_ms", "event", "approval_id", "tool", "input_sha256", "decision", "by", "waited_s"],
                "properties": {
                    "timestamp": {"type": "string"},
                    "at_ms": {"type": "integer"},
                    "bot_id": {"type": ["string", "null"]},
                    "event": {"type": "string", "enum": ["approval"]},
                    "approval_id": {"type": "integer"},
                    "task_id": {"type": "integer"},
                    "user_id": {"type": "integer", "format": "int64"},
                    "tool": {"type": "string"},
                    "kind": {"type": "string", "enum": ["tool", "question", "plan"]},
                    "input_sha256": {"type": "string", "description": "Hex SHA-256 of the tool's input as the agent sent it."},
                    "decision": {"type": "string", "enum": ["allow", "always_allow", "deny", "timed_out", "expired"]},
                    "by": {"type": "string"},
                    "by_user": {"type": ["integer", "null"], "format": "int64"},
                    "waited_s": {"type": "number"},
                    "answers": {"type": ["object", "null"], "description": "For an answered question: each question's text → the chosen label."},
                },
            }}},
        },
        "DecideApproval": {
            "type": "object",
            "description": "Exactly one of `decision` and `answer`.",
            "oneOf": [{"required": ["decision"]}, {"required": ["answer"]}],
            "additionalProperties": false,
            "properties": {
                "decision": {"type": "string", "enum": ["allow", "deny"], "description": "For a question only `deny`: it is allowed by its answers."},
                "answer": {"type": "string", "minLength": 1, "description": "For kind `question`: a label of the first open question (several labels of a multi-select question joined by \", \"). The approval is allowed, with the answers, once every question is answered."},
                "by": {"type": "string", "maxLength": 64, "description": "Who decides, as recorded (control characters dropped); empty or absent: `api`."},
            },
        },
        "TaskCancelled": {
            "type": "object",
            "required": ["id", "status"],
            "properties": {"id": {"type": "integer"}, "status": {"type": "string"}},
        },
        "Snapshot": {"type": "object"},
        "History": {
            "type": "object",
            "required": ["metric_type", "from", "to", "resolution", "series"],
            "properties": {
                "metric_type": {"type": "string"},
                "from": {"type": "integer"},
                "to": {"type": "integer"},
                "resolution": {"type": "string", "enum": ["raw", "minute", "hour"]},
                "step": nullable_int,
                "down": {
                    "description": "Periods of the range when the service was not running: no line belongs across them.",
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["from_ms", "to_ms"],
                        "properties": {"from_ms": {"type": "integer"}, "to_ms": {"type": "integer"}},
                    },
                },
                "series": {"type": "array", "items": {
                    "type": "object",
                    "required": ["name", "points"],
                    "properties": {"name": {"type": "string"}, "points": {"type": "array"}},
                }},
            },
        },
        "Alerts": {
            "type": "object",
            "required": ["alerts"],
            "properties": {"alerts": {"type": "array", "items": {"type": "object"}}},
        },
        "Restarting": {
            "type": "object",
            "required": ["status", "exit_code"],
            "properties": {"status": {"type": "string"}, "exit_code": {"type": "integer"}},
        },
        "BackupTaken": {
            "type": "object",
            "required": ["status", "path"],
            "properties": {"status": {"type": "string"}, "path": {"type": "string"}},
        },
        "OpenApi": {"type": "object", "required": ["openapi", "paths"]},
        "Dashboard": {
            "type": "object",
            "required": ["status", "uptime_s", "bots", "queue", "cost", "alerts", "tasks"],
        },
    })
}

#[cfg(test)]
mod tests {
    use crate::monitor::series::METRIC_TYPES;

    #[test]
    fn every_metric_type_is_listed_in_the_document_and_the_readme() {
        let doc = super::build();
        let params = doc["paths"]["/api/observability/history/{metric_type}"]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .clone();
        let metric = params
            .iter()
            .find(|p| p["name"] == "metric_type")
            .expect("metric_type");
        let described = metric["description"].as_str().expect("description");
        let readme = include_str!("../../README.md");
        for (name, _) in METRIC_TYPES {
            assert!(
                described.contains(&format!("`{name}`")),
                "{name} not in the document"
            );
            assert!(
                readme.contains(&format!("| `{name}` |")),
                "{name} not in the README"
            );
        }
    }

    #[test]
    fn read_routes_document_their_token_and_refusals() {
        let doc = super::build();
        for path in ["/metrics", "/api/tasks", "/api/openapi.json", "/"] {
            let op = &doc["paths"][path]["get"];
            assert_eq!(
                op["security"],
                serde_json::json!([{}, {"bearerAuth": []}]),
                "{path}"
            );
            assert!(
                op["responses"]["401"].is_object() && op["responses"]["403"].is_object(),
                "{path}"
            );
        }
        for path in ["/health", "/livez", "/readyz"] {
            let op = &doc["paths"][path]["get"];
            assert!(op["security"].is_null(), "{path}");
            assert!(op["responses"]["401"].is_null(), "{path}");
        }
        assert_eq!(
            doc["paths"]["/api/restart"]["post"]["security"],
            serde_json::json!([{"bearerAuth": []}])
        );
    }
}
