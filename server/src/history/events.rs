//! Stored events: what HistoryReadEvents answers from (ua_events.rs).
//!
//! Events are rare (a few a minute: orders, devices lost, alarm state changes, the audit of
//! writes and method calls), so the store is
//! plain: one JSON line per event in `<history dir>/events/ev-<seq>.jsonl`, appended by a
//! dedicated thread (never the async threads), written at once and synced every
//! `history.flush_interval_ms` (a kill -9 loses at most that). A file is closed at an eighth of
//! `history.events_max_size_mb` or after an hour; closed files go, oldest first, when the
//! total passes `events_max_size_mb` or their last event is older than `max_age_hours`
//! (counted and logged). A torn last line (a kill in the middle of a write) is skipped on read.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fabrique_adapters::Timestamp;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::alarms::{AlarmLimits, ConditionKind, ConditionState, LimitLevel};
use crate::events::{Happening, What};

/// Events waiting for the writer thread; more are dropped and counted.
const QUEUE: usize = 10_000;
/// A file is closed after this long even if small, so that age retention can remove it.
const ROTATE_AFTER: Duration = Duration::from_secs(3600);

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The event's Time (nanoseconds since the Unix epoch).
    pub time: i64,
    /// When the gateway reported it.
    pub received: i64,
    /// The EventId it was reported with, in hex.
    pub event_id: String,
    /// The object below `Fabrique` it is about.
    pub source: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kind {
    OrderSubmitted {
        order_id: String,
    },
    OrderDelivered {
        order_id: String,
    },
    PartScrapped {
        order_id: String,
        verdict: String,
    },
    DeviceConnection {
        connected: bool,
        error: String,
    },
    StopChanged {
        town: String,
    },
    /// A condition's state change.
    Condition {
        name: String,
        enabled: bool,
        active: bool,
        acked: bool,
        confirmed: bool,
        severity: u16,
        message: String,
        comment: String,
        /// A limit alarm's level (none while inactive or for an off-normal alarm).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        level: Option<LimitLevel>,
        /// A limit alarm's limits; none for an off-normal alarm.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limits: Option<AlarmLimits>,
    },
    /// A write or a method call, who made it and how it ended (OPC UA's audit events).
    Audit(AuditRecord),
}

/// What an audit event says: enough to rebuild the `AuditWriteUpdateEventType` or
/// `AuditUpdateMethodEventType` that reported it (opcua/events.rs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The user name of the session (`ClientUserId`).
    pub user: String,
    /// The server's application URI (`ServerId`).
    pub server_id: String,
    /// The node written, or the object a method was called on (`SourceNode`), as
    /// `ns=<i>;s=...`.
    pub node: String,
    /// The method called (`MethodId`); none for a write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The StatusCode it ended with.
    pub status: u32,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// Condition names as `&'static str` (what `ConditionState` holds): a gateway has a handful.
fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut names = NAMES.lock();
    let names = names.get_or_insert_with(HashSet::new);
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

impl StoredEvent {
    pub fn happening(happening: &Happening, event_id: &[u8]) -> Self {
        let kind = match &happening.what {
            What::OrderSubmitted { order_id } => Kind::OrderSubmitted {
                order_id: order_id.clone(),
            },
            What::OrderDelivered { order_id } => Kind::OrderDelivered {
                order_id: order_id.clone(),
            },
            What::PartScrapped { order_id, verdict } => Kind::PartScrapped {
                order_id: order_id.clone(),
                verdict: verdict.clone(),
            },
            What::DeviceConnection { connected, error } => Kind::DeviceConnection {
                connected: *connected,
                error: error.clone(),
            },
            What::StopChanged { town } => Kind::StopChanged { town: town.clone() },
        };
        StoredEvent {
            time: happening.time.as_nanos(),
            received: Timestamp::now().as_nanos(),
            event_id: hex(event_id),
            source: happening.source.clone(),
            kind,
        }
    }

