//! The truck as a Sparkplug B Edge Node (Sparkplug 3.0, namespace `spBv1.0`).
//!
//! ```text
//! spBv1.0/<group>/NBIRTH/<edge>            bdSeq, Node Control/Rebirth, every node metric
//! spBv1.0/<group>/DBIRTH/<edge>/<device>   every metric of a device: name, alias, type, units
//! spBv1.0/<group>/NDATA|DDATA/...          changes, by alias only (report by exception)
//! spBv1.0/<group>/DDEATH/<edge>/<device>   a device gone: `Status/Connected` false, or removed
//! spBv1.0/<group>/NDEATH/<edge>            the MQTT last will, with the bdSeq of its NBIRTH
//! spBv1.0/<group>/NCMD|DCMD/...            Rebirth; writes through the command router
//! spBv1.0/STATE/<primary_host_id>          followed when `primary_host_id` is set
//! ```
//!
//! Metrics and devices: model.rs. Every connection gets a new `bdSeq` (its NDEATH is the will
//! set when it opens) and starts with births, `seq` 0; `seq` counts every message after that,
//! 0–255. Data messages are QoS 0, as the specification asks; a message counts as sent once
//! written to the socket.
//!
//! A device whose `Status/Connected` turns false gets a DDEATH and no data until it is back;
//! when it turns true again, a DBIRTH with its current values.
//!
//! While the node is not born (broker away, primary host offline), data messages go to the
//! store-and-forward buffer (disk, or memory without one); after the next births they are
//! sent again with `is_historical` set, while live data goes out as it comes.

mod config;
mod model;
mod proto;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fabrique_adapters::bus::BusEvent;
use fabrique_adapters::mqtt::{Connection, Session};
use fabrique_adapters::{Point, PointUpdate, Quality, TagCatalog, TagId, Timestamp, Value};
use prost::Message as _;
use rumqttc::{AsyncClient, Event, Incoming, LastWill, Outgoing, Publish, QoS};
use tokio::time::MissedTickBehavior;

pub use config::SparkplugConfig;
use model::{Model, Owner};
use proto::{Metric, MetricValue, Payload};

use super::sink::{Sink, SinkContext, SinkKind};
use super::spool::{Spool, SpoolError, Ticket};

/// Requests between the node and its rumqttc event loop.
const CLIENT_QUEUE: usize = 1024;
/// Messages handed to the client and not yet written, at most: below `CLIENT_QUEUE`, so that
/// a hand-over never fails for want of room.
const MAX_HANDED: usize = CLIENT_QUEUE - 64;
const MAX_BATCHES: usize = 64;
const TICK: Duration = Duration::from_millis(200);

/// The registry entry (streams/sink.rs).
pub const KIND: SinkKind = SinkKind {
    name: "Sparkplug",
    buffer: "sparkplug",
    enabled: |config| config.sparkplug.enabled,
    validate: |config| config.sparkplug.validate(),
    build: |config, ctx| Ok(Box::new(SparkplugSink::new(config.sparkplug.clone(), ctx)?)),
};

pub struct SparkplugSink {
    config: SparkplugConfig,
    spool: Option<Spool>,
}

impl SparkplugSink {
    pub fn new(config: SparkplugConfig, ctx: &SinkContext) -> Result<Self, SpoolError> {
        let spool = ctx.open_spool(config.disk_buffer_mb)?;
        if let Some(spool) = spool.as_ref().filter(|s| s.pending() > 0) {
            tracing::info!(
                messages = spool.pending(),
                "sparkplug: data buffered before the last stop will be sent after the births"
            );
        }
        Ok(SparkplugSink { config, spool })
    }
}

