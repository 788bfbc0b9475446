//! `[influxdb]`: every point of the bus written to InfluxDB (1.x, 2.x, 3.x) or anything that
//! speaks its line protocol (VictoriaMetrics).
//!
//! ```text
//! bus ──► reader ──► bounded queue ──► writer ──► HTTP /write (up to max_in_flight at once)
//!                                        │  ▲
//!                          while failing ▼  │ first, when the database is back
//!                          disk buffer <data_dir>/buffer/influxdb (encoded batches)
//! ```
//!
//! The reader only moves points into the queue, so a slow or absent database never holds the
//! bus back. The writer takes a batch when `batch_size` points are queued or the oldest has
//! waited `flush_ms`; a 400 is split in halves until the bad line is found, logged and dropped
//! alone. A batch that fails (5xx, refused, timeout) goes to the disk buffer as encoded line
//! protocol, and so does every point queued while the database stays away; when it is back,
//! the disk buffer is written first, oldest first, while live points wait in memory. Without
//! a disk buffer (`disk_buffer_mb = 0`) a failed batch is retried in place and the queue
//! drops its oldest points when full, counted.

pub mod line;
mod tls;
mod writer;

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
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

use super::sink::{Sink, SinkContext, SinkKind};
use super::spool::{Spool, SpoolError, Ticket};
use super::SinkCounters;

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
    /// Base URL, `http://` or `https://`.
    pub url: String,
    /// https: PEM file of the CA that signed the database's certificate (added to the
    /// system's roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// https: PEM client certificate (chain) presented to the database, with `client_key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
    /// https: the name the certificate must carry when `url` gives an IP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
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
    /// Points kept in memory while InfluxDB is slow or away; when full, the oldest go (to
    /// the disk buffer when there is one).
    pub queue_points: usize,
    /// Gzip request bodies (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// HTTP writes at once, at most.
    pub max_in_flight: usize,
    /// On-disk buffer behind the queue, in MiB (`<data_dir>/buffer/influxdb/`); 0: memory only.
    pub disk_buffer_mb: u64,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        InfluxConfig {
            enabled: false,
            url: "http://127.0.0.1:8086".into(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            server_name: None,
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
            max_in_flight: 4,
            disk_buffer_mb: 1024,
        }
    }
}

