//! Approval routes: the pending tool approvals, and deciding one, without Telegram
//! (`agentlab approvals` / `agentlab approve` call these).
//!
//! Invariant: both need the admin bearer token (the [`Admin`] extractor comes
//! first); a decision goes through [`crate::approvals::Approvals::decide`], the one
//! way a decision is taken, so it is stored once and the agent answered once,
//! however many callers race.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::admin::Admin;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use crate::approvals::Decider;
use crate::storage::{Approval, ApprovalDecision, DecideOutcome};

/// Body of `POST /api/approvals/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Decide {
    decision: DecisionWord,
    /// Who decides, as recorded (default `api`; `agentlab approve` sends `cli`).
    #[serde(default)]
    by: Option<String>,
}

/// Longest accepted `by`.
const MAX_BY_CHARS: usize = 64;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum DecisionWord {
    Allow,
    Deny,
}

/// `GET /api/approvals`
pub(crate) async fn list(_: Admin, State(api): State<AppState>) -> Result<Json<Value>, ApiError> {
    let pending = api.ctx.store.pending_approvals()?;
    Ok(Json(Value::Array(
        pending.iter().map(approval_json).collect(),
    )))
}

/// `POST /api/approvals/{id}`
pub(crate) async fn decide(
    _: Admin,
    State(api): State<AppState>,
    ApiPath(id): ApiPath<u64>,
    ApiJson(body): ApiJson<Decide>,
) -> Result<Json<Value>, ApiError> {
    let decision = match body.decision {
        DecisionWord::Allow => ApprovalDecision::Allow,
        DecisionWord::Deny => ApprovalDecision::Deny,
    };
    let given = body.by.unwrap_or_default();
    if given.chars().count() > MAX_BY_CHARS {
        return Err(ApiError::bad_request(format!(
            "`by` must be at most {MAX_BY_CHARS} characters"
        )));
    }
    // Shown in the chat and the audit: control characters are dropped.
    let printable: String = given.chars().filter(|c| !c.is_control()).collect();
    let name = match printable.trim() {
        "" => "api".to_owned(),
        name => name.to_owned(),
    };
    let by = Decider {
        name,
        user_id: None,
    };
    let outcome = api
        .ctx
        .pool
        .approvals()
        .decide(id, decision, by)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    match outcome {
        DecideOutcome::Decided(approval) => Ok(Json(approval_json(&approval))),
        DecideOutcome::AlreadyDecided(approval) => Err(ApiError::conflict(format!(
            "approval {id} was already decided: {}",
            approval.verdict.map_or("?", |v| v.decision.as_str())
        ))),
        DecideOutcome::Unknown => Err(ApiError::not_found(format!("approval {id} not found"))),
    }
}

/// An approval as the API shows it.
fn approval_json(approval: &Approval) -> Value {
    let input: Value = serde_json::from_str(&approval.asked.input_json).unwrap_or(Value::Null);
    json!({
        "id": approval.id,
        "task_id": approval.asked.task_id,
        "bot_id": approval.asked.bot_id,
        "user_id": approval.asked.user_id,
        "tool": approval.asked.tool_name,
        "input": input,
        "created_ms": approval.asked.created_ms,
        "decision": approval.verdict.as_ref().map(|v| v.decision.as_str()),
        "decided_by": approval.verdict.as_ref().map(|v| v.by.clone()),
        "decided_ms": approval.verdict.as_ref().map(|v| v.at_ms),
    })
}
