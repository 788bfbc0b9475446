//! The embedded historian: every tag's changes from the bus, kept on disk, read back by
//! OPC UA HistoryRead (`ua.rs`).
//!
//! ```text
//! point bus ──► consumer task ──(Arc'd batches, bounded)──► writer thread ──► store.rs
//!                (async, no I/O)                            encode, 1 s WAL flush,
//!                                                           spill, seal, retention
//! ```
//! The consumer only forwards the bus's own batches, so the async threads do no encoding
//! and no I/O; the writer thread owns all of it.

pub mod aggregate;
#[cfg(test)]
mod bench;
pub mod codec;
pub mod events;
pub mod store;
pub mod ua;
pub mod ua_events;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fabrique_adapters::bus::BusEvent;
use fabrique_adapters::{PointBus, PointUpdate, TagCatalog, TagId};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use codec::{ticks_of, Kind};
use store::{Limits, Store, StoreError};

/// `[history]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// On by default: every tag is historized unless `exclude` names it.
    pub enabled: bool,
    /// Where the files go; relative to `storage.data_dir`. Default `history`.
    pub dir: PathBuf,
    /// Samples older than this are evicted (whole segments, oldest first). 0: no age limit.
    pub max_age_hours: f64,
    /// The files never grow past this; the oldest segments are evicted first. 0: no limit.
    pub max_size_mb: u64,
    /// How often the write-ahead log is written: what a kill -9 may lose, at most.
    pub flush_interval_ms: u64,
    /// How often open chunks become a sealed segment (also when `seal_size_mb` is reached).
    pub seal_interval_s: u64,
    pub seal_size_mb: u64,
    /// fdatasync the log at every flush: also survives a power cut, for one disk sync a second.
    pub fsync: bool,
    /// Tag paths (or device paths, prefixes ending in `/`, or `*` globs) that are historized;
    /// empty: all.
    pub include: Vec<String>,
    /// Tag paths, prefixes or globs that are not, e.g. `Stations/Partners/B/` for a device.
    pub exclude: Vec<String>,
    /// Values one HistoryRead returns per node before a continuation point.
    pub max_values_per_read: u32,
    /// The stored events (`<dir>/events/`, HistoryReadEvents) never grow past this; the
    /// oldest files go first. 0: no limit. Their age limit is `max_age_hours`.
    pub events_max_size_mb: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            enabled: true,
            dir: PathBuf::from("history"),
            max_age_hours: 24.0 * 30.0,
            max_size_mb: 2048,
            flush_interval_ms: 1000,
            seal_interval_s: 300,
            seal_size_mb: 32,
            fsync: true,
            include: Vec::new(),
            exclude: Vec::new(),
            max_values_per_read: 100_000,
            events_max_size_mb: 64,
        }
    }
}

impl HistoryConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.max_age_hours.is_finite() && self.max_age_hours >= 0.0) {
            return Err(("history.max_age_hours", "must be 0 or more".into()));
        }
        if !(10..=10_000).contains(&self.flush_interval_ms) {
            return Err((
                "history.flush_interval_ms",
                "must be between 10 and 10000".into(),
            ));
        }
        if !(1..=86_400).contains(&self.seal_interval_s) {
            return Err((
                "history.seal_interval_s",
                "must be between 1 and 86400".into(),
            ));
        }
        if !(1..=4096).contains(&self.seal_size_mb) {
            return Err(("history.seal_size_mb", "must be between 1 and 4096".into()));
        }
        if self.max_size_mb != 0 && self.max_size_mb < 2 * self.seal_size_mb {
            return Err((
                "history.max_size_mb",
                format!(
                    "must be 0 (no limit) or at least twice seal_size_mb ({})",
                    2 * self.seal_size_mb
                ),
            ));
        }
        if self.events_max_size_mb > 1 << 20 {
            return Err((
                "history.events_max_size_mb",
                "must be at most 1048576 (1 TiB); 0: no limit".into(),
            ));
        }
        if self.max_values_per_read == 0 {
            return Err((
                "history.max_values_per_read",
                "must be greater than 0".into(),
            ));
        }
        for (key, patterns) in [
            ("history.include", &self.include),
            ("history.exclude", &self.exclude),
        ] {
            if let Some(p) = patterns.iter().find(|p| p.trim().is_empty()) {
                return Err((key, format!("empty pattern {p:?}")));
            }
        }
        Ok(())
    }

    pub fn directory(&self, data_dir: &Path) -> PathBuf {
        data_dir.join(&self.dir)
    }

    /// Whether the tag at `path` is historized.
    pub fn historizes(&self, path: &str) -> bool {
        self.enabled
            && (self.include.is_empty() || self.include.iter().any(|p| matches(p, path)))
            && !self.exclude.iter().any(|p| matches(p, path))
    }

    fn limits(&self) -> Limits {
        Limits {
            max_age_ticks: (self.max_age_hours * 3600.0 * 1e7) as i64,
            max_bytes: self.max_size_mb.saturating_mul(1024 * 1024),
            seal_bytes: (self.seal_size_mb as usize).saturating_mul(1024 * 1024),
            fsync: self.fsync,
        }
    }
}

