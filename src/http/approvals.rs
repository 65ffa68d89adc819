//! Approval routes: the pending tool approvals, and deciding one, without Telegram
//! (`agentlab approvals` / `agentlab approve` call these). An approval that asks
//! the user questions is answered with `{"answer": label}`, one question at a
//! time, or denied; one that asks to approve a plan is allowed (Approve plan) or
//! denied (Keep planning).
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
use crate::approvals::ask::{self, ApprovalKind, Press, PressOutcome};
use crate::approvals::{AnswerOutcome, Decider};
use crate::storage::{Approval, ApprovalDecision, DecideOutcome, QuestionPick};

/// Body of `POST /api/approvals/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Decide {
    /// Allow or deny (a tool or a plan; a question is only denied this way).
    #[serde(default)]
    decision: Option<DecisionWord>,
    /// The chosen label for the first open question of a question approval
    /// (several labels of a multi-select question joined by ", ").
    #[serde(default)]
    answer: Option<String>,
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
    let mut out = Vec::with_capacity(pending.len());
    for approval in &pending {
        let picks = picks_of(&api, approval)?;
        out.push(approval_json(approval, &picks));
    }
    Ok(Json(Value::Array(out)))
}

/// `POST /api/approvals/{id}`
pub(crate) async fn decide(
    _: Admin,
    State(api): State<AppState>,
    ApiPath(id): ApiPath<u64>,
    ApiJson(body): ApiJson<Decide>,
) -> Result<Json<Value>, ApiError> {
    let given = body.by.clone().unwrap_or_default();
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
    let decision = match (body.decision, body.answer) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(ApiError::bad_request(
                "give either `decision` (allow or deny) or `answer` (an option's label)",
            ));
        }
        (None, Some(label)) => return answer(&api, id, label, by).await,
        (Some(DecisionWord::Allow), None) => ApprovalDecision::Allow,
        (Some(DecisionWord::Deny), None) => ApprovalDecision::Deny,
    };
    if decision == ApprovalDecision::Allow
        && let Some(approval) = api.ctx.store.approval(id)?
        && ApprovalKind::of(&approval) == ApprovalKind::Question
    {
        return Err(ApiError::bad_request(format!(
            "approval {id} asks questions: answer them with {{\"answer\": \"<label>\"}} or deny it"
        )));
    }
    let outcome = api
        .ctx
        .pool
        .approvals()
        .decide(id, decision, by)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    match outcome {
        DecideOutcome::Decided(approval) => {
            let picks = picks_of(&api, &approval)?;
            Ok(Json(approval_json(&approval, &picks)))
        }
        DecideOutcome::AlreadyDecided(approval) => Err(ApiError::conflict(format!(
            "approval {id} was already decided: {}",
            approval.verdict.map_or("?", |v| v.decision.as_str())
        ))),
        DecideOutcome::Unknown => Err(ApiError::not_found(format!("approval {id} not found"))),
    }
}

/// Answers the first open question of a question approval with `label`.
async fn answer(
    api: &AppState,
    id: u64,
    label: String,
    by: Decider,
) -> Result<Json<Value>, ApiError> {
    let outcome = api
        .ctx
        .pool
        .approvals()
        .answer(id, Press::Label(label.clone()), by)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    match outcome {
        AnswerOutcome::Recorded(approval) | AnswerOutcome::Answered(approval) => {
            let now = api.ctx.store.approval(id)?.unwrap_or(approval);
            let picks = picks_of(api, &now)?;
            Ok(Json(approval_json(&now, &picks)))
        }
        AnswerOutcome::AlreadyDecided(approval) => Err(ApiError::conflict(format!(
            "approval {id} was already decided: {}",
            approval.verdict.map_or("?", |v| v.decision.as_str())
        ))),
        AnswerOutcome::NotAQuestion => Err(ApiError::bad_request(format!(
            "approval {id} asks no question: decide it with {{\"decision\": \"allow\"|\"deny\"}}"
        ))),
        AnswerOutcome::Refused(PressOutcome::AlreadyAnswered) => Err(ApiError::conflict(format!(
            "every question of approval {id} is answered"
        ))),
        AnswerOutcome::Refused(_) => {
            let options = match api.ctx.store.approval(id)? {
                Some(approval) => options_of(&approval, &picks_of(api, &approval)?).join(", "),
                None => String::new(),
            };
            Err(ApiError::bad_request(format!(
                "`{}` is not an option of the question; choose one of: {options}",
                label.chars().take(MAX_BY_CHARS).collect::<String>()
            )))
        }
        AnswerOutcome::Unknown => Err(ApiError::not_found(format!("approval {id} not found"))),
    }
}

fn picks_of(api: &AppState, approval: &Approval) -> Result<Vec<QuestionPick>, ApiError> {
    if ApprovalKind::of(approval) != ApprovalKind::Question {
        return Ok(Vec::new());
    }
    Ok(api.ctx.store.approval_picks(approval.id)?)
}

/// What may be chosen now: the labels of the first open question for a
/// question (`answer`), the decisions for the others (`decision`).
fn options_of(approval: &Approval, picks: &[QuestionPick]) -> Vec<String> {
    if ApprovalKind::of(approval) != ApprovalKind::Question {
        return vec!["allow".into(), "deny".into()];
    }
    let questions = ask::questions(&ask::input_of(approval));
    ask::current(&questions, picks)
        .map(|q| {
            questions[q]
                .options
                .iter()
                .map(|(l, _)| l.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// An approval as the API shows it.
fn approval_json(approval: &Approval, picks: &[QuestionPick]) -> Value {
    let input = ask::input_of(approval);
    let kind = ApprovalKind::of(approval);
    let mut out = json!({
        "id": approval.id,
        "task_id": approval.asked.task_id,
        "bot_id": approval.asked.bot_id,
        "user_id": approval.asked.user_id,
        "tool": approval.asked.tool_name,
        "input": input,
        "created_ms": approval.asked.created_ms,
        "message_id": approval.message_id,
        "decision": approval.verdict.as_ref().map(|v| v.decision.as_str()),
        "decided_by": approval.verdict.as_ref().map(|v| v.by.clone()),
        "decided_ms": approval.verdict.as_ref().map(|v| v.at_ms),
        "kind": kind.as_str(),
        "options": options_of(approval, picks),
    });
    let Some(map) = out.as_object_mut() else {
        return out;
    };
    match kind {
        ApprovalKind::Tool => {}
        ApprovalKind::Plan => {
            map.insert(
                "plan".into(),
                input.get("plan").cloned().unwrap_or(Value::Null),
            );
        }
        ApprovalKind::Question => {
            let questions: Vec<Value> = ask::questions(&input)
                .iter()
                .enumerate()
                .map(|(i, q)| {
                    let answer = ask::pick_of(picks, i)
                        .filter(|p| p.done)
                        .map(|p| p.labels.join(", "));
                    json!({"question": q.text, "header": q.header, "multi_select": q.multi_select,
                           "options": q.options.iter().map(|(l, _)| l).collect::<Vec<_>>(),
                           "answer": answer})
                })
                .collect();
            map.insert("questions".into(), Value::Array(questions));
        }
    }
    out
}
