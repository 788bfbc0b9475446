//! Northbound streams: sinks that carry the bus to the outside world (MQTT, InfluxDB).
//!
//! Every sink reads the bus like the OPC UA bridge does and labels each point the same way, so
//! a tag is `fabrique/<site>/<station>/<device>/<tag>` on MQTT and carries the tags `site`,
//! `stop`, `station`, `device` and `tag` in InfluxDB.

pub mod influxdb;
pub mod mqtt;
pub mod presence;
pub mod sink;
pub mod sparkplug;
pub mod spool;
mod spool_sync;

/// `[streams]`: what every sink shares.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    /// The on-disk buffer is fsync'd at most this long after an append (0: at every append):
    /// what a power cut can lose.
    pub spool_fsync_ms: u64,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            spool_fsync_ms: spool_sync::DEFAULT_FSYNC_INTERVAL.as_millis() as u64,
        }
    }
}

impl StreamsConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.spool_fsync_ms > 60_000 {
            return Err((
                "streams.spool_fsync_ms",
                "must be between 0 (every append) and 60000".into(),
            ));
        }
        Ok(())
    }
}

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use fabrique_adapters::{TagCatalog, TagId};
use parking_lot::Mutex;

/// What a sink has done since the gateway started, shared with the log and with the
/// diagnostics tags (`Diagnostics/Sinks/<Sink>/...`). Units are the sink's own: messages for
/// MQTT, points for InfluxDB.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Acknowledged by the peer (PUBACK at QoS 1, written at QoS 0; HTTP 2xx).
    pub sent: AtomicU64,
    /// Waiting in memory: queued, or on their way and not yet acknowledged.
    pub buffered_memory: AtomicU64,
    /// Waiting in the on-disk buffer (`<data_dir>/buffer/<sink>/`).
    pub buffered_disk: AtomicU64,
    /// Lost: a full queue or a full disk buffer (oldest first), or refused by the peer for
    /// good (a bad line, a message too large).
    pub dropped: AtomicU64,
    /// Failed connection attempts, lost connections and failed writes that were retried.
    pub retries: AtomicU64,
    /// The last error, empty when none yet.
    pub last_error: Mutex<String>,
    /// True while the broker is connected or the database answers writes; what `/health`
    /// calls ready.
    pub connected: AtomicBool,
}

impl SinkCounters {
    /// Memory and disk.
    pub fn buffered(&self) -> u64 {
        self.buffered_memory.load(Ordering::Relaxed) + self.buffered_disk.load(Ordering::Relaxed)
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    pub fn set_error(&self, error: impl Into<String>) {
        *self.last_error.lock() = error.into();
    }

    /// The counters in one log line.
    pub fn log(&self, what: &str) {
        tracing::info!(
            sent = self.sent.load(Ordering::Relaxed),
            buffered_memory = self.buffered_memory.load(Ordering::Relaxed),
            buffered_disk = self.buffered_disk.load(Ordering::Relaxed),
            dropped = self.dropped.load(Ordering::Relaxed),
            retries = self.retries.load(Ordering::Relaxed),
            last_error = %self.last_error.lock(),
            "{what}"
        );
    }

    /// What moves: sent, buffered, dropped, retries (for "log when something happened").
    pub fn snapshot(&self) -> [u64; 4] {
        [
            self.sent.load(Ordering::Relaxed),
            self.buffered(),
            self.dropped.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
        ]
    }
}

/// Where a tag sits, as the streams name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagLabels {
    /// Station of a device tag; `None` for the line, orders, indicators and visits.
    pub station: Option<String>,
    /// Device of a device tag; `None` likewise.
    pub device: Option<String>,
    /// The tag below its device (`NozzleTemperature`, `Status/Connected`), or the whole path
    /// below the site for other tags (`Line/Steps/Step4/State`).
    pub tag: String,
    /// The path below the site, as in the catalogue: `Stations/Printing/Printer3D/Nozzle…`.
    pub path: String,
}

impl TagLabels {
    pub fn of(path: &str) -> Self {
        let mut segments = path.splitn(4, '/');
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some("Stations"), Some(station), Some(device), Some(tag)) => TagLabels {
                station: Some(station.to_owned()),
                device: Some(device.to_owned()),
                tag: tag.to_owned(),
                path: path.to_owned(),
            },
            _ => TagLabels {
                station: None,
                device: None,
                tag: path.to_owned(),
                path: path.to_owned(),
            },
        }
    }

    /// The topic suffix below `<prefix>/<site>/`: `<station>/<device>/<tag>` for a device
    /// tag, the path itself otherwise (`Line/State`).
    pub fn topic_suffix(&self) -> String {
        match (&self.station, &self.device) {
            (Some(station), Some(device)) => format!("{station}/{device}/{}", self.tag),
            _ => self.tag.clone(),
        }
    }
}

/// Labels of every tag, indexed by `TagId`, computed at start; a sink that meets a tag id
/// past the end (a reload added devices) computes them again from the current catalogue.
/// A retired tag (see `TagCatalog`) keeps its slot with empty labels: nothing publishes it.
pub fn labels(catalog: &TagCatalog) -> Arc<[TagLabels]> {
    (0..catalog.len())
        .map(|i| match catalog.get(TagId(i as u32)) {
            Some(entry) => TagLabels::of(&entry.spec.path),
            None => TagLabels::of(""),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_tags_split_into_station_device_and_tag() {
        let l = TagLabels::of("Stations/Printing/Printer3D/Status/Connected");
        assert_eq!(l.station.as_deref(), Some("Printing"));
        assert_eq!(l.device.as_deref(), Some("Printer3D"));
        assert_eq!(l.tag, "Status/Connected");
        assert_eq!(l.topic_suffix(), "Printing/Printer3D/Status/Connected");
    }

    #[test]
    fn other_tags_keep_their_path() {
        let l = TagLabels::of("Line/Steps/Step4/State");
        assert_eq!(l.station, None);
        assert_eq!(l.tag, "Line/Steps/Step4/State");
        assert_eq!(l.topic_suffix(), "Line/Steps/Step4/State");
    }
}
