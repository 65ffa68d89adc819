//! The one harness that starts the real service, for the integration tests
//! (`tests/it`) and the benches (`benches/`): `agentlab run` as a child process on
//! a temporary directory and port 0, against the Telegram Bot API simulator
//! running in the calling process, with the binary's own test agent
//! (`agentlab test-agent`, which stays in the product: `demo` runs it too).
//!
//! The zero2prod `spawn_app` pattern: [`Options`] says what to configure
//! (`..Options::default()` for the rest), [`Service::start`] writes the
//! configuration, spawns the binary and returns once `/readyz` answers 200;
//! typed helpers (`send`, `wait_for_message`, `get`, `wait_task_done`, ...) drive
//! it and wait on conditions with a deadline, never on fixed sleeps.
//!
//! Invariants:
//! - Nothing is shared between two services: each has its own directory, tokens
//!   and port; the address is learnt from `data/agentlab.addr`, which the service
//!   writes once it listens and which the harness removes before every spawn, so a
//!   file left by an earlier process of the same directory is never read.
//! - Every failure is a panic that says what was waited for, and a panic while a
//!   [`Service`] is alive prints the service's log (its last
//!   [`LOG_LINES_ON_FAILURE`] lines, all runs): the log dies with the directory.
//! - The helpers never return errors, so no failure can skip that report.
//! - No process of a service outlives its [`Service`]: every run gets the
//!   service's own marker in its environment ([`SERVICE_MARKER_ENV`]), its agents
//!   inherit it wherever they work (the product passes its environment on, less
//!   its secrets), and the drop SIGKILLs every process that holds the marker or
//!   works inside the directory, with its process group, until none is left.
//!   A marker is unique to one [`Service`], so another service's processes, in
//!   this test process or another, are never touched.
//!
//! The crate knows the product only from outside: its binary, its configuration
//! file, its HTTP routes. What needs the product's library (opening the store)
//! is the caller's.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use telegram_sim::{
    IncomingMessage, SentItem, SentKind, SimConfig, SimHandle, SimLimits, TelegramSim,
};

/// Upper bound for anything a test waits for; conditions usually hold in ms.
pub const PATIENCE: Duration = Duration::from_secs(30);
/// The admin bearer token the harness configures.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// How many of the service's last log lines a failure prints.
pub const LOG_LINES_ON_FAILURE: usize = 400;
/// How often readiness is probed while the service starts: often enough that a
/// bench's restart-to-ready figure is not the probe's granularity.
const READY_POLL: Duration = Duration::from_millis(5);
/// How often the other waits look again.
const POLL: Duration = Duration::from_millis(20);
/// The environment variable that carries a [`Service`]'s marker to its runs and,
/// inherited, to their agents and whatever those start.
pub const SERVICE_MARKER_ENV: &str = "AGENTLAB_TEST_SERVICE";

/// The `agentlab` binary built beside the running test or bench:
/// `$CARGO_BIN_EXE_agentlab` when cargo set it, else `<target>/<profile>/agentlab`
/// next to this executable's `deps/` folder (cargo builds the product's binary
/// before its integration tests and benches). `cargo bench` thus finds the
/// release build, `cargo test` the debug one.
pub fn agentlab_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_BIN_EXE_agentlab") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .filter(|dir| dir.ends_with("deps"))
        .and_then(Path::parent)
        .or_else(|| exe.parent())
        .unwrap_or_else(|| Path::new("."));
    profile_dir.join(format!("agentlab{}", std::env::consts::EXE_SUFFIX))
}

/// The token of the `index`-th bot of a service, by bot id (a bench registers a
/// bot before its service exists, so the layout is public).
pub fn bot_token(index: usize, bot_id: &str) -> String {
    format!("{}00{index}:token-of-{bot_id}", 7 + index)
}

