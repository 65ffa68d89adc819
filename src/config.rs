//! Configuration: the TOML file (keys in `examples/agentlab.toml`), parsed into plain
//! data and validated.
//!
//! Invariants: every key has a default except a bot's token, which never lives in the
//! file (only the *name* of the environment variable that holds it does); an unknown
//! key, a wrong type or an invalid value is one error naming the key; secrets are
//! resolved from the environment at the edge and are redacted whenever the
//! configuration is printed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerSettings;

/// Environment variable that names the configuration file when `--config` is absent.
pub const CONFIG_ENV: &str = "AGENTLAB_CONFIG";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the schema (unknown key, wrong type).
    #[error("invalid config file {path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// toml's message, which names the key and the line.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid config value `{key}` = {value}: {problem}")]
    Invalid {
        /// The full key path, e.g. `bots[0].id` or `breaker.failure_threshold`.
        key: String,
        /// The value found, as TOML would write it (URLs redacted).
        value: String,
        /// What is wrong and what is expected.
        problem: String,
    },
}

/// The whole configuration, as typed in the file (with defaults filled in).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Folder of `agentlab.redb` and `runs/`.
    pub data_dir: PathBuf,
    /// Folder of the snapshot files.
    pub backup_dir: PathBuf,
    /// Folder of the JSON log files.
    pub log_dir: PathBuf,
    /// The HTTP server.
    pub http: HttpConfig,
    /// Rates, budgets, pool size and timeouts.
    pub limits: LimitsConfig,
    /// Snapshot schedule and rotation.
    pub backup: BackupConfig,
    /// The storage layer.
    pub storage: StorageConfig,
    /// The process's async runtime.
    pub runtime: RuntimeConfig,
    /// Defaults for every (bot, dependency) circuit breaker.
    pub breaker: BreakerSettings,
    /// Sampling and retention of the monitors.
    pub monitor: MonitorConfig,
    /// Alert delivery.
    pub alerts: AlertsConfig,
    /// The independent watchdog process.
    pub watchdog: WatchdogConfig,
    /// The Telegram bots, each with its own token and agent.
    pub bots: Vec<BotConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            backup_dir: PathBuf::from("backups"),
            log_dir: PathBuf::from("logs"),
            http: HttpConfig::default(),
            limits: LimitsConfig::default(),
            backup: BackupConfig::default(),
            storage: StorageConfig::default(),
            runtime: RuntimeConfig::default(),
            breaker: BreakerSettings::default(),
            monitor: MonitorConfig::default(),
            alerts: AlertsConfig::default(),
            watchdog: WatchdogConfig::default(),
            bots: Vec::new(),
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on; loopback by default.
    pub bind: String,
    /// Name of the environment variable holding the admin bearer token.
    pub admin_token_env: String,
    /// Name of the environment variable holding the read-only bearer token, which
    /// opens the read routes (not the admin ones) when `bind` is not loopback.
    pub read_token_env: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            admin_token_env: "AGENTLAB_ADMIN_TOKEN".into(),
            read_token_env: "AGENTLAB_READ_TOKEN".into(),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Concurrent agent runs.
    pub workers: usize,
    /// Prompts a user may send per minute.
    pub rate_per_minute: u32,
    /// Prompts a user may send per hour.
    pub rate_per_hour: u32,
    /// Daily budget per bot, USD.
    pub daily_cost_usd: f64,
    /// Monthly budget per bot, USD.
    pub monthly_cost_usd: f64,
    /// Attempts per task, the first included.
    pub max_attempts: u32,
    /// Seconds an agent run may take before its process group is killed.
    pub task_timeout_s: u64,
    /// Largest file a user may send to the agent, MiB (Telegram lets bots
    /// download at most 20 MB); checked before anything is downloaded.
    pub max_upload_mb: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            workers: 3,
            rate_per_minute: 30,
            rate_per_hour: 500,
            daily_cost_usd: 10.0,
            monthly_cost_usd: 100.0,
            max_attempts: 3,
            task_timeout_s: 1800,
            max_upload_mb: 20,
        }
    }
}

/// `[backup]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// Cron expression with seconds (six fields), hourly by default.
    pub schedule: String,
    /// Newest snapshots kept.
    pub keep: usize,
    /// Extra daily snapshots kept (the newest of each day), 0 = none.
    pub keep_daily: usize,
    /// Extra weekly snapshots kept (the newest of each ISO week), 0 = none.
    pub keep_weekly: usize,
    /// Copies in object storage (`[backup.remote]`).
    pub remote: RemoteBackupConfig,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            schedule: "0 0 * * * *".into(),
            keep: 24,
            keep_daily: 0,
            keep_weekly: 0,
            remote: RemoteBackupConfig::default(),
        }
    }
}

/// `[backup.remote]`: verified (optionally encrypted) copies of each snapshot in
/// object storage. Credentials come from each provider's standard environment
/// variables (`AWS_ACCESS_KEY_ID`, `GOOGLE_APPLICATION_CREDENTIALS`,
/// `AZURE_STORAGE_ACCOUNT_KEY`, ...), never from this file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteBackupConfig {
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`,
    /// `file:///path`; empty = no remote copies.
    pub url: String,
    /// Endpoint of an S3-compatible server (MinIO, Ceph, R2, ...); empty = AWS.
    pub endpoint: String,
    /// S3 region; empty = the environment's (`AWS_REGION`) or `us-east-1`.
    pub region: String,
    /// Newest remote copies kept.
    pub keep: usize,
    /// Name of the environment variable holding the encryption key (64 hex
    /// characters, e.g. from `openssl rand -hex 32`); empty = copies are not encrypted.
    pub encryption_key_env: String,
    /// `backup_offsite_stale` fires when the newest remote copy is older than this.
    pub stale_after_s: u64,
    /// Longest pause between retries of a failed upload (the pauses double up to it).
    pub retry_max_s: u64,
    /// Multipart upload part size, MiB (S3 needs at least 5).
    pub part_size_mb: usize,
}

impl Default for RemoteBackupConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            endpoint: String::new(),
            region: String::new(),
            keep: 48,
            encryption_key_env: String::new(),
            stale_after_s: 7200,
            retry_max_s: 300,
            part_size_mb: 8,
        }
    }
}

impl RemoteBackupConfig {
    /// Whether remote copies are configured.
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }
}

/// The URL schemes `[backup.remote] url` accepts.
pub const REMOTE_SCHEMES: [&str; 6] = ["s3", "s3a", "gs", "az", "abfs", "file"];

/// `[storage]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// redb page cache in MiB (redb's own default is 1 GiB: far too much here).
    pub cache_mb: usize,
    /// Messages of conversation history kept per (bot, user).
    pub history_messages: usize,
    /// Free space (MiB) below which old run output and logs are pruned and, if that
    /// is not enough, new prompts are refused (`backup::disk`).
    pub min_free_mb: u64,
    /// redb quick repair: faster first open after a crash, slower commits
    /// (measured in BENCHMARKS.md, "Recovery time").
    pub quick_repair: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            cache_mb: 32,
            history_messages: 50,
            min_free_mb: 100,
            quick_repair: false,
        }
    }
}

/// `[runtime]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Threads of the async runtime: the bots, the HTTP server, the pool's
    /// dispatcher. Storage, the journal, snapshots, file work and the agents run
    /// on threads and processes of their own. Two keep the HTTP API's tail
    /// latency low under load (measured in BENCHMARKS.md); one made no
    /// difference to the CPU per message that this machine's noise could show.
    pub async_threads: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self { async_threads: 2 }
    }
}

