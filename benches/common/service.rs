//! Runs the release `agentlab run` binary as a subprocess against the Telegram Bot
//! API simulator running in the bench process, the way the integration tests do
//! (`tests/it/harness.rs`), plus what the benches read from outside: `/proc` CPU
//! time and RSS, and the simulator's clock.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use telegram_sim::{SimConfig, SimHandle, SimLimits, TelegramSim};

/// The admin bearer token configured for the HTTP API.
pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
/// Longest anything is waited for.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The release binary (`cargo build --release` first).
/// `$AGENTLAB_BIN` (an older build, for a baseline in the same harness) or the
/// release build.
pub fn release_binary() -> PathBuf {
    let path = std::env::var_os("AGENTLAB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/agentlab"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release` first",
        path.display()
    );
    path
}

/// A simulator with room for long runs (the default caps are for tests).
pub async fn start_sim() -> SimHandle {
    let mut config = SimConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), Vec::new());
    config.limits = SimLimits {
        max_pending_updates: 10_000,
        max_sent_items: 50_000,
        max_calls: 100_000,
        max_messages: 50_000,
        max_chats: 10_000,
        ..SimLimits::default()
    };
    TelegramSim::start_with(config)
        .await
        .expect("start the simulator")
}

/// Maps bench-process instants onto the simulator's clock (`SentItem::at`,
/// `CallRecord::at`: time since the simulator started).
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    /// The instant the simulator's clock reads zero, as estimated.
    zero: Instant,
    /// Half the round trip of the calibration call: the estimate's uncertainty.
    pub uncertainty: Duration,
}

impl SimClock {
    /// Calibrates with `getMe` calls on a token of its own: the call's recorded
    /// arrival lies between sending and receiving the answer; the tightest of a
    /// few round trips wins.
    pub async fn calibrate(sim: &SimHandle) -> SimClock {
        let token = "999999:calibration";
        sim.register_bot(token).expect("register calibration bot");
        let http = reqwest::Client::new();
        let mut best: Option<SimClock> = None;
        for _ in 0..20 {
            let before = Instant::now();
            http.post(format!("{}/bot{token}/getMe", sim.url()))
                .send()
                .await
                .expect("getMe");
            let after = Instant::now();
            let at = sim
                .calls(token)
                .expect("calls")
                .last()
                .expect("the getMe call")
                .at;
            let half = (after - before) / 2;
            let estimate = SimClock {
                zero: before + half - at,
                uncertainty: half,
            };
            if best.is_none_or(|b| estimate.uncertainty < b.uncertainty) {
                best = Some(estimate);
            }
        }
        best.expect("calibrated")
    }

    /// `instant` on the simulator's clock.
    pub fn at(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.zero)
    }
}

/// The token of the `index`-th bot of a service, by bot id.
pub fn bot_token(index: usize, bot_id: &str) -> String {
    format!("{}00{index}:bench-token-{bot_id}", 7 + index)
}

/// One bot of the bench service.
pub struct BotSpec {
    /// Bot id.
    pub id: String,
    /// Allowed users.
    pub users: std::ops::RangeInclusive<i64>,
    /// The agent command (default: the release binary's test agent).
    pub agent: Option<Vec<String>>,
}

/// A running `agentlab run`.
pub struct Service {
    /// Temporary root: config, data, logs.
    pub dir: tempfile::TempDir,
    /// Tokens, in bot order.
    pub tokens: Vec<String>,
    /// When the process was spawned.
    pub spawned_at: Instant,
    /// `http://127.0.0.1:PORT` once ready.
    pub base_url: String,
    child: Child,
    http: reqwest::Client,
}

impl Service {
    /// Writes a config for `bots`, registers their tokens with `sim` and spawns the
    /// binary; does not wait.
    pub fn spawn(sim: &SimHandle, bots: &[BotSpec], workers: usize) -> Service {
        let dir = tempfile::tempdir_in(super::bench_dir()).expect("temp dir");
        Self::spawn_in(dir, sim, bots, workers)
    }

    /// As [`Service::spawn`], on a prepared directory (e.g. a pre-filled
    /// `data/agentlab.redb`).
    pub fn spawn_in(
        dir: tempfile::TempDir,
        sim: &SimHandle,
        bots: &[BotSpec],
        workers: usize,
    ) -> Service {
        Self::spawn_in_with(dir, sim, bots, workers, "")
    }

    /// As [`Service::spawn_in`], with more TOML sections appended to the config.
    pub fn spawn_in_with(
        dir: tempfile::TempDir,
        sim: &SimHandle,
        bots: &[BotSpec],
        workers: usize,
        extra_toml: &str,
    ) -> Service {
        let root = dir.path();
        let binary = release_binary();
        let mut config = format!(
            r#"data_dir = "{root}/data"
backup_dir = "{root}/backups"
log_dir = "{root}/logs"

[http]
bind = "127.0.0.1:0"
admin_token_env = "AGENTLAB_BENCH_ADMIN_TOKEN"

[limits]
workers = {workers}
task_timeout_s = 60
rate_per_minute = 1000000
rate_per_hour = 1000000
"#,
            root = root.display(),
        );
        let mut tokens = Vec::new();
        let mut env = vec![("AGENTLAB_BENCH_ADMIN_TOKEN".to_string(), ADMIN_TOKEN.into())];
        for (i, bot) in bots.iter().enumerate() {
            let token = bot_token(i, &bot.id);
            sim.register_bot_as(&token, &format!("bench_bot_{i}"), &bot.id)
                .expect("register bot");
            let agent = bot
                .agent
                .clone()
                .unwrap_or_else(|| vec![binary.display().to_string(), "test-agent".to_string()]);
            let allowed: Vec<i64> = bot.users.clone().collect();
            config.push_str(&format!(
                r#"
[[bots]]
id = "{id}"
token_env = "AGENTLAB_BENCH_TOKEN_{i}"
api_url = "{api_url}"
allowed_users = {allowed:?}
admins = [{admin}]
workdir = "{root}"

[bots.agent]
command = {agent:?}
"#,
                id = bot.id,
                api_url = sim.url(),
                admin = bot.users.start(),
                root = root.display(),
            ));
            env.push((format!("AGENTLAB_BENCH_TOKEN_{i}"), token.clone()));
            tokens.push(token);
        }
        config.push_str(extra_toml);
        if let Some(threads) = super::async_threads_override() {
            config.push_str(&format!("\n[runtime]\nasync_threads = {threads}\n"));
        }
        let config_path = root.join("agentlab.toml");
        std::fs::write(&config_path, config).expect("write config");
        let stderr = std::fs::File::create(root.join("service.stderr")).expect("stderr file");
        let mut cmd = Command::new(&binary);
        cmd.arg("--config")
            .arg(&config_path)
            .arg("run")
            .env_remove("AGENTLAB_CONFIG")
            .env("RUST_LOG", "warn")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let spawned_at = Instant::now();
        let child = cmd.spawn().expect("spawn agentlab run");
        Service {
            dir,
            tokens,
            spawned_at,
            base_url: String::new(),
            child,
            http: reqwest::Client::new(),
        }
    }

    /// Waits for the address file and `/readyz`.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        let addr_file = self.dir.path().join("data/agentlab.addr");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("agentlab exited with {status}:\n{}", self.stderr_tail());
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
            assert!(Instant::now() < deadline, "service not ready in time");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of the service's stderr.
    pub fn stderr_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("service.stderr")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// POST JSON with the admin token; returns status and body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(ADMIN_TOKEN)
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// GET with the admin token.
    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base_url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .unwrap_or(Value::Null)
    }

    /// SIGKILL, wait for the exit, and hand back the directory (to start again on it).
    pub fn kill9(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.dir.path().join("data/agentlab.addr"));
        self.dir
    }

    /// When the process was spawned.
    pub fn spawned_at(&self) -> Instant {
        self.spawned_at
    }

    /// SIGTERM, then wait for the exit; hands back the directory, which is
    /// removed when dropped.
    pub fn stop(mut self) -> tempfile::TempDir {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.dir;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir
    }
}

