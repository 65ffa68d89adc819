//! Projects in the store: each (bot, user)'s chosen project (`/project`), kept
//! apart from the sessions so that `/new` keeps it, and the project of each task.
//!
//! Invariants: a task's project is written in the transaction that submits it and
//! never changes; a task without a row in `task_projects` (every task of the
//! `default` project, and every task stored before projects existed) belongs to
//! `default`. A chosen project is a name only: whether the bot still has it is
//! the caller's question (the configuration may have changed since).

use redb::{ReadableTable, WriteTransaction};

use super::tables::{TASK_PROJECTS, USER_PROJECTS};
use super::{Pending, Store, StoreResult};

/// The project of a bot's own `workdir`, and of every task that names none.
pub const DEFAULT_PROJECT: &str = "default";

impl Store {
    /// Sets (or, with `None`, clears: back to `default`) a user's project.
    pub fn set_user_project(
        &self,
        bot_id: &str,
        user_id: i64,
        project: Option<String>,
    ) -> Pending<()> {
        let bot = bot_id.to_owned();
        self.write(move |tx| {
            let mut table = tx.open_table(USER_PROJECTS)?;
            match project.as_deref() {
                Some(project) if project != DEFAULT_PROJECT => {
                    table.insert((bot.as_str(), user_id), project)?;
                }
                _ => {
                    table.remove((bot.as_str(), user_id))?;
                }
            }
            Ok(())
        })
    }

    /// A user's chosen project; `default` when they chose none.
    pub fn user_project(&self, bot_id: &str, user_id: i64) -> StoreResult<String> {
        self.read(|tx| {
            let table = match tx.open_table(USER_PROJECTS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => {
                    return Ok(DEFAULT_PROJECT.to_owned());
                }
                Err(e) => return Err(e.into()),
            };
            Ok(table
                .get((bot_id, user_id))?
                .map_or_else(|| DEFAULT_PROJECT.to_owned(), |v| v.value().to_owned()))
        })
    }

    /// The project a task runs in.
    pub fn task_project(&self, task_id: u64) -> StoreResult<String> {
        self.read(|tx| {
            let table = match tx.open_table(TASK_PROJECTS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => {
                    return Ok(DEFAULT_PROJECT.to_owned());
                }
                Err(e) => return Err(e.into()),
            };
            Ok(project_or_default(
                table.get(task_id)?.map(|v| v.value().to_owned()),
            ))
        })
    }
}

fn project_or_default(project: Option<String>) -> String {
    project.unwrap_or_else(|| DEFAULT_PROJECT.to_owned())
}

/// The project of a task, inside a write transaction.
pub(super) fn task_project_tx(tx: &WriteTransaction, task_id: u64) -> StoreResult<String> {
    let table = tx.open_table(TASK_PROJECTS)?;
    let project = table.get(task_id)?.map(|v| v.value().to_owned());
    Ok(project_or_default(project))
}

/// Records the project of a task being submitted (nothing for `default`).
pub(super) fn set_task_project_tx(
    tx: &WriteTransaction,
    task_id: u64,
    project: &str,
) -> StoreResult<()> {
    if project != DEFAULT_PROJECT {
        tx.open_table(TASK_PROJECTS)?.insert(task_id, project)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::storage::{Store, StoreOptions};

    #[test]
    fn a_project_is_kept_per_bot_and_user_and_default_when_unset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(&dir.path().join("agentlab.redb"), StoreOptions::default()).expect("open");
        assert_eq!(store.user_project("B", 1).expect("read"), "default");
        store
            .set_user_project("B", 1, Some("api".into()))
            .wait()
            .expect("set");
        assert_eq!(store.user_project("B", 1).expect("read"), "api");
        assert_eq!(store.user_project("B", 2).expect("read"), "default");
        assert_eq!(store.user_project("C", 1).expect("read"), "default");
        store
            .set_user_project("B", 1, Some("default".into()))
            .wait()
            .expect("back to default");
        assert_eq!(store.user_project("B", 1).expect("read"), "default");
    }
}