#[async_trait::async_trait]
impl Sink for SparkplugSink {
    async fn run(self: Box<Self>, ctx: SinkContext) {
        let SparkplugSink { config, spool } = *self;
        let edge = config.edge_node_id(&ctx.site).to_owned();
        let topics = Topics::new(&config.group_id, &edge, config.primary_host_id.as_deref());
        let catalog = ctx.bus.catalog();
        let stop = config.stop_in_payload.then(|| {
            let tag = catalog.lookup(STOP_TAG);
            let town = match tag.and_then(|t| ctx.bus.latest(t).value) {
                Some(Value::Text(town)) => town,
                _ => Arc::from(ctx.stop.as_str()),
            };
            (tag, town)
        });
        let node = Node {
            model: Model::of(&catalog),
            catalog,
            topics,
            seq: 0,
            bd_seq: 0,
            next_bd_seq: None,
            born: false,
            primary_online: config.primary_host_id.is_none(),
            handed: VecDeque::new(),
            backlog: Backlog {
                spool,
                memory: VecDeque::new(),
                capacity: config.queue_messages,
                next: None,
                spool_dropped_seen: 0,
            },
            refused: 0,
            dead: HashSet::new(),
            stop,
            ctx,
            config,
        };
        node.run().await;
    }
}

struct Topics {
    nbirth: String,
    ndata: String,
    ndeath: String,
    ncmd: String,
    /// `spBv1.0/<group>/<TYPE>/<edge>/`: followed by the device id.
    device: String,
    dcmd_prefix: String,
    state: Option<String>,
}

impl Topics {
    fn new(group: &str, edge: &str, primary: Option<&str>) -> Self {
        let node = |kind: &str| format!("spBv1.0/{group}/{kind}/{edge}");
        Topics {
            nbirth: node("NBIRTH"),
            ndata: node("NDATA"),
            ndeath: node("NDEATH"),
            ncmd: node("NCMD"),
            device: format!("spBv1.0/{group}/{{}}/{edge}/"),
            dcmd_prefix: format!("spBv1.0/{group}/DCMD/{edge}/"),
            state: primary.map(|id| format!("spBv1.0/STATE/{id}")),
        }
    }

    fn device(&self, kind: &str, device: &str) -> String {
        format!("{}{device}", self.device.replace("{}", kind))
    }
}

/// A message handed to the client, until rumqttc writes it.
struct Handed {
    /// Data (counted as sent once written), not a birth or death.
    data: bool,
    /// Where it sits in the disk buffer, for historical data read from there.
    ticket: Option<Ticket>,
}

/// Data that could not go out live: on disk (`disk_buffer_mb > 0`) or in memory.
///
/// A record is `owner: u8 (0 node, 1 device) | device id length: u16 LE | device id |
/// Payload (metrics with alias, timestamp and value; no seq)`: re-sent after a birth with the
/// sequence number of the moment and `is_historical` set.
struct Backlog {
    spool: Option<Spool>,
    memory: VecDeque<Vec<u8>>,
    capacity: usize,
    /// A record read from the disk buffer and not handed yet.
    next: Option<(Vec<u8>, Ticket)>,
    spool_dropped_seen: u64,
}

fn encode_record(device: Option<&str>, metrics: Vec<Metric>) -> Vec<u8> {
    let id = device.unwrap_or("");
    let payload = Payload {
        metrics,
        ..Payload::default()
    };
    let mut out = Vec::with_capacity(3 + id.len() + payload.encoded_len());
    out.push(u8::from(device.is_some()));
    out.extend_from_slice(&(id.len() as u16).to_le_bytes());
    out.extend_from_slice(id.as_bytes());
    payload.encode(&mut out).expect("a Vec grows as needed");
    out
}

/// `(device id or None for the node, metrics)`; `None` for a record that does not decode.
fn decode_record(record: &[u8]) -> Option<(Option<String>, Vec<Metric>)> {
    let (&owner, rest) = record.split_first()?;
    let len = u16::from_le_bytes([*rest.first()?, *rest.get(1)?]) as usize;
    let id = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
    let payload = Payload::decode(rest.get(2 + len..)?).ok()?;
    let device = (owner == 1).then(|| id.to_owned());
    Some((device, payload.metrics))
}

