//! Decoding every table into readable JSON, from one read transaction.
//!
//! Used by `agentlab dump`, the admin dump route, backups (row counts) and tests
//! (backup → restore round trips compare dumps). No raw bytes ever come out: each
//! row is a JSON object with its key fields and its decoded value.
//!
//! [`DumpWriter`] turns rows into the dump's text formats. The CLI (reading the
//! file) and the admin route (for the CLI when the service holds the file) both
//! write through it, so a dump reads the same whichever way it was taken.

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;
use serde_json::{Value, json};

use super::codec;
use super::error::StoreError;
use super::records::*;
use super::series_codec::decode_chunk;
use super::tables::{self, ALL_TABLES};
use super::{Store, StoreResult};

/// One decoded row.
#[derive(Debug, Clone, Serialize)]
pub struct DumpRow {
    /// The table.
    pub table: &'static str,
    /// The row: key fields and value fields.
    pub row: Value,
}

impl DumpRow {
    /// The row as one ndjson line's value: its fields plus a `table` field (event
    /// rows keep their flat circuit-breaker JSONL shape).
    pub fn ndjson_value(&self) -> Value {
        let mut value = self.row.clone();
        if let Value::Object(map) = &mut value
            && self.table != "events"
        {
            map.insert("table".into(), Value::String(self.table.to_string()));
        }
        value
    }
}

/// A text format of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpFormat {
    /// One pretty JSON document: `{table: [rows]}`.
    Json,
    /// One JSON object per line, with a `table` field (events keep their flat shape).
    Ndjson,
    /// `== table ==` headers and one `key=value` line per row.
    Table,
}

impl DumpFormat {
    /// The name used on the command line and in the admin route's query.
    pub fn as_str(self) -> &'static str {
        match self {
            DumpFormat::Json => "json",
            DumpFormat::Ndjson => "ndjson",
            DumpFormat::Table => "table",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [DumpFormat::Json, DumpFormat::Ndjson, DumpFormat::Table]
            .into_iter()
            .find(|f| f.as_str() == s)
    }
}

/// Writes dump rows in one [`DumpFormat`]. ndjson and table text stream row by
/// row; the JSON document is collected and written by [`DumpWriter::finish`].
///
/// Every selected table is shown, empty ones too, as the format shows no rows:
/// `"table": []` in the JSON document, its `== table ==` header and `(no rows)`
/// in the table text, and no line in ndjson (one line per row).
pub struct DumpWriter<W: std::io::Write> {
    out: W,
    format: DumpFormat,
    doc: serde_json::Map<String, Value>,
    /// The selected tables in dump order, and whether each was shown yet.
    selected: Vec<(&'static str, bool)>,
}

impl<W: std::io::Write> DumpWriter<W> {
    /// A writer of `format` text to `out` for a dump of `tables` (every table when
    /// empty), given as to [`Store::dump`].
    pub fn new(format: DumpFormat, out: W, tables: &[String]) -> Self {
        let selected = ALL_TABLES
            .iter()
            .filter(|name| tables.is_empty() || tables.iter().any(|t| t == *name))
            .map(|name| (*name, false))
            .collect();
        DumpWriter {
            out,
            format,
            doc: serde_json::Map::new(),
            selected,
        }
    }

    /// Writes (or, for JSON, collects) one row.
    pub fn row(&mut self, row: DumpRow) -> std::io::Result<()> {
        match self.format {
            DumpFormat::Ndjson => {
                serde_json::to_writer(&mut self.out, &row.ndjson_value())?;
                self.out.write_all(b"\n")
            }
            DumpFormat::Json => {
                let list = self
                    .doc
                    .entry(row.table)
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(items) = list {
                    items.push(row.row);
                }
                Ok(())
            }
            DumpFormat::Table => {
                if !self.shown(row.table) {
                    self.show_empty_tables_before(Some(row.table))?;
                    writeln!(self.out, "== {} ==", row.table)?;
                    self.mark_shown(row.table);
                }
                writeln!(self.out, "{}", table_line(&row.row))
            }
        }
    }

