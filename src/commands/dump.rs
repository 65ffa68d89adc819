//! `agentlab dump`: every table decoded to JSON, from one read transaction — from
//! the file when no service holds it, else from the running service's admin route.

use std::io::Write;

use anyhow::Context;
use serde_json::{Map, Value};

use crate::cli::{DumpArgs, DumpFormat};
use crate::config::Config;
use crate::storage::{DumpRow, Store, StoreError};

/// Runs the command.
pub async fn run(config: &Config, args: DumpArgs) -> anyhow::Result<i32> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    match Store::open(&config.database_path(), crate::backup::store_options(config)) {
        Ok(store) => {
            let result = dump_store(&store, &args.tables, since, args.format);
            store.close();
            result?;
            Ok(0)
        }
        Err(StoreError::AlreadyOpen { .. }) => {
            eprintln!("the service holds the database; fetching the dump from its admin API");
            dump_remote(config, &args, since).await
        }
        Err(e) => Err(e).context("opening the store"),
    }
}

fn dump_store(store: &Store, tables: &[String], since: Option<u64>, format: DumpFormat) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match format {
        DumpFormat::Ndjson => {
            store.dump(tables, since, &mut |row: DumpRow| {
                let line = ndjson_line(&row);
                writeln!(out, "{line}")
            })?;
        }
        DumpFormat::Json => {
            let mut doc: Map<String, Value> = Map::new();
            store.dump(tables, since, &mut |row| {
                let list = doc.entry(row.table).or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(items) = list {
                    items.push(row.row);
                }
                Ok(())
            })?;
            serde_json::to_writer_pretty(&mut out, &doc)?;
            writeln!(out)?;
        }
        DumpFormat::Table => {
            let mut current = "";
            store.dump(tables, since, &mut |row| {
                if row.table != current {
                    writeln!(out, "== {} ==", row.table)?;
                    current = row.table;
                }
                writeln!(out, "{}", table_line(&row.row))
            })?;
        }
    }
    out.flush()?;
    Ok(())
}

/// One ndjson line: the row with a `table` field (events keep their flat shape).
pub fn ndjson_line(row: &DumpRow) -> Value {
    let mut value = row.row.clone();
    if let Value::Object(map) = &mut value {
        if row.table != "events" {
            map.insert("table".into(), Value::String(row.table.to_string()));
        }
    }
    value
}

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

async fn dump_remote(config: &Config, args: &DumpArgs, since: Option<u64>) -> anyhow::Result<i32> {
    let client = super::remote::ServiceClient::new(config)?;
    let mut path = String::from("/api/admin/dump?format=ndjson");
    for t in &args.tables {
        path.push_str(&format!("&table={t}"));
    }
    if let Some(s) = since {
        path.push_str(&format!("&since={s}"));
    }
    let text = client.get_text(&path).await?;
    match args.format {
        DumpFormat::Ndjson => print!("{text}"),
        DumpFormat::Json | DumpFormat::Table => {
            let rows: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
    }
    Ok(0)
}

/// Parses `--since`: ISO-8601, unix seconds or milliseconds, or an age (`90s`,
/// `15m`, `2h`, `7d`) before now. Returns unix ms.
pub fn parse_since(text: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    if let Some(age) = parse_age(t) {
        return Ok(crate::storage::now_ms().saturating_sub(age));
    }
    if let Ok(n) = t.parse::<u64>() {
        // Below 10^11 it can only be seconds (10^11 ms is 1973).
        return Ok(if n < 100_000_000_000 { n * 1000 } else { n });
    }
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(t) {
        return u64::try_from(dt.timestamp_millis()).context("time before 1970");
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        let ms = d.and_hms_opt(0, 0, 0).map(|dt| dt.and_utc().timestamp_millis()).unwrap_or(0);
        return u64::try_from(ms).context("time before 1970");
    }
    anyhow::bail!("--since `{text}`: use ISO-8601 (2025-10-14T12:00:00Z), a date, unix seconds/ms, or an age like 2h")
}

fn parse_age(t: &str) -> Option<u64> {
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let ms = match unit {
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(n * ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_the_documented_forms() {
        assert_eq!(parse_since("1760504154").unwrap(), 1_760_504_154_000);
        assert_eq!(parse_since("1760504154000").unwrap(), 1_760_504_154_000);
        assert_eq!(parse_since("2025-10-15T04:55:54Z").unwrap(), 1_760_504_154_000);
        assert!(parse_since("2h").unwrap() < crate::storage::now_ms());
        assert!(parse_since("yesterday").is_err());
    }
}
