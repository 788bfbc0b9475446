//! The spool's fsync: what was appended reaches the disk itself (not only the OS cache) at most
//! `streams.spool_fsync_ms` after it was flushed, so a power cut loses at most that much.
//!
//! A dedicated thread does the syncing: an fsync can take tens of milliseconds on an SD card
//! or a busy disk, and the sinks call `flush` from async tasks. With an interval of 0 the sync
//! happens in `flush` itself, before it returns.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// The default of `streams.spool_fsync_ms`: what a power cut can lose at most.
pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_secs(1);

struct State {
    /// The active segment.
    file: Arc<File>,
    /// Flushed since the last sync.
    dirty: bool,
    /// A segment was created since the last sync: its directory entry must be synced too.
    new_file: bool,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// fsyncs done (segment and directory together count one).
    syncs: AtomicU64,
    dir: PathBuf,
}

impl Shared {
    fn sync(&self, file: &File, new_file: bool) -> io::Result<()> {
        file.sync_data()?;
        if new_file {
            File::open(&self.dir)?.sync_all()?;
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

pub struct Syncer {
    shared: Arc<Shared>,
    interval: Duration,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Syncs `file` (the active segment in `dir`) at most every `interval` after a flush.
    pub fn start(dir: PathBuf, file: Arc<File>, interval: Duration) -> Syncer {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                file,
                dirty: false,
                new_file: true,
                stop: false,
            }),
            wake: Condvar::new(),
            syncs: AtomicU64::new(0),
            dir,
        });
        let thread = (!interval.is_zero()).then(|| {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("spool-fsync".into())
                .spawn(move || run(&shared, interval))
                .ok()
        });
        Syncer {
            shared,
            interval,
            thread: thread.flatten(),
        }
    }

    /// What was appended has just been handed to the OS.
    pub fn flushed(&self) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        if self.interval.is_zero() || self.thread.is_none() {
            let (file, new_file) = (state.file.clone(), std::mem::take(&mut state.new_file));
            drop(state);
            return self.shared.sync(&file, new_file);
        }
        if !state.dirty {
            state.dirty = true;
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// The active segment changed (the previous one was synced when it was closed).
    pub fn switch_to(&self, file: Arc<File>) {
        let mut state = self.shared.state.lock();
        state.file = file;
        state.new_file = true;
    }

    /// fsyncs done since the spool was opened.
    #[cfg(test)]
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }
}

fn run(shared: &Shared, interval: Duration) {
    let mut last_sync: Option<Instant> = None;
    loop {
        let mut state = shared.state.lock();
        while !state.dirty && !state.stop {
            shared.wake.wait(&mut state);
        }
        if !state.dirty {
            return;
        }
        // At most one sync per interval: flushes in between join the next one.
        if let Some(due) = last_sync.map(|at| at + interval) {
            while !state.stop {
                let now = Instant::now();
                if now >= due {
                    break;
                }
                shared.wake.wait_for(&mut state, due - now);
            }
        }
        state.dirty = false;
        let (file, new_file) = (state.file.clone(), std::mem::take(&mut state.new_file));
        let stop = state.stop;
        drop(state);
        if let Err(error) = shared.sync(&file, new_file) {
            tracing::warn!(dir = %shared.dir.display(), %error, "spool: fsync failed");
        }
        last_sync = Some(Instant::now());
        if stop {
            return;
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
