//! Files from the project to the phone: `/file PATH`, and what the agent puts
//! in `<workdir>/.agentlab/outbox/` during a task.
//!
//! Both are the project's: `/file` reads the sender's current project, a task's
//! outbox is in the workdir of the project the task ran in.
//!
//! `/file` resolves the path inside the project's workdir: the path is resolved by
//! the file system (`..`, symlinks) and must still be inside the workdir, so
//! `..` escapes, absolute paths elsewhere and symlinks that leave it are all
//! refused the same way; the file is then opened without following a last
//! symlink, so nothing swapped in after the check is read. A folder gets its
//! listing, a missing file the names next to it; over [`MAX_SEND_BYTES`] is refused.
//!
//! The outbox is sent after a task's answer (images as photos, the rest as
//! documents), each file moved to `outbox/sent/` *before* it is sent, the move
//! synced: a restart between the move and the send can lose a delivery (the
//! file stays in `sent/`, and the chat was told nothing), but no file is ever
//! sent twice — a duplicate cannot be taken back, a missing one can be asked
//! for with `/file`.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::BotRuntime;
use super::handler::Sender;

/// Largest file sent (Telegram's limit for bots' uploads).
pub(crate) const MAX_SEND_BYTES: u64 = 50 * 1024 * 1024;
/// Names listed for a folder or next to a missing file.
const LISTED: usize = 20;

/// Why `/file` did not send a file: each says what to do instead.
#[derive(Debug, thiserror::Error, PartialEq)]
enum Refusal {
    #[error("Send /file PATH, with a path inside the project, e.g. /file README.md")]
    NoPath,
    #[error("`{0}` is outside the project: I only send files of the project's folder.")]
    Outside(String),
    #[error("There is no `{wanted}` in the project.{nearby}")]
    Missing { wanted: String, nearby: String },
    #[error("`{wanted}` is a folder.{listing}\nSend /file {wanted}/NAME for one of its files.")]
    Folder { wanted: String, listing: String },
    #[error("`{wanted}` is {size_mb:.1} MB; I can send at most 50 MB.")]
    TooBig { wanted: String, size_mb: f64 },
    #[error("`{wanted}` is not a regular file.")]
    NotAFile { wanted: String },
    #[error("I could not read `{wanted}`: {why}")]
    Unreadable { wanted: String, why: String },
}

/// `/file PATH`: sends the file, or says why not.
pub(super) async fn send_project_file(
    bot: &Arc<BotRuntime>,
    sender: Sender,
    workdir: &Path,
    wanted: &str,
) {
    let workdir = workdir.to_path_buf();
    let wanted_owned = wanted.trim().to_owned();
    let read =
        tokio::task::spawn_blocking(move || read_project_file(&workdir, &wanted_owned)).await;
    let (name, content) = match read {
        Ok(Ok(file)) => file,
        Ok(Err(refusal)) => {
            bot.reply(sender, &refusal.to_string()).await;
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "reading a project file panicked");
            bot.reply(sender, "I could not read that file (internal error).")
                .await;
            return;
        }
    };
    if let Err(e) = bot
        .api
        .send_file(
            sender.chat_id,
            &name,
            &content,
            false,
            Some(sender.message_id),
        )
        .await
    {
        tracing::warn!(error = %e, "cannot send a project file");
        bot.reply(sender, &format!("I could not send `{name}`: {e}"))
            .await;
    }
}

/// The name and content of `wanted` inside `workdir`. Blocking.
fn read_project_file(workdir: &Path, wanted: &str) -> Result<(String, Vec<u8>), Refusal> {
    let path = resolve_inside(workdir, wanted)?;
    let unreadable = |e: std::io::Error| Refusal::Unreadable {
        wanted: wanted.to_owned(),
        why: e.to_string(),
    };
    let meta = std::fs::metadata(&path).map_err(unreadable)?;
    if meta.is_dir() {
        return Err(Refusal::Folder {
            wanted: wanted.trim_end_matches('/').to_owned(),
            listing: listing(&path, "It holds"),
        });
    }
    if !meta.is_file() {
        return Err(Refusal::NotAFile {
            wanted: wanted.to_owned(),
        });
    }
    if meta.len() > MAX_SEND_BYTES {
        return Err(too_big(wanted, meta.len()));
    }
    // No last symlink is followed: the path was checked as it is now.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(unreadable)?;
    let mut content = Vec::new();
    file.take(MAX_SEND_BYTES + 1)
        .read_to_end(&mut content)
        .map_err(unreadable)?;
    if content.len() as u64 > MAX_SEND_BYTES {
        return Err(too_big(wanted, content.len() as u64));
    }
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    Ok((name, content))
}