    /// Writes what is still collected (the JSON document) and the empty tables,
    /// flushes, and gives the output back.
    pub fn finish(mut self) -> std::io::Result<W> {
        match self.format {
            DumpFormat::Json => {
                for (name, _) in &self.selected {
                    self.doc
                        .entry(*name)
                        .or_insert_with(|| Value::Array(Vec::new()));
                }
                serde_json::to_writer_pretty(&mut self.out, &self.doc)?;
                self.out.write_all(b"\n")?;
            }
            DumpFormat::Table => self.show_empty_tables_before(None)?,
            DumpFormat::Ndjson => {}
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn shown(&self, table: &str) -> bool {
        self.selected
            .iter()
            .any(|(name, shown)| *name == table && *shown)
    }

    fn mark_shown(&mut self, table: &str) {
        for (name, shown) in &mut self.selected {
            if *name == table {
                *shown = true;
            }
        }
    }

    /// Table text: headers of the selected tables before `table` (all, at the
    /// end) that had no rows. Tables come in dump order, so those are empty.
    fn show_empty_tables_before(&mut self, table: Option<&str>) -> std::io::Result<()> {
        for (name, shown) in &mut self.selected {
            if Some(*name) == table {
                break;
            }
            if !*shown {
                writeln!(self.out, "== {name} ==\n(no rows)")?;
                *shown = true;
            }
        }
        Ok(())
    }
}

/// A row as `key=value` pairs on one line (newlines in strings shown as ⏎).
fn table_line(row: &Value) -> String {
    match row {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={}", s.replace('\n', "⏎")),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join("  "),
        other => other.to_string(),
    }
}

/// Rows of one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCount {
    /// The table.
    pub table: String,
    /// Rows.
    pub rows: u64,
}

impl Store {
    /// Rows per table, from one read transaction.
    pub fn table_counts(&self) -> StoreResult<Vec<TableCount>> {
        self.read(table_counts_tx)
    }

