//! Warm agent processes: a Claude Code process that stays open after answering, so
//! the same session's next prompt skips the CLI's start (docs/claude-code-protocol.md,
//! "Warm sessions"). A process that asks approvals runs this way too when its bot
//! keeps no process warm (`keep_warm_s = 0`): its answers go to its input pipe
//! while the turn runs, and the pool ends it after that one turn.
//!
//! A warm process lives in the run folder of the task that started it,
//! `<runs>/<task id>/`:
//! - `stdin`, a named pipe (FIFO) that the process holds open read-write itself (the
//!   descriptor it inherits as stdin), so it never sees the end of its input, not
//!   even when agentlab dies; agentlab opens the pipe to write each prompt line;
//! - `stdout` and `stderr`, plain files the process appends to for its whole life;
//! - `process.json`, its [`ProcIdentity`], so a later agentlab can find it (removed,
//!   with the pipe, when the process is ended; the output files stay with the task).
//!
//! Every turn is recorded before its prompt is written: `<runs>/<task id>/turn.json`
//! ([`TurnRecord`]) names the process folder, the stdout offset where the turn's
//! events start and the process's cumulative cost so far. A turn is therefore
//! followed from its own offset to its own `result`, by this process or — after a
//! crash — by the next one, and answered once.
//!
//! Invariants:
//! - a process is in the [`WarmSet`] only while idle; a running turn owns it;
//! - the set holds at most its capacity; the least recently used is ended first;
//! - a process is ended by SIGTERM to its group, then SIGKILL after a grace; it
//!   cannot be ended by closing its input (it holds its own pipe open).

use std::collections::HashMap;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::agent::{
    self, AgentCommand, AgentOutcome, GroupSignal, RunSpec, STDERR_FILE, STDERR_TAIL_BYTES,
    STDOUT_FILE, SpawnError,
};
use super::agent_result::AgentResult;
use super::follow::Follower;
use super::proc_identity::{self, ProcIdentity};
use super::stream::{Event, StreamParser, TurnEnd};

/// The warm process's input pipe, in its folder.
pub const STDIN_FIFO: &str = "stdin";
/// The warm process's identity, in its folder.
pub const PROCESS_FILE: &str = "process.json";
/// A turn's record: `<task id>.turn.json` beside the task's run folder.
pub const TURN_FILE: &str = "turn.json";

/// Poll interval for a process that is not our child.
const ADOPTED_POLL: Duration = Duration::from_millis(50);
/// How long to wait for a SIGKILLed process.
const AFTER_KILL_WAIT: Duration = Duration::from_secs(5);

/// Which conversation a warm process serves: (bot id, user id, project).
pub type SessionKey = (String, i64, String);

/// A Claude Code process that outlives its turns.
#[derive(Debug)]
pub struct WarmProcess {
    /// Its folder (`stdin` pipe, `stdout`, `stderr`, `process.json`).
    pub dir: PathBuf,
    /// Our child, when we started it (none once adopted from an earlier agentlab).
    child: Option<tokio::process::Child>,
    /// Pid and start time.
    pub identity: ProcIdentity,
    /// The session it holds, once it said.
    pub session_id: Option<String>,
    /// Stdout offset just past the last turn's `result`.
    pub offset: u64,
    /// Its cumulative `total_cost_usd`.
    pub total_cost_usd: f64,
    /// When its last turn ended.
    pub idle_since: Instant,
    /// The command it was started with (a changed configuration ends it).
    pub command: AgentCommand,
    /// The follower of its stdout, kept from one turn to the next.
    follower: Option<Follower>,
}

/// Where a turn's events are, recorded before its prompt is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// The process folder.
    pub process_dir: PathBuf,
    /// Stdout offset where the turn's events start.
    pub offset: u64,
    /// The process's cumulative cost before the turn.
    pub cost_base: f64,
    /// The process.
    pub identity: ProcIdentity,
    /// The command line the process was started with (user choices such as
    /// `/model` included), so an adopted process is judged by what it runs and not
    /// by the choices made since. Absent in records of older builds.
    #[serde(default)]
    pub command: Option<AgentCommand>,
}

