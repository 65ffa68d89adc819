//! `agentlab migrate --from-json`, end to end through `run_migrate`: the
//! fixtures in `tests/fixtures/legacy/` imported into a store on a temporary
//! data directory, the way the CLI does it.

use std::path::{Path, PathBuf};

use agentlab::config::{BotConfig, Config};
use agentlab::legacy::{FileStatus, ImportSummary, run_migrate};
use agentlab::storage::{Store, StoreOptions, TableCount, TaskFilter, TaskSource, TaskStatus};

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/legacy")
        .join(case)
}

fn config_in(data_dir: &Path) -> Config {
    Config {
        data_dir: data_dir.to_path_buf(),
        bots: vec![BotConfig {
            id: "BOT-001".into(),
            allowed_users: vec![111_111_111],
            ..BotConfig::default()
        }],
        ..Config::default()
    }
}

/// Runs the CLI hook the way `main` will: on a runtime of its own. (Store::close
/// blocks, so the tests' own store handling stays outside any runtime.)
fn migrate(
    config: &Config,
    case: &str,
    dry_run: bool,
    bot: Option<&str>,
) -> anyhow::Result<ImportSummary> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run_migrate(
        config,
        &fixture(case),
        dry_run,
        bot.map(str::to_string),
    ))
}

fn open(config: &Config) -> Store {
    Store::open(&config.database_path(), StoreOptions::default()).expect("open store")
}

fn table_counts(config: &Config) -> Vec<TableCount> {
    let store = open(config);
    let counts = store.table_counts().expect("counts");
    store.close();
    counts
}

#[test]
fn good_fixture_imports_once_and_a_second_run_reports_already_imported() {
    let data = tempfile::tempdir().expect("tempdir");
    let config = config_in(data.path());

    let first = migrate(&config, "good", false, None).expect("import");
    assert_eq!(first.bot_id, "BOT-001", "the configuration's first bot");
    assert_eq!(
        (
            first.tasks.counts.imported,
            first.sessions.counts.imported,
            first.costs.counts.imported,
            first.restart.counts.imported,
            first.queued,
        ),
        (5, 3, 3, 1, 2)
    );
    let after_first = table_counts(&config);

    let second = migrate(&config, "good", false, None).expect("second import");
    assert_eq!(
        (
            second.tasks.counts.already_imported,
            second.sessions.counts.already_imported,
            second.costs.counts.already_imported,
            second.restart.counts.already_imported,
        ),
        (5, 3, 3, 1)
    );
    assert_eq!(
        second.tasks.counts.imported + second.sessions.counts.imported,
        0
    );
    let after_second = table_counts(&config);
    for (a, b) in after_first.iter().zip(&after_second) {
        if a.table != "events" {
            assert_eq!(a, b, "a second import changes nothing but the event log");
        }
    }
    let text = second.to_string();
    assert!(text.contains("already"), "{text}");

    let store = open(&config);
    let tasks = store
        .list_tasks(&TaskFilter {
            limit: Some(100),
            ..TaskFilter::default()
        })
        .expect("tasks");
    assert_eq!(tasks.len(), 5);
    assert!(
        tasks
            .iter()
            .all(|t| t.source == TaskSource::Legacy && t.bot_id == "BOT-001")
    );
    assert_eq!(store.queue_depth().expect("depth"), 2);
    assert_eq!(
        store
            .tasks_in_status(TaskStatus::Interrupted)
            .expect("interrupted")
            .len(),
        1
    );
    let restart = store.take_restart_state().wait().expect("restart");
    assert_eq!(
        restart.and_then(Result::ok).map(|r| r.requested_ms),
        Some(1_760_504_154_000),
        "seconds read as seconds"
    );
    store.close();
}

#[test]
fn malformed_file_is_an_error_with_position_and_writes_nothing() {
    let data = tempfile::tempdir().expect("tempdir");
    let config = config_in(data.path());
    let before = table_counts(&config);

    let err = migrate(&config, "malformed", false, None).expect_err("malformed JSON");
    let message = format!("{err:#}");
    assert!(message.contains("tasks.json:2:40"), "{message}");
    assert!(message.contains("nothing was imported"), "{message}");
    assert_eq!(
        table_counts(&config),
        before,
        "sessions.json was fine but is not imported either"
    );
}

