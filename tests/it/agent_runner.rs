//! The agent runner against real subprocesses: the agentlab binary's hidden
//! `test-agent` subcommand plays the agent.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use agentlab::worker::agent::{
    self, AdoptSpec, AgentCommand, AgentOutcome, GroupSignal, PromptFormat, RunSpec, RunningAgent,
    SpawnError,
};
use agentlab::worker::agent_result::MAX_RESULT_TEXT_BYTES;
use agentlab::worker::proc_identity::{self, ProcIdentity};
use agentlab::worker::test_agent::{GRANDCHILD_PID_NOTE, IGNORING_SIGTERM_NOTE};
use tempfile::TempDir;
use tokio::sync::watch;

/// Upper bound for anything the tests wait for; a condition usually holds in ms.
const PATIENCE: Duration = Duration::from_secs(20);

/// A temporary work directory and run directory for one test, and the processes the
/// test started: whatever of them still lives when the test ends (even by a failed
/// assertion) is killed, so no `hang` agent outlives its test.
struct Sandbox {
    dir: TempDir,
    started: Mutex<Vec<ProcIdentity>>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let started = self
            .started
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for identity in started.iter().filter(|id| proc_identity::is_alive(id)) {
            let pid = libc::pid_t::try_from(identity.pid).expect("pid fits pid_t");
            // SAFETY: kill has no memory-safety preconditions; the pid was just
            // checked to still be the process this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Sandbox {
    fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
            started: Mutex::new(Vec::new()),
        }
    }

    /// Remembers a process to kill at the end of the test.
    fn track(&self, identity: ProcIdentity) {
        let mut started = self.started.lock().unwrap_or_else(PoisonError::into_inner);
        started.push(identity);
    }

    /// Starts the test agent for `spec`.
    async fn spawn(&self, spec: &RunSpec) -> RunningAgent {
        self.spawn_with(&test_agent(), spec).await
    }

    async fn spawn_with(&self, cmd: &AgentCommand, spec: &RunSpec) -> RunningAgent {
        let running = agent::spawn(cmd, spec).await.expect("agent starts");
        self.track(running.identity());
        running
    }

    /// Runs the test agent for `spec` to its end.
    async fn run(&self, spec: &RunSpec) -> AgentOutcome {
        self.spawn(spec).await.wait(never_cancelled()).await
    }

    fn workdir(&self) -> PathBuf {
        let workdir = self.dir.path().join("work");
        std::fs::create_dir_all(&workdir).expect("workdir");
        workdir
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("runs").join("7")
    }

    fn spec(&self, prompt: &str) -> RunSpec {
        RunSpec {
            task_id: 7,
            prompt: prompt.to_owned(),
            workdir: self.workdir(),
            run_dir: self.run_dir(),
            session_id: None,
            timeout: PATIENCE,
            kill_grace: Duration::from_secs(2),
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.run_dir().join(agent::STDERR_FILE)).unwrap_or_default()
    }
}

fn test_agent() -> AgentCommand {
    AgentCommand {
        program: env!("CARGO_BIN_EXE_agentlab").to_owned(),
        args: vec!["test-agent".to_owned()],
        resume_args: vec!["--resume".to_owned(), "{session_id}".to_owned()],
        trailing_args: Vec::new(),
        prompt_format: PromptFormat::Raw,
        scrub_env: vec![],
    }
}

/// A cancel receiver whose sender is gone: never cancelled.
fn never_cancelled() -> watch::Receiver<bool> {
    watch::channel(false).1
}

/// Polls `condition` until it holds or [`PATIENCE`] runs out; returns whether it held.
async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// Waits for the test agent to report its grandchild's pid on stderr.
async fn grandchild_of(sandbox: &Sandbox) -> ProcIdentity {
    let mut pid = None;
    let found = eventually(|| {
        pid = sandbox
            .stderr()
            .lines()
            .find_map(|line| line.strip_prefix(GRANDCHILD_PID_NOTE)?.trim().parse().ok());
        pid.is_some()
    })
    .await;
    assert!(found, "the grandchild pid appears on stderr");
    let pid = pid.expect("found");
    let identity = proc_identity::read_identity(pid).expect("grandchild identity");
    sandbox.track(identity);
    identity
}

async fn assert_dies(identity: &ProcIdentity) {
    assert!(
        eventually(|| !proc_identity::is_alive(identity)).await,
        "process {} is still alive",
        identity.pid
    );
}