/// Writes `record` as the turn record of the task whose run folder is `run_dir`
/// (the prompt is written after), in place: one small `write` into the file,
/// truncated first. A crash between the two leaves an empty record, which reads
/// as none (below), as does a torn one. The file is `<run_dir>.turn.json`, beside the run folder rather than
/// in it: a warm turn's output is in its process's folder, so the turn needs no
/// folder of its own, and creating one per prompt (an inode allocated, a
/// directory entry written) cost as much CPU as any other step of the turn.
///
/// It is not fsynced, on purpose. The record serves only an agent process that
/// outlives agentlab, and only a crash of agentlab itself (a panic, `kill -9`,
/// the OOM killer) leaves one alive: the file is then in the page cache, which
/// that crash keeps. A power loss or kernel crash loses unsynced files but ends
/// the agent too, and its stdout, never synced either, with it: what the record
/// would point at is gone, and a missing or torn record reads as "no turn
/// record" (see [`read_turn_record`]), so the task is re-queued as interrupted,
/// with a note, as it would be anyway. Two fsyncs per prompt buy nothing here.
pub fn write_turn_record(run_dir: &Path, record: &TurnRecord) -> io::Result<()> {
    let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
    let path = turn_record_path(run_dir);
    let mut file = match private_file(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_private_dir(path.parent().unwrap_or(Path::new(".")))?;
            private_file(&path)?
        }
        opened => opened?,
    };
    file.write_all(&bytes)
}

/// `<runs_dir>/<task id>.turn.json` for the run folder `<runs_dir>/<task id>`.
fn turn_record_path(run_dir: &Path) -> PathBuf {
    let mut name = run_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(TURN_FILE);
    run_dir.with_file_name(name)
}

/// The turn record of a task's run folder, if its run was a warm-capable one
/// (also one an earlier build kept inside the folder, `<run_dir>/turn.json`).
pub fn read_turn_record(run_dir: &Path) -> Option<TurnRecord> {
    let bytes = std::fs::read(turn_record_path(run_dir))
        .or_else(|_| std::fs::read(run_dir.join(TURN_FILE)))
        .ok()
        // Empty: cut between its truncation and its write.
        .filter(|bytes| !bytes.is_empty())?;
    match serde_json::from_slice(&bytes) {
        Ok(record) => Some(record),
        Err(error) => {
            warn!(%error, dir = %run_dir.display(), "ignoring an unreadable turn record");
            None
        }
    }
}

/// Removes a task's turn record.
pub fn remove_turn_record(run_dir: &Path) {
    let _ = std::fs::remove_file(turn_record_path(run_dir));
    let _ = std::fs::remove_file(run_dir.join(TURN_FILE));
}

impl WarmProcess {
    /// Starts a warm-capable process for `spec` in its run folder, without a
    /// prompt yet.
    pub fn spawn(cmd: &AgentCommand, spec: &RunSpec) -> Result<WarmProcess, SpawnError> {
        let args = agent::command_args(cmd, spec.session_id.as_deref())?;
        let dir = spec.run_dir.clone();
        let run_files = |source| SpawnError::RunFiles {
            path: dir.clone(),
            source,
        };
        let (stdin, stdout, stderr) = prepare_process_dir(&dir).map_err(run_files)?;
        let (child, identity) =
            agent::start_in_group(cmd, &args, &spec.workdir, stdin, stdout, stderr)?;
        let pid = identity.pid;
        let record = serde_json::to_vec(&identity).map_err(io::Error::other);
        if let Err(error) = record.and_then(|bytes| std::fs::write(dir.join(PROCESS_FILE), bytes)) {
            warn!(%error, "cannot record the warm agent's identity");
        }
        debug!(pid, dir = %dir.display(), "warm agent started");
        Ok(WarmProcess {
            dir,
            child: Some(child),
            identity,
            session_id: spec.session_id.clone(),
            offset: 0,
            total_cost_usd: 0.0,
            idle_since: Instant::now(),
            command: cmd.clone(),
            follower: None,
        })
    }

    /// A process left by an earlier agentlab, as its turn record names it;
    /// `current` is the command today's settings would start, used when the record
    /// does not say what the process runs.
    pub fn adopted(record: &TurnRecord, current: AgentCommand) -> WarmProcess {
        WarmProcess {
            dir: record.process_dir.clone(),
            child: None,
            identity: record.identity,
            session_id: None,
            offset: record.offset,
            total_cost_usd: record.cost_base,
            idle_since: Instant::now(),
            command: record.command.clone().unwrap_or(current),
            follower: None,
        }
    }

