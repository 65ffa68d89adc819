//! The in-process control API: [`SimHandle`]. The HTTP control routes call
//! the same operations (implemented on the shared state below).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tokio::task::JoinHandle;

use super::{
    error::SimError,
    methods,
    state::{SimState, wait_until},
    types::{
        BotCommandSpec, BotInfo, CallRecord, ChatEntry, Fault, IncomingMessage, Injected,
        InjectedCallback, SentItem,
    },
    updates,
};

/// How long `shutdown` waits for in-flight requests before aborting the server.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Operations shared by [`SimHandle`] and the HTTP control routes.
impl SimState {
    /// Injects a user message and wakes long polls.
    pub(crate) fn inject_message(
        &self,
        token: &str,
        message: &IncomingMessage,
    ) -> Result<Injected, SimError> {
        let injected = self.with_bot(token, |bot| updates::inject_message(bot, message))??;
        self.notify_updates();
        Ok(injected)
    }

    pub(crate) fn inject_edit(
        &self,
        token: &str,
        chat_id: i64,
        message_id: i32,
        text: &str,
    ) -> Result<u64, SimError> {
        let id = self.with_bot(token, |bot| {
            updates::inject_edit(bot, chat_id, message_id, text)
        })??;
        self.notify_updates();
        Ok(id)
    }

    pub(crate) fn inject_channel_post(
        &self,
        token: &str,
        chat_id: i64,
        title: &str,
        text: &str,
    ) -> Result<Injected, SimError> {
        let injected = self.with_bot(token, |bot| {
            updates::inject_channel_post(bot, chat_id, title, text)
        })?;
        self.notify_updates();
        Ok(injected)
    }

    pub(crate) fn inject_callback(
        &self,
        token: &str,
        user_id: i64,
        chat_id: i64,
        message_id: i32,
        data: &str,
    ) -> Result<InjectedCallback, SimError> {
        let (update_id, callback_query_id) = self.with_bot(token, |bot| {
            updates::inject_callback(bot, user_id, chat_id, message_id, data)
        })??;
        self.notify_updates();
        Ok(InjectedCallback {
            update_id,
            callback_query_id,
        })
    }

    pub(crate) fn inject_raw(&self, token: &str, update: Value) -> Result<u64, SimError> {
        let id = self.with_bot(token, |bot| updates::inject_raw(bot, update))??;
        self.notify_updates();
        Ok(id)
    }

    pub(crate) fn sent(&self, token: &str) -> Result<Vec<SentItem>, SimError> {
        self.with_bot(token, |bot| bot.sent().cloned().collect())
    }

    pub(crate) fn calls(&self, token: &str) -> Result<Vec<CallRecord>, SimError> {
        self.with_bot(token, |bot| bot.calls().cloned().collect())
    }

    pub(crate) fn call_counts(&self, token: &str) -> Result<BTreeMap<String, u64>, SimError> {
        self.with_bot(token, |bot| bot.call_counts().clone())
    }

    pub(crate) fn chat(&self, token: &str, chat_id: i64) -> Result<Vec<ChatEntry>, SimError> {
        self.with_bot(token, |bot| bot.chat_entries(chat_id))
    }

    pub(crate) fn add_fault(&self, token: &str, fault: Fault) -> Result<(), SimError> {
        let fault = Fault {
            times: fault.times.max(1),
            ..fault
        };
        self.with_bot(token, |bot| bot.push_fault(fault))
    }

    pub(crate) fn faults(&self, token: &str) -> Result<Vec<Fault>, SimError> {
        self.with_bot(token, |bot| bot.faults().cloned().collect())
    }

    pub(crate) fn clear_faults(&self, token: &str) -> Result<usize, SimError> {
        self.with_bot(token, |bot| bot.clear_faults())
    }

    pub(crate) fn commands(&self, token: &str) -> Result<Vec<BotCommandSpec>, SimError> {
        let key = methods::scoped_commands_key(&Value::Null, "");
        self.with_bot(token, |bot| {
            bot.commands.get(&key).cloned().unwrap_or_default()
        })
    }

    pub(crate) fn pending_updates(&self, token: &str) -> Result<usize, SimError> {
        self.with_bot(token, |bot| bot.updates.len())
    }

    /// Waits until the bot has confirmed (with a `getUpdates` offset above
    /// it) update `update_id` and every earlier one.
    pub(crate) async fn wait_for_confirmed(
        &self,
        token: &str,
        update_id: u64,
        timeout: Duration,
    ) -> Result<(), SimError> {
        self.wait_log(
            timeout,
            || format!("update {update_id} to be confirmed"),
            || {
                Ok(self
                    .with_bot(token, |bot| bot.updates.is_done(update_id))?
                    .then_some(()))
            },
        )
        .await
    }

    pub(crate) fn clear_logs(&self, token: &str) -> Result<(), SimError> {
        self.with_bot(token, |bot| bot.clear_logs())?;
        self.notify_log();
        Ok(())
    }