fn too_big(wanted: &str, bytes: u64) -> Refusal {
    Refusal::TooBig {
        wanted: wanted.to_owned(),
        size_mb: bytes as f64 / (1024.0 * 1024.0),
    }
}

/// `wanted` (relative to `workdir`, or absolute) resolved by the file system,
/// when it exists and is inside `workdir` (also resolved).
fn resolve_inside(workdir: &Path, wanted: &str) -> Result<PathBuf, Refusal> {
    if wanted.is_empty() {
        return Err(Refusal::NoPath);
    }
    let root = std::fs::canonicalize(workdir).map_err(|e| Refusal::Unreadable {
        wanted: wanted.to_owned(),
        why: format!("the project folder is not available ({e})"),
    })?;
    let joined = root.join(wanted);
    match std::fs::canonicalize(&joined) {
        Ok(real) if real.starts_with(&root) => Ok(real),
        Ok(_) => Err(Refusal::Outside(wanted.to_owned())),
        Err(_) if !lexically_inside(&root, &joined) => Err(Refusal::Outside(wanted.to_owned())),
        Err(_) => Err(Refusal::Missing {
            wanted: wanted.to_owned(),
            nearby: joined
                .parent()
                .filter(|p| p.starts_with(&root) && p.is_dir())
                .map(|p| listing(p, "Next to it"))
                .unwrap_or_default(),
        }),
    }
}

/// Whether `path` stays under `root` with `.` and `..` applied as written.
fn lexically_inside(root: &Path, path: &Path) -> bool {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if !normal.pop() {
                    return false;
                }
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    normal.starts_with(root)
}

/// " {title}: a, b/, c…" for up to [`LISTED`] names in `dir`, sorted.
fn listing(dir: &Path, title: &str) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return String::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| {
            let mut name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                name.push('/');
            }
            name
        })
        .collect();
    names.sort();
    if names.is_empty() {
        return format!("\n{title}: nothing.");
    }
    let more = names.len().saturating_sub(LISTED);
    names.truncate(LISTED);
    let mut text = format!("\n{title}: {}", names.join(", "));
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

/// Sends what the agent left in `<workdir>/.agentlab/outbox/` to `chat_id`,
/// after task `task_id`'s answer: each regular file (not hidden) is moved to
/// `outbox/sent/` first, then sent (see the module doc for why in that order).
pub(super) async fn send_outbox(bot: &BotRuntime, task_id: u64, chat_id: i64) {
    let project = bot.ctx.store.task_project(task_id).unwrap_or_else(|error| {
        tracing::warn!(%error, task_id, "cannot read the task's project; its outbox is not sent");
        String::new()
    });
    let Some(workdir) = bot.config.project_workdir(&project) else {
        tracing::warn!(
            task_id,
            project,
            "the task's project is not configured; its outbox is not sent"
        );
        return;
    };
    let outbox = workdir.join(".agentlab").join("outbox");
    // Most answers leave no files: one look on this thread (no directory, or
    // nothing to send in it) costs less than the two thread hand-overs of a
    // blocking task, which only a non-empty outbox pays.
    if !holds_files_to_send(&outbox) {
        return;
    }
    let claimed = match tokio::task::spawn_blocking(move || claim_outbox(&outbox)).await {
        Ok(Ok(claimed)) => claimed,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, task_id, "cannot read the outbox");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, task_id, "reading the outbox panicked");
            return;
        }
    };
    for path in claimed {
        let name = path
            .file_name()
            .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
        let sent = match tokio::fs::read(&path).await {
            Ok(content) => bot
                .api
                .send_file(chat_id, &name, &content, is_image(&name), None)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = sent {
            tracing::warn!(error = %why, task_id, file = %name, "cannot send an outbox file");
            let note = format!(
                "Task #{task_id} left `{name}` for you, but I could not send it ({why}). \
                 It is in .agentlab/outbox/sent/; ask for it with /file .agentlab/outbox/sent/{name}"
            );
            if let Err(e) = bot.api.send_plain(chat_id, &note, None).await {
                tracing::warn!(error = %e, "cannot tell about an unsent outbox file");
            }
        }
    }
}

