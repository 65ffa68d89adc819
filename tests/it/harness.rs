//! The integration tests' view of the harness: the service harness of
//! `agentlab-testkit` (the real `agentlab run` on a temporary directory and port
//! 0, against the Telegram Bot API simulator in the test process and the binary's
//! own test agent), plus what needs this crate: the store of a stopped service,
//! the binary cargo built for these tests, and the optional tools some tests drive.
//!
//! Everything between the simulator and the agent is the production code path.
//! Waits are on conditions with deadlines, never fixed sleeps. A test that fails
//! (panics) while it holds a [`Service`] prints the service's log.

#![allow(dead_code)]

use std::path::PathBuf;

use agentlab::storage::{Store, StoreOptions, Task, TaskFilter};
use agentlab::worker::proc_identity::{self, ProcIdentity};
use serde_json::Value;

pub use agentlab_testkit::service::{
    ADMIN_TOKEN, BotSpec, Options, PATIENCE, Service, processes_of, wait_until, wait_until_blocking,
};

/// The path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_agentlab")
}

/// The agent process that ran a task, from the task's `pid` and
/// `pid_start_time` (see [`Service::wait_running_with_pid`]).
pub fn agent_of(task: &Value) -> ProcIdentity {
    ProcIdentity {
        pid: task["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .expect("pid"),
        start_time: task["pid_start_time"].as_u64().expect("start time"),
    }
}

/// The store of a stopped service, opened directly.
pub trait StoreAccess {
    /// Opens the store directly (the service must be stopped).
    fn open_store(&self) -> Store;
    /// All tasks, through the store (the service must be stopped).
    fn all_tasks(&self) -> Vec<Task>;
}

impl StoreAccess for Service {
    fn open_store(&self) -> Store {
        Store::open(
            &self.data_dir().join("agentlab.redb"),
            StoreOptions::default(),
        )
        .expect("open store")
    }

    fn all_tasks(&self) -> Vec<Task> {
        let store = self.open_store();
        let tasks = store
            .list_tasks(&TaskFilter {
                limit: Some(100_000),
                ..Default::default()
            })
            .expect("list tasks");
        store.close();
        tasks
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

/// The harness runs the binary cargo built for these tests, found from outside
/// (the testkit cannot see `CARGO_BIN_EXE_agentlab`).
#[test]
fn the_harness_runs_the_binary_built_for_these_tests() {
    let found = Options::default().binary;
    let built = PathBuf::from(binary());
    assert_eq!(
        found.canonicalize().expect("the harness's binary exists"),
        built.canonicalize().expect("the built binary exists"),
    );
}

/// A service whose one project, `away`, works in `away` (outside the service's
/// directory), with an agent of task that sleeps there for ten minutes; returns
/// the service and that agent.
async fn service_with_an_agent_working_in(away: &std::path::Path) -> (Service, ProcIdentity) {
    let service = Service::start(Options {
        extra_toml: format!(
            "\n[[bots.projects]]\nname = \"away\"\nworkdir = {:?}\n",
            away.display().to_string()
        ),
        ..Options::default()
    })
    .await;
    let (status, created) = service
        .post(
            "/api/tasks",
            serde_json::json!({"bot_id": "BOT-001", "user_id": 111,
                               "prompt": "sleep:600 still here", "project": "away"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let task = service
        .wait_running_with_pid(created["id"].as_u64().expect("id"))
        .await;
    let agent = agent_of(&task);
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", agent.pid)).expect("the agent's cwd");
    assert!(
        cwd.starts_with(away.canonicalize().expect("canonical"))
            && !cwd.starts_with(service.dir.path().canonicalize().expect("canonical")),
        "the agent works outside the service's directory: {cwd:?}"
    );
    (service, agent)
}

/// A dropped service takes its agents with it, even one working outside its
/// directory, mid-task; another service's agent, in the same folder, goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_service_ends_its_agents_wherever_they_work_and_no_other() {
    let away = tempfile::tempdir().expect("a workdir outside the services");
    let (first, first_agent) = service_with_an_agent_working_in(away.path()).await;
    let (second, second_agent) = service_with_an_agent_working_in(away.path()).await;
    let marker = first.marker().to_owned();
    assert!(
        processes_of(&marker, None).contains(&(first_agent.pid as libc::pid_t)),
        "the agent inherits its service's marker"
    );

    drop(first);
    // A SIGKILLed process may take a moment to be gone.
    wait_until_blocking("the first service's agent ended", || {
        (!proc_identity::is_alive(&first_agent)).then_some(())
    });
    assert_eq!(processes_of(&marker, None), Vec::<libc::pid_t>::new());
    assert!(
        proc_identity::is_alive(&second_agent),
        "another service's agent is not touched"
    );

    drop(second);
    wait_until_blocking("the second service's agent ended", || {
        (!proc_identity::is_alive(&second_agent)).then_some(())
    });
}
