//! The agent runner: starts one agent subprocess and sees it to its end.
//!
//! An agent runs without a shell, in its own process group, in the bot's working
//! directory. Its prompt is a complete file given to it as stdin (in memory on
//! Linux, `<run_dir>/prompt` elsewhere), and its stdout and stderr go to files in
//! the run directory (`<run_dir>/{stdout,stderr}`), so nothing ties the agent to
//! this process: if agentlab restarts, the agent keeps running and the next
//! process [`adopt`]s it by its [`ProcIdentity`].
//!
//! Invariants:
//! - Nothing kills an agent implicitly: dropping a [`RunningAgent`] or the future of
//!   [`RunningAgent::wait`] leaves the agent running (no `kill_on_drop`). Only a
//!   timeout, a cancellation or [`kill_group`] stop it.
//! - Stopping is SIGTERM to the whole group, `kill_grace` to exit, then SIGKILL to the
//!   group. Once the leader has exited, whatever is left of its group is SIGKILLed,
//!   so no grandchild outlives its run.
//! - A process that is not our unreaped child is signalled only while its recorded
//!   start time still matches: a reused pid is never signalled.
//! - Results are read from the run files with bounded memory, however large they are.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::agent_result::{self, AgentResult, MAX_JSON_BYTES};
use super::proc_identity::{self, ProcIdentity, UNKNOWN_START_TIME};
use crate::config::{AgentConfig, AgentKind, PermissionMode};

/// Placeholder in [`AgentCommand::resume_args`] replaced by the session id.
pub const SESSION_ID_PLACEHOLDER: &str = "{session_id}";
/// Longest accepted session id.
pub const MAX_SESSION_ID_LEN: usize = 128;
/// File in the run directory holding the prompt (the agent's stdin) where an
/// in-memory file is not available (not Linux).
pub const PROMPT_FILE: &str = "prompt";
/// File in the run directory receiving the agent's stdout.
pub const STDOUT_FILE: &str = "stdout";
/// File in the run directory receiving the agent's stderr.
pub const STDERR_FILE: &str = "stderr";
/// How much of the end of stderr an [`AgentOutcome`] keeps.
pub const STDERR_TAIL_BYTES: u64 = 8 * 1024;

/// Shortest interval at which an adopted process is polled.
const MIN_POLL: Duration = Duration::from_millis(10);
/// How long to wait for a SIGKILLed process to be gone before giving up on it.
const AFTER_KILL_WAIT: Duration = Duration::from_secs(5);

/// How to start the agent program (from the bot's configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCommand {
    /// The program, found on `PATH` unless it contains a `/`.
    pub program: String,
    /// Arguments for every run, e.g. `["-p", "--verbose", "--input-format", ...]`.
    pub args: Vec<String>,
    /// Arguments added when resuming, with [`SESSION_ID_PLACEHOLDER`] replaced by the
    /// session id, e.g. `["--resume", "{session_id}"]`.
    pub resume_args: Vec<String>,
    /// Arguments after the resume arguments (the configuration's `extra_args`).
    #[serde(default)]
    pub trailing_args: Vec<String>,
    /// How the prompt is written to the agent's stdin.
    #[serde(default)]
    pub prompt_format: PromptFormat,
    /// Environment variables removed before the agent starts (agentlab's own
    /// secrets); everything else is inherited.
    pub scrub_env: Vec<String>,
}

/// How the prompt reaches the agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PromptFormat {
    /// The prompt's text as it is.
    #[default]
    Raw,
    /// One Claude Code stream-json user message (a JSON line); the end of stdin
    /// after it ends the session once the turn is answered.
    StreamJson,
}

impl PromptFormat {
    /// The bytes the agent reads on stdin for `prompt`.
    pub fn encode(self, prompt: &str) -> Vec<u8> {
        match self {
            PromptFormat::Raw => prompt.as_bytes().to_vec(),
            PromptFormat::StreamJson => {
                let message = serde_json::json!({
                    "type": "user",
                    "message": {"role": "user", "content": prompt},
                });
                let mut line = message.to_string().into_bytes();
                line.push(b'\n');
                line
            }
        }
    }
}

/// The flags that make Claude Code speak stream-json on both sides, in print mode.
pub const CLAUDE_STREAM_JSON_ARGS: [&str; 6] = [
    "-p",
    "--verbose",
    "--input-format",
    "stream-json",
    "--output-format",
    "stream-json",
];

