//! Tool approvals: what happens between an agent asking to use a tool
//! (`control_request`, subtype `can_use_tool`) and its answer (`control_response`
//! written to the agent's input pipe).
//!
//! A request is answered at once when the bot's configuration or the session
//! already decided it (a disallowed tool: deny; a tool "always allowed" in this
//! (bot, user, project) session: allow); otherwise it is stored as a pending approval and
//! announced ([`ApprovalNews::Asked`]) so the bot shows it with buttons. Whoever
//! decides — a button, the HTTP API, the CLI through it, or the timeout — calls
//! [`Approvals::decide`]. Requests that ask the user questions or approve a plan
//! are approvals too ([`ask`]); a question's options are chosen with
//! [`Approvals::answer`], which decides it once every question is answered.
//!
//! Invariants:
//! - durable before answered: the decision is stored (once, see
//!   [`crate::storage::DecideOutcome`]) before the `control_response` is written,
//!   so a second press or a restart never answers twice;
//! - every decision is an `approval` event: who, the tool, a digest of its input,
//!   the decision and the seconds waited;
//! - "always allow" lasts for the (bot, user, project) session (the project is
//!   the task's): [`Approvals::forget_session`]
//!   (`/new`) ends it; it is kept in memory only, so a restart asks again;
//! - a request outlives neither its run nor its agent: when the run ends, or a
//!   restart finds the agent gone, what is still pending is expired.

pub mod ask;

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::broadcast;

use self::ask::{ApprovalKind, Press, PressOutcome};
use crate::config::Config;
use crate::storage::{
    Approval, ApprovalDecision, ApprovalVerdict, DecideOutcome, NewApproval, PicksUpdate, Store,
    StoreError, now_ms,
};

/// Announcements kept for slow listeners.
const NEWS_CHANNEL: usize = 256;
/// Who decides when nobody answered in time.
pub const TIMEOUT_DECIDER: &str = "timeout";
/// Who decides when the agent stopped before an answer.
pub const EXPIRY_DECIDER: &str = "expiry";

/// Something changed about an approval (its id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalNews {
    /// A request waits for a decision: show it (or, when it is shown already,
    /// show it as it now stands: a question answered in part).
    Asked(u64),
    /// It was decided: update what shows it.
    Decided(u64),
}

/// A `control_request` read from an agent's output, with the task it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRequest {
    /// The task whose agent asks.
    pub task_id: u64,
    /// The task's bot.
    pub bot_id: String,
    /// The task's user.
    pub user_id: i64,
    /// The task's chat.
    pub chat_id: i64,
    /// The folder of the agent process (its `stdin` pipe).
    pub process_dir: PathBuf,
    /// The CLI's request id.
    pub request_id: String,
    /// What is asked (`can_use_tool`, ...).
    pub subtype: String,
    /// The tool, for `can_use_tool`.
    pub tool_name: Option<String>,
    /// The tool's input.
    pub input: Value,
}

/// Why a decision could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    /// The store failed.
    #[error("cannot record the decision: {0}")]
    Store(#[from] StoreError),
}

/// How approvals reach agent processes, given by the worker that owns them, so
/// this module names nothing of the worker.
#[derive(Clone, Copy)]
pub struct AgentLink {
    /// Writes one line to the input of the agent whose process folder is given;
    /// fails at once when nothing reads it (blocking: run off the runtime).
    pub write_line: fn(&Path, &[u8]) -> io::Result<()>,
    /// Whether the agent of a process folder still runs.
    pub is_alive: fn(&Path) -> bool,
}

/// What [`Approvals::answer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerOutcome {
    /// The choice was recorded; other questions remain.
    Recorded(Approval),
    /// The choice answered the last question: the approval is decided (allowed,
    /// with the answers).
    Answered(Approval),
    /// The approval was decided before.
    AlreadyDecided(Approval),
    /// The approval does not ask questions.
    NotAQuestion,
    /// The choice does not fit (see [`PressOutcome`]); nothing changed.
    Refused(PressOutcome),
    /// No such approval.
    Unknown,
}

/// Who decides, as recorded and shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decider {
    /// A name: the Telegram user's, `api`, `cli` or [`TIMEOUT_DECIDER`].
    pub name: String,
    /// The Telegram user, if one decided.
    pub user_id: Option<i64>,
}

/// The approvals of the service (cheap to clone).
#[derive(Clone)]
pub struct Approvals {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: Arc<Config>,
    link: AgentLink,
    /// (bot, user, project, tool) always allowed in the session. A std Mutex:
    /// held for a set operation only, never across an await.
    always: Mutex<HashSet<(String, i64, String, String)>>,
    /// Approvals whose timeout runs in this process (same kind of Mutex).
    timed: Mutex<HashSet<u64>>,
    news: broadcast::Sender<ApprovalNews>,
}

