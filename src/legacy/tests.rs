//! Unit tests of the legacy import: the fixtures in `tests/fixtures/legacy/`, the
//! timestamp normaliser, and the store operation on temporary files.

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::storage::{KindCounts, Session, TableCount, TaskStatus};

/// 2025-11-01T00:00:00Z: the fixtures' "now".
const NOW: u64 = 1_761_955_200_000;
/// The restart the old bot misread: seconds, 2025-10-15T04:55:54Z.
const FAMOUS_S: i64 = 1_760_504_154;
const FAMOUS_MS: u64 = 1_760_504_154_000;

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/legacy")
        .join(case)
}

fn opts() -> ParseOptions {
    ParseOptions {
        bot_id: "BOT-1".into(),
        now_ms: NOW,
        max_attempts: 3,
        show_progress: false,
    }
}

fn parse(case: &str) -> ParsedLegacy {
    parse_dir(&fixture(case), &opts()).expect("fixture parses")
}

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        Store::open(&dir.path().join("agentlab.redb"), StoreOptions::default()).expect("open");
    (dir, store)
}

fn counts(imported: u64, already_imported: u64, kept_existing: u64) -> KindCounts {
    KindCounts {
        imported,
        already_imported,
        kept_existing,
    }
}

fn task<'a>(parsed: &'a ParsedLegacy, legacy_id: &str) -> &'a crate::storage::Task {
    &parsed
        .batch
        .tasks
        .iter()
        .find(|t| t.legacy_id == legacy_id)
        .unwrap_or_else(|| panic!("task {legacy_id} imported"))
        .task
}

fn extra(json: &Option<String>) -> Value {
    serde_json::from_str(json.as_deref().expect("extra present")).expect("extra is JSON")
}

fn rows(counts: &[TableCount], table: &str) -> u64 {
    counts
        .iter()
        .find(|c| c.table == table)
        .map_or(0, |c| c.rows)
}

// --- the timestamp normaliser ---

#[test]
fn restart_timestamp_in_seconds_is_read_as_seconds_not_milliseconds() {
    assert_eq!(timestamp::to_unix_ms(&json!(FAMOUS_S), NOW), Ok(FAMOUS_MS));
    assert_eq!(timestamp::to_unix_ms(&json!(FAMOUS_MS), NOW), Ok(FAMOUS_MS));
    assert_eq!(
        timestamp::to_unix_ms(&json!("1760504154"), NOW),
        Ok(FAMOUS_MS)
    );
    assert_eq!(
        timestamp::to_unix_ms(&json!(1_760_504_154.25), NOW),
        Ok(FAMOUS_MS + 250)
    );
    assert_eq!(
        timestamp::to_unix_ms(&json!("2025-10-15T04:55:54Z"), NOW),
        Ok(FAMOUS_MS)
    );
    assert_eq!(
        timestamp::to_unix_ms(&json!("2025-10-15 06:55:54+02:00"), NOW),
        Ok(FAMOUS_MS)
    );
    assert_eq!(
        timestamp::to_unix_ms(&json!("2025-10-15 04:55:54 UTC"), NOW),
        Ok(FAMOUS_MS)
    );
}

#[test]
fn implausible_timestamps_say_why() {
    assert!(matches!(
        timestamp::to_unix_ms(&json!(0), NOW),
        Err(timestamp::TimestampError::TooOld(_))
    ));
    assert!(matches!(
        timestamp::to_unix_ms(&json!("2090-01-01"), NOW),
        Err(timestamp::TimestampError::InFuture(_))
    ));
    assert_eq!(
        timestamp::to_unix_ms(&json!("soon"), NOW),
        Err(timestamp::TimestampError::NotATimestamp)
    );
    assert_eq!(
        timestamp::to_unix_ms(&json!(null), NOW),
        Err(timestamp::TimestampError::NotATimestamp)
    );
    assert_eq!(
        timestamp::normalise_str("NaN"),
        Err(timestamp::TimestampError::NotATimestamp)
    );
    assert_eq!(
        timestamp::normalise_str("1e300"),
        Err(timestamp::TimestampError::OutOfRange)
    );
}

