//! Shared simulator state: one [`BotState`] per registered token behind a
//! single mutex (never held across an `.await`), plus change notifications
//! for waiters (long polls and `wait_for*`).

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::{
    SimLimits,
    error::SimError,
    redact::{is_valid_token, masked_token},
    types::{BotCommandSpec, BotInfo, CallRecord, ChatEntry, Fault, FaultKind, SentItem},
};

/// First update id handed out for every bot.
const FIRST_UPDATE_ID: u64 = 1000;

/// Id given to bots whose token has no numeric prefix (then incremented).
const FIRST_AUTO_BOT_ID: i64 = 7_000_000_000;

/// Longest method name kept in the call log for unknown methods.
const MAX_METHOD_NAME_LEN: usize = 64;

/// Distinct method names counted per bot (further ones count as `"other"`).
const MAX_COUNTED_METHODS: usize = 128;

/// Update types delivered when `allowed_updates` is empty or was never set.
const DEFAULT_EXCLUDED_UPDATES: &[&str] =
    &["chat_member", "message_reaction", "message_reaction_count"];

/// A map that forgets its oldest entries beyond a capacity.
#[derive(Debug)]
pub(crate) struct BoundedMap<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Eq + Hash + Clone, V> BoundedMap<K, V> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    pub(crate) fn insert(&mut self, key: K, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.map.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    fn values_in_order(&self) -> impl Iterator<Item = &V> {
        self.order.iter().filter_map(|k| self.map.get(k))
    }
}

/// Pushes to a deque, dropping the oldest element beyond `cap`.
fn push_bounded<T>(deque: &mut VecDeque<T>, item: T, cap: usize) {
    deque.push_back(item);
    while deque.len() > cap.max(1) {
        deque.pop_front();
    }
}

/// Unconfirmed updates of one bot and the `getUpdates` bookkeeping.
#[derive(Debug)]
pub(crate) struct UpdateQueue {
    pending: VecDeque<(u64, Value)>,
    next_id: u64,
    /// The batch answered by the previous `getUpdates` (for duplicate delivery).
    pub(crate) last_batch: Vec<(u64, Value)>,
    allowed: Option<Vec<String>>,
    cap: usize,
}

impl UpdateQueue {
    fn new(cap: usize, id_offset: u32) -> Self {
        Self {
            pending: VecDeque::new(),
            next_id: FIRST_UPDATE_ID + u64::from(id_offset),
            last_batch: Vec::new(),
            allowed: None,
            cap,
        }
    }

    /// Appends an update (`body` must not contain `update_id`); returns its id.
    pub(crate) fn push(&mut self, mut body: Map<String, Value>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        body.insert("update_id".into(), json!(id));
        if self.pending.len() >= self.cap {
            tracing::warn!(
                cap = self.cap,
                "telegram sim: update queue full, dropping the oldest update"
            );
        }
        push_bounded(&mut self.pending, (id, Value::Object(body)), self.cap);
        id
    }

    /// Applies `offset`: positive confirms everything below it, negative keeps
    /// only the last `-offset` updates.
    pub(crate) fn confirm(&mut self, offset: i64) {
        if offset > 0 {
            let offset = offset.unsigned_abs();
            self.pending.retain(|(id, _)| *id >= offset);
        } else if offset < 0 {
            let keep = usize::try_from(offset.unsigned_abs()).unwrap_or(usize::MAX);
            while self.pending.len() > keep {
                self.pending.pop_front();
            }
        }
    }

    /// Sets `allowed_updates` (`None` keeps the previous setting).
    pub(crate) fn set_allowed(&mut self, allowed: Option<Vec<String>>) {
        if allowed.is_some() {
            self.allowed = allowed;
        }
    }

    fn is_allowed(&self, update: &Value) -> bool {
        let Some(kind) = update_type(update) else {
            return true;
        };
        match &self.allowed {
            Some(list) if !list.is_empty() => list.iter().any(|a| a == kind),
            _ => !DEFAULT_EXCLUDED_UPDATES.contains(&kind),
        }
    }