/// `Stations/A/` matches everything below; `*` matches any run of characters; otherwise exact.
fn matches(pattern: &str, path: &str) -> bool {
    if pattern.ends_with('/') {
        return path.starts_with(pattern);
    }
    if !pattern.contains('*') {
        return pattern == path;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !path.starts_with(first) || path.len() < first.len() + last.len() || !path.ends_with(last) {
        return false;
    }
    let mut rest = &path[first.len()..path.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

pub fn now_ticks() -> i64 {
    ticks_of(fabrique_adapters::Timestamp::now())
}

/// Batches waiting for the writer thread; beyond this, batches are dropped and counted
/// rather than held: the bus must never wait for the disk.
const QUEUE: usize = 4096;

/// Points waiting for the writer thread, at most (about 50 MB; one second of 100,000 tags at
/// 10 Hz). The queue is bounded by points too: 4096 batches of 100,000 points would be 16 GB,
/// and a writer a few seconds behind (a seal, a slow disk) held hundreds of MB
/// (BENCHMARKS.md, "Session 5"). Beyond it, batches are dropped and counted like a full queue.
const MAX_QUEUED_POINTS: usize = 1_000_000;

/// The running historian, shared with the OPC UA node manager.
pub struct Historian {
    pub store: Store,
    /// The stored events and alarm state changes (HistoryReadEvents); `None` when its folder
    /// could not be opened (logged: the tags' history still works).
    pub events: Option<Arc<events::EventStore>>,
    pub config: HistoryConfig,
    bus: PointBus,
}

impl Historian {
    /// Open the store (sealing what a previous run left in its log).
    pub fn open(
        config: &HistoryConfig,
        data_dir: &Path,
        bus: PointBus,
    ) -> Result<Arc<Historian>, StoreError> {
        let dir = config.directory(data_dir);
        let started = Instant::now();
        let store = Store::open(&dir, config.limits())?;
        tracing::info!(
            dir = %dir.display(),
            segments = store.counters.segments.load(Ordering::Relaxed),
            open_ms = started.elapsed().as_millis() as u64,
            "historian ready"
        );
        let limits = events::EventLimits {
            max_bytes: config.events_max_size_mb.saturating_mul(1024 * 1024),
            max_age_ns: (config.max_age_hours * 3600.0 * 1e9) as i64,
            flush: Duration::from_millis(config.flush_interval_ms),
            fsync: config.fsync,
        };
        let events = events::EventStore::open(dir.join("events"), limits)
            .inspect_err(|error| tracing::error!(%error, "event history is off"))
            .ok();
        Ok(Arc::new(Historian {
            store,
            events,
            config: config.clone(),
            bus,
        }))
    }

    /// Whether `tag` is historized, by the current catalogue.
    pub fn historizes(&self, catalog: &TagCatalog, tag: TagId) -> bool {
        catalog
            .get(tag)
            .is_some_and(|e| self.config.historizes(&e.spec.path))
    }

    pub fn catalog(&self) -> Arc<TagCatalog> {
        self.bus.catalog()
    }

    /// Start the writer thread and the bus consumer; both end at `shutdown` (the writer
    /// flushes its log first).
    pub fn start(self: &Arc<Self>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let (tx, rx) = sync_channel::<Arc<Vec<PointUpdate>>>(QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = self.clone();
        let writer_queued = queued.clone();
        let thread = std::thread::Builder::new()
            .name("historian".into())
            .spawn(move || writer.write_loop(rx, &writer_queued));
        if let Err(error) = &thread {
            tracing::error!(%error, "cannot start the historian thread; history is off");
        }
        let consumer = self.clone();
        tokio::spawn(async move {
            consumer.consume(tx, &queued, shutdown).await;
            if let Ok(thread) = thread {
                // The channel is closed: the thread flushes and returns.
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        })
    }

    async fn consume(
        &self,
        tx: SyncSender<Arc<Vec<PointUpdate>>>,
        queued: &AtomicUsize,
        shutdown: CancellationToken,
    ) {
        let mut changes = self.bus.subscribe();
        // The values the bus holds at start are history too (their own timestamps).
        let snapshot = Arc::new(self.bus.snapshot());
        queued.fetch_add(snapshot.len(), Ordering::Relaxed);
        if tx.try_send(snapshot).is_err() {
            queued.store(0, Ordering::Relaxed);
        }
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                event = changes.recv() => event,
            };
            let batch = match event {
                Some(BusEvent::Changes(batch)) => batch,
                Some(BusEvent::Resync { state, .. }) => Arc::new(state),
                None => break,
            };
            let points = batch.len();
            if queued.load(Ordering::Relaxed) + points > MAX_QUEUED_POINTS {
                self.store
                    .counters
                    .dropped_batches
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            queued.fetch_add(points, Ordering::Relaxed);
            match tx.try_send(batch) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    queued.fetch_sub(points, Ordering::Relaxed);
                    self.store
                        .counters
                        .dropped_batches
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => break,
            }
        }
    }

    fn write_loop(&self, rx: Receiver<Arc<Vec<PointUpdate>>>, queued: &AtomicUsize) {
        let flush_every = Duration::from_millis(self.config.flush_interval_ms);
        let seal_every = Duration::from_secs(self.config.seal_interval_s);
        let mut next_flush = Instant::now() + flush_every;
        let mut next_seal = Instant::now() + seal_every;
        // Tag index → its kind if historized; rebuilt when the catalogue grows (reload).
        let mut kinds: Vec<Option<Kind>> = Vec::new();
        let mut catalog_len = usize::MAX;
        let mut logged_error = false;
        loop {
            let timeout = next_flush.saturating_duration_since(Instant::now());
            match rx.recv_timeout(timeout) {
                Ok(batch) => {
                    queued.fetch_sub(batch.len(), Ordering::Relaxed);
                    let catalog = self.bus.catalog();
                    if catalog.len() != catalog_len {
                        catalog_len = catalog.len();
                        kinds = (0..catalog_len)
                            .map(|i| {
                                let entry = catalog.get(TagId(i as u32))?;
                                self.config
                                    .historizes(&entry.spec.path)
                                    .then(|| Kind::of(entry.spec.data_type))
                            })
                            .collect();
                    }
                    self.store.append_many(batch.iter().filter_map(|u| {
                        let kind = (*kinds.get(u.tag.index())?)?;
                        // A tag that never had a value has nothing to remember yet.
                        if u.point.timestamp.is_null() {
                            return None;
                        }
                        Some((
                            u.tag,
                            kind,
                            ticks_of(u.point.timestamp),
                            u.point.value.as_ref(),
                            u.point.quality,
                        ))
                    }));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if let Err(error) = self.store.flush() {
                        tracing::error!(%error, "history: last flush failed");
                    }
                    return;
                }
            }
            let now = Instant::now();
            if now >= next_flush {
                next_flush = now + flush_every;
                let result = if now >= next_seal
                    || self.store.open_bytes() >= self.config.limits().seal_bytes
                {
                    next_seal = now + seal_every;
                    self.store.seal()
                } else {
                    self.store.flush()
                };
                match result {
                    Ok(()) => logged_error = false,
                    Err(error) => {
                        self.store
                            .counters
                            .write_errors
                            .fetch_add(1, Ordering::Relaxed);
                        // Once per streak of failures, not once a second.
                        if !logged_error {
                            tracing::error!(%error, "history write failed; retrying every flush");
                            logged_error = true;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_select_tags_devices_and_globs() {
        assert!(matches("Stations/A/", "Stations/A/Dev/T"));
        assert!(!matches("Stations/A/", "Stations/AB/Dev/T"));
        assert!(matches("Line/State", "Line/State"));
        assert!(matches("Diagnostics/*", "Diagnostics/Sinks/Mqtt/Sent"));
        assert!(matches(
            "*/Temperature*",
            "Stations/P/Printer/TemperatureBed"
        ));
        assert!(!matches("*/Temperature*", "Stations/P/Printer/Speed"));
        let config = HistoryConfig {
            exclude: vec!["Stations/Partners/B/".into()],
            ..HistoryConfig::default()
        };
        assert!(config.historizes("Stations/Partners/A/X"));
        assert!(!config.historizes("Stations/Partners/B/X"));
    }

    #[test]
    fn bad_keys_are_named() {
        let config = HistoryConfig {
            max_size_mb: 10,
            ..HistoryConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().0, "history.max_size_mb");
        let config = HistoryConfig {
            flush_interval_ms: 0,
            ..HistoryConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().0,
            "history.flush_interval_ms"
        );
    }
}
