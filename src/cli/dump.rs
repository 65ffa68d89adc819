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

use super::args::{DumpArgs, parse_since};
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
}
