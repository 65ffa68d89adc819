//! Copies of the snapshots in object storage (`[backup.remote]`), so the data
//! survives the machine: S3 and S3-compatible servers, Google Cloud Storage, Azure
//! Blob Storage or a local folder, through the `object_store` crate.
//!
//! Layout under the URL's prefix, per snapshot `agentlab-<UTC time>.redb`:
//! - the data object: `agentlab-<time>.redb`, or `agentlab-<time>.redb.enc` when
//!   encrypted ([`crypt`] describes that format);
//! - its manifest `<data object>.manifest.json` ([`Manifest`]): sizes and SHA-256
//!   of the object and of the snapshot inside it.
//!
//! Invariants:
//! - a copy counts only once its manifest exists, and the manifest is written only
//!   after the uploaded object was read back and matched the size and SHA-256
//!   computed while uploading; rotation deletes the manifest first; so a listed
//!   copy was complete and verified when it was made;
//! - a snapshot is read from disk, hashed, encrypted and uploaded as a stream in
//!   multipart parts (`part_size_mb`), never whole in memory; the CPU work runs on a
//!   thread of its own at a lower priority, like the snapshot itself;
//! - a download is checked against its manifest (sizes, both digests), decrypted
//!   chunk by chunk (each authenticated) and verified as a database
//!   (`inspect_snapshot`) before it is given a snapshot's name in `backup_dir`;
//!   restoring it then goes through [`super::restore`], with its guarantees;
//! - credentials come from each provider's standard environment variables and are
//!   never logged; the encryption key only ever lives in memory.
//!
//! The background uploader, its circuit breaker and the staleness of the newest
//! copy are in [`offsite`].

pub mod crypt;
pub mod offsite;

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use self::crypt::{CryptError, Decryptor, Encryptor, SnapshotKey, hex};
use super::files::{self, SnapshotFile};
use super::{SnapshotDefect, create};
use crate::config::{Config, RemoteBackupConfig, redact_secret_url};
use crate::storage::{SnapshotInfo, inspect_snapshot, now_ms};

/// Suffix of an encrypted data object.
pub const ENCRYPTED_SUFFIX: &str = ".enc";
/// Suffix of a manifest, after its data object's name.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
/// Manifest format written.
const MANIFEST_FORMAT: u32 = 1;
/// Bytes read from a snapshot file at a time.
const READ_BUFFER: usize = 1024 * 1024;
/// Parts uploaded at once.
const UPLOAD_CONCURRENCY: usize = 2;
/// Suffix of a download in progress in `backup_dir` (never taken for a snapshot).
const DOWNLOAD_SUFFIX: &str = ".download";

/// Why a remote operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// `[backup.remote]` cannot be used.
    #[error("backup.remote: {0}")]
    Config(String),
    /// The object store refused or failed an operation.
    #[error("{url}: {error}")]
    Store {
        /// The remote, as configured (credentials redacted).
        url: String,
        /// object_store's error: in the message, so not a `source`.
        error: object_store::Error,
    },
    /// A local file or folder could not be used.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error (in the message, so not a `source`).
        error: std::io::Error,
    },
    /// An encrypted object could not be decrypted: wrong key, tampered, truncated.
    #[error("{object}: {error}; refusing it")]
    Crypt {
        /// The object.
        object: String,
        /// Why.
        error: CryptError,
    },
    /// An object is encrypted and no key is configured.
    #[error(
        "{object} is encrypted: set backup.remote.encryption_key_env to the variable that holds its key"
    )]
    KeyNeeded {
        /// The object.
        object: String,
    },
    /// An object differs from its manifest, or the manifest is unreadable.
    #[error("{object}: {detail}; refusing it")]
    Mismatch {
        /// The object.
        object: String,
        /// What differs.
        detail: String,
    },
    /// The downloaded snapshot is not a sound database.
    #[error("{object}: the downloaded snapshot failed verification ({defect}); refusing it")]
    Invalid {
        /// The object.
        object: String,
        /// Why.
        defect: SnapshotDefect,
    },
    /// No complete copy of that name.
    #[error("no complete copy named {name} in {url} (`agentlab backups --remote` lists them)")]
    NotFound {
        /// The name asked for.
        name: String,
        /// The remote.
        url: String,
    },
    /// No copy could be used.
    #[error("no usable copy in {url}{why}")]
    NoCopy {
        /// The remote.
        url: String,
        /// The copies tried and why each was refused (empty: there were none).
        why: String,
    },
    /// A worker thread went away (shutdown) before the transfer ended.
    #[error("the transfer was interrupted")]
    Interrupted,
}