#[tokio::test]
async fn prompt_on_stdin_is_answered_with_a_parsed_result() {
    let sandbox = Sandbox::new();
    let outcome = sandbox.run(&sandbox.spec("hello agent")).await;
    assert_eq!(outcome.exit_code, Some(0));
    assert!(outcome.succeeded(), "{outcome:?}");
    let result = &outcome.result;
    assert!(
        result.text.starts_with("You said: hello agent"),
        "{}",
        result.text
    );
    assert!(result.parsed_json && result.complete && !result.is_error);
    assert!(
        result
            .session_id
            .as_deref()
            .is_some_and(|id| id.starts_with("test-"))
    );
    assert_eq!(result.input_tokens, "hello agent".len() as u64 / 4);
    assert_eq!(result.output_tokens, result.text.len() as u64 / 4);
    assert!(outcome.stdout_bytes > 0);
    // On Linux the prompt reaches the agent from memory; no file is left behind.
    assert!(!sandbox.run_dir().join(agent::PROMPT_FILE).exists());
}

#[tokio::test]
async fn agent_runs_in_the_given_workdir() {
    let sandbox = Sandbox::new();
    let outcome = sandbox.run(&sandbox.spec("pwd")).await;
    let workdir = sandbox.workdir().canonicalize().expect("canonical workdir");
    assert_eq!(Path::new(&outcome.result.text), workdir);
}

#[tokio::test]
async fn scrubbed_variables_do_not_reach_the_agent() {
    assert!(
        std::env::var_os("PATH").is_some(),
        "the test needs PATH set"
    );
    let sandbox = Sandbox::new();
    let inherited = sandbox.run(&sandbox.spec("env:PATH")).await;
    assert_eq!(inherited.result.text, "PATH is set");
    let mut cmd = test_agent();
    cmd.scrub_env = vec!["PATH".to_owned()];
    let scrubbed = sandbox.spawn_with(&cmd, &sandbox.spec("env:PATH")).await;
    assert_eq!(
        scrubbed.wait(never_cancelled()).await.result.text,
        "PATH is not set"
    );
}

#[tokio::test]
async fn resume_args_carry_the_session_id() {
    let sandbox = Sandbox::new();
    let mut spec = sandbox.spec("cost:0.25 again");
    spec.session_id = Some("3f1c9a2e-7b4d-4c1e-9f00-0123456789ab".to_owned());
    let outcome = sandbox.run(&spec).await;
    assert_eq!(outcome.result.session_id, spec.session_id);
    assert_eq!(outcome.result.cost_usd, 0.25);
}

#[tokio::test]
async fn unsafe_session_id_is_rejected_before_anything_runs() {
    let sandbox = Sandbox::new();
    let mut spec = sandbox.spec("hello");
    spec.session_id = Some("--dangerously-skip-permissions".to_owned());
    let error = agent::spawn(&test_agent(), &spec)
        .await
        .expect_err("rejected");
    assert!(matches!(error, SpawnError::InvalidSessionId(_)), "{error}");
    assert!(!sandbox.run_dir().exists(), "nothing was written");
}

#[tokio::test]
async fn missing_program_is_a_spawn_error() {
    let sandbox = Sandbox::new();
    let mut cmd = test_agent();
    cmd.program = sandbox
        .dir
        .path()
        .join("no-such-agent")
        .display()
        .to_string();
    let error = agent::spawn(&cmd, &sandbox.spec("hello"))
        .await
        .expect_err("fails");
    assert!(matches!(error, SpawnError::Start { .. }), "{error}");
}

#[tokio::test]
async fn agent_that_never_reads_stdin_is_fine() {
    let sandbox = Sandbox::new();
    let cmd = AgentCommand {
        program: "true".to_owned(),
        args: vec![],
        resume_args: vec![],
        trailing_args: Vec::new(),
        prompt_format: PromptFormat::Raw,
        scrub_env: vec![],
    };
    let big_prompt = "x".repeat(1024 * 1024);
    let running = sandbox.spawn_with(&cmd, &sandbox.spec(&big_prompt)).await;
    let outcome = running.wait(never_cancelled()).await;
    assert_eq!(outcome.exit_code, Some(0));
}

#[tokio::test]
async fn timeout_kills_the_whole_group_including_grandchildren() {
    let sandbox = Sandbox::new();
    let mut spec = sandbox.spec("spawn-child hang");
    spec.timeout = Duration::from_secs(2);
    let running = sandbox.spawn(&spec).await;
    let leader = running.identity();
    let grandchild = grandchild_of(&sandbox).await;
    assert!(proc_identity::is_alive(&grandchild));
    let outcome = running.wait(never_cancelled()).await;
    assert!(outcome.timed_out && !outcome.cancelled);
    assert_eq!(outcome.signal, Some(libc::SIGTERM));
    assert!(!outcome.succeeded());
    assert!(!proc_identity::is_alive(&leader));
    assert_dies(&grandchild).await;
}