/// `[monitor]`: sampling, retention, and the monitors' judgement thresholds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Seconds between samples.
    pub sample_interval_s: u64,
    /// Days raw samples are kept.
    pub raw_retention_days: u64,
    /// Days rollups are kept.
    pub rollup_retention_days: u64,
    /// Hours of resident memory the leak detector fits a line to.
    pub leak_window_hours: u64,
    /// Samples the leak detector needs before it judges.
    pub leak_min_samples: usize,
    /// Minutes the samples must span before the leak detector judges (start-up warm-up).
    pub leak_min_span_minutes: u64,
    /// Slope (MB per hour) from which a good fit counts as a leak.
    pub leak_min_mb_per_hour: f64,
    /// Fit quality (R², 0..1) from which a slope counts as a steady climb.
    pub leak_min_r2: f64,
    /// Share of the open-file limit from which fd exhaustion is reported (0..1).
    pub fd_exhaustion_ratio: f64,
    /// A dependency is degraded when its p95 latency exceeds its baseline by this factor...
    pub api_degraded_factor: f64,
    /// ... for at least this many seconds.
    pub api_degraded_for_s: u64,
    /// z-score from which a key series counts as anomalous.
    pub anomaly_z: f64,
    /// Weight of a new sample in the EWMA mean and deviation (0..1).
    pub anomaly_alpha: f64,
    /// Samples a series needs before anomalies are judged.
    pub anomaly_warmup_samples: u64,
    /// Failures of different classes closer than this count as co-occurring, seconds.
    pub cooccurrence_window_s: u64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            sample_interval_s: 10,
            raw_retention_days: 7,
            rollup_retention_days: 90,
            leak_window_hours: 6,
            leak_min_samples: 30,
            leak_min_span_minutes: 60,
            leak_min_mb_per_hour: 1.0,
            leak_min_r2: 0.8,
            fd_exhaustion_ratio: 0.8,
            api_degraded_factor: 3.0,
            api_degraded_for_s: 120,
            anomaly_z: 4.0,
            anomaly_alpha: 0.05,
            anomaly_warmup_samples: 30,
            cooccurrence_window_s: 300,
        }
    }
}

/// `[alerts]`: thresholds and `for` durations of the alert rules, and where
/// notifications go (every bot admin on Telegram, and the webhook when set).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Optional URL receiving a JSON POST for every alert that fires or resolves.
    pub webhook_url: String,
    /// Attempts per webhook delivery.
    pub webhook_attempts: u32,
    /// Seconds after which a still-firing alert is announced again; 0 never.
    pub reminder_interval_s: u64,
    /// bot_down: seconds a bot's polling has failed.
    pub bot_down_for_s: u64,
    /// high_error_rate: failures per minute above which it holds.
    pub error_rate_per_min: f64,
    /// high_error_rate: seconds it must hold.
    pub error_rate_for_s: u64,
    /// worker_pool_saturated: queue depth above which it holds.
    pub queue_depth_max: u64,
    /// worker_pool_saturated: seconds it must hold.
    pub queue_depth_for_s: u64,
    /// disk_full: used share of the data directory's file system (0..1).
    pub disk_used_ratio: f64,
    /// api_cost_limit: share of the daily cost limit a bot spent today (0..1).
    pub cost_ratio: f64,
    /// memory_leak_suspected: seconds the leak verdict must hold.
    pub leak_for_s: u64,
    /// fd_exhaustion: seconds it must hold.
    pub fd_for_s: u64,
    /// circuit_open: seconds a breaker must stay open.
    pub circuit_open_for_s: u64,
    /// backup_stale: hours without a verified backup (once backups exist).
    pub backup_stale_hours: u64,
    /// cascade_risk: failures in the last hour from which a rising rate alerts.
    pub cascade_min_failures_per_hour: u64,
    /// cascade_risk: the last hour's rate against the previous 24 h's from which it is rising.
    pub cascade_rising_factor: f64,
    /// anomaly: seconds a series must stay anomalous.
    pub anomaly_for_s: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhook_url: String::new(),
            webhook_attempts: 3,
            reminder_interval_s: 4 * 3600,
            bot_down_for_s: 300,
            error_rate_per_min: 10.0,
            error_rate_for_s: 300,
            queue_depth_max: 20,
            queue_depth_for_s: 600,
            disk_used_ratio: 0.9,
            cost_ratio: 0.8,
            leak_for_s: 600,
            fd_for_s: 60,
            circuit_open_for_s: 60,
            backup_stale_hours: 2,
            cascade_min_failures_per_hour: 10,
            cascade_rising_factor: 2.0,
            anomaly_for_s: 30,
        }
    }
}

/// `[watchdog]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WatchdogConfig {
    /// The health endpoint checked; empty: `/health` at `http.bind`'s address
    /// (see [`Config::watchdog_health_url`]).
    pub health_url: String,
    /// Optional dead man's switch pinged after each healthy check.
    pub ping_url: String,
    /// Command run to restart the service; empty = launchctl/systemctl by platform.
    pub restart_command: Vec<String>,
    /// Seconds between checks.
    pub interval_s: u64,
    /// Consecutive failed checks before a restart.
    pub failures_before_restart: u32,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        Self {
            health_url: String::new(),
            ping_url: String::new(),
            restart_command: Vec::new(),
            interval_s: 60,
            failures_before_restart: 3,
        }
    }
}

/// `[[bots]]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BotConfig {
    /// Stable identifier used in the store, the API and the logs.
    pub id: String,
    /// Name of the environment variable holding the bot token.
    pub token_env: String,
    /// Bot API server.
    pub api_url: String,
    /// Telegram user ids allowed to use the bot; empty = nobody.
    pub allowed_users: Vec<i64>,
    /// Users who may also /restart and /backup.
    pub admins: Vec<i64>,
    /// Working directory of the agent: the project named `default`.
    pub workdir: PathBuf,
    /// The agent command line.
    pub agent: AgentConfig,
    /// `[[bots.projects]]`: more working directories a user may switch to.
    pub projects: Vec<ProjectConfig>,
}

/// Name of the project the bot's own `workdir` is.
pub use crate::storage::DEFAULT_PROJECT;

/// `[[bots.projects]]`: a named working directory (`/project NAME`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectConfig {
    /// What users type after `/project`.
    pub name: String,
    /// Working directory of the agent in this project.
    pub workdir: PathBuf,
}

impl BotConfig {
    /// The bot's projects, `default` (its `workdir`) first, then in configuration
    /// order: (name, workdir).
    pub fn project_list(&self) -> Vec<(&str, &Path)> {
        std::iter::once((DEFAULT_PROJECT, self.workdir.as_path()))
            .chain(
                self.projects
                    .iter()
                    .map(|p| (p.name.as_str(), p.workdir.as_path())),
            )
            .collect()
    }

    /// The working directory of the project `name`, if the bot has it.
    pub fn project_workdir(&self, name: &str) -> Option<&Path> {
        if name == DEFAULT_PROJECT {
            return Some(&self.workdir);
        }
        self.projects
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.workdir.as_path())
    }
}

impl Default for BotConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            token_env: "TELEGRAM_BOT_TOKEN".into(),
            api_url: "https://api.telegram.org".into(),
            allowed_users: Vec::new(),
            admins: Vec::new(),
            workdir: PathBuf::from("."),
            agent: AgentConfig::default(),
            projects: Vec::new(),
        }
    }
}

/// Default of `[bots.agent] keep_warm_s`: ten minutes.
pub const DEFAULT_KEEP_WARM_S: u64 = 600;
/// Longest accepted `[bots.agent] keep_warm_s`: a day.
pub const MAX_KEEP_WARM_S: u64 = 86_400;
/// Default of `[bots.agent] approval_timeout_s`: ten minutes.
pub const DEFAULT_APPROVAL_TIMEOUT_S: u64 = 600;

