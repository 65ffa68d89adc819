//! The shared harness: starts the real `agentlab run` binary on a temporary
//! directory and port 0, against the built-in Telegram Bot API simulator (running
//! in the test process) and the binary's own test agent.
//!
//! Everything between the simulator and the agent is the production code path.
//! Waits are on conditions with deadlines, never fixed sleeps. A test that fails
//! (panics) while it holds a [`Service`] prints the service's log.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agentlab::storage::{Store, StoreOptions, Task};
use serde_json::Value;
use telegram_sim::{IncomingMessage, SentItem, SentKind, SimConfig, SimHandle, TelegramSim};

/// Upper bound for anything a test waits for; conditions usually hold in ms.
pub const PATIENCE: Duration = Duration::from_secs(30);
/// The admin bearer token the harness configures.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_agentlab")
}

/// One bot of the test service.
#[derive(Debug, Clone)]
pub struct BotSpec {
    /// Bot id.
    pub id: String,
    /// Allowed users.
    pub allowed: Vec<i64>,
    /// Admins.
    pub admins: Vec<i64>,
}

impl BotSpec {
    /// A bot whose users are `allowed`; the first is also admin.
    pub fn new(id: &str, allowed: &[i64]) -> Self {
        BotSpec {
            id: id.into(),
            allowed: allowed.to_vec(),
            admins: allowed.first().copied().into_iter().collect(),
        }
    }
}

/// How to configure the service.
#[derive(Debug, Clone)]
pub struct Options {
    /// The bots.
    pub bots: Vec<BotSpec>,
    /// Worker pool size.
    pub workers: usize,
    /// Extra TOML appended to `[limits]`.
    pub limits_toml: String,
    /// Extra TOML sections appended at the end (e.g. `[breaker]`).
    pub extra_toml: String,
    /// Whether to configure the admin token.
    pub admin_token: bool,
    /// More environment for the binary.
    pub extra_env: Vec<(String, String)>,
    /// The body of every bot's `[bots.agent]`; `None`: the built-in test agent.
    pub agent_toml: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bots: vec![BotSpec::new("BOT-001", &[111, 222, 333, 444, 555])],
            workers: 3,
            limits_toml: String::new(),
            extra_toml: String::new(),
            admin_token: true,
            extra_env: Vec::new(),
            agent_toml: None,
        }
    }
}