#[tokio::test]
async fn leftover_grandchild_is_killed_when_the_agent_exits() {
    let sandbox = Sandbox::new();
    let outcome = sandbox.run(&sandbox.spec("spawn-child hello")).await;
    assert!(outcome.succeeded(), "{outcome:?}");
    assert!(outcome.result.text.contains("grandchild pid: "));
    let grandchild = grandchild_of(&sandbox).await;
    assert_dies(&grandchild).await;
}

#[tokio::test]
async fn agent_ignoring_sigterm_is_killed_after_the_grace() {
    let sandbox = Sandbox::new();
    let mut spec = sandbox.spec("ignore-term");
    spec.timeout = Duration::from_millis(300);
    spec.kill_grace = Duration::from_millis(300);
    let running = sandbox.spawn(&spec).await;
    let ignoring = eventually(|| sandbox.stderr().contains(IGNORING_SIGTERM_NOTE)).await;
    assert!(ignoring, "the agent got to ignoring SIGTERM");
    let outcome = running.wait(never_cancelled()).await;
    assert!(outcome.timed_out);
    assert_eq!(outcome.signal, Some(libc::SIGKILL));
}

#[tokio::test]
async fn cancel_stops_a_running_agent() {
    let sandbox = Sandbox::new();
    let running = sandbox.spawn(&sandbox.spec("hang")).await;
    let leader = running.identity();
    let (cancel, cancelled) = watch::channel(false);
    let waiting = tokio::spawn(running.wait(cancelled));
    cancel.send(true).expect("the runner listens");
    let outcome = waiting.await.expect("wait task");
    assert!(outcome.cancelled && !outcome.timed_out);
    assert_eq!(outcome.signal, Some(libc::SIGTERM));
    assert!(outcome.duration_ms < PATIENCE.as_millis() as u64);
    assert!(!proc_identity::is_alive(&leader));
}

#[tokio::test]
async fn huge_output_stays_on_disk_and_the_result_is_bounded() {
    let high_water_before = peak_memory_bytes();
    let sandbox = Sandbox::new();
    let outcome = sandbox.run(&sandbox.spec("long:100000000")).await;
    let stdout = sandbox.run_dir().join(agent::STDOUT_FILE);
    assert_eq!(
        std::fs::metadata(&stdout).expect("stdout file").len(),
        100_000_000
    );
    assert_eq!(outcome.stdout_bytes, 100_000_000);
    let result = &outcome.result;
    assert!(!result.parsed_json && !result.complete);
    assert!(
        result.text.len() <= MAX_RESULT_TEXT_BYTES + 512,
        "{}",
        result.text.len()
    );
    assert!(
        result.text.contains(&stdout.display().to_string()),
        "marker names the file"
    );
    if let (Some(before), Some(after)) = (high_water_before, peak_memory_bytes()) {
        assert!(
            after - before < 32 << 20,
            "peak memory grew by {} bytes",
            after - before
        );
    }
}

#[tokio::test]
async fn long_json_result_is_cut_with_a_marker() {
    let sandbox = Sandbox::new();
    let outcome = sandbox.run(&sandbox.spec("long:200000")).await;
    let result = &outcome.result;
    assert!(result.complete, "a whole result object was printed");
    assert!(
        result
            .text
            .contains("[output truncated: first 65536 of 200000 bytes")
    );
}

#[tokio::test]
async fn non_json_output_is_the_result_at_zero_cost() {
    let sandbox = Sandbox::new();
    let outcome = sandbox.run(&sandbox.spec("cost:2 bad-json")).await;
    let printed = std::fs::read_to_string(sandbox.run_dir().join(agent::STDOUT_FILE));
    assert_eq!(outcome.result.text, printed.expect("stdout file"));
    assert_eq!(outcome.result.cost_usd, 0.0);
    assert!(!outcome.result.parsed_json && !outcome.result.complete);
}

#[tokio::test]
async fn exit_code_is_reported() {
    let sandbox = Sandbox::new();
    let outcome = sandbox.run(&sandbox.spec("exit:3")).await;
    assert_eq!((outcome.exit_code, outcome.signal), (Some(3), None));
    assert_eq!(outcome.result.text, "");
    assert_eq!(
        outcome.failure_summary().as_deref(),
        Some("exited with code 3")
    );
}

#[tokio::test]
async fn failing_agent_is_an_agent_error() {
    let sandbox = Sandbox::new();
    let outcome = sandbox.run(&sandbox.spec("fail")).await;
    assert_eq!(outcome.exit_code, Some(1));
    assert!(outcome.result.is_error && outcome.result.complete);
    assert_eq!(outcome.result.text, "agent failed as asked");
    assert!(!outcome.succeeded());
}

