//! The service's heartbeat: the time of the newest monitor tick, kept in `meta`.
//!
//! It is buffered with the samples and written in the same transaction as each
//! series flush ([`super::series`]), so what is stored is the time of the newest
//! durably stored tick: after a crash, the next start knows the run lasted at
//! least until then and at most one flush interval longer.
//!
//! Invariant: the heartbeat never moves backwards within a run; reads see the
//! newest one of this run even before it is written.

use redb::WriteTransaction;

use super::tables::META;
use super::{Pending, Store, StoreResult};
use crate::storage::records::Sample;

const META_HEARTBEAT: &str = "monitor_heartbeat";

impl Store {
    /// Appends samples and sets the heartbeat to `now_ms`; both are written at the
    /// next series flush, together.
    pub fn append_samples_with_heartbeat(
        &self,
        batch: Vec<(String, Sample)>,
        now_ms: u64,
    ) -> Pending<usize> {
        self.append_buffered(batch, Some(now_ms))
    }

    /// The last heartbeat: this run's newest, else the stored one, unix ms.
    pub fn last_heartbeat(&self) -> StoreResult<Option<u64>> {
        let stored = self.read(|tx| {
            let table = tx.open_table(META)?;
            let value = table.get(META_HEARTBEAT)?;
            Ok(value.and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes)))
        })?;
        Ok(stored.max(self.buffered_heartbeat()))
    }
}

/// Stores the heartbeat (inside a series flush).
pub(super) fn store_heartbeat(tx: &WriteTransaction, at_ms: u64) -> StoreResult<()> {
    tx.open_table(META)?
        .insert(META_HEARTBEAT, at_ms.to_le_bytes().as_slice())?;
    Ok(())
}
