//! Projects in the store: each (bot, user)'s chosen project (`/project`), kept
//! apart from the sessions so that `/new` keeps it, and the project of each task.
//!
//! Invariants: a task's project is written in the transaction that submits it and
//! never changes; a task without a row in `task_projects` (every task of the
//! `default` project, and every task stored before projects existed) belongs to
//! `default`. A chosen project is a name only: whether the bot still has it is
//! the caller's question (the configuration may have changed since).

use redb::ReadableTable;

use super::batch::Tables;

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
        let project = project.filter(|p| p != DEFAULT_PROJECT);
        self.set_user_choice(USER_PROJECTS, bot_id, user_id, project)
    }

    /// A user's chosen project; `default` when they chose none.
    pub fn user_project(&self, bot_id: &str, user_id: i64) -> StoreResult<String> {
        Ok(project_or_default(self.user_choice(
            USER_PROJECTS,
            bot_id,
            user_id,
        )?))
    }

    /// The project a task runs in.
    pub fn task_project(&self, task_id: u64) -> StoreResult<String> {
        self.read(|tx| task_project_in(tx, task_id))
    }
}

/// The project of a task, in a read transaction.
pub(super) fn task_project_in(tx: &redb::ReadTransaction, task_id: u64) -> StoreResult<String> {
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
}

fn project_or_default(project: Option<String>) -> String {
    project.unwrap_or_else(|| DEFAULT_PROJECT.to_owned())
}

/// The project of a task, inside a write transaction.
pub(super) fn task_project_tx(t: &Tables<'_>, task_id: u64) -> StoreResult<String> {
    let project = t
        .task_projects()?
        .get(task_id)?
        .map(|v| v.value().to_owned());
    Ok(project_or_default(project))
}