/// What is kept beside each data object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format.
    pub format: u32,
    /// The snapshot's name (`agentlab-<time>.redb`).
    pub snapshot: String,
    /// The data object's name.
    pub object: String,
    /// When the snapshot was taken, unix ms.
    pub taken_ms: u64,
    /// When the upload was verified, unix ms.
    pub uploaded_ms: u64,
    /// Whether the object is encrypted ([`crypt`] format).
    pub encrypted: bool,
    /// The object's size.
    pub size_bytes: u64,
    /// SHA-256 of the object, hex.
    pub sha256: String,
    /// The snapshot's size.
    pub plain_size_bytes: u64,
    /// SHA-256 of the snapshot, hex.
    pub plain_sha256: String,
}

/// A copy found in the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCopy {
    /// The snapshot's name (`agentlab-<time>.redb`).
    pub snapshot: String,
    /// The data object's name.
    pub object: String,
    /// When the snapshot was taken, unix ms (from the name).
    pub taken_ms: u64,
    /// Object size.
    pub size_bytes: u64,
    /// Whether the object is encrypted (from its name).
    pub encrypted: bool,
    /// Whether its manifest exists (only complete copies are restored).
    pub complete: bool,
}

/// A remote copy downloaded, checked and verified into `backup_dir`.
#[derive(Debug, Clone)]
pub struct FetchedSnapshot {
    /// The local file, a verified snapshot.
    pub path: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// What it holds.
    pub info: SnapshotInfo,
}

/// Sizes and digests of one pass over a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Digests {
    plain_size: u64,
    plain_sha256: String,
    object_size: u64,
    object_sha256: String,
}

/// The configured remote: an object store, a prefix in it and maybe a key.
#[derive(Clone)]
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    key: Option<SnapshotKey>,
    part_size: usize,
    shown_url: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.shown_url)
            .field("encrypted", &self.key.is_some())
            .finish()
    }
}

/// The encryption key named by `encryption_key_env`, if one is named.
pub fn key_from_env(config: &RemoteBackupConfig) -> Result<Option<SnapshotKey>, RemoteError> {
    let env = config.encryption_key_env.trim();
    if env.is_empty() {
        return Ok(None);
    }
    let value = std::env::var(env).map_err(|_| {
        RemoteError::Config(format!(
            "encryption_key_env names {env}, which is not set (set it to 64 hex characters, e.g. from `openssl rand -hex 32`)"
        ))
    })?;
    SnapshotKey::from_hex(&value)
        .map(Some)
        .map_err(|e| RemoteError::Config(format!("the key in {env}: {e}")))
}