#[test]
fn cost_day_keys_in_every_spelling() {
    assert_eq!(timestamp::parse_day("2025-10-14"), Some(20_251_014));
    assert_eq!(timestamp::parse_day("2025/10/14"), Some(20_251_014));
    assert_eq!(timestamp::parse_day("20251014"), Some(20_251_014));
    assert_eq!(
        timestamp::parse_day("2025-10-14T23:30:00-02:00"),
        Some(20_251_015)
    );
    assert_eq!(timestamp::parse_day("123456789"), None);
    assert_eq!(timestamp::parse_day("2025-13-01"), None);
}

proptest! {
    #[test]
    fn normaliser_never_panics_on_integers(n in any::<i64>()) {
        let _ = timestamp::to_unix_ms(&json!(n), NOW);
        let _ = timestamp::normalise_str(&n.to_string());
    }

    #[test]
    fn normaliser_never_panics_on_floats(f in any::<f64>()) {
        let _ = timestamp::from_float(f);
        let _ = timestamp::normalise_str(&f.to_string());
        if let Some(n) = serde_json::Number::from_f64(f) {
            let _ = timestamp::to_unix_ms(&Value::Number(n), NOW);
        }
    }

    #[test]
    fn normaliser_never_panics_on_strings(s in ".{0,40}") {
        let _ = timestamp::normalise_str(&s);
        let _ = timestamp::parse_day(&s);
    }

    #[test]
    fn seconds_millis_iso_and_float_forms_of_one_instant_agree(
        ms in timestamp::PLAUSIBLE_FROM_MS..4_102_444_800_000i64 // 2000..2100
    ) {
        let whole_s = ms.div_euclid(1000);
        let iso = timestamp::iso(ms);
        prop_assert_eq!(timestamp::normalise(&json!(ms)), Ok(ms));
        prop_assert_eq!(timestamp::normalise(&json!(ms.to_string())), Ok(ms));
        prop_assert_eq!(timestamp::normalise(&json!(iso)), Ok(ms));
        prop_assert_eq!(timestamp::normalise(&json!(iso.trim_end_matches('Z'))), Ok(ms));
        prop_assert_eq!(timestamp::normalise(&json!(iso.replace('T', " "))), Ok(ms));
        prop_assert_eq!(timestamp::normalise(&json!(ms * 1000)), Ok(ms));
        prop_assert_eq!(timestamp::normalise(&json!(whole_s)), Ok(whole_s * 1000));
        prop_assert_eq!(timestamp::normalise(&json!(whole_s.to_string())), Ok(whole_s * 1000));
        prop_assert_eq!(timestamp::normalise(&json!(ms as f64 / 1000.0)), Ok(ms));
    }
}

// --- parsing the fixtures ---

#[test]
fn restart_seconds_fixture_gives_the_right_instant() {
    let parsed = parse("restart_seconds");
    let restart = parsed.batch.restart.as_ref().expect("restart imported");
    assert_eq!(restart.state.requested_ms, FAMOUS_MS);
    assert_eq!(restart.state.chat_id, Some(111_111_111));
    assert_eq!(restart.state.message_id, Some(55));
    assert_eq!(restart.state.reason, "/restart");
    assert_eq!(restart.state.bot_id.as_deref(), Some("BOT-1"));
    let summary = parsed.summary(parsed.batch.preview_into_empty_store(), true, None);
    assert_eq!(summary.implausible().count(), 0);
    let statuses: Vec<_> = summary.files.iter().map(|f| f.status.clone()).collect();
    assert_eq!(
        statuses,
        [
            FileStatus::Missing,
            FileStatus::Missing,
            FileStatus::Missing,
            FileStatus::Read(1)
        ]
    );
}

