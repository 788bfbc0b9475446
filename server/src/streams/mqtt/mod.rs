//! The MQTT publisher: every change on the bus to `<prefix>/<site>/<station>/<device>/<tag>`,
//! and the gateway's own state on the retained `<prefix>/<site>/status` (birth and last will).
//!
//! The sink drives the rumqttc event loop itself, like the MQTT device adapter, and keeps its
//! messages in its own bounded queue: a message stays the sink's until the broker has it
//! (PUBACK at QoS 1, written to the socket at QoS 0). When the connection drops, what was in
//! flight goes back to the head of the queue in order, so a broker outage loses nothing at
//! QoS 1 unless the queue overflowed (a message may then arrive twice: at least once).
//! The bus is read without waiting on the broker: the sink never slows the bus down.

pub mod config;
mod part14;
mod payload;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fabrique_adapters::bus::BusEvent;
use fabrique_adapters::mqtt::config::MAX_PACKET_BYTES;
use fabrique_adapters::mqtt::{Connection, Session};
use fabrique_adapters::{PointBus, PointUpdate, Timestamp};
use rumqttc::{
    AsyncClient, ConnectionError, Event, Incoming, LastWill, MqttOptions, Outgoing, QoS,
};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub use config::MqttSinkConfig;
use payload::{encode, rfc3339, Throttle};

use super::sink::{Sink, SinkContext, SinkKind};
use super::spool::{Spool, SpoolError, Ticket};
use super::{labels, SinkCounters};

/// Messages handed to rumqttc and not yet written; also the capacity of its request channel.
const CLIENT_QUEUE: usize = 256;
/// QoS 1 messages written and waiting for their PUBACK.
const INFLIGHT: u16 = 256;
/// Bus batches taken in one go.
const MAX_BATCHES: usize = 64;
const STATS_EVERY: Duration = Duration::from_secs(60);
/// On shutdown: time left to flush the queue and publish `offline`.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

struct Message {
    topic: Arc<str>,
    payload: Vec<u8>,
    qos: QoS,
    retain: bool,
    /// Birth and offline messages: not values, never re-queued (a birth is sent on every
    /// connection anyway).
    status: bool,
    /// Where it sits in the disk buffer, for a message read from there.
    ticket: Option<Ticket>,
}

pub struct MqttSink {
    config: MqttSinkConfig,
    site: String,
    /// The configured stop, until `Stop/Town` says where the truck is.
    stop: String,
    bus: PointBus,
    counters: Arc<SinkCounters>,
    /// The disk buffer, opened by `new` (`disk_buffer_mb > 0`).
    spool: Option<Spool>,
    /// Alarm state changes and the retained alarm list (alarms/north.rs).
    alarms: crate::alarms::north::MqttAlarms,
}

/// The registry entry (streams/sink.rs).
pub const KIND: SinkKind = SinkKind {
    name: "Mqtt",
    buffer: "mqtt",
    enabled: |config| config.mqtt.enabled,
    validate: |config| config.mqtt.validate(),
    build: |config, ctx| Ok(Box::new(MqttSink::new(config.mqtt.clone(), ctx)?)),
};

#[async_trait::async_trait]
impl Sink for MqttSink {
    async fn run(self: Box<Self>, ctx: SinkContext) {
        (*self).run(ctx.shutdown).await
    }
}

impl MqttSink {
    /// Opens the disk buffer (`disk_buffer_mb > 0`) in the context's buffer folder.
    pub fn new(config: MqttSinkConfig, ctx: &SinkContext) -> Result<Self, SpoolError> {
        let spool = ctx.open_spool(config.disk_buffer_mb)?;
        if let Some(spool) = spool.as_ref().filter(|s| s.pending() > 0) {
            tracing::info!(messages = spool.pending(), bytes = spool.bytes(), dir = %ctx.buffer_dir.display(), "mqtt publisher: messages buffered before the last stop will be sent first");
        }
        Ok(MqttSink {
            site: ctx.site.clone(),
            stop: ctx.stop.clone(),
            bus: ctx.bus.clone(),
            counters: ctx.counters.clone(),
            spool,
            alarms: crate::alarms::north::MqttAlarms::new(
                ctx.alarms.clone(),
                &config.prefix,
                &ctx.site,
            ),
            config,
        })
    }