impl Approvals {
    /// The approvals over `store`, with each bot's settings from `config`,
    /// answering agents through `link`.
    pub fn new(store: Store, config: Arc<Config>, link: AgentLink) -> Self {
        Approvals {
            inner: Arc::new(Inner {
                store,
                config,
                link,
                always: Mutex::default(),
                timed: Mutex::default(),
                news: broadcast::channel(NEWS_CHANNEL).0,
            }),
        }
    }

    /// Announcements of asked and decided approvals, as they happen. A receiver
    /// that falls behind should look at [`Store::pending_approvals`] again.
    pub fn subscribe(&self) -> broadcast::Receiver<ApprovalNews> {
        self.inner.news.subscribe()
    }

    /// Handles a request read from an agent's output: answers it at once when the
    /// configuration or the session already decided, otherwise stores it (once)
    /// and announces it.
    pub async fn on_request(&self, request: AgentRequest) {
        if request.subtype != "can_use_tool" {
            // Nothing else is asked of a controller that does not offer it; an
            // error answer keeps the CLI from waiting for one.
            tracing::debug!(subtype = %request.subtype, "unsupported control request");
            let line = error_line(&request.request_id, "not supported by agentlab");
            self.write_answer(&request.process_dir, line).await;
            return;
        }
        let tool = request.tool_name.clone().unwrap_or_default();
        let bot = self.inner.config.bot(&request.bot_id);
        let disallowed = bot.is_some_and(|b| b.agent.disallowed_tools.contains(&tool));
        let project = self.project_of(request.task_id);
        let always = lock(&self.inner.always).contains(&(
            request.bot_id.clone(),
            request.user_id,
            project,
            tool.clone(),
        ));
        let new = NewApproval {
            task_id: request.task_id,
            bot_id: request.bot_id.clone(),
            user_id: request.user_id,
            chat_id: request.chat_id,
            request_id: request.request_id.clone(),
            tool_name: tool,
            input_json: request.input.to_string(),
            process_dir: request.process_dir.to_string_lossy().into_owned(),
            created_ms: now_ms(),
        };
        let (approval, is_new) = match self.inner.store.create_approval(new).await {
            Ok(stored) => stored,
            Err(error) => {
                // Not stored, not shown: deny rather than leave the agent waiting.
                tracing::error!(%error, "cannot store an approval request; denying it");
                let line = answer_line(
                    &request.request_id,
                    ApprovalDecision::Deny,
                    &Value::Null,
                    "agentlab could not record the approval request",
                );
                self.write_answer(&request.process_dir, line).await;
                return;
            }
        };
        if approval.verdict.is_some() {
            // Answered before (a turn followed again after a restart).
            return;
        }
        if is_new && (disallowed || always) {
            // Decided by the configuration or the session, stored all the same so
            // that a turn followed again after a restart does not ask anew.
            let (decision, by) = if disallowed {
                (ApprovalDecision::Deny, "configuration")
            } else {
                (ApprovalDecision::Allow, "always allow")
            };
            let by = Decider {
                name: by.into(),
                user_id: None,
            };
            if let Err(error) = self.decide(approval.id, decision, by).await {
                tracing::error!(%error, "cannot record an automatic approval decision");
            }
            return;
        }
        if is_new || approval.message_id.is_none() {
            let _ = self.inner.news.send(ApprovalNews::Asked(approval.id));
        }
        self.arm_timeout(&approval);
    }

    /// At start-up, for the requests a previous process stored: expires those
    /// whose agent is gone and arms the timeouts of the others.
    pub async fn arm_pending(&self) {
        let pending = match self.inner.store.pending_approvals() {
            Ok(pending) => pending,
            Err(error) => {
                tracing::error!(%error, "cannot read the pending approvals");
                return;
            }
        };
        for approval in pending {
            if (self.inner.link.is_alive)(Path::new(&approval.asked.process_dir)) {
                self.arm_timeout(&approval);
            } else {
                self.expire(approval.id).await;
            }
        }
    }

    /// Expires the approvals of `task_id` still pending once its run ended.
    pub async fn expire_task(&self, task_id: u64) {
        match self.inner.store.pending_approvals() {
            Ok(pending) => {
                for approval in pending.into_iter().filter(|a| a.asked.task_id == task_id) {
                    self.expire(approval.id).await;
                }
            }
            Err(error) => tracing::error!(%error, "cannot read the pending approvals"),
        }
    }

    async fn expire(&self, id: u64) {
        let by = Decider {
            name: EXPIRY_DECIDER.into(),
            user_id: None,
        };
        if let Err(error) = self.decide(id, ApprovalDecision::Expired, by).await {
            tracing::error!(%error, approval_id = id, "cannot expire an approval");
        }
    }

