//! Agent sessions per (bot, user) and their bounded conversation history.
//!
//! Invariant: at most `history_messages` messages are kept per (bot, user); the
//! append that exceeds the bound removes the oldest in the same transaction.

use redb::ReadableTable;

use super::batch::Tables;
use super::codec;
use super::error::StoreError;
use super::limits::{MAX_MESSAGE_BYTES, bound_text};
use super::records::{ChatMessage, Session};
use super::tables::{MESSAGES, SESSIONS};
use super::task_ops::TaskOp;
use super::{Pending, Store, StoreResult};

impl Store {
    /// The session of a (bot, user), if any.
    pub fn get_session(&self, bot_id: &str, user_id: i64) -> StoreResult<Option<Session>> {
        self.read(|tx| {
            let table = tx.open_table(SESSIONS)?;
            let value = table.get((bot_id, user_id))?;
            value.map(|v| decode_session(v.value())).transpose()
        })
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

    /// Starts a fresh agent session (`/new`): forgets the agent's session id and the
    /// conversation history. Returns whether there was a session.
    pub fn reset_session(&self, bot_id: &str, user_id: i64) -> Pending<bool> {
        let bot = bot_id.to_string();
        self.write(move |tx| {
            let existed = tx
                .open_table(SESSIONS)?
                .remove((bot.as_str(), user_id))?
                .is_some();
            let mut messages = tx.open_table(MESSAGES)?;
            messages.retain_in(
                (bot.as_str(), user_id, 0)..=(bot.as_str(), user_id, u64::MAX),
                |_, _| false,
            )?;
            Ok(existed)
        })
    }

    /// Forgets the agent's session id of a (bot, user) but keeps the history: the
    /// agent no longer knows the session, the next run starts a fresh one.
    pub fn forget_agent_session(&self, bot_id: &str, user_id: i64) -> Pending<()> {
        let bot = bot_id.to_string();
        self.write(move |tx| {
            let mut table = tx.open_table(SESSIONS)?;
            let existing = table
                .get((bot.as_str(), user_id))?
                .map(|v| decode_session(v.value()))
                .transpose()?;
            if let Some(mut session) = existing {
                session.agent_session_id = None;
                table.insert((bot.as_str(), user_id), codec::encode(&session).as_slice())?;
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
            append_message_tx(t, &bot, user_id, &role, &text, now_ms, bound)
        })
    }

    /// The newest `limit` messages of a (bot, user), oldest first.
    pub fn history(
        &self,
        bot_id: &str,
        user_id: i64,
        limit: usize,
    ) -> StoreResult<Vec<ChatMessage>> {
        self.read(|tx| {
            let table = tx.open_table(MESSAGES)?;
            let mut out = Vec::new();
            for row in table
                .range((bot_id, user_id, 0)..=(bot_id, user_id, u64::MAX))?
                .rev()
            {
                if out.len() >= limit {
                    break;
                }
                let (_, v) = row?;
                out.push(codec::decode(v.value()).map_err(|e| StoreError::decode("messages", e))?);
            }
            out.reverse();
            Ok(out)
        })
    }
}

fn decode_session(bytes: &[u8]) -> StoreResult<Session> {
    codec::decode(bytes).map_err(|e| StoreError::decode("sessions", e))
}

/// The agent session a run of this (bot, user) resumes, if any.
pub(super) fn agent_session_id_tx(
    t: &Tables<'_>,
    bot_id: &str,
    user_id: i64,
) -> StoreResult<Option<String>> {
    Ok(t.sessions()?
        .get((bot_id, user_id))?
        .map(|v| decode_session(v.value()))
        .transpose()?
        .and_then(|s| s.agent_session_id))
}

/// Records a run of this (bot, user) in `session_id`: the session to resume
/// next, its last activity, one more message.
pub(super) fn record_session_use_tx(
    t: &Tables<'_>,
    bot_id: &str,
    user_id: i64,
    session_id: &str,
    now_ms: u64,
) -> StoreResult<()> {
    let mut sessions = t.sessions()?;
    let key = (bot_id, user_id);
    let existing = sessions
        .get(key)?
        .map(|v| decode_session(v.value()))
        .transpose()?;
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
    sessions.insert(key, codec::encode(&session).as_slice())?;
    Ok(())
}

pub(super) fn append_message_tx(
    t: &Tables<'_>,
    bot_id: &str,
    user_id: i64,
    role: &str,
    text: &str,
    now_ms: u64,
    bound: usize,
) -> StoreResult<()> {
    if bound == 0 {
        return Ok(());
    }
    let mut table = t.messages()?;
    let range = (bot_id, user_id, 0)..=(bot_id, user_id, u64::MAX);
    let next_seq = table
        .range(range.clone())?
        .next_back()
        .transpose()?
        .map_or(0, |(k, _)| k.value().2 + 1);
    let message = ChatMessage {
        role: role.to_string(),
        text: bound_text(text, MAX_MESSAGE_BYTES),
        at_ms: now_ms,
    };
    table.insert(
        (bot_id, user_id, next_seq),
        codec::encode(&message).as_slice(),
    )?;
    let keep_from = (next_seq + 1).saturating_sub(bound as u64);
    if keep_from > 0 {
        table.retain_in(
            (bot_id, user_id, 0)..(bot_id, user_id, keep_from),
            |_, _| false,
        )?;
    }
    Ok(())
}
