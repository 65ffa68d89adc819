//! Each (bot, user)'s chosen agent permission mode (`/mode`), kept apart from the
//! session so that `/new` keeps it. The value is the mode's name as Claude Code
//! spells it (`acceptEdits`); the configuration's mode applies where none is set.

use super::tables::USER_MODES;
use super::{Pending, Store, StoreResult};

impl Store {
    /// Sets (or, with `None`, clears) a user's permission mode.
    pub fn set_user_mode(&self, bot_id: &str, user_id: i64, mode: Option<String>) -> Pending<()> {
        let bot = bot_id.to_owned();
        self.write(move |tx| {
            let mut table = tx.open_table(USER_MODES)?;
            match &mode {
                Some(mode) => {
                    table.insert((bot.as_str(), user_id), mode.as_str())?;
                }
                None => {
                    table.remove((bot.as_str(), user_id))?;
                }
            }
            Ok(())
        })
    }

    /// A user's permission mode, if they chose one.
    pub fn user_mode(&self, bot_id: &str, user_id: i64) -> StoreResult<Option<String>> {
        self.read(|tx| {
            let table = match tx.open_table(USER_MODES) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(table.get((bot_id, user_id))?.map(|v| v.value().to_owned()))
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::{Store, StoreOptions};

    #[test]
    fn a_mode_is_kept_per_bot_and_user_until_cleared() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(&dir.path().join("agentlab.redb"), StoreOptions::default()).expect("open");
        assert_eq!(store.user_mode("B", 1).expect("read"), None);
        store
            .set_user_mode("B", 1, Some("plan".into()))
            .wait()
            .expect("set");
        assert_eq!(
            store.user_mode("B", 1).expect("read").as_deref(),
            Some("plan")
        );
        assert_eq!(store.user_mode("B", 2).expect("read"), None);
        assert_eq!(store.user_mode("C", 1).expect("read"), None);
        store.set_user_mode("B", 1, None).wait().expect("clear");
        assert_eq!(store.user_mode("B", 1).expect("read"), None);
    }
}