    fn status_topic(&self) -> Arc<str> {
        match self.config.payload {
            config::PayloadFormat::Fabrique => {
                format!("{}/{}/status", self.config.prefix, self.site).into()
            }
            config::PayloadFormat::UaJson => {
                format!("{}/json/status/{}", self.config.prefix, self.site).into()
            }
        }
    }

    /// The retained status when the gateway goes (clean stop, and the last will).
    fn offline_payload(&self) -> String {
        match self.config.payload {
            config::PayloadFormat::Fabrique => r#"{"state":"offline"}"#.to_owned(),
            config::PayloadFormat::UaJson => part14::status(&self.site, false),
        }
    }

    fn options(&self) -> Result<MqttOptions, String> {
        self.config
            .endpoint(self.config.client_id(&self.site))
            .options(&Session {
                // Nothing is subscribed, and what was in flight is re-queued by the sink itself.
                clean: true,
                inflight: Some(INFLIGHT),
                last_will: Some(LastWill::new(
                    &*self.status_topic(),
                    self.offline_payload(),
                    QoS::AtLeastOnce,
                    true,
                )),
                ..Session::default()
            })
    }

    fn birth(&self, client_id: &str) -> Message {
        if self.config.payload == config::PayloadFormat::UaJson {
            return self.status_message(part14::status(&self.site, true));
        }
        let payload = serde_json::json!({
            "state": "online",
            "site": self.site,
            "client_id": client_id,
            "version": env!("CARGO_PKG_VERSION"),
            "ts": rfc3339(Timestamp::now()),
        });
        self.status_message(payload.to_string())
    }

    fn status_message(&self, payload: String) -> Message {
        Message {
            topic: self.status_topic(),
            payload: payload.into_bytes(),
            qos: QoS::AtLeastOnce,
            retain: true,
            status: true,
            ticket: None,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let options = match self.options() {
            Ok(options) => options,
            Err(error) => {
                tracing::error!(%error, "mqtt publisher not started");
                self.counters.set_error(error);
                return;
            }
        };
        let client_id = options.client_id();
        tracing::info!(broker = %self.config.broker, %client_id, prefix = %self.config.prefix, "mqtt publisher started");
        let catalog = self.bus.catalog();
        let prefix = format!("{}/{}", self.config.prefix, self.site);
        let topics = topics(&prefix, &catalog);
        let min_interval = Duration::from_millis(self.config.min_interval_ms);
        let mut link = Link {
            queue: VecDeque::new(),
            handed: VecDeque::new(),
            inflight: VecDeque::new(),
            connected: false,
            outage: false,
            capacity: self.config.queue_messages,
            counters: self.counters.clone(),
            spool: self.spool.take(),
            spool_next: None,
            from_spool_out: 0,
            spool_dropped_seen: 0,
            scratch: Vec::new(),
        };
        let mut values = Values {
            bus: self.bus.clone(),
            prefix,
            topics,
            throttle: Throttle::new(catalog.len(), self.config.deadband, min_interval),
            qos: if self.config.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            retain: self.config.retain_values,
            released: Vec::new(),
            stop: self
                .config
                .stop_in_payload
                .then(|| (catalog.lookup("Stop/Town"), Arc::from(self.stop.as_str()))),
            part14: (self.config.payload == config::PayloadFormat::UaJson).then(|| {
                part14::Part14::new(
                    &self.config.prefix,
                    &self.site,
                    &self.config.ua_writer_group,
                    &catalog,
                    Duration::from_millis(self.config.ua_keep_alive_ms),
                )
            }),
        };
        values.follow_stop(&[]);

        let mut connection = Connection::new(options, CLIENT_QUEUE);
        let client = connection.client().clone();
        // Subscribe, then take the latest state: adapters started before the sink have
        // published already, and what they said must reach the broker too.
        let mut changes = self.bus.subscribe();
        let caught_up = BusEvent::Resync {
            missed: 0,
            state: self.bus.published_state(),
        };
        values.on_bus(&caught_up, &mut link);
        let tick_every = if min_interval.is_zero() {
            Duration::from_secs(1)
        } else {
            // Held values go out at most a tenth of the interval (and 100 ms) late.
            (min_interval / 10).clamp(Duration::from_millis(10), Duration::from_millis(100))
        };
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stats = Stats::default();
        let mut burst = Vec::new();

        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                received = changes.recv_many(&mut burst, MAX_BATCHES) => {
                    if !received {
                        break;
                    }
                    for event in burst.drain(..) {
                        values.on_bus(&event, &mut link);
                    }
                }
                result = connection.next() => match result {
                    Ok(event) => {
                        if link.on_event(event) {
                            tracing::info!(broker = %self.config.broker, "mqtt publisher connected");
                            link.handed_first(&client, self.birth(&client_id));
                            values.on_connected(&mut link);
                            link.push(alarm_message(self.alarms.list(), values.qos));
                        }
                    }
                    Err(error) => link.on_lost(&self.config.broker, &error),
                },
                messages = self.alarms.next() => {
                    for message in messages {
                        link.push(alarm_message(message, values.qos));
                    }
                }
                _ = tick.tick() => {
                    values.release(&mut link);
                    values.keep_alive(&mut link);
                    stats.maybe_log(&self.counters);
                }
            }
            link.pump(&client);
        }