    /// Up to `limit` pending updates; updates of types not allowed are discarded.
    pub(crate) fn batch(&mut self, limit: usize) -> Vec<(u64, Value)> {
        let before = self.pending.len();
        let pending = std::mem::take(&mut self.pending);
        self.pending = pending
            .into_iter()
            .filter(|(_, u)| self.is_allowed(u))
            .collect();
        let dropped = before - self.pending.len();
        if dropped > 0 {
            tracing::debug!(
                count = dropped,
                "telegram sim: discarding updates not in allowed_updates"
            );
        }
        self.pending.iter().take(limit).cloned().collect()
    }

    /// Number of unconfirmed updates.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether update `id` was issued and is no longer pending (confirmed by
    /// an offset, or discarded).
    pub(crate) fn is_done(&self, id: u64) -> bool {
        id < self.next_id && !self.pending.iter().any(|(pending, _)| *pending <= id)
    }
}

/// The type of an update: its first key other than `update_id`.
fn update_type(update: &Value) -> Option<&str> {
    update
        .as_object()?
        .keys()
        .map(String::as_str)
        .find(|k| *k != "update_id")
}

/// A message known to the simulator (sent by the bot or injected).
#[derive(Debug, Clone)]
pub(crate) struct StoredMessage {
    /// Full Bot API `Message` object.
    pub json: Value,
    pub from_bot: bool,
    /// Visible text or caption.
    pub text: Option<String>,
    /// Entities JSON, compared to detect "message is not modified".
    pub entities: Value,
    /// `reply_markup` (or null), also compared for "not modified".
    pub markup: Value,
    pub edited: bool,
    pub deleted: bool,
}

/// A file a user sent, downloadable by the bot.
#[derive(Debug, Clone)]
pub(crate) struct StoredFile {
    pub file_id: String,
    pub unique_id: String,
    /// `file_path` of `getFile`, the tail of the download URL.
    pub path: String,
    /// `file_size` as announced (may differ from `data` when a test claims a size).
    pub size: u64,
    pub data: Vec<u8>,
}

/// Files kept per bot for `getFile` (the oldest forgotten beyond).
const MAX_FILES: usize = 256;

/// A chat known to one bot.
#[derive(Debug, Clone)]
pub(crate) struct ChatState {
    /// Bot API `Chat` object.
    pub json: Value,
    pub next_message_id: i32,
    /// Message ids in this chat, oldest first (bounded).
    pub message_ids: VecDeque<i32>,
}

/// Everything the simulator knows about one bot.
#[derive(Debug)]
pub(crate) struct BotState {
    pub info: BotInfo,
    pub updates: UpdateQueue,
    pub chats: BoundedMap<i64, ChatState>,
    pub messages: BoundedMap<(i64, i32), StoredMessage>,
    pub commands: BTreeMap<String, Vec<BotCommandSpec>>,
    pub callback_ids: VecDeque<String>,
    pub next_callback: u64,
    pub next_file: u64,
    /// Files users sent, by `file_id`.
    files: BoundedMap<String, StoredFile>,
    /// Incremented by every `getUpdates`; an older waiting poll answers 409.
    pub poll_generation: u64,
    sent: VecDeque<SentItem>,
    next_sent_seq: u64,
    /// Bytes of document content held in `sent`.
    document_bytes: usize,
    calls: VecDeque<CallRecord>,
    next_call_seq: u64,
    call_counts: BTreeMap<String, u64>,
    faults: VecDeque<Fault>,
    limits: SimLimits,
    /// Added to every chat's first message id (see [`super::SimConfig::id_offset`]).
    id_offset: u32,
}