#[test]
fn good_fixture_maps_every_record() {
    let parsed = parse("good");
    let b = &parsed.batch;
    assert_eq!((b.tasks.len(), b.sessions.len(), b.costs.len()), (5, 3, 3));
    assert_eq!(
        b.restart.as_ref().map(|r| r.state.requested_ms),
        Some(FAMOUS_MS)
    );

    let done = task(&parsed, "t-001");
    assert_eq!(done.status, TaskStatus::Succeeded);
    assert_eq!(
        (done.created_ms, done.finished_ms),
        (1_760_400_000_000, Some(1_760_400_120_500))
    );
    assert_eq!(
        (done.cost_usd, done.session_id.as_deref()),
        (0.42, Some("sess-aaa"))
    );
    let failed = task(&parsed, "t-002");
    assert_eq!(
        (failed.status, failed.user_id, failed.chat_id),
        (TaskStatus::Failed, 222_222_222, 222_222_222)
    );
    assert_eq!(failed.error.as_deref(), Some("agent exited 1"));
    assert_eq!(task(&parsed, "t-003").status, TaskStatus::Cancelled);
    let pending = task(&parsed, "t-004");
    assert_eq!(
        (pending.status, pending.priority, pending.enqueued_ms),
        (TaskStatus::Queued, 3, 1_760_500_000_000)
    );
    let running = task(&parsed, "t-005");
    assert_eq!(
        (running.status, running.attempts, running.max_attempts),
        (TaskStatus::Interrupted, 1, 3)
    );
    let kept = extra(&running.extra);
    assert_eq!(kept["pid"], json!(4242));
    assert_eq!(kept["model"], json!("sonnet"));
    assert_eq!(kept["legacy_id"], json!("t-005"));
    assert_eq!(kept["legacy_status"], json!("in_progress"));

    let by_user = |u: i64| {
        &b.sessions
            .iter()
            .find(|s| s.user_id == u)
            .expect("session")
            .session
    };
    let first = by_user(111_111_111);
    assert_eq!(first.agent_session_id.as_deref(), Some("sess-aaa"));
    assert_eq!(
        (first.created_ms, first.last_active_ms, first.message_count),
        (1_759_312_800_000, 1_760_000_000_000, 12)
    );
    assert_eq!(first.workdir, "/home/me/project");
    assert_eq!(extra(&first.extra), json!({"model": "opus"}));
    assert_eq!(
        by_user(222_222_222).agent_session_id.as_deref(),
        Some("sess-bbb")
    );
    let third = by_user(333_333_333);
    assert_eq!(
        (third.message_count, third.created_ms),
        (2, 1_759_300_000_000)
    );
    assert_eq!(
        extra(&third.extra)["messages"].as_array().map(Vec::len),
        Some(2)
    );

    let days: Vec<_> = b
        .costs
        .iter()
        .map(|c| (c.day, c.cost.usd, c.cost.tasks))
        .collect();
    assert_eq!(
        days,
        [
            (20_251_013, 1.25, 0),
            (20_251_014, 2.5, 4),
            (20_251_015, 0.75, 0)
        ]
    );
    let summary = parsed.summary(b.preview_into_empty_store(), true, None);
    assert_eq!(summary.skipped().count(), 0);
    assert_eq!(summary.implausible().count(), 0);
    assert!(
        summary.files[2].notes.iter().any(|n| n.contains("total")),
        "{:?}",
        summary.files[2].notes
    );
}

#[test]
fn arrays_and_wrappers_are_read_like_keyed_objects() {
    let parsed = parse("arrays");
    let b = &parsed.batch;
    assert_eq!((b.tasks.len(), b.sessions.len(), b.costs.len()), (3, 2, 2));
    let ids: Vec<_> = b.tasks.iter().map(|t| t.legacy_id.as_str()).collect();
    assert_eq!(&ids[..2], ["1", "x2"]);
    assert!(
        ids[2].starts_with('h') && ids[2].len() == 17,
        "content id {}",
        ids[2]
    );
    assert_eq!(b.sessions[1].user_id, 222);
    let days: Vec<_> = b.costs.iter().map(|c| (c.day, c.cost.usd)).collect();
    assert_eq!(days, [(20_251_014, 1.5), (20_251_015, 0.25)]);
    assert_eq!(b.restart.as_ref().and_then(|r| r.state.chat_id), Some(2));
    let summary = parsed.summary(b.preview_into_empty_store(), true, None);
    assert_eq!(summary.restart.records, 2);
    assert_eq!(summary.restart.skipped, 1);
    assert_eq!(summary.costs.records, 3);
    assert_eq!(summary.queued, 1);
    assert!(summary.files[0].notes.iter().any(|n| n.contains("version")));
}

