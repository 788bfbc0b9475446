//! What a sink is, and the one list of them.
//!
//! A sink carries the bus somewhere (a broker, a database). It lives in its own folder under
//! `streams/`, with its configuration section next to its code, implements [`Sink`], and is
//! registered by one line in [`SINKS`]. What every sink needs comes with that line rather
//! than with each sink:
//!
//! - its counters ([`SinkCounters`]), declared as `Diagnostics/Sinks/<name>/*` tags before the
//!   gateway runs (diagnostics.rs), which is what `/health` and `/metrics` read: a registered
//!   sink shows in both with no code of its own;
//! - its store-and-forward disk buffer in `<data_dir>/buffer/<buffer>/`
//!   ([`SinkContext::open_spool`]);
//! - the bus, the site and stop, the command router (for sinks that take commands), and the
//!   shutdown token.
//!
//! The MQTT sinks share one connection layer (`fabrique_adapters::mqtt::connection`) with the
//! MQTT device adapter and the survey subscriber.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fabrique_adapters::PointBus;
use tokio_util::sync::CancellationToken;

use super::spool::{Spool, SpoolError};
use super::SinkCounters;
use crate::commands::CommandRouter;
use crate::config::GatewayConfig;

/// A northbound sink: reads the bus until `ctx.shutdown`, counts what it does in
/// `ctx.counters`.
#[async_trait]
pub trait Sink: Send {
    async fn run(self: Box<Self>, ctx: SinkContext);
}

/// What the gateway hands every sink.
#[derive(Clone)]
pub struct SinkContext {
    pub bus: PointBus,
    /// `site.id`: the truck, in every topic, series and record.
    pub site: String,
    /// The configured stop (`stop.town`; `Stop/Town` on the bus follows the tour).
    pub stop: String,
    /// Writes and method calls to the adapter that owns a tag, for sinks that take commands.
    pub router: CommandRouter,
    /// Shared with the diagnostics tags, `/health` and `/metrics`.
    pub counters: Arc<SinkCounters>,
    /// `<data_dir>/buffer/<buffer>`.
    pub buffer_dir: PathBuf,
    /// `streams.spool_fsync_ms`: the disk buffer is synced at most this long after a flush.
    pub spool_fsync: Duration,
    pub shutdown: CancellationToken,
    /// The conditions' state changes, for sinks that carry alarms (alarms/north.rs).
    pub alarms: Arc<crate::alarms::Alarms>,
}

impl SinkContext {
    /// The store-and-forward disk buffer of `megabytes` MiB (`None` for 0: memory only), with
    /// what a previous run left in it counted as buffered on disk (the sink says so in its
    /// own words and units).
    pub fn open_spool(&self, megabytes: u64) -> Result<Option<Spool>, SpoolError> {
        if megabytes == 0 {
            return Ok(None);
        }
        let spool = Spool::open_with_fsync(&self.buffer_dir, megabytes << 20, self.spool_fsync)?;
        self.counters
            .buffered_disk
            .store(spool.pending(), Ordering::Relaxed);
        Ok(Some(spool))
    }
}

/// The bounds every MQTT-like sink puts on its memory queue (messages) and its disk buffer
/// (MiB), each reported under the sink's own key.
pub fn check_buffers(
    (queue_key, queue_messages): (&'static str, usize),
    (disk_key, disk_buffer_mb): (&'static str, u64),
) -> Result<(), (&'static str, String)> {
    if !(1..=10_000_000).contains(&queue_messages) {
        return Err((
            queue_key,
            format!("must be between 1 and 10000000, got {queue_messages}"),
        ));
    }
    if disk_buffer_mb > 1 << 20 {
        return Err((
            disk_key,
            format!("must be at most 1048576 (1 TiB), got {disk_buffer_mb}"),
        ));
    }
    Ok(())
}

/// One kind of sink, as the registry knows it.
pub struct SinkKind {
    /// Its folder under `Diagnostics/Sinks/`, its `sink` label in `/health` and `/metrics`.
    /// An interface: keep it stable.
    pub name: &'static str,
    /// Its disk buffer's folder under `<data_dir>/buffer/`.
    pub buffer: &'static str,
    pub enabled: fn(&GatewayConfig) -> bool,
    /// Checks what serde cannot in its section; the key is dotted from the root.
    pub validate: fn(&GatewayConfig) -> Result<(), (&'static str, String)>,
    /// Builds it (the disk buffer is opened here, so a bad one stops the start).
    pub build: fn(&GatewayConfig, &SinkContext) -> anyhow::Result<Box<dyn Sink>>,
}

/// Every sink. Adding one: its folder under `streams/`, its section in `GatewayConfig`, and a
/// line here.
pub const SINKS: &[SinkKind] = &[
    super::mqtt::KIND,
    super::influxdb::KIND,
    super::sparkplug::KIND,
];

/// The sinks `config` enables, each with its counters.
pub fn enabled(config: &GatewayConfig) -> Vec<(&'static SinkKind, Arc<SinkCounters>)> {
    SINKS
        .iter()
        .filter(|kind| (kind.enabled)(config))
        .map(|kind| (kind, Arc::new(SinkCounters::default())))
        .collect()
}

/// Every sink's section checked, in registry order.
pub fn validate(config: &GatewayConfig) -> Result<(), (&'static str, String)> {
    SINKS.iter().try_for_each(|kind| (kind.validate)(config))
}