impl AgentCommand {
    /// The command for an agent configuration; `scrub_env` as in the field.
    ///
    /// `kind = "claude"`: `<command> -p --verbose --input-format stream-json
    /// --output-format stream-json [--permission-prompt-tool stdio] [--permission-mode M] [--model M] [--allowedTools
    /// T..] [--disallowedTools T..] [--resume ID] <extra_args>`, the prompt as one
    /// stream-json message. `kind = "plain"`: `<command> [resume_args] <extra_args>`,
    /// the prompt as it is.
    pub fn from_config(agent: &AgentConfig, scrub_env: Vec<String>) -> AgentCommand {
        let mut parts = agent.command.iter().cloned();
        let program = parts.next().unwrap_or_default();
        let mut args: Vec<String> = parts.collect();
        let (resume_args, prompt_format) = match agent.kind {
            AgentKind::Plain => (agent.resume_args.clone(), PromptFormat::Raw),
            AgentKind::Claude => {
                args.extend(CLAUDE_STREAM_JSON_ARGS.map(String::from));
                if asks_approvals(agent) {
                    args.push("--permission-prompt-tool".into());
                    args.push("stdio".into());
                }
                if agent.permission_mode != PermissionMode::Default {
                    args.push("--permission-mode".into());
                    args.push(agent.permission_mode.as_str().into());
                }
                if !agent.model.trim().is_empty() {
                    args.push("--model".into());
                    args.push(agent.model.trim().into());
                }
                for (flag, tools) in [
                    ("--allowedTools", &agent.allowed_tools),
                    ("--disallowedTools", &agent.disallowed_tools),
                ] {
                    if !tools.is_empty() {
                        args.push(flag.into());
                        args.extend(tools.iter().cloned());
                    }
                }
                let resume = vec!["--resume".into(), SESSION_ID_PLACEHOLDER.into()];
                (resume, PromptFormat::StreamJson)
            }
        };
        AgentCommand {
            program,
            args,
            resume_args,
            trailing_args: agent.extra_args.clone(),
            prompt_format,
            scrub_env,
        }
    }
}

/// Whether the agent asks agentlab before using a tool (`--permission-prompt-tool
/// stdio`): a Claude Code agent whose permission mode is not `bypassPermissions`,
/// whatever `keep_warm_s` says. The answers go to the process's input pipe, so
/// such an agent always runs on one ([`uses_input_pipe`]).
pub fn asks_approvals(agent: &AgentConfig) -> bool {
    agent.kind == AgentKind::Claude && agent.permission_mode != PermissionMode::BypassPermissions
}

/// Whether the agent's runs are turns of a process reading an input pipe
/// ([`super::warm`]) rather than a process reading a finished prompt file: a
/// Claude Code agent that is kept warm between prompts (`keep_warm_s` > 0) or
/// that asks approvals, which are answered on that pipe while the turn runs.
/// With `keep_warm_s = 0` such a process is ended after its turn. A
/// `bypassPermissions` agent with `keep_warm_s = 0` has nothing to be told: it
/// reads a prompt file and exits on its own.
pub fn uses_input_pipe(agent: &AgentConfig) -> bool {
    agent.kind == AgentKind::Claude && (agent.keep_warm_s > 0 || asks_approvals(agent))
}

/// One run of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// The task this run belongs to (for logs).
    pub task_id: u64,
    /// The prompt, given to the agent on stdin.
    pub prompt: String,
    /// The agent's working directory.
    pub workdir: PathBuf,
    /// Where the run files go, e.g. `<data_dir>/runs/<task_id>`; created if missing,
    /// and its files are overwritten.
    pub run_dir: PathBuf,
    /// Conversation to resume, if any; must pass [`is_valid_session_id`].
    pub session_id: Option<String>,
    /// The longest the run may take, from spawn.
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL when the run is stopped.
    pub kill_grace: Duration,
}

/// Why an agent could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The session id could be read as an option or is otherwise unsafe to pass on.
    #[error(
        "session id {0:?} is not a valid agent session id (1 to 128 ASCII letters, digits, \
         '-', '_' or '.', starting with a letter or digit); start a fresh session instead"
    )]
    InvalidSessionId(String),
    /// The run directory or one of its files could not be prepared.
    #[error("cannot prepare the run files in {path}; check that the data directory is writable")]
    RunFiles {
        /// The run directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The operating system refused to start the program.
    #[error(
        "cannot start the agent {program:?} in {workdir}; check that the program is installed \
         and the working directory exists"
    )]
    Start {
        /// The configured program.
        program: String,
        /// The configured working directory.
        workdir: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
}

/// Which signal [`kill_group`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSignal {
    /// SIGTERM: ask to exit.
    Terminate,
    /// SIGKILL: stop now.
    Kill,
}

/// How a run ended, and what it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentOutcome {
    /// Exit code, if the agent exited normally and we saw it (never for adopted runs).
    pub exit_code: Option<i32>,
    /// The signal that ended the agent, if one did and we saw it.
    pub signal: Option<i32>,
    /// The run was stopped because it exceeded its timeout.
    pub timed_out: bool,
    /// The run was stopped because it was cancelled.
    pub cancelled: bool,
    /// The answer parsed from stdout.
    pub result: AgentResult,
    /// Size of the stdout file.
    pub stdout_bytes: u64,
    /// The end of stderr, at most [`STDERR_TAIL_BYTES`].
    pub stderr_tail: String,
    /// Time from spawn (or adoption) to the end of the run.
    pub duration_ms: u64,
}

impl AgentOutcome {
    /// The run finished on its own and the agent reported no error.
    ///
    /// An adopted run has no exit code: it counts as succeeded when its stdout holds a
    /// complete result.
    pub fn succeeded(&self) -> bool {
        let exited_cleanly = match self.exit_code {
            Some(code) => code == 0,
            None => self.signal.is_none() && self.result.complete,
        };
        exited_cleanly && !self.timed_out && !self.cancelled && !self.result.is_error
    }