#[test]
fn mixed_timestamp_formats_agree_and_implausible_ones_are_reported() {
    let parsed = parse("mixed_timestamps");
    assert_eq!(parsed.batch.tasks.len(), 17, "every record is imported");
    for (id, ms) in [
        ("s-int", FAMOUS_MS),
        ("s-float", FAMOUS_MS + 250),
        ("ms", FAMOUS_MS),
        ("us", FAMOUS_MS),
        ("iso-z", FAMOUS_MS),
        ("iso-frac", FAMOUS_MS + 250),
        ("iso-naive", FAMOUS_MS),
        ("iso-space", FAMOUS_MS + 250),
        ("iso-offset", FAMOUS_MS),
        ("iso-offset-nocolon", FAMOUS_MS),
        ("numeric-string", FAMOUS_MS),
        ("started-bad", FAMOUS_MS),
        ("zero", 0),
        ("tiny", 0),
        ("future", 0),
        ("words", 0),
        ("bool", 0),
    ] {
        assert_eq!(task(&parsed, id).created_ms, ms, "{id}");
    }
    assert_eq!(task(&parsed, "started-bad").started_ms, None);
    assert_eq!(
        extra(&task(&parsed, "tiny").extra)["created_at"],
        json!(123)
    );
    let summary = parsed.summary(parsed.batch.preview_into_empty_store(), true, None);
    let reported: Vec<_> = summary
        .implausible()
        .map(|t| (t.record.as_str(), t.field.as_str(), t.raw.as_str()))
        .collect();
    assert_eq!(
        reported,
        [
            ("[11]", "created_at", "0"),
            ("[12]", "created_at", "123"),
            ("[13]", "created_at", "\"2090-01-01T00:00:00Z\""),
            ("[14]", "created_at", "\"yesterday\""),
            ("[15]", "created_at", "true"),
            ("[16]", "started_at", "-5"),
        ]
    );
    assert!(
        summary
            .to_string()
            .contains("tasks.json [12] `created_at` = 123"),
        "{summary}"
    );
}

#[test]
fn wrong_types_skip_the_record_not_the_import() {
    let parsed = parse("wrong_types");
    let summary = parsed.summary(parsed.batch.preview_into_empty_store(), true, None);
    assert_eq!(
        (
            summary.tasks.records,
            summary.tasks.skipped,
            summary.tasks.counts.imported
        ),
        (8, 6, 2)
    );
    assert_eq!(
        (
            summary.sessions.records,
            summary.sessions.skipped,
            summary.sessions.counts.imported
        ),
        (5, 4, 1)
    );
    assert_eq!(
        (
            summary.costs.records,
            summary.costs.skipped,
            summary.costs.counts.imported
        ),
        (3, 3, 2)
    );
    assert_eq!(summary.implausible().count(), 1, "the 1999 cost day");
    assert!(matches!(summary.files[3].status, FileStatus::Unusable(_)));
    let skipped: Vec<_> = summary
        .skipped()
        .map(|s| format!("{} {}", s.file, s.record))
        .collect();
    assert_eq!(
        skipped,
        [
            "sessions.json [1]",
            "sessions.json [2]",
            "sessions.json [3]",
            "sessions.json [4]",
            "tasks.json arr",
            "tasks.json baduser",
            "tasks.json noprompt",
            "tasks.json nouser",
            "tasks.json num",
            "tasks.json str",
            "costs.json 2025-10-14",
            "costs.json 2025-10-15",
            "costs.json hello",
        ]
    );
    let weird = task(&parsed, "weird");
    assert_eq!(
        weird.status,
        TaskStatus::Failed,
        "an unknown status never runs"
    );
    let day = |d: u32| {
        parsed
            .batch
            .costs
            .iter()
            .find(|c| c.day == d)
            .map(|c| c.cost.usd)
    };
    assert_eq!((day(20_251_016), day(19_990_101)), (Some(3.0), Some(1.0)));
}

