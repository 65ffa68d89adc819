//! Files a user sends to the agent: photos (the largest size), documents,
//! audio and voice messages, alone or as an album.
//!
//! Each file is fetched with `getFile` and the download URL into
//! `<workdir>/.agentlab/inbox/update-<update id>/` under a safe name (no path
//! parts, no leading dots, at most [`MAX_NAME_BYTES`], unique in its folder),
//! and the prompt names the saved paths with the caption, so the agent reads
//! them itself. An album (messages sharing a `media_group_id`, grouped by the
//! poller) becomes one prompt.
//!
//! Order, and why: size check, disk check, download, then the intake. The task
//! does not exist before the files do, so the agent can never start on a
//! prompt whose files are missing; that is also why the folder is named after
//! the update, not the task (its id is only known once it is stored). The user
//! hears "queued" only after the intake stored the task, as for text. A crash
//! before that loses nothing: the update is not confirmed, Telegram delivers it
//! again, and the same folder is filled again.
//!
//! Invariants: a file over `[limits] max_upload_mb` (as announced by the
//! update's `file_size`) is refused before anything is downloaded; a file is
//! written under a temporary name, synced and renamed, so no half file ever has
//! the final name; a refused or failed prompt leaves no folder behind; the
//! download URL (it holds the token) never reaches a log or a message.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use teloxide::types::Message;

use super::BotRuntime;
use super::handler::{self, Sender};
use super::telegram::SendError;
use crate::intake::admission::{DiskFull, admit_download};

/// Attempts per download (network errors and 5xx are retried).
const DOWNLOAD_ATTEMPTS: u32 = 4;
/// Longest saved file name, bytes.
const MAX_NAME_BYTES: usize = 100;

/// What kind of file a message carries: how it is named and described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Photo,
    Document,
    Audio,
    Voice,
}

impl Kind {
    /// Name stem when the user's file has none.
    fn stem(self) -> &'static str {
        match self {
            Kind::Photo => "photo",
            Kind::Document => "document",
            Kind::Audio => "audio",
            Kind::Voice => "voice",
        }
    }

    /// How the prompt calls it.
    fn noun(self) -> &'static str {
        match self {
            Kind::Photo => "image",
            Kind::Document => "file",
            Kind::Audio => "audio file",
            Kind::Voice => "voice message",
        }
    }
}

/// A file in a message, before download.
#[derive(Debug, Clone)]
struct Attachment {
    kind: Kind,
    file_id: String,
    /// As announced by the update.
    size: u64,
    file_name: Option<String>,
}

/// A downloaded file.
#[derive(Debug, Clone)]
struct Saved {
    kind: Kind,
    path: PathBuf,
}