/// `[bots.agent]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// The protocol the agent speaks.
    pub kind: AgentKind,
    /// The program and its own arguments; the prompt goes to stdin, never here.
    /// For [`AgentKind::Claude`] agentlab adds the protocol flags itself.
    pub command: Vec<String>,
    /// `--model` for Claude Code; empty: the CLI's default. The model of a user
    /// who picked none with `/model`.
    pub model: String,
    /// [`AgentKind::Claude`] only: the models a user may pick with `/model`, named
    /// as the CLI's `--model` takes them (`claude-sonnet-4-5`, `opus`); empty
    /// hides the command.
    pub models: Vec<String>,
    /// `--permission-mode` for Claude Code.
    pub permission_mode: PermissionMode,
    /// Tools Claude Code may use without asking (its syntax: `Bash(git log:*)`).
    pub allowed_tools: Vec<String>,
    /// Tools Claude Code may never use.
    pub disallowed_tools: Vec<String>,
    /// Arguments added after everything else.
    pub extra_args: Vec<String>,
    /// [`AgentKind::Claude`] only: seconds a session's agent process stays open
    /// after answering, for the same session's next prompt; 0 starts a process per
    /// prompt, ended after its turn (tool approvals are asked for either way).
    pub keep_warm_s: u64,
    /// [`AgentKind::Claude`] only: seconds a tool approval waits for an answer
    /// before it is denied; at least 1.
    pub approval_timeout_s: u64,
    /// [`AgentKind::Plain`] only: arguments added to continue a session, with
    /// `{session_id}` substituted. Claude Code is resumed with `--resume`.
    pub resume_args: Vec<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            kind: AgentKind::Claude,
            command: vec!["claude".into()],
            model: String::new(),
            models: Vec::new(),
            permission_mode: PermissionMode::Default,
            allowed_tools: Vec::new(),
            disallowed_tools: Vec::new(),
            extra_args: Vec::new(),
            keep_warm_s: DEFAULT_KEEP_WARM_S,
            approval_timeout_s: DEFAULT_APPROVAL_TIMEOUT_S,
            resume_args: vec!["--resume".into(), "{session_id}".into()],
        }
    }
}

impl AgentConfig {
    /// What `/model` offers: `models` for [`AgentKind::Claude`], nothing for
    /// [`AgentKind::Plain`] (whose command line agentlab does not shape).
    pub fn model_choices(&self) -> &[String] {
        match self.kind {
            AgentKind::Claude => &self.models,
            AgentKind::Plain => &[],
        }
    }

    /// The model of a user whose `/model` choice is `chosen`: that one while it is
    /// still offered, otherwise `model` (empty: the CLI's default).
    pub fn model_for<'a>(&'a self, chosen: Option<&'a str>) -> &'a str {
        match chosen {
            Some(name) if self.model_choices().iter().any(|m| m == name) => name,
            _ => self.model.trim(),
        }
    }
}

/// The protocol an agent speaks (`[bots.agent] kind`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    /// Claude Code's stream-json protocol: JSON messages on stdin, JSON events on
    /// stdout (docs/claude-code-protocol.md).
    #[default]
    Claude,
    /// Any program: the prompt on stdin, the answer on stdout, the exit code says
    /// whether it succeeded.
    Plain,
}

/// Claude Code's permission modes (`[bots.agent] permission_mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PermissionMode {
    /// Ask before tools that change things.
    #[default]
    Default,
    /// Edits are allowed without asking.
    AcceptEdits,
    /// Plan only: nothing is changed.
    Plan,
    /// Nothing is asked: every tool runs.
    BypassPermissions,
}

impl PermissionMode {
    /// Every mode.
    pub const ALL: [PermissionMode; 4] = [
        PermissionMode::Default,
        PermissionMode::AcceptEdits,
        PermissionMode::Plan,
        PermissionMode::BypassPermissions,
    ];

    /// The mode named `name` as Claude Code spells it (case-insensitive).
    pub fn from_name(name: &str) -> Option<PermissionMode> {
        Self::ALL
            .into_iter()
            .find(|mode| mode.as_str().eq_ignore_ascii_case(name))
    }

    /// The mode as Claude Code spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PermissionMode::Default => "default",
            PermissionMode::AcceptEdits => "acceptEdits",
            PermissionMode::Plan => "plan",
            PermissionMode::BypassPermissions => "bypassPermissions",
        }
    }
}

/// Claude Code flags that agentlab sets itself for `kind = "claude"`, each with
/// the key that sets it instead (empty: nothing to set, agentlab owns it).
pub const CLAUDE_PROTOCOL_FLAGS: &[(&str, &str)] = &[
    ("-p", ""),
    ("--print", ""),
    ("--verbose", ""),
    ("--input-format", ""),
    ("--output-format", ""),
    ("--permission-prompt-tool", ""),
    ("--resume", ""),
    ("-r", ""),
    ("--continue", ""),
    ("-c", ""),
    ("--session-id", ""),
    ("--model", "model"),
    ("--permission-mode", "permission_mode"),
    ("--allowedTools", "allowed_tools"),
    ("--allowed-tools", "allowed_tools"),
    ("--disallowedTools", "disallowed_tools"),
    ("--disallowed-tools", "disallowed_tools"),
];

/// The first protocol flag in `args` (also as `--flag=value`), with its key.
fn claude_protocol_flag(args: &[String]) -> Option<(&'static str, &'static str)> {
    args.iter().find_map(|arg| {
        let name = arg.split_once('=').map_or(arg.as_str(), |(name, _)| name);
        CLAUDE_PROTOCOL_FLAGS
            .iter()
            .find(|(flag, _)| *flag == name)
            .copied()
    })
}

/// Checks what the agent's keys say together; `key` names a key of this bot.
fn check_agent(agent: &AgentConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    check_models(&agent.models, &key("agent.models"))?;
    if agent.kind != AgentKind::Claude {
        return Ok(());
    }
    if agent.keep_warm_s > MAX_KEEP_WARM_S {
        return Err(invalid(
            &key("agent.keep_warm_s"),
            agent.keep_warm_s.to_string(),
            &format!("must be at most {MAX_KEEP_WARM_S} (a day); 0 starts a process per prompt"),
        ));
    }
    if agent.approval_timeout_s == 0 {
        return Err(invalid(
            &key("agent.approval_timeout_s"),
            "0".to_owned(),
            "must be at least 1 second; an unanswered approval is denied after it",
        ));
    }
    for (name, args) in [
        ("command", &agent.command),
        ("extra_args", &agent.extra_args),
    ] {
        if let Some((flag, own_key)) = claude_protocol_flag(args) {
            let fix = if own_key.is_empty() {
                "agentlab adds it itself for kind = \"claude\"".to_owned()
            } else {
                format!("set it with `{own_key}` instead")
            };
            return Err(invalid(
                &key(&format!("agent.{name}")),
                format!("{args:?}"),
                &format!(
                    "`{flag}` is a protocol flag: remove it ({fix}); `command` is just the CLI, \
                     e.g. [\"claude\"]; kind = \"plain\" runs a command exactly as written"
                ),
            ));
        }
    }
    Ok(())
}

/// What `/model default` means: back to the bot's `model`; no listed model may
/// take the name.
pub const DEFAULT_MODEL_CHOICE: &str = "default";