struct Node {
    ctx: SinkContext,
    config: SparkplugConfig,
    topics: Topics,
    model: Model,
    catalog: Arc<TagCatalog>,
    /// The `seq` of the next message.
    seq: u8,
    /// The `bdSeq` of the current connection (in its will and its NBIRTH).
    bd_seq: u64,
    /// The `bdSeq` of the next connection, once its will is set.
    next_bd_seq: Option<u64>,
    born: bool,
    /// The primary host said online (always true without `primary_host_id`).
    primary_online: bool,
    handed: VecDeque<Handed>,
    backlog: Backlog,
    /// Commands refused because of `command_role`: logged the first time.
    refused: u64,
    /// Devices not born while the node is: `Status/Connected` false (DDEATH published, or no
    /// DBIRTH at the node's birth). Their live data is not sent until they are back.
    dead: HashSet<String>,
    /// `stop_in_payload`: the `Stop/Town` tag and the town, followed on the bus.
    stop: Option<(Option<TagId>, Arc<str>)>,
}

/// The tag that says where the truck is (`[stop]`, the tour).
const STOP_TAG: &str = "Stop/Town";

impl Node {
    fn will(&self, bd_seq: u64) -> LastWill {
        LastWill::new(
            &self.topics.ndeath,
            model::death(bd_seq).encode_to_vec(),
            QoS::AtLeastOnce,
            false,
        )
    }