impl BotState {
    fn new(info: BotInfo, limits: &SimLimits, id_offset: u32) -> Self {
        Self {
            info,
            updates: UpdateQueue::new(limits.max_pending_updates, id_offset),
            chats: BoundedMap::new(limits.max_chats),
            messages: BoundedMap::new(limits.max_messages),
            commands: BTreeMap::new(),
            callback_ids: VecDeque::new(),
            next_callback: 1,
            next_file: 1,
            files: BoundedMap::new(MAX_FILES),
            poll_generation: 0,
            sent: VecDeque::new(),
            next_sent_seq: 1,
            document_bytes: 0,
            calls: VecDeque::new(),
            next_call_seq: 1,
            call_counts: BTreeMap::new(),
            faults: VecDeque::new(),
            limits: limits.clone(),
            id_offset,
        }
    }

    /// Simulator limits in force.
    pub(crate) fn limits(&self) -> &SimLimits {
        &self.limits
    }

    /// The bot's `User` object.
    pub(crate) fn user_json(&self) -> Value {
        json!({
            "id": self.info.id,
            "is_bot": true,
            "first_name": self.info.first_name,
            "username": self.info.username,
        })
    }

    /// Returns the chat, creating a plausible one for unknown ids (positive:
    /// private chat, `-100…`: supergroup, other negative: group).
    pub(crate) fn chat_or_default(&mut self, chat_id: i64) -> &mut ChatState {
        if self.chats.get(&chat_id).is_none() {
            self.chats.insert(
                chat_id,
                new_chat(default_chat_json(chat_id), self.id_offset),
            );
        }
        self.chats
            .get_mut(&chat_id)
            .expect("chat was inserted just above and capacity is at least 1")
    }

    /// Creates or updates a chat with the given `Chat` object.
    pub(crate) fn upsert_chat(&mut self, chat_id: i64, chat_json: Value) -> &mut ChatState {
        match self.chats.get_mut(&chat_id) {
            Some(chat) => chat.json = chat_json,
            None => self
                .chats
                .insert(chat_id, new_chat(chat_json, self.id_offset)),
        }
        self.chats
            .get_mut(&chat_id)
            .expect("chat was inserted just above and capacity is at least 1")
    }

    /// Allocates the next message id of a chat.
    pub(crate) fn next_message_id(&mut self, chat_id: i64) -> (i32, Value) {
        let cap = self.limits.max_messages;
        let chat = self.chat_or_default(chat_id);
        let id = chat.next_message_id;
        chat.next_message_id = chat.next_message_id.saturating_add(1);
        push_bounded(&mut chat.message_ids, id, cap);
        (id, chat.json.clone())
    }

    /// A live (not deleted) message.
    pub(crate) fn live_message(&self, chat_id: i64, message_id: i32) -> Option<&StoredMessage> {
        self.messages
            .get(&(chat_id, message_id))
            .filter(|m| !m.deleted)
    }

    /// Mutable access to a live message.
    pub(crate) fn live_message_mut(
        &mut self,
        chat_id: i64,
        message_id: i32,
    ) -> Option<&mut StoredMessage> {
        self.messages
            .get_mut(&(chat_id, message_id))
            .filter(|m| !m.deleted)
    }

    /// Stores a message under its chat and id.
    pub(crate) fn store_message(&mut self, chat_id: i64, message_id: i32, message: StoredMessage) {
        self.messages.insert((chat_id, message_id), message);
    }

    /// Appends to the sent log, assigning `seq`. The oldest entries are
    /// forgotten beyond `max_sent_items`, and the content of the oldest
    /// documents is dropped beyond `max_document_bytes_total`.
    pub(crate) fn store_file(&mut self, file: StoredFile) {
        self.files.insert(file.file_id.clone(), file);
    }

    pub(crate) fn file(&self, file_id: &str) -> Option<&StoredFile> {
        self.files.get(&file_id.to_owned())
    }