/// `models`: each a name the CLI's `--model` can take (not empty, no spaces, not
/// read as a flag, not [`DEFAULT_MODEL_CHOICE`]), none twice.
fn check_models(models: &[String], key: &str) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for name in models {
        if name.is_empty() || name.starts_with('-') || name.chars().any(char::is_whitespace) {
            return Err(invalid(
                key,
                format!("{models:?}"),
                &format!(
                    "{name:?} is not a model name: give each as `--model` takes it, e.g. \
                     \"claude-sonnet-4-5\" or \"opus\""
                ),
            ));
        }
        if name.eq_ignore_ascii_case(DEFAULT_MODEL_CHOICE) {
            return Err(invalid(
                key,
                format!("{models:?}"),
                "\"default\" is what `/model default` means (back to `model`); set `model` instead",
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(invalid(
                key,
                format!("{models:?}"),
                &format!("{name:?} is listed twice; list each model once"),
            ));
        }
    }
    Ok(())
}

/// `agent` with the Claude-only keys at their defaults.
fn plain_defaults(agent: &AgentConfig) -> AgentConfig {
    let defaults = AgentConfig::default();
    AgentConfig {
        model: defaults.model,
        models: defaults.models,
        permission_mode: defaults.permission_mode,
        allowed_tools: defaults.allowed_tools,
        disallowed_tools: defaults.disallowed_tools,
        keep_warm_s: defaults.keep_warm_s,
        approval_timeout_s: defaults.approval_timeout_s,
        ..agent.clone()
    }
}

/// A configuration without a `[[bots]]` section: `agentlab run` refuses it, since
/// every prompt (Telegram, `POST /api/tasks`, `ask`) names a configured bot, so
/// such a service could only sit there; most often it is `run` started in a
/// folder with no `agentlab.toml`, on built-in defaults.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no bots are configured, so nothing could send the service a prompt: add a [[bots]] \
     section (examples/agentlab.toml has one to copy), or name the file that has it with \
     --config or $AGENTLAB_CONFIG"
)]
pub struct NoBots;

/// A bot whose token variable is unset or empty: `agentlab run` cannot start it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bot `{bot_id}`: the token variable ${var} is not set")]
pub struct MissingToken {
    /// The bot.
    pub bot_id: String,
    /// The environment variable its `token_env` names.
    pub var: String,
}

impl MissingToken {
    /// The missing token of `bot`.
    pub fn of(bot: &BotConfig) -> Self {
        Self {
            bot_id: bot.id.clone(),
            var: bot.token_env.clone(),
        }
    }
}