    /// The run failed because the session to resume does not exist; the caller may
    /// retry once as a fresh session.
    pub fn is_unknown_session(&self) -> bool {
        !self.succeeded()
            && (agent_result::is_unknown_session_message(&self.result.text)
                || agent_result::is_unknown_session_message(&self.stderr_tail))
    }

    /// A one-line reason for a failed run, `None` if it succeeded.
    pub fn failure_summary(&self) -> Option<String> {
        if self.succeeded() {
            return None;
        }
        let reason = if self.timed_out {
            "timed out".to_owned()
        } else if self.cancelled {
            "cancelled".to_owned()
        } else if self.result.is_error {
            format!("agent reported an error: {}", first_line(&self.result.text))
        } else if let Some(signal) = self.signal {
            format!("killed by signal {signal}")
        } else if let Some(code) = self.exit_code {
            format!("exited with code {code}")
        } else {
            "ended without a complete result".to_owned()
        };
        let stderr = last_line(&self.stderr_tail);
        Some(if stderr.is_empty() || self.result.is_error {
            reason
        } else {
            format!("{reason}: {stderr}")
        })
    }
}

/// An agent we started and have not waited for yet.
///
/// Store [`RunningAgent::identity`] before calling [`RunningAgent::wait`]; dropping this
/// value leaves the agent running.
#[derive(Debug)]
pub struct RunningAgent {
    child: tokio::process::Child,
    identity: ProcIdentity,
    run_dir: PathBuf,
    started: Instant,
    timeout: Duration,
    kill_grace: Duration,
}

/// A running agent left by a previous agentlab process, to be seen to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptSpec {
    /// The identity recorded when the agent was spawned.
    pub identity: ProcIdentity,
    /// The run directory it writes to.
    pub run_dir: PathBuf,
    /// How often to check whether it is still alive.
    pub poll: Duration,
    /// How much longer it may run, from adoption.
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL when it is stopped.
    pub kill_grace: Duration,
}

/// How the wait for an agent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Exited,
    TimedOut,
    Cancelled,
}

/// True if `id` is safe to put on the agent's command line: 1 to
/// [`MAX_SESSION_ID_LEN`] ASCII letters, digits, `-`, `_` or `.`, starting with a
/// letter or digit (so it can never be read as an option).
pub fn is_valid_session_id(id: &str) -> bool {
    let starts_well = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    starts_well
        && id.len() <= MAX_SESSION_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Starts the agent for `spec` and returns as soon as it runs.
///
/// Starts `cmd` with the prompt as a complete file on stdin (see [`prompt_stdin`])
/// and `<run_dir>/stdout`, `<run_dir>/stderr` as outputs.
///
/// No span of its own: the caller's (the pool's, with task and bot id) covers it,
/// and a span per step of every run costs more than its lines are worth.
pub async fn spawn(cmd: &AgentCommand, spec: &RunSpec) -> Result<RunningAgent, SpawnError> {
    let args = command_args(cmd, spec.session_id.as_deref())?;
    let prompt = cmd.prompt_format.encode(&spec.prompt);
    let files = prepare_run_files(&spec.run_dir, &prompt).await?;
    let (child, identity) = start_in_group(
        cmd,
        &args,
        &spec.workdir,
        files.stdin,
        files.stdout,
        files.stderr,
    )?;
    // The pid is in the task record (`/task ID`, `dump`); one info line per
    // task ("task finished") is enough for the log.
    debug!(
        pid = identity.pid,
        start_time = identity.start_time,
        "agent started"
    );
    Ok(RunningAgent {
        child,
        identity,
        run_dir: spec.run_dir.clone(),
        started: Instant::now(),
        timeout: spec.timeout,
        kill_grace: spec.kill_grace,
    })
}

impl RunningAgent {
    /// The agent's pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.identity.pid
    }

    /// The agent's identity, to store before waiting so a restart can adopt it.
    pub fn identity(&self) -> ProcIdentity {
        self.identity
    }

    /// Waits until the agent exits, its timeout passes or `cancel` turns true, stops
    /// its group if needed, and reads its answer.
    ///
    /// A dropped cancel sender means "never cancelled". Dropping this future leaves
    /// the agent running.
    pub async fn wait(mut self, mut cancel: watch::Receiver<bool>) -> AgentOutcome {
        let deadline = deadline_after(self.started, self.timeout);
        let (ending, exit) = tokio::select! {
            biased;
            status = self.child.wait() => (Ending::Exited, Some(status)),
            () = sleep_until(deadline) => (Ending::TimedOut, None),
            () = cancelled(&mut cancel) => (Ending::Cancelled, None),
        };
        let status = match exit {
            Some(Ok(status)) => Some(status),
            Some(Err(error)) => {
                // The leftover sweep below still stops the group if the leader lives.
                warn!(%error, pid = self.identity.pid, "cannot wait for the agent");
                None
            }
            None => self.stop().await,
        };
        kill_group_leftovers(&self.identity);
        log_ending(ending, status);
        let ended = Ended::from_status(ending, status);
        collect_outcome(&self.run_dir, ended, self.started).await
    }

    /// SIGTERM the group, give the leader `kill_grace`, then SIGKILL the group.
    async fn stop(&mut self) -> Option<ExitStatus> {
        // The leader is our unreaped child, so its pid (= group id) cannot be reused yet.
        signal_group(self.identity.pid, libc::SIGTERM);
        if let Ok(Ok(status)) = tokio::time::timeout(self.kill_grace, self.child.wait()).await {
            return Some(status);
        }
        signal_group(self.identity.pid, libc::SIGKILL);
        match tokio::time::timeout(AFTER_KILL_WAIT, self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                warn!(
                    pid = self.identity.pid,
                    "the agent did not exit after SIGKILL; leaving it to be reaped later"
                );
                None
            }
        }
    }
}

