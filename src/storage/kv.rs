//! Small keyed records: meta values, restart state, breaker state, and the
//! journal sequence number the database has applied.

use redb::{ReadableTable, WriteTransaction};

use super::codec;
use super::error::StoreError;
use super::records::{BackupRecord, RestartState, StoredBreaker};
use super::tables::{BREAKERS, META, RESTART_STATE};
use super::{Pending, Store, StoreResult};

pub(super) const RESTART_KEY: &str = "pending";

fn restart_update_key(bot_id: &str) -> String {
    format!("restart_update:{bot_id}")
}

/// `"<update id> <unix ms>"`, as [`Store::set_restart_update_floor`] writes it
/// (text, so `dump` shows it as it is).
fn parse_floor(bytes: &[u8]) -> Option<(i64, u64)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (id, at) = text.split_once(' ')?;
    Some((id.parse().ok()?, at.parse().ok()?))
}
const META_LAST_BACKUP: &str = "last_backup";

impl Store {
    /// A raw meta value.
    pub fn get_meta(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.read(|tx| {
            let table = tx.open_table(META)?;
            let value = table.get(key)?;
            Ok(value.map(|v| v.value().to_vec()))
        })
    }

    /// Sets a raw meta value.
    pub fn put_meta(&self, key: &str, value: Vec<u8>) -> Pending<()> {
        let key = key.to_string();
        self.write(move |tx| {
            tx.open_table(META)?
                .insert(key.as_str(), value.as_slice())?;
            Ok(())
        })
    }

    /// The update id of the last `/restart` a bot acted on: a `/restart` with an
    /// id at or below it was re-delivered after the restart it asked for. Returns
    /// `(update id, when it was recorded in unix ms)`.
    pub fn restart_update_floor(&self, bot_id: &str) -> StoreResult<Option<(i64, u64)>> {
        Ok(self
            .get_meta(&restart_update_key(bot_id))?
            .and_then(|bytes| parse_floor(&bytes)))
    }

    /// Records the update id of a `/restart` about to be acted on (durably, before
    /// the restart, so its re-delivery is recognised whatever the clocks say).
    /// Never lowers a newer floor recorded meanwhile (admins in two chats).
    pub fn set_restart_update_floor(
        &self,
        bot_id: &str,
        update_id: i64,
        now_ms: u64,
    ) -> Pending<()> {
        let key = restart_update_key(bot_id);
        self.write(move |tx| {
            let mut table = tx.open_table(META)?;
            let current = table
                .get(key.as_str())?
                .and_then(|v| parse_floor(v.value()));
            if current.is_none_or(|(id, _)| id < update_id) {
                let value = format!("{update_id} {now_ms}");
                table.insert(key.as_str(), value.as_bytes())?;
            }
            Ok(())
        })
    }

    /// The last verified backup, if any.
    pub fn last_backup(&self) -> StoreResult<Option<BackupRecord>> {
        match self.get_meta(META_LAST_BACKUP)? {
            Some(bytes) => codec::decode(&bytes)
                .map(Some)
                .map_err(|e| StoreError::decode("meta", e)),
            None => Ok(None),
        }
    }

    /// Records a verified backup.
    pub fn record_backup(&self, record: BackupRecord) -> Pending<()> {
        self.put_meta(META_LAST_BACKUP, codec::encode(&record))
    }

    /// Records a requested restart (replacing any earlier one).
    pub fn set_restart_state(&self, state: RestartState) -> Pending<()> {
        self.write(move |tx| {
            tx.open_table(RESTART_STATE)?
                .insert(RESTART_KEY, codec::encode(&state).as_slice())?;
            Ok(())
        })
    }

    /// Takes the recorded restart state, removing it. An unreadable record is
    /// removed too and returned as `Err(why)`, so it is reported, never silently
    /// dropped, and can never block start-up twice.
    pub fn take_restart_state(&self) -> Pending<Option<Result<RestartState, String>>> {
        self.write(take_restart_tx)
    }

    /// The state of a breaker.
    pub fn get_breaker(
        &self,
        bot_id: &str,
        dependency: &str,
    ) -> StoreResult<Option<StoredBreaker>> {
        self.read(|tx| {
            let table = tx.open_table(BREAKERS)?;
            let value = table.get((bot_id, dependency))?;
            value
                .map(|v| codec::decode(v.value()).map_err(|e| StoreError::decode("breakers", e)))
                .transpose()
        })
    }

    /// Saves the state of a breaker.
    pub fn put_breaker(&self, bot_id: &str, dependency: &str, state: StoredBreaker) -> Pending<()> {
        let (bot, dep) = (bot_id.to_string(), dependency.to_string());
        self.write(move |tx| {
            tx.open_table(BREAKERS)?.insert(
                (bot.as_str(), dep.as_str()),
                codec::encode(&state).as_slice(),
            )?;
            Ok(())
        })
    }
}

fn take_restart_tx(tx: &WriteTransaction) -> StoreResult<Option<Result<RestartState, String>>> {
    let mut table = tx.open_table(RESTART_STATE)?;
    let Some(value) = table.remove(RESTART_KEY)? else {
        return Ok(None);
    };
    let decoded = codec::decode(value.value()).map_err(|e| e.to_string());
    Ok(Some(decoded))
}

/// Meta key: sequence number of the last journal record applied (decimal text),
/// written in the transaction that applies it (see [`super::journal`]).
const META_JOURNAL_SEQ: &str = "journal_seq";

pub(super) fn set_journal_seq(tx: &WriteTransaction, seq: u64) -> StoreResult<()> {
    set_journal_seq_in(&mut tx.open_table(META)?, seq)
}

/// [`set_journal_seq`] in the `meta` table a job holds.
pub(super) fn set_journal_seq_in(
    meta: &mut redb::Table<'_, &'static str, &'static [u8]>,
    seq: u64,
) -> StoreResult<()> {
    meta.insert(META_JOURNAL_SEQ, seq.to_string().as_bytes())?;
    Ok(())
}

pub(super) fn journal_seq(tx: &WriteTransaction) -> StoreResult<u64> {
    let meta = tx.open_table(META)?;
    let Some(value) = meta.get(META_JOURNAL_SEQ)? else {
        return Ok(0);
    };
    std::str::from_utf8(value.value())
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            StoreError::decode(
                "meta",
                codec::DecodeError::Malformed(format!("{META_JOURNAL_SEQ} is not a number")),
            )
        })
}