    async fn run(mut self) {
        let options = self.config.endpoint(&self.ctx.site).options(&Session {
            clean: true,
            last_will: Some(self.will(self.bd_seq)),
            ..Session::default()
        });
        let options = match options {
            Ok(options) => options,
            Err(error) => {
                tracing::error!(%error, "sparkplug edge node not started");
                self.ctx.counters.set_error(error);
                return;
            }
        };
        tracing::info!(broker = %self.config.broker, client_id = %options.client_id(), group = %self.config.group_id, topic = %self.topics.nbirth, "sparkplug edge node started");
        let mut connection = Connection::new(options, CLIENT_QUEUE);
        let client = connection.client().clone();
        let mut changes = self.ctx.bus.subscribe();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut burst = Vec::new();
        let shutdown = self.ctx.shutdown.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                received = changes.recv_many(&mut burst, MAX_BATCHES) => {
                    if !received {
                        break;
                    }
                    for event in burst.drain(..) {
                        let updates = match &event {
                            BusEvent::Changes(batch) => batch.as_slice(),
                            BusEvent::Resync { state, .. } => state.as_slice(),
                        };
                        self.on_bus(&client, updates);
                    }
                }
                result = connection.next() => match result {
                    Ok(event) => self.on_event(&client, &mut connection, event),
                    Err(error) => self.on_lost(&error.to_string()),
                },
                _ = tick.tick() => self.housekeeping(&client),
            }
            self.drain(&client);
        }
        self.close(&client, &mut connection).await;
    }

    fn on_event(&mut self, client: &AsyncClient, connection: &mut Connection, event: Event) {
        match event {
            Event::Incoming(Incoming::ConnAck(_)) => {
                self.ctx.counters.set_connected(true);
                tracing::info!(broker = %self.config.broker, bd_seq = self.bd_seq, "sparkplug edge node connected");
                let mut filters = vec![
                    self.topics.ncmd.clone(),
                    format!("{}+", self.topics.dcmd_prefix),
                ];
                filters.extend(self.topics.state.clone());
                for filter in filters {
                    if let Err(error) = client.try_subscribe(filter, QoS::AtLeastOnce) {
                        tracing::warn!(%error, "sparkplug: cannot subscribe");
                    }
                }
                // The next connection is a new session: its death certificate says so.
                let next = (self.bd_seq + 1) % 256;
                connection.set_next_last_will(self.will(next));
                self.next_bd_seq = Some(next);
                if self.primary_online {
                    self.birth(client);
                }
            }
            Event::Incoming(Incoming::Publish(publish)) => self.on_message(client, &publish),
            Event::Outgoing(Outgoing::Publish(_)) => {
                if let Some(handed) = self.handed.pop_front() {
                    if handed.data {
                        self.ctx.counters.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    if let (Some(ticket), Some(spool)) = (handed.ticket, &mut self.backlog.spool) {
                        if let Err(error) = spool.ack_through(ticket) {
                            self.ctx.counters.set_error(error.to_string());
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn on_lost(&mut self, error: &str) {
        let error = format!("broker {}: {error}", self.config.broker);
        let counters = &self.ctx.counters;
        if counters.connected.load(Ordering::Relaxed) {
            tracing::warn!(%error, "sparkplug edge node lost the broker; buffering and reconnecting");
        } else if *counters.last_error.lock() != error {
            tracing::warn!(%error, "sparkplug edge node cannot connect; buffering and retrying");
        }
        counters.set_error(error);
        counters.set_connected(false);
        counters.retries.fetch_add(1, Ordering::Relaxed);
        self.born = false;
        if let Some(next) = self.next_bd_seq.take() {
            self.bd_seq = next;
        }
        // What was handed and not written is gone with the connection; records from the disk
        // buffer are read again (they are acknowledged only once written).
        self.handed.clear();
        self.backlog.next = None;
        if let Some(spool) = &mut self.backlog.spool {
            spool.rewind();
        }
        if self.config.primary_host_id.is_some() {
            // Wait for the retained STATE of the next session.
            self.primary_online = false;
        }
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        u64::from(seq)
    }

    fn hand(&mut self, client: &AsyncClient, topic: String, payload: Payload, handed: Handed) {
        let qos = QoS::AtMostOnce;
        match client.try_publish(topic, qos, false, payload.encode_to_vec()) {
            Ok(()) => self.handed.push_back(handed),
            Err(error) => {
                // Cannot happen below MAX_HANDED; counted rather than assumed.
                self.ctx.counters.dropped.fetch_add(1, Ordering::Relaxed);
                self.ctx.counters.set_error(format!("sparkplug: {error}"));
            }
        }
    }

    /// NBIRTH, then a DBIRTH per device: every metric with its name, alias, type and
    /// properties, and the current value. `seq` starts again at 0.
    fn birth(&mut self, client: &AsyncClient) {
        self.seq = 0;
        self.catalog = self.ctx.bus.catalog();
        self.model = Model::of(&self.catalog);
        let mut metrics = vec![
            model::bd_seq_metric(self.bd_seq, true),
            model::rebirth_metric(),
        ];
        metrics.extend(self.birth_metrics(&self.model.node_tags));
        let payload = Payload {
            timestamp: Some(model::now_ms()),
            metrics,
            seq: Some(self.next_seq()),
            ..Payload::default()
        };
        let topic = self.topics.nbirth.clone();
        self.hand(
            client,
            topic,
            payload,
            Handed {
                data: false,
                ticket: None,
            },
        );
        self.dead.clear();
        for i in 0..self.model.devices.len() {
            if self.device_connected(i) {
                self.device_birth(client, i);
            } else {
                self.dead.insert(self.model.devices[i].id.clone());
            }
        }
        self.born = true;
        tracing::info!(
            bd_seq = self.bd_seq,
            devices = self.model.devices.len(),
            "sparkplug births published"
        );
    }

    fn device_birth(&mut self, client: &AsyncClient, device: usize) {
        let metrics = self.birth_metrics(&self.model.devices[device].tags);
        let payload = Payload {
            timestamp: Some(model::now_ms()),
            metrics,
            seq: Some(self.next_seq()),
            ..Payload::default()
        };
        let topic = self.topics.device("DBIRTH", &self.model.devices[device].id);
        self.hand(
            client,
            topic,
            payload,
            Handed {
                data: false,
                ticket: None,
            },
        );
    }

    fn birth_metrics(&self, tags: &[fabrique_adapters::TagId]) -> Vec<Metric> {
        tags.iter()
            .filter_map(|&tag| {
                let place = self.model.place(tag)?;
                let spec = &self.catalog.get(tag)?.spec;
                let mut point = self.ctx.bus.latest(tag);
                if let (None, Some((Some(stop_tag), town))) = (&point.value, &self.stop) {
                    // A birth before the visits module has published the stop still says
                    // where the truck is: the town this node labels its data with.
                    if *stop_tag == tag {
                        point = Point {
                            value: Some(Value::Text(town.clone())),
                            quality: Quality::GOOD,
                            timestamp: Timestamp::now(),
                        };
                    }
                }
                let mut metric = model::metric(tag, place, &point, Some(spec));
                if let Some((_, town)) = &self.stop {
                    model::add_stop(&mut metric, town);
                }
                Some(metric)
            })
            .collect()
    }

    /// False when the device's `Status/Connected` says so; a device without one, or whose
    /// status is not known yet, is taken as connected.
    fn device_connected(&self, device: usize) -> bool {
        self.model.devices[device]
            .status
            .is_none_or(|tag| !matches!(self.ctx.bus.latest(tag).value, Some(Value::Bool(false))))
    }

    /// DDEATH: the host marks every metric of the device stale until its next DBIRTH.
    fn device_death(&mut self, client: &AsyncClient, id: &str) {
        let payload = Payload {
            timestamp: Some(model::now_ms()),
            seq: Some(self.next_seq()),
            ..Payload::default()
        };
        let topic = self.topics.device("DDEATH", id);
        self.hand(
            client,
            topic,
            payload,
            Handed {
                data: false,
                ticket: None,
            },
        );
    }

    /// A device's `Status/Connected` changed while the node is born.
    fn on_device_status(&mut self, client: &AsyncClient, device: usize, connected: bool) {
        let id = self.model.devices[device].id.clone();
        if !connected && self.dead.insert(id.clone()) {
            self.device_death(client, &id);
            tracing::info!(device = %id, "sparkplug: device disconnected, DDEATH published");
        } else if connected && self.dead.remove(&id) {
            self.device_birth(client, device);
            tracing::info!(device = %id, "sparkplug: device back, DBIRTH published");
        }
    }

    /// Changes from the bus: one NDATA and one DDATA per device, per bus batch.
    fn on_bus(&mut self, client: &AsyncClient, updates: &[PointUpdate]) {
        if updates
            .iter()
            .any(|u| u.tag.index() >= self.model.tags.len())
        {
            self.remodel(client);
        }
        if let Some((Some(stop_tag), town)) = &mut self.stop {
            // Follow the tour first: a batch that moves the truck labels its own values.
            for u in updates.iter().filter(|u| u.tag == *stop_tag) {
                if let Some(Value::Text(t)) = &u.point.value {
                    *town = t.clone();
                }
            }
        }
        // Index 0: the node; i + 1: device i.
        let mut groups: Vec<Vec<Metric>> = vec![Vec::new(); self.model.devices.len() + 1];
        // The last `Status/Connected` of each device in this batch.
        let mut statuses: Vec<(usize, bool)> = Vec::new();
        for PointUpdate { tag, point } in updates {
            // A tag that never had a value is not news.
            if point.value.is_none() && point.timestamp.is_null() {
                continue;
            }
            let Some(place) = self.model.place(*tag) else {
                continue;
            };
            let group = match place.owner {
                Owner::Node => 0,
                Owner::Device(i) => {
                    if let (true, Some(Value::Bool(connected))) =
                        (self.model.devices[i].status == Some(*tag), &point.value)
                    {
                        statuses.retain(|(d, _)| *d != i);
                        statuses.push((i, *connected));
                    }
                    i + 1
                }
            };
            let mut metric = model::metric(*tag, place, point, None);
            if let Some((_, town)) = &self.stop {
                model::add_stop(&mut metric, town);
            }
            groups[group].push(metric);
        }
        for (i, metrics) in groups.into_iter().enumerate() {
            if metrics.is_empty() {
                continue;
            }
            let device = i.checked_sub(1).map(|d| self.model.devices[d].id.clone());
            if self.born && device.as_ref().is_some_and(|id| self.dead.contains(id)) {
                // Dead for the host until its DBIRTH, which carries the current values.
                continue;
            }
            self.data(client, device, metrics, None, false);
        }
        if self.born {
            for (device, connected) in statuses {
                self.on_device_status(client, device, connected);
            }
        }
    }

    /// Live data, or (`historical`) a record from the backlog, with its ticket when it comes
    /// from the disk buffer. What cannot be sent now goes to the backlog.
    fn data(
        &mut self,
        client: &AsyncClient,
        device: Option<String>,
        mut metrics: Vec<Metric>,
        ticket: Option<Ticket>,
        historical: bool,
    ) {
        if !self.born || self.handed.len() >= MAX_HANDED {
            self.backlog
                .push(encode_record(device.as_deref(), metrics), &self.ctx);
            return;
        }
        if historical {
            for metric in &mut metrics {
                metric.is_historical = Some(true);
            }
        }
        let topic = match &device {
            Some(id) => self.topics.device("DDATA", id),
            None => self.topics.ndata.clone(),
        };
        let payload = Payload {
            timestamp: Some(model::now_ms()),
            metrics,
            seq: Some(self.next_seq()),
            ..Payload::default()
        };
        self.hand(client, topic, payload, Handed { data: true, ticket });
    }

    /// Sends the backlog, oldest first, while there is room: live data goes first.
    fn drain(&mut self, client: &AsyncClient) {
        while self.born && self.handed.len() < MAX_HANDED / 2 {
            let Some((record, ticket)) = self.backlog.take(&self.ctx) else {
                break;
            };
            match decode_record(&record) {
                Some((device, metrics)) => {
                    if device
                        .as_deref()
                        .is_some_and(|id| self.model.device(id).is_none() || self.dead.contains(id))
                    {
                        // The device went away meanwhile (removed, or disconnected: not born
                        // for the host): nobody to say it for.
                        self.backlog.release(ticket, &self.ctx);
                        self.ctx.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    self.data(client, device, metrics, ticket, true);
                }
                None => {
                    self.backlog.release(ticket, &self.ctx);
                    self.ctx.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// A reload changed the catalogue: DDEATH for the devices gone, DBIRTH for the new and
    /// the changed ones.
    fn remodel(&mut self, client: &AsyncClient) {
        let catalog = self.ctx.bus.catalog();
        if Arc::ptr_eq(&catalog, &self.catalog) {
            return;
        }
        let old = std::mem::replace(&mut self.model, Model::of(&catalog));
        self.catalog = catalog;
        if !self.born {
            return;
        }
        for device in &old.devices {
            // A disconnected device already had its DDEATH.
            if self.model.device(&device.id).is_none() && !self.dead.remove(&device.id) {
                self.device_death(client, &device.id);
                tracing::info!(device = %device.id, "sparkplug: device gone, DDEATH published");
            }
        }
        for i in 0..self.model.devices.len() {
            let device = &self.model.devices[i];
            let before = old.device(&device.id).map(|j| &old.devices[j]);
            if before != Some(device) {
                if self.device_connected(i) {
                    self.device_birth(client, i);
                } else {
                    self.dead.insert(device.id.clone());
                }
            }
        }
        // Node metrics added by a reload need a new NBIRTH: rebirth the whole node.
        if old.node_tags != self.model.node_tags {
            self.birth(client);
        }
    }

    fn housekeeping(&mut self, client: &AsyncClient) {
        self.remodel(client);
        let counters = &self.ctx.counters;
        if let Some(spool) = &mut self.backlog.spool {
            if let Err(error) = spool.flush() {
                counters.set_error(error.to_string());
            }
            counters
                .buffered_disk
                .store(spool.pending(), Ordering::Relaxed);
            let dropped = spool.dropped();
            if dropped > self.backlog.spool_dropped_seen {
                counters
                    .dropped
                    .fetch_add(dropped - self.backlog.spool_dropped_seen, Ordering::Relaxed);
                self.backlog.spool_dropped_seen = dropped;
            }
        }
        let in_memory = self.backlog.memory.len() + self.handed.iter().filter(|h| h.data).count();
        counters
            .buffered_memory
            .store(in_memory as u64, Ordering::Relaxed);
    }

    fn on_message(&mut self, client: &AsyncClient, publish: &Publish) {
        let topic = publish.topic.as_str();
        if Some(topic) == self.topics.state.as_deref() {
            self.on_state(client, &publish.payload);
            return;
        }
        let owner = if topic == self.topics.ncmd {
            Owner::Node
        } else if let Some(id) = topic.strip_prefix(&self.topics.dcmd_prefix) {
            match self.model.device(id) {
                Some(i) => Owner::Device(i),
                None => {
                    tracing::warn!(device = %id, "sparkplug: DCMD for an unknown device ignored");
                    return;
                }
            }
        } else {
            return;
        };
        let payload = match Payload::decode(&publish.payload[..]) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::warn!(%topic, %error, "sparkplug: command is not a Sparkplug B payload; ignored");
                return;
            }
        };
        for metric in payload.metrics {
            let rebirth = owner == Owner::Node
                && (metric.name.as_deref() == Some(model::REBIRTH)
                    || metric.alias == Some(model::REBIRTH_ALIAS));
            if rebirth {
                if metric.value == Some(MetricValue::BooleanValue(true)) {
                    tracing::info!("sparkplug: rebirth requested");
                    if self.primary_online && client_ready(&self.ctx) {
                        self.birth(client);
                    }
                }
                continue;
            }
            self.write(owner, metric);
        }
    }

    /// The primary host's `STATE`: JSON `{"online": true|false, ...}` (3.0), or the plain
    /// `ONLINE`/`OFFLINE` of earlier versions.
    fn on_state(&mut self, client: &AsyncClient, payload: &[u8]) {
        let online = match serde_json::from_slice::<serde_json::Value>(payload) {
            Ok(json) => json.get("online").and_then(|v| v.as_bool()),
            Err(_) => match payload {
                b"ONLINE" => Some(true),
                b"OFFLINE" => Some(false),
                _ => None,
            },
        };
        let Some(online) = online else {
            tracing::warn!("sparkplug: STATE of the primary host not understood; ignored");
            return;
        };
        if online && !self.primary_online {
            tracing::info!("sparkplug: primary host online");
            self.primary_online = true;
            if !self.born {
                self.birth(client);
            }
        } else if !online && self.primary_online {
            self.primary_online = false;
            if self.born {
                // The host cannot follow: say the node is gone and buffer until it is back.
                // A new connection (and bdSeq) follows, as the specification asks.
                tracing::warn!(
                    "sparkplug: primary host offline; NDEATH, buffering until it is back"
                );
                let payload = model::death(self.bd_seq);
                let topic = self.topics.ndeath.clone();
                let _ = client.try_publish(topic, QoS::AtLeastOnce, false, payload.encode_to_vec());
                self.handed.push_back(Handed {
                    data: false,
                    ticket: None,
                });
                self.born = false;
                let _ = client.try_disconnect();
            }
        }
    }

    /// NCMD/DCMD metric: a write to the owning adapter, as an OPC UA user of `command_role`.
    fn write(&mut self, owner: Owner, metric: Metric) {
        let what = metric
            .name
            .clone()
            .unwrap_or_else(|| format!("alias {}", metric.alias.unwrap_or_default()));
        if !self.config.command_role.may_write() {
            self.refused += 1;
            let reason = format!(
                "sparkplug: write to `{what}` refused: sparkplug.command_role is {:?}",
                self.config.command_role
            );
            if self.refused == 1 {
                tracing::warn!("{reason} (further refusals are not logged)");
            }
            self.ctx.counters.set_error(reason);
            return;
        }
        let Some(tag) = self.model.command_target(owner, &metric) else {
            tracing::warn!(metric = %what, "sparkplug: command for an unknown metric ignored");
            return;
        };
        let Some(place) = self.model.place(tag) else {
            return;
        };
        let Some(value) = metric
            .value
            .as_ref()
            .and_then(|v| model::command_value(place.data_type, v))
        else {
            tracing::warn!(metric = %what, "sparkplug: command value does not fit the metric's type; ignored");
            return;
        };
        let router = self.ctx.router.clone();
        tokio::spawn(async move {
            match router.write(tag, value).await {
                Ok(()) => tracing::info!(metric = %what, "sparkplug: write done"),
                Err(error) => tracing::warn!(metric = %what, %error, "sparkplug: write refused"),
            }
        });
    }

    /// Clean stop: NDEATH (the will would say the same, later), disconnect, keep the backlog.
    async fn close(&mut self, client: &AsyncClient, connection: &mut Connection) {
        if connection.is_connected() {
            let payload = model::death(self.bd_seq);
            let _ = client.try_publish(
                self.topics.ndeath.clone(),
                QoS::AtLeastOnce,
                false,
                payload.encode_to_vec(),
            );
            let _ = client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                loop {
                    match connection.next().await {
                        Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
        }
        if let Some(spool) = self.backlog.spool.take() {
            if let Err(error) = spool.close() {
                tracing::error!(%error, "sparkplug: cannot close its disk buffer");
            }
        }
        self.ctx.counters.log("sparkplug edge node stopped");
    }
}

fn client_ready(ctx: &SinkContext) -> bool {
    ctx.counters.connected.load(Ordering::Relaxed)
}

impl Backlog {
    fn push(&mut self, record: Vec<u8>, ctx: &SinkContext) {
        if let Some(spool) = &mut self.spool {
            if let Err(error) = spool.append(&record, 1) {
                ctx.counters.dropped.fetch_add(1, Ordering::Relaxed);
                ctx.counters.set_error(error.to_string());
            }
            return;
        }
        if self.memory.len() == self.capacity {
            self.memory.pop_front();
            ctx.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.memory.push_back(record);
    }

    /// The oldest record not handed yet, with its ticket when it comes from the disk buffer.
    fn take(&mut self, ctx: &SinkContext) -> Option<(Vec<u8>, Option<Ticket>)> {
        if let Some((record, ticket)) = self.next.take() {
            return Some((record, Some(ticket)));
        }
        if let Some(spool) = &mut self.spool {
            let mut record = Vec::new();
            return match spool.next(&mut record) {
                Ok(Some((_, ticket))) => Some((record, Some(ticket))),
                Ok(None) => None,
                Err(error) => {
                    ctx.counters.set_error(error.to_string());
                    None
                }
            };
        }
        self.memory.pop_front().map(|r| (r, None))
    }

    /// A record that will not be sent: acknowledged so that the disk buffer moves on.
    fn release(&mut self, ticket: Option<Ticket>, ctx: &SinkContext) {
        if let (Some(ticket), Some(spool)) = (ticket, &mut self.spool) {
            if let Err(error) = spool.ack_through(ticket) {
                ctx.counters.set_error(error.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_sparkplug_namespace() {
        let t = Topics::new("fabrique", "truck-1", Some("scada"));
        assert_eq!(t.nbirth, "spBv1.0/fabrique/NBIRTH/truck-1");
        assert_eq!(t.ndeath, "spBv1.0/fabrique/NDEATH/truck-1");
        assert_eq!(
            t.device("DBIRTH", "Printing:Printer3D"),
            "spBv1.0/fabrique/DBIRTH/truck-1/Printing:Printer3D"
        );
        assert_eq!(t.dcmd_prefix, "spBv1.0/fabrique/DCMD/truck-1/");
        assert_eq!(t.state.as_deref(), Some("spBv1.0/STATE/scada"));
    }

    #[test]
    fn backlog_records_keep_owner_and_metrics() {
        let metric = Metric {
            alias: Some(7),
            value: Some(MetricValue::DoubleValue(1.5)),
            ..Metric::default()
        };
        let record = encode_record(Some("Printing:Printer3D"), vec![metric.clone()]);
        let (device, metrics) = decode_record(&record).unwrap();
        assert_eq!(device.as_deref(), Some("Printing:Printer3D"));
        assert_eq!(metrics, vec![metric.clone()]);
        let (device, _) = decode_record(&encode_record(None, vec![metric])).unwrap();
        assert_eq!(device, None);
        assert!(decode_record(&record[..2]).is_none());
    }
}