impl InfluxConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let https = self.url.starts_with("https://");
        if !https && !self.url.starts_with("http://") {
            return Err(("influxdb.url", "must start with http:// or https://".into()));
        }
        for (key, set) in [
            ("influxdb.ca_file", self.ca_file.is_some()),
            ("influxdb.client_cert_file", self.client_cert_file.is_some()),
            ("influxdb.server_name", self.server_name.is_some()),
        ] {
            if set && !https {
                return Err((key, "needs an https:// url".into()));
            }
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err((
                "influxdb.client_key_file",
                "client_cert_file and client_key_file go together".into(),
            ));
        }
        match reqwest::Url::parse(&self.url) {
            Ok(url) => match url.host_str() {
                Some(host) if !host.is_empty() => {
                    fabrique_adapters::net::check_host(host).map_err(|r| ("influxdb.url", r))?
                }
                _ => return Err(("influxdb.url", format!("`{}` has no host", self.url))),
            },
            Err(e) => return Err(("influxdb.url", format!("`{}` is not a URL: {e}", self.url))),
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
        if !(1..=64).contains(&self.max_in_flight) {
            return Err(("influxdb.max_in_flight", "must be between 1 and 64".into()));
        }
        if self.disk_buffer_mb > 1 << 20 {
            return Err((
                "influxdb.disk_buffer_mb",
                "must be at most 1048576 (1 TiB)".into(),
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
    #[error("influxdb.{key}: {reason}")]
    Tls { key: &'static str, reason: String },
    #[error("influxdb: disk buffer: {0}")]
    Spool(#[from] SpoolError),
}

struct Queue {
    inner: Mutex<QueueInner>,
    capacity: usize,
    ready: Notify,
    /// Points taken by the writer and not yet written (or put on disk).
    in_flight: AtomicUsize,
}

struct QueueInner {
    points: VecDeque<PointUpdate>,
    /// Lines encoded elsewhere (alarm state changes, alarms/north.rs), written with the next
    /// batch.
    lines: VecDeque<Vec<u8>>,
    /// When the queue last went from empty to non-empty: the oldest point's wait.
    since: Instant,
}

impl Queue {
    fn push_events(&self, events: &[BusEvent], counters: &SinkCounters) {
        let mut inner = self.inner.lock();
        if inner.points.is_empty() {
            inner.since = Instant::now();
        }
        let mut dropped = 0u64;
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
            }
        }
        let waiting = inner.points.len() + self.in_flight.load(Ordering::Relaxed);
        drop(inner);
        counters
            .buffered_memory
            .store(waiting as u64, Ordering::Relaxed);
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

    /// A line encoded elsewhere, counted as a point (dropped oldest first like them).
    fn push_line(&self, line: Vec<u8>, counters: &SinkCounters) {
        let mut inner = self.inner.lock();
        if inner.points.is_empty() && inner.lines.is_empty() {
            inner.since = Instant::now();
        }
        if inner.lines.len() == self.capacity {
            inner.lines.pop_front();
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        inner.lines.push_back(line);
        drop(inner);
        self.ready.notify_one();
    }

    /// Every line waiting, appended to `body`, each end into `ends`.
    fn take_lines(&self, body: &mut Vec<u8>, ends: &mut Vec<usize>) {
        let mut inner = self.inner.lock();
        for line in inner.lines.drain(..) {
            body.extend_from_slice(&line);
            ends.push(body.len());
        }
    }

    fn state(&self) -> (usize, Instant) {
        let inner = self.inner.lock();
        (inner.points.len() + inner.lines.len(), inner.since)
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

    /// A batch read back from the disk buffer: lines end with `\n` (a line break inside a
    /// string field is written escaped, so every raw one ends a line).
    fn from_body(body: Vec<u8>) -> Batch {
        let ends = body
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .map(|(i, _)| i + 1)
            .collect();
        Batch {
            body: Bytes::from(body),
            ends,
        }
    }

    fn points(&self) -> usize {
        self.ends.len()
    }
}

pub struct InfluxSink {
    config: InfluxConfig,
    /// For the catalogue, when a reload added tags.
    bus: PointBus,
    encoder: LineEncoder,
    writer: Writer,
    queue: Arc<Queue>,
    counters: Arc<SinkCounters>,
    /// Taken by the bus reader when the sink runs.
    changes: Option<BusReceiver>,
    /// Alarm state changes (measurement `alarms`, alarms/north.rs), taken when the sink runs.
    alarms: Option<tokio::sync::broadcast::Receiver<crate::alarms::ConditionState>>,
    /// The disk buffer, taken by the writer when the sink runs.
    spool: Option<Spool>,
    /// Series whose rejected line was logged already: once per series.
    rejected_series: Mutex<HashSet<String>>,
    /// Points carry the stop of the moment they are written (`Stop/Town` on the bus, set at
    /// run time; see "The current stop" in the README), not the configured one.
    stop: StopFollower,
}

/// What it takes to follow `Stop/Town`: the writer rebuilds its encoder when the town changes.
struct StopFollower {
    tag: Option<fabrique_adapters::TagId>,
    configured: String,
    site: String,
    labels: Arc<[crate::streams::TagLabels]>,
}

/// The registry entry (streams/sink.rs).
pub const KIND: SinkKind = SinkKind {
    name: "InfluxDB",
    buffer: "influxdb",
    enabled: |config| config.influxdb.enabled,
    validate: |config| config.influxdb.validate(),
    build: |config, ctx| Ok(Box::new(InfluxSink::new(&config.influxdb, ctx)?)),
};

#[async_trait::async_trait]
impl Sink for InfluxSink {
    async fn run(self: Box<Self>, ctx: SinkContext) {
        (*self).run(ctx.shutdown).await
    }
}

impl InfluxSink {
    /// Checks what can fail before running: the token file, the HTTP client and the disk
    /// buffer (in the context's buffer folder, `<data_dir>/buffer/influxdb`).
    pub fn new(config: &InfluxConfig, ctx: &SinkContext) -> Result<Self, SinkError> {
        let (site, stop, bus, counters) = (
            ctx.site.as_str(),
            ctx.stop.as_str(),
            ctx.bus.clone(),
            ctx.counters.clone(),
        );
        let writer = Writer::new(config, config.token()?)?;
        let spool = ctx.open_spool(config.disk_buffer_mb)?;
        if let Some(spool) = spool.as_ref().filter(|s| s.pending() > 0) {
            tracing::info!(points = spool.pending(), bytes = spool.bytes(), dir = %ctx.buffer_dir.display(), "InfluxDB: points buffered before the last stop will be written first");
        }
        let labels = crate::streams::labels(&bus.catalog());
        // Subscribe, then take the latest state: adapters started before the sink have
        // published already, and what they said must reach the database too. Points in both
        // are written twice, with the same timestamp: InfluxDB keeps one.
        let changes = bus.subscribe();
        let queue = Arc::new(Queue {
            inner: Mutex::new(QueueInner {
                points: VecDeque::new(),
                lines: VecDeque::new(),
                since: Instant::now(),
            }),
            capacity: config.queue_points,
            ready: Notify::new(),
            in_flight: AtomicUsize::new(0),
        });
        queue.push_events(
            &[BusEvent::Resync {
                missed: 0,
                state: bus.published_state(),
            }],
            &counters,
        );
        Ok(InfluxSink {
            bus: bus.clone(),
            encoder: LineEncoder::new(&config.measurement, site, stop, &labels),
            stop: StopFollower {
                tag: bus.catalog().lookup("Stop/Town"),
                configured: stop.to_owned(),
                site: site.to_owned(),
                labels,
            },
            writer,
            queue,
            counters,
            changes: Some(changes),
            alarms: Some(ctx.alarms.subscribe()),
            spool,
            rejected_series: Mutex::new(HashSet::new()),
            config: config.clone(),
        })
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(
            url = %self.config.url,
            api = ?self.config.api,
            measurement = %self.config.measurement,
            gzip = self.config.gzip,
            max_in_flight = self.config.max_in_flight,
            disk_buffer_mb = self.config.disk_buffer_mb,
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
        let alarms = self.alarms.take().map(|changes| {
            tokio::spawn(read_alarms(
                changes,
                self.queue.clone(),
                self.stop.site.clone(),
                self.counters.clone(),
                shutdown.clone(),
            ))
        });
        let stats = tokio::spawn(log_counters(self.counters.clone(), shutdown.clone()));
        let spool = self.spool.take();
        self.write_loop(spool, &shutdown).await;
        let _ = reader.await;
        if let Some(alarms) = alarms {
            let _ = alarms.await;
        }
        stats.abort();
        self.counters.log("InfluxDB sink stopped");
    }

    async fn write_loop(&self, mut spool: Option<Spool>, shutdown: &CancellationToken) {
        let flush = Duration::from_millis(self.config.flush_ms);
        let mut scratch = Scratch::default();
        let mut state = DeliveryState::default();
        // Memory only: the batches that failed, written again before anything new.
        let mut retry: Vec<Batch> = Vec::new();
        // The database failed and has not answered since: queued points go to disk.
        let mut outage = false;
        while !shutdown.is_cancelled() {
            if let Some(sp) = spool.as_mut().filter(|s| s.pending() > 0) {
                // The backlog is on disk. Live points and the backlog take turns, so that a
                // backlog of days does not hold back what happens now (the database orders
                // points by their timestamps). Live points go to disk too while the database
                // is away, or when memory fills up because it is slower than both.
                if outage || self.queue.state().0 >= self.queue.capacity / 2 {
                    self.spill_if_due(sp, &mut scratch, flush, false);
                } else {
                    let (len, since) = self.queue.state();
                    if len >= self.config.batch_size || (len > 0 && Instant::now() >= since + flush)
                    {
                        let mut batches = Vec::new();
                        self.take_batches(&mut batches, &mut scratch);
                        let failed = self.write_batches(batches, &mut state).await;
                        if !failed.is_empty() {
                            for batch in &failed {
                                self.append(sp, &batch.body, batch.points());
                            }
                            self.spill_if_due(sp, &mut scratch, flush, true);
                            self.count_spool(sp, &mut scratch);
                            outage = true;
                            self.pause(&mut state, spool.as_mut(), &mut scratch, shutdown)
                                .await;
                            continue;
                        }
                    }
                }
                let ok = self.replay(sp, &mut state).await;
                self.count_spool(sp, &mut scratch);
                if ok {
                    outage = false;
                } else {
                    outage = true;
                    self.pause(&mut state, spool.as_mut(), &mut scratch, shutdown)
                        .await;
                }
                continue;
            }
            let (len, since) = self.queue.state();
            let due = since + flush;
            if !retry.is_empty()
                || len >= self.config.batch_size
                || (len > 0 && Instant::now() >= due)
            {
                let mut batches = std::mem::take(&mut retry);
                if batches.is_empty() {
                    self.take_batches(&mut batches, &mut scratch);
                }
                let failed = self.write_batches(batches, &mut state).await;
                if failed.is_empty() {
                    continue;
                }
                outage = true;
                match spool.as_mut() {
                    Some(sp) => {
                        for batch in &failed {
                            self.append(sp, &batch.body, batch.points());
                        }
                        self.spill_if_due(sp, &mut scratch, flush, true);
                        self.count_spool(sp, &mut scratch);
                    }
                    None => retry = failed,
                }
                self.set_in_flight(retry.iter().map(Batch::points).sum());
                self.pause(&mut state, spool.as_mut(), &mut scratch, shutdown)
                    .await;
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
        self.stop(spool, retry, outage, &mut scratch, &mut state)
            .await;
    }

    /// Clean stop. With a disk buffer: everything waiting goes to disk first, then, if the
    /// database is up, a short try to write it (what is written is released). Without: one
    /// last try for what is queued, then it is lost.
    async fn stop(
        &self,
        mut spool: Option<Spool>,
        retry: Vec<Batch>,
        outage: bool,
        scratch: &mut Scratch,
        state: &mut DeliveryState,
    ) {
        if let Some(sp) = spool.as_mut() {
            self.spill_if_due(sp, scratch, Duration::ZERO, true);
            if !outage {
                let drain = async { while sp.pending() > 0 && self.replay(sp, state).await {} };
                let _ = tokio::time::timeout(FINAL_FLUSH, drain).await;
            }
            self.count_spool(sp, scratch);
        }
        if let Some(sp) = spool {
            let kept = sp.pending();
            match sp.close() {
                Ok(()) if kept > 0 => tracing::info!(
                    points = kept,
                    "InfluxDB: points kept in the disk buffer for the next start"
                ),
                Ok(()) => {}
                Err(error) => tracing::error!(%error, "InfluxDB: cannot close the disk buffer"),
            }
            return;
        }
        let last = async {
            let mut batches = retry;
            loop {
                if batches.is_empty() {
                    self.take_batches(&mut batches, scratch);
                }
                if batches.is_empty() {
                    break;
                }
                if !self.write_batches(batches, state).await.is_empty() {
                    break;
                }
                batches = Vec::new();
            }
        };
        if tokio::time::timeout(FINAL_FLUSH, last).await.is_err() || self.queue.state().0 > 0 {
            tracing::warn!("InfluxDB: stopped before the queue was written");
        }
    }

    /// Up to `max_in_flight` batches from the queue: full ones, and a last partial one.
    fn take_batches(&self, batches: &mut Vec<Batch>, scratch: &mut Scratch) {
        while batches.len() < self.config.max_in_flight {
            let len = self.queue.state().0;
            if len == 0 || (len < self.config.batch_size && !batches.is_empty()) {
                break;
            }
            batches.push(self.next_batch(scratch));
        }
        self.set_in_flight(batches.iter().map(Batch::points).sum());
    }

    fn set_in_flight(&self, points: usize) {
        self.queue.in_flight.store(points, Ordering::Relaxed);
        self.counters
            .buffered_memory
            .store((self.queue.state().0 + points) as u64, Ordering::Relaxed);
    }

    /// Writes the batches at once; returns those that failed (to be kept), in order.
    async fn write_batches(&self, batches: Vec<Batch>, state: &mut DeliveryState) -> Vec<Batch> {
        let results = futures::future::join_all(batches.iter().map(|b| self.deliver(b))).await;
        let mut failed = Vec::new();
        let mut error = None;
        for (batch, result) in batches.into_iter().zip(results) {
            if let Err(message) = result {
                failed.push(batch);
                error = Some(message);
            }
        }
        match error {
            Some(message) => self.note_failure(state, message),
            None => self.note_success(state),
        }
        self.set_in_flight(0);
        failed
    }

    /// Writes the next batches of the disk buffer, up to `max_in_flight` at once, and
    /// releases those written, in order. `false`: a write failed (the rest is read again).
    async fn replay(&self, spool: &mut Spool, state: &mut DeliveryState) -> bool {
        let mut batches = Vec::new();
        let mut tickets: Vec<Ticket> = Vec::new();
        while batches.len() < self.config.max_in_flight {
            let mut body = Vec::new();
            match spool.next(&mut body) {
                Ok(Some((_, ticket))) => {
                    batches.push(Batch::from_body(body));
                    tickets.push(ticket);
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::error!(%error, "InfluxDB: cannot read the disk buffer");
                    self.counters.set_error(error.to_string());
                    break;
                }
            }
        }
        if batches.is_empty() {
            return true;
        }
        let results = futures::future::join_all(batches.iter().map(|b| self.deliver(b))).await;
        let mut error = None;
        for (result, ticket) in results.into_iter().zip(tickets) {
            match result {
                // Released only as long as every earlier one was: order on disk is kept.
                Ok(()) if error.is_none() => {
                    if let Err(e) = spool.ack_through(ticket) {
                        self.counters.set_error(e.to_string());
                    }
                }
                Ok(()) => {}
                Err(message) => {
                    error.get_or_insert(message);
                }
            }
        }
        match error {
            Some(message) => {
                // A batch written after the failed one is written again later: InfluxDB keeps
                // one point per series and timestamp, so that costs time, not correctness.
                spool.rewind();
                self.note_failure(state, message);
                false
            }
            None => {
                self.note_success(state);
                true
            }
        }
    }

    /// Waits the backoff delay, moving queued points to disk meanwhile (with a buffer).
    async fn pause(
        &self,
        state: &mut DeliveryState,
        mut spool: Option<&mut Spool>,
        scratch: &mut Scratch,
        shutdown: &CancellationToken,
    ) {
        let until = tokio::time::Instant::now() + state.backoff.next_delay();
        let flush = Duration::from_millis(self.config.flush_ms);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(until) => return,
                _ = self.queue.ready.notified() => {}
            }
            if let Some(sp) = spool.as_deref_mut() {
                self.spill_if_due(sp, scratch, flush, false);
                self.count_spool(sp, scratch);
            }
        }
    }

    /// Queued points to disk, as encoded batches, when a batch is full or the oldest point has
    /// waited `flush` (`all`: everything, now).
    fn spill_if_due(&self, spool: &mut Spool, scratch: &mut Scratch, flush: Duration, all: bool) {
        loop {
            let (len, since) = self.queue.state();
            let due = len > 0 && (all || Instant::now() >= since + flush);
            if len < self.config.batch_size && !due {
                break;
            }
            let batch = self.next_batch(scratch);
            if batch.points() > 0 {
                self.append(spool, &batch.body, batch.points());
            }
            if len <= self.config.batch_size {
                break;
            }
        }
        if let Err(error) = spool.flush() {
            tracing::error!(%error, "InfluxDB: cannot write the disk buffer");
            self.counters.set_error(error.to_string());
        }
    }

    fn append(&self, spool: &mut Spool, body: &[u8], points: usize) {
        if let Err(error) = spool.append(body, points as u32) {
            self.counters
                .dropped
                .fetch_add(points as u64, Ordering::Relaxed);
            let error = error.to_string();
            let mut last = self.counters.last_error.lock();
            if *last != error {
                tracing::error!(%error, points, "InfluxDB: cannot write the disk buffer; points dropped");
                *last = error;
            }
        }
    }

    /// The disk buffer's figures into the counters.
    fn count_spool(&self, spool: &Spool, scratch: &mut Scratch) {
        let dropped = spool.dropped();
        if dropped > scratch.spool_dropped {
            self.counters
                .dropped
                .fetch_add(dropped - scratch.spool_dropped, Ordering::Relaxed);
            scratch.spool_dropped = dropped;
        }
        self.counters
            .buffered_disk
            .store(spool.pending(), Ordering::Relaxed);
        self.counters.buffered_memory.store(
            (self.queue.state().0 + self.queue.in_flight.load(Ordering::Relaxed)) as u64,
            Ordering::Relaxed,
        );
    }

    fn next_batch(&self, scratch: &mut Scratch) -> Batch {
        let Scratch {
            points,
            body,
            stop_encoder,
            grown,
            ..
        } = scratch;
        points.clear();
        self.queue.take(self.config.batch_size, points);
        let known = grown
            .as_ref()
            .map_or(self.stop.labels.len(), |(l, _)| l.len());
        if points.iter().any(|u| u.tag.index() >= known) {
            // A reload added tags: label them from the current catalogue.
            let s = &self.stop;
            let labels = crate::streams::labels(&self.bus.catalog());
            let m = &self.config.measurement;
            if let Some((town, encoder)) = stop_encoder.as_mut() {
                *encoder = LineEncoder::new(m, &s.site, town, &labels);
            }
            let encoder = LineEncoder::new(m, &s.site, &s.configured, &labels);
            *grown = Some((labels, encoder));
        }
        let (labels, base_encoder) = match grown.as_ref() {
            Some((labels, encoder)) => (labels, encoder),
            None => (&self.stop.labels, &self.encoder),
        };
        let now = Timestamp::now();
        let mut ends = Vec::with_capacity(points.len());
        body.clear();
        for update in points.iter() {
            if Some(update.tag) == self.stop.tag {
                if let Some(fabrique_adapters::Value::Text(town)) = &update.point.value {
                    let current = stop_encoder
                        .as_ref()
                        .map_or(self.stop.configured.as_str(), |(t, _)| t);
                    if **town != *current {
                        let s = &self.stop;
                        let encoder =
                            LineEncoder::new(&self.config.measurement, &s.site, town, labels);
                        *stop_encoder = Some((town.to_string(), encoder));
                    }
                }
            }
            let encoder = stop_encoder.as_ref().map_or(base_encoder, |(_, e)| e);
            if encoder.encode(body, update, now) {
                ends.push(body.len());
            }
        }
        self.queue.take_lines(body, &mut ends);
        // The body moves into `Bytes` (shared by the bisect halves); keep the capacity hint.
        let capacity = body.capacity();
        let batch = Batch {
            body: Bytes::from(std::mem::replace(body, Vec::with_capacity(capacity))),
            ends,
        };
        points.clear();
        batch
    }

    fn note_failure(&self, state: &mut DeliveryState, message: String) {
        if state.failing == 0 {
            tracing::warn!(error = %message, url = %self.config.url, "InfluxDB write failed; retrying, points are kept");
        } else {
            tracing::debug!(error = %message, "InfluxDB write failed again");
        }
        state.failing += 1;
        self.counters.set_connected(false);
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        self.counters.set_error(message);
    }

    fn note_success(&self, state: &mut DeliveryState) {
        self.counters.set_connected(true);
        if state.failing > 0 {
            tracing::info!(
                attempts = state.failing,
                "InfluxDB: writing again after failed attempts"
            );
            state.failing = 0;
            state.backoff.reset();
        }
    }

    /// Writes every line of `batch` or drops the ones InfluxDB rejects (400). `Err`: a write
    /// failed (5xx, refused, timeout); some halves of a split batch may be written already.
    async fn deliver(&self, batch: &Batch) -> Result<(), String> {
        let c = &self.counters;
        let mut ranges = vec![(0, batch.ends.len())];
        while let Some((from, to)) = ranges.pop() {
            if from == to {
                continue;
            }
            match self.writer.write(batch.lines(from, to)).await {
                Outcome::Written => {
                    c.sent.fetch_add((to - from) as u64, Ordering::Relaxed);
                }
                Outcome::Rejected(message) if to - from == 1 => {
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                    c.set_error(message.clone());
                    let line = String::from_utf8_lossy(&batch.lines(from, to))
                        .trim_end()
                        .to_owned();
                    // Once per series: a tag that keeps conflicting would flood the log.
                    let series = line.split(' ').next().unwrap_or("").to_owned();
                    if self.rejected_series.lock().insert(series) {
                        tracing::warn!(%line, error = %message, "InfluxDB rejected a line; dropped");
                    }
                }
                Outcome::Rejected(_) => {
                    // Halve until the bad line is alone; the good halves go through.
                    let mid = from + (to - from) / 2;
                    ranges.push((mid, to));
                    ranges.push((from, mid));
                }
                Outcome::Failed(message) => return Err(message),
            }
        }
        Ok(())
    }
}

/// Buffers the writer reuses from batch to batch.
#[derive(Default)]
struct Scratch {
    points: Vec<PointUpdate>,
    body: Vec<u8>,
    /// The disk buffer's `dropped` already added to the counters.
    spool_dropped: u64,
    /// The encoder of the current stop, once `Stop/Town` differs from the configured town.
    stop_encoder: Option<(String, LineEncoder)>,
    /// Labels and encoder of the current catalogue, once a reload added tags.
    grown: Option<(Arc<[crate::streams::TagLabels]>, LineEncoder)>,
}

struct DeliveryState {
    backoff: Backoff,
    /// Failed attempts in a row.
    failing: u64,
}

impl Default for DeliveryState {
    fn default() -> Self {
        DeliveryState {
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
            failing: 0,
        }
    }
}

/// Bus → queue, as fast as the bus goes.
async fn read_bus(
    mut changes: BusReceiver,
    queue: Arc<Queue>,
    counters: Arc<SinkCounters>,
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

/// Alarm state changes → queue, as lines of the measurement `alarms`.
async fn read_alarms(
    mut changes: tokio::sync::broadcast::Receiver<crate::alarms::ConditionState>,
    queue: Arc<Queue>,
    site: String,
    counters: Arc<SinkCounters>,
    shutdown: CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let changed = tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = changes.recv() => changed,
        };
        match changed {
            Ok(state) => {
                let mut line = Vec::with_capacity(256);
                crate::alarms::north::influx_line(&mut line, &site, &state);
                queue.push_line(line, &counters);
            }
            Err(RecvError::Lagged(missed)) => {
                counters.dropped.fetch_add(missed, Ordering::Relaxed);
                tracing::warn!(missed, "InfluxDB: alarm changes missed");
            }
            Err(RecvError::Closed) => break,
        }
    }
}

async fn log_counters(counters: Arc<SinkCounters>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(STATS_EVERY);
    ticks.tick().await;
    let mut last = [0u64; 4];
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let now = counters.snapshot();
        if now != last || now[1] > 0 {
            counters.log("InfluxDB sink");
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
        assert_eq!(bad(|c| c.url = "ftp://x".into()), "influxdb.url");
        assert_eq!(
            bad(|c| c.ca_file = Some("ca.pem".into())),
            "influxdb.ca_file"
        );
        assert_eq!(
            bad(|c| {
                c.url = "https://db:8086".into();
                c.client_cert_file = Some("c.pem".into())
            }),
            "influxdb.client_key_file"
        );
        assert_eq!(bad(|c| c.batch_size = 0), "influxdb.batch_size");
        assert_eq!(bad(|c| c.queue_points = 10), "influxdb.queue_points");
        assert_eq!(bad(|c| c.max_in_flight = 0), "influxdb.max_in_flight");
        assert_eq!(
            bad(|c| c.disk_buffer_mb = u64::MAX),
            "influxdb.disk_buffer_mb"
        );
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
        let again = Batch::from_body(b"a 1\nbb 2\nccc 3\n".to_vec());
        assert_eq!(again.ends, batch.ends);
    }
}