    /// The record of a turn starting now.
    pub fn turn_record(&self) -> TurnRecord {
        TurnRecord {
            process_dir: self.dir.clone(),
            offset: self.offset,
            cost_base: self.total_cost_usd,
            identity: self.identity,
            command: Some(self.command.clone()),
        }
    }

    /// The process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// `Some(status)` once the process exited (`Some(None)` when not our child).
    fn exit_status(&mut self) -> Option<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(Some(status)),
                Ok(None) => None,
                Err(_) => Some(None),
            },
            None => (!proc_identity::is_alive(&self.identity)).then_some(None),
        }
    }

    /// Writes one prompt line to the process's input pipe. What the pipe takes
    /// at once (most prompts: it holds 64 KiB) is written on the calling
    /// thread, without a hand-over to the blocking pool and back; the rest of a
    /// longer prompt waits there for the process to read.
    pub async fn write_prompt(&self, line: Vec<u8>) -> io::Result<()> {
        let fifo = self.dir.join(STDIN_FIFO);
        let (file, written) = start_fifo_write(&fifo, &line)?;
        if written == line.len() {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || finish_fifo_write(file, &line[written..]))
            .await
            .map_err(io::Error::other)?
    }

    /// Follows the turn that starts at [`Self::offset`] until its `result`, the
    /// process's exit, `timeout` or `cancel`; `on_events` sees every event as it
    /// comes. After a `result` the process is idle again, its offset and cost moved
    /// on; otherwise it has exited or was stopped.
    pub async fn follow_turn(
        &mut self,
        task_id: u64,
        timeout: Duration,
        kill_grace: Duration,
        mut cancel: watch::Receiver<bool>,
        on_events: &mut (dyn FnMut(&[Event]) + Send),
    ) -> AgentOutcome {
        let started = Instant::now();
        let turn_offset = self.offset;
        let deadline = tokio::time::Instant::from_std(started).checked_add(timeout);
        let parser = StreamParser::resuming(task_id, self.offset, self.total_cost_usd)
            .naming_output(&self.dir.join(STDOUT_FILE));
        let mut follower = match self.follower.take() {
            Some(mut follower) => {
                follower.resume(parser);
                follower
            }
            None => Follower::new(&self.dir.join(STDOUT_FILE), parser),
        };
        let ending;
        'follow: loop {
            let events = follower.read_new();
            let found = !events.is_empty();
            if found {
                on_events(&events);
            }
            for event in events {
                if let Event::Result(end) = event {
                    ending = TurnEnding::Answered(end);
                    break 'follow;
                }
            }
            if !found && let Some(status) = self.exit_status() {
                // One last look: it may have written its result just before exiting.
                let events = follower.read_new();
                on_events(&events);
                ending = events
                    .into_iter()
                    .find_map(|event| match event {
                        Event::Result(end) => Some(TurnEnding::Answered(end)),
                        _ => None,
                    })
                    .unwrap_or(TurnEnding::Exited(status));
                break;
            }
            tokio::select! {
                biased;
                () = cancelled(&mut cancel) => { ending = TurnEnding::Cancelled; break; }
                () = sleep_until(deadline) => { ending = TurnEnding::TimedOut; break; }
                () = follower.pause(found) => {}
                // An exit wakes the loop to read the last output and see the status.
                () = gone(&mut self.child, &self.identity), if !found => {}
            }
        }
        let parser = follower.parser();
        if let Some(id) = parser.session_id() {
            self.session_id = Some(id.to_owned());
        }
        self.offset = parser.consumed();
        self.total_cost_usd = parser.total_cost_usd();
        self.idle_since = Instant::now();
        self.follower = Some(follower);
        let (result, exit, timed_out, cancelled) = match ending {
            TurnEnding::Answered(end) => {
                let TurnEnd { result, .. } = *end;
                (result, None, false, false)
            }
            TurnEnding::Exited(status) => {
                // Not a protocol answer: what it printed since the turn began is.
                let stdout = self.dir.join(STDOUT_FILE);
                let result = agent::output_since(&stdout, turn_offset);
                (result, status, false, false)
            }
            TurnEnding::TimedOut => {
                warn!("agent timed out and was stopped");
                (
                    AgentResult::default(),
                    self.stop(kill_grace).await,
                    true,
                    false,
                )
            }
            TurnEnding::Cancelled => {
                info!("agent cancelled and stopped");
                (
                    AgentResult::default(),
                    self.stop(kill_grace).await,
                    false,
                    true,
                )
            }
        };
        use std::os::unix::process::ExitStatusExt as _;
        let stderr_tail = if result.complete && !result.is_error {
            String::new()
        } else {
            agent::read_tail(&self.dir.join(STDERR_FILE), STDERR_TAIL_BYTES)
        };
        AgentOutcome {
            exit_code: exit.and_then(|status| status.code()),
            signal: exit.and_then(|status| status.signal()),
            timed_out,
            cancelled,
            result,
            stdout_bytes: self.offset.saturating_sub(turn_offset),
            stderr_tail,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Ends the process: SIGTERM to its group, `kill_grace`, then SIGKILL; its
    /// pipe and identity file go, its output files stay.
    pub async fn end(mut self, kill_grace: Duration) {
        self.stop(kill_grace).await;
        remove_process_files(&self.dir);
    }

    async fn stop(&mut self, kill_grace: Duration) -> Option<ExitStatus> {
        agent::kill_group(&self.identity, GroupSignal::Terminate);
        if let Some(status) = self.wait_exit(kill_grace).await {
            return status;
        }
        agent::kill_group(&self.identity, GroupSignal::Kill);
        match self.wait_exit(AFTER_KILL_WAIT).await {
            Some(status) => status,
            None => {
                warn!(
                    pid = self.identity.pid,
                    "the agent did not exit after SIGKILL"
                );
                None
            }
        }
    }

    /// Waits up to `limit` for the process to exit; `None` if it did not.
    async fn wait_exit(&mut self, limit: Duration) -> Option<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => match tokio::time::timeout(limit, child.wait()).await {
                Ok(Ok(status)) => Some(Some(status)),
                Ok(Err(_)) => Some(None),
                Err(_) => None,
            },
            None => {
                let identity = self.identity;
                let gone = async {
                    while proc_identity::is_alive(&identity) {
                        tokio::time::sleep(ADOPTED_POLL).await;
                    }
                };
                tokio::time::timeout(limit, gone).await.ok().map(|()| None)
            }
        }
    }

    /// Resident memory of the process, bytes (0 when unknown).
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.identity.pid)
    }
}

