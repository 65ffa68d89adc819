//! Each (bot, user)'s chosen agent model (`/model`), kept apart from the session
//! so that `/new` keeps it. The value is the model's name as the configuration
//! lists it; the caller decides whether it is still offered (the configuration's
//! `model` applies where none is set or the name is no longer listed).

use super::tables::USER_MODELS;
use super::{Pending, Store, StoreResult};

impl Store {
    /// Sets (or, with `None`, clears) a user's model.
    pub fn set_user_model(&self, bot_id: &str, user_id: i64, model: Option<String>) -> Pending<()> {
        let bot = bot_id.to_owned();
        self.write(move |tx| {
            let mut table = tx.open_table(USER_MODELS)?;
            match &model {
                Some(model) => {
                    table.insert((bot.as_str(), user_id), model.as_str())?;
                }
                None => {
                    table.remove((bot.as_str(), user_id))?;
                }
            }
            Ok(())
        })
    }

    /// A user's model, if they chose one.
    pub fn user_model(&self, bot_id: &str, user_id: i64) -> StoreResult<Option<String>> {
        self.read(|tx| {
            let table = match tx.open_table(USER_MODELS) {
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