/// Why files could not be handed to the agent.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(
        "that file is too big for me: {size_mb:.1} MB, and the limit is {limit_mb} MB. Nothing was saved; send a smaller file"
    )]
    TooBig { size_mb: f64, limit_mb: u64 },
    #[error("{0}")]
    DiskFull(#[from] DiskFull),
    #[error("Telegram would not hand over the file ({0})")]
    Telegram(SendError),
    #[error("the file could not be saved on the server ({0})")]
    Io(#[from] std::io::Error),
}

/// Whether a message carries a file this module takes.
pub(super) fn has_file(message: &Message) -> bool {
    attachment(message).is_some()
}

fn attachment(message: &Message) -> Option<Attachment> {
    let meta = |kind, file: &teloxide::types::FileMeta, name: Option<&String>| Attachment {
        kind,
        file_id: file.id.0.clone(),
        size: u64::from(file.size),
        file_name: name.cloned(),
    };
    if let Some(sizes) = message.photo() {
        let largest = sizes
            .iter()
            .max_by_key(|s| (u64::from(s.width) * u64::from(s.height), s.file.size))?;
        return Some(meta(Kind::Photo, &largest.file, None));
    }
    if let Some(d) = message.document() {
        return Some(meta(Kind::Document, &d.file, d.file_name.as_ref()));
    }
    if let Some(a) = message.audio() {
        return Some(meta(Kind::Audio, &a.file, a.file_name.as_ref()));
    }
    message.voice().map(|v| meta(Kind::Voice, &v.file, None))
}

/// Fetches the files of `messages` (one message, or an album's, the first
/// carrying the update id) and submits one prompt naming them.
pub(super) async fn submit_files(
    bot: &Arc<BotRuntime>,
    sender: Sender,
    update_id: i64,
    messages: &[Message],
) {
    let attachments: Vec<Attachment> = messages.iter().filter_map(attachment).collect();
    let captions: Vec<&str> = messages.iter().filter_map(Message::caption).collect();
    let limit_mb = bot.ctx.config.limits.max_upload_mb;
    if let Some(big) = attachments
        .iter()
        .find(|a| a.size > limit_mb.saturating_mul(1024 * 1024))
    {
        let refusal = FetchError::TooBig {
            size_mb: big.size as f64 / (1024.0 * 1024.0),
            limit_mb,
        };
        tracing::info!(size = big.size, limit_mb, "file refused: too big");
        bot.reply(sender, &format!("Sorry, {refusal}.")).await;
        return;
    }
    let project = super::projects::current(bot, sender).await;
    let dir = inbox_dir(&project.workdir, update_id);
    let saved = match fetch_all(bot, &attachments, &dir).await {
        Ok(saved) => saved,
        Err(e) => {
            tracing::warn!(error = %e, update_id, "files not fetched; nothing queued");
            remove_dir(&dir).await;
            bot.reply(
                sender,
                &format!("Your message was NOT queued: {e}. Please send it again."),
            )
            .await;
            return;
        }
    };
    let prompt = prompt_text(&captions, &saved);
    if !handler::submit_prompt(bot, sender, update_id, prompt, project.name).await {
        remove_dir(&dir).await;
    }
}

/// `<workdir>/.agentlab/inbox/update-<id>`, absolute when the workdir can be made so.
fn inbox_dir(workdir: &Path, update_id: i64) -> PathBuf {
    let workdir = std::path::absolute(workdir).unwrap_or_else(|_| workdir.to_path_buf());
    workdir
        .join(".agentlab")
        .join("inbox")
        .join(format!("update-{update_id}"))
}

async fn remove_dir(dir: &Path) {
    if let Err(e) = tokio::fs::remove_dir_all(dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot remove an unused inbox folder");
    }
}

async fn fetch_all(
    bot: &BotRuntime,
    attachments: &[Attachment],
    dir: &Path,
) -> Result<Vec<Saved>, FetchError> {
    let total: u64 = attachments.iter().map(|a| a.size).sum();
    tokio::fs::create_dir_all(dir).await?;
    {
        let (config, store, dir) = (
            bot.ctx.config.clone(),
            bot.ctx.store.clone(),
            dir.to_owned(),
        );
        tokio::task::spawn_blocking(move || admit_download(&config, &store, &dir, total))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
    }
    let mut used = HashSet::new();
    let mut saved = Vec::with_capacity(attachments.len());
    for attachment in attachments {
        let file_path = bot
            .api
            .file_path(&attachment.file_id)
            .await
            .map_err(FetchError::Telegram)?;
        let extension = Path::new(&file_path)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("bin");
        let fallback = format!("{}.{extension}", attachment.kind.stem());
        let name = unique_name(
            &mut used,
            safe_name(attachment.file_name.as_deref(), &fallback),
        );
        let path = dir.join(&name);
        download(bot, &file_path, &path).await?;
        saved.push(Saved {
            kind: attachment.kind,
            path,
        });
    }
    sync_dir(dir).await?;
    Ok(saved)
}

/// Downloads into `<dir>/.<name>.part`, retried on network errors; the complete,
/// synced file is then renamed to `path`.
async fn download(bot: &BotRuntime, file_path: &str, path: &Path) -> Result<(), FetchError> {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let part = path.with_file_name(format!(".{name}.part"));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut file = tokio::fs::File::create(&part).await?;
        match bot.api.download(file_path, &mut file).await {
            Ok(()) => {
                file.sync_all().await?;
                drop(file);
                tokio::fs::rename(&part, path).await?;
                return Ok(());
            }
            Err(e) => {
                drop(file);
                let _ = tokio::fs::remove_file(&part).await;
                let retry = matches!(e, SendError::Unavailable(_) | SendError::CircuitOpen(_));
                if !retry || attempt >= DOWNLOAD_ATTEMPTS {
                    return Err(FetchError::Telegram(e));
                }
                tracing::info!(error = %e, attempt, "download failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
}

/// Makes the renames in `dir` durable.
async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

/// A file name that cannot leave its folder nor hide: the last path part of
/// `wanted`, characters other than letters, digits, `.`, `-`, `_` replaced by
/// `_`, leading dots removed, at most [`MAX_NAME_BYTES`] (the extension kept);
/// `fallback` when nothing is left.
fn safe_name(wanted: Option<&str>, fallback: &str) -> String {
    let last = wanted
        .and_then(|w| w.rsplit(['/', '\\']).next())
        .unwrap_or("");
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = cleaned.trim_start_matches('.');
    if name.is_empty() {
        return fallback.to_owned();
    }
    bounded(name, MAX_NAME_BYTES)
}

/// `name` cut to `max` bytes on a character boundary, keeping a short extension.
fn bounded(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && ext.len() <= 16 => (stem, format!(".{ext}")),
        _ => (name, String::new()),
    };
    let mut cut = max - ext.len();
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{ext}", &stem[..cut])
}

/// `name`, or `name-2`, `name-3`... (before the extension) if already used.
fn unique_name(used: &mut HashSet<String>, name: String) -> String {
    if used.insert(name.clone()) {
        return name;
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem.to_owned(), format!(".{ext}")),
        _ => (name.clone(), String::new()),
    };
    let mut n = 2;
    loop {
        let candidate = bounded(&format!("{stem}-{n}{ext}"), MAX_NAME_BYTES);
        if used.insert(candidate.clone()) {
            return candidate;
        }
        n += 1;
    }
}

/// The prompt: the captions, then the saved paths; without a caption, an
/// invitation to look ("Look at this image: <path>").
fn prompt_text(captions: &[&str], saved: &[Saved]) -> String {
    let caption = captions
        .iter()
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    if caption.is_empty() {
        return match saved {
            [one] => format!("Look at this {}: {}", one.kind.noun(), one.path.display()),
            many => {
                let noun = if many.iter().all(|s| s.kind == Kind::Photo) {
                    "images"
                } else {
                    "files"
                };
                let mut text = format!("Look at these {noun}:");
                for s in many {
                    text.push_str(&format!("\n{}", s.path.display()));
                }
                text
            }
        };
    }
    let mut text = caption;
    text.push('\n');
    for s in saved {
        text.push_str(&format!(
            "\nAttached {}: {}",
            s.kind.noun(),
            s.path.display()
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_path_parts_and_leading_dots() {
        assert_eq!(safe_name(Some("../../etc/passwd"), "f"), "passwd");
        assert_eq!(safe_name(Some("..\\..\\boot.ini"), "f"), "boot.ini");
        assert_eq!(safe_name(Some(".bashrc"), "f"), "bashrc");
        assert_eq!(safe_name(Some("..."), "doc.pdf"), "doc.pdf");
        assert_eq!(safe_name(None, "photo.jpg"), "photo.jpg");
        assert_eq!(safe_name(Some("a b;$(rm).txt"), "f"), "a_b___rm_.txt");
        assert_eq!(safe_name(Some("résumé.pdf"), "f"), "résumé.pdf");
    }

    #[test]
    fn long_names_are_bounded_and_keep_their_extension() {
        let long = format!("{}.log", "é".repeat(200));
        let name = safe_name(Some(&long), "f");
        assert!(name.len() <= MAX_NAME_BYTES, "{}", name.len());
        assert!(name.ends_with(".log"));
    }

    #[test]
    fn names_are_unique_in_a_folder() {
        let mut used = HashSet::new();
        assert_eq!(unique_name(&mut used, "photo.jpg".into()), "photo.jpg");
        assert_eq!(unique_name(&mut used, "photo.jpg".into()), "photo-2.jpg");
        assert_eq!(unique_name(&mut used, "photo.jpg".into()), "photo-3.jpg");
        assert_eq!(unique_name(&mut used, "README".into()), "README");
        assert_eq!(unique_name(&mut used, "README".into()), "README-2");
    }

    #[test]
    fn prompts_name_the_paths_with_the_caption() {
        let photo = Saved {
            kind: Kind::Photo,
            path: "/w/.agentlab/inbox/update-7/photo.jpg".into(),
        };
        assert_eq!(
            prompt_text(&[], std::slice::from_ref(&photo)),
            "Look at this image: /w/.agentlab/inbox/update-7/photo.jpg"
        );
        assert_eq!(
            prompt_text(&["What is wrong here?"], &[photo]),
            "What is wrong here?\n\nAttached image: /w/.agentlab/inbox/update-7/photo.jpg"
        );
    }
}