/// Sees an agent started by a previous agentlab process to its end.
///
/// The agent is not our child: it is polled every `spec.poll` until it is no longer
/// alive (see [`proc_identity::is_alive`]), stopped like [`RunningAgent::wait`] on
/// timeout or cancellation, and its answer read from the run files. The exit code is
/// unknown. An identity that is already dead returns at once with what the files hold.
#[tracing::instrument(skip_all, fields(pid = spec.identity.pid))]
pub async fn adopt(spec: AdoptSpec, mut cancel: watch::Receiver<bool>) -> AgentOutcome {
    let started = Instant::now();
    let poll = spec.poll.max(MIN_POLL);
    let deadline = deadline_after(started, spec.timeout);
    let ending = tokio::select! {
        biased;
        () = wait_until_dead(&spec.identity, poll) => Ending::Exited,
        () = sleep_until(deadline) => Ending::TimedOut,
        () = cancelled(&mut cancel) => Ending::Cancelled,
    };
    if ending != Ending::Exited {
        stop_adopted(&spec.identity, spec.kill_grace, poll).await;
    }
    kill_group_leftovers(&spec.identity);
    log_ending(ending, None);
    collect_outcome(&spec.run_dir, Ended::from_status(ending, None), started).await
}

/// Sends `signal` to the process group led by `identity`, only if that process is
/// still alive with the recorded start time. Returns whether the signal was sent.
pub fn kill_group(identity: &ProcIdentity, signal: GroupSignal) -> bool {
    if !proc_identity::is_alive(identity) {
        return false;
    }
    let signal = match signal {
        GroupSignal::Terminate => libc::SIGTERM,
        GroupSignal::Kill => libc::SIGKILL,
    };
    signal_group(identity.pid, signal)
}

/// `cmd.args`, plus the resume arguments when resuming a (valid) session, then
/// `cmd.trailing_args`.
/// Starts `cmd` with `args` in `workdir`, in a process group of its own, never
/// killed on drop, with the given stdin/stdout/stderr and the environment scrubbed
/// of `cmd.scrub_env`; returns the child and its identity (pid and start time).
pub(super) fn start_in_group(
    cmd: &AgentCommand,
    args: &[String],
    workdir: &Path,
    stdin: impl Into<std::process::Stdio>,
    stdout: impl Into<std::process::Stdio>,
    stderr: impl Into<std::process::Stdio>,
) -> Result<(tokio::process::Child, ProcIdentity), SpawnError> {
    let mut command = tokio::process::Command::new(&cmd.program);
    command
        .args(args)
        .current_dir(workdir)
        .process_group(0)
        .kill_on_drop(false)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    for name in &cmd.scrub_env {
        command.env_remove(name);
    }
    let start_error = |source| SpawnError::Start {
        program: cmd.program.clone(),
        workdir: workdir.to_path_buf(),
        source,
    };
    let child = command.spawn().map_err(start_error)?;
    let pid = child
        .id()
        .ok_or_else(|| start_error(io::Error::other("the agent has no pid")))?;
    // Our child cannot be reaped before we wait for it, so its /proc entry is there.
    let identity = proc_identity::read_identity(pid).unwrap_or_else(|| {
        warn!(
            pid,
            "cannot read the agent's start time; it cannot be adopted after a restart"
        );
        ProcIdentity {
            pid,
            start_time: UNKNOWN_START_TIME,
        }
    });
    Ok((child, identity))
}

pub(super) fn command_args(
    cmd: &AgentCommand,
    session_id: Option<&str>,
) -> Result<Vec<String>, SpawnError> {
    let mut args = cmd.args.clone();
    if let Some(id) = session_id {
        if !is_valid_session_id(id) {
            let shown = id.chars().take(MAX_SESSION_ID_LEN).collect();
            return Err(SpawnError::InvalidSessionId(shown));
        }
        let resume = cmd.resume_args.iter();
        args.extend(resume.map(|arg| arg.replace(SESSION_ID_PLACEHOLDER, id)));
    }
    args.extend(cmd.trailing_args.iter().cloned());
    Ok(args)
}

/// The agent's three standard streams: the prompt, and its output files in the
/// run directory.
struct RunFiles {
    stdin: std::fs::File,
    stdout: std::fs::File,
    stderr: std::fs::File,
}