/// A running (or stopped) agentlab service under test.
pub struct Service {
    /// Temporary root: data, logs, backups, config.
    pub dir: tempfile::TempDir,
    /// The simulator the bots talk to.
    pub sim: SimHandle,
    /// Each bot's token, in `options.bots` order.
    pub tokens: Vec<String>,
    /// The options it was started with.
    pub options: Options,
    /// The config file.
    pub config_path: PathBuf,
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` of the running service.
    pub base_url: String,
    http: reqwest::Client,
}

impl Service {
    /// Starts a simulator and the service; returns once `/readyz` says ready.
    pub async fn start(options: Options) -> Service {
        // The long crash loop sends ~7,000 items; the default caps (5,000 sent
        // items) would forget the first answers and make them look lost.
        let mut config = SimConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), Vec::new());
        config.limits.max_sent_items = 1_000_000;
        config.limits.max_calls = 1_000_000;
        config.limits.max_messages = 1_000_000;
        let sim = TelegramSim::start_with(config)
            .await
            .expect("start the simulator");
        Self::start_with_sim(sim, options).await
    }

    /// Starts the service against an existing simulator.
    pub async fn start_with_sim(sim: SimHandle, options: Options) -> Service {
        let mut service = Self::prepare(sim, options);
        service.spawn();
        service.wait_ready().await;
        service
    }

    /// Writes the configuration and registers the bots, without starting anything.
    pub fn prepare(sim: SimHandle, options: Options) -> Service {
        let dir = tempfile::tempdir().expect("temp dir");
        let tokens: Vec<String> = options
            .bots
            .iter()
            .enumerate()
            .map(|(i, b)| format!("{}00{i}:token-of-{}", 7 + i, b.id))
            .collect();
        for (bot, token) in options.bots.iter().zip(&tokens) {
            sim.register_bot_as(
                token,
                &format!("{}_bot", bot.id.to_lowercase().replace('-', "_")),
                &bot.id,
            )
            .expect("register bot");
        }
        let config_path = dir.path().join("agentlab.toml");
        std::fs::write(&config_path, config_toml(dir.path(), &sim.url(), &options))
            .expect("write config");
        Service {
            dir,
            sim,
            tokens,
            options,
            config_path,
            child: None,
            base_url: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    /// The data folder.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Environment for the binary (tokens, admin token).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("AGENTLAB_TEST_TOKEN_{i}"), t.clone()))
            .collect();
        if self.options.admin_token {
            env.push(("AGENTLAB_TEST_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()));
        }
        env.extend(self.options.extra_env.iter().cloned());
        env
    }

    /// Starts `agentlab run` (without waiting).
    pub fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.data_dir().join("agentlab.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("service.stderr"))
            .expect("stderr file");
        let mut cmd = Command::new(binary());
        cmd.arg("--config")
            .arg(&self.config_path)
            .arg("run")
            .env_remove("AGENTLAB_CONFIG")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn agentlab run"));
    }

    /// Waits for the address file and `/readyz` 200.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        let addr_file = self.data_dir().join("agentlab.addr");
        loop {
            if let Some(code) = self.try_exit_code() {
                panic!(
                    "agentlab exited with {code:?} during start-up:\n{}",
                    self.stderr_tail()
                );
            }
            if let Ok(addr) = std::fs::read_to_string(&addr_file) {
                let base = format!("http://{}", addr.trim());
                if let Ok(resp) = self.http.get(format!("{base}/readyz")).send().await
                    && resp.status().is_success()
                {
                    self.base_url = base;
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "service not ready in time:\n{}",
                self.stderr_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the service's runs wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("service.stderr")).unwrap_or_default()
    }

    /// The last lines the service wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        let text = self.stderr_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn try_exit_code(&mut self) -> Option<Option<i32>> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.code()),
            _ => None,
        }
    }

    /// The pid of the running service.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit code.
    pub async fn stop(&mut self) -> Option<i32> {
        if let Some(pid) = self.pid() {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        self.wait_exit(PATIENCE).await
    }

    /// Waits for the service to exit by itself; returns its exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.try_exit_code() {
                self.child = None;
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "service did not exit in time:\n{}",
                self.stderr_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the service again on the same directory and simulator.
    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    /// A user sends a text to bot `bot` (index) in their private chat.
    pub fn send(&self, bot: usize, user: i64, text: &str) -> u64 {
        self.sim
            .inject_text(&self.tokens[bot], user, user, text)
            .expect("inject text")
    }

    /// A user sends any message.
    pub fn send_message(&self, bot: usize, message: &IncomingMessage) {
        self.sim
            .inject_message(&self.tokens[bot], message)
            .expect("inject message");
    }

    /// Everything bot `bot` sent to `chat`.
    pub fn sent_to(&self, bot: usize, chat: i64) -> Vec<SentItem> {
        self.sim.sent_to(&self.tokens[bot], chat).expect("sent")
    }

    /// New messages (not edits) bot `bot` sent to `chat`, visible text.
    pub fn messages_to(&self, bot: usize, chat: i64) -> Vec<String> {
        self.sent_to(bot, chat)
            .into_iter()
            .filter(|i| matches!(i.kind, SentKind::Message | SentKind::Document))
            .map(|i| i.plain_text.or(i.text).unwrap_or_default())
            .collect()
    }

    /// Waits until a message to `chat` satisfies `pred`; returns its visible text.
    pub async fn wait_for_message(
        &self,
        bot: usize,
        chat: i64,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(found) = self.messages_to(bot, chat).into_iter().find(|t| pred(t)) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no matching message to chat {chat}; got {:#?}\nservice log:\n{}",
                self.messages_to(bot, chat),
                self.stderr_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `n` messages to `chat` satisfy `pred`.
    pub async fn wait_for_count(
        &self,
        bot: usize,
        chat: i64,
        n: usize,
        pred: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found: Vec<String> = self
                .messages_to(bot, chat)
                .into_iter()
                .filter(|t| pred(t))
                .collect();
            if found.len() >= n {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} matching messages to chat {chat}, got {found:#?}\nservice log:\n{}",
                self.stderr_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GET a JSON route (with the admin token).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base_url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// POST JSON to a route (with the admin token).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Waits until task `id` reached a terminal state (via the API); returns it.
    pub async fn wait_task_done(&self, id: u64) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (_, task) = self.get(&format!("/api/tasks/{id}")).await;
            if matches!(
                task["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                return task;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} not done: {task}\n{}",
                self.stderr_tail()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until task `id` has `status` (via the API); returns it.
    pub async fn wait_task_status(&self, id: u64, status: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (_, task) = self.get(&format!("/api/tasks/{id}")).await;
            if task["status"] == status {
                return task;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} never {status}: {task}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Opens the store directly (the service must be stopped).
    pub fn open_store(&self) -> Store {
        Store::open(
            &self.data_dir().join("agentlab.redb"),
            StoreOptions::default(),
        )
        .expect("open store")
    }

    /// All tasks, through the store (the service must be stopped).
    pub fn all_tasks(&self) -> Vec<Task> {
        let store = self.open_store();
        let tasks = store
            .list_tasks(&agentlab::storage::TaskFilter {
                limit: Some(100_000),
                ..Default::default()
            })
            .expect("list tasks");
        store.close();
        tasks
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
        // A failing test (any panic, from an assertion here or in the test) shows
        // what the service said: the log dies with the temporary directory.
        if std::thread::panicking() {
            eprintln!("{}", self.log_report());
        }
    }
}

/// How many of the service's last stderr lines a failing test prints.
const LOG_LINES_ON_FAILURE: usize = 400;

impl Service {
    /// The service's stderr (all its runs), the last [`LOG_LINES_ON_FAILURE`]
    /// lines, framed for a test failure.
    fn log_report(&self) -> String {
        let text = self.stderr_text();
        let lines: Vec<&str> = text.lines().collect();
        let shown = &lines[lines.len().saturating_sub(LOG_LINES_ON_FAILURE)..];
        let omitted = lines.len() - shown.len();
        format!(
            "---- agentlab service log ({} lines{}) ----\n{}\n---- end of the service log ----",
            lines.len(),
            if omitted > 0 {
                format!(", the first {omitted} left out")
            } else {
                String::new()
            },
            shown.join("\n")
        )
    }

    /// Waits until the service's stderr (all its runs) has a line that
    /// satisfies `pred`; returns that line.
    pub async fn wait_for_log_line(&self, pred: impl Fn(&str) -> bool) -> String {
        let text = wait_until("a matching line in the service log", || {
            let text = self.stderr_text();
            text.lines().any(&pred).then_some(text)
        })
        .await;
        text.lines()
            .find(|l| pred(l))
            .unwrap_or_default()
            .to_string()
    }
}

/// Polls `probe` until it gives a value; panics after [`PATIENCE`] naming `what`.
pub async fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The blocking twin of [`wait_until`], for tests without a runtime.
pub fn wait_until_blocking<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The path of an optional program a test drives (schemathesis, chromium,
/// moto_server, python3), found on `PATH`.
///
/// `build.rs` sets `missing_tool = "NAME"` when one is absent (except with `CI`
/// set), and the tests that need it are marked
/// `#[cfg_attr(missing_tool = "NAME", ignore = "NAME not installed: HOW")]`, so
/// cargo's summary counts them as ignored. Those tests call this first: where
/// they run without the tool (in CI) they fail here, naming it.
pub fn require_tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: this test needs it (see the README's Tests section; \
                 with CI set no test may skip)"
            )
        })
}

fn config_toml(root: &Path, api_url: &str, options: &Options) -> String {
    let mut out = format!(
        r#"data_dir = "{root}/data"
backup_dir = "{root}/backups"
log_dir = "{root}/logs"

[http]
bind = "127.0.0.1:0"
admin_token_env = "AGENTLAB_TEST_ADMIN_TOKEN"

[limits]
workers = {workers}
task_timeout_s = 60
{limits}

[monitor]
sample_interval_s = 1
"#,
        root = root.display(),
        workers = options.workers,
        limits = options.limits_toml,
    );
    for (i, bot) in options.bots.iter().enumerate() {
        out.push_str(&format!(
            r#"
[[bots]]
id = "{id}"
token_env = "AGENTLAB_TEST_TOKEN_{i}"
api_url = "{api_url}"
allowed_users = {allowed:?}
admins = {admins:?}
workdir = "{root}"

[bots.agent]
{agent}
"#,
            id = bot.id,
            allowed = bot.allowed,
            admins = bot.admins,
            root = root.display(),
            agent = options.agent_toml.clone().unwrap_or_else(|| format!(
                "command = [\"{bin}\", \"test-agent\"]",
                bin = binary()
            )),
        ));
    }
    out.push_str(&options.extra_toml);
    out
}
