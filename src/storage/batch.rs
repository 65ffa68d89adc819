//! The tables of one write transaction, shared by the jobs of a batch: each
//! table a task operation needs is opened once per commit, not once per job.
//!
//! redb opens a table by looking its name up in the transaction's table tree
//! and checking its types, and stages its new root when it is dropped. A task's
//! operations touch a dozen tables each, and the writer applies many of them
//! per commit, so the writer keeps every table it opened for the batch in
//! [`Tables`] until the batch is committed or aborted.
//!
//! Invariants: redb never sees a table opened twice — a job that works on the
//! transaction itself ([`Tables::tx`]) first closes every shared table, and the
//! accessors refuse (with an error, never a panic) a table already borrowed;
//! every table is closed before the transaction commits or aborts, since
//! [`Tables`] borrows the transaction.

use std::cell::{RefCell, RefMut};

use redb::{Key, Table, TableDefinition, TableHandle, Value, WriteTransaction};

use super::StoreResult;
use super::error::StoreError;
use super::tables::{
    ACTIVE_USERS, COSTS, EVENTS, MESSAGES, META, OUTBOX, PROJECT_MESSAGES, PROJECT_SESSIONS,
    SESSIONS, TASK_PROJECTS, TASK_QUEUE, TASK_STATUS, TASK_USER, TASKS, UPDATE_DEDUP,
};

/// One table, opened on first use.
struct Slot<'txn, K: Key + 'static, V: Value + 'static> {
    definition: TableDefinition<'static, K, V>,
    table: RefCell<Option<Table<'txn, K, V>>>,
}

impl<'txn, K: Key + 'static, V: Value + 'static> Slot<'txn, K, V> {
    fn new(definition: TableDefinition<'static, K, V>) -> Self {
        Slot {
            definition,
            table: RefCell::new(None),
        }
    }

    fn get(&self, tx: &'txn WriteTransaction) -> StoreResult<RefMut<'_, Table<'txn, K, V>>> {
        let mut slot = self.table.try_borrow_mut().map_err(|_| self.busy())?;
        if slot.is_none() {
            *slot = Some(tx.open_table(self.definition)?);
        }
        RefMut::filter_map(slot, Option::as_mut).map_err(|_| self.busy())
    }

    fn close(&self) -> StoreResult<()> {
        *self.table.try_borrow_mut().map_err(|_| self.busy())? = None;
        Ok(())
    }

    fn busy(&self) -> StoreError {
        StoreError::Internal(format!(
            "table {} is in use by the same job",
            self.definition.name()
        ))
    }
}

macro_rules! tables {
    ($($(#[$doc:meta])* $field:ident: $def:ident => $k:ty, $v:ty;)*) => {
        /// The tables of a write transaction, each opened once (see the module
        /// comment).
        pub(crate) struct Tables<'txn> {
            tx: &'txn WriteTransaction,
            $($field: Slot<'txn, $k, $v>,)*
        }

        impl<'txn> Tables<'txn> {
            pub(crate) fn new(tx: &'txn WriteTransaction) -> Self {
                Tables {
                    tx,
                    $($field: Slot::new($def),)*
                }
            }

            $(
                $(#[$doc])*
                pub(crate) fn $field(&self) -> StoreResult<RefMut<'_, Table<'txn, $k, $v>>> {
                    self.$field.get(self.tx)
                }
            )*

            /// The transaction itself, for a job that opens tables on its own:
            /// every shared table is closed first.
            pub(crate) fn tx(&self) -> StoreResult<&'txn WriteTransaction> {
                $(self.$field.close()?;)*
                Ok(self.tx)
            }
        }
    };
}

tables! {
    /// `tasks`.
    tasks: TASKS => u64, &'static [u8];
    /// `task_status`.
    status: TASK_STATUS => (u8, u64), ();
    /// `task_queue`.
    queue: TASK_QUEUE => (u8, u64, u64), ();
    /// `task_user`.
    users: TASK_USER => (&'static str, i64, u64), ();
    /// `active_users`.
    active: ACTIVE_USERS => (&'static str, i64), u64;
    /// `update_dedup`.
    dedup: UPDATE_DEDUP => (&'static str, i64), u64;
    /// `outbox`.
    outbox: OUTBOX => u64, ();
    /// `sessions`.
    sessions: SESSIONS => (&'static str, i64), &'static [u8];
    /// `messages`.
    messages: MESSAGES => (&'static str, i64, u64), &'static [u8];
    /// `costs`.
    costs: COSTS => (&'static str, u32), &'static [u8];
    /// `events`.
    events: EVENTS => (u64, u32), &'static [u8];
    /// `meta`.
    meta: META => &'static str, &'static [u8];
    /// `task_projects`.
    task_projects: TASK_PROJECTS => u64, &'static str;
    /// `project_sessions`.
    project_sessions: PROJECT_SESSIONS => (&'static str, i64, &'static str), &'static [u8];
    /// `project_messages`.
    project_messages: PROJECT_MESSAGES => (&'static str, i64, &'static str, u64), &'static [u8];
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableTable, ReadableTableMetadata};

    #[test]
    fn a_table_is_opened_once_and_closed_for_a_job_that_opens_it_itself() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("db")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let tables = Tables::new(&tx);
            tables.outbox().unwrap().insert(1, ()).unwrap();
            // A second use finds the same open table, with the first row.
            assert!(tables.outbox().unwrap().get(1).unwrap().is_some());
            // Twice at once is refused, not a panic.
            let held = tables.outbox().unwrap();
            assert!(matches!(tables.outbox(), Err(StoreError::Internal(_))));
            assert!(tables.tx().is_err());
            drop(held);
            // The raw transaction may open it once the shared one is closed.
            let raw = tables.tx().unwrap();
            raw.open_table(OUTBOX).unwrap().insert(2, ()).unwrap();
            assert_eq!(tables.outbox().unwrap().len().unwrap(), 2);
        }
        tx.commit().unwrap();
    }
}