impl Remote {
    /// The remote of `config`, or `None` when `url` is empty. Reads the key from
    /// its environment variable; credentials are read by each provider's builder
    /// from its standard environment variables.
    pub fn from_config(config: &RemoteBackupConfig) -> Result<Option<Remote>, RemoteError> {
        if !config.enabled() {
            return Ok(None);
        }
        let shown_url = redact_secret_url(&config.url);
        let bad = |detail: String| RemoteError::Config(format!("url {shown_url}: {detail}"));
        let url = url::Url::parse(config.url.trim()).map_err(|e| bad(e.to_string()))?;
        let key = key_from_env(config)?;
        let store_error = |error| RemoteError::Store {
            url: shown_url.clone(),
            error,
        };
        let (store, prefix): (Arc<dyn ObjectStore>, Path) = match url.scheme() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|()| bad("not a local path".into()))?;
                std::fs::create_dir_all(&dir).map_err(|e| RemoteError::Io {
                    path: dir.clone(),
                    error: e,
                })?;
                let local = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(store_error)?;
                (Arc::new(local), Path::default())
            }
            "s3" | "s3a" => {
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry_config())
                    .with_client_options(client_options());
                if !config.endpoint.is_empty() {
                    builder = builder
                        .with_endpoint(config.endpoint.trim_end_matches('/'))
                        .with_allow_http(config.endpoint.starts_with("http://"));
                }
                if !config.region.is_empty() {
                    builder = builder.with_region(&config.region);
                }
                let store = builder.build().map_err(store_error)?;
                (Arc::new(store), prefix_of(&url).map_err(bad)?)
            }
            "gs" => {
                let store = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry_config())
                    .with_client_options(client_options())
                    .build()
                    .map_err(store_error)?;
                (Arc::new(store), prefix_of(&url).map_err(bad)?)
            }
            "az" | "abfs" => {
                let store = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry_config())
                    .with_client_options(client_options())
                    .build()
                    .map_err(store_error)?;
                (Arc::new(store), prefix_of(&url).map_err(bad)?)
            }
            other => return Err(bad(format!("unsupported scheme {other}"))),
        };
        Ok(Some(Remote {
            store,
            prefix,
            key,
            part_size: config.part_size_mb.max(5) * 1024 * 1024,
            shown_url,
        }))
    }

    /// The URL as configured, fit to print.
    pub fn url(&self) -> &str {
        &self.shown_url
    }

    /// Whether new copies are encrypted.
    pub fn encrypts(&self) -> bool {
        self.key.is_some()
    }

    fn path(&self, name: &str) -> Path {
        self.prefix.clone().join(name)
    }

    fn store_error(&self, error: object_store::Error) -> RemoteError {
        RemoteError::Store {
            url: self.shown_url.clone(),
            error,
        }
    }

    /// Every copy under the prefix, complete or not, newest first.
    pub async fn list(&self) -> Result<Vec<RemoteCopy>, RemoteError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let mut objects = self.store.list(prefix);
        let mut data = Vec::new();
        let mut manifests = std::collections::HashSet::new();
        while let Some(meta) = objects.next().await {
            let meta = match meta {
                Ok(meta) => meta,
                // A prefix that does not exist yet (a new bucket folder) is empty.
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(self.store_error(e)),
            };
            let Some(name) = meta.location.filename() else {
                continue;
            };
            if let Some(object) = name.strip_suffix(MANIFEST_SUFFIX) {
                manifests.insert(object.to_string());
            } else if let Some((snapshot, encrypted)) = parse_object_name(name) {
                data.push((name.to_string(), snapshot, encrypted, meta.size));
            }
        }
        let mut copies: Vec<RemoteCopy> = data
            .into_iter()
            .filter_map(|(object, snapshot, encrypted, size_bytes)| {
                let taken_ms = files::parse_snapshot_name(&snapshot)?;
                Some(RemoteCopy {
                    complete: manifests.contains(&object),
                    snapshot,
                    object,
                    taken_ms,
                    size_bytes,
                    encrypted,
                })
            })
            .collect();
        copies.sort_by(|a, b| {
            b.taken_ms
                .cmp(&a.taken_ms)
                .then_with(|| b.object.cmp(&a.object))
        });
        Ok(copies)
    }

    /// Uploads a verified local snapshot: streamed (encrypted when a key is
    /// configured) in multipart parts, then read back and checked against the
    /// size and SHA-256 computed on the way, and only then its manifest written.
    pub async fn upload(&self, file: &SnapshotFile) -> Result<Manifest, RemoteError> {
        let snapshot = file
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| files::parse_snapshot_name(n).is_some())
            .ok_or_else(|| RemoteError::Io {
                path: file.path.clone(),
                error: std::io::Error::other("not named like a snapshot"),
            })?
            .to_string();
        let object = if self.key.is_some() {
            format!("{snapshot}{ENCRYPTED_SUFFIX}")
        } else {
            snapshot.clone()
        };
        let location = self.path(&object);
        let (tx, mut rx) = mpsc::channel::<Bytes>(4);
        let (path, key) = (file.path.clone(), self.key.clone());
        let produced = spawn_niced("snapshot-upload", move || read_and_seal(&path, key, tx))?;

        let upload = self
            .store
            .put_multipart(&location)
            .await
            .map_err(|e| self.store_error(e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let mut failed = None;
        while let Some(bytes) = rx.recv().await {
            if let Err(e) = writer.wait_for_capacity(UPLOAD_CONCURRENCY).await {
                failed = Some(self.store_error(e));
                break;
            }
            writer.put(bytes);
        }
        drop(rx);
        let digests = match (failed, produced.await) {
            (None, Ok(Ok(digests))) => digests,
            (Some(e), _) | (None, Ok(Err(e))) => {
                abort(writer).await;
                return Err(e);
            }
            (None, Err(_)) => {
                abort(writer).await;
                return Err(RemoteError::Interrupted);
            }
        };
        writer.finish().await.map_err(|e| self.store_error(e))?;

        self.check_stored(&object, &location, &digests).await?;
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            snapshot,
            object: object.clone(),
            taken_ms: file.taken_ms,
            uploaded_ms: now_ms(),
            encrypted: self.key.is_some(),
            size_bytes: digests.object_size,
            sha256: digests.object_sha256,
            plain_size_bytes: digests.plain_size,
            plain_sha256: digests.plain_sha256,
        };
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| RemoteError::Mismatch {
            object: object.clone(),
            detail: format!("cannot encode its manifest: {e}"),
        })?;
        self.store
            .put(
                &self.path(&format!("{object}{MANIFEST_SUFFIX}")),
                PutPayload::from(text),
            )
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(manifest)
    }

    /// Reads an uploaded object back: its size and SHA-256 must be the ones
    /// computed while uploading.
    async fn check_stored(
        &self,
        object: &str,
        location: &Path,
        digests: &Digests,
    ) -> Result<(), RemoteError> {
        let got = self
            .store
            .get(location)
            .await
            .map_err(|e| self.store_error(e))?;
        if got.meta.size != digests.object_size {
            return Err(RemoteError::Mismatch {
                object: object.to_string(),
                detail: format!(
                    "stored {} bytes, uploaded {}",
                    got.meta.size, digests.object_size
                ),
            });
        }
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let hashed = spawn_niced("snapshot-check", move || Ok(hash_stream(rx)))?;
        self.pump(object, got.into_stream(), tx).await?;
        let (size, sha) = hashed.await.map_err(|_| RemoteError::Interrupted)??;
        if size != digests.object_size || sha != digests.object_sha256 {
            return Err(RemoteError::Mismatch {
                object: object.to_string(),
                detail: format!(
                    "read back {size} bytes with SHA-256 {sha}, uploaded {} with {}",
                    digests.object_size, digests.object_sha256
                ),
            });
        }
        Ok(())
    }

    /// Sends a download's pieces to a worker thread.
    async fn pump(
        &self,
        object: &str,
        mut stream: futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>,
        tx: mpsc::Sender<Bytes>,
    ) -> Result<(), RemoteError> {
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| self.store_error(e))?;
            if tx.send(piece).await.is_err() {
                // The worker stopped early (it found a defect); it says why.
                tracing::debug!(object, "download worker stopped early");
                break;
            }
        }
        Ok(())
    }

    /// The manifest of `object`.
    pub async fn manifest(&self, object: &str) -> Result<Manifest, RemoteError> {
        let location = self.path(&format!("{object}{MANIFEST_SUFFIX}"));
        let bytes = self
            .store
            .get(&location)
            .await
            .map_err(|e| self.store_error(e))?
            .bytes()
            .await
            .map_err(|e| self.store_error(e))?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| RemoteError::Mismatch {
                object: object.to_string(),
                detail: format!("its manifest is unreadable ({e})"),
            })?;
        if manifest.format != MANIFEST_FORMAT || manifest.object != object {
            return Err(RemoteError::Mismatch {
                object: object.to_string(),
                detail: format!(
                    "its manifest is of format {} for object {}",
                    manifest.format, manifest.object
                ),
            });
        }
        Ok(manifest)
    }

    /// Downloads `object` into `dest` (created, fsynced), decrypting it, and
    /// checks sizes and digests against its manifest. `dest` is removed on failure.
    pub async fn download(&self, object: &str, dest: &FsPath) -> Result<Manifest, RemoteError> {
        let manifest = self.manifest(object).await?;
        let key = match (manifest.encrypted, &self.key) {
            (true, None) => {
                return Err(RemoteError::KeyNeeded {
                    object: object.to_string(),
                });
            }
            (true, Some(key)) => Some(key.clone()),
            (false, _) => None,
        };
        let result = self.download_checked(object, &manifest, key, dest).await;
        if result.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        result.map(|()| manifest)
    }

    async fn download_checked(
        &self,
        object: &str,
        manifest: &Manifest,
        key: Option<SnapshotKey>,
        dest: &FsPath,
    ) -> Result<(), RemoteError> {
        let got = self
            .store
            .get(&self.path(object))
            .await
            .map_err(|e| self.store_error(e))?;
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let (dest_owned, name) = (dest.to_path_buf(), object.to_string());
        let written = spawn_niced("snapshot-download", move || {
            open_and_write(rx, key, &dest_owned, &name)
        })?;
        self.pump(object, got.into_stream(), tx).await?;
        let digests = written.await.map_err(|_| RemoteError::Interrupted)??;
        let expected = (
            manifest.size_bytes,
            manifest.sha256.as_str(),
            manifest.plain_size_bytes,
            manifest.plain_sha256.as_str(),
        );
        let found = (
            digests.object_size,
            digests.object_sha256.as_str(),
            digests.plain_size,
            digests.plain_sha256.as_str(),
        );
        if found != expected {
            return Err(RemoteError::Mismatch {
                object: object.to_string(),
                detail: format!(
                    "it does not match its manifest: {} bytes with SHA-256 {} (snapshot {} bytes, {}), the manifest says {} bytes, {} (snapshot {} bytes, {})",
                    found.0,
                    found.1,
                    found.2,
                    found.3,
                    expected.0,
                    expected.1,
                    expected.2,
                    expected.3
                ),
            });
        }
        Ok(())
    }

    /// Downloads a complete copy into `backup_dir` and verifies it as a database:
    /// `name` (a snapshot or object name), or else the newest copy that passes,
    /// skipping (and reporting) newer ones that do not. The file gets the
    /// snapshot's own name unless a local file has it already.
    pub async fn fetch_verified(
        &self,
        name: Option<&str>,
        backup_dir: &FsPath,
    ) -> Result<FetchedSnapshot, RemoteError> {
        let copies: Vec<RemoteCopy> = self
            .list()
            .await?
            .into_iter()
            .filter(|c| c.complete)
            .collect();
        let candidates: Vec<&RemoteCopy> = match name {
            Some(name) => {
                let wanted = name.trim_end_matches(MANIFEST_SUFFIX);
                let found: Vec<&RemoteCopy> = copies
                    .iter()
                    .filter(|c| c.object == wanted || c.snapshot == wanted)
                    .take(1)
                    .collect();
                if found.is_empty() {
                    return Err(RemoteError::NotFound {
                        name: name.to_string(),
                        url: self.shown_url.clone(),
                    });
                }
                found
            }
            None => copies.iter().collect(),
        };
        let mut refused = Vec::new();
        for copy in candidates {
            match self.fetch_one(copy, backup_dir).await {
                Ok(fetched) => return Ok(fetched),
                Err(e) if name.is_some() => return Err(e),
                Err(e @ RemoteError::Store { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(object = %copy.object, error = %e, "remote copy refused; trying an older one");
                    refused.push(e.to_string());
                }
            }
        }
        Err(RemoteError::NoCopy {
            url: self.shown_url.clone(),
            why: if refused.is_empty() {
                String::new()
            } else {
                format!(": {}", refused.join("; "))
            },
        })
    }

    async fn fetch_one(
        &self,
        copy: &RemoteCopy,
        backup_dir: &FsPath,
    ) -> Result<FetchedSnapshot, RemoteError> {
        std::fs::create_dir_all(backup_dir).map_err(|e| RemoteError::Io {
            path: backup_dir.to_path_buf(),
            error: e,
        })?;
        let tmp = backup_dir.join(format!("{}{DOWNLOAD_SUFFIX}", copy.snapshot));
        let manifest = self.download(&copy.object, &tmp).await?;
        let checked = tmp.clone();
        let inspected = tokio::task::spawn_blocking(move || inspect_snapshot(&checked))
            .await
            .map_err(|_| RemoteError::Interrupted)?;
        let info = match inspected {
            Ok(info) => info,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(RemoteError::Invalid {
                    object: copy.object.clone(),
                    defect: SnapshotDefect(e),
                });
            }
        };
        let named = backup_dir.join(&copy.snapshot);
        let path = if named.exists() {
            tmp
        } else {
            std::fs::rename(&tmp, &named).map_err(|e| RemoteError::Io {
                path: named.clone(),
                error: e,
            })?;
            let _ = files::sync_dir(backup_dir);
            named
        };
        tracing::info!(object = %copy.object, path = %path.display(), "remote copy downloaded and verified");
        Ok(FetchedSnapshot {
            path,
            manifest,
            info,
        })
    }

    /// Keeps the newest `keep` complete copies; deletes the rest (manifest first),
    /// manifests without their object, and objects without a manifest older than
    /// the newest complete copy (left by an interrupted upload). Returns the
    /// objects deleted.
    pub async fn rotate(&self, keep: usize) -> Result<Vec<String>, RemoteError> {
        let copies = self.list().await?;
        let newest_complete = copies.iter().find(|c| c.complete).map(|c| c.taken_ms);
        let mut kept = 0;
        let mut deleted = Vec::new();
        for copy in &copies {
            let remove = if copy.complete {
                kept += 1;
                kept > keep.max(1)
            } else {
                newest_complete.is_some_and(|newest| copy.taken_ms < newest)
            };
            if remove {
                if copy.complete {
                    self.delete(&format!("{}{MANIFEST_SUFFIX}", copy.object))
                        .await?;
                }
                self.delete(&copy.object).await?;
                deleted.push(copy.object.clone());
            }
        }
        Ok(deleted)
    }

    async fn delete(&self, name: &str) -> Result<(), RemoteError> {
        match self.store.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_error(e)),
        }
    }
}

