//! The gateway's own diagnostics on the bus: the counters of every enabled sink, as tags under
//! `Diagnostics/Sinks/<Sink>/`, so that they show in the OPC UA address space (and in every
//! stream, and later in `/metrics`) like any other tag.
//!
//! ```text
//! Diagnostics/Sinks/Mqtt/Sent        UInt64  messages the broker acknowledged
//! Diagnostics/Sinks/Mqtt/Buffered    UInt64  waiting: memory + disk buffer
//! Diagnostics/Sinks/Mqtt/BufferedOnDisk UInt64  of which in the disk buffer (0: the backlog of an outage is gone)
//! Diagnostics/Sinks/Mqtt/Dropped     UInt64  lost (full buffers, refused for good)
//! Diagnostics/Sinks/Mqtt/Retries     UInt64  failed connections and writes, retried
//! Diagnostics/Sinks/Mqtt/LastError   String  the last error, "" when none
//! Diagnostics/Sinks/Mqtt/Connected   Boolean broker connected (InfluxDB: the last write answered)
//! Diagnostics/Sinks/InfluxDB/...     the same, in points
//! ```
//!
//! These paths are an interface: keep them stable. The sinks update shared counters; this
//! adapter copies them onto the bus once a second, only the ones that changed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fabrique_adapters::tag::{CatalogError, DataType, TagId, TagSpec};
use fabrique_adapters::{Adapter, AdapterContext, ObjectType, TagRegistrar, Timestamp, Value};

use crate::streams::SinkCounters;

const EVERY: Duration = Duration::from_secs(1);

struct SinkTags {
    counters: Arc<SinkCounters>,
    sent: TagId,
    buffered: TagId,
    buffered_on_disk: TagId,
    dropped: TagId,
    retries: TagId,
    last_error: TagId,
    connected: TagId,
}

/// Publishes `Diagnostics/Sinks/<Sink>/*` for every sink it is given.
pub struct SinkDiagnostics {
    sinks: Vec<(&'static str, Arc<SinkCounters>)>,
    tags: Vec<SinkTags>,
}

impl SinkDiagnostics {
    /// `sinks`: the enabled sinks, by the name their folder gets (`Mqtt`, `InfluxDB`, the
    /// `name` of their registry entry in streams/sink.rs).
    pub fn new(sinks: Vec<(&'static str, Arc<SinkCounters>)>) -> Self {
        SinkDiagnostics {
            sinks,
            tags: Vec::new(),
        }
    }
}

#[async_trait]
impl Adapter for SinkDiagnostics {
    fn name(&self) -> &str {
        "diagnostics"
    }

    fn declare_tags(&mut self, tags: &mut TagRegistrar<'_>) -> Result<(), CatalogError> {
        if !self.sinks.is_empty() {
            tags.object("Diagnostics", ObjectType::Folder)?;
            tags.object("Diagnostics/Sinks", ObjectType::Folder)?;
        }
        for (name, counters) in &self.sinks {
            tags.object(format!("Diagnostics/Sinks/{name}"), ObjectType::Folder)?;
            let mut tag = |leaf: &str, data_type| {
                tags.register(TagSpec::new(
                    format!("Diagnostics/Sinks/{name}/{leaf}"),
                    data_type,
                ))
            };
            self.tags.push(SinkTags {
                counters: counters.clone(),
                sent: tag("Sent", DataType::UInt64)?,
                buffered: tag("Buffered", DataType::UInt64)?,
                buffered_on_disk: tag("BufferedOnDisk", DataType::UInt64)?,
                dropped: tag("Dropped", DataType::UInt64)?,
                retries: tag("Retries", DataType::UInt64)?,
                last_error: tag("LastError", DataType::String)?,
                connected: tag("Connected", DataType::Bool)?,
            });
        }
        Ok(())
    }

    async fn run(self: Box<Self>, mut ctx: AdapterContext) {
        let mut interval = tokio::time::interval(EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // What was published last, per tag; `None` forces the first publication.
        let mut last: Vec<Option<([u64; 4], String)>> = vec![None; self.tags.len()];
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                // Counters are read-only; answer rather than leave the client waiting.
                Some(command) = ctx.commands.recv() => command.refuse(),
                _ = interval.tick() => {
                    let now = Timestamp::now();
                    for (sink, seen) in self.tags.iter().zip(last.iter_mut()) {
                        let c = &sink.counters;
                        let numbers = [
                            c.sent.load(Ordering::Relaxed),
                            c.buffered(),
                            c.dropped.load(Ordering::Relaxed),
                            c.retries.load(Ordering::Relaxed),
                        ];
                        let error = c.last_error.lock().clone();
                        let old = seen.as_ref();
                        let ids = [sink.sent, sink.buffered, sink.dropped, sink.retries];
                        for (i, (&tag, &n)) in ids.iter().zip(numbers.iter()).enumerate() {
                            if old.is_none_or(|(o, _)| o[i] != n) {
                                ctx.publisher.set(tag, Value::UInt(n), now);
                            }
                        }
                        // The bus drops a value that did not change: no need to track it here.
                        let connected = c.connected.load(Ordering::Relaxed);
                        ctx.publisher.set(sink.connected, Value::Bool(connected), now);
                        let on_disk = c.buffered_disk.load(Ordering::Relaxed);
                        ctx.publisher.set(sink.buffered_on_disk, Value::UInt(on_disk), now);
                        if old.is_none_or(|(_, e)| *e != error) {
                            ctx.publisher.set(sink.last_error, Value::text(&error), now);
                        }
                        *seen = Some((numbers, error));
                    }
                    ctx.publisher.flush();
                }
            }
        }
    }
}