#[tokio::test]
async fn crash_reports_the_signal() {
    let sandbox = Sandbox::new();
    let outcome = sandbox.run(&sandbox.spec("crash")).await;
    assert_eq!(
        (outcome.exit_code, outcome.signal),
        (None, Some(libc::SIGABRT))
    );
}

#[tokio::test]
async fn stderr_tail_is_kept() {
    let sandbox = Sandbox::new();
    let outcome = sandbox.run(&sandbox.spec("stderr:warming-up hello")).await;
    assert_eq!(outcome.stderr_tail, "warming-up\n");
    assert!(outcome.succeeded());
}

#[tokio::test]
async fn unknown_session_on_resume_is_recognised() {
    let sandbox = Sandbox::new();
    let mut spec = sandbox.spec("no-session hello");
    spec.session_id = Some("gone-42".to_owned());
    let outcome = sandbox.run(&spec).await;
    assert_eq!(outcome.exit_code, Some(1));
    assert!(outcome.is_unknown_session(), "{outcome:?}");
    spec.session_id = None;
    let fresh = sandbox.run(&spec).await;
    assert!(fresh.succeeded() && !fresh.is_unknown_session());
}

#[tokio::test]
async fn dropped_agent_keeps_running_and_adopt_collects_its_answer() {
    let sandbox = Sandbox::new();
    let running = sandbox.spawn(&sandbox.spec("sleep:1 adopted")).await;
    let identity = running.identity();
    drop(running);
    assert!(proc_identity::is_alive(&identity), "dropping does not kill");
    let outcome = agent::adopt(adopt_spec(&sandbox, identity), never_cancelled()).await;
    assert_eq!(outcome.exit_code, None);
    assert!(outcome.succeeded(), "{outcome:?}");
    assert!(outcome.result.text.starts_with("You said: adopted"));
}

#[tokio::test]
async fn adopted_agent_past_its_timeout_is_stopped() {
    let sandbox = Sandbox::new();
    let identity = sandbox
        .spawn(&sandbox.spec("spawn-child hang"))
        .await
        .identity();
    let grandchild = grandchild_of(&sandbox).await;
    let mut spec = adopt_spec(&sandbox, identity);
    spec.timeout = Duration::from_millis(200);
    let outcome = agent::adopt(spec, never_cancelled()).await;
    assert!(outcome.timed_out && !outcome.succeeded());
    assert!(!proc_identity::is_alive(&identity));
    assert_dies(&grandchild).await;
}

#[tokio::test]
async fn adopted_agent_can_be_cancelled() {
    let sandbox = Sandbox::new();
    let identity = sandbox.spawn(&sandbox.spec("hang")).await.identity();
    let (cancel, cancelled) = watch::channel(true);
    let outcome = agent::adopt(adopt_spec(&sandbox, identity), cancelled).await;
    drop(cancel);
    assert!(outcome.cancelled);
    assert!(!proc_identity::is_alive(&identity));
}

#[tokio::test]
async fn kill_group_never_signals_a_process_with_another_start_time() {
    let sandbox = Sandbox::new();
    let running = sandbox.spawn(&sandbox.spec("hang")).await;
    let real = running.identity();
    let reused = ProcIdentity {
        start_time: real.start_time + 1,
        ..real
    };
    assert!(
        !proc_identity::is_alive(&reused),
        "another start time is not ours"
    );
    assert!(!agent::kill_group(&reused, GroupSignal::Kill));
    assert!(
        proc_identity::is_alive(&real),
        "the real process was left alone"
    );
    assert!(agent::kill_group(&real, GroupSignal::Kill));
    let outcome = running.wait(never_cancelled()).await;
    assert_eq!(outcome.signal, Some(libc::SIGKILL));
}

#[tokio::test]
async fn identity_of_an_exited_process_is_not_alive() {
    let sandbox = Sandbox::new();
    let running = sandbox.spawn(&sandbox.spec("hello")).await;
    let identity = running.identity();
    running.wait(never_cancelled()).await;
    assert!(!proc_identity::is_alive(&identity));
    assert!(!agent::kill_group(&identity, GroupSignal::Kill));
}

fn adopt_spec(sandbox: &Sandbox, identity: ProcIdentity) -> AdoptSpec {
    AdoptSpec {
        identity,
        run_dir: sandbox.run_dir(),
        poll: Duration::from_millis(20),
        timeout: PATIENCE,
        kill_grace: Duration::from_secs(2),
    }
}

/// This process's peak resident memory (VmHWM), where the platform tells it.
fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