/// Parses `agentlab-<time>.redb[.enc]` into (snapshot name, encrypted).
pub fn parse_object_name(name: &str) -> Option<(String, bool)> {
    let (snapshot, encrypted) = match name.strip_suffix(ENCRYPTED_SUFFIX) {
        Some(base) => (base, true),
        None => (name, false),
    };
    files::parse_snapshot_name(snapshot).map(|_| (snapshot.to_string(), encrypted))
}

fn prefix_of(url: &url::Url) -> Result<Path, String> {
    Path::parse(url.path().trim_matches('/')).map_err(|e| e.to_string())
}

/// Our own backoff (the uploader's) does the patient retrying; the client only
/// retries a few quick times, so an unreachable server fails an attempt in seconds.
fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(20),
        ..Default::default()
    }
}

fn client_options() -> object_store::ClientOptions {
    object_store::ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(120))
}

async fn abort(writer: WriteMultipart) {
    if let Err(e) = writer.abort().await {
        tracing::warn!(error = %e, "cannot abort the multipart upload; rotation removes what it left");
    }
}

/// Runs `work` on a thread of its own at the snapshot's lower priority; the
/// result comes back through the returned receiver.
fn spawn_niced<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> Result<T, RemoteError> + Send + 'static,
) -> Result<oneshot::Receiver<Result<T, RemoteError>>, RemoteError> {
    let (done, result) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            create::lower_this_threads_priority();
            let _ = done.send(work());
        })
        .map_err(|e| RemoteError::Io {
            path: PathBuf::from(name),
            error: e,
        })?;
    Ok(result)
}

