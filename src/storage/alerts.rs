//! Alerts: one record per firing of a rule, from pending to resolved.

use redb::ReadableTable;

use super::codec;
use super::error::StoreError;
use super::records::{Alert, AlertState};
use super::tables::{ALERTS, META};
use super::{Pending, Store, StoreResult};

const META_NEXT_ALERT_ID: &str = "next_alert_id";

impl Store {
    /// Inserts or updates an alert. An alert with id 0 gets the next free id, which
    /// is returned.
    pub fn upsert_alert(&self, alert: Alert) -> Pending<u64> {
        self.write(move |tx| {
            let mut alert = alert.clone();
            if alert.id == 0 {
                let mut meta = tx.open_table(META)?;
                let next = meta
                    .get(META_NEXT_ALERT_ID)?
                    .and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes))
                    .unwrap_or(1);
                meta.insert(META_NEXT_ALERT_ID, (next + 1).to_le_bytes().as_slice())?;
                alert.id = next;
            }
            tx.open_table(ALERTS)?
                .insert(alert.id, codec::encode(&alert).as_slice())?;
            Ok(alert.id)
        })
    }

    /// Alerts in a state (all when `None`), newest first, at most `limit`.
    pub fn list_alerts(&self, state: Option<AlertState>, limit: usize) -> StoreResult<Vec<Alert>> {
        self.read(|tx| {
            let table = tx.open_table(ALERTS)?;
            let mut out = Vec::new();
            for row in table.iter()?.rev() {
                if out.len() >= limit {
                    break;
                }
                let alert: Alert = codec::decode(row?.1.value())
                    .map_err(|e| StoreError::decode("alerts", e))?;
                if state.is_none_or(|s| s == alert.state) {
                    out.push(alert);
                }
            }
            Ok(out)
        })
    }

    /// Alerts not yet resolved (pending or firing).
    pub fn open_alerts(&self) -> StoreResult<Vec<Alert>> {
        Ok(self
            .list_alerts(None, 10_000)?
            .into_iter()
            .filter(|a| a.state != AlertState::Resolved)
            .collect())
    }
}