        // Clean shutdown: flush what can be flushed within the grace period, say `offline`,
        // then disconnect.
        if link.connected {
            link.push(self.status_message(self.offline_payload()));
            let deadline = tokio::time::sleep(SHUTDOWN_GRACE);
            tokio::pin!(deadline);
            while link.connected && !link.is_empty() {
                link.pump(&client);
                tokio::select! {
                    _ = &mut deadline => break,
                    result = connection.next() => match result {
                        Ok(event) => { link.on_event(event); }
                        Err(error) => link.on_lost(&self.config.broker, &error),
                    },
                }
            }
            // Everything out, `offline` included: disconnect cleanly. Otherwise just drop the
            // connection: the broker then publishes the last will, also `offline`, whereas a
            // DISCONNECT would leave the retained `online` in place.
            if link.connected && link.is_empty() && client.try_disconnect().is_ok() {
                let _ = tokio::time::timeout(Duration::from_millis(500), async {
                    loop {
                        match connection.next().await {
                            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                })
                .await;
            }
        }
        link.close();
        self.counters.log("mqtt publisher stopped");
    }
}

/// The topic of every tag, indexed by `TagId`; none for a retired tag.
fn topics(prefix: &str, catalog: &fabrique_adapters::TagCatalog) -> Vec<Option<Arc<str>>> {
    labels(catalog)
        .iter()
        .map(|l| (!l.path.is_empty()).then(|| format!("{prefix}/{}", l.topic_suffix()).into()))
        .collect()
}

/// A message that is regenerated on every connection (metadata, key frames, keep-alives):
/// never kept in the disk buffer, never counted as a value.
fn control(topic: Arc<str>, payload: Vec<u8>, retain: bool) -> Message {
    Message {
        topic,
        payload,
        qos: QoS::AtLeastOnce,
        retain,
        status: true,
        ticket: None,
    }
}

/// An alarm state change goes like a value (queued, spooled during an outage, at the
/// configured QoS); the alarm list is retained and sent again on every connection.
fn alarm_message(message: crate::alarms::north::MqttAlarmMessage, qos: QoS) -> Message {
    if message.list {
        return control(message.topic.into(), message.payload, true);
    }
    Message {
        topic: message.topic.into(),
        payload: message.payload,
        qos,
        retain: false,
        status: false,
        ticket: None,
    }
}

/// Tag values: topics, filters and payloads.
struct Values {
    /// For the catalogue, when a reload added tags.
    bus: PointBus,
    prefix: String,
    topics: Vec<Option<Arc<str>>>,
    throttle: Throttle,
    qos: QoS,
    retain: bool,
    released: Vec<(fabrique_adapters::TagId, fabrique_adapters::Point)>,
    /// `payload = "ua-json"`: OPC UA Part 14 messages instead of one topic per tag.
    part14: Option<part14::Part14>,
    /// `stop_in_payload`: the `Stop/Town` tag and the current town, put in every message.
    stop: Option<(Option<fabrique_adapters::TagId>, Arc<str>)>,
}

impl Values {
    fn on_bus(&mut self, event: &BusEvent, link: &mut Link) {
        let updates = match event {
            BusEvent::Changes(batch) => batch.as_slice(),
            BusEvent::Resync { state, .. } => state.as_slice(),
        };
        if updates.iter().any(|u| u.tag.index() >= self.topics.len()) {
            // A reload added tags: learn their topics.
            let catalog = self.bus.catalog();
            self.topics = topics(&self.prefix, &catalog);
            self.throttle.grow(catalog.len());
            if let Some(part14) = &mut self.part14 {
                part14.remodel(&catalog);
                // The new fields: their metadata again (retained, replacing the old).
                for (topic, payload) in part14.metadata(&catalog) {
                    link.push(control(topic, payload, true));
                }
            }
        }
        self.follow_stop(updates);
        let now = std::time::Instant::now();
        for PointUpdate { tag, point } in updates {
            if self.throttle.is_pass_through() {
                self.publish(*tag, point, link);
            } else if let Some(point) = self.throttle.offer(*tag, point.clone(), now) {
                self.publish(*tag, &point, link);
            }
        }
        self.flush_part14(link);
    }