/// Reads a snapshot, hashes it, encrypts it when `key` is set, hashes what will
/// be stored, and sends it on. Blocking (its own thread).
fn read_and_seal(
    path: &FsPath,
    key: Option<SnapshotKey>,
    tx: mpsc::Sender<Bytes>,
) -> Result<Digests, RemoteError> {
    use std::io::Read;
    let io = |error| RemoteError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut encryptor = key.as_ref().map(Encryptor::new);
    let (mut plain_hash, mut object_hash) = (Sha256::new(), Sha256::new());
    let (mut plain_size, mut object_size) = (0u64, 0u64);
    let mut send = |data: Vec<u8>| -> Result<(), RemoteError> {
        if data.is_empty() {
            return Ok(());
        }
        object_hash.update(&data);
        object_size += data.len() as u64;
        tx.blocking_send(Bytes::from(data))
            .map_err(|_| RemoteError::Interrupted)
    };
    if let Some(enc) = &encryptor {
        send(enc.header().to_vec())?;
    }
    let mut buffer = vec![0u8; READ_BUFFER];
    loop {
        let n = file.read(&mut buffer).map_err(io)?;
        if n == 0 {
            break;
        }
        let piece = &buffer[..n];
        plain_hash.update(piece);
        plain_size += n as u64;
        match encryptor.as_mut() {
            Some(enc) => send(enc.push(piece))?,
            None => send(piece.to_vec())?,
        }
    }
    if let Some(enc) = encryptor.take() {
        send(enc.finish())?;
    }
    Ok(Digests {
        plain_size,
        plain_sha256: hex(&plain_hash.finalize()),
        object_size,
        object_sha256: hex(&object_hash.finalize()),
    })
}

