//! `agentlab watchdog`: an independent process that watches the service from
//! outside and restarts it when it stops answering.
//!
//! The health URL is `watchdog.health_url`, or `/health` at `http.bind`'s address
//! when that is unset ([`Config::watchdog_health_url`]; a bind on port 0 is found
//! through the address file the service writes).
//!
//! Every `watchdog.interval_s` one check: the process accepts connections on the
//! health URL's address, `GET health_url` answers `pass`/`warn` within the interval
//! (a hung process — e.g. SIGSTOPped — still accepts connections from the kernel's
//! backlog but never answers), and the newest log file was written within
//! [`LOG_STALE_AFTER`] (the service logs a heartbeat every minute). After
//! `failures_before_restart` failed checks in a row it runs the restart command
//! (`restart_command`, else `launchctl kickstart -k` / `systemctl restart` by
//! platform) and tells the bots' admins through the Bot API directly — not through
//! the sick service. After each healthy check it GETs `ping_url` when set (a dead
//! man's switch: an outside service alerts when the pings stop). `--once` runs one
//! check and exits 0 (healthy) or 1.
//!
//! Tokens are read from the bots' environment variables and never logged: Bot API
//! errors are reported without their URL.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde_json::Value;

use super::args::WatchdogArgs;
use crate::config::{Config, health_url_at, secret_from_env};

/// A log not written for this long counts as a failed check (the service logs a
/// heartbeat every minute).
pub const LOG_STALE_AFTER: Duration = Duration::from_secs(5 * 60);
/// launchd label of the service (launchd/com.agentlab.telegrambot.plist).
pub const LAUNCHD_LABEL: &str = "com.agentlab.telegrambot";
/// systemd unit of the service (systemd/agentlab.service).
pub const SYSTEMD_UNIT: &str = "agentlab";

/// The result of one check.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// Every probe passed.
    pub healthy: bool,
    /// What failed, one line each.
    pub problems: Vec<String>,
}

/// Runs the watchdog.
pub async fn run(config: &Config, args: WatchdogArgs) -> anyhow::Result<i32> {
    let watchdog = Watchdog::new(config)?;
    if args.once {
        let result = watchdog.check().await;
        report(&result);
        if result.healthy {
            watchdog.ping().await;
        }
        return Ok(if result.healthy { 0 } else { 1 });
    }
    watchdog.run_forever().await
}

fn report(result: &CheckResult) {
    if result.healthy {
        println!("healthy");
    } else {
        for p in &result.problems {
            println!("unhealthy: {p}");
        }
    }
}

/// The watchdog's state.
pub struct Watchdog {
    config: Config,
    http: reqwest::Client,
    interval: Duration,
}

