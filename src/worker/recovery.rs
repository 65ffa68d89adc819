//! Recovery at start: what to do with tasks the previous process left `running`.
//!
//! A task's agent is ours only if its pid is alive **and** its process start time
//! equals the recorded one (a reused pid is someone else's process). Ours are
//! adopted by the pool; the rest are finished from their output files when those
//! hold a complete result, or re-queued as interrupted while attempts remain.
//! A task started at the door on a warm process whose turn was never recorded
//! (the restart came before its prompt was written) goes back to its place in
//! the queue with its attempt given back, and its idle process is ended. Warm agent processes left idle (no running task names them)
//! are ended.

use super::pool::Pool;
use super::proc_identity::{self, ProcIdentity};
use crate::storage::{Store, StoreError, Task, TaskStatus};

/// What recovery found.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    /// Tasks whose agent still runs: the pool adopts them.
    pub adopt: Vec<Task>,
    /// Tasks settled from output files or re-queued.
    pub settled: usize,
}

/// Sorts the `running` tasks of the store into adopted and settled ones.
pub async fn recover_running_tasks(store: &Store, pool: &Pool) -> Result<Recovery, StoreError> {
    let mut recovery = Recovery::default();
    let warm = pool.warm_identities();
    for task in store.tasks_in_status(TaskStatus::Running)? {
        if pool.turn_never_began(&task, &warm) {
            tracing::info!(
                task_id = task.id,
                "a task started on a warm agent never gave it its prompt: back in the queue"
            );
            pool.requeue_unbegun(&task).await;
            recovery.settled += 1;
        } else if agent_still_ours(&task) {
            tracing::info!(
                task_id = task.id,
                pid = task.pid,
                "agent of a running task is alive: adopting it"
            );
            recovery.adopt.push(task);
        } else {
            tracing::info!(
                task_id = task.id,
                pid = task.pid,
                "agent of a running task is gone: settling it"
            );
            pool.settle_dead_run(&task).await;
            recovery.settled += 1;
        }
    }
    // Warm processes the previous process left idle hold no turn: end them.
    pool.sweep_orphan_warm(&recovery.adopt);
    Ok(recovery)
}

fn agent_still_ours(task: &Task) -> bool {
    match (task.pid, task.pid_start_time) {
        (Some(pid), Some(start_time)) => proc_identity::is_alive(&ProcIdentity { pid, start_time }),
        _ => false,
    }
}