    /// Decides an approval: stores the decision (unless one was taken before),
    /// then answers the agent, records the event and announces it.
    pub async fn decide(
        &self,
        id: u64,
        decision: ApprovalDecision,
        by: Decider,
    ) -> Result<DecideOutcome, ApprovalError> {
        let at_ms = now_ms();
        let verdict = ApprovalVerdict {
            decision,
            by: by.name.clone(),
            by_user: by.user_id,
            at_ms,
        };
        let outcome = self.inner.store.decide_approval(id, verdict).await?;
        let DecideOutcome::Decided(approval) = &outcome else {
            return Ok(outcome);
        };
        if decision == ApprovalDecision::AlwaysAllow {
            let project = self.project_of(approval.asked.task_id);
            lock(&self.inner.always).insert((
                approval.asked.bot_id.clone(),
                approval.asked.user_id,
                project,
                approval.asked.tool_name.clone(),
            ));
        }
        let kind = ApprovalKind::of(approval);
        let mut input = ask::input_of(approval);
        let mut answers = None;
        if kind == ApprovalKind::Question && decision.allows() {
            // Frozen once decided; unreadable, the agent still gets its answer.
            let picks = self.inner.store.approval_picks(id).unwrap_or_else(|error| {
                tracing::error!(%error, approval_id = id, "cannot read the answers");
                Vec::new()
            });
            input = ask::answered_input(&input, &picks);
            answers = input.get("answers").cloned();
        }
        let by_person =
            by.name != TIMEOUT_DECIDER && by.name != EXPIRY_DECIDER && by.name != "configuration";
        let message = match decision {
            ApprovalDecision::TimedOut => format!(
                "Nobody answered the approval request within {} s: denied.",
                self.timeout_s(&approval.asked.bot_id)
            ),
            _ if by.name == "configuration" => format!(
                "{} is disallowed by this bot's configuration.",
                approval.asked.tool_name
            ),
            _ if kind == ApprovalKind::Plan && by_person => ask::KEEP_PLANNING_MESSAGE.to_owned(),
            _ => format!("Denied by {} from agentlab.", by.name),
        };
        if decision != ApprovalDecision::Expired {
            let line = answer_line(&approval.asked.request_id, decision, &input, &message);
            self.write_answer(Path::new(&approval.asked.process_dir), line)
                .await;
        }
        lock(&self.inner.timed).remove(&id);
        let waited_s = at_ms.saturating_sub(approval.asked.created_ms) as f64 / 1000.0;
        self.audit(
            &approval.asked.bot_id,
            json!({
                "approval_id": approval.id, "task_id": approval.asked.task_id,
                "user_id": approval.asked.user_id, "tool": approval.asked.tool_name,
                "input_sha256": digest(&approval.asked.input_json),
                "decision": decision.as_str(), "by": by.name, "by_user": by.user_id,
                "waited_s": waited_s, "kind": kind.as_str(), "answers": answers,
            }),
        )
        .await;
        let _ = self.inner.news.send(ApprovalNews::Decided(id));
        Ok(outcome)
    }

    /// Records a choice for an approval that asks questions; once every question
    /// is answered, decides it (allowed, the answers in the tool's input). A
    /// choice that leaves questions open is announced ([`ApprovalNews::Asked`])
    /// so what shows the approval shows the next question.
    pub async fn answer(
        &self,
        id: u64,
        press: Press,
        by: Decider,
    ) -> Result<AnswerOutcome, ApprovalError> {
        match self.inner.store.approval(id)? {
            None => return Ok(AnswerOutcome::Unknown),
            Some(approval) if ApprovalKind::of(&approval) != ApprovalKind::Question => {
                return Ok(AnswerOutcome::NotAQuestion);
            }
            Some(_) => {}
        }
        let update = self
            .inner
            .store
            .update_approval_picks(id, move |approval, picks| {
                let questions = ask::questions(&ask::input_of(approval));
                let mut changed = picks.clone();
                let outcome = ask::apply(&questions, &mut changed, &press);
                if matches!(outcome, PressOutcome::Recorded | PressOutcome::Complete) {
                    *picks = changed;
                }
                outcome
            })
            .await?;
        let (approval, outcome) = match update {
            PicksUpdate::Unknown => return Ok(AnswerOutcome::Unknown),
            PicksUpdate::AlreadyDecided(approval) => {
                return Ok(AnswerOutcome::AlreadyDecided(approval));
            }
            PicksUpdate::Updated(approval, _, outcome) => (approval, outcome),
        };
        match outcome {
            PressOutcome::Recorded => {
                let _ = self.inner.news.send(ApprovalNews::Asked(id));
                Ok(AnswerOutcome::Recorded(approval))
            }
            PressOutcome::Complete => match self.decide(id, ApprovalDecision::Allow, by).await? {
                DecideOutcome::Decided(decided) => Ok(AnswerOutcome::Answered(decided)),
                DecideOutcome::AlreadyDecided(decided) => {
                    Ok(AnswerOutcome::AlreadyDecided(decided))
                }
                DecideOutcome::Unknown => Ok(AnswerOutcome::Unknown),
            },
            refused => Ok(AnswerOutcome::Refused(refused)),
        }
    }