    /// Waits until `check` (evaluated on every log change) yields a value.
    pub(crate) async fn wait_log<T>(
        &self,
        timeout: Duration,
        what: impl FnOnce() -> String,
        mut check: impl FnMut() -> Result<Option<T>, SimError>,
    ) -> Result<T, SimError> {
        let rx = self.subscribe_log();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut failure = None;
        let found = wait_until(self, rx, deadline, || match check() {
            Ok(Some(value)) => Some(Some(value)),
            Ok(None) => None,
            Err(err) => {
                failure = Some(err);
                Some(None)
            }
        })
        .await;
        if let Some(err) = failure {
            return Err(err);
        }
        match found {
            Some(Some(value)) => Ok(value),
            _ if self.is_shut_down() => Err(SimError::ShutDown),
            _ => Err(SimError::Timeout {
                waited: timeout,
                what: what(),
            }),
        }
    }

    /// Waits until the bot has sent at least `count` new messages (text or
    /// document) to `chat_id`; returns all of them.
    pub(crate) async fn wait_for_messages(
        &self,
        token: &str,
        chat_id: i64,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<SentItem>, SimError> {
        self.wait_log(
            timeout,
            || format!("{count} message(s) to chat {chat_id}"),
            || {
                let items: Vec<SentItem> = self
                    .sent(token)?
                    .into_iter()
                    .filter(|i| i.is_new_message() && i.chat_id == Some(chat_id))
                    .collect();
                Ok((items.len() >= count).then_some(items))
            },
        )
        .await
    }
}

/// Handle to a running simulator; cheap to clone. The simulator shuts down on
/// [`SimHandle::shutdown`] or when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct SimHandle {
    inner: Arc<HandleInner>,
}

#[derive(Debug)]
struct HandleInner {
    state: Arc<SimState>,
    addr: SocketAddr,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        self.state.trigger_shutdown();
    }
}

impl SimHandle {
    pub(crate) fn new(state: Arc<SimState>, addr: SocketAddr, server: JoinHandle<()>) -> Self {
        Self {
            inner: Arc::new(HandleInner {
                state,
                addr,
                server: Mutex::new(Some(server)),
            }),
        }
    }

    fn state(&self) -> &SimState {
        &self.inner.state
    }

    /// Base URL to use as the bot's API URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Address the simulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Registers a bot with default username and name (idempotent).
    pub fn register_bot(&self, token: &str) -> Result<BotInfo, SimError> {
        self.state().register(token, None, None)
    }

    /// Registers a bot with the given username and display name (idempotent:
    /// an already registered token keeps its identity).
    pub fn register_bot_as(
        &self,
        token: &str,
        username: &str,
        first_name: &str,
    ) -> Result<BotInfo, SimError> {
        self.state().register(
            token,
            Some(username.to_owned()),
            Some(first_name.to_owned()),
        )
    }

    /// All registered bots.
    pub fn bots(&self) -> Vec<BotInfo> {
        self.state().bots()
    }

    /// Injects a private text message from `user_id` in `chat_id`; returns
    /// the update id.
    pub fn inject_text(
        &self,
        token: &str,
        user_id: i64,
        chat_id: i64,
        text: &str,
    ) -> Result<u64, SimError> {
        let message = IncomingMessage::text(user_id, chat_id, text);
        Ok(self.state().inject_message(token, &message)?.update_id)
    }

    /// Injects any user message (text, photo, sticker, document; private or
    /// group; forwarded; reply).
    pub fn inject_message(
        &self,
        token: &str,
        message: &IncomingMessage,
    ) -> Result<Injected, SimError> {
        self.state().inject_message(token, message)
    }

    /// Injects an `edited_message` for a text message the user sent earlier.
    pub fn inject_edit(
        &self,
        token: &str,
        chat_id: i64,
        message_id: i32,
        text: &str,
    ) -> Result<u64, SimError> {
        self.state().inject_edit(token, chat_id, message_id, text)
    }

    /// Injects a `channel_post` in channel `chat_id` titled `title`.
    pub fn inject_channel_post(
        &self,
        token: &str,
        chat_id: i64,
        title: &str,
        text: &str,
    ) -> Result<Injected, SimError> {
        self.state()
            .inject_channel_post(token, chat_id, title, text)
    }

    /// Injects a `callback_query`: `user_id` pressed a button carrying `data`
    /// under message `message_id` of `chat_id`.
    pub fn inject_callback(
        &self,
        token: &str,
        user_id: i64,
        chat_id: i64,
        message_id: i32,
        data: &str,
    ) -> Result<InjectedCallback, SimError> {
        self.state()
            .inject_callback(token, user_id, chat_id, message_id, data)
    }

    /// Injects an arbitrary update object (its `update_id` is assigned by the
    /// simulator); returns the update id.
    pub fn inject_raw(&self, token: &str, update: Value) -> Result<u64, SimError> {
        self.state().inject_raw(token, update)
    }

    /// Everything the bot did, oldest first (bounded, see [`super::SimLimits`]).
    pub fn sent(&self, token: &str) -> Result<Vec<SentItem>, SimError> {
        self.state().sent(token)
    }