    /// Streams decoded rows of `tables` (all when empty) to `sink`, from one read
    /// transaction. `since_ms` keeps only rows with a time at or after it (events,
    /// tasks by creation, alerts by start); other tables are unaffected. Buffered
    /// samples are written first (blocking), so the dump holds them.
    pub fn dump(
        &self,
        tables: &[String],
        since_ms: Option<u64>,
        sink: &mut dyn FnMut(DumpRow) -> std::io::Result<()>,
    ) -> StoreResult<()> {
        for name in tables {
            if !ALL_TABLES.contains(&name.as_str()) {
                return Err(StoreError::Invalid(format!(
                    "unknown table `{name}`; tables are: {}",
                    ALL_TABLES.join(", ")
                )));
            }
        }
        if let Err(e) = self.write_buffered_samples() {
            tracing::warn!(error = %e, "dump taken without the buffered samples");
        }
        self.read(|tx| {
            for name in ALL_TABLES {
                if tables.is_empty() || tables.iter().any(|t| t == name) {
                    dump_table(tx, name, since_ms, sink)?;
                }
            }
            Ok(())
        })
    }
}

/// Rows per table in one read transaction (also used to verify snapshots).
pub(crate) fn table_counts_tx(tx: &ReadTransaction) -> StoreResult<Vec<TableCount>> {
    let mut out = Vec::new();
    for name in ALL_TABLES {
        let rows = match name {
            "meta" => count(tx, tables::META)?,
            "sessions" => count(tx, tables::SESSIONS)?,
            "messages" => count(tx, tables::MESSAGES)?,
            "tasks" => count(tx, tables::TASKS)?,
            "task_queue" => count(tx, tables::TASK_QUEUE)?,
            "task_status" => count(tx, tables::TASK_STATUS)?,
            "task_user" => count(tx, tables::TASK_USER)?,
            "active_users" => count(tx, tables::ACTIVE_USERS)?,
            "update_dedup" => count(tx, tables::UPDATE_DEDUP)?,
            "outbox" => count(tx, tables::OUTBOX)?,
            "costs" => count(tx, tables::COSTS)?,
            "restart_state" => count(tx, tables::RESTART_STATE)?,
            "series" => count(tx, tables::SERIES)?,
            "series_rollup" => count(tx, tables::SERIES_ROLLUP)?,
            "series_names" => count(tx, tables::SERIES_NAMES)?,
            "alerts" => count(tx, tables::ALERTS)?,
            "events" => count(tx, tables::EVENTS)?,
            "breakers" => count(tx, tables::BREAKERS)?,
            "task_events" => count(tx, tables::TASK_EVENTS)?,
            "approvals" => count(tx, tables::APPROVALS)?,
            "approval_requests" => count(tx, tables::APPROVAL_REQUESTS)?,
            "user_modes" => count(tx, tables::USER_MODES)?,
            "user_projects" => count(tx, tables::USER_PROJECTS)?,
            "task_projects" => count(tx, tables::TASK_PROJECTS)?,
            "project_sessions" => count(tx, tables::PROJECT_SESSIONS)?,
            "project_messages" => count(tx, tables::PROJECT_MESSAGES)?,
            "user_models" => count(tx, tables::USER_MODELS)?,
            "approval_answers" => count(tx, tables::APPROVAL_ANSWERS)?,
            _ => 0,
        };
        out.push(TableCount {
            table: name.to_string(),
            rows,
        });
    }
    Ok(out)
}

fn count<K: redb::Key + 'static, V: redb::Value + 'static>(
    tx: &ReadTransaction,
    def: TableDefinition<K, V>,
) -> StoreResult<u64> {
    match tx.open_table(def) {
        Ok(t) => Ok(t.len()?),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

type Sink<'a> = &'a mut dyn FnMut(DumpRow) -> std::io::Result<()>;

fn emit(sink: &mut Sink<'_>, table: &'static str, row: Value) -> StoreResult<()> {
    sink(DumpRow { table, row }).map_err(|e| StoreError::Io(format!("writing dump: {e}")))
}

fn decoded<T: serde::de::DeserializeOwned + Serialize>(
    table: &'static str,
    bytes: &[u8],
) -> StoreResult<Value> {
    let value: T = codec::decode(bytes).map_err(|e| StoreError::decode(table, e))?;
    Ok(serde_json::to_value(value).unwrap_or(Value::Null))
}

fn merge(mut key: Value, value: Value) -> Value {
    if let (Some(k), Value::Object(v)) = (key.as_object_mut(), value) {
        for (field, val) in v {
            k.entry(field).or_insert(val);
        }
    }
    key
}

/// ISO-8601 UTC rendering of unix ms.
pub fn iso8601(ms: u64) -> String {
    use chrono::{TimeZone, Utc};
    Utc.timestamp_millis_opt(ms as i64)
        .single()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn dump_table(
    tx: &ReadTransaction,
    name: &'static str,
    since: Option<u64>,
    sink: Sink<'_>,
) -> StoreResult<()> {
    let mut sink = sink;
    let since = since.unwrap_or(0);
    macro_rules! rows {
        ($def:expr) => {
            match tx.open_table($def) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        };
    }
    match name {
        "meta" => {
            for row in rows!(tables::META).iter()? {
                let (k, v) = row?;
                let bytes = v.value();
                let key = k.value();
                let text = match bytes.len() {
                    // Unmodelled legacy fields: JSON whatever their length.
                    _ if key.starts_with(super::legacy::LEGACY_EXTRA_PREFIX) => {
                        serde_json::from_slice(bytes)
                            .unwrap_or_else(|_| json!(String::from_utf8_lossy(bytes)))
                    }
                    4 => json!(u32::from_le_bytes(bytes.try_into().unwrap_or_default())),
                    8 => json!(u64::from_le_bytes(bytes.try_into().unwrap_or_default())),
                    _ => match codec::decode::<BackupRecord>(bytes) {
                        Ok(r) => serde_json::to_value(r).unwrap_or(Value::Null),
                        Err(_) => json!(String::from_utf8_lossy(bytes)),
                    },
                };
                emit(&mut sink, name, json!({"key": key, "value": text}))?;
            }
        }
        "sessions" => {
            for row in rows!(tables::SESSIONS).iter()? {
                let (k, v) = row?;
                let (bot, user) = k.value();
                let value = decoded::<Session>(name, v.value())?;
                emit(
                    &mut sink,
                    name,
                    merge(json!({"bot_id": bot, "user_id": user}), value),
                )?;
            }
        }
        "messages" => {
            for row in rows!(tables::MESSAGES).iter()? {
                let (k, v) = row?;
                let (bot, user, seq) = k.value();
                let value = decoded::<ChatMessage>(name, v.value())?;
                emit(
                    &mut sink,
                    name,
                    merge(json!({"bot_id": bot, "user_id": user, "seq": seq}), value),
                )?;
            }
        }
        "tasks" => {
            for row in rows!(tables::TASKS).iter()? {
                let (_, v) = row?;
                let task: Task =
                    codec::decode(v.value()).map_err(|e| StoreError::decode(name, e))?;
                if task.created_ms >= since {
                    emit(
                        &mut sink,
                        name,
                        serde_json::to_value(task).unwrap_or(Value::Null),
                    )?;
                }
            }
        }
        "task_queue" => {
            for row in rows!(tables::TASK_QUEUE).iter()? {
                let (p, at, id) = row?.0.value();
                emit(
                    &mut sink,
                    name,
                    json!({"priority": p, "enqueued_ms": at, "task_id": id}),
                )?;
            }
        }
        "task_status" => {
            for row in rows!(tables::TASK_STATUS).iter()? {
                let (s, id) = row?.0.value();
                let status = TaskStatus::ALL
                    .get(s as usize)
                    .map_or("unknown", |st| st.as_str());
                emit(&mut sink, name, json!({"status": status, "task_id": id}))?;
            }
        }
        "task_user" => {
            for row in rows!(tables::TASK_USER).iter()? {
                let (key, _) = row?;
                let (bot, user, id) = key.value();
                emit(
                    &mut sink,
                    name,
                    json!({"bot_id": bot, "user_id": user, "task_id": id}),
                )?;
            }
        }
        "active_users" => {
            for row in rows!(tables::ACTIVE_USERS).iter()? {
                let (k, v) = row?;
                let (bot, user) = k.value();
                emit(
                    &mut sink,
                    name,
                    json!({"bot_id": bot, "user_id": user, "task_id": v.value()}),
                )?;
            }
        }
        "update_dedup" => {
            for row in rows!(tables::UPDATE_DEDUP).iter()? {
                let (k, v) = row?;
                let (bot, update) = k.value();
                emit(
                    &mut sink,
                    name,
                    json!({"bot_id": bot, "update_id": update, "task_id": v.value()}),
                )?;
            }
        }
        "outbox" => {
            for row in rows!(tables::OUTBOX).iter()? {
                emit(&mut sink, name, json!({"task_id": row?.0.value()}))?;
            }
        }
        "costs" => {
            for row in rows!(tables::COSTS).iter()? {
                let (k, v) = row?;
                let (bot, day) = k.value();
                let value = decoded::<CostDay>(name, v.value())?;
                emit(
                    &mut sink,
                    name,
                    merge(json!({"bot_id": bot, "day": day}), value),
                )?;
            }
        }
        "restart_state" => {
            for row in rows!(tables::RESTART_STATE).iter()? {
                let (k, v) = row?;
                let value = decoded::<RestartState>(name, v.value())?;
                emit(&mut sink, name, merge(json!({"key": k.value()}), value))?;
            }
        }
        "series" => {
            for row in rows!(tables::SERIES).iter()? {
                let (k, v) = row?;
                let (id, start) = k.value();
                let samples = decode_chunk(v.value()).map_err(|e| StoreError::decode(name, e))?;
                let points: Vec<Value> = samples
                    .iter()
                    .filter(|s| s.at_ms >= since)
                    .map(|s| json!([s.at_ms, s.value]))
                    .collect();
                if !points.is_empty() {
                    emit(
                        &mut sink,
                        name,
                        json!({"series_id": id, "chunk_start_ms": start, "samples": points}),
                    )?;
                }
            }
        }
        "series_rollup" => {
            for row in rows!(tables::SERIES_ROLLUP).iter()? {
                let (k, v) = row?;
                let (id, bucket) = k.value();
                if bucket >= since {
                    let value = decoded::<Rollup>(name, v.value())?;
                    let resolution = if id & 0x8000_0000 != 0 {
                        "hour"
                    } else {
                        "minute"
                    };
                    emit(
                        &mut sink,
                        name,
                        merge(
                            json!({"series_id": id & 0x7fff_ffff, "resolution": resolution, "bucket_ms": bucket}),
                            value,
                        ),
                    )?;
                }
            }
        }
        "series_names" => {
            for row in rows!(tables::SERIES_NAMES).iter()? {
                let (k, v) = row?;
                emit(
                    &mut sink,
                    name,
                    json!({"name": k.value(), "series_id": v.value()}),
                )?;
            }
        }
        "alerts" => {
            for row in rows!(tables::ALERTS).iter()? {
                let (_, v) = row?;
                let alert: Alert =
                    codec::decode(v.value()).map_err(|e| StoreError::decode(name, e))?;
                if alert.started_ms >= since || alert.resolved_ms.is_none() {
                    emit(
                        &mut sink,
                        name,
                        serde_json::to_value(alert).unwrap_or(Value::Null),
                    )?;
                }
            }
        }
        "events" => {
            for row in rows!(tables::EVENTS).range((since, 0)..)? {
                let (_, v) = row?;
                let event: Event =
                    codec::decode(v.value()).map_err(|e| StoreError::decode(name, e))?;
                emit(&mut sink, name, event_json(&event))?;
            }
        }
        "breakers" => {
            for row in rows!(tables::BREAKERS).iter()? {
                let (k, v) = row?;
                let (bot, dep) = k.value();
                let stored: StoredBreaker =
                    codec::decode(v.value()).map_err(|e| StoreError::decode(name, e))?;
                let snapshot: Value =
                    serde_json::from_str(&stored.snapshot_json).unwrap_or(Value::Null);
                emit(
                    &mut sink,
                    name,
                    json!({"bot_id": bot, "dependency": dep, "state": stored.state, "updated_ms": stored.updated_ms, "snapshot": snapshot}),
                )?;
            }
        }
        "task_events" => {
            for row in rows!(tables::TASK_EVENTS).iter()? {
                let (k, v) = row?;
                let (task_id, seq) = k.value();
                let step: super::TaskStep =
                    codec::decode(v.value()).map_err(|e| StoreError::decode(name, e))?;
                emit(
                    &mut sink,
                    name,
                    json!({"task_id": task_id, "seq": seq, "at_ms": step.at_ms, "summary": step.summary}),
                )?;
            }
        }
        "approvals" => {
            for row in rows!(tables::APPROVALS).iter()? {
                let approval = super::approvals::decode(row?.1.value())?;
                if approval.asked.created_ms >= since {
                    emit(&mut sink, name, approval.to_flat_json())?;
                }
            }
        }
        "approval_requests" => {
            for row in rows!(tables::APPROVAL_REQUESTS).iter()? {
                let (k, v) = row?;
                let (task_id, request_id) = k.value();
                emit(
                    &mut sink,
                    name,
                    json!({"task_id": task_id, "request_id": request_id, "approval_id": v.value()}),
                )?;
            }
        }
        "user_modes" => {
            for row in rows!(tables::USER_MODES).iter()? {
                let (k, v) = row?;
                let (bot, user) = k.value();
                emit(
                    &mut sink,
                    name,
                    json!({"bot_id": bot, "user_id": user, "permission_mode": v.value()}),
                )?;
            }
        }
        "user_models" => {
            for row in rows!(tables::USER_MODELS).iter()? {
                let (k, v) = row?;
                let (bot, user) = k.value();
                emit(
                    &mut sink,
                    name,
                    json!({"bot_id": bot, "user_id": user, "model": v.value()}),
                )?;
            }
        }
        "user_projects" => {
            for row in rows!(tables::USER_PROJECTS).iter()? {
                let (k, v) = row?;
                let (bot, user) = k.value();
                emit(
                    &mut sink,
                    name,
                    json!({"bot_id": bot, "user_id": user, "project": v.value()}),
                )?;
            }
        }
        "task_projects" => {
            for row in rows!(tables::TASK_PROJECTS).iter()? {
                let (k, v) = row?;
                emit(
                    &mut sink,
                    name,
                    json!({"task_id": k.value(), "project": v.value()}),
                )?;
            }
        }
        "project_sessions" => {
            for row in rows!(tables::PROJECT_SESSIONS).iter()? {
                let (k, v) = row?;
                let (bot, user, project) = k.value();
                let value = decoded::<Session>(name, v.value())?;
                emit(
                    &mut sink,
                    name,
                    merge(
                        json!({"bot_id": bot, "user_id": user, "project": project}),
                        value,
                    ),
                )?;
            }
        }
        "project_messages" => {
            for row in rows!(tables::PROJECT_MESSAGES).iter()? {
                let (k, v) = row?;
                let (bot, user, project, seq) = k.value();
                let value = decoded::<ChatMessage>(name, v.value())?;
                emit(
                    &mut sink,
                    name,
                    merge(
                        json!({"bot_id": bot, "user_id": user, "project": project, "seq": seq}),
                        value,
                    ),
                )?;
            }
        }
        "approval_answers" => {
            for row in rows!(tables::APPROVAL_ANSWERS).iter()? {
                let (k, v) = row?;
                let picks = super::approval_answers::decode_picks(v.value())?;
                emit(
                    &mut sink,
                    name,
                    json!({"approval_id": k.value(), "picks": picks}),
                )?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// An event as one flat JSON object: `timestamp`, `at_ms`, `bot_id`, `event` and
/// the payload's fields (the circuit-breaker JSONL shape).
pub fn event_json(event: &Event) -> Value {
    let payload: Value = serde_json::from_str(&event.payload_json)
        .unwrap_or_else(|_| json!({"payload": event.payload_json}));
    let head = json!({
        "timestamp": iso8601(event.at_ms),
        "at_ms": event.at_ms,
        "seq": event.seq,
        "bot_id": event.bot_id,
        "event": event.kind,
    });
    merge(head, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(format: DumpFormat, tables: &[&str], rows: Vec<DumpRow>) -> String {
        let tables: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
        let mut writer = DumpWriter::new(format, Vec::new(), &tables);
        for row in rows {
            writer.row(row).expect("row written");
        }
        String::from_utf8(writer.finish().expect("finished")).expect("utf-8")
    }

    fn task_row() -> DumpRow {
        DumpRow {
            table: "tasks",
            row: json!({"id": 1}),
        }
    }

    #[test]
    fn an_empty_table_asked_for_is_shown_with_no_rows_in_every_format() {
        let json_doc: Value =
            serde_json::from_str(&written(DumpFormat::Json, &["alerts"], Vec::new()))
                .expect("one JSON document");
        assert_eq!(json_doc, json!({"alerts": []}));
        assert_eq!(
            written(DumpFormat::Table, &["alerts"], Vec::new()),
            "== alerts ==\n(no rows)\n"
        );
        assert_eq!(written(DumpFormat::Ndjson, &["alerts"], Vec::new()), "");
    }

    #[test]
    fn empty_tables_keep_their_place_beside_tables_with_rows() {
        let text = written(
            DumpFormat::Table,
            &["meta", "tasks", "events"],
            vec![task_row()],
        );
        assert_eq!(
            text,
            "== meta ==\n(no rows)\n== tasks ==\nid=1\n== events ==\n(no rows)\n"
        );
        let json_doc: Value = serde_json::from_str(&written(
            DumpFormat::Json,
            &["tasks", "events"],
            vec![task_row()],
        ))
        .expect("JSON");
        assert_eq!(json_doc, json!({"tasks": [{"id": 1}], "events": []}));
        let every: Value =
            serde_json::from_str(&written(DumpFormat::Json, &[], Vec::new())).expect("JSON");
        assert_eq!(
            every.as_object().map(|m| m.len()),
            Some(ALL_TABLES.len()),
            "{every}"
        );
    }
}