/// How a turn's following ended.
enum TurnEnding {
    Answered(Box<TurnEnd>),
    Exited(Option<ExitStatus>),
    TimedOut,
    Cancelled,
}

/// The idle warm processes, one per session, bounded, least recently used first out.
#[derive(Debug, Default)]
pub struct WarmSet {
    idle: HashMap<SessionKey, WarmProcess>,
}

impl WarmSet {
    /// Takes the idle process of `key`, if any.
    pub fn take(&mut self, key: &SessionKey) -> Option<WarmProcess> {
        self.idle.remove(key)
    }

    /// Whether `key` has an idle process.
    pub fn contains(&self, key: &SessionKey) -> bool {
        self.idle.contains_key(key)
    }

    /// Puts an idle process back; returns the processes to end: one already there
    /// for the same key, and the least recently used beyond `capacity`.
    pub fn put(
        &mut self,
        key: SessionKey,
        process: WarmProcess,
        capacity: usize,
    ) -> Vec<WarmProcess> {
        let mut evicted: Vec<WarmProcess> = self.idle.insert(key, process).into_iter().collect();
        while self.idle.len() > capacity {
            let oldest = self
                .idle
                .iter()
                .min_by_key(|(_, p)| p.idle_since)
                .map(|(k, _)| k.clone());
            match oldest.and_then(|k| self.idle.remove(&k)) {
                Some(process) => evicted.push(process),
                None => break,
            }
        }
        evicted
    }