    /// `stop_in_payload`: the town of `Stop/Town` in `updates`, for the values that follow
    /// (own JSON: a `stop` key; Part 14: a `Stop` field of every dataset message).
    fn follow_stop(&mut self, updates: &[PointUpdate]) {
        let Some((stop_tag, town)) = &mut self.stop else {
            return;
        };
        // Follow the tour first: a batch that moves the truck labels its own values.
        for u in updates.iter().filter(|u| Some(u.tag) == *stop_tag) {
            if let Some(fabrique_adapters::Value::Text(t)) = &u.point.value {
                *town = t.clone();
            }
        }
        if let Some(part14) = &mut self.part14 {
            part14.set_stop(town.clone());
        }
    }

    /// A connection opened: Part 14 metadata (retained) and a key frame of every field.
    fn on_connected(&mut self, link: &mut Link) {
        let Some(part14) = &mut self.part14 else {
            return;
        };
        let catalog = self.bus.catalog();
        for (topic, payload) in part14.metadata(&catalog) {
            link.push(control(topic, payload, true));
        }
        let bus = &self.bus;
        if let Some((topic, payload)) = part14.key_frame(|tag| bus.latest(tag)) {
            link.push(control(topic, payload, false));
        }
    }

    fn keep_alive(&mut self, link: &mut Link) {
        if let (Some(part14), true) = (&mut self.part14, link.connected) {
            if let Some((topic, payload)) = part14.keep_alives() {
                link.push(control(topic, payload, false));
            }
        }
    }

    fn flush_part14(&mut self, link: &mut Link) {
        if let Some((topic, payload)) = self.part14.as_mut().and_then(|p| p.flush()) {
            link.push(Message {
                topic,
                payload,
                qos: self.qos,
                retain: false,
                status: false,
                ticket: None,
            });
        }
    }

    fn release(&mut self, link: &mut Link) {
        let mut released = std::mem::take(&mut self.released);
        self.throttle
            .release(std::time::Instant::now(), &mut released);
        for (tag, point) in released.drain(..) {
            self.publish(tag, &point, link);
        }
        self.released = released;
    }