/// Records the project of a task being submitted (nothing for `default`).
pub(super) fn set_task_project_tx(t: &Tables<'_>, task_id: u64, project: &str) -> StoreResult<()> {
    if project != DEFAULT_PROJECT {
        t.task_projects()?.insert(task_id, project)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::storage::journal::Journal;
    use crate::storage::records::{NewTask, Session, TaskKind, TaskSource};
    use crate::storage::task_ops::{TaskFinish, TaskOp};
    use crate::storage::{Store, StoreOptions, codec, migrations, tables};

    fn new_task(prompt: &str) -> NewTask {
        NewTask {
            bot_id: "A".into(),
            user_id: 1,
            chat_id: 1,
            kind: TaskKind::Chat,
            source: TaskSource::Telegram,
            prompt: prompt.into(),
            priority: 5,
            max_attempts: 3,
            reply_to_message_id: None,
            update_id: None,
        }
    }

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(&dir.path().join("agentlab.redb"), StoreOptions::default()).expect("open");
        (dir, store)
    }

    /// Claims the next task and finishes it in agent session `session`.
    fn run(store: &Store, session: &str, now_ms: u64) -> (u64, String, Option<String>) {
        let claimed = store
            .claim_next_task(now_ms, vec![])
            .wait()
            .expect("claim")
            .expect("a task");
        let finish = TaskFinish {
            status: Some(crate::storage::TaskStatus::Succeeded),
            result: Some(format!("answer in {session}")),
            session_id: Some(session.into()),
            ..TaskFinish::default()
        };
        store
            .finish_task(claimed.task.id, finish, now_ms + 1)
            .wait()
            .expect("finish");
        (claimed.task.id, claimed.project, claimed.session_id)
    }

    #[test]
    fn a_project_is_kept_per_bot_and_user_and_default_when_unset() {
        let (_dir, store) = temp_store();
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

    #[test]
    fn each_project_resumes_its_own_session_and_history_and_new_resets_only_one() {
        let (dir, store) = temp_store();
        store
            .submit_prompt(new_task("in default"), 1_000)
            .wait()
            .expect("submit");
        let (first, project, resumed) = run(&store, "s-default", 1_100);
        assert_eq!((project.as_str(), resumed), ("default", None));
        store
            .submit_prompt_in_project(new_task("in api"), "api", 2_000)
            .wait()
            .expect("submit");
        let (second, project, resumed) = run(&store, "s-api", 2_100);
        assert_eq!(
            (project.as_str(), resumed),
            ("api", None),
            "a project's first prompt starts a session of its own"
        );
        assert_eq!(store.task_project(first).expect("project"), "default");
        assert_eq!(store.task_project(second).expect("project"), "api");

        store
            .submit_prompt(new_task("back"), 3_000)
            .wait()
            .expect("submit");
        let (_, _, resumed) = run(&store, "s-default", 3_100);
        assert_eq!(resumed.as_deref(), Some("s-default"));
        store
            .submit_task_in_project(new_task("api again"), "api", 4_000)
            .wait()
            .expect("submit");
        let (_, _, resumed) = run(&store, "s-api", 4_100);
        assert_eq!(resumed.as_deref(), Some("s-api"));

        let texts = |project: &str| -> Vec<String> {
            store
                .project_history("A", 1, project, 100)
                .expect("history")
                .into_iter()
                .map(|m| m.text)
                .collect()
        };
        assert_eq!(
            texts("default"),
            [
                "in default",
                "answer in s-default",
                "back",
                "answer in s-default"
            ]
        );
        assert_eq!(
            texts("api"),
            ["in api", "answer in s-api", "answer in s-api"]
        );
        assert_eq!(
            texts("default"),
            store
                .history("A", 1, 100)
                .expect("history")
                .into_iter()
                .map(|m| m.text)
                .collect::<Vec<_>>()
        );

        // /new in api: api starts afresh, default keeps its session and history.
        assert!(
            store
                .reset_project_session("A", 1, "api")
                .wait()
                .expect("reset")
        );
        assert_eq!(
            store.get_project_session("A", 1, "api").expect("read"),
            None
        );
        assert!(texts("api").is_empty());
        assert_eq!(
            store
                .get_session("A", 1)
                .expect("read")
                .and_then(|s| s.agent_session_id)
                .as_deref(),
            Some("s-default")
        );
        assert_eq!(texts("default").len(), 4);

        // A retry runs in the project of the task it retries.
        let retried = store.retry_task(second, 3, 5_000).wait().expect("retry");
        assert_eq!(store.task_project(retried.id).expect("project"), "api");

        // A snapshot (a backup) keeps all of it.
        store
            .set_user_project("A", 1, Some("api".into()))
            .wait()
            .expect("choose");
        let copy = dir.path().join("snapshot.redb");
        store.snapshot_to(&copy).expect("snapshot");
        let restored = Store::open(&copy, StoreOptions::default()).expect("open the copy");
        assert_eq!(restored.task_project(retried.id).expect("project"), "api");
        assert_eq!(restored.user_project("A", 1).expect("choice"), "api");
        store
            .submit_prompt_in_project(new_task("after /new"), "api", 6_000)
            .wait()
            .expect("submit");
        run(&store, "s-api-2", 6_100);
        let copy = dir.path().join("snapshot-2.redb");
        store.snapshot_to(&copy).expect("snapshot");
        let restored = Store::open(&copy, StoreOptions::default()).expect("open the copy");
        assert_eq!(
            restored
                .get_project_session("A", 1, "api")
                .expect("session")
                .and_then(|s| s.agent_session_id)
                .as_deref(),
            Some("s-api-2")
        );
        assert_eq!(
            restored
                .project_history("A", 1, "api", 10)
                .expect("history")
                .len(),
            2
        );
    }

    /// A journal record as every build since schema 4 writes a `Submit` of this
    /// task: pinned, so a change of its layout (which would make journals left
    /// by older builds unreadable) fails here.
    const SUBMIT_RECORD_HEX: &str = "0101000141020200000b66726f6d20736368656d6105030000e807";

    #[test]
    fn a_schema_4_store_and_its_journal_open_replay_and_belong_to_the_default_project() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agentlab.redb");
        {
            // The file as a schema-4 build left it: a session of (A, 1) ...
            let db = redb::Database::create(&path).expect("create");
            migrations::apply_up_to(&db, 4).expect("schema 4");
            let tx = db.begin_write().expect("tx");
            let session = Session {
                agent_session_id: Some("s-old".into()),
                created_ms: 1,
                last_active_ms: 1,
                message_count: 1,
                workdir: String::new(),
                extra: None,
            };
            tx.open_table(tables::SESSIONS)
                .expect("sessions")
                .insert(("A", 1), codec::encode(&session).as_slice())
                .expect("insert");
            tx.commit().expect("commit");
        }
        // ... and a journal it did not checkpoint: a submission and a prompt.
        let submit = TaskOp::Submit {
            new: new_task("from schema"),
            now_ms: 1_000,
        }
        .record();
        assert_eq!(hex(&submit), SUBMIT_RECORD_HEX);
        let prompt = TaskOp::SubmitPrompt {
            new: new_task("old prompt"),
            now_ms: 2_000,
            history: 100,
        }
        .record();
        {
            let (mut journal, records) = Journal::open(&Journal::path_for(&path)).expect("journal");
            assert!(records.is_empty());
            journal
                .append(1, &[submit.as_slice(), prompt.as_slice()])
                .expect("append");
        }

        let store = Store::open(&path, StoreOptions::default()).expect("open");
        assert_eq!(store.replayed_at_open(), 2);
        assert_eq!(
            store.schema_version().expect("version"),
            Store::latest_schema_version()
        );
        let (first, project, resumed) = run(&store, "s-old", 3_000);
        assert_eq!(project, "default");
        assert_eq!(resumed.as_deref(), Some("s-old"), "the old session resumes");
        assert_eq!(store.task_project(first).expect("project"), "default");
        let (_, project, _) = run(&store, "s-old", 4_000);
        assert_eq!(project, "default");
        let history: Vec<String> = store
            .history("A", 1, 10)
            .expect("history")
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(
            history,
            ["old prompt", "answer in s-old", "answer in s-old"]
        );
    }

    #[test]
    fn a_submission_in_a_project_is_redone_from_the_journal_in_that_project() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agentlab.redb");
        Store::open(&path, StoreOptions::default())
            .expect("create")
            .close();
        let op = TaskOp::SubmitPromptInProject {
            new: new_task("in api"),
            project: "api".into(),
            now_ms: 1_000,
            history: 100,
        };
        let record = op.record();
        assert_eq!(TaskOp::from_record(&record).expect("decodes"), op);
        {
            let (mut journal, _) = Journal::open(&Journal::path_for(&path)).expect("journal");
            journal.append(1, &[record.as_slice()]).expect("append");
        }
        let store = Store::open(&path, StoreOptions::default()).expect("open");
        assert_eq!(store.replayed_at_open(), 1);
        let (id, project, _) = run(&store, "s-api", 2_000);
        assert_eq!(
            (store.task_project(id).expect("project"), project.as_str()),
            ("api".to_owned(), "api")
        );
        assert_eq!(
            store
                .project_history("A", 1, "api", 10)
                .expect("history")
                .len(),
            2
        );
        assert!(store.history("A", 1, 10).expect("history").is_empty());
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
