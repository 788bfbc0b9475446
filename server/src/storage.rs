//! What survives a restart: the data directory and the embedded databases inside it.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

/// `[storage]`: where the gateway keeps what must survive a restart (buffers, history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Created on demand; relative paths are relative to the working directory.
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("data"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot create the data directory {path} (`storage.data_dir`): {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

impl StorageConfig {
    /// The data directory, created if missing.
    pub fn ensure_dir(&self) -> Result<&Path, StorageError> {
        std::fs::create_dir_all(&self.data_dir).map_err(|source| StorageError::CreateDir {
            path: self.data_dir.clone(),
            source,
        })?;
        Ok(&self.data_dir)
    }

    /// Open (or create) the SQLite database `file` in the data directory.
    ///
    /// Write-ahead logging lets readers (statistics, HTTP) run beside the one writer;
    /// `synchronous = FULL` makes a committed transaction durable before the caller
    /// acknowledges it (a survey answer answered 201 must survive a power cut).
    pub fn open_database(&self, file: &str) -> Result<Connection, StorageError> {
        let path = self.ensure_dir()?.join(file);
        let open = |path: &Path| -> rusqlite::Result<Connection> {
            let connection = Connection::open(path)?;
            connection.pragma_update(None, "journal_mode", "WAL")?;
            connection.pragma_update(None, "synchronous", "FULL")?;
            connection.busy_timeout(std::time::Duration::from_secs(5))?;
            Ok(connection)
        };
        open(&path).map_err(|source| StorageError::Open { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_is_created_in_a_new_data_directory_and_kept() {
        let dir = std::env::temp_dir().join(format!("fabrique-storage-{}", std::process::id()));
        let storage = StorageConfig {
            data_dir: dir.join("nested"),
        };
        {
            let db = storage.open_database("test.sqlite").unwrap();
            db.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (42);")
                .unwrap();
        }
        let db = storage.open_database("test.sqlite").unwrap();
        let x: i64 = db.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 42);
        let mode: String = db
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
