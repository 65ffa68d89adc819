//! Agent sessions per (bot, user, project) and their bounded conversation history.
//!
//! The `default` project's sessions and history are in `sessions` and `messages`,
//! keyed by (bot, user); every other project's are in `project_sessions` and
//! `project_messages`, keyed with the project name. The functions without a
//! project argument are about `default`.
//!
//! Invariant: at most `history_messages` messages are kept per (bot, user,
//! project); the append that exceeds the bound removes the oldest in the same
//! transaction.

use redb::ReadableTable;

use super::batch::Tables;
use super::codec;
use super::error::StoreError;
use super::limits::{MAX_MESSAGE_BYTES, bound_text};
use super::projects::DEFAULT_PROJECT;
use super::records::{ChatMessage, Session};
use super::tables::{MESSAGES, PROJECT_MESSAGES, PROJECT_SESSIONS, SESSIONS};
use super::task_ops::TaskOp;
use super::{Pending, Store, StoreResult};

impl Store {
    /// The session of a (bot, user) in the `default` project, if any.
    pub fn get_session(&self, bot_id: &str, user_id: i64) -> StoreResult<Option<Session>> {
        self.get_project_session(bot_id, user_id, DEFAULT_PROJECT)
    }

    /// The session of a (bot, user) in `project`, if any.
    pub fn get_project_session(
        &self,
        bot_id: &str,
        user_id: i64,
        project: &str,
    ) -> StoreResult<Option<Session>> {
        self.read(|tx| project_session_in(tx, bot_id, user_id, project))
    }