#[test]
fn empty_and_missing_files_are_reported_not_errors() {
    let parsed = parse("empty");
    let statuses: Vec<_> = parsed.files.iter().map(|f| f.status.clone()).collect();
    assert_eq!(
        statuses,
        [
            FileStatus::Empty,
            FileStatus::Empty,
            FileStatus::Empty,
            FileStatus::Missing
        ]
    );
    assert_eq!(parsed.batch_len(), 0);
    let text = parsed
        .summary(ImportCounts::default(), false, None)
        .to_string();
    assert!(text.contains("sessions.json        empty"), "{text}");
    assert!(
        text.contains("restart_state.json   missing, skipped"),
        "{text}"
    );
}

#[test]
fn malformed_json_names_file_line_and_column() {
    let err = parse_dir(&fixture("malformed"), &opts()).expect_err("malformed");
    match &err {
        LegacyError::Malformed {
            path, line, column, ..
        } => {
            assert!(path.ends_with("tasks.json"));
            assert_eq!((*line, *column), (2, 40));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string().contains("tasks.json:2:40: malformed JSON"),
        "{err}"
    );
}

// --- the store operation ---

#[test]
fn import_writes_everything_once_and_a_second_import_nothing() {
    let (_dir, store) = temp_store();
    let parsed = parse("good");
    let first = store
        .import_legacy(parsed.batch.clone())
        .wait()
        .expect("import");
    assert_eq!(
        first,
        ImportCounts {
            tasks: counts(5, 0, 0),
            sessions: counts(3, 0, 0),
            costs: counts(3, 0, 0),
            restart: counts(1, 0, 0),
            queued: 2,
        }
    );
    assert_eq!(store.queue_depth().expect("depth"), 2);
    let before = store.table_counts().expect("counts");
    let second = store
        .import_legacy(parsed.batch.clone())
        .wait()
        .expect("again");
    assert_eq!(
        second,
        ImportCounts {
            tasks: counts(0, 5, 0),
            sessions: counts(0, 3, 0),
            costs: counts(0, 3, 0),
            restart: counts(0, 1, 0),
            queued: 0,
        }
    );
    let after = store.table_counts().expect("counts");
    for table in [
        "tasks",
        "task_queue",
        "task_status",
        "task_user",
        "sessions",
        "costs",
        "restart_state",
        "meta",
    ] {
        assert_eq!(rows(&before, table), rows(&after, table), "{table}");
    }
    assert_eq!(
        rows(&after, "events"),
        rows(&before, "events") + 1,
        "each run logs one legacy_import event"
    );
    assert_eq!(
        store.cost_day("BOT-1", 20_251_014).expect("cost").usd,
        2.5,
        "not added twice"
    );
    let restart = store.take_restart_state().wait().expect("take");
    assert_eq!(
        restart.and_then(Result::ok).map(|r| r.requested_ms),
        Some(FAMOUS_MS)
    );
    let event = store
        .recent_events(Some("legacy_import"), 1)
        .expect("events");
    assert_eq!(event.len(), 1);
    store.close();
}

#[test]
fn imported_tasks_share_the_submission_id_counter() {
    let (_dir, store) = temp_store();
    let new = |prompt: &str| crate::storage::NewTask {
        bot_id: "BOT-1".into(),
        user_id: 1,
        chat_id: 1,
        kind: crate::storage::TaskKind::Chat,
        source: crate::storage::TaskSource::Telegram,
        prompt: prompt.into(),
        priority: 5,
        max_attempts: 3,
        reply_to_message_id: None,
        update_id: None,
    };
    let before = store
        .submit_task(new("before"), NOW)
        .wait()
        .expect("submit")
        .task
        .id;
    store
        .import_legacy(parse("good").batch)
        .wait()
        .expect("import");
    let after = store
        .submit_task(new("after"), NOW)
        .wait()
        .expect("submit")
        .task
        .id;
    assert_eq!((before, after), (1, 7));
    let legacy = store
        .list_tasks(&crate::storage::TaskFilter {
            limit: Some(100),
            ..Default::default()
        })
        .expect("list");
    let mut legacy_ids: Vec<u64> = legacy
        .iter()
        .filter(|t| t.source == crate::storage::TaskSource::Legacy)
        .map(|t| t.id)
        .collect();
    legacy_ids.sort_unstable();
    assert_eq!(legacy_ids, [2, 3, 4, 5, 6]);
    // The pending one runs: it is claimable like any queued task.
    let claimed = store
        .claim_next_task(NOW, vec![])
        .wait()
        .expect("claim")
        .expect("a task");
    assert_eq!(claimed.task.source, crate::storage::TaskSource::Legacy);
    store.close();
}

#[test]
fn sessions_and_restart_state_of_the_running_service_are_kept() {
    let (_dir, store) = temp_store();
    let mine = Session {
        agent_session_id: Some("new-service".into()),
        created_ms: NOW,
        last_active_ms: NOW,
        message_count: 1,
        workdir: ".".into(),
        extra: None,
    };
    store
        .upsert_session("BOT-1", 111_111_111, mine.clone())
        .wait()
        .expect("session");
    let restart = crate::storage::RestartState {
        requested_ms: NOW,
        bot_id: Some("BOT-1".into()),
        chat_id: Some(1),
        message_id: None,
        reason: "new service".into(),
    };
    store
        .set_restart_state(restart.clone())
        .wait()
        .expect("restart");
    let parsed = parse("good");
    let preview = store.preview_legacy_import(&parsed.batch).expect("preview");
    let written = store
        .import_legacy(parsed.batch.clone())
        .wait()
        .expect("import");
    assert_eq!(preview, written, "a dry run predicts the import");
    assert_eq!(
        (written.sessions, written.restart),
        (counts(2, 0, 1), counts(0, 0, 1))
    );
    assert_eq!(
        store.get_session("BOT-1", 111_111_111).expect("get"),
        Some(mine)
    );
    let again = store.import_legacy(parsed.batch).wait().expect("again");
    assert_eq!(
        (again.sessions, again.restart),
        (counts(0, 2, 1), counts(0, 0, 1))
    );
    assert_eq!(
        store.take_restart_state().wait().expect("take"),
        Some(Ok(restart))
    );
    store.close();
}

#[test]
fn preview_writes_nothing() {
    let (_dir, store) = temp_store();
    let before = store.table_counts().expect("counts");
    let preview = store
        .preview_legacy_import(&parse("good").batch)
        .expect("preview");
    assert_eq!(preview.tasks, counts(5, 0, 0));
    assert_eq!(store.table_counts().expect("counts"), before);
    store.close();
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z0-9_:. -]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("2025-10-14"),
            Just("123456789"),
            Just("status"),
            Just("pending"),
            Just("in_progress"),
            Just("1760504154"),
            Just("2025-10-15T04:55:54Z"),
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    let key = prop_oneof![
        Just("user_id".to_string()),
        Just("chat_id".to_string()),
        Just("prompt".to_string()),
        Just("status".to_string()),
        Just("created_at".to_string()),
        Just("timestamp".to_string()),
        Just("session_id".to_string()),
        Just("cost".to_string()),
        Just("daily".to_string()),
        Just("tasks".to_string()),
        Just("usage".to_string()),
        Just("messages".to_string()),
        Just("2025-10-14".to_string()),
        Just("123456789".to_string()),
        "[a-z0-9]{1,6}",
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn converters_never_panic_on_arbitrary_json(value in arbitrary_json()) {
        let opts = opts();
        let mut report = FileReport::new("x.json");
        let _ = tasks::convert(value.clone(), &opts, &mut report);
        let _ = sessions::convert(value.clone(), &opts, &mut report);
        let _ = costs::convert(value.clone(), &opts, &mut report);
        let _ = restart::convert(value, &opts, &mut report);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn importing_arbitrary_json_files_never_panics_and_is_idempotent(
        files in prop::collection::vec(arbitrary_json(), 4)
    ) {
        let legacy = tempfile::tempdir().expect("tempdir");
        for (name, value) in LEGACY_FILES.iter().zip(&files) {
            std::fs::write(legacy.path().join(name), value.to_string()).expect("write");
        }
        let parsed = parse_dir(legacy.path(), &opts()).expect("valid JSON always parses");
        let _ = parsed.summary(ImportCounts::default(), false, None).to_string();
        let (_dir, store) = temp_store();
        let first = store.import_legacy(parsed.batch.clone()).wait().expect("import");
        let second = store.import_legacy(parsed.batch.clone()).wait().expect("again");
        prop_assert_eq!(second.tasks.imported + second.sessions.imported + second.costs.imported + second.restart.imported, 0);
        prop_assert_eq!(first.tasks.imported, second.tasks.already_imported);
        store.close();
    }
}

#[test]
fn a_large_file_imports_in_one_transaction() {
    let legacy = tempfile::tempdir().expect("tempdir");
    let n = progress::LARGE_RECORD_COUNT + 1;
    let tasks: Vec<Value> = (0..n)
        .map(|i| json!({"id": i, "user_id": 1 + i % 7, "prompt": format!("prompt {i}"), "status": "done", "created_at": FAMOUS_S + i as i64}))
        .collect();
    std::fs::write(
        legacy.path().join("tasks.json"),
        Value::Array(tasks).to_string(),
    )
    .expect("write");
    let parsed = parse_dir(
        legacy.path(),
        &ParseOptions {
            show_progress: true,
            ..opts()
        },
    )
    .expect("parse");
    assert_eq!(parsed.batch.tasks.len(), n);
    let (_dir, store) = temp_store();
    let written = store
        .import_legacy(parsed.batch.clone())
        .wait()
        .expect("import");
    assert_eq!(written.tasks, counts(n as u64, 0, 0));
    let again = store.import_legacy(parsed.batch).wait().expect("again");
    assert_eq!(again.tasks, counts(0, n as u64, 0));
    store.close();
}

#[test]
fn unmodelled_cost_and_restart_fields_are_kept_for_meta_not_dropped() {
    let legacy = tempfile::tempdir().expect("tempdir");
    let costs = json!({
        "2025-10-14": {"cost_usd": 1.5, "model": "sonnet"},
        "users": {"42": {"2025-10-14": {"cost": 0.5, "region": "eu"}}},
        "2025-10-15": 0.25,
    });
    let restart = json!({"timestamp": 1_760_504_154, "chat_id": 42, "host": "old-mac"});
    std::fs::write(legacy.path().join("costs.json"), costs.to_string()).expect("write");
    std::fs::write(
        legacy.path().join("restart_state.json"),
        restart.to_string(),
    )
    .expect("write");
    let parsed = parse_dir(legacy.path(), &opts()).expect("parses");

    let day = |d: u32| parsed.batch.costs.iter().find(|c| c.day == d).expect("day");
    let extra: Value =
        serde_json::from_str(day(20251014).extra.as_deref().expect("extra")).expect("json");
    assert_eq!(
        extra,
        json!({"2025-10-14": {"model": "sonnet"}, "users/42/2025-10-14": {"region": "eu"}})
    );
    assert_eq!(
        day(20251015).extra,
        None,
        "a bare number has nothing left over"
    );
    let restart = parsed.batch.restart.as_ref().expect("restart");
    assert_eq!(restart.extra.as_deref(), Some(r#"{"host":"old-mac"}"#));
    let notes: Vec<&String> = parsed.files.iter().flat_map(|f| &f.notes).collect();
    assert!(
        notes.iter().any(|n| n.contains("legacy:extra:cost")),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.contains("legacy:extra:restart")),
        "{notes:?}"
    );
}
