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
use agentlab::worker::proc_identity::ProcIdentity;
use serde_json::Value;

pub use agentlab_testkit::service::{
    ADMIN_TOKEN, BotSpec, Options, PATIENCE, Service, wait_until, wait_until_blocking,
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