    /// Removes and returns the processes idle for `keep` or longer.
    pub fn expired(
        &mut self,
        now: Instant,
        keep: impl Fn(&SessionKey) -> Duration,
    ) -> Vec<WarmProcess> {
        let keys: Vec<SessionKey> = self
            .idle
            .iter()
            .filter(|(k, p)| now.saturating_duration_since(p.idle_since) >= keep(k))
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter().filter_map(|k| self.idle.remove(k)).collect()
    }

    /// When the next process expires, if any.
    pub fn next_expiry(&self, keep: impl Fn(&SessionKey) -> Duration) -> Option<Instant> {
        self.idle.iter().map(|(k, p)| p.idle_since + keep(k)).min()
    }

    /// Removes every process of `bot_id` whose user is `user_id` (or all users)
    /// in `project` (or all projects).
    pub fn remove_matching(
        &mut self,
        bot_id: &str,
        user_id: Option<i64>,
        project: Option<&str>,
    ) -> Vec<WarmProcess> {
        let keys: Vec<SessionKey> = self
            .idle
            .keys()
            .filter(|(b, u, p)| {
                b == bot_id && user_id.is_none_or(|id| id == *u) && project.is_none_or(|w| w == p)
            })
            .cloned()
            .collect();
        keys.iter().filter_map(|k| self.idle.remove(k)).collect()
    }

    /// Removes every process.
    pub fn drain(&mut self) -> Vec<WarmProcess> {
        self.idle.drain().map(|(_, p)| p).collect()
    }

    /// How many processes are idle and their resident memory in all, bytes.
    pub fn usage(&self) -> (usize, u64) {
        (
            self.idle.len(),
            self.idle.values().map(WarmProcess::rss_bytes).sum(),
        )
    }

    /// The folders of the idle processes.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.idle.values().map(|p| p.dir.clone()).collect()
    }
}

/// Ends the warm processes under `runs_dir` that no one owns any more (left idle by
/// an agentlab that died), except those in `keep`; returns how many were ended.
pub fn sweep_orphans(runs_dir: &Path, keep: &[PathBuf]) -> usize {
    let mut ended = 0;
    for (dir, identity) in process_folders(runs_dir) {
        if keep.contains(&dir) {
            continue;
        }
        if let Some(identity) = identity
            && agent::kill_group(&identity, GroupSignal::Kill)
        {
            info!(
                pid = identity.pid,
                "ended a warm agent left idle by the previous process"
            );
            ended += 1;
        }
        remove_process_files(&dir);
    }
    ended
}

/// The identities of the warm processes under `runs_dir` (alive or not).
pub fn warm_identities(runs_dir: &Path) -> Vec<ProcIdentity> {
    process_folders(runs_dir)
        .into_iter()
        .filter_map(|(_, identity)| identity)
        .collect()
}

/// The folders under `runs_dir` that hold a warm process's identity file, with
/// the identity (`None` when the file cannot be read as one).
fn process_folders(runs_dir: &Path) -> Vec<(PathBuf, Option<ProcIdentity>)> {
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let dir = entry.path();
            let bytes = std::fs::read(dir.join(PROCESS_FILE)).ok()?;
            Some((dir, serde_json::from_slice(&bytes).ok()))
        })
        .collect()
}

/// Removes a warm process's pipe and identity file from its folder.
fn remove_process_files(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(PROCESS_FILE));
    let _ = std::fs::remove_file(dir.join(STDIN_FIFO));
}