    /// Ends the "always allow" decisions of a (bot, user, project) session (`/new`).
    pub fn forget_session(&self, bot_id: &str, user_id: i64, project: &str) {
        lock(&self.inner.always)
            .retain(|(b, u, p, _)| !(b == bot_id && *u == user_id && p == project));
    }

    /// The project of the task an approval belongs to (its session's).
    fn project_of(&self, task_id: u64) -> String {
        self.inner
            .store
            .task_project(task_id)
            .unwrap_or_else(|error| {
                // Unreadable: a key no session has, so nothing is allowed by mistake.
                tracing::warn!(%error, task_id, "cannot read the task's project");
                String::new()
            })
    }

    /// The store the approvals live in.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// `approval_timeout_s` of a bot (the default for an unknown one).
    pub fn timeout_s(&self, bot_id: &str) -> u64 {
        self.inner
            .config
            .bot(bot_id)
            .map_or(crate::config::DEFAULT_APPROVAL_TIMEOUT_S, |b| {
                b.agent.approval_timeout_s
            })
    }

    /// Denies `approval` once its bot's timeout has passed since it was asked,
    /// unless it is decided before (once per approval and process).
    fn arm_timeout(&self, approval: &Approval) {
        if !lock(&self.inner.timed).insert(approval.id) {
            return;
        }
        let due_ms = approval
            .asked
            .created_ms
            .saturating_add(self.timeout_s(&approval.asked.bot_id).saturating_mul(1000));
        let wait = Duration::from_millis(due_ms.saturating_sub(now_ms()));
        let approvals = self.clone();
        let id = approval.id;
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let by = Decider {
                name: TIMEOUT_DECIDER.into(),
                user_id: None,
            };
            if let Err(error) = approvals.decide(id, ApprovalDecision::TimedOut, by).await {
                tracing::error!(%error, approval_id = id, "cannot deny a timed-out approval");
            }
        });
    }

    /// Writes an answer to the agent's input; an agent that is gone is logged (its
    /// task's run sees the process end and is judged by that).
    async fn write_answer(&self, process_dir: &Path, line: Vec<u8>) {
        let write = self.inner.link.write_line;
        let dir = process_dir.to_path_buf();
        let written = tokio::task::spawn_blocking(move || write(&dir, &line))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r);
        if let Err(error) = written {
            tracing::warn!(%error, dir = %process_dir.display(), "the agent no longer reads its answers");
        }
    }

    async fn audit(&self, bot_id: &str, payload: Value) {
        let stored = self
            .inner
            .store
            .append_event("approval", Some(bot_id), payload, now_ms())
            .await;
        if let Err(error) = stored {
            tracing::error!(%error, "cannot record an approval decision");
        }
    }
}

/// The `control_response` line answering `request_id` with `decision`.
pub fn answer_line(
    request_id: &str,
    decision: ApprovalDecision,
    input: &Value,
    message: &str,
) -> Vec<u8> {
    let response = if decision.allows() {
        json!({"behavior": "allow", "updatedInput": input})
    } else {
        json!({"behavior": "deny", "message": message})
    };
    line(json!({"type": "control_response", "response": {
        "subtype": "success", "request_id": request_id, "response": response}}))
}

fn error_line(request_id: &str, error: &str) -> Vec<u8> {
    line(json!({"type": "control_response", "response": {
        "subtype": "error", "request_id": request_id, "error": error}}))
}

fn line(value: Value) -> Vec<u8> {
    let mut bytes = value.to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}

/// Hex SHA-256 of a tool input (the audit keeps this, not the input).
pub fn digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_echoes_the_input_and_deny_carries_the_message() {
        let input = json!({"command": "ls"});
        let allow: Value = serde_json::from_slice(&answer_line(
            "r1",
            ApprovalDecision::AlwaysAllow,
            &input,
            "",
        ))
        .expect("json");
        assert_eq!(allow["type"], "control_response");
        assert_eq!(allow["response"]["request_id"], "r1");
        assert_eq!(allow["response"]["response"]["behavior"], "allow");
        assert_eq!(allow["response"]["response"]["updatedInput"], input);
        let deny: Value = serde_json::from_slice(&answer_line(
            "r2",
            ApprovalDecision::TimedOut,
            &input,
            "too late",
        ))
        .expect("json");
        assert_eq!(deny["response"]["response"]["behavior"], "deny");
        assert_eq!(deny["response"]["response"]["message"], "too late");
        assert!(deny["response"]["response"].get("updatedInput").is_none());
    }
}