    /// The file whose `file_path` is `path`.
    pub(crate) fn file_at(&self, path: &str) -> Option<&StoredFile> {
        self.files.values_in_order().find(|f| f.path == path)
    }

    pub(crate) fn record_sent(&mut self, mut item: SentItem) {
        item.seq = self.next_sent_seq;
        self.next_sent_seq += 1;
        self.document_bytes += document_len(&item);
        self.sent.push_back(item);
        while self.sent.len() > self.limits.max_sent_items.max(1) {
            if let Some(old) = self.sent.pop_front() {
                self.document_bytes -= document_len(&old);
            }
        }
        self.enforce_document_budget();
    }

    fn enforce_document_budget(&mut self) {
        let budget = self.limits.max_document_bytes_total;
        for item in &mut self.sent {
            if self.document_bytes <= budget {
                break;
            }
            if let Some(doc) = item.document.as_mut().filter(|d| !d.content.is_empty()) {
                self.document_bytes -= doc.content.len();
                doc.content = Vec::new();
                doc.truncated = true;
            }
        }
    }

    /// The sent log, oldest first.
    pub(crate) fn sent(&self) -> impl Iterator<Item = &SentItem> {
        self.sent.iter()
    }

    /// Current messages of a chat, oldest first, without deleted ones.
    pub(crate) fn chat_entries(&self, chat_id: i64) -> Vec<ChatEntry> {
        let Some(chat) = self.chats.get(&chat_id) else {
            return Vec::new();
        };
        chat.message_ids
            .iter()
            .filter_map(|id| Some((*id, self.live_message(chat_id, *id)?)))
            .map(|(message_id, m)| ChatEntry {
                message_id,
                from_bot: m.from_bot,
                text: m.text.clone(),
                edited: m.edited,
            })
            .collect()
    }

    /// Starts a call-log record; returns its `seq`.
    pub(crate) fn begin_call(&mut self, method: &str, at: Duration) -> u64 {
        let seq = self.next_call_seq;
        self.next_call_seq += 1;
        let method: String = method.chars().take(MAX_METHOD_NAME_LEN).collect();
        let key = if self.call_counts.contains_key(&method)
            || self.call_counts.len() < MAX_COUNTED_METHODS
        {
            method.clone()
        } else {
            "other".to_owned()
        };
        *self.call_counts.entry(key).or_default() += 1;
        let record = CallRecord {
            seq,
            method,
            at,
            elapsed: None,
            status: None,
            fault: None,
            error: None,
        };
        push_bounded(&mut self.calls, record, self.limits.max_calls);
        seq
    }

    /// Mutable access to a call record still in the log.
    pub(crate) fn call_mut(&mut self, seq: u64) -> Option<&mut CallRecord> {
        let first = self.calls.front()?.seq;
        let index = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.calls.get_mut(index).filter(|c| c.seq == seq)
    }

    /// The call log, oldest first.
    pub(crate) fn calls(&self) -> impl Iterator<Item = &CallRecord> {
        self.calls.iter()
    }

    /// Calls per method since registration (or the last reset).
    pub(crate) fn call_counts(&self) -> &BTreeMap<String, u64> {
        &self.call_counts
    }

    /// Queues a fault.
    pub(crate) fn push_fault(&mut self, fault: Fault) {
        push_bounded(&mut self.faults, fault, self.limits.max_faults);
    }

    /// Queued faults, in application order.
    pub(crate) fn faults(&self) -> impl Iterator<Item = &Fault> {
        self.faults.iter()
    }

    /// Removes all queued faults; returns how many there were.
    pub(crate) fn clear_faults(&mut self) -> usize {
        std::mem::take(&mut self.faults).len()
    }

    /// Takes one use of the first fault matching `method` (canonical name).
    pub(crate) fn take_fault(&mut self, method: &str) -> Option<FaultKind> {
        let index = self.faults.iter().position(|f| fault_matches(f, method))?;
        let fault = self.faults.get_mut(index)?;
        let kind = fault.kind.clone();
        fault.times = fault.times.saturating_sub(1);
        if fault.times == 0 {
            self.faults.remove(index);
        }
        Some(kind)
    }