#[test]
fn dry_run_writes_nothing_and_predicts_the_import() {
    let data = tempfile::tempdir().expect("tempdir");
    let config = config_in(data.path());

    let without_db = migrate(&config, "good", true, None).expect("dry run");
    assert!(
        !config.database_path().exists(),
        "a dry run creates no database"
    );
    assert!(without_db.store_note.is_some());
    assert!(without_db.to_string().contains("dry run: nothing written"));

    let before = table_counts(&config);
    let dry = migrate(&config, "good", true, None).expect("dry run");
    assert_eq!(table_counts(&config), before, "a dry run writes nothing");
    assert_eq!(dry.counts(), without_db.counts());

    let real = migrate(&config, "good", false, None).expect("import");
    assert_eq!(
        real.counts(),
        dry.counts(),
        "the dry run said what the import did"
    );
}

#[test]
fn wrong_types_and_empty_files_import_the_rest() {
    let data = tempfile::tempdir().expect("tempdir");
    let config = config_in(data.path());

    let summary = migrate(&config, "wrong_types", false, None).expect("import");
    assert_eq!(summary.tasks.counts.imported, 2);
    assert_eq!(summary.sessions.counts.imported, 1);
    assert_eq!(summary.costs.counts.imported, 2);
    assert_eq!(summary.skipped().count(), 13);
    assert_eq!(summary.implausible().count(), 1);
    assert!(matches!(summary.files[3].status, FileStatus::Unusable(_)));

    let empty = migrate(&config, "empty", false, None).expect("empty import");
    assert_eq!(empty.counts(), Default::default());
    let text = empty.to_string();
    assert!(text.contains("empty, nothing to import"), "{text}");
}

#[test]
fn import_refuses_while_the_service_holds_the_store() {
    let data = tempfile::tempdir().expect("tempdir");
    let config = config_in(data.path());
    let held = open(&config);
    // redb refuses a second open of the same file even within one process.
    let err = migrate(&config, "good", false, None).expect_err("store is held");
    let message = format!("{err:#}");
    assert!(message.contains("service is running"), "{message}");
    held.close();
}

#[test]
fn bot_must_be_configured() {
    let data = tempfile::tempdir().expect("tempdir");
    let config = config_in(data.path());
    let err = migrate(&config, "good", true, Some("OTHER")).expect_err("unknown bot");
    assert!(
        err.to_string().contains("not in the configuration"),
        "{err}"
    );
    let chosen = migrate(&config, "good", true, Some("BOT-001")).expect("configured bot");
    assert_eq!(chosen.bot_id, "BOT-001");
}

/// The database file and its journal, byte for byte.
fn file_bytes(config: &Config) -> (Vec<u8>, Option<Vec<u8>>) {
    let db = config.database_path();
    let mut journal = db.clone().into_os_string();
    journal.push(".journal");
    (
        std::fs::read(&db).expect("database bytes"),
        std::fs::read(journal).ok(),
    )
}

#[test]
fn a_dry_run_on_an_existing_store_leaves_its_file_byte_for_byte_unchanged() {
    let data = tempfile::tempdir().expect("tempdir");
    let config = config_in(data.path());
    open(&config).close();
    let fresh = file_bytes(&config);
    let dry = migrate(&config, "good", true, None).expect("dry run");
    assert!(file_bytes(&config) == fresh, "a dry run changed the file");
    assert!(dry.counts().tasks.imported > 0);

    let real = migrate(&config, "good", false, None).expect("import");
    assert_eq!(real.counts(), dry.counts());
    let imported = file_bytes(&config);
    let again = migrate(&config, "good", true, None).expect("second dry run");
    assert!(
        file_bytes(&config) == imported,
        "a dry run changed the file"
    );
    assert_eq!(again.counts().tasks.imported, 0);
    assert_eq!(
        again.counts().tasks.already_imported,
        real.counts().tasks.imported
    );

    // Nor does `migrate --dry-run` without `--from-json`.
    let report =
        agentlab::cli::migrate::dry_run_report(&config.database_path(), StoreOptions::default())
            .expect("report");
    assert!(report.contains("up to date"), "{report}");
    assert!(
        file_bytes(&config) == imported,
        "migrate --dry-run changed the file"
    );
}

#[test]
fn migrate_dry_run_without_a_database_creates_none() {
    let data = tempfile::tempdir().expect("tempdir");
    let config = config_in(data.path());
    let report =
        agentlab::cli::migrate::dry_run_report(&config.database_path(), StoreOptions::default())
            .expect("report");
    assert!(report.contains("no database yet"), "{report}");
    assert!(!config.database_path().exists());
}

#[test]
fn a_dry_run_refuses_while_the_service_holds_the_store() {
    let data = tempfile::tempdir().expect("tempdir");
    let config = config_in(data.path());
    let held = open(&config);
    let err = migrate(&config, "good", true, None).expect_err("store is held");
    let message = format!("{err:#}");
    assert!(message.contains("service is running"), "{message}");
    held.close();
}