/// Size and SHA-256 of everything received. Blocking (its own thread).
fn hash_stream(mut rx: mpsc::Receiver<Bytes>) -> (u64, String) {
    let mut hash = Sha256::new();
    let mut size = 0u64;
    while let Some(piece) = rx.blocking_recv() {
        hash.update(&piece);
        size += piece.len() as u64;
    }
    (size, hex(&hash.finalize()))
}

/// Writes a downloaded object to `dest`, decrypting when `key` is set, hashing
/// both sides; fsyncs the file. Blocking (its own thread).
fn open_and_write(
    mut rx: mpsc::Receiver<Bytes>,
    key: Option<SnapshotKey>,
    dest: &FsPath,
    object: &str,
) -> Result<Digests, RemoteError> {
    use std::io::Write;
    let io = |error| RemoteError::Io {
        path: dest.to_path_buf(),
        error,
    };
    let crypt = |error| RemoteError::Crypt {
        object: object.to_string(),
        error,
    };
    let mut file = std::fs::File::create(dest).map_err(io)?;
    let mut decryptor = key.as_ref().map(Decryptor::new);
    let (mut plain_hash, mut object_hash) = (Sha256::new(), Sha256::new());
    let (mut plain_size, mut object_size) = (0u64, 0u64);
    let mut write = |data: &[u8]| -> Result<(), RemoteError> {
        plain_hash.update(data);
        plain_size += data.len() as u64;
        file.write_all(data).map_err(io)
    };
    while let Some(piece) = rx.blocking_recv() {
        object_hash.update(&piece);
        object_size += piece.len() as u64;
        match decryptor.as_mut() {
            Some(dec) => write(&dec.push(&piece).map_err(crypt)?)?,
            None => write(&piece)?,
        }
    }
    if let Some(dec) = decryptor.take() {
        write(&dec.finish().map_err(crypt)?)?;
    }
    file.sync_all().map_err(io)?;
    Ok(Digests {
        plain_size,
        plain_sha256: hex(&plain_hash.finalize()),
        object_size,
        object_sha256: hex(&object_hash.finalize()),
    })
}