/// A simulator with room for long runs: the crash loop sends ~7,000 items and the
/// benches more; the default caps (for the simulator's own tests) would forget the
/// first answers and make them look lost.
pub async fn start_sim() -> SimHandle {
    let mut config = SimConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), Vec::new());
    config.limits = SimLimits {
        max_pending_updates: 10_000,
        max_sent_items: 1_000_000,
        max_calls: 1_000_000,
        max_messages: 1_000_000,
        ..SimLimits::default()
    };
    TelegramSim::start_with(config)
        .await
        .expect("start the simulator")
}

/// One bot of the service.
#[derive(Debug, Clone)]
pub struct BotSpec {
    /// Bot id.
    pub id: String,
    /// Allowed users.
    pub allowed: Vec<i64>,
    /// Admins.
    pub admins: Vec<i64>,
    /// The body of this bot's `[bots.agent]`; `None`: [`Options::agent_toml`].
    pub agent_toml: Option<String>,
}

impl BotSpec {
    /// A bot whose users are `allowed`; the first is also admin.
    pub fn new(id: &str, allowed: &[i64]) -> Self {
        BotSpec {
            id: id.into(),
            allowed: allowed.to_vec(),
            admins: allowed.first().copied().into_iter().collect(),
            agent_toml: None,
        }
    }
}

/// How to configure the service. Build it with struct update syntax
/// (`Options { workers: 1, ..Options::default() }`) so new fields need no churn.
#[derive(Debug, Clone)]
pub struct Options {
    /// The bots.
    pub bots: Vec<BotSpec>,
    /// Worker pool size.
    pub workers: usize,
    /// Extra TOML appended to `[limits]`.
    pub limits_toml: String,
    /// The body of `[monitor]`.
    pub monitor_toml: String,
    /// Extra TOML sections appended at the end (e.g. `[breaker]`).
    pub extra_toml: String,
    /// Whether to configure the admin token.
    pub admin_token: bool,
    /// More environment for the binary.
    pub extra_env: Vec<(String, String)>,
    /// Folders outside the service's directory that its processes use (the real
    /// CLI's `HOME`): removed with the [`Service`], after its processes ended.
    pub held_dirs: Vec<Arc<tempfile::TempDir>>,
    /// The body of every bot's `[bots.agent]`; `None`: the binary's test agent.
    pub agent_toml: Option<String>,
    /// The binary to run ([`agentlab_binary`] by default).
    pub binary: PathBuf,
    /// `RUST_LOG` of the service.
    pub log_filter: String,
    /// Where the temporary directory is made (`None`: the system's temp dir).
    pub temp_parent: Option<PathBuf>,
    /// How long start-up, exits and the waits may take.
    pub patience: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bots: vec![BotSpec::new("BOT-001", &[111, 222, 333, 444, 555])],
            workers: 3,
            limits_toml: String::new(),
            monitor_toml: "sample_interval_s = 1".into(),
            extra_toml: String::new(),
            admin_token: true,
            extra_env: Vec::new(),
            held_dirs: Vec::new(),
            agent_toml: None,
            binary: agentlab_binary(),
            log_filter: "info".into(),
            temp_parent: None,
            patience: PATIENCE,
        }
    }
}

/// A running (or stopped) agentlab service. Dropping it kills its processes: its
/// runs and their agents.
pub struct Service {
    /// Temporary root: data, logs, backups, config, the service's stderr.
    pub dir: tempfile::TempDir,
    /// The simulator the bots talk to.
    pub sim: SimHandle,
    /// Each bot's token, in `options.bots` order.
    pub tokens: Vec<String>,
    /// The options it was started with.
    pub options: Options,
    /// The config file.
    pub config_path: PathBuf,
    /// `http://127.0.0.1:PORT` of the running service, once ready.
    pub base_url: String,
    /// The process of the current run; a mutex so that a failing request (`&self`)
    /// can say whether it is still alive.
    child: Mutex<Option<Child>>,
    /// Earlier runs a [`Service::spawn`] replaced before they were reaped: killed
    /// and reaped on drop.
    replaced: Vec<Child>,
    /// This service's value of [`SERVICE_MARKER_ENV`].
    marker: String,
    spawned_at: Option<Instant>,
    http: reqwest::Client,
}