/// A warning that does not stop the service (e.g. a bot nobody may use).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigWarning(pub String);

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<(Self, Vec<ConfigWarning>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<(Self, Vec<ConfigWarning>), ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: origin.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let warnings = config.validate()?;
        Ok((config, warnings))
    }

    /// Checks every value; returns warnings for legal but suspicious settings.
    /// An error names the full key (`breaker.failure_threshold`, `bots[1].id`)
    /// and the value found there.
    pub fn validate(&self) -> Result<Vec<ConfigWarning>, ConfigError> {
        let mut warnings = Vec::new();
        self.validate_http()?;
        self.validate_limits()?;
        self.validate_backup()?;
        at_least_one("storage.cache_mb", self.storage.cache_mb as u64)?;
        at_least_one("monitor.sample_interval_s", self.monitor.sample_interval_s)?;
        self.breaker.validate().map_err(|e| ConfigError::Invalid {
            key: format!("breaker.{}", e.field),
            value: e.value,
            problem: e.expected,
        })?;
        self.validate_monitor()?;
        self.validate_watchdog()?;
        if !self.alerts.webhook_url.is_empty() {
            check_url(
                "alerts.webhook_url",
                &self.alerts.webhook_url,
                redact_secret_url,
            )?;
        }
        self.validate_bots(&mut warnings)?;
        Ok(warnings)
    }

    fn validate_monitor(&self) -> Result<(), ConfigError> {
        let (m, a) = (&self.monitor, &self.alerts);
        for (key, v) in [
            ("monitor.leak_min_r2", m.leak_min_r2),
            ("monitor.fd_exhaustion_ratio", m.fd_exhaustion_ratio),
            ("monitor.anomaly_alpha", m.anomaly_alpha),
            ("alerts.disk_used_ratio", a.disk_used_ratio),
            ("alerts.cost_ratio", a.cost_ratio),
        ] {
            // Written so that NaN is refused too.
            if !(v > 0.0 && v <= 1.0) {
                return Err(invalid(key, v, "must be above 0 and at most 1"));
            }
        }
        at_least_one("monitor.leak_window_hours", m.leak_window_hours)?;
        if m.leak_min_samples < 3 {
            return Err(invalid(
                "monitor.leak_min_samples",
                m.leak_min_samples,
                "must be at least 3",
            ));
        }
        if m.api_degraded_factor.is_nan() || m.api_degraded_factor <= 1.0 {
            return Err(invalid(
                "monitor.api_degraded_factor",
                m.api_degraded_factor,
                "must be above 1",
            ));
        }
        if m.anomaly_z.is_nan() || m.anomaly_z <= 0.0 {
            return Err(invalid("monitor.anomaly_z", m.anomaly_z, "must be above 0"));
        }
        at_least_one("alerts.webhook_attempts", a.webhook_attempts.into())
    }

    fn validate_http(&self) -> Result<(), ConfigError> {
        self.http.bind.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "http.bind",
                quoted(&self.http.bind),
                &format!("not host:port ({e})"),
            )
        })?;
        for (key, var) in [
            ("http.admin_token_env", &self.http.admin_token_env),
            ("http.read_token_env", &self.http.read_token_env),
        ] {
            if var.trim().is_empty() {
                return Err(invalid(
                    key,
                    quoted(var),
                    "must name an environment variable",
                ));
            }
        }
        Ok(())
    }

    fn validate_watchdog(&self) -> Result<(), ConfigError> {
        let w = &self.watchdog;
        if !w.health_url.is_empty() {
            check_url("watchdog.health_url", &w.health_url, redact_url)?;
        }
        if !w.ping_url.is_empty() {
            check_url("watchdog.ping_url", &w.ping_url, redact_secret_url)?;
        }
        if !w.restart_command.is_empty()
            && w.restart_command
                .first()
                .is_none_or(|p| p.trim().is_empty())
        {
            return Err(invalid(
                "watchdog.restart_command",
                format!("{:?}", w.restart_command),
                "must name a program (or be empty for launchctl/systemctl)",
            ));
        }
        at_least_one("watchdog.interval_s", w.interval_s)?;
        at_least_one(
            "watchdog.failures_before_restart",
            w.failures_before_restart.into(),
        )
    }

    /// The URL the watchdog checks: `watchdog.health_url` when set, else `/health`
    /// at `http.bind`'s address, a wildcard bind (`0.0.0.0`, `[::]`) checked on
    /// the loopback address of its family.
    pub fn watchdog_health_url(&self) -> String {
        if !self.watchdog.health_url.is_empty() {
            return self.watchdog.health_url.clone();
        }
        let bind = &self.http.bind;
        match bind.parse::<SocketAddr>() {
            Ok(addr) => health_url_at(addr),
            // Validation refuses such a bind; shown as typed.
            Err(_) => format!("http://{bind}/health"),
        }
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if !(1..=64).contains(&self.runtime.async_threads) {
            return Err(invalid(
                "runtime.async_threads",
                self.runtime.async_threads,
                "must be between 1 and 64",
            ));
        }
        if !(1..=256).contains(&l.workers) {
            return Err(invalid(
                "limits.workers",
                l.workers,
                "must be between 1 and 256",
            ));
        }
        at_least_one("limits.rate_per_minute", l.rate_per_minute.into())?;
        at_least_one("limits.rate_per_hour", l.rate_per_hour.into())?;
        for (key, usd) in [
            ("limits.daily_cost_usd", l.daily_cost_usd),
            ("limits.monthly_cost_usd", l.monthly_cost_usd),
        ] {
            if !(usd >= 0.0 && usd.is_finite()) {
                return Err(invalid(key, usd, "must be a finite number >= 0"));
            }
        }
        at_least_one("limits.max_attempts", l.max_attempts.into())?;
        at_least_one("limits.task_timeout_s", l.task_timeout_s)?;
        at_least_one("limits.max_upload_mb", l.max_upload_mb)
    }

    fn validate_backup(&self) -> Result<(), ConfigError> {
        let schedule = &self.backup.schedule;
        parse_cron(schedule).map_err(|e| invalid("backup.schedule", quoted(schedule), &e))?;
        at_least_one("backup.keep", self.backup.keep as u64)?;
        self.validate_backup_remote()
    }

    fn validate_backup_remote(&self) -> Result<(), ConfigError> {
        let r = &self.backup.remote;
        if !r.enabled() {
            return Ok(());
        }
        let scheme = r.url.split_once("://").map(|(scheme, _)| scheme);
        if !scheme.is_some_and(|s| REMOTE_SCHEMES.contains(&s)) {
            return Err(invalid(
                "backup.remote.url",
                quoted(&redact_secret_url(&r.url)),
                "expected s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or file:///path",
            ));
        }
        if url::Url::parse(&r.url).is_err() {
            return Err(invalid(
                "backup.remote.url",
                quoted(&redact_secret_url(&r.url)),
                "not a valid URL",
            ));
        }
        if !r.endpoint.is_empty() {
            check_url("backup.remote.endpoint", &r.endpoint, redact_secret_url)?;
        }
        at_least_one("backup.remote.keep", r.keep as u64)?;
        at_least_one("backup.remote.stale_after_s", r.stale_after_s)?;
        at_least_one("backup.remote.retry_max_s", r.retry_max_s)?;
        if !(5..=1024).contains(&r.part_size_mb) {
            return Err(invalid(
                "backup.remote.part_size_mb",
                r.part_size_mb,
                "must be between 5 and 1024 (S3 parts are at least 5 MiB)",
            ));
        }
        Ok(())
    }

    fn validate_bots(&self, warnings: &mut Vec<ConfigWarning>) -> Result<(), ConfigError> {
        let mut seen = HashSet::new();
        for (i, bot) in self.bots.iter().enumerate() {
            let key = |field: &str| format!("bots[{i}].{field}");
            let id = quoted(&bot.id);
            if bot.id.trim().is_empty() {
                return Err(invalid(&key("id"), id, "every bot needs an id"));
            }
            if !bot
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    &key("id"),
                    id,
                    "use letters, digits, '-' and '_' only",
                ));
            }
            if !seen.insert(bot.id.as_str()) {
                return Err(invalid(
                    &key("id"),
                    id,
                    "duplicate bot id (each bot needs its own)",
                ));
            }
            if bot.token_env.trim().is_empty() {
                return Err(invalid(
                    &key("token_env"),
                    quoted(&bot.token_env),
                    "must name an environment variable",
                ));
            }
            check_url(&key("api_url"), &bot.api_url, redact_url)?;
            if bot
                .agent
                .command
                .first()
                .is_none_or(|p| p.trim().is_empty())
            {
                return Err(invalid(
                    &key("agent.command"),
                    format!("{:?}", bot.agent.command),
                    "must name a program",
                ));
            }
            check_agent(&bot.agent, &key)?;
            check_projects(&bot.projects, &key)?;
            if bot.agent.kind == AgentKind::Plain && bot.agent != plain_defaults(&bot.agent) {
                warnings.push(ConfigWarning(format!(
                    "bots[{i}].agent: model, models, permission_mode, allowed_tools, disallowed_tools and \
                     keep_warm_s apply to kind = \"claude\" only; kind = \"plain\" ignores them"
                )));
            }
            if bot.allowed_users.is_empty() {
                warnings.push(ConfigWarning(format!(
                    "bots[{i}].allowed_users is empty: nobody can use bot `{}`",
                    bot.id
                )));
            }
            for admin in &bot.admins {
                if !bot.allowed_users.contains(admin) {
                    warnings.push(ConfigWarning(format!(
                        "bots[{i}].admins: {admin} is not in allowed_users; admins are allowed anyway"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The bots whose token variable is unset or empty in this process's
    /// environment, in configuration order.
    pub fn missing_tokens(&self) -> Vec<MissingToken> {
        self.bots
            .iter()
            .filter(|bot| secret_from_env(&bot.token_env).is_none())
            .map(MissingToken::of)
            .collect()
    }

    /// [`NoBots`] when no bot is configured (`agentlab run` refuses to start).
    pub fn require_bots(&self) -> Result<(), NoBots> {
        if self.bots.is_empty() {
            Err(NoBots)
        } else {
            Ok(())
        }
    }

    /// The bot with this id.
    pub fn bot(&self, id: &str) -> Option<&BotConfig> {
        self.bots.iter().find(|b| b.id == id)
    }

    /// Path of the database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("agentlab.redb")
    }

    /// Folder of the agents' output files.
    pub fn runs_dir(&self) -> PathBuf {
        self.data_dir.join("runs")
    }

    /// Renders the effective configuration as TOML, plus which secrets are set.
    /// Secrets themselves never appear: only the names of their variables.
    pub fn render_redacted(&self) -> String {
        // URLs may carry credentials (`user:password@`, `?token=`): shown redacted.
        let mut shown = self.clone();
        // Webhook and ping URLs often carry their secret in the path itself
        // (Slack, Discord, healthchecks): only scheme and host are shown.
        for url in [&mut shown.alerts.webhook_url, &mut shown.watchdog.ping_url] {
            *url = redact_secret_url(url);
        }
        // The URL the watchdog will check, even when it follows http.bind.
        shown.watchdog.health_url = redact_url(&self.watchdog_health_url());
        for bot in &mut shown.bots {
            bot.api_url = redact_url(&bot.api_url);
        }
        let mut out = toml::to_string_pretty(&shown)
            .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"));
        out.push_str("\n# secrets (from the environment, values redacted)\n");
        let admin = secret_status(&self.http.admin_token_env);
        out.push_str(&format!(
            "# http admin token: ${} {admin}\n",
            self.http.admin_token_env
        ));
        out.push_str(&format!(
            "# http read token: ${} {}\n",
            self.http.read_token_env,
            secret_status(&self.http.read_token_env)
        ));
        for bot in &self.bots {
            let status = secret_status(&bot.token_env);
            out.push_str(&format!(
                "# bot {} token: ${} {status}\n",
                bot.id, bot.token_env
            ));
        }
        out
    }
}

/// A URL whose path may be a secret, fit to print: `scheme://host` and `/REDACTED`
/// for whatever followed. The host is what follows the last `@`, so a password
/// holding `/`, `?`, `#` or `@` cannot leak into it.
pub fn redact_secret_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.is_empty() {
            String::new()
        } else {
            "REDACTED".into()
        };
    };
    let after_userinfo = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host_end = after_userinfo
        .find(['/', '?', '#'])
        .unwrap_or(after_userinfo.len());
    let host = &after_userinfo[..host_end];
    let userinfo = if rest.contains('@') { "REDACTED@" } else { "" };
    let consumed = (rest.len() - after_userinfo.len()) + host.len();
    let tail = if rest.len() > consumed {
        "/REDACTED"
    } else {
        ""
    };
    format!("{scheme}://{userinfo}{host}{tail}")
}

/// A URL fit to print: the password of any userinfo (`user:password@`, or the
/// whole userinfo when it is a single token) and every query value replaced by
/// `REDACTED`; the scheme, host, path and query names stay, so the shape of the
/// configuration can still be checked.
pub fn redact_url(url: &str) -> String {
    const MASK: &str = "REDACTED";
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((head, _)) => (head, Some(MASK)),
        None => (url, None),
    };
    let (base, query) = match before_fragment.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (before_fragment, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = match userinfo.split_once(':') {
                        Some((user, _)) => format!("{user}:{MASK}"),
                        None => MASK.to_string(),
                    };
                    format!("{user}@{host}")
                }
                None => authority.to_string(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => base.to_string(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}={MASK}"),
                None if pair.is_empty() => String::new(),
                None => MASK.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

fn secret_status(var: &str) -> &'static str {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => "is set (redacted)",
        _ => "is NOT set",
    }
}