/// Start-up recovery's last resort: the newest remote copy that passes every
/// check, downloaded into `backup_dir`. `Ok(None)` when no remote is configured.
/// Blocking: runs the transfer on a runtime of its own (start-up calls this from
/// async code that cannot be suspended here).
pub fn fetch_newest_blocking(config: &Config) -> Result<Option<FetchedSnapshot>, RemoteError> {
    let Some(remote) = Remote::from_config(&config.backup.remote)? else {
        return Ok(None);
    };
    let backup_dir = config.backup_dir.clone();
    let worker = std::thread::Builder::new()
        .name("remote-restore".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| RemoteError::Io {
                    path: backup_dir.clone(),
                    error: e,
                })?;
            runtime.block_on(remote.fetch_verified(None, &backup_dir))
        })
        .map_err(|e| RemoteError::Io {
            path: config.backup_dir.clone(),
            error: e,
        })?;
    match worker.join() {
        Ok(result) => result.map(Some),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_map_to_snapshots() {
        let snapshot = files::snapshot_name(1_700_000_000_123);
        assert_eq!(
            parse_object_name(&snapshot),
            Some((snapshot.clone(), false))
        );
        assert_eq!(
            parse_object_name(&format!("{snapshot}.enc")),
            Some((snapshot.clone(), true))
        );
        assert_eq!(
            parse_object_name(&format!("{snapshot}.manifest.json")),
            None
        );
        assert_eq!(parse_object_name("agentlab.redb"), None);
    }
}
