//! Typed storage errors.
//!
//! The distinction that matters to callers: [`StoreError::AlreadyOpen`] (another
//! process — probably the running service — holds the file: talk to it instead),
//! [`StoreError::Corrupt`] (the file is damaged: move it aside and restore a
//! snapshot), and [`StoreError::Io`] (the disk: full, read-only, gone). Errors are
//! `Clone` because one failed group commit answers every caller in the batch.

use std::path::{Path, PathBuf};

use super::codec::DecodeError;

/// An error of the storage layer.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds the database file.
    #[error(
        "database {path} is already open by another process (the agentlab service is probably running; use its HTTP API or stop it first)"
    )]
    AlreadyOpen {
        /// The file.
        path: PathBuf,
    },
    /// The database file is damaged.
    #[error(
        "database {path} is corrupt: {detail} (restore a snapshot: `agentlab restore --latest`)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What redb said.
        detail: String,
    },
    /// The file was written by a newer or unknown schema.
    #[error(
        "database schema version {found} is newer than this build supports ({supported}); upgrade agentlab"
    )]
    SchemaTooNew {
        /// Version in the file.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
    /// An I/O error: disk full, read-only folder, missing file.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// A stored value could not be decoded.
    #[error("cannot decode a value of table `{table}`: {source}")]
    Decode {
        /// The table.
        table: &'static str,
        /// Why.
        source: DecodeError,
    },
    /// A record that must exist does not.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `task 42`.
        what: String,
    },
    /// An operation does not fit the record's current state.
    #[error("{0}")]
    Conflict(String),
    /// Input refused by the storage layer (e.g. an oversized value).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The store was closed (the service is shutting down).
    #[error("the store is closed")]
    Closed,
    /// Any other redb error.
    #[error("storage error: {0}")]
    Internal(String),
}

impl StoreError {
    pub(crate) fn decode(table: &'static str, source: DecodeError) -> Self {
        StoreError::Decode { table, source }
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        StoreError::NotFound { what: what.into() }
    }

    /// Whether the file itself is damaged (and a restore is the remedy).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. })
    }

    /// The same error naming `shown` where it named `actual` (or no file): for
    /// work done on a private copy of `shown`.
    pub(crate) fn with_path_shown(self, actual: &Path, shown: &Path) -> Self {
        let named = |path: PathBuf| {
            if path == actual || path.as_os_str().is_empty() {
                shown.to_path_buf()
            } else {
                path
            }
        };
        match self {
            StoreError::Corrupt { path, detail } => StoreError::Corrupt {
                path: named(path),
                detail,
            },
            StoreError::AlreadyOpen { path } => StoreError::AlreadyOpen { path: named(path) },
            StoreError::Io(text) => StoreError::Io(
                text.replace(&actual.display().to_string(), &shown.display().to_string()),
            ),
            other => other,
        }
    }
}

fn from_storage(e: redb::StorageError) -> StoreError {
    match e {
        redb::StorageError::Io(io) => StoreError::Io(io.to_string()),
        redb::StorageError::Corrupted(detail) => StoreError::Corrupt {
            path: PathBuf::new(),
            detail,
        },
        other => StoreError::Internal(other.to_string()),
    }
}

impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        from_storage(e)
    }
}

impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        match e {
            redb::TableError::Storage(s) => from_storage(s),
            other => StoreError::Internal(other.to_string()),
        }
    }
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        match e {
            redb::TransactionError::Storage(s) => from_storage(s),
            other => StoreError::Internal(other.to_string()),
        }
    }
}

impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        match e {
            redb::CommitError::Storage(s) => from_storage(s),
            other => StoreError::Internal(other.to_string()),
        }
    }
}

impl From<redb::SetDurabilityError> for StoreError {
    fn from(e: redb::SetDurabilityError) -> Self {
        StoreError::Internal(e.to_string())
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// Maps an error from opening the database, naming the file.
pub(crate) fn open_error(path: &std::path::Path, e: redb::DatabaseError) -> StoreError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyOpen {
            path: path.to_path_buf(),
        },
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
            StoreError::Corrupt {
                path: path.to_path_buf(),
                detail,
            }
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData
                || io.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: io.to_string(),
            }
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => {
            StoreError::Io(format!("{}: {io}", path.display()))
        }
        redb::DatabaseError::RepairAborted => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: "repair aborted".into(),
        },
        redb::DatabaseError::UpgradeRequired(v) => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("file format {v} needs an upgrade"),
        },
        other => StoreError::Internal(format!("{}: {other}", path.display())),
    }
}