/// Project names are what users type after `/project`: unique, not `default`
/// (the bot's own `workdir`), short and free of spaces so a button can carry them.
fn check_projects(
    projects: &[ProjectConfig],
    key: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for (j, project) in projects.iter().enumerate() {
        let name_key = key(&format!("projects[{j}].name"));
        let name = quoted(&project.name);
        if project.name == DEFAULT_PROJECT {
            return Err(invalid(
                &name_key,
                name,
                "`default` is the bot's own workdir; give this project another name",
            ));
        }
        if project.name.is_empty()
            || project.name.len() > 32
            || !project
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(invalid(
                &name_key,
                name,
                "use 1 to 32 letters, digits, '-', '_' and '.'",
            ));
        }
        if !seen.insert(project.name.as_str()) {
            return Err(invalid(
                &name_key,
                name,
                "duplicate project name (each project needs its own)",
            ));
        }
        if project.workdir.as_os_str().is_empty() {
            return Err(invalid(
                &key(&format!("projects[{j}].workdir")),
                quoted(""),
                "must name a directory",
            ));
        }
    }
    Ok(())
}

fn invalid(key: &str, value: impl std::fmt::Display, problem: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        problem: problem.to_string(),
    }
}

/// A count or duration that must be at least 1.
fn at_least_one(key: &str, value: u64) -> Result<(), ConfigError> {
    if value >= 1 {
        Ok(())
    } else {
        Err(invalid(key, value, "must be at least 1"))
    }
}

/// `/health` of a service listening on `addr`, reached on loopback when `addr`
/// is a wildcard (`0.0.0.0`, `[::]`).
pub fn health_url_at(mut addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}/health")
}

/// A string value as TOML would write it.
fn quoted(text: &str) -> String {
    format!("{text:?}")
}

/// `redact` makes the URL fit to print: the value may carry a secret.
fn check_url(key: &str, url: &str, redact: fn(&str) -> String) -> Result<(), ConfigError> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() > "https://".len()
        && !url.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(invalid(key, quoted(&redact(url)), "not an http(s) URL"))
    }
}