    /// Every session: ((bot, user), session).
    pub fn list_sessions(&self) -> StoreResult<Vec<((String, i64), Session)>> {
        self.read(|tx| {
            let table = tx.open_table(SESSIONS)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                let (bot, user) = k.value();
                out.push(((bot.to_string(), user), decode_session(v.value())?));
            }
            Ok(out)
        })
    }

    /// Creates or replaces the session of a (bot, user).
    pub fn upsert_session(&self, bot_id: &str, user_id: i64, session: Session) -> Pending<()> {
        let bot = bot_id.to_string();
        self.write(move |tx| {
            tx.open_table(SESSIONS)?
                .insert((bot.as_str(), user_id), codec::encode(&session).as_slice())?;
            Ok(())
        })
    }

    /// Starts a fresh agent session (`/new`) in the `default` project.
    pub fn reset_session(&self, bot_id: &str, user_id: i64) -> Pending<bool> {
        self.reset_project_session(bot_id, user_id, DEFAULT_PROJECT)
    }

    /// Starts a fresh agent session (`/new`) in `project`: forgets the agent's
    /// session id and the conversation history there, other projects keep theirs.
    /// Returns whether there was a session.
    pub fn reset_project_session(
        &self,
        bot_id: &str,
        user_id: i64,
        project: &str,
    ) -> Pending<bool> {
        let (bot, project) = (bot_id.to_string(), project.to_string());
        self.write(move |tx| {
            let (bot, project) = (bot.as_str(), project.as_str());
            if project == DEFAULT_PROJECT {
                let existed = tx.open_table(SESSIONS)?.remove((bot, user_id))?.is_some();
                tx.open_table(MESSAGES)?
                    .retain_in((bot, user_id, 0)..=(bot, user_id, u64::MAX), |_, _| false)?;
                Ok(existed)
            } else {
                let existed = tx
                    .open_table(PROJECT_SESSIONS)?
                    .remove((bot, user_id, project))?
                    .is_some();
                tx.open_table(PROJECT_MESSAGES)?.retain_in(
                    (bot, user_id, project, 0)..=(bot, user_id, project, u64::MAX),
                    |_, _| false,
                )?;
                Ok(existed)
            }
        })
    }

    /// Forgets the agent's session id of a (bot, user) in `project` but keeps the
    /// history: the agent no longer knows the session, the next run starts a
    /// fresh one.
    pub fn forget_agent_session(&self, bot_id: &str, user_id: i64, project: &str) -> Pending<()> {
        let (bot, project) = (bot_id.to_string(), project.to_string());
        self.write(move |tx| {
            let t = Tables::new(tx);
            let existing = load_session_tx(&t, &bot, user_id, &project)?;
            if let Some(mut session) = existing {
                session.agent_session_id = None;
                store_session_tx(&t, &bot, user_id, &project, &session)?;
            }
            Ok(())
        })
    }

    /// Appends a message to the conversation history (bounded).
    pub fn append_message(
        &self,
        bot_id: &str,
        user_id: i64,
        role: &str,
        text: &str,
        now_ms: u64,
    ) -> Pending<()> {
        let (bot, role, text) = (bot_id.to_string(), role.to_string(), text.to_string());
        let bound = self.options().history_messages;
        // Journaled like the task it belongs to (one small fsync, not a commit).
        let op = TaskOp::Message {
            bot_id: bot.clone(),
            user_id,
            role: role.clone(),
            text: text.clone(),
            now_ms,
            history: bound,
        };
        self.write_op(&op, move |t| {
            append_message_tx(
                t,
                &bot,
                user_id,
                DEFAULT_PROJECT,
                &role,
                &text,
                now_ms,
                bound,
            )
        })
    }

    /// The newest `limit` messages of a (bot, user) in the `default` project,
    /// oldest first.
    pub fn history(
        &self,
        bot_id: &str,
        user_id: i64,
        limit: usize,
    ) -> StoreResult<Vec<ChatMessage>> {
        self.project_history(bot_id, user_id, DEFAULT_PROJECT, limit)
    }

    /// The newest `limit` messages of a (bot, user) in `project`, oldest first.
    pub fn project_history(
        &self,
        bot_id: &str,
        user_id: i64,
        project: &str,
        limit: usize,
    ) -> StoreResult<Vec<ChatMessage>> {
        self.read(|tx| {
            let mut out = Vec::new();
            let mut take = |value: &[u8]| -> StoreResult<bool> {
                if out.len() >= limit {
                    return Ok(false);
                }
                out.push(codec::decode(value).map_err(|e| StoreError::decode("messages", e))?);
                Ok(true)
            };
            if project == DEFAULT_PROJECT {
                let table = tx.open_table(MESSAGES)?;
                for row in table
                    .range((bot_id, user_id, 0)..=(bot_id, user_id, u64::MAX))?
                    .rev()
                {
                    if !take(row?.1.value())? {
                        break;
                    }
                }
            } else {
                let table = match tx.open_table(PROJECT_MESSAGES) {
                    Ok(table) => table,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                    Err(e) => return Err(e.into()),
                };
                for row in table
                    .range((bot_id, user_id, project, 0)..=(bot_id, user_id, project, u64::MAX))?
                    .rev()
                {
                    if !take(row?.1.value())? {
                        break;
                    }
                }
            }
            out.reverse();
            Ok(out)
        })
    }
}

fn decode_session(bytes: &[u8]) -> StoreResult<Session> {
    codec::decode(bytes).map_err(|e| StoreError::decode("sessions", e))
}

