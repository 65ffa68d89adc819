//! `agentlab dump`: every table decoded to JSON, from one read transaction — from
//! the file when no service holds it, else from the running service's admin route.
//!
//! Both ways write through [`DumpWriter`] (here, or in the service for the admin
//! route), so `--format json|ndjson|table` prints the same text either way. A data
//! folder without a database has nothing to dump: that is said, and nothing is
//! created (exit code 1).

use std::io::Write;

use anyhow::Context;
use serde_json::Value;

use super::args::DumpArgs;
use crate::config::Config;
use crate::storage::{DumpFormat, DumpWriter, Store, StoreError};

/// Runs the command.
pub async fn run(config: &Config, args: DumpArgs) -> anyhow::Result<i32> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let path = config.database_path();
    if !path.exists() {
        eprintln!(
            "nothing to dump: there is no database at {} yet (it is created when the service first starts)",
            path.display()
        );
        return Ok(1);
    }
    // A private copy, never the file itself: opening the file would write to it
    // (redb's header, the journal) though a dump only reads.
    match Store::open_scratch_copy(&path, crate::backup::store_options(config)) {
        Ok(scratch) => {
            let result = dump_store(scratch.store(), &args.tables, since, args.format.into());
            scratch.store().close();
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

fn dump_store(
    store: &Store,
    tables: &[String],
    since: Option<u64>,
    format: DumpFormat,
) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut writer = DumpWriter::new(format, std::io::BufWriter::new(stdout.lock()), tables);
    store.dump(tables, since, &mut |row| writer.row(row))?;
    writer.finish()?;
    Ok(())
}

async fn dump_remote(config: &Config, args: &DumpArgs, since: Option<u64>) -> anyhow::Result<i32> {
    let client = super::remote::ServiceClient::new(config)?;
    let format: DumpFormat = args.format.into();
    let mut path = format!("/api/admin/dump?format={}", format.as_str());
    for t in &args.tables {
        path.push_str(&format!("&table={t}"));
    }
    if let Some(s) = since {
        path.push_str(&format!("&since={s}"));
    }
    let text = client.get_text(&path).await?;
    let (body, failure) = split_stream_error(&text);
    let mut out = std::io::stdout().lock();
    out.write_all(body.as_bytes())?;
    out.flush()?;
    match failure {
        Some(message) => {
            eprintln!("the service's dump ended early: {message}");
            Ok(1)
        }
        None => Ok(0),
    }
}

/// The admin route ends a dump that failed after its first byte with an
/// `{"error", "code": "dump_failed"}` line: splits it off the body.
fn split_stream_error(text: &str) -> (&str, Option<String>) {
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    let (body, last) = match trimmed.rfind('\n') {
        Some(i) => (&text[..=i], &trimmed[i + 1..]),
        None => ("", trimmed),
    };
    match serde_json::from_str::<Value>(last) {
        Ok(v) if v["code"] == "dump_failed" && v.as_object().is_some_and(|m| m.len() == 2) => (
            body,
            Some(v["error"].as_str().unwrap_or("unknown error").to_string()),
        ),
        _ => (text, None),
    }
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
        let ms = d
            .and_hms_opt(0, 0, 0)
            .map(|dt| dt.and_utc().timestamp_millis())
            .unwrap_or(0);
        return u64::try_from(ms).context("time before 1970");
    }
    anyhow::bail!(
        "`{text}` is not a time: use ISO-8601 (2025-10-14T12:00:00Z), a date (2025-10-14), \
         unix seconds or milliseconds, or an age (90s, 15m, 2h, 7d)"
    )
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
    fn a_failed_remote_dump_is_told_apart_from_its_rows() {
        let ok = "{\"table\":\"tasks\",\"id\":1}\n";
        assert_eq!(split_stream_error(ok), (ok, None));
        let failed = "{\"table\":\"tasks\",\"id\":1}\n{\"error\":\"dump ended early: disk\",\"code\":\"dump_failed\"}\n";
        let (body, failure) = split_stream_error(failed);
        assert_eq!(body, ok);
        assert_eq!(failure.as_deref(), Some("dump ended early: disk"));
        let only = "{\"error\":\"x\",\"code\":\"dump_failed\"}\n";
        assert_eq!(split_stream_error(only), ("", Some("x".to_string())));
        assert_eq!(split_stream_error(""), ("", None));
    }

    #[test]
    fn since_accepts_the_documented_forms() {
        assert_eq!(parse_since("1760504154").unwrap(), 1_760_504_154_000);
        assert_eq!(parse_since("1760504154000").unwrap(), 1_760_504_154_000);
        assert_eq!(
            parse_since("2025-10-15T04:55:54Z").unwrap(),
            1_760_504_154_000
        );
        assert!(parse_since("2h").unwrap() < crate::storage::now_ms());
        assert!(parse_since("yesterday").is_err());
    }
}