/// CPU time of a process from `/proc/<pid>/stat`: its own (utime + stime) and that
/// of its waited-for children (cutime + cstime).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    /// The process itself.
    pub own: Duration,
    /// The part of `own` spent in the kernel.
    pub system: Duration,
    /// Its reaped children (the agents).
    pub children: Duration,
}

impl CpuTimes {
    /// Reads the current values.
    pub fn of(pid: u32) -> CpuTimes {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
        // Fields after the `(comm)`, which may hold spaces: state is field 3.
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<u64> = after
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let ticks = |i: usize| Duration::from_secs_f64(fields[i] as f64 / hz);
        // utime, stime, cutime, cstime are fields 14..=17, i.e. 11..=14 here.
        CpuTimes {
            own: ticks(11) + ticks(12),
            system: ticks(12),
            children: ticks(13) + ticks(14),
        }
    }

    /// The time spent since `earlier`.
    pub fn since(&self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            own: self.own.saturating_sub(earlier.own),
            system: self.system.saturating_sub(earlier.system),
            children: self.children.saturating_sub(earlier.children),
        }
    }
}

/// On-CPU time of a process's live threads (`/proc/<pid>/task/*/schedstat`), to
/// show where a level's CPU went. Threads that exited in between are missing:
/// the caller compares the sum with [`CpuTimes`].
#[derive(Debug, Clone, Default)]
pub struct ThreadTimes(BTreeMap<u32, (String, Duration)>);

impl ThreadTimes {
    /// Reads the current values, per thread id.
    pub fn of(pid: u32) -> ThreadTimes {
        let mut threads = BTreeMap::new();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return ThreadTimes(threads);
        };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let dir = task.path();
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let on_cpu_ns: u64 = std::fs::read_to_string(dir.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|f| f.parse().ok()))
                .unwrap_or(0);
            threads.insert(
                tid,
                (name.trim().to_string(), Duration::from_nanos(on_cpu_ns)),
            );
        }
        ThreadTimes(threads)
    }

    /// The time each thread name spent since `earlier`, summed over its threads
    /// (a thread new since then counts from zero).
    pub fn since(&self, earlier: &ThreadTimes) -> BTreeMap<String, Duration> {
        let mut by_name = BTreeMap::new();
        for (tid, (name, now)) in &self.0 {
            let before = earlier.0.get(tid).map(|(_, t)| *t).unwrap_or_default();
            *by_name.entry(name.clone()).or_insert(Duration::ZERO) += now.saturating_sub(before);
        }
        by_name
    }
}

/// VmRSS of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
