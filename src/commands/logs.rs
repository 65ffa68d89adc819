//! `agentlab logs`: the last lines of the service's log, optionally following it.

use std::io::{BufRead, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::cli::LogsArgs;
use crate::config::Config;

/// The newest log file in `log_dir` (daily files are `agentlab.log.YYYY-MM-DD`).
pub fn newest_log(config: &Config) -> Option<PathBuf> {
    let entries = std::fs::read_dir(&config.log_dir).ok()?;
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(crate::telemetry::LOG_FILE))
        .max_by_key(|e| e.file_name())
        .map(|e| e.path())
}

/// Runs the command.
pub async fn run(config: &Config, args: LogsArgs) -> anyhow::Result<i32> {
    let Some(path) = newest_log(config) else {
        anyhow::bail!("no log file in {} (has the service run with this configuration?)", config.log_dir.display());
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines[lines.len().saturating_sub(args.lines)..] {
        println!("{line}");
    }
    if !args.follow {
        return Ok(0);
    }
    let mut file = std::fs::File::open(&path)?;
    let mut pos = file.seek(SeekFrom::End(0))?;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(pos);
        if len < pos {
            pos = 0;
        }
        if len > pos {
            file.seek(SeekFrom::Start(pos))?;
            let mut reader = std::io::BufReader::new(&file);
            let mut line = String::new();
            while reader.read_line(&mut line)? > 0 {
                print!("{line}");
                line.clear();
            }
            pos = len;
        }
    }
}