    /// Clears the sent log, the call log and counts, and queued faults.
    pub(crate) fn clear_logs(&mut self) {
        self.sent.clear();
        self.document_bytes = 0;
        self.calls.clear();
        self.call_counts.clear();
        self.faults.clear();
    }

    /// Remembers an injected callback query id (bounded).
    pub(crate) fn remember_callback(&mut self, id: String) {
        push_bounded(&mut self.callback_ids, id, self.limits.max_pending_updates);
    }
}

fn document_len(item: &SentItem) -> usize {
    item.document.as_ref().map_or(0, |d| d.content.len())
}

fn fault_matches(fault: &Fault, method: &str) -> bool {
    let method_ok = fault
        .method
        .as_deref()
        .is_none_or(|m| m.eq_ignore_ascii_case(method));
    let kind_ok = !matches!(fault.kind, FaultKind::DuplicateUpdates)
        || method.eq_ignore_ascii_case("getUpdates");
    method_ok && kind_ok
}

fn new_chat(json: Value, id_offset: u32) -> ChatState {
    ChatState {
        json,
        next_message_id: i32::try_from(id_offset)
            .unwrap_or(i32::MAX / 2)
            .saturating_add(1),
        message_ids: VecDeque::new(),
    }
}

fn default_chat_json(chat_id: i64) -> Value {
    if chat_id > 0 {
        json!({ "id": chat_id, "type": "private", "first_name": format!("User {chat_id}") })
    } else if chat_id <= -1_000_000_000_000 {
        json!({ "id": chat_id, "type": "supergroup", "title": format!("Chat {chat_id}") })
    } else {
        json!({ "id": chat_id, "type": "group", "title": format!("Chat {chat_id}") })
    }
}

/// Registered bots.
#[derive(Debug)]
struct Registry {
    bots: HashMap<String, BotState>,
    used_ids: HashSet<i64>,
    next_auto_id: i64,
}

/// State shared by the HTTP server and every [`super::SimHandle`].
#[derive(Debug)]
pub(crate) struct SimState {
    started: Instant,
    limits: SimLimits,
    id_offset: u32,
    registry: Mutex<Registry>,
    updates_changed: watch::Sender<u64>,
    log_changed: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
}

impl SimState {
    pub(crate) fn new(limits: SimLimits, id_offset: u32) -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            limits,
            id_offset,
            registry: Mutex::new(Registry {
                bots: HashMap::new(),
                used_ids: HashSet::new(),
                next_auto_id: FIRST_AUTO_BOT_ID,
            }),
            updates_changed: watch::Sender::new(0),
            log_changed: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the registry in a state
        // worse than "some log entry missing", so poisoning is ignored.
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn limits(&self) -> &SimLimits {
        &self.limits
    }

    /// Time since the simulator started.
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Registers a bot (idempotent: an existing token keeps its state).
    pub(crate) fn register(
        &self,
        token: &str,
        username: Option<String>,
        first_name: Option<String>,
    ) -> Result<BotInfo, SimError> {
        if !is_valid_token(token) {
            return Err(SimError::InvalidToken(masked_token(token)));
        }
        let mut reg = self.lock();
        if let Some(bot) = reg.bots.get(token) {
            return Ok(bot.info.clone());
        }
        let id = token_bot_id(token)
            .filter(|id| !reg.used_ids.contains(id))
            .unwrap_or_else(|| {
                let id = reg.next_auto_id;
                reg.next_auto_id += 1;
                id
            });
        reg.used_ids.insert(id);
        let ordinal = reg.bots.len() + 1;
        let info = BotInfo {
            id,
            username: username.unwrap_or_else(|| format!("sim{ordinal}_bot")),
            first_name: first_name.unwrap_or_else(|| format!("Sim Bot {ordinal}")),
        };
        reg.bots.insert(
            token.to_owned(),
            BotState::new(info.clone(), &self.limits, self.id_offset),
        );
        tracing::debug!(bot = %masked_token(token), id, "telegram sim: bot registered");
        Ok(info)
    }