/// Parses a six-field (seconds first) cron expression; the error says what is
/// wrong with it, the caller says which one it is.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    let fields = expr.split_whitespace().count();
    if fields != 6 {
        return Err(format!(
            "{fields} fields; expected 6 (sec min hour day month weekday)"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(expr)
        .map_err(|e| format!("not a valid cron expression: {e}"))
}

/// Reads a secret from the environment; `None` when unset or empty.
pub fn secret_from_env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let (config, warnings) = parse("").expect("defaults are valid");
        assert_eq!(config.http.bind, "127.0.0.1:8080");
        assert_eq!(config.limits.workers, 3);
        assert_eq!(config.backup.keep, 24);
        assert_eq!(config.storage.cache_mb, 32);
        assert_eq!(config.breaker.failure_threshold, 5);
        assert!(warnings.is_empty());
    }

    /// Every key path of a TOML document (`limits.workers`, `bots.agent.command`;
    /// arrays of tables by their table keys).
    fn key_paths(table: &toml::Table, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
        for (key, value) in table {
            let path = format!("{prefix}{key}");
            match value {
                toml::Value::Table(inner) => key_paths(inner, &format!("{path}."), out),
                toml::Value::Array(items)
                    if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
                {
                    for item in items.iter().filter_map(toml::Value::as_table) {
                        key_paths(item, &format!("{path}."), out);
                    }
                }
                _ => {
                    out.insert(path);
                }
            }
        }
    }

    /// examples/agentlab.toml is the file newcomers copy: it must load with the
    /// real loader, hold every key there is (a key added to the configuration
    /// and not to the example fails here), and give each its default, except
    /// the bot's placeholders.
    #[test]
    fn the_example_config_is_valid_complete_and_shows_the_defaults() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/agentlab.toml"
        ));
        let (config, warnings) = Config::load(path).expect("the example loads");
        assert_eq!(warnings, Vec::new());

        let example: toml::Table = std::fs::read_to_string(path)
            .expect("read the example")
            .parse()
            .expect("the example is TOML");
        let mut in_example = std::collections::BTreeSet::new();
        key_paths(&example, "", &mut in_example);
        let mut every_key = std::collections::BTreeSet::new();
        let full = Config {
            bots: vec![BotConfig::default()],
            ..Config::default()
        };
        match toml::Value::try_from(&full).expect("serialise the defaults") {
            toml::Value::Table(table) => key_paths(&table, "", &mut every_key),
            other => panic!("not a table: {other}"),
        }
        let missing: Vec<_> = every_key.difference(&in_example).collect();
        assert!(
            missing.is_empty(),
            "keys missing from the example: {missing:?}"
        );

        assert_eq!(
            Config {
                bots: Vec::new(),
                ..config.clone()
            },
            Config::default(),
            "a value in the example is not the default"
        );
        let [bot] = config.bots.as_slice() else {
            panic!("the example has one bot: {:?}", config.bots);
        };
        assert!(!bot.allowed_users.is_empty() && !bot.admins.is_empty());
        assert_eq!(
            *bot,
            BotConfig {
                id: bot.id.clone(),
                allowed_users: bot.allowed_users.clone(),
                admins: bot.admins.clone(),
                ..BotConfig::default()
            }
        );
    }

    #[test]
    fn the_watchdog_follows_http_bind_unless_its_url_is_set() {
        let url = |text: &str| parse(text).expect("valid").0.watchdog_health_url();
        assert_eq!(url(""), "http://127.0.0.1:8080/health");
        assert_eq!(
            url("[http]\nbind = \"127.0.0.1:9100\"\n"),
            "http://127.0.0.1:9100/health"
        );
        assert_eq!(
            url("[http]\nbind = \"0.0.0.0:9100\"\n"),
            "http://127.0.0.1:9100/health"
        );
        assert_eq!(
            url("[http]\nbind = \"[::]:9100\"\n"),
            "http://[::1]:9100/health"
        );
        assert_eq!(
            url("[http]\nbind = \"192.168.1.4:9100\"\n"),
            "http://192.168.1.4:9100/health"
        );
        assert_eq!(
            url(
                "[http]\nbind = \"127.0.0.1:9100\"\n[watchdog]\nhealth_url = \"http://10.0.0.2:80/health\"\n"
            ),
            "http://10.0.0.2:80/health"
        );
        let (config, _) =
            Config::parse("[http]\nbind = \"0.0.0.0:9100\"\n", Path::new("t.toml")).expect("valid");
        assert!(
            config
                .render_redacted()
                .contains("health_url = \"http://127.0.0.1:9100/health\""),
            "check-config shows the effective URL"
        );
    }

    #[test]
    fn watchdog_keys_are_validated() {
        for (text, expected) in [
            (
                "[watchdog]\ninterval_s = 0\n",
                "`watchdog.interval_s` = 0: must be at least 1",
            ),
            (
                "[watchdog]\nfailures_before_restart = 0\n",
                "`watchdog.failures_before_restart` = 0: must be at least 1",
            ),
            (
                "[watchdog]\nhealth_url = \"localhost:8080/health\"\n",
                "`watchdog.health_url` = \"localhost:8080/health\": not an http(s) URL",
            ),
            (
                "[watchdog]\nping_url = \"hc-ping.com/secret\"\n",
                "`watchdog.ping_url` = \"REDACTED\": not an http(s) URL",
            ),
            (
                "[watchdog]\nrestart_command = [\"\", \"x\"]\n",
                "`watchdog.restart_command` = [\"\", \"x\"]: must name a program",
            ),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[limits]\nworkerz = 3\n").unwrap_err().to_string();
        assert!(err.contains("workerz"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = parse("[limits]\nworkers = \"three\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("workers"), "{err}");
    }

    #[test]
    fn projects_are_listed_after_the_default_and_bad_names_are_refused() {
        let ok = "[[bots]]\nid = \"A\"\nworkdir = \"/w\"\n[[bots.projects]]\nname = \"api\"\nworkdir = \"/srv/api\"\n";
        let (config, _) = parse(ok).expect("valid");
        let bot = config.bot("A").expect("bot");
        let names: Vec<&str> = bot.project_list().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["default", "api"]);
        assert_eq!(bot.project_workdir("api"), Some(Path::new("/srv/api")));
        assert_eq!(bot.project_workdir("default"), Some(Path::new("/w")));
        assert_eq!(bot.project_workdir("web"), None);
        // check-config shows them.
        let shown = config.render_redacted();
        assert!(shown.contains("[[bots.projects]]"), "{shown}");
        assert!(shown.contains("name = \"api\""), "{shown}");

        let named_default =
            "[[bots]]\nid = \"A\"\n[[bots.projects]]\nname = \"default\"\nworkdir = \"/x\"\n";
        let err = parse(named_default).expect_err("refused").to_string();
        assert!(err.contains("bots[0].projects[0].name"), "{err}");
        assert!(err.contains("\"default\""), "{err}");

        let twice = "[[bots]]\nid = \"A\"\n[[bots.projects]]\nname = \"api\"\nworkdir = \"/x\"\n[[bots.projects]]\nname = \"api\"\nworkdir = \"/y\"\n";
        let err = parse(twice).expect_err("refused").to_string();
        assert!(err.contains("bots[0].projects[1].name"), "{err}");
        assert!(err.contains("duplicate project name"), "{err}");
    }

    #[test]
    fn duplicate_bot_id_is_refused() {
        let text =
            "[[bots]]\nid = \"A\"\nallowed_users=[1]\n[[bots]]\nid = \"A\"\nallowed_users=[1]\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(
            err.contains("bots[1].id") && err.contains("duplicate"),
            "{err}"
        );
    }

    #[test]
    fn a_claude_command_carrying_protocol_flags_is_refused_with_the_fix() {
        let old = "[[bots]]\nid = \"B\"\n[bots.agent]\ncommand = [\"claude\", \"-p\", \"--output-format\", \"json\"]\n";
        let err = parse(old).expect_err("refused").to_string();
        assert!(err.contains("bots[0].agent.command"), "{err}");
        assert!(err.contains("`-p` is a protocol flag"), "{err}");
        assert!(err.contains("agentlab adds it itself"), "{err}");
        let model = "[[bots]]\nid = \"B\"\n[bots.agent]\nextra_args = [\"--model=opus\"]\n";
        let err = parse(model).expect_err("refused").to_string();
        assert!(err.contains("bots[0].agent.extra_args"), "{err}");
        assert!(err.contains("set it with `model` instead"), "{err}");
        // A plain agent runs its command as written.
        let plain = "[[bots]]\nid = \"B\"\nallowed_users = [1]\n[bots.agent]\nkind = \"plain\"\ncommand = [\"claude\", \"-p\"]\n";
        let (config, warnings) = parse(plain).expect("plain is as written");
        assert_eq!(config.bots[0].agent.kind, AgentKind::Plain);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn approval_timeout_s_defaults_to_ten_minutes_and_is_not_zero() {
        let text = "[[bots]]\nid = \"B\"\nallowed_users = [1]\n[bots.agent]\n";
        let agent = &parse(text).expect("valid").0.bots[0].agent;
        assert_eq!(agent.approval_timeout_s, 600);
        let short = format!("{text}approval_timeout_s = 5\n");
        assert_eq!(
            parse(&short).expect("valid").0.bots[0]
                .agent
                .approval_timeout_s,
            5
        );
        let err = parse(&format!("{text}approval_timeout_s = 0\n"))
            .expect_err("zero")
            .to_string();
        assert!(err.contains("bots[0].agent.approval_timeout_s"), "{err}");
    }

    #[test]
    fn keep_warm_s_defaults_to_ten_minutes_and_is_bounded() {
        let text = "[[bots]]\nid = \"B\"\nallowed_users = [1]\n[bots.agent]\n";
        assert_eq!(parse(text).expect("valid").0.bots[0].agent.keep_warm_s, 600);
        let off = format!("{text}keep_warm_s = 0\n");
        assert_eq!(parse(&off).expect("valid").0.bots[0].agent.keep_warm_s, 0);
        let err = parse(&format!("{text}keep_warm_s = 100000\n"))
            .expect_err("too long")
            .to_string();
        assert!(err.contains("bots[0].agent.keep_warm_s"), "{err}");
    }

    #[test]
    fn agent_kind_and_permission_mode_are_read_as_claude_spells_them() {
        let text = "[[bots]]\nid = \"B\"\nallowed_users = [1]\n[bots.agent]\npermission_mode = \"acceptEdits\"\nmodel = \"claude-x\"\n";
        let (config, _) = parse(text).expect("valid");
        let agent = &config.bots[0].agent;
        assert_eq!(agent.kind, AgentKind::Claude);
        assert_eq!(agent.permission_mode, PermissionMode::AcceptEdits);
        assert!(parse("[[bots]]\nid = \"B\"\n[bots.agent]\npermission_mode = \"yolo\"\n").is_err());
        assert!(parse("[[bots]]\nid = \"B\"\n[bots.agent]\nkind = \"codex\"\n").is_err());
        let plain_with_model = "[[bots]]\nid = \"B\"\nallowed_users = [1]\n[bots.agent]\nkind = \"plain\"\ncommand = [\"x\"]\nmodel = \"m\"\n";
        let (_, warnings) = parse(plain_with_model).expect("valid");
        assert!(
            warnings
                .iter()
                .any(|w| w.0.contains("kind = \"plain\" ignores them")),
            "{warnings:?}"
        );
    }

    #[test]
    fn models_are_read_and_an_empty_or_repeated_name_is_refused() {
        let text = "[[bots]]\nid = \"B\"\nallowed_users = [1]\n[bots.agent]\nmodel = \"opus\"\n";
        let (config, _) = parse(text).expect("valid");
        assert!(config.bots[0].agent.model_choices().is_empty());
        let listed = format!("{text}models = [\"claude-sonnet-4-5\", \"opus\"]\n");
        let (config, _) = parse(&listed).expect("valid");
        assert_eq!(
            config.bots[0].agent.model_choices(),
            ["claude-sonnet-4-5", "opus"]
        );
        assert!(
            config.render_redacted().contains("models = ["),
            "check-config shows the list"
        );
        let agent = &config.bots[0].agent;
        assert_eq!(agent.model_for(None), "opus");
        assert_eq!(
            agent.model_for(Some("claude-sonnet-4-5")),
            "claude-sonnet-4-5"
        );
        assert_eq!(
            agent.model_for(Some("withdrawn")),
            "opus",
            "no longer listed"
        );
        for (models, problem) in [
            ("[\"opus\", \"\"]", "not a model name"),
            ("[\"--resume\"]", "not a model name"),
            ("[\"claude sonnet\"]", "not a model name"),
            ("[\"opus\", \"opus\"]", "listed twice"),
            ("[\"Default\"]", "/model default"),
        ] {
            let err = parse(&format!("{text}models = {models}\n"))
                .expect_err(models)
                .to_string();
            assert!(err.contains("bots[0].agent.models"), "{err}");
            assert!(err.contains(problem), "{err}");
        }
        let plain = "[[bots]]\nid = \"B\"\nallowed_users = [1]\n[bots.agent]\nkind = \"plain\"\ncommand = [\"x\"]\nmodels = [\"opus\"]\n";
        let (config, warnings) = parse(plain).expect("valid");
        assert!(config.bots[0].agent.model_choices().is_empty());
        assert!(
            warnings.iter().any(|w| w.0.contains("ignores them")),
            "{warnings:?}"
        );
    }

    #[test]
    fn invalid_values_are_named_by_their_full_key_and_value() {
        for (text, expected) in [
            (
                "[breaker]\nfailure_threshold = 0\n",
                "invalid config value `breaker.failure_threshold` = 0: must be at least 1",
            ),
            (
                "[limits]\nmax_upload_mb = 0\n",
                "invalid config value `limits.max_upload_mb` = 0: must be at least 1",
            ),
            (
                "[breaker]\nfailure_rate = 1.5\n",
                "`breaker.failure_rate` = 1.5: ",
            ),
            (
                "[breaker]\nhalf_open_max_calls = 0\n",
                "`breaker.half_open_max_calls` = 0: ",
            ),
            (
                "[breaker]\nrecovery_timeout_s = 60\nmax_recovery_timeout_s = 10\n",
                "`breaker.max_recovery_timeout_s` = 10: must be at least recovery_timeout_s (60)",
            ),
            ("[limits]\nworkers = 0\n", "`limits.workers` = 0: "),
            (
                "[limits]\nrate_per_hour = 0\n",
                "`limits.rate_per_hour` = 0: ",
            ),
            (
                "[limits]\ndaily_cost_usd = -1.0\n",
                "`limits.daily_cost_usd` = -1: ",
            ),
            (
                "[monitor]\nleak_min_samples = 2\n",
                "`monitor.leak_min_samples` = 2: ",
            ),
            (
                "[alerts]\ncost_ratio = 1.5\n",
                "`alerts.cost_ratio` = 1.5: ",
            ),
            ("[storage]\ncache_mb = 0\n", "`storage.cache_mb` = 0: "),
            (
                "[http]\nbind = \"localhost\"\n",
                "`http.bind` = \"localhost\": not host:port",
            ),
            (
                "[backup]\nschedule = \"every hour\"\n",
                "`backup.schedule` = \"every hour\": 2 fields; expected 6",
            ),
            ("[[bots]]\nid = \"a b\"\n", "`bots[0].id` = \"a b\": "),
            (
                "[[bots]]\nid = \"A\"\napi_url = \"telegram\"\n",
                "`bots[0].api_url` = \"telegram\": not an http(s) URL",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn an_invalid_webhook_url_is_shown_without_its_secret_path() {
        let err = parse("[alerts]\nwebhook_url = \"hooks.example.com/s3cret\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`alerts.webhook_url` = "), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn empty_allowed_users_is_a_warning_not_an_error() {
        let (_, warnings) = parse("[[bots]]\nid = \"A\"\n").expect("valid");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].0.contains("nobody"));
    }

    #[test]
    fn backup_remote_is_off_by_default_and_its_values_are_checked() {
        let (config, _) = parse("").expect("empty config");
        assert!(!config.backup.remote.enabled());
        assert_eq!(config.backup.remote.keep, 48);
        let (ok, _) = parse(
            "[backup.remote]\nurl = \"s3://bucket/agentlab\"\nendpoint = \"http://127.0.0.1:9000\"\nregion = \"eu-west-1\"\nkeep = 3\nencryption_key_env = \"KEY\"\n",
        )
        .expect("valid remote");
        assert!(ok.backup.remote.enabled());
        for (text, key) in [
            ("url = \"ftp://host/x\"", "backup.remote.url"),
            ("url = \"bucket/prefix\"", "backup.remote.url"),
            ("url = \"s3://b\"\nkeep = 0", "backup.remote.keep"),
            (
                "url = \"s3://b\"\nendpoint = \"minio:9000\"",
                "backup.remote.endpoint",
            ),
            (
                "url = \"s3://b\"\npart_size_mb = 1",
                "backup.remote.part_size_mb",
            ),
            ("url = \"s3://b\"\naccess_key = \"x\"", "access_key"),
        ] {
            let err = parse(&format!("[backup.remote]\n{text}\n"))
                .expect_err(text)
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn invalid_cron_is_named() {
        let err = parse("[backup]\nschedule = \"every hour\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("backup.schedule"), "{err}");
        let err = parse("[backup]\nschedule = \"0 61 * * * *\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("backup.schedule"), "{err}");
    }

    #[test]
    fn unreadable_file_is_named() {
        let err = Config::load(Path::new("/nonexistent/agentlab.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/agentlab.toml"), "{err}");
    }

    #[test]
    fn urls_are_printed_without_passwords_or_query_values() {
        assert_eq!(
            redact_url("https://alice:s3cret@hooks.example.com/a/b?token=abc&x=1"),
            "https://alice:REDACTED@hooks.example.com/a/b?token=REDACTED&x=REDACTED"
        );
        assert_eq!(
            redact_url("https://tok3n@hc-ping.com/uuid"),
            "https://REDACTED@hc-ping.com/uuid"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:8080/health"),
            "http://127.0.0.1:8080/health"
        );
        assert_eq!(
            redact_url("https://x.example/p?flag#frag"),
            "https://x.example/p?REDACTED#REDACTED"
        );
        assert_eq!(redact_url(""), "");
    }

    #[test]
    fn webhook_and_ping_urls_are_printed_as_scheme_and_host_only() {
        assert_eq!(
            redact_secret_url("https://hooks.slack.com/services/T0/B0/s3cret"),
            "https://hooks.slack.com/REDACTED"
        );
        assert_eq!(
            redact_secret_url("https://hc-ping.com/0b1c2d3e-uuid"),
            "https://hc-ping.com/REDACTED"
        );
        // A password holding `#`, `/` and `@`: nothing of it is printed.
        assert_eq!(
            redact_secret_url("https://bob:p#a/s@s@hooks.example.com/x?y=1"),
            "https://REDACTED@hooks.example.com/REDACTED"
        );
        assert_eq!(
            redact_secret_url("https://hooks.example.com"),
            "https://hooks.example.com"
        );
        assert_eq!(redact_secret_url(""), "");
        assert_eq!(redact_secret_url("not a url s3cret"), "REDACTED");
    }

    #[test]
    fn check_config_output_hides_url_credentials() {
        let text = "[alerts]\nwebhook_url = \"https://u:hunter2@hooks.example.com/x?key=k3y\"\n\
                    [watchdog]\nping_url = \"https://hc-ping.com/abc?secret=pingpass\"\n\
                    [[bots]]\nid = \"A\"\nallowed_users = [1]\n";
        let (config, _) = parse(text).expect("valid");
        let rendered = config.render_redacted();
        for secret in ["hunter2", "k3y", "pingpass", "abc"] {
            assert!(!rendered.contains(secret), "{secret} shown in:\n{rendered}");
        }
        assert!(rendered.contains("https://REDACTED@hooks.example.com/REDACTED"));
        assert!(rendered.contains("https://hc-ping.com/REDACTED"));
        // The configuration itself keeps the real URLs.
        assert!(config.alerts.webhook_url.contains("hunter2"));
    }

    #[test]
    fn redacted_rendering_never_contains_the_token() {
        let var = "AGENTLAB_TEST_TOKEN_REDACTION";
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var(var, "123:SECRET-VALUE") };
        let text = format!("[[bots]]\nid = \"A\"\ntoken_env = \"{var}\"\nallowed_users = [1]\n");
        let (config, _) = parse(&text).expect("valid");
        let rendered = config.render_redacted();
        assert!(!rendered.contains("SECRET-VALUE"));
        assert!(rendered.contains("is set (redacted)"));
    }
}
