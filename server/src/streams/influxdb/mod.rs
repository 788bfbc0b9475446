//! `[influxdb]`: every point of the bus written to InfluxDB (1.x, 2.x, 3.x) or anything that
//! speaks its line protocol (VictoriaMetrics).
//!
//! ```text
//! bus ──► reader ──► bounded queue (oldest dropped when full) ──► writer ──► HTTP /write
//! ```
//!
//! The reader only moves points into the queue, so a slow or absent database never holds the
//! bus back. The writer takes a batch when `batch_size` points are queued or the oldest has
//! waited `flush_ms`, and keeps that batch until InfluxDB has it: failures are retried with
//! backoff while new points queue; a 400 is split in halves until the bad line is found,
//! logged and dropped alone. Nothing is kept on disk: an outage longer than the queue holds
//! loses the oldest points, counted.

mod line;
mod writer;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fabrique_adapters::backoff::Backoff;
use fabrique_adapters::bus::BusEvent;
use fabrique_adapters::{BusReceiver, PointBus, PointUpdate, Timestamp};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use line::LineEncoder;
use writer::{Outcome, Writer};

/// Bus batches moved into the queue under one lock, at most.
const MAX_BATCHES_PER_TAKE: usize = 64;
/// How often the counters are logged (when something happened).
const STATS_EVERY: Duration = Duration::from_secs(60);
/// At shutdown, how long the writer may spend on what is still queued.
const FINAL_FLUSH: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// InfluxDB 1.x: `POST /write?db=<database>`.
    V1,
    /// InfluxDB 2.x / 3.x: `POST /api/v2/write?org=<org>&bucket=<bucket>`.
    V2,
}

/// `[influxdb]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfluxConfig {
    pub enabled: bool,
    /// Base URL, `http://` only (this build carries no TLS).
    pub url: String,
    pub api: Api,
    /// v2 only.
    pub org: String,
    /// v2 only.
    pub bucket: String,
    /// v1 only.
    pub database: String,
    /// Name of the environment variable holding the token (v2) or `user:password` (v1).
    /// Unset or empty: no authentication.
    pub token_env: String,
    /// A file holding the token instead; wins over `token_env` when set.
    pub token_file: String,
    pub measurement: String,
    /// Points per HTTP write, at most.
    pub batch_size: usize,
    /// Longest time a point waits for its batch to fill.
    pub flush_ms: u64,
    /// Points kept in memory while InfluxDB is slow or away; when full, the oldest go.
    pub queue_points: usize,
    /// Gzip request bodies: not available in this build yet; must stay `false`.
    pub gzip: bool,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        InfluxConfig {
            enabled: false,
            url: "http://127.0.0.1:8086".into(),
            api: Api::V2,
            org: "fabrique".into(),
            bucket: "fabrique".into(),
            database: "fabrique".into(),
            token_env: "INFLUXDB_TOKEN".into(),
            token_file: String::new(),
            measurement: "fabrique".into(),
            batch_size: 5000,
            flush_ms: 1000,
            queue_points: 100_000,
            gzip: false,
        }
    }
}