/// The session of a (bot, user, project), in a read transaction.
pub(super) fn project_session_in(
    tx: &redb::ReadTransaction,
    bot_id: &str,
    user_id: i64,
    project: &str,
) -> StoreResult<Option<Session>> {
    let value = if project == DEFAULT_PROJECT {
        let table = tx.open_table(SESSIONS)?;
        table.get((bot_id, user_id))?.map(|v| v.value().to_vec())
    } else {
        let table = match tx.open_table(PROJECT_SESSIONS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        table
            .get((bot_id, user_id, project))?
            .map(|v| v.value().to_vec())
    };
    value.map(|v| decode_session(&v)).transpose()
}

/// The stored session of a (bot, user, project), if any.
fn load_session_tx(
    t: &Tables<'_>,
    bot_id: &str,
    user_id: i64,
    project: &str,
) -> StoreResult<Option<Session>> {
    if project == DEFAULT_PROJECT {
        t.sessions()?
            .get((bot_id, user_id))?
            .map(|v| decode_session(v.value()))
            .transpose()
    } else {
        t.project_sessions()?
            .get((bot_id, user_id, project))?
            .map(|v| decode_session(v.value()))
            .transpose()
    }
}

fn store_session_tx(
    t: &Tables<'_>,
    bot_id: &str,
    user_id: i64,
    project: &str,
    session: &Session,
) -> StoreResult<()> {
    let bytes = codec::encode(session);
    if project == DEFAULT_PROJECT {
        t.sessions()?.insert((bot_id, user_id), bytes.as_slice())?;
    } else {
        t.project_sessions()?
            .insert((bot_id, user_id, project), bytes.as_slice())?;
    }
    Ok(())
}

/// The agent session a run of this (bot, user, project) resumes, if any.
pub(super) fn agent_session_id_tx(
    t: &Tables<'_>,
    bot_id: &str,
    user_id: i64,
    project: &str,
) -> StoreResult<Option<String>> {
    Ok(load_session_tx(t, bot_id, user_id, project)?.and_then(|s| s.agent_session_id))
}

/// Records a run of this (bot, user, project) in `session_id`: the session to
/// resume next, its last activity, one more message.
pub(super) fn record_session_use_tx(
    t: &Tables<'_>,
    bot_id: &str,
    user_id: i64,
    project: &str,
    session_id: &str,
    now_ms: u64,
) -> StoreResult<()> {
    let existing = load_session_tx(t, bot_id, user_id, project)?;
    let mut session = existing.unwrap_or(Session {
        agent_session_id: None,
        created_ms: now_ms,
        last_active_ms: now_ms,
        message_count: 0,
        workdir: String::new(),
        extra: None,
    });
    session.agent_session_id = Some(session_id.to_string());
    session.last_active_ms = now_ms;
    session.message_count += 1;
    store_session_tx(t, bot_id, user_id, project, &session)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn append_message_tx(
    t: &Tables<'_>,
    bot_id: &str,
    user_id: i64,
    project: &str,
    role: &str,
    text: &str,
    now_ms: u64,
    bound: usize,
) -> StoreResult<()> {
    if bound == 0 {
        return Ok(());
    }
    let message = ChatMessage {
        role: role.to_string(),
        text: bound_text(text, MAX_MESSAGE_BYTES),
        at_ms: now_ms,
    };
    let bytes = codec::encode(&message);
    if project != DEFAULT_PROJECT {
        let mut table = t.project_messages()?;
        let next_seq = table
            .range((bot_id, user_id, project, 0)..=(bot_id, user_id, project, u64::MAX))?
            .next_back()
            .transpose()?
            .map_or(0, |(k, _)| k.value().3 + 1);
        table.insert((bot_id, user_id, project, next_seq), bytes.as_slice())?;
        let keep_from = (next_seq + 1).saturating_sub(bound as u64);
        if keep_from > 0 {
            table.retain_in(
                (bot_id, user_id, project, 0)..(bot_id, user_id, project, keep_from),
                |_, _| false,
            )?;
        }
        return Ok(());
    }
    let mut table = t.messages()?;
    let range = (bot_id, user_id, 0)..=(bot_id, user_id, u64::MAX);
    let next_seq = table
        .range(range.clone())?
        .next_back()
        .transpose()?
        .map_or(0, |(k, _)| k.value().2 + 1);
    table.insert((bot_id, user_id, next_seq), bytes.as_slice())?;
    let keep_from = (next_seq + 1).saturating_sub(bound as u64);
    if keep_from > 0 {
        table.retain_in(
            (bot_id, user_id, 0)..(bot_id, user_id, keep_from),
            |_, _| false,
        )?;
    }
    Ok(())
}
