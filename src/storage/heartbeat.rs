//! The service's heartbeat: the time of the newest monitor sample, kept in `meta`
//! and written in the same relaxed transaction as the samples.
//!
//! Invariant: the heartbeat never moves backwards within a run, and it is at most
//! one relaxed-commit window (about a second) behind the newest stored sample, so
//! the next start can bound when a crashed run stopped.

use super::series::append_tx;
use super::tables::META;
use super::{Pending, Store, StoreResult};
use crate::storage::records::Sample;

const META_HEARTBEAT: &str = "monitor_heartbeat";

impl Store {
    /// Appends samples and sets the heartbeat to `now_ms`, in one relaxed commit.
    pub fn append_samples_with_heartbeat(
        &self,
        batch: Vec<(String, Sample)>,
        now_ms: u64,
    ) -> Pending<usize> {
        self.write_relaxed(move |tx| {
            let appended = append_tx(tx, &batch)?;
            tx.open_table(META)?
                .insert(META_HEARTBEAT, now_ms.to_le_bytes().as_slice())?;
            Ok(appended)
        })
    }

    /// The last heartbeat written, unix ms.
    pub fn last_heartbeat(&self) -> StoreResult<Option<u64>> {
        self.read(|tx| {
            let table = tx.open_table(META)?;
            let value = table.get(META_HEARTBEAT)?;
            Ok(value.and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes)))
        })
    }
}