impl InfluxConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.url.starts_with("http://") {
            return Err((
                "influxdb.url",
                "must start with http:// (https is not supported by this build)".into(),
            ));
        }
        if self.measurement.trim().is_empty() {
            return Err(("influxdb.measurement", "must not be empty".into()));
        }
        match self.api {
            Api::V2 if self.org.is_empty() => {
                return Err(("influxdb.org", "must not be empty with api = \"v2\"".into()))
            }
            Api::V2 if self.bucket.is_empty() => {
                return Err((
                    "influxdb.bucket",
                    "must not be empty with api = \"v2\"".into(),
                ))
            }
            Api::V1 if self.database.is_empty() => {
                return Err((
                    "influxdb.database",
                    "must not be empty with api = \"v1\"".into(),
                ))
            }
            _ => {}
        }
        if !(1..=1_000_000).contains(&self.batch_size) {
            return Err((
                "influxdb.batch_size",
                "must be between 1 and 1000000".into(),
            ));
        }
        if !(1..=600_000).contains(&self.flush_ms) {
            return Err(("influxdb.flush_ms", "must be between 1 and 600000".into()));
        }
        if self.queue_points < self.batch_size || self.queue_points > 100_000_000 {
            return Err((
                "influxdb.queue_points",
                "must be at least batch_size and at most 100000000".into(),
            ));
        }
        if self.gzip {
            return Err((
                "influxdb.gzip",
                "gzip is not available in this build yet; set it to false".into(),
            ));
        }
        Ok(())
    }

    /// The secret, from `token_file` or the `token_env` variable. Never logged.
    fn token(&self) -> Result<Option<String>, SinkError> {
        if !self.token_file.is_empty() {
            let text = std::fs::read_to_string(&self.token_file).map_err(|source| {
                SinkError::TokenFile {
                    path: self.token_file.clone(),
                    source,
                }
            })?;
            return Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()));
        }
        if self.token_env.is_empty() {
            return Ok(None);
        }
        Ok(std::env::var(&self.token_env)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("influxdb.token_file: cannot read {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
    #[error("influxdb: cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// What the sink has done since start; read by the minute log (and later by diagnostics).
#[derive(Debug, Default)]
pub struct InfluxCounters {
    /// Points InfluxDB acknowledged.
    pub sent: AtomicU64,
    /// Points taken from the bus into the queue.
    pub queued: AtomicU64,
    /// Points lost: queue overflow plus lines InfluxDB rejected.
    pub dropped: AtomicU64,
    /// Failed writes that were retried.
    pub retries: AtomicU64,
    pub last_error: Mutex<String>,
}

struct Queue {
    inner: Mutex<QueueInner>,
    capacity: usize,
    ready: Notify,
}

struct QueueInner {
    points: VecDeque<PointUpdate>,
    /// When the queue last went from empty to non-empty: the oldest point's wait.
    since: Instant,
}

impl Queue {
    fn push_events(&self, events: &[BusEvent], counters: &InfluxCounters) {
        let mut inner = self.inner.lock();
        if inner.points.is_empty() {
            inner.since = Instant::now();
        }
        let (mut added, mut dropped) = (0u64, 0u64);
        for event in events {
            let updates = match event {
                BusEvent::Changes(batch) => batch.as_slice(),
                BusEvent::Resync { state, .. } => state.as_slice(),
            };
            for update in updates {
                // A tag that never had a value is not news.
                if update.point.value.is_none() && update.point.timestamp.is_null() {
                    continue;
                }
                if inner.points.len() == self.capacity {
                    inner.points.pop_front();
                    dropped += 1;
                }
                inner.points.push_back(update.clone());
                added += 1;
            }
        }
        drop(inner);
        counters.queued.fetch_add(added, Ordering::Relaxed);
        if dropped > 0 {
            counters.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        self.ready.notify_one();
    }

    /// Up to `max` points, oldest first, into `out`.
    fn take(&self, max: usize, out: &mut Vec<PointUpdate>) {
        let mut inner = self.inner.lock();
        let n = inner.points.len().min(max);
        out.extend(inner.points.drain(..n));
    }

    fn state(&self) -> (usize, Instant) {
        let inner = self.inner.lock();
        (inner.points.len(), inner.since)
    }
}

/// A batch on its way: the body and where each line ends in it.
struct Batch {
    body: Bytes,
    ends: Vec<usize>,
}

impl Batch {
    fn lines(&self, from: usize, to: usize) -> Bytes {
        let start = if from == 0 { 0 } else { self.ends[from - 1] };
        self.body.slice(start..self.ends[to - 1])
    }
}

pub struct InfluxSink {
    config: InfluxConfig,
    encoder: LineEncoder,
    writer: Writer,
    queue: Arc<Queue>,
    counters: Arc<InfluxCounters>,
    /// Taken by the bus reader when the sink runs.
    changes: Option<BusReceiver>,
    /// Points carry the stop of the moment they are written: the encoder is rebuilt when
    /// `Stop/Town` changes on the bus (set at run time, see docs/visits.md).
    stop: StopFollower,
}

struct StopFollower {
    tag: Option<fabrique_adapters::TagId>,
    town: String,
    site: String,
    labels: Arc<[crate::streams::TagLabels]>,
}

impl InfluxSink {
    /// Checks what can fail before running: the token file and the HTTP client.
    pub fn new(
        config: &InfluxConfig,
        site: &str,
        stop: &str,
        bus: PointBus,
    ) -> Result<Self, SinkError> {
        let writer = Writer::new(config, config.token()?)?;
        let labels = crate::streams::labels(bus.catalog());
        // Subscribe, then take the latest state: adapters started before the sink have
        // published already, and what they said must reach the database too. Points in both
        // are written twice, with the same timestamp: InfluxDB keeps one.
        let changes = bus.subscribe();
        let counters = Arc::<InfluxCounters>::default();
        let queue = Arc::new(Queue {
            inner: Mutex::new(QueueInner {
                points: VecDeque::new(),
                since: Instant::now(),
            }),
            capacity: config.queue_points,
            ready: Notify::new(),
        });
        queue.push_events(
            &[BusEvent::Resync {
                missed: 0,
                state: bus.published_state(),
            }],
            &counters,
        );
        Ok(InfluxSink {
            encoder: LineEncoder::new(&config.measurement, site, stop, &labels),
            stop: StopFollower {
                tag: bus.catalog().lookup("Stop/Town"),
                town: stop.to_owned(),
                site: site.to_owned(),
                labels,
            },
            writer,
            queue,
            counters,
            changes: Some(changes),
            config: config.clone(),
        })
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(
            url = %self.config.url,
            api = ?self.config.api,
            measurement = %self.config.measurement,
            "InfluxDB sink started"
        );
        let Some(changes) = self.changes.take() else {
            return;
        };
        let reader = tokio::spawn(read_bus(
            changes,
            self.queue.clone(),
            self.counters.clone(),
            shutdown.clone(),
        ));
        let stats = tokio::spawn(log_counters(
            self.counters.clone(),
            self.queue.clone(),
            shutdown.clone(),
        ));
        self.write_loop(&shutdown).await;
        let _ = reader.await;
        stats.abort();
    }

    async fn write_loop(&mut self, shutdown: &CancellationToken) {
        let flush = Duration::from_millis(self.config.flush_ms);
        let mut points = Vec::with_capacity(self.config.batch_size);
        let mut body = Vec::new();
        let mut state = DeliveryState::default();
        loop {
            let (len, since) = self.queue.state();
            let due = since + flush;
            if len >= self.config.batch_size || (len > 0 && Instant::now() >= due) {
                let batch = self.next_batch(&mut points, &mut body);
                if !self.deliver(batch, &mut state, Some(shutdown)).await {
                    break;
                }
                continue;
            }
            let wait = async {
                if len == 0 {
                    self.queue.ready.notified().await
                } else {
                    tokio::select! {
                        _ = self.queue.ready.notified() => {}
                        _ = tokio::time::sleep_until(due.into()) => {}
                    }
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wait => {}
            }
        }
        // One last try for what is queued, without retries: nothing is kept on disk.
        let last = async {
            while self.queue.state().0 > 0 {
                let batch = self.next_batch(&mut points, &mut body);
                if !self.deliver(batch, &mut state, None).await {
                    break;
                }
            }
        };
        if tokio::time::timeout(FINAL_FLUSH, last).await.is_err() {
            tracing::warn!("InfluxDB: stopped before the queue was written");
        }
    }

    fn next_batch(&mut self, points: &mut Vec<PointUpdate>, body: &mut Vec<u8>) -> Batch {
        points.clear();
        self.queue.take(self.config.batch_size, points);
        let now = Timestamp::now();
        let mut ends = Vec::with_capacity(points.len());
        body.clear();
        for update in points.iter() {
            if Some(update.tag) == self.stop.tag {
                if let Some(fabrique_adapters::Value::Text(town)) = &update.point.value {
                    if **town != *self.stop.town {
                        self.stop.town = town.to_string();
                        let s = &self.stop;
                        self.encoder =
                            LineEncoder::new(&self.config.measurement, &s.site, &s.town, &s.labels);
                    }
                }
            }
            if self.encoder.encode(body, update, now) {
                ends.push(body.len());
            }
        }
        // The body moves into `Bytes` (shared by the bisect halves); keep the capacity hint.
        let capacity = body.capacity();
        let batch = Batch {
            body: Bytes::from(std::mem::replace(body, Vec::with_capacity(capacity))),
            ends,
        };
        points.clear();
        batch
    }

    /// Writes every line of `batch` or drops the ones InfluxDB rejects. Retries failures
    /// until `shutdown` (or not at all without one). `false`: stopped before the end.
    async fn deliver(
        &self,
        batch: Batch,
        state: &mut DeliveryState,
        shutdown: Option<&CancellationToken>,
    ) -> bool {
        let c = &self.counters;
        let mut ranges = vec![(0, batch.ends.len())];
        while let Some((from, to)) = ranges.pop() {
            if from == to {
                continue;
            }
            loop {
                match self.writer.write(batch.lines(from, to)).await {
                    Outcome::Written => {
                        c.sent.fetch_add((to - from) as u64, Ordering::Relaxed);
                        if state.failing > 0 {
                            tracing::info!(
                                attempts = state.failing,
                                "InfluxDB: writing again after failed attempts"
                            );
                            state.failing = 0;
                            state.backoff.reset();
                        }
                        break;
                    }
                    Outcome::Rejected(message) if to - from == 1 => {
                        c.dropped.fetch_add(1, Ordering::Relaxed);
                        *c.last_error.lock() = message.clone();
                        let line = String::from_utf8_lossy(&batch.lines(from, to))
                            .trim_end()
                            .to_owned();
                        // Once per series: a tag that keeps conflicting would flood the log.
                        let series = line.split(' ').next().unwrap_or("").to_owned();
                        if state.rejected_series.insert(series) {
                            tracing::warn!(%line, error = %message, "InfluxDB rejected a line; dropped");
                        }
                        break;
                    }
                    Outcome::Rejected(_) => {
                        // Halve until the bad line is alone; the good halves go through.
                        let mid = from + (to - from) / 2;
                        ranges.push((mid, to));
                        ranges.push((from, mid));
                        break;
                    }
                    Outcome::Failed(message) => {
                        let Some(shutdown) = shutdown else {
                            return false;
                        };
                        if state.failing == 0 {
                            tracing::warn!(error = %message, url = %self.config.url, "InfluxDB write failed; retrying, points keep queueing");
                        } else {
                            tracing::debug!(error = %message, "InfluxDB write failed again");
                        }
                        state.failing += 1;
                        c.retries.fetch_add(1, Ordering::Relaxed);
                        *c.last_error.lock() = message;
                        let delay = state.backoff.next_delay();
                        tokio::select! {
                            _ = shutdown.cancelled() => return false,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
        }
        true
    }
}

struct DeliveryState {
    backoff: Backoff,
    /// Failed attempts in a row.
    failing: u64,
    rejected_series: HashSet<String>,
}

impl Default for DeliveryState {
    fn default() -> Self {
        DeliveryState {
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
            failing: 0,
            rejected_series: HashSet::new(),
        }
    }
}

/// Bus → queue, as fast as the bus goes.
async fn read_bus(
    mut changes: BusReceiver,
    queue: Arc<Queue>,
    counters: Arc<InfluxCounters>,
    shutdown: CancellationToken,
) {
    let mut pending = Vec::new();
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => break,
            received = changes.recv_many(&mut pending, MAX_BATCHES_PER_TAKE) => received,
        };
        if !received {
            break;
        }
        queue.push_events(&pending, &counters);
        pending.clear();
    }
}

async fn log_counters(
    counters: Arc<InfluxCounters>,
    queue: Arc<Queue>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(STATS_EVERY);
    ticks.tick().await;
    let mut last = [0u64; 4];
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let now = [
            counters.sent.load(Ordering::Relaxed),
            counters.queued.load(Ordering::Relaxed),
            counters.dropped.load(Ordering::Relaxed),
            counters.retries.load(Ordering::Relaxed),
        ];
        if now != last {
            let last_error = counters.last_error.lock().clone();
            tracing::info!(
                sent = now[0],
                queued = now[1],
                dropped = now[2],
                retries = now[3],
                waiting = queue.state().0,
                last_error = %last_error,
                "InfluxDB sink"
            );
            last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_off() {
        let c = InfluxConfig::default();
        assert!(!c.enabled);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = |f: fn(&mut InfluxConfig)| {
            let mut c = InfluxConfig::default();
            f(&mut c);
            c.validate().unwrap_err().0
        };
        assert_eq!(bad(|c| c.url = "https://x".into()), "influxdb.url");
        assert_eq!(bad(|c| c.batch_size = 0), "influxdb.batch_size");
        assert_eq!(bad(|c| c.queue_points = 10), "influxdb.queue_points");
        assert_eq!(bad(|c| c.gzip = true), "influxdb.gzip");
        assert_eq!(
            bad(|c| {
                c.api = Api::V1;
                c.database.clear()
            }),
            "influxdb.database"
        );
    }

    #[test]
    fn batch_lines_slice_the_body() {
        let body = b"a 1\nbb 2\nccc 3\n".to_vec();
        let batch = Batch {
            ends: vec![4, 9, 15],
            body: Bytes::from(body),
        };
        assert_eq!(&batch.lines(0, 3)[..], b"a 1\nbb 2\nccc 3\n");
        assert_eq!(&batch.lines(1, 2)[..], b"bb 2\n");
        assert_eq!(&batch.lines(2, 3)[..], b"ccc 3\n");
    }
}