/// Resident memory of `pid`, bytes (0 when unknown).
pub fn rss_bytes(pid: u32) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn private_file(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Creates the process folder: the input pipe (opened read-write, to be the
/// process's own stdin) and the output files.
fn prepare_process_dir(dir: &Path) -> io::Result<(std::fs::File, std::fs::File, std::fs::File)> {
    use std::os::unix::ffi::OsStrExt as _;
    create_private_dir(dir)?;
    let fifo = dir.join(STDIN_FIFO);
    // A retry reuses the folder: a new pipe, fresh output files.
    let _ = std::fs::remove_file(&fifo);
    let name = std::ffi::CString::new(fifo.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: a valid NUL-terminated path and a mode; no other inputs.
    if unsafe { libc::mkfifo(name.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Read-write: opening does not wait for a writer, and the process holding it
    // keeps a writer open on its own input, so it never reads an end of file.
    let stdin = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)?;
    Ok((
        stdin,
        private_file(&dir.join(STDOUT_FILE))?,
        private_file(&dir.join(STDERR_FILE))?,
    ))
}

/// Writes one line (a `control_request` or `control_response`) to the input pipe
/// of the warm process in `dir`; fails at once if no process reads the pipe.
pub async fn write_control(dir: &Path, line: Vec<u8>) -> io::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || write_control_blocking(&dir, &line))
        .await
        .map_err(io::Error::other)?
}

/// [`write_control`], blocking.
pub fn write_control_blocking(dir: &Path, line: &[u8]) -> io::Result<()> {
    write_to_fifo(&dir.join(STDIN_FIFO), line)
}

/// Whether the warm process of `dir` still runs: its recorded identity (pid and
/// start time) names a live process.
pub fn process_alive(dir: &Path) -> bool {
    std::fs::read(dir.join(PROCESS_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<ProcIdentity>(&bytes).ok())
        .is_some_and(|identity| proc_identity::is_alive(&identity))
}

/// Writes `line` to the pipe at `fifo`; fails at once if no process reads it.
fn write_to_fifo(fifo: &Path, line: &[u8]) -> io::Result<()> {
    let (file, written) = start_fifo_write(fifo, line)?;
    finish_fifo_write(file, &line[written..])
}

/// Opens the input pipe without blocking (with no reader it fails, ENXIO,
/// instead of waiting forever) and writes what the pipe takes at once; the
/// file and how many bytes it took.
fn start_fifo_write(fifo: &Path, line: &[u8]) -> io::Result<(std::fs::File, usize)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)?;
    let written = loop {
        match file.write(line) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break 0,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    Ok((file, written))
}

/// Writes the rest of a line with blocking writes: a long prompt waits for the
/// process to read it.
fn finish_fifo_write(mut file: std::fs::File, rest: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    if rest.is_empty() {
        return Ok(());
    }
    // SAFETY: fcntl on a descriptor we own, with flags read from it.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    file.write_all(rest)
}

/// Resolves when `cancel` is (or becomes) true; never if its sender is gone.
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|cancelled| *cancelled).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves once the process has exited: our child's exit, or for an adopted
/// process its identity no longer alive (looked at every [`ADOPTED_POLL`]).
async fn gone(child: &mut Option<tokio::process::Child>, identity: &ProcIdentity) {
    match child {
        Some(child) => {
            let _ = child.wait().await;
        }
        None => {
            while proc_identity::is_alive(identity) {
                tokio::time::sleep(ADOPTED_POLL).await;
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::proc_identity::UNKNOWN_START_TIME;

    fn idle_process(dir: &str, idle_since: Instant) -> WarmProcess {
        WarmProcess {
            dir: PathBuf::from(dir),
            child: None,
            identity: ProcIdentity {
                pid: 0,
                start_time: UNKNOWN_START_TIME,
            },
            session_id: None,
            offset: 0,
            total_cost_usd: 0.0,
            idle_since,
            command: AgentCommand::from_config(&crate::config::AgentConfig::default(), vec![]),
            follower: None,
        }
    }

    #[test]
    fn the_set_is_bounded_least_recently_used_out_first() {
        let now = Instant::now();
        let mut set = WarmSet::default();
        let key = |user: i64| ("B".to_owned(), user, "default".to_owned());
        assert!(set.put(key(1), idle_process("a", now), 2).is_empty());
        assert!(
            set.put(key(2), idle_process("b", now + Duration::from_secs(1)), 2)
                .is_empty()
        );
        let evicted = set.put(key(3), idle_process("c", now + Duration::from_secs(2)), 2);
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].dir, PathBuf::from("a"));
        // A second process of the same session replaces (and ends) the first.
        let replaced = set.put(key(3), idle_process("d", now + Duration::from_secs(3)), 2);
        assert_eq!(replaced[0].dir, PathBuf::from("c"));
        assert!(set.take(&key(1)).is_none());
        assert_eq!(set.take(&key(3)).map(|p| p.dir), Some(PathBuf::from("d")));
    }

    #[test]
    fn processes_idle_longer_than_keep_expire() {
        let now = Instant::now();
        let mut set = WarmSet::default();
        set.put(("B".into(), 1, "api".into()), idle_process("old", now), 8);
        set.put(
            ("B".into(), 2, "api".into()),
            idle_process("new", now + Duration::from_secs(100)),
            8,
        );
        let keep = |_: &SessionKey| Duration::from_secs(60);
        assert_eq!(set.next_expiry(keep), Some(now + Duration::from_secs(60)));
        let expired = set.expired(now + Duration::from_secs(61), keep);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].dir, PathBuf::from("old"));
        assert_eq!(set.remove_matching("B", Some(2), Some("default")).len(), 0);
        assert_eq!(set.remove_matching("B", Some(2), Some("api")).len(), 1);
        assert_eq!(set.usage().0, 0);
    }

    #[test]
    fn a_turn_record_round_trips_beside_the_run_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run_dir = dir.path().join("7");
        let record = TurnRecord {
            process_dir: dir.path().join("warm/3"),
            offset: 1234,
            cost_base: 0.5,
            identity: ProcIdentity {
                pid: 42,
                start_time: 99,
            },
            command: None,
        };
        assert_eq!(read_turn_record(&run_dir), None);
        write_turn_record(&run_dir, &record).expect("write");
        assert!(!run_dir.exists(), "a warm turn makes no run folder");
        assert!(dir.path().join("7.turn.json").is_file());
        assert_eq!(read_turn_record(&run_dir), Some(record.clone()));
        remove_turn_record(&run_dir);
        assert_eq!(read_turn_record(&run_dir), None);

        // A record an earlier build kept inside the run folder is still found.
        std::fs::create_dir_all(&run_dir).expect("run folder");
        let legacy = serde_json::to_vec(&record).expect("json");
        std::fs::write(run_dir.join(TURN_FILE), legacy).expect("legacy record");
        assert_eq!(read_turn_record(&run_dir), Some(record));
        remove_turn_record(&run_dir);
        assert_eq!(read_turn_record(&run_dir), None);
    }

    #[test]
    fn an_adopted_process_runs_the_command_its_turn_record_names() {
        let mut config = crate::config::AgentConfig::default();
        let today = AgentCommand::from_config(&config, vec![]);
        config.model = "claude-opus-4-1".into();
        let started_with = AgentCommand::from_config(&config, vec![]);
        assert_ne!(today, started_with);
        let mut process = idle_process("p", Instant::now());
        process.command = started_with.clone();
        let record = process.turn_record();
        assert_eq!(record.command.as_ref(), Some(&started_with));
        // A `/model` chosen since does not relabel the running process.
        assert_eq!(
            WarmProcess::adopted(&record, today.clone()).command,
            started_with
        );
        // A record of an older build, without the command, falls back to today's.
        let old =
            r#"{"process_dir":"p","offset":0,"cost_base":0.0,"identity":{"pid":1,"start_time":2}}"#;
        let old: TurnRecord = serde_json::from_str(old).expect("an older record decodes");
        assert_eq!(WarmProcess::adopted(&old, today.clone()).command, today);
    }

    #[test]
    fn writing_to_a_pipe_nobody_reads_fails_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (stdin, _out, _err) = prepare_process_dir(dir.path()).expect("prepare");
        // While the read-write descriptor is open, a prompt goes through.
        write_to_fifo(&dir.path().join(STDIN_FIFO), b"line\n").expect("reader present");
        drop(stdin);
        let error = write_to_fifo(&dir.path().join(STDIN_FIFO), b"line\n").expect_err("no reader");
        assert_eq!(error.raw_os_error(), Some(libc::ENXIO));
    }

    #[test]
    fn a_prompt_longer_than_the_pipe_holds_arrives_whole() {
        use std::io::Read as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let (stdin, _out, _err) = prepare_process_dir(dir.path()).expect("prepare");
        let fifo = dir.path().join(STDIN_FIFO);
        let line: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let (file, written) = start_fifo_write(&fifo, &line).expect("start");
        assert!(
            written > 0 && written < line.len(),
            "the pipe took {written}"
        );
        let expected = line.clone();
        let reader = std::thread::spawn(move || {
            let mut stdin = stdin;
            let mut got = vec![0; expected.len()];
            stdin.read_exact(&mut got).expect("read");
            assert!(got == expected, "the line arrived changed");
        });
        finish_fifo_write(file, &line[written..]).expect("finish");
        reader.join().expect("reader");
    }
}