    /// Everything the bot did in one chat, oldest first.
    pub fn sent_to(&self, token: &str, chat_id: i64) -> Result<Vec<SentItem>, SimError> {
        let mut items = self.sent(token)?;
        items.retain(|i| i.chat_id == Some(chat_id));
        Ok(items)
    }

    /// The chat as the user sees it now (edits applied, deletions removed).
    pub fn chat(&self, token: &str, chat_id: i64) -> Result<Vec<ChatEntry>, SimError> {
        self.state().chat(token, chat_id)
    }

    /// Waits until `predicate` holds for the sent log; returns the log then.
    pub async fn wait_for<F>(
        &self,
        token: &str,
        mut predicate: F,
        timeout: Duration,
    ) -> Result<Vec<SentItem>, SimError>
    where
        F: FnMut(&[SentItem]) -> bool,
    {
        let state = self.state();
        state
            .wait_log(
                timeout,
                || "the sent-log predicate".to_owned(),
                || {
                    let items = state.sent(token)?;
                    Ok(predicate(&items).then_some(items))
                },
            )
            .await
    }

    /// Waits until at least `count` new messages (text or document) were sent
    /// to `chat_id`; returns all of them, oldest first.
    pub async fn wait_for_messages(
        &self,
        token: &str,
        chat_id: i64,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<SentItem>, SimError> {
        self.state()
            .wait_for_messages(token, chat_id, count, timeout)
            .await
    }

    /// Waits until `predicate` holds for the call log; returns the log then.
    pub async fn wait_for_calls<F>(
        &self,
        token: &str,
        mut predicate: F,
        timeout: Duration,
    ) -> Result<Vec<CallRecord>, SimError>
    where
        F: FnMut(&[CallRecord]) -> bool,
    {
        let state = self.state();
        state
            .wait_log(
                timeout,
                || "the call-log predicate".to_owned(),
                || {
                    let calls = state.calls(token)?;
                    Ok(predicate(&calls).then_some(calls))
                },
            )
            .await
    }

    /// Waits until `method` has been answered at least `count` times; returns
    /// those answered calls.
    pub async fn wait_for_method_calls(
        &self,
        token: &str,
        method: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<CallRecord>, SimError> {
        let answered = |calls: &[CallRecord]| -> Vec<CallRecord> {
            calls
                .iter()
                .filter(|c| c.method.eq_ignore_ascii_case(method) && c.elapsed.is_some())
                .cloned()
                .collect()
        };
        let calls = self
            .wait_for_calls(token, |calls| answered(calls).len() >= count, timeout)
            .await?;
        Ok(answered(&calls))
    }

    /// Waits until the bot has confirmed update `update_id` (and all earlier
    /// ones) by calling `getUpdates` with a higher offset — i.e. it handled the
    /// batch and polled again. Unlike counting answered `getUpdates` calls,
    /// this does not depend on the long-poll timeout.
    pub async fn wait_for_confirmed(
        &self,
        token: &str,
        update_id: u64,
        timeout: Duration,
    ) -> Result<(), SimError> {
        self.state()
            .wait_for_confirmed(token, update_id, timeout)
            .await
    }

    /// Queues a fault for upcoming calls.
    pub fn inject_fault(&self, token: &str, fault: Fault) -> Result<(), SimError> {
        self.state().add_fault(token, fault)
    }

    /// Faults still queued.
    pub fn faults(&self, token: &str) -> Result<Vec<Fault>, SimError> {
        self.state().faults(token)
    }

    /// Removes queued faults; returns how many were removed.
    pub fn clear_faults(&self, token: &str) -> Result<usize, SimError> {
        self.state().clear_faults(token)
    }

    /// The call log, oldest first (bounded).
    pub fn calls(&self, token: &str) -> Result<Vec<CallRecord>, SimError> {
        self.state().calls(token)
    }

    /// Number of calls per canonical method name.
    pub fn call_counts(&self, token: &str) -> Result<BTreeMap<String, u64>, SimError> {
        self.state().call_counts(token)
    }

    /// Number of calls of one method (case-insensitive).
    pub fn call_count(&self, token: &str, method: &str) -> Result<u64, SimError> {
        Ok(self
            .call_counts(token)?
            .iter()
            .filter(|(m, _)| m.eq_ignore_ascii_case(method))
            .map(|(_, n)| *n)
            .sum())
    }

    /// Commands set for the default scope and language.
    pub fn commands(&self, token: &str) -> Result<Vec<BotCommandSpec>, SimError> {
        self.state().commands(token)
    }

    /// Updates not yet confirmed by a `getUpdates` offset.
    pub fn pending_updates(&self, token: &str) -> Result<usize, SimError> {
        self.state().pending_updates(token)
    }

    /// Clears the sent log, the call log and counts, and queued faults.
    pub fn clear_logs(&self, token: &str) -> Result<(), SimError> {
        self.state().clear_logs(token)
    }

    /// Stops the server: pending long polls and delays end at once, in-flight
    /// requests get a short grace period. Idempotent.
    pub async fn shutdown(&self) {
        self.state().trigger_shutdown();
        let server = self
            .inner
            .server
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let Some(mut server) = server else { return };
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
        tracing::debug!(addr = %self.inner.addr, "telegram sim: stopped");
    }
}