/// Creates the run directory (0700) and its empty stdout and stderr files (0600),
/// and the prompt as the agent's stdin (see [`prompt_stdin`]).
///
/// On the calling thread, not the blocking pool: a directory, two empty files
/// and an in-memory file are a few metadata calls that wait for no disk (no
/// fsync), cheaper than the two thread hand-overs of `spawn_blocking` (each a
/// wake-up of a sleeping thread, ~15–50 µs on a VM). What this can cost: a
/// retry truncates its earlier attempt's output here, and on a journaled
/// filesystem a metadata change may wait for the journal's commit; both are
/// rare and short next to the agent's run.
async fn prepare_run_files(run_dir: &Path, prompt: &[u8]) -> Result<RunFiles, SpawnError> {
    create_run_files(run_dir, prompt).map_err(|source| SpawnError::RunFiles {
        path: run_dir.to_path_buf(),
        source,
    })
}

fn create_run_files(run_dir: &Path, prompt: &[u8]) -> io::Result<RunFiles> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(run_dir)?;
    let create = |name: &str| {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(run_dir.join(name))
    };
    Ok(RunFiles {
        stdin: prompt_stdin(run_dir, prompt)?,
        stdout: create(STDOUT_FILE)?,
        stderr: create(STDERR_FILE)?,
    })
}

/// The prompt as a complete file, read from its start: the agent never depends on
/// this process (it cannot block on a full pipe, cannot lose the end of its
/// prompt if we exit, and needs no writer task). On Linux an anonymous in-memory
/// file (`memfd`): no inode to allocate on the data disk, nothing to clean up;
/// the prompt itself is in the task record. Elsewhere, `<run_dir>/prompt`.
fn prompt_stdin(run_dir: &Path, prompt: &[u8]) -> io::Result<std::fs::File> {
    use std::io::{Seek as _, SeekFrom, Write as _};

    let mut file = match memfd() {
        Some(file) => file,
        None => {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(run_dir.join(PROMPT_FILE))?
        }
    };
    file.write_all(prompt)?;
    // The agent shares this file position: it must read from the start.
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

#[cfg(target_os = "linux")]
fn memfd() -> Option<std::fs::File> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: a valid NUL-terminated name and flags; the call has no other inputs.
    let fd = unsafe { libc::memfd_create(c"agentlab-prompt".as_ptr(), libc::MFD_CLOEXEC) };
    // SAFETY: a non-negative fd was just created and is owned by nothing else.
    (fd >= 0).then(|| unsafe { std::fs::File::from_raw_fd(fd) })
}

#[cfg(not(target_os = "linux"))]
fn memfd() -> Option<std::fs::File> {
    None
}

/// `start + timeout`, or `None` (never) if that is beyond what an `Instant` holds.
fn deadline_after(start: Instant, timeout: Duration) -> Option<tokio::time::Instant> {
    tokio::time::Instant::from_std(start).checked_add(timeout)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Resolves when `cancel` is (or becomes) true; never if its sender is gone.
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|cancelled| *cancelled).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn wait_until_dead(identity: &ProcIdentity, poll: Duration) {
    while proc_identity::is_alive(identity) {
        tokio::time::sleep(poll).await;
    }
}

/// Waits until `identity` is dead, polling; false if `limit` passed first.
async fn wait_until_dead_within(identity: &ProcIdentity, poll: Duration, limit: Duration) -> bool {
    tokio::time::timeout(limit, wait_until_dead(identity, poll))
        .await
        .is_ok()
}

/// SIGTERM, `kill_grace`, SIGKILL for a process that is not our child.
async fn stop_adopted(identity: &ProcIdentity, kill_grace: Duration, poll: Duration) {
    if kill_group(identity, GroupSignal::Terminate)
        && wait_until_dead_within(identity, poll, kill_grace).await
    {
        return;
    }
    if kill_group(identity, GroupSignal::Kill)
        && !wait_until_dead_within(identity, poll, AFTER_KILL_WAIT).await
    {
        warn!("the adopted agent did not exit after SIGKILL");
    }
}

/// After the leader has exited: SIGKILL what is left of its group (grandchildren).
///
/// While any member lives, the kernel keeps the group id from being reused as a pid,
/// so the group is still the agent's, unless the pid already belongs to a new
/// process, in which case nothing is sent.
fn kill_group_leftovers(identity: &ProcIdentity) {
    if let Some(now) = proc_identity::read_status(identity.pid)
        && now.start_time != identity.start_time
    {
        return;
    }
    if signal_group(identity.pid, libc::SIGKILL) {
        debug!("killed leftover processes of the agent's group");
    }
}

/// `killpg(pgid, signal)`; false if it was not sent (no such group, or a pgid that
/// would name our own group or init's).
fn signal_group(pgid: u32, signal: libc::c_int) -> bool {
    let Some(pgid) = libc::pid_t::try_from(pgid).ok().filter(|pgid| *pgid > 1) else {
        return false;
    };
    // SAFETY: killpg has no memory-safety preconditions; pgid > 1 rules out the
    // "own process group" meaning of 0 and init.
    let sent = unsafe { libc::killpg(pgid, signal) } == 0;
    if !sent {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ESRCH) {
            warn!(%error, pgid, signal, "cannot signal the agent's process group");
        }
    }
    sent
}

