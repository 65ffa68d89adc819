//! Schema 5: projects. A task of a project other than `default` runs in that
//! project's workdir and resumes that project's session, recorded in tables of
//! their own; the `default` project's data stays where it always was.
//!
//! The version bump is the point: a build of schema 4 would ignore a task's
//! project and run it in the bot's default workdir, resuming the wrong session, so
//! it must refuse this file.

use redb::WriteTransaction;

use crate::storage::error::StoreError;
use crate::storage::tables::{PROJECT_MESSAGES, PROJECT_SESSIONS, TASK_PROJECTS, USER_PROJECTS};

/// Creates the project tables.
pub(super) fn apply(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(USER_PROJECTS)?;
    tx.open_table(TASK_PROJECTS)?;
    tx.open_table(PROJECT_SESSIONS)?;
    tx.open_table(PROJECT_MESSAGES)?;
    Ok(())
}