    pub fn condition(state: &ConditionState) -> Self {
        StoredEvent {
            time: state.time.as_nanos(),
            received: Timestamp::now().as_nanos(),
            event_id: hex(&state.event_id),
            source: state.source.clone(),
            kind: Kind::Condition {
                name: state.name.to_owned(),
                enabled: state.enabled,
                active: state.active,
                acked: state.acked,
                confirmed: state.confirmed,
                severity: state.severity,
                message: state.message.clone(),
                comment: state.comment.clone(),
                level: match &state.kind {
                    ConditionKind::ExclusiveLimit { level, .. } => *level,
                    ConditionKind::OffNormal => None,
                },
                limits: match &state.kind {
                    ConditionKind::ExclusiveLimit { limits, .. } => Some(limits.clone()),
                    ConditionKind::OffNormal => None,
                },
            },
        }
    }

    /// An audit event, reported on `Fabrique` (its `source`, the empty path) and `Server`.
    pub fn audit(record: AuditRecord, time: Timestamp, event_id: &[u8]) -> Self {
        StoredEvent {
            time: time.as_nanos(),
            received: Timestamp::now().as_nanos(),
            event_id: hex(event_id),
            source: String::new(),
            kind: Kind::Audit(record),
        }
    }

    pub fn event_id(&self) -> Vec<u8> {
        unhex(&self.event_id)
    }

    /// What it was made of: a happening, or a condition's state.
    pub fn origin(&self) -> Origin {
        let time = Timestamp::from_nanos(self.time);
        let what = match &self.kind {
            Kind::OrderSubmitted { order_id } => What::OrderSubmitted {
                order_id: order_id.clone(),
            },
            Kind::OrderDelivered { order_id } => What::OrderDelivered {
                order_id: order_id.clone(),
            },
            Kind::PartScrapped { order_id, verdict } => What::PartScrapped {
                order_id: order_id.clone(),
                verdict: verdict.clone(),
            },
            Kind::DeviceConnection { connected, error } => What::DeviceConnection {
                connected: *connected,
                error: error.clone(),
            },
            Kind::StopChanged { town } => What::StopChanged { town: town.clone() },
            Kind::Audit(record) => return Origin::Audit(record.clone()),
            Kind::Condition {
                name,
                enabled,
                active,
                acked,
                confirmed,
                severity,
                message,
                comment,
                level,
                limits,
            } => {
                return Origin::Condition(ConditionState {
                    kind: match limits {
                        Some(limits) => ConditionKind::ExclusiveLimit {
                            level: *level,
                            limits: limits.clone(),
                        },
                        None => ConditionKind::OffNormal,
                    },
                    name: intern(name),
                    source: self.source.clone(),
                    enabled: *enabled,
                    active: *active,
                    acked: *acked,
                    confirmed: *confirmed,
                    severity: *severity,
                    message: message.clone(),
                    comment: comment.clone(),
                    time,
                    event_id: self.event_id(),
                })
            }
        };
        Origin::Happening(Happening {
            what,
            source: self.source.clone(),
            time,
        })
    }
}

/// What a stored event reported.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    Happening(Happening),
    Condition(ConditionState),
    Audit(AuditRecord),
}

/// Bounds of the store.
#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    /// 0: no limit.
    pub max_bytes: u64,
    /// 0: no limit (nanoseconds).
    pub max_age_ns: i64,
    pub flush: Duration,
    pub fsync: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EventStoreError {
    #[error("event history: cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("event history: cannot start its writer thread: {0}")]
    Thread(std::io::Error),
}

/// The store: `record` from anywhere (never blocks), `read` from a blocking context.
pub struct EventStore {
    dir: PathBuf,
    sender: SyncSender<StoredEvent>,
    /// Events dropped because the writer thread fell behind.
    pub dropped: AtomicU64,
    /// Events removed by retention.
    pub evicted: Arc<AtomicU64>,
    /// Held while the writer appends, so a read never sees half a line of the open file.
    writing: Arc<Mutex<()>>,
}

fn seq_of(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix("ev-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

/// The store's files, oldest first.
fn files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut files: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| Some((seq_of(&p)?, p)))
        .collect();
    files.sort();
    files
}