impl Service {
    /// Starts a simulator ([`start_sim`]) and the service; returns once ready.
    pub async fn start(options: Options) -> Service {
        Self::start_with_sim(start_sim().await, options).await
    }

    /// Starts the service against an existing simulator; returns once ready.
    pub async fn start_with_sim(sim: SimHandle, options: Options) -> Service {
        let mut service = Self::prepare(sim, options);
        service.spawn();
        service.wait_ready().await;
        service
    }

    /// Writes the configuration and registers the bots, without starting anything.
    pub fn prepare(sim: SimHandle, options: Options) -> Service {
        let dir = match &options.temp_parent {
            Some(parent) => tempfile::tempdir_in(parent),
            None => tempfile::tempdir(),
        }
        .expect("temp dir");
        Self::prepare_in(dir, sim, options)
    }

    /// As [`Service::prepare`], on a directory made beforehand (e.g. holding a
    /// pre-filled `data/agentlab.redb`).
    pub fn prepare_in(dir: tempfile::TempDir, sim: SimHandle, options: Options) -> Service {
        let tokens: Vec<String> = options
            .bots
            .iter()
            .enumerate()
            .map(|(i, bot)| bot_token(i, &bot.id))
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
            base_url: String::new(),
            child: Mutex::new(None),
            replaced: Vec::new(),
            marker: new_marker(),
            spawned_at: None,
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

    /// The file the service writes its HTTP address to once it listens.
    pub fn addr_file(&self) -> PathBuf {
        self.data_dir().join("agentlab.addr")
    }

    /// Environment for the binary (tokens, admin token, [`Options::extra_env`]).
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

    /// The value of [`SERVICE_MARKER_ENV`] in this service's runs and their agents.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// Starts `agentlab run` (without waiting). Its stderr is appended to
    /// `service.stderr` in the directory, across runs.
    pub fn spawn(&mut self) {
        // The address of an earlier run must not be mistaken for this one's.
        match std::fs::remove_file(self.addr_file()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot remove {}: {e}", self.addr_file().display()),
        }
        let binary = &self.options.binary;
        assert!(
            binary.is_file(),
            "{} is missing: build it first (`cargo build`, or `cargo build --release` \
             for a bench) or set Options::binary",
            binary.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("stderr file");
        let mut cmd = Command::new(binary);
        cmd.arg("--config")
            .arg(&self.config_path)
            .arg("run")
            .env_remove("AGENTLAB_CONFIG")
            .env("RUST_LOG", &self.options.log_filter)
            .envs(self.env())
            .env(SERVICE_MARKER_ENV, &self.marker)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.spawned_at = Some(Instant::now());
        let child = cmd.spawn().expect("spawn agentlab run");
        let earlier = self.child_slot().replace(child);
        self.replaced.extend(earlier);
    }

    /// When the current (or last) run was spawned.
    pub fn spawned_at(&self) -> Instant {
        self.spawned_at.expect("the service was spawned")
    }

    /// Waits for the address file and `/readyz` 200; panics (with the log) if the
    /// process exits first or the patience runs out.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + self.options.patience;
        let addr_file = self.addr_file();
        loop {
            if self.try_exit_status().is_some() {
                panic!(
                    "{} during start-up:\n{}",
                    self.process_state(),
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
            tokio::time::sleep(READY_POLL).await;
        }
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("service.stderr")
    }

    /// Everything the service's runs wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// The last lines the service wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        let text = self.stderr_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The service's stderr (all its runs), the last [`LOG_LINES_ON_FAILURE`]
    /// lines, framed for a failure report.
    pub fn log_report(&self) -> String {
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

    fn child_slot(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        // The slot holds no invariant a panic elsewhere could break.
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The exit status once the current run exited (the child is then reaped, and
    /// its pid must not be signalled any more: it may name another process).
    fn try_exit_status(&self) -> Option<ExitStatus> {
        let mut slot = self.child_slot();
        let child = slot.as_mut()?;
        child.try_wait().ok().flatten()
    }

    /// `Some(code)` once the current run exited (`None` inside: by a signal).
    fn try_exit_code(&self) -> Option<Option<i32>> {
        self.try_exit_status().map(|status| status.code())
    }

    /// What the process of the current run is doing, for a failure message.
    fn process_state(&self) -> String {
        match self.try_exit_status() {
            Some(status) => match status.signal() {
                Some(signal) => format!("the service process was killed by signal {signal}"),
                None => format!("the service process exited with {:?}", status.code()),
            },
            None if self.child_slot().is_some() => "the service process is running".into(),
            None => "no service process is running".into(),
        }
    }

    /// The pid of the running service; `None` once it is known to have exited.
    pub fn pid(&self) -> Option<u32> {
        let mut slot = self.child_slot();
        let child = slot.as_mut()?;
        matches!(child.try_wait(), Ok(None)).then(|| child.id())
    }

    /// SIGKILL, as a crash would; returns once the process is reaped.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child_slot().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit code.
    pub async fn stop(&mut self) -> Option<i32> {
        {
            let mut slot = self.child_slot();
            // Only a child not yet reaped: the pid of one that was may already
            // belong to another process. The lock keeps it unreaped until sent.
            if let Some(child) = slot.as_mut()
                && matches!(child.try_wait(), Ok(None))
            {
                // SAFETY: kill has no memory-safety preconditions; the pid is our
                // child's and it is not reaped, so it names no other process.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            }
        }
        self.wait_exit(self.options.patience).await
    }

    /// Waits for the service to exit by itself; returns its exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.try_exit_code() {
                *self.child_slot() = None;
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "service did not exit in time:\n{}",
                self.stderr_tail()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Starts the service again on the same directory and simulator.
    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    /// `user` presses the inline button with callback `data` on message
    /// `message_id` in `chat` of bot `bot` (index); returns the text of the
    /// press's answer (`answerCallbackQuery`) once the service has given it.
    pub async fn press(
        &self,
        bot: usize,
        user: i64,
        chat: i64,
        message_id: i32,
        data: &str,
    ) -> String {
        let token = &self.tokens[bot];
        let injected = self
            .sim
            .inject_callback(token, user, chat, message_id, data)
            .expect("inject a button press");
        wait_until("the press's answer", || {
            self.sim.sent(token).ok()?.into_iter().find_map(|i| {
                (i.kind == SentKind::CallbackAnswer
                    && i.callback_query_id.as_deref() == Some(&injected.callback_query_id))
                .then(|| i.text.unwrap_or_default())
            })
        })
        .await
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
        let deadline = Instant::now() + self.options.patience;
        loop {
            if let Some(found) = self.messages_to(bot, chat).into_iter().find(|t| pred(t)) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no matching message to chat {chat}; got {:#?}",
                self.messages_to(bot, chat),
            );
            tokio::time::sleep(POLL).await;
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
        let deadline = Instant::now() + self.options.patience;
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
                "expected {n} matching messages to chat {chat}, got {found:#?}",
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends a request with the admin token; panics, saying whether the process
    /// still runs, if the service cannot be reached.
    async fn request(&self, request: reqwest::RequestBuilder, what: &str) -> (u16, Value) {
        let resp = match request.bearer_auth(ADMIN_TOKEN).send().await {
            Ok(resp) => resp,
            Err(e) => panic!(
                "{what} on {}: {e:?}; {}",
                self.base_url,
                self.process_state()
            ),
        };
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// GET a JSON route (with the admin token).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.base_url);
        self.request(self.http.get(url), &format!("GET {path}"))
            .await
    }

    /// POST JSON to a route (with the admin token).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let url = format!("{}{path}", self.base_url);
        self.request(self.http.post(url).json(&body), &format!("POST {path}"))
            .await
    }

    /// Waits until task `id` reached a terminal state (via the API); returns it.
    pub async fn wait_task_done(&self, id: u64) -> Value {
        let deadline = Instant::now() + self.options.patience;
        loop {
            let (_, task) = self.get(&format!("/api/tasks/{id}")).await;
            if matches!(
                task["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                return task;
            }
            assert!(Instant::now() < deadline, "task {id} not done: {task}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until task `id` has `status` (via the API); returns it.
    pub async fn wait_task_status(&self, id: u64, status: &str) -> Value {
        let deadline = Instant::now() + self.options.patience;
        loop {
            let (_, task) = self.get(&format!("/api/tasks/{id}")).await;
            if task["status"] == status {
                return task;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} never {status}: {task}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every task of the service (via the API, up to 100), oldest first.
    pub async fn tasks(&self) -> Vec<Value> {
        let (status, body) = self.get("/api/tasks?limit=100").await;
        assert_eq!(status, 200, "GET /api/tasks: {body}");
        let mut tasks = body.as_array().cloned().unwrap_or_default();
        tasks.sort_by_key(|t| t["id"].as_u64());
        tasks
    }

    /// Waits until task `id` runs with its agent's pid and start time recorded
    /// (`pid`, `pid_start_time`): from then on a killed service leaves an agent
    /// the next start adopts. Returns the task.
    pub async fn wait_running_with_pid(&self, id: u64) -> Value {
        let deadline = Instant::now() + self.options.patience;
        loop {
            let task = self.wait_task_status(id, "running").await;
            if task["pid"].is_u64() && task["pid_start_time"].is_u64() {
                return task;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} never got a pid: {task}"
            );
            tokio::time::sleep(POLL).await;
        }
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

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
        for mut earlier in self.replaced.drain(..) {
            let _ = earlier.kill();
            let _ = earlier.wait();
        }
        // Agents are made to outlive the service (a restart adopts them), so a
        // killed service leaves them running or idle for ever: end them with the
        // test, wherever they work.
        end_processes_of(&self.marker, self.dir.path());
        // A failing test (any panic, from an assertion here or in the test) shows
        // what the service said: the log dies with the temporary directory.
        if std::thread::panicking() {
            eprintln!("{}", self.log_report());
        }
        keep_log(&self.stderr_path());
    }
}

/// A marker no other [`Service`] has, in any process: this process's id, its
/// count of services, and the time (against a reused process id).
fn new_marker() -> String {
    static SERVICES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = SERVICES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    format!("{}-{count}-{nanos}", std::process::id())
}

/// The live processes (zombies have neither environment nor working directory)
/// whose environment holds `marker` as [`SERVICE_MARKER_ENV`], or whose working
/// directory is inside `root` when given; never this process.
pub fn processes_of(marker: &str, root: Option<&Path>) -> Vec<libc::pid_t> {
    let entry_wanted = format!("{SERVICE_MARKER_ENV}={marker}");
    let root = root.and_then(|root| root.canonicalize().ok());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id() as libc::pid_t;
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<libc::pid_t>().ok()?;
            let marked = std::fs::read(entry.path().join("environ")).is_ok_and(|environ| {
                environ
                    .split(|&byte| byte == 0)
                    .any(|var| var == entry_wanted.as_bytes())
            });
            let inside = root.as_ref().is_some_and(|root| {
                std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(root))
            });
            (pid != own && (marked || inside)).then_some(pid)
        })
        .collect()
}

/// SIGKILLs every process of the service marked `marker` ([`processes_of`]), with
/// its process group, and looks again until none is left: one may have started
/// another while the first sweep went by. Gives up, saying so, after [`PATIENCE`]
/// (a drop must not panic).
fn end_processes_of(marker: &str, root: &Path) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = processes_of(marker, Some(root));
        if found.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("processes of the service {marker} survived SIGKILL: {found:?}");
            return;
        }
        for pid in found {
            // SAFETY: kill(2) and getpgid(2) have no memory-safety preconditions;
            // the pid was just seen carrying this service's own marker, or working
            // inside its own temporary folder.
            unsafe {
                if libc::getpgid(pid) == pid {
                    libc::kill(-pid, libc::SIGKILL);
                }
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(POLL);
    }
}

/// With `$AGENTLAB_TEST_KEEP_LOGS` naming a folder, every service's whole log is
/// copied there when its [`Service`] ends, passing or not: for hunting what a
/// rare failure left no trace of.
fn keep_log(log: &Path) {
    let Some(folder) = std::env::var_os(KEEP_LOGS_ENV) else {
        return;
    };
    let name = format!(
        "service-{}-{}.log",
        std::process::id(),
        KEPT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let kept = std::fs::create_dir_all(&folder)
        .and_then(|()| std::fs::copy(log, Path::new(&folder).join(name)));
    if let Err(e) = kept {
        eprintln!("cannot keep the service log in {}: {e}", folder.display());
    }
}

/// The variable naming the folder [`keep_log`] copies logs to.
pub const KEEP_LOGS_ENV: &str = "AGENTLAB_TEST_KEEP_LOGS";
static KEPT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Polls `probe` until it gives a value; panics after [`PATIENCE`] naming `what`.
pub async fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
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
        std::thread::sleep(POLL);
    }
}

/// The configuration file: everything under `root`, HTTP on loopback port 0.
/// Tests edit its text (`bind = "127.0.0.1:0"`, `task_timeout_s = 60`), so those
/// lines keep their exact form.
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
{monitor}
"#,
        root = root.display(),
        workers = options.workers,
        limits = options.limits_toml,
        monitor = options.monitor_toml,
    );
    let test_agent = format!(
        "command = [{:?}, \"test-agent\"]",
        options.binary.display().to_string()
    );
    for (i, bot) in options.bots.iter().enumerate() {
        let agent = bot
            .agent_toml
            .as_ref()
            .or(options.agent_toml.as_ref())
            .unwrap_or(&test_agent);
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
        ));
    }
    out.push_str(&options.extra_toml);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bot_of_its_own_takes_its_agent_over_the_shared_one() {
        let options = Options {
            bots: vec![
                BotSpec::new("A", &[1]),
                BotSpec {
                    agent_toml: Some("command = [\"probe\"]".into()),
                    ..BotSpec::new("B", &[2, 3])
                },
            ],
            agent_toml: Some("command = [\"shared\"]".into()),
            ..Options::default()
        };
        let toml = config_toml(Path::new("/r"), "http://sim", &options);
        let a = toml.find("id = \"A\"").expect("bot A");
        let b = toml.find("id = \"B\"").expect("bot B");
        assert!(toml[a..b].contains("command = [\"shared\"]"), "{toml}");
        assert!(toml[b..].contains("command = [\"probe\"]"), "{toml}");
        assert!(toml[b..].contains("admins = [2]"), "{toml}");
    }

    #[test]
    fn the_default_agent_is_the_binarys_test_agent() {
        let options = Options {
            binary: PathBuf::from("/opt/agentlab"),
            ..Options::default()
        };
        let toml = config_toml(Path::new("/r"), "http://sim", &options);
        assert!(
            toml.contains("command = [\"/opt/agentlab\", \"test-agent\"]"),
            "{toml}"
        );
        // Tests rewrite these lines by their text.
        assert!(toml.contains("bind = \"127.0.0.1:0\"\n"), "{toml}");
        assert!(toml.contains("task_timeout_s = 60\n"), "{toml}");
    }
}