    fn publish(
        &mut self,
        tag: fabrique_adapters::TagId,
        point: &fabrique_adapters::Point,
        link: &mut Link,
    ) {
        if let Some(part14) = &mut self.part14 {
            part14.add(tag, point);
            return;
        }
        let Some(Some(topic)) = self.topics.get(tag.index()) else {
            return;
        };
        link.push(Message {
            topic: topic.clone(),
            payload: encode(point, self.stop.as_ref().map(|(_, town)| &**town)),
            qos: self.qos,
            retain: self.retain,
            status: false,
            ticket: None,
        });
    }
}

/// The messages on their way to the broker, and the connection state.
///
/// Order: the on-disk buffer holds older messages than the memory queue. While the broker is
/// away, messages go straight to the buffer (and the memory queue is spilled into it when the
/// connection drops); when it is back, the buffer and the memory queue (live changes) are
/// handed to the client in turns, each in its own order. While connected, a full memory queue
/// drops its oldest message (counted): the disk is for outages, not for a slow broker.
struct Link {
    /// Waiting for the connection (or for room in the client).
    queue: VecDeque<Message>,
    /// Handed to rumqttc, in order, until it writes them (`Outgoing::Publish`).
    handed: VecDeque<Message>,
    /// Written at QoS 1, waiting for their PUBACK, by packet id, in sending order.
    inflight: VecDeque<(u16, Message)>,
    connected: bool,
    /// The last connection attempt failed or the connection was lost: new messages go to the
    /// disk buffer, not to memory. Before the first attempt it is `false`: a start with the
    /// broker there keeps everything in memory.
    outage: bool,
    capacity: usize,
    counters: Arc<SinkCounters>,
    /// The on-disk buffer (`disk_buffer_mb > 0`).
    spool: Option<Spool>,
    /// A message read from the spool that the client had no room for.
    spool_next: Option<Message>,
    /// Messages from the spool in `handed` and `inflight` (counted by the spool, not memory).
    from_spool_out: usize,
    /// The spool's `dropped` already added to the counters.
    spool_dropped_seen: u64,
    scratch: Vec<u8>,
}

enum FromSpool {
    Message(Message),
    /// A record that could not be decoded: counted and released; ask again.
    Skipped,
    /// Nothing (more) to hand out from disk.
    Empty,
}

impl Link {
    fn push(&mut self, message: Message) {
        // rumqttc would refuse a bigger packet by dropping the connection, again and again.
        if message.payload.len() + message.topic.len() + 16 > MAX_PACKET_BYTES {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.outage && !message.status && self.spool.is_some() {
            self.spill(message);
            return;
        }
        self.queue.push_back(message);
        // Connected but the broker is slower than the bus: the oldest message goes to the disk
        // buffer (as documented for `queue_messages`), which is handed out before the memory
        // queue, so the order holds. Only without a disk buffer, or once it is full, is a
        // message dropped (counted). A load test at 10,000 changes/s lost counter values here
        // while the broker fell behind for a few seconds: a burst is what the disk absorbs.
        if self.queue.len() > self.capacity {
            if let Some(oldest) = self.queue.pop_front() {
                // Counted as dropped without a disk buffer.
                self.spill(oldest);
            }
        }
    }

    /// Into the on-disk buffer (status messages are not kept: a birth goes out on every
    /// connection anyway).
    fn spill(&mut self, message: Message) {
        let Some(spool) = &mut self.spool else {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if message.status {
            return;
        }
        self.scratch.clear();
        encode_record(&message, &mut self.scratch);
        if let Err(error) = spool.append(&self.scratch, 1) {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            let error = error.to_string();
            let mut last = self.counters.last_error.lock();
            if *last != error {
                tracing::error!(%error, "mqtt publisher cannot write its disk buffer; message dropped");
                *last = error;
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
            && self.handed.is_empty()
            && self.inflight.is_empty()
            && self.spool.as_ref().is_none_or(|s| s.pending() == 0)
    }

    /// Hand messages to the client while connected and while it has room: the memory queue
    /// (live changes) and the disk buffer (the backlog of an outage, oldest first) take turns,
    /// so that a backlog of days does not hold back what happens now, nor live changes the
    /// backlog.
    fn pump(&mut self, client: &AsyncClient) {
        let mut live_turn = true;
        while self.connected && self.handed.len() < CLIENT_QUEUE {
            let live = if live_turn {
                self.queue.pop_front()
            } else {
                None
            };
            live_turn = !live_turn;
            let message = match live {
                Some(message) => message,
                None => match self.next_from_spool() {
                    FromSpool::Message(message) => message,
                    FromSpool::Skipped => continue,
                    FromSpool::Empty => match self.queue.pop_front() {
                        Some(message) => message,
                        None => break,
                    },
                },
            };
            if !self.hand(client, message) {
                break;
            }
        }
        let mut from_disk = 0;
        if let Some(spool) = &mut self.spool {
            if let Err(error) = spool.flush() {
                tracing::error!(%error, "mqtt publisher cannot write its disk buffer");
                self.counters.set_error(error.to_string());
            }
            from_disk = spool.pending();
            let dropped = spool.dropped();
            if dropped > self.spool_dropped_seen {
                self.counters
                    .dropped
                    .fetch_add(dropped - self.spool_dropped_seen, Ordering::Relaxed);
                self.spool_dropped_seen = dropped;
            }
        }
        let in_memory = self.queue.len()
            + self.handed.iter().filter(|m| m.ticket.is_none()).count()
            + self
                .inflight
                .iter()
                .filter(|(_, m)| m.ticket.is_none())
                .count();
        self.counters
            .buffered_memory
            .store(in_memory as u64, Ordering::Relaxed);
        self.counters
            .buffered_disk
            .store(from_disk, Ordering::Relaxed);
    }

    /// The next message of the disk buffer.
    fn next_from_spool(&mut self) -> FromSpool {
        if let Some(message) = self.spool_next.take() {
            return FromSpool::Message(message);
        }
        let Some(spool) = self.spool.as_mut() else {
            return FromSpool::Empty;
        };
        match spool.next(&mut self.scratch) {
            Ok(Some((_, ticket))) => match decode_record(&self.scratch, ticket) {
                Some(message) => FromSpool::Message(message),
                None => {
                    // Framed and checksummed, so only a bug writes such a record: count it.
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    let _ = spool.ack_through(ticket);
                    FromSpool::Skipped
                }
            },
            Ok(None) => FromSpool::Empty,
            Err(error) => {
                // The disk failed under us: give up on what it holds rather than spin.
                let lost = spool.pending();
                tracing::error!(%error, lost, "mqtt publisher cannot read its disk buffer; its content is dropped");
                self.counters.dropped.fetch_add(lost, Ordering::Relaxed);
                self.counters.set_error(error.to_string());
                self.spool = None;
                FromSpool::Empty
            }
        }
    }

    /// Give the birth message to the client ahead of everything else.
    fn handed_first(&mut self, client: &AsyncClient, message: Message) {
        if self.hand(client, message) {
            self.pump(client);
        }
    }

    fn hand(&mut self, client: &AsyncClient, message: Message) -> bool {
        let sent = client.try_publish(
            &*message.topic,
            message.qos,
            message.retain,
            message.payload.clone(),
        );
        match sent {
            Ok(()) => {
                if message.ticket.is_some() {
                    self.from_spool_out += 1;
                }
                self.handed.push_back(message);
                true
            }
            Err(_) => {
                // The client's channel is full: try again after the next event.
                if message.ticket.is_some() {
                    self.spool_next = Some(message);
                } else {
                    self.queue.push_front(message);
                }
                false
            }
        }
    }

    /// Returns true on a new connection.
    fn on_event(&mut self, event: Event) -> bool {
        match event {
            Event::Incoming(Incoming::ConnAck(_)) => {
                // rumqttc turns a refused CONNACK into an error: this one is a success.
                self.connected = true;
                self.counters.set_connected(true);
                self.outage = false;
                return true;
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(message) = self.handed.pop_front() {
                    if message.qos == QoS::AtMostOnce {
                        self.delivered(&message);
                    } else {
                        self.inflight.push_back((pkid, message));
                    }
                }
            }
            Event::Incoming(Incoming::PubAck(ack)) => {
                // Acks come back in order: the match is almost always the first one.
                if let Some(i) = self.inflight.iter().position(|(id, _)| *id == ack.pkid) {
                    if let Some((_, message)) = self.inflight.remove(i) {
                        self.delivered(&message);
                    }
                }
            }
            _ => {}
        }
        false
    }

    /// The broker has it: count it, and release it from the disk buffer. PUBACKs come in
    /// sending order, so acknowledging through this record releases only delivered ones.
    fn delivered(&mut self, message: &Message) {
        if !message.status {
            self.counters.sent.fetch_add(1, Ordering::Relaxed);
        }
        if message.ticket.is_some() {
            self.from_spool_out = self.from_spool_out.saturating_sub(1);
        }
        if let (Some(ticket), Some(spool)) = (message.ticket, self.spool.as_mut()) {
            if let Err(error) = spool.ack_through(ticket) {
                self.counters.set_error(error.to_string());
            }
        }
    }

    fn on_lost(&mut self, broker: &str, error: &ConnectionError) {
        let error = format!("broker {broker}: {error}");
        let mut last = self.counters.last_error.lock();
        if self.connected {
            tracing::warn!(%error, "mqtt publisher lost the broker; buffering and reconnecting");
        } else if *last != error {
            tracing::warn!(%error, "mqtt publisher cannot connect; buffering and retrying");
        }
        *last = error;
        drop(last);
        self.connected = false;
        self.counters.set_connected(false);
        self.outage = true;
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        self.requeue_unsent();
        if self.spool.is_some() {
            // The broker is away: memory is no place to wait in (a crash would lose it).
            while let Some(message) = self.queue.pop_front() {
                self.spill(message);
            }
        }
        while self.queue.len() > self.capacity {
            self.queue.pop_front();
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A new session starts empty: what the old one had not delivered goes back first, in the
    /// order it was sent. Messages from the disk buffer are read from it again.
    fn requeue_unsent(&mut self) {
        let unsent: Vec<Message> = self
            .inflight
            .drain(..)
            .map(|(_, m)| m)
            .chain(self.handed.drain(..))
            .filter(|m| !m.status && m.ticket.is_none())
            .collect();
        for message in unsent.into_iter().rev() {
            self.queue.push_front(message);
        }
        self.spool_next = None;
        self.from_spool_out = 0;
        if let Some(spool) = &mut self.spool {
            spool.rewind();
        }
    }

    /// Clean stop: everything not delivered goes to the disk buffer, which is synced.
    fn close(&mut self) {
        self.requeue_unsent();
        if self.spool.is_none() {
            return;
        }
        while let Some(message) = self.queue.pop_front() {
            self.spill(message);
        }
        if let Some(spool) = self.spool.take() {
            let kept = spool.pending();
            match spool.close() {
                Ok(()) if kept > 0 => {
                    tracing::info!(
                        kept,
                        "mqtt publisher: messages kept in the disk buffer for the next start"
                    )
                }
                Ok(()) => {}
                Err(error) => {
                    tracing::error!(%error, "mqtt publisher: cannot close its disk buffer")
                }
            }
        }
    }
}

/// A message in the disk buffer: `flags: u8 (1 = QoS 1, 2 = retain) | topic length: u16 LE |
/// topic | payload`: what the publisher sends, ready to go again.
fn encode_record(message: &Message, out: &mut Vec<u8>) {
    let mut flags = 0u8;
    if message.qos != QoS::AtMostOnce {
        flags |= 1;
    }
    if message.retain {
        flags |= 2;
    }
    out.push(flags);
    // Topics are at most 65535 bytes in MQTT: the length fits.
    out.extend_from_slice(&(message.topic.len() as u16).to_le_bytes());
    out.extend_from_slice(message.topic.as_bytes());
    out.extend_from_slice(&message.payload);
}

fn decode_record(record: &[u8], ticket: Ticket) -> Option<Message> {
    let (&flags, rest) = record.split_first()?;
    let len = u16::from_le_bytes([*rest.first()?, *rest.get(1)?]) as usize;
    let topic = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
    Some(Message {
        topic: topic.into(),
        payload: rest.get(2 + len..)?.to_vec(),
        qos: if flags & 1 != 0 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        },
        retain: flags & 2 != 0,
        status: false,
        ticket: Some(ticket),
    })
}

/// The once-a-minute log line, when something moved.
#[derive(Default)]
struct Stats {
    last: Option<Instant>,
    seen: [u64; 4],
}

impl Stats {
    fn maybe_log(&mut self, counters: &SinkCounters) {
        let now = Instant::now();
        let last = *self.last.get_or_insert(now);
        if now.duration_since(last) < STATS_EVERY {
            return;
        }
        self.last = Some(now);
        let seen = counters.snapshot();
        if seen != self.seen || seen[1] > 0 {
            counters.log("mqtt publisher");
        }
        self.seen = seen;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(n: u32) -> Message {
        Message {
            topic: "fabrique/site/Synthetic/Load/T000000".into(),
            payload: n.to_string().into_bytes(),
            qos: QoS::AtLeastOnce,
            retain: false,
            status: false,
            ticket: None,
        }
    }

    fn new_link(capacity: usize, spool: Option<Spool>) -> Link {
        Link {
            queue: VecDeque::new(),
            handed: VecDeque::new(),
            inflight: VecDeque::new(),
            connected: true,
            outage: false,
            capacity,
            counters: Arc::new(SinkCounters::default()),
            spool,
            spool_next: None,
            from_spool_out: 0,
            spool_dropped_seen: 0,
            scratch: Vec::new(),
        }
    }

    #[test]
    fn a_full_memory_queue_overflows_to_the_disk_buffer_in_order() {
        let dir =
            std::env::temp_dir().join(format!("fabrique-mqtt-overflow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut link = new_link(2, Some(Spool::open(&dir, 1 << 20).unwrap()));
        for n in 0..5 {
            link.push(value(n));
        }
        assert_eq!(link.counters.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(link.queue.len(), 2);
        // Handed out as `pump` does: the disk buffer first, then memory.
        let mut order = Vec::new();
        loop {
            let message = match link.next_from_spool() {
                FromSpool::Message(m) => m,
                FromSpool::Skipped => continue,
                FromSpool::Empty => match link.queue.pop_front() {
                    Some(m) => m,
                    None => break,
                },
            };
            order.push(String::from_utf8(message.payload).unwrap());
        }
        assert_eq!(order, ["0", "1", "2", "3", "4"]);
        drop(link);
        std::fs::remove_dir_all(&dir).unwrap();

        // Without a disk buffer the oldest are dropped, counted.
        let mut link = new_link(2, None);
        for n in 0..5 {
            link.push(value(n));
        }
        assert_eq!(link.counters.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(link.queue.len(), 2);
    }

    #[test]
    fn a_message_survives_the_disk_buffer_as_it_was() {
        let dir = std::env::temp_dir().join(format!("fabrique-mqtt-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut spool = Spool::open(&dir, 1 << 20).unwrap();
        let message = Message {
            topic: "fabrique/site/Printing/Printer3D/NozzleTemperature".into(),
            payload: br#"{"value":215.5,"quality":"Good","status":0,"ts":null}"#.to_vec(),
            qos: QoS::AtLeastOnce,
            retain: true,
            status: false,
            ticket: None,
        };
        let mut record = Vec::new();
        encode_record(&message, &mut record);
        spool.append(&record, 1).unwrap();
        let mut read = Vec::new();
        let (_, ticket) = spool.next(&mut read).unwrap().unwrap();
        let back = decode_record(&read, ticket).unwrap();
        assert_eq!(back.topic, message.topic);
        assert_eq!(back.payload, message.payload);
        assert_eq!(back.qos, QoS::AtLeastOnce);
        assert!(back.retain && !back.status && back.ticket.is_some());
        assert!(
            decode_record(&read[..3], ticket).is_none(),
            "truncated: refused"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