impl EventStore {
    /// Opens (creates) `dir` and starts the writer thread.
    pub fn open(dir: PathBuf, limits: EventLimits) -> Result<Arc<Self>, EventStoreError> {
        fs::create_dir_all(&dir).map_err(|source| EventStoreError::Dir {
            path: dir.clone(),
            source,
        })?;
        let (sender, receiver) = sync_channel(QUEUE);
        let writing = Arc::new(Mutex::new(()));
        let evicted = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            dir: dir.clone(),
            limits,
            writing: writing.clone(),
            evicted: evicted.clone(),
            file: None,
            failing: false,
        };
        std::thread::Builder::new()
            .name("event-history".into())
            .spawn(move || writer.run(receiver))
            .map_err(EventStoreError::Thread)?;
        Ok(Arc::new(EventStore {
            dir,
            sender,
            dropped: AtomicU64::new(0),
            evicted,
            writing,
        }))
    }

    /// Queue `event` for the writer thread (dropped and counted when it is behind).
    pub fn record(&self, event: StoredEvent) {
        match self.sender.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!("event history: the writer is behind; events dropped");
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Every stored event with `from <= time <= to`, oldest first. Blocking: file reads.
    pub fn read(&self, from: i64, to: i64) -> Vec<StoredEvent> {
        let _writing = self.writing.lock();
        let mut out = Vec::new();
        for (_, path) in files(&self.dir) {
            let Ok(file) = File::open(&path) else {
                continue;
            };
            for line in BufReader::new(file).split(b'\n').map_while(Result::ok) {
                // A torn or foreign line is skipped: the rest of the file is still good.
                let Ok(event) = serde_json::from_slice::<StoredEvent>(&line) else {
                    continue;
                };
                if (from..=to).contains(&event.time) {
                    out.push(event);
                }
            }
        }
        // Files are in writing order; events of one file nearly so (a source's clock may lag).
        out.sort_by_key(|e| e.time);
        out
    }

    /// The last `n` conditions' state changes stored, newest first (what `GET /api/alarms`
    /// lists as recent after a restart). Reads the files newest first and stops as soon as
    /// it has `n`, so a long history costs no more than its last files. Blocking: file reads.
    pub fn latest_conditions(&self, n: usize) -> Vec<ConditionState> {
        let _writing = self.writing.lock();
        let mut out: Vec<StoredEvent> = Vec::new();
        for (_, path) in files(&self.dir).into_iter().rev() {
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let mut of_file: Vec<StoredEvent> = BufReader::new(file)
                .split(b'\n')
                .map_while(Result::ok)
                // A torn or foreign line is skipped, as by `read`.
                .filter_map(|line| serde_json::from_slice::<StoredEvent>(&line).ok())
                .filter(|e| matches!(e.kind, Kind::Condition { .. }))
                .collect();
            of_file.reverse();
            out.extend(of_file);
            if out.len() >= n {
                break;
            }
        }
        // Newest first by Time; the stable sort keeps writing order among equal times.
        out.sort_by_key(|e| std::cmp::Reverse(e.time));
        out.truncate(n);
        out.iter()
            .filter_map(|e| match e.origin() {
                Origin::Condition(state) => Some(state),
                _ => None,
            })
            .collect()
    }
}

struct OpenFile {
    file: File,
    bytes: u64,
    opened: Instant,
    dirty: bool,
}

struct Writer {
    dir: PathBuf,
    limits: EventLimits,
    writing: Arc<Mutex<()>>,
    evicted: Arc<AtomicU64>,
    file: Option<OpenFile>,
    /// A write failed and none succeeded since: logged once until it works again.
    failing: bool,
}