    /// Whether the token is registered.
    pub(crate) fn has_bot(&self, token: &str) -> bool {
        self.lock().bots.contains_key(token)
    }

    /// All registered bots.
    pub(crate) fn bots(&self) -> Vec<BotInfo> {
        let mut bots: Vec<_> = self.lock().bots.values().map(|b| b.info.clone()).collect();
        bots.sort_by_key(|b| b.id);
        bots
    }

    /// Runs `f` on the bot's state under the lock.
    pub(crate) fn with_bot<T>(
        &self,
        token: &str,
        f: impl FnOnce(&mut BotState) -> T,
    ) -> Result<T, SimError> {
        let mut reg = self.lock();
        let bot = reg
            .bots
            .get_mut(token)
            .ok_or_else(|| SimError::unknown_bot(token))?;
        Ok(f(bot))
    }

    /// Wakes long polls (new update or new poll generation).
    pub(crate) fn notify_updates(&self) {
        self.updates_changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Wakes `wait_for*` waiters (sent log or call log changed).
    pub(crate) fn notify_log(&self) {
        self.log_changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(crate) fn subscribe_updates(&self) -> watch::Receiver<u64> {
        self.updates_changed.subscribe()
    }

    pub(crate) fn subscribe_log(&self) -> watch::Receiver<u64> {
        self.log_changed.subscribe()
    }

    /// Signals shutdown to the server and to every waiter.
    pub(crate) fn trigger_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves once shutdown has been triggered.
    pub(crate) async fn shut_down(&self) {
        let mut rx = self.shutdown.subscribe();
        // `wait_for` only fails if the sender is dropped, and `self` owns it.
        let _ = rx.wait_for(|down| *down).await;
    }
}

/// Waits until `check` returns `Some`, re-evaluating after every change
/// signalled on `rx`. Returns `None` at `deadline` or on shutdown.
pub(crate) async fn wait_until<T>(
    state: &SimState,
    mut rx: watch::Receiver<u64>,
    deadline: tokio::time::Instant,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    loop {
        rx.borrow_and_update();
        if let Some(value) = check() {
            return Some(value);
        }
        if state.is_shut_down() {
            return None;
        }
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
            () = tokio::time::sleep_until(deadline) => return check(),
            () = state.shut_down() => return None,
        }
    }
}

/// The numeric bot id of a `123456:secret` token.
fn token_bot_id(token: &str) -> Option<i64> {
    let (id, _) = token.split_once(':')?;
    id.parse().ok().filter(|id: &i64| *id > 0)
}

/// Current Unix time in seconds.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(kind: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(kind.into(), json!({}));
        m
    }

    #[test]
    fn offsets_confirm_and_negative_offsets_keep_tail() {
        let mut q = UpdateQueue::new(10, 0);
        let ids: Vec<u64> = (0..5).map(|_| q.push(update("message"))).collect();
        q.confirm(i64::try_from(ids[2]).unwrap());
        assert_eq!(
            q.batch(100).iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            ids[2..]
        );
        q.confirm(-1);
        assert_eq!(
            q.batch(100).iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            ids[4..]
        );
    }

    #[test]
    fn queue_is_bounded_and_filters_types() {
        let mut q = UpdateQueue::new(3, 0);
        for _ in 0..5 {
            q.push(update("message"));
        }
        assert_eq!(q.len(), 3);
        q.push(update("chat_member"));
        assert_eq!(
            q.batch(10).len(),
            2,
            "chat_member is excluded by default, oldest dropped"
        );
        q.set_allowed(Some(vec!["callback_query".into()]));
        q.push(update("callback_query"));
        assert_eq!(q.batch(10).len(), 1);
    }

    #[test]
    fn bounded_map_evicts_oldest() {
        let mut m = BoundedMap::new(2);
        m.insert(1, "a");
        m.insert(2, "b");
        m.insert(1, "c");
        m.insert(3, "d");
        assert!(m.get(&1).is_none());
        assert_eq!(
            m.values_in_order().copied().collect::<Vec<_>>(),
            vec!["b", "d"]
        );
    }

    #[test]
    fn faults_are_consumed_per_method() {
        let limits = SimLimits::default();
        let mut bot = BotState::new(
            BotInfo {
                id: 1,
                username: "b".into(),
                first_name: "B".into(),
            },
            &limits,
            0,
        );
        bot.push_fault(Fault::new(FaultKind::Conflict).on("getupdates").times(2));
        bot.push_fault(Fault::new(FaultKind::DuplicateUpdates));
        assert_eq!(bot.take_fault("sendMessage"), None);
        assert_eq!(bot.take_fault("getUpdates"), Some(FaultKind::Conflict));
        assert_eq!(bot.take_fault("getUpdates"), Some(FaultKind::Conflict));
        assert_eq!(
            bot.take_fault("getUpdates"),
            Some(FaultKind::DuplicateUpdates)
        );
        assert_eq!(bot.faults().count(), 0);
    }

    #[test]
    fn call_log_is_bounded_and_addressable() {
        let limits = SimLimits {
            max_calls: 2,
            ..SimLimits::default()
        };
        let mut bot = BotState::new(
            BotInfo {
                id: 1,
                username: "b".into(),
                first_name: "B".into(),
            },
            &limits,
            0,
        );
        let first = bot.begin_call("getMe", Duration::ZERO);
        let second = bot.begin_call("getMe", Duration::ZERO);
        let third = bot.begin_call("sendMessage", Duration::ZERO);
        assert!(bot.call_mut(first).is_none());
        assert_eq!(bot.call_mut(second).map(|c| c.seq), Some(second));
        assert_eq!(
            bot.call_mut(third).map(|c| c.method.clone()).as_deref(),
            Some("sendMessage")
        );
        assert_eq!(bot.call_counts()["getMe"], 2);
    }

    #[test]
    fn document_content_has_a_total_budget() {
        use super::super::types::{SentDocument, SentKind};
        let limits = SimLimits {
            max_document_bytes_total: 10,
            max_sent_items: 3,
            ..SimLimits::default()
        };
        let mut bot = BotState::new(
            BotInfo {
                id: 1,
                username: "b".into(),
                first_name: "B".into(),
            },
            &limits,
            0,
        );
        let item = |n: u8| SentItem {
            seq: 0,
            kind: SentKind::Document,
            chat_id: Some(1),
            message_id: None,
            text: None,
            plain_text: None,
            parse_mode: None,
            reply_to_message_id: None,
            reply_markup: None,
            document: Some(SentDocument {
                file_name: None,
                size: 6,
                content: vec![n; 6],
                truncated: false,
            }),
            action: None,
            commands: None,
            callback_query_id: None,
            at: Duration::ZERO,
            unix_time: 0,
        };
        for n in 0..5 {
            bot.record_sent(item(n));
        }
        let docs: Vec<_> = bot.sent().map(|i| i.document.clone().unwrap()).collect();
        assert_eq!(docs.len(), 3);
        assert!(docs[0].content.is_empty() && docs[0].truncated);
        assert!(docs[1].content.is_empty());
        assert_eq!(docs[2].content, vec![4; 6]);
        assert_eq!(bot.document_bytes, 6);
    }

    #[test]
    fn token_ids() {
        assert_eq!(token_bot_id("123:abc"), Some(123));
        assert_eq!(token_bot_id("abc"), None);
        assert_eq!(token_bot_id("-5:x"), None);
    }
}