fn log_ending(ending: Ending, status: Option<ExitStatus>) {
    match ending {
        // The pool logs the task's end right after; one line per run is enough.
        Ending::Exited => tracing::debug!(?status, "agent exited"),
        Ending::TimedOut => warn!(?status, "agent timed out and was stopped"),
        Ending::Cancelled => info!(?status, "agent cancelled and stopped"),
    }
}

/// How a run ended, before its files are read.
#[derive(Debug, Clone, Copy)]
struct Ended {
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    cancelled: bool,
}

impl Ended {
    fn from_status(ending: Ending, status: Option<ExitStatus>) -> Self {
        use std::os::unix::process::ExitStatusExt as _;
        Ended {
            exit_code: status.and_then(|status| status.code()),
            signal: status.and_then(|status| status.signal()),
            timed_out: ending == Ending::TimedOut,
            cancelled: ending == Ending::Cancelled,
        }
    }
}

/// Output up to this size is read and parsed on the calling thread; more goes
/// to the blocking pool (see [`collect_outcome`]).
const INLINE_OUTPUT_BYTES: u64 = 64 * 1024;

/// Reads the run files into an outcome, with bounded memory.
async fn collect_outcome(run_dir: &Path, ended: Ended, started: Instant) -> AgentOutcome {
    let read_both = |dir: &Path| {
        let stdout_path = dir.join(STDOUT_FILE);
        let (head, stdout_bytes) = read_head(&stdout_path, MAX_JSON_BYTES);
        // A long event stream ends in its result line: read the end too.
        let result = if stdout_bytes > MAX_JSON_BYTES {
            let tail = read_tail_bytes(&stdout_path, MAX_JSON_BYTES);
            agent_result::parse_agent_output_with_tail(&head, &tail, stdout_bytes, &stdout_path)
        } else {
            agent_result::parse_agent_output(&head, stdout_bytes, &stdout_path)
        };
        let stderr_tail = read_tail(&dir.join(STDERR_FILE), STDERR_TAIL_BYTES);
        (result, stdout_bytes, stderr_tail)
    };
    // A short answer (the usual case) is read here: two small files from the
    // page cache cost less than the blocking pool's two hand-overs. A long one,
    // whose JSON may take milliseconds to parse, goes to the blocking pool, both
    // files in one call (each tokio::fs step would be a round trip of its own).
    // Either way a panic in the parser ends in an outcome (an unreadable
    // answer), never in a task left running.
    let stdout_len = std::fs::metadata(run_dir.join(STDOUT_FILE)).map_or(0, |m| m.len());
    let read = if stdout_len <= INLINE_OUTPUT_BYTES {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_both(run_dir)))
            .map_err(|_| "the output reader panicked".to_string())
    } else {
        let dir = run_dir.to_path_buf();
        tokio::task::spawn_blocking(move || read_both(&dir))
            .await
            .map_err(|e| e.to_string())
    };
    let (result, stdout_bytes, stderr_tail) = match read {
        Ok(read) => read,
        Err(error) => {
            warn!(%error, "reading the agent's output failed");
            let stdout_path = run_dir.join(STDOUT_FILE);
            (
                agent_result::parse_agent_output(&[], 0, &stdout_path),
                0,
                String::new(),
            )
        }
    };
    AgentOutcome {
        exit_code: ended.exit_code,
        signal: ended.signal,
        timed_out: ended.timed_out,
        cancelled: ended.cancelled,
        result,
        stdout_bytes,
        stderr_tail,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// The answer in what an agent wrote to `stdout` from byte `offset` on, read
/// like a whole run's output (bounded; the end is read too when it is long).
pub(super) fn output_since(stdout: &Path, offset: u64) -> AgentResult {
    use std::io::{Read as _, Seek as _};
    let read = || {
        let mut file = std::fs::File::open(stdout)?;
        let len = file.metadata()?.len().saturating_sub(offset);
        file.seek(io::SeekFrom::Start(offset))?;
        let mut head = Vec::with_capacity(usize::try_from(len.min(MAX_JSON_BYTES)).unwrap_or(0));
        (&mut file).take(MAX_JSON_BYTES).read_to_end(&mut head)?;
        let tail = if len > MAX_JSON_BYTES {
            read_end(stdout, MAX_JSON_BYTES)?.0
        } else {
            Vec::new()
        };
        io::Result::Ok((head, tail, len))
    };
    match read() {
        Ok((head, tail, len)) if len > MAX_JSON_BYTES => {
            agent_result::parse_agent_output_with_tail(&head, &tail, len, stdout)
        }
        Ok((head, _, len)) => agent_result::parse_agent_output(&head, len, stdout),
        Err(error) => {
            warn!(%error, path = %stdout.display(), "cannot read the agent's output");
            agent_result::parse_agent_output(&[], 0, stdout)
        }
    }
}

/// The first `cap` bytes of `path` and the file's length; empty if unreadable.
fn read_head(path: &Path, cap: u64) -> (Vec<u8>, u64) {
    use std::io::Read as _;
    let read = || {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        // Sized up front: one read instead of a doubling series of them.
        let mut head = Vec::with_capacity(usize::try_from(len.min(cap)).unwrap_or(0) + 1);
        file.take(cap).read_to_end(&mut head)?;
        io::Result::Ok((head, len))
    };
    read().unwrap_or_else(|error| {
        warn!(%error, path = %path.display(), "cannot read the agent's output");
        (Vec::new(), 0)
    })
}

/// The last `cap` bytes of `path`, and whether anything before them was left out.
fn read_end(path: &Path, cap: u64) -> io::Result<(Vec<u8>, bool)> {
    use std::io::{Read as _, Seek as _};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let skip = len.saturating_sub(cap);
    file.seek(io::SeekFrom::Start(skip))?;
    let mut tail = Vec::with_capacity(usize::try_from(len - skip).unwrap_or(0) + 1);
    file.take(cap).read_to_end(&mut tail)?;
    Ok((tail, skip > 0))
}

/// The last `cap` bytes of the agent's stdout; empty if unreadable.
fn read_tail_bytes(path: &Path, cap: u64) -> Vec<u8> {
    read_end(path, cap).map_or_else(
        |error| {
            warn!(%error, path = %path.display(), "cannot read the agent's output");
            Vec::new()
        },
        |(tail, _)| tail,
    )
}

/// The last `cap` bytes of `path` as text, prefixed with `…` when cut; empty if
/// unreadable.
pub(super) fn read_tail(path: &Path, cap: u64) -> String {
    match read_end(path, cap) {
        Ok((tail, cut)) => tail_text(&tail, cut),
        Err(error) => {
            warn!(%error, path = %path.display(), "cannot read the agent's stderr");
            String::new()
        }
    }
}

/// Bytes from the middle of a file as text: a char cut at the start is dropped.
fn tail_text(bytes: &[u8], cut: bool) -> String {
    if !cut {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let is_continuation = |b: &u8| (0x80..0xC0).contains(b);
    let start = bytes
        .iter()
        .take(3)
        .take_while(|b| is_continuation(b))
        .count();
    format!("…{}", String::from_utf8_lossy(&bytes[start..]))
}

fn first_line(text: &str) -> &str {
    text.lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("")
        .trim()
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("")
        .trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> AgentCommand {
        AgentCommand {
            program: "claude".into(),
            args: vec!["-p".into(), "--output-format".into(), "json".into()],
            resume_args: vec!["--resume".into(), SESSION_ID_PLACEHOLDER.into()],
            trailing_args: vec![],
            prompt_format: PromptFormat::Raw,
            scrub_env: vec![],
        }
    }

    #[test]
    fn claude_kind_speaks_stream_json_with_options_then_resume_then_extra_args() {
        let agent = AgentConfig {
            command: vec!["/opt/claude".into(), "--debug".into()],
            model: "claude-test-1".into(),
            permission_mode: PermissionMode::AcceptEdits,
            allowed_tools: vec!["Bash(git log:*)".into(), "Read".into()],
            disallowed_tools: vec!["WebFetch".into()],
            extra_args: vec!["--max-turns".into(), "5".into()],
            ..AgentConfig::default()
        };
        let cmd = AgentCommand::from_config(&agent, vec!["TOKEN".into()]);
        assert_eq!(cmd.program, "/opt/claude");
        assert_eq!(cmd.prompt_format, PromptFormat::StreamJson);
        let args = command_args(&cmd, Some("s-1")).expect("valid");
        let expected = [
            "--debug",
            "-p",
            "--verbose",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--permission-prompt-tool",
            "stdio",
            "--permission-mode",
            "acceptEdits",
            "--model",
            "claude-test-1",
            "--allowedTools",
            "Bash(git log:*)",
            "Read",
            "--disallowedTools",
            "WebFetch",
            "--resume",
            "s-1",
            "--max-turns",
            "5",
        ];
        assert_eq!(args, expected);
        let fresh = command_args(&cmd, None).expect("valid");
        assert!(!fresh.iter().any(|a| a == "--resume"));
        assert_eq!(cmd.scrub_env, ["TOKEN"]);
    }

    #[test]
    fn default_claude_command_adds_only_the_protocol_flags() {
        let cmd = AgentCommand::from_config(&AgentConfig::default(), vec![]);
        assert_eq!(cmd.program, "claude");
        let mut expected = CLAUDE_STREAM_JSON_ARGS.to_vec();
        expected.extend(["--permission-prompt-tool", "stdio"]);
        assert_eq!(command_args(&cmd, None).expect("valid"), expected);
    }

    #[test]
    fn approvals_are_asked_for_unless_bypassed_whatever_keep_warm_s_says() {
        let asks = |agent: AgentConfig| {
            let cmd = AgentCommand::from_config(&agent, vec![]);
            command_args(&cmd, None)
                .expect("valid")
                .iter()
                .any(|a| a == "--permission-prompt-tool")
        };
        assert!(asks(AgentConfig {
            permission_mode: PermissionMode::Plan,
            ..AgentConfig::default()
        }));
        assert!(!asks(AgentConfig {
            permission_mode: PermissionMode::BypassPermissions,
            ..AgentConfig::default()
        }));
        assert!(asks(AgentConfig {
            keep_warm_s: 0,
            ..AgentConfig::default()
        }));
        assert!(!asks(AgentConfig {
            kind: AgentKind::Plain,
            ..AgentConfig::default()
        }));
    }

    #[test]
    fn a_claude_agent_runs_on_an_input_pipe_when_kept_warm_or_asking() {
        let agent = |kind, permission_mode, keep_warm_s| AgentConfig {
            kind,
            permission_mode,
            keep_warm_s,
            ..AgentConfig::default()
        };
        let (claude, plain) = (AgentKind::Claude, AgentKind::Plain);
        let (asking, bypass) = (PermissionMode::Default, PermissionMode::BypassPermissions);
        assert!(uses_input_pipe(&agent(claude, asking, 600)));
        assert!(uses_input_pipe(&agent(claude, asking, 0)));
        assert!(uses_input_pipe(&agent(claude, bypass, 600)));
        assert!(!uses_input_pipe(&agent(claude, bypass, 0)));
        assert!(!uses_input_pipe(&agent(plain, asking, 600)));
    }

    #[test]
    fn plain_kind_runs_the_command_as_written_with_its_resume_args() {
        let agent = AgentConfig {
            kind: AgentKind::Plain,
            command: vec!["my-agent".into(), "--quiet".into()],
            resume_args: vec!["--session={session_id}".into()],
            extra_args: vec!["--last".into()],
            ..AgentConfig::default()
        };
        let cmd = AgentCommand::from_config(&agent, vec![]);
        assert_eq!(cmd.prompt_format, PromptFormat::Raw);
        let args = command_args(&cmd, Some("abc")).expect("valid");
        assert_eq!(args, ["--quiet", "--session=abc", "--last"]);
    }

    #[test]
    fn stream_json_prompt_is_one_user_message_line() {
        let bytes = PromptFormat::StreamJson.encode("say \"hi\"\nand go");
        let text = String::from_utf8(bytes).expect("utf-8");
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
        let message: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(message["type"], "user");
        assert_eq!(message["message"]["role"], "user");
        assert_eq!(message["message"]["content"], "say \"hi\"\nand go");
        assert_eq!(PromptFormat::Raw.encode("as is"), b"as is");
    }

    #[test]
    fn resume_args_are_added_only_with_a_session() {
        let fresh = command_args(&command(), None).expect("fresh");
        assert_eq!(fresh, ["-p", "--output-format", "json"]);
        let resumed = command_args(&command(), Some("4f2c-9a.1_b")).expect("resumed");
        assert_eq!(resumed[3..], ["--resume", "4f2c-9a.1_b"]);
    }

    #[test]
    fn placeholder_inside_an_argument_is_substituted() {
        let mut cmd = command();
        cmd.resume_args = vec!["--resume={session_id}".into()];
        let args = command_args(&cmd, Some("abc")).expect("valid");
        assert_eq!(args.last().map(String::as_str), Some("--resume=abc"));
    }

    #[test]
    fn unsafe_session_ids_are_rejected() {
        let too_long = "a".repeat(MAX_SESSION_ID_LEN + 1);
        for id in [
            "", "-rf", "--help", ".hidden", "a b", "a;b", "a/b", "é", &too_long,
        ] {
            assert!(!is_valid_session_id(id), "{id:?} must be rejected");
            assert!(matches!(
                command_args(&command(), Some(id)),
                Err(SpawnError::InvalidSessionId(_))
            ));
        }
        assert!(is_valid_session_id(&"a".repeat(MAX_SESSION_ID_LEN)));
        assert!(is_valid_session_id("0b9c5d2e-1111-4a2b-9c3d-123456789abc"));
    }

    #[test]
    fn tail_text_drops_a_char_cut_at_the_start() {
        let bytes = "é tail".as_bytes();
        assert_eq!(tail_text(&bytes[1..], true), "… tail");
        assert_eq!(tail_text(bytes, false), "é tail");
    }

    #[test]
    fn signal_group_never_targets_our_own_group_or_init() {
        assert!(!signal_group(0, 0));
        assert!(!signal_group(1, 0));
        assert!(!signal_group(u32::MAX, 0));
    }

    fn outcome(exit_code: Option<i32>, text: &str, stderr: &str) -> AgentOutcome {
        AgentOutcome {
            exit_code,
            signal: None,
            timed_out: false,
            cancelled: false,
            result: AgentResult {
                text: text.into(),
                complete: exit_code.is_none(),
                ..AgentResult::default()
            },
            stdout_bytes: 0,
            stderr_tail: stderr.into(),
            duration_ms: 1,
        }
    }

    #[test]
    fn unknown_session_is_read_from_a_failed_run_only() {
        let failed = outcome(Some(1), "", "No conversation found with session ID: x\n");
        assert!(failed.is_unknown_session());
        let answered = outcome(Some(0), "Session not found? Here is why...", "");
        assert!(answered.succeeded());
        assert!(!answered.is_unknown_session());
    }

    #[test]
    fn adopted_run_succeeds_with_a_complete_result() {
        assert!(outcome(None, "done", "").succeeded());
    }

    #[test]
    fn failure_summary_names_the_reason_and_stderr() {
        let failed = outcome(Some(2), "", "warming up\nboom\n");
        assert_eq!(
            failed.failure_summary().as_deref(),
            Some("exited with code 2: boom")
        );
        assert_eq!(outcome(Some(0), "ok", "").failure_summary(), None);
    }
}