/// Whether `outbox` holds a file [`claim_outbox`] would send; `true` when it
/// cannot be read (the claim then reports why).
fn holds_files_to_send(outbox: &Path) -> bool {
    match std::fs::read_dir(outbox) {
        Ok(mut entries) => entries.any(|entry| entry.is_ok_and(|e| is_file_to_send(&e))),
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// A regular file whose name does not start with a dot.
fn is_file_to_send(entry: &std::fs::DirEntry) -> bool {
    entry.file_type().is_ok_and(|t| t.is_file())
        && !entry.file_name().to_string_lossy().starts_with('.')
}

/// Moves the outbox's files to `outbox/sent/` (a name taken there gets a
/// numbered one), synced; their new paths, by name. Blocking.
fn claim_outbox(outbox: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(outbox) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(is_file_to_send)
        .map(|e| e.file_name())
        .collect();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    names.sort();
    let sent = outbox.join("sent");
    std::fs::create_dir_all(&sent)?;
    let mut claimed = Vec::with_capacity(names.len());
    for name in names {
        let mut target = sent.join(&name);
        let mut n = 2;
        while target.exists() {
            let path = Path::new(&name);
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            target = match path.extension() {
                Some(ext) => sent.join(format!("{stem}-{n}.{}", ext.to_string_lossy())),
                None => sent.join(format!("{stem}-{n}")),
            };
            n += 1;
        }
        std::fs::rename(outbox.join(&name), &target)?;
        claimed.push(target);
    }
    std::fs::File::open(&sent)?.sync_all()?;
    std::fs::File::open(outbox)?.sync_all()?;
    Ok(claimed)
}

/// Sent as a photo: the image formats Telegram shows inline.
fn is_image(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".jpg", ".jpeg", ".png", ".webp"]
        .iter()
        .any(|ext| lower.ends_with(ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_the_workdir_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/main.rs"), "fn main() {}").unwrap();
        std::fs::write(dir.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        let real = std::fs::canonicalize(&root).unwrap();
        assert_eq!(
            resolve_inside(&root, "src/../src/main.rs"),
            Ok(real.join("src/main.rs"))
        );
        for outside in [
            "../secret",
            "../../etc/passwd",
            "link",
            "/etc/passwd",
            "src/../../secret",
            "../nothing-here",
        ] {
            assert!(
                matches!(resolve_inside(&root, outside), Err(Refusal::Outside(_))),
                "{outside}: {:?}",
                resolve_inside(&root, outside)
            );
        }
        assert!(matches!(
            resolve_inside(&root, "src/mian.rs"),
            Err(Refusal::Missing { nearby, .. }) if nearby.contains("main.rs")
        ));
        assert_eq!(resolve_inside(&root, ""), Err(Refusal::NoPath));
        let absolute_inside = real.join("src/main.rs");
        assert!(resolve_inside(&root, absolute_inside.to_str().unwrap()).is_ok());
    }

    #[test]
    fn folders_are_listed_not_sent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("docs/img")).unwrap();
        std::fs::write(dir.path().join("docs/a.md"), "a").unwrap();
        let refused = read_project_file(dir.path(), "docs").unwrap_err();
        let text = refused.to_string();
        assert!(
            text.contains("is a folder") && text.contains("a.md, img/"),
            "{text}"
        );
    }

    #[test]
    fn the_outbox_is_claimed_once_into_sent() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox");
        std::fs::create_dir_all(&outbox).unwrap();
        std::fs::write(outbox.join("report.pdf"), "1").unwrap();
        std::fs::write(outbox.join(".partial"), "x").unwrap();
        let first = claim_outbox(&outbox).unwrap();
        assert_eq!(first, vec![outbox.join("sent/report.pdf")]);
        assert!(claim_outbox(&outbox).unwrap().is_empty(), "claimed once");
        std::fs::write(outbox.join("report.pdf"), "2").unwrap();
        assert_eq!(
            claim_outbox(&outbox).unwrap(),
            vec![outbox.join("sent/report-2.pdf")]
        );
        assert!(outbox.join(".partial").exists(), "hidden files wait");
    }
}