impl Watchdog {
    /// A watchdog for the service configured in `config`.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let interval = Duration::from_secs(config.watchdog.interval_s.max(1));
        let http = reqwest::Client::builder()
            .timeout(interval.min(Duration::from_secs(10)))
            .connect_timeout(interval.min(Duration::from_secs(5)))
            .build()
            .context("building the HTTP client")?;
        Ok(Watchdog {
            config: config.clone(),
            http,
            interval,
        })
    }

    async fn run_forever(&self) -> anyhow::Result<i32> {
        let threshold = self.config.watchdog.failures_before_restart.max(1);
        let mut failures = 0u32;
        tracing::info!(
            interval_s = self.interval.as_secs(),
            threshold,
            "watchdog started"
        );
        loop {
            let result = self.check().await;
            if result.healthy {
                if failures > 0 {
                    tracing::info!(after_failures = failures, "service healthy again");
                }
                failures = 0;
                self.ping().await;
            } else {
                failures += 1;
                tracing::warn!(failures, threshold, problems = %result.problems.join("; "), "service check failed");
                if failures >= threshold {
                    let restarted = self.restart().await;
                    self.notify_admins(&result, &restarted).await;
                    failures = 0;
                }
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    /// The URL checked: see the module comment.
    pub fn health_url(&self) -> String {
        if self.config.watchdog.health_url.is_empty()
            && self
                .config
                .http
                .bind
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.port() == 0)
            && let Ok(addr) = std::fs::read_to_string(crate::service::addr_file(&self.config))
            && let Ok(addr) = addr.trim().parse::<std::net::SocketAddr>()
        {
            return health_url_at(addr);
        }
        self.config.watchdog_health_url()
    }

    /// One check of the process, `/health` and the log.
    pub async fn check(&self) -> CheckResult {
        let mut problems = Vec::new();
        let url = &self.health_url();
        match reqwest::Url::parse(url) {
            Ok(parsed) => {
                if let Some(problem) = self.check_process(&parsed).await {
                    problems.push(problem);
                } else if let Some(problem) = self.check_health(url).await {
                    problems.push(problem);
                }
            }
            Err(e) => problems.push(format!("watchdog.health_url `{url}` is not a URL: {e}")),
        }
        if let Some(problem) = check_log(&self.config.log_dir) {
            problems.push(problem);
        }
        CheckResult {
            healthy: problems.is_empty(),
            problems,
        }
    }

    async fn check_process(&self, url: &reqwest::Url) -> Option<String> {
        let host = url.host_str()?.to_string();
        let port = url.port_or_known_default()?;
        let connect = tokio::net::TcpStream::connect((host.as_str(), port));
        match tokio::time::timeout(self.interval.min(Duration::from_secs(5)), connect).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!(
                "the service is not running (nothing accepts connections at {host}:{port}: {e})"
            )),
            Err(_) => Some(format!("connecting to {host}:{port} timed out")),
        }
    }

    async fn check_health(&self, url: &str) -> Option<String> {
        let response = match self.http.get(url).send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Some(format!(
                    "the service accepts connections but {url} did not answer within {} s (hung?)",
                    self.interval.min(Duration::from_secs(10)).as_secs()
                ));
            }
            Err(e) => return Some(format!("GET {url} failed: {}", e.without_url())),
        };
        let code = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let status = body["status"].as_str().unwrap_or("");
        if code.is_success() && matches!(status, "pass" | "warn" | "") {
            None
        } else {
            Some(format!("{url} answered {code} status `{status}`"))
        }
    }

    /// GET the dead man's switch, when configured.
    pub async fn ping(&self) {
        let url = &self.config.watchdog.ping_url;
        if url.is_empty() {
            return;
        }
        if let Err(e) = self
            .http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
        {
            tracing::warn!(error = %e.without_url(), "dead man's switch ping failed");
        }
    }

    /// Runs the restart command; returns a sentence saying what happened.
    async fn restart(&self) -> String {
        let argv = restart_command(&self.config);
        let shown = argv.join(" ");
        let Some((program, args)) = argv.split_first() else {
            return "no restart command is configured".into();
        };
        tracing::warn!(command = %shown, "restarting the service");
        match tokio::process::Command::new(program)
            .args(args)
            .status()
            .await
        {
            Ok(status) if status.success() => format!("restarted it with `{shown}`"),
            Ok(status) => format!("ran `{shown}`, which failed ({status})"),
            Err(e) => format!("could not run `{shown}`: {e}"),
        }
    }

    /// Tells every admin of every bot, through the Bot API directly.
    async fn notify_admins(&self, result: &CheckResult, restarted: &str) {
        let text = format!(
            "agentlab watchdog: the service failed {} checks in a row ({}); {restarted}.",
            self.config.watchdog.failures_before_restart.max(1),
            result.problems.join("; ")
        );
        for bot in &self.config.bots {
            let Some(token) = secret_from_env(&bot.token_env) else {
                tracing::warn!(bot_id = %bot.id, "no token in the environment; cannot notify this bot's admins");
                continue;
            };
            let url = format!(
                "{}/bot{token}/sendMessage",
                bot.api_url.trim_end_matches('/')
            );
            for admin in &bot.admins {
                let body = serde_json::json!({"chat_id": admin, "text": text});
                let sent = self
                    .http
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status());
                match sent {
                    Ok(_) => tracing::info!(bot_id = %bot.id, user_id = admin, "admin notified"),
                    Err(e) => {
                        tracing::warn!(bot_id = %bot.id, user_id = admin, error = %e.without_url(), "cannot notify the admin")
                    }
                }
            }
        }
    }
}

/// The configured restart command, else the platform's service manager.
pub fn restart_command(config: &Config) -> Vec<String> {
    if !config.watchdog.restart_command.is_empty() {
        return config.watchdog.restart_command.clone();
    }
    if cfg!(target_os = "macos") {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        vec![
            "launchctl".into(),
            "kickstart".into(),
            "-k".into(),
            format!("gui/{uid}/{LAUNCHD_LABEL}"),
        ]
    } else {
        vec!["systemctl".into(), "restart".into(), SYSTEMD_UNIT.into()]
    }
}

/// `None` when the newest log file was written recently (or there are no log
/// files to judge by); else the problem.
fn check_log(log_dir: &Path) -> Option<String> {
    let entries = std::fs::read_dir(log_dir).ok()?;
    let newest: Option<SystemTime> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(crate::telemetry::LOG_FILE))
        })
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max();
    let age = newest?.elapsed().unwrap_or(Duration::ZERO);
    (age > LOG_STALE_AFTER).then(|| {
        format!(
            "the log in {} has not advanced for {} s",
            log_dir.display(),
            age.as_secs()
        )
    })
}