impl Writer {
    fn run(mut self, receiver: Receiver<StoredEvent>) {
        let mut last_sync = Instant::now();
        loop {
            match receiver.recv_timeout(self.limits.flush) {
                Ok(event) => self.append(&event),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.sync();
                    return;
                }
            }
            if last_sync.elapsed() >= self.limits.flush {
                self.sync();
                last_sync = Instant::now();
            }
        }
    }

    fn rotate_at(&self) -> u64 {
        match self.limits.max_bytes {
            0 => 64 << 20,
            max => (max / 8).max(4096),
        }
    }

    fn append(&mut self, event: &StoredEvent) {
        let Ok(mut line) = serde_json::to_vec(event) else {
            return;
        };
        line.push(b'\n');
        let rotate = self.file.as_ref().is_some_and(|f| {
            f.bytes + line.len() as u64 > self.rotate_at() || f.opened.elapsed() >= ROTATE_AFTER
        });
        if rotate {
            self.sync();
            self.file = None;
            self.retain();
        }
        if self.file.is_none() {
            let seq = files(&self.dir).last().map_or(1, |(s, _)| s + 1);
            let path = self.dir.join(format!("ev-{seq:08}.jsonl"));
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(file) => {
                    self.file = Some(OpenFile {
                        file,
                        bytes: 0,
                        opened: Instant::now(),
                        dirty: false,
                    })
                }
                Err(error) => {
                    if !std::mem::replace(&mut self.failing, true) {
                        tracing::error!(%error, path = %path.display(), "event history: cannot open; events are lost until it can");
                    }
                    return;
                }
            }
        }
        let Some(open) = self.file.as_mut() else {
            return;
        };
        let _writing = self.writing.lock();
        // One write per event (they are rare): readers see it at once, a kill -9 keeps it.
        if let Err(error) = open.file.write_all(&line) {
            if !std::mem::replace(&mut self.failing, true) {
                tracing::error!(%error, "event history: cannot write; events are lost until it can");
            }
            // A partial line may be there: the next line starts a new file.
            self.file = None;
            return;
        }
        if std::mem::replace(&mut self.failing, false) {
            tracing::info!("event history: writing again");
        }
        open.bytes += line.len() as u64;
        open.dirty = true;
    }

    fn sync(&mut self) {
        if let Some(open) = self.file.as_mut().filter(|f| f.dirty) {
            if self.limits.fsync {
                if let Err(error) = open.file.sync_data() {
                    tracing::error!(%error, "event history: cannot sync");
                }
            }
            open.dirty = false;
        }
    }

    /// Closed files beyond the size or the age limit go, oldest first.
    fn retain(&self) {
        let closed = files(&self.dir);
        let sizes: Vec<u64> = closed
            .iter()
            .map(|(_, p)| fs::metadata(p).map_or(0, |m| m.len()))
            .collect();
        let mut total: u64 = sizes.iter().sum();
        let now = std::time::SystemTime::now();
        for ((_, path), size) in closed.iter().zip(sizes) {
            let too_big = self.limits.max_bytes > 0 && total > self.limits.max_bytes;
            let too_old = self.limits.max_age_ns > 0
                && fs::metadata(path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age.as_nanos() > self.limits.max_age_ns as u128);
            if !too_big && !too_old {
                break;
            }
            let events = fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
            let _writing = self.writing.lock();
            if fs::remove_file(path).is_ok() {
                total -= size;
                self.evicted.fetch_add(events as u64, Ordering::Relaxed);
                tracing::info!(
                    events,
                    file = %path.display(),
                    "event history: oldest file evicted by retention"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bytes: u64) -> EventLimits {
        EventLimits {
            max_bytes,
            max_age_ns: 0,
            flush: Duration::from_millis(10),
            fsync: false,
        }
    }

    fn happening(n: i64) -> StoredEvent {
        StoredEvent::happening(
            &Happening {
                what: What::OrderSubmitted {
                    order_id: format!("order-{n}"),
                },
                source: "Line".into(),
                time: Timestamp::from_nanos(n),
            },
            &[1, 2, n as u8],
        )
    }

    fn wait_for(store: &EventStore, n: usize) -> Vec<StoredEvent> {
        for _ in 0..500 {
            let got = store.read(i64::MIN, i64::MAX);
            if got.len() >= n {
                return got;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        store.read(i64::MIN, i64::MAX)
    }

    #[test]
    fn events_and_conditions_round_trip_and_read_by_time() {
        let dir = std::env::temp_dir().join(format!("fgh-events-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = EventStore::open(dir.join("events"), limits(0)).unwrap();
        let alarms = crate::alarms::Alarms::default();
        let state = alarms
            .device_connection(
                "Stations/P/press",
                false,
                "refused",
                Timestamp::from_nanos(5),
            )
            .unwrap();
        store.record(happening(1));
        store.record(StoredEvent::condition(&state));
        store.record(happening(9));
        let audit = AuditRecord {
            user: "operator".into(),
            server_id: "urn:x".into(),
            node: "ns=2;s=Fabrique/Line".into(),
            method: Some("ns=2;s=Fabrique/Line/SubmitOrder".into()),
            status: 0x8000_0000,
        };
        store.record(StoredEvent::audit(
            audit.clone(),
            Timestamp::from_nanos(12),
            &[7],
        ));
        let all = wait_for(&store, 4);
        assert_eq!(all.len(), 4);
        assert_eq!(all[3].origin(), Origin::Audit(audit));
        assert_eq!(all[3].source, "");
        let Origin::Happening(first) = all[0].origin() else {
            panic!("a happening: {:?}", all[0]);
        };
        assert_eq!(first.source, "Line");
        assert_eq!(all[0].event_id(), vec![1, 2, 1]);
        assert_eq!(all[1].origin(), Origin::Condition(state));
        let middle = store.read(2, 8);
        assert_eq!(middle.len(), 1);
        assert_eq!(middle[0].time, 5);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_latest_conditions_come_newest_first_without_the_other_events() {
        let dir = std::env::temp_dir().join(format!("fgh-events-latest-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = EventStore::open(dir.join("events"), limits(0)).unwrap();
        let alarms = crate::alarms::Alarms::default();
        let t = Timestamp::from_nanos;
        let lost = alarms
            .device_connection("Stations/P/press", false, "refused", t(5))
            .unwrap();
        let back = alarms
            .device_connection("Stations/P/press", true, "", t(7))
            .unwrap();
        store.record(happening(1));
        store.record(StoredEvent::condition(&lost));
        store.record(happening(6));
        store.record(StoredEvent::condition(&back));
        store.record(happening(9));
        wait_for(&store, 5);
        assert_eq!(store.latest_conditions(10), vec![back.clone(), lost]);
        assert_eq!(store.latest_conditions(1), vec![back]);
        assert!(store.latest_conditions(0).is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_the_size_limit_evicts_oldest_first() {
        let dir = std::env::temp_dir().join(format!("fgh-events-evict-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let events = dir.join("events");
        fs::create_dir_all(&events).unwrap();
        let good = serde_json::to_string(&happening(1)).unwrap();
        fs::write(
            events.join("ev-00000001.jsonl"),
            format!("{good}\n{{\"time\":"),
        )
        .unwrap();
        let store = EventStore::open(events.clone(), limits(8192)).unwrap();
        assert_eq!(store.read(i64::MIN, i64::MAX).len(), 1);
        for n in 2..200 {
            store.record(happening(n));
        }
        let kept = wait_for(&store, 1);
        // Wait until every event is written: the newest is there.
        for _ in 0..500 {
            if store.read(199, 199).len() == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let kept_after = store.read(i64::MIN, i64::MAX);
        assert!(kept_after.len() < 199, "{}", kept.len());
        assert_eq!(kept_after.last().unwrap().time, 199);
        assert!(store.evicted.load(Ordering::Relaxed) > 0);
        let total: u64 = files(&events)
            .iter()
            .map(|(_, p)| fs::metadata(p).unwrap().len())
            .sum();
        // Closed files within the limit, plus the open one (up to 4 KiB, the smallest file).
        assert!(total <= 8192 + 4096 + 512, "{total}");
        // The oldest went first: what is kept is the newest run, without a gap.
        let times: Vec<i64> = kept_after.iter().map(|e| e.time).collect();
        assert!(times.windows(2).all(|w| w[1] == w[0] + 1), "{times:?}");
        let _ = fs::remove_dir_all(&dir);
    }
}
