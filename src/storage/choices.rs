//! Each (bot, user)'s standing choices, kept apart from the session so that
//! `/new` keeps them: the agent permission mode (`/mode`, the name as Claude Code
//! spells it, e.g. `acceptEdits`) and the agent model (`/model`, the name as the
//! configuration lists it). Projects (`/project`) use the same table shape, in
//! [`super::projects`].
//!
//! The caller decides whether a stored choice still applies (the mode or model
//! may be gone from the configuration); where none is set, the configuration's
//! applies.

use redb::TableDefinition;

use super::tables::{USER_MODELS, USER_MODES};
use super::{Pending, Store, StoreResult};

/// A table of one choice per (bot id, user id): the chosen name.
pub(super) type ChoiceTable = TableDefinition<'static, (&'static str, i64), &'static str>;

impl Store {
    /// Sets (or, with `None`, clears) a user's permission mode.
    pub fn set_user_mode(&self, bot_id: &str, user_id: i64, mode: Option<String>) -> Pending<()> {
        self.set_user_choice(USER_MODES, bot_id, user_id, mode)
    }

    /// A user's permission mode, if they chose one.
    pub fn user_mode(&self, bot_id: &str, user_id: i64) -> StoreResult<Option<String>> {
        self.user_choice(USER_MODES, bot_id, user_id)
    }

    /// Sets (or, with `None`, clears) a user's model.
    pub fn set_user_model(&self, bot_id: &str, user_id: i64, model: Option<String>) -> Pending<()> {
        self.set_user_choice(USER_MODELS, bot_id, user_id, model)
    }

    /// A user's model, if they chose one.
    pub fn user_model(&self, bot_id: &str, user_id: i64) -> StoreResult<Option<String>> {
        self.user_choice(USER_MODELS, bot_id, user_id)
    }

    /// Sets (or, with `None`, clears) a user's choice in `table`.
    pub(super) fn set_user_choice(
        &self,
        table: ChoiceTable,
        bot_id: &str,
        user_id: i64,
        choice: Option<String>,
    ) -> Pending<()> {
        let bot = bot_id.to_owned();
        self.write(move |tx| {
            let mut table = tx.open_table(table)?;
            match &choice {
                Some(choice) => {
                    table.insert((bot.as_str(), user_id), choice.as_str())?;
                }
                None => {
                    table.remove((bot.as_str(), user_id))?;
                }
            }
            Ok(())
        })
    }

    /// A user's choice in `table`, if they made one.
    pub(super) fn user_choice(
        &self,
        table: ChoiceTable,
        bot_id: &str,
        user_id: i64,
    ) -> StoreResult<Option<String>> {
        self.read(|tx| {
            let table = match tx.open_table(table) {
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

    #[test]
    fn a_model_is_kept_per_bot_and_user_until_cleared_and_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agentlab.redb");
        let store = Store::open(&path, StoreOptions::default()).expect("open");
        assert_eq!(store.user_model("B", 1).expect("read"), None);
        store
            .set_user_model("B", 1, Some("opus".into()))
            .wait()
            .expect("set");
        store
            .set_user_model("B", 2, Some("haiku".into()))
            .wait()
            .expect("set");
        store.reset_session("B", 1).wait().expect("reset");
        assert_eq!(
            store.user_model("B", 1).expect("read").as_deref(),
            Some("opus"),
            "a fresh session keeps the model"
        );
        assert_eq!(store.user_model("C", 1).expect("read"), None);
        store.close();
        drop(store);

        let store = Store::open(&path, StoreOptions::default()).expect("reopen");
        assert_eq!(
            store.user_model("B", 1).expect("read").as_deref(),
            Some("opus")
        );
        store.set_user_model("B", 1, None).wait().expect("clear");
        assert_eq!(store.user_model("B", 1).expect("read"), None);
        assert_eq!(
            store.user_model("B", 2).expect("read").as_deref(),
            Some("haiku")
        );
    }
}
