//! What survives a restart: the data directory and the embedded databases inside it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
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

/// A blocking resource (a SQLite connection, a store over one) shared by async code.
///
/// The gateway's one policy for blocking I/O: async code reaches such a resource only through
/// [`OffThread::run`], which runs the work on tokio's blocking pool, so a slow disk (an SD
/// card in a truck, a `synchronous = FULL` commit) never stalls an async worker thread and,
/// with it, OPC UA, HTTP and the sinks. Code that already runs off the async threads (start-up,
/// a dedicated thread) may use [`OffThread::lock`].
pub struct OffThread<T>(Arc<Mutex<T>>);

impl<T> Clone for OffThread<T> {
    fn clone(&self) -> Self {
        OffThread(self.0.clone())
    }
}

impl<T: Default + Send + 'static> Default for OffThread<T> {
    fn default() -> Self {
        OffThread::new(T::default())
    }
}

/// The blocking task did not complete: it panicked, or the runtime is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("storage task failed: {0}")]
pub struct TaskFailed(String);

impl<T: Send + 'static> OffThread<T> {
    pub fn new(value: T) -> Self {
        OffThread(Arc::new(Mutex::new(value)))
    }

    /// Run `f` on the resource on the blocking pool; calls are serialised by the lock.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut T) -> R + Send + 'static,
    ) -> Result<R, TaskFailed> {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || f(&mut inner.lock()))
            .await
            .map_err(|e| TaskFailed(e.to_string()))
    }

    /// The resource itself, for code that is already off the async threads.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock()
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

    #[tokio::test(flavor = "current_thread")]
    async fn off_thread_work_runs_on_the_blocking_pool_in_call_order() {
        let shared = OffThread::new(Vec::new());
        let async_thread = std::thread::current().id();
        for n in 0..3 {
            let ran_on = shared
                .run(move |v: &mut Vec<i32>| {
                    v.push(n);
                    std::thread::current().id()
                })
                .await
                .unwrap();
            assert_ne!(ran_on, async_thread, "the work ran on the async thread");
        }
        assert_eq!(*shared.lock(), vec![0, 1, 2]);
        let failed = shared.run(|_| -> () { panic!("boom") }).await;
        assert!(failed
            .unwrap_err()
            .to_string()
            .contains("storage task failed"));
        // A panic in one task leaves the resource usable (parking_lot has no poisoning).
        assert_eq!(shared.run(|v| v.len()).await.unwrap(), 3);
    }
}
