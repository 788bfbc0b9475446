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
mod payload;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fabrique_adapters::backoff::Backoff;
use fabrique_adapters::bus::BusEvent;
use fabrique_adapters::mqtt::config::{parse_broker, MAX_PACKET_BYTES};
use fabrique_adapters::mqtt::poll_after;
use fabrique_adapters::{PointBus, PointUpdate, Timestamp};
use parking_lot::Mutex;
use rumqttc::{
    AsyncClient, ConnectionError, Event, Incoming, LastWill, MqttOptions, Outgoing, QoS,
    TlsConfiguration, Transport,
};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub use config::MqttSinkConfig;
use payload::{encode, rfc3339, Throttle};

use super::labels;

/// Messages handed to rumqttc and not yet written; also the capacity of its request channel.
const CLIENT_QUEUE: usize = 256;
/// QoS 1 messages written and waiting for their PUBACK.
const INFLIGHT: u16 = 256;
/// Bus batches taken in one go.
const MAX_BATCHES: usize = 64;
const STATS_EVERY: Duration = Duration::from_secs(60);
/// On shutdown: time left to flush the queue and publish `offline`.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What the sink did, for the log (and later for metrics).
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages the broker has (PUBACK at QoS 1, written at QoS 0).
    pub sent: AtomicU64,
    /// Messages waiting: queued, handed to the client or in flight.
    pub queued: AtomicU64,
    /// Messages lost: the queue was full, or a message was too large for MQTT.
    pub dropped: AtomicU64,
    /// Failed connection attempts and lost connections.
    pub retries: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

struct Message {
    topic: Arc<str>,
    payload: Vec<u8>,
    qos: QoS,
    retain: bool,
    /// Birth and offline messages: not values, never re-queued (a birth is sent on every
    /// connection anyway).
    status: bool,
}

pub struct MqttSink {
    config: MqttSinkConfig,
    site: String,
    bus: PointBus,
    counters: Arc<Counters>,
}

impl MqttSink {
    pub fn new(config: MqttSinkConfig, site: &str, bus: PointBus) -> Self {
        MqttSink {
            config,
            site: site.to_owned(),
            bus,
            counters: Arc::default(),
        }
    }

    fn status_topic(&self) -> Arc<str> {
        format!("{}/{}/status", self.config.prefix, self.site).into()
    }

    fn options(&self) -> Result<MqttOptions, String> {
        let (host, port) = parse_broker(&self.config.broker)?;
        let mut options = MqttOptions::new(self.config.client_id(&self.site), host, port);
        options
            .set_keep_alive(Duration::from_secs(self.config.keep_alive_s.max(1)))
            // Nothing is subscribed, and what was in flight is re-queued by the sink itself.
            .set_clean_session(true)
            .set_inflight(INFLIGHT)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
            .set_last_will(LastWill::new(
                &*self.status_topic(),
                r#"{"state":"offline"}"#,
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(user) = &self.config.username {
            let password = match &self.config.password_env {
                Some(var) => std::env::var(var).map_err(|_| {
                    format!("environment variable `{var}` (mqtt.password_env) is not set")
                })?,
                None => String::new(),
            };
            options.set_credentials(user.clone(), password);
        }
        if let Some(path) = &self.config.ca_file {
            let ca = std::fs::read(path)
                .map_err(|e| format!("cannot read mqtt.ca_file {}: {e}", path.display()))?;
            // The ring provider, installed once for the process; an error only means that a
            // provider is already installed, which is what is needed.
            let _ = rustls::crypto::ring::default_provider().install_default();
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
                ca,
                alpn: None,
                client_auth: None,
            }));
        }
        Ok(options)
    }

    fn birth(&self, client_id: &str) -> Message {
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
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let options = match self.options() {
            Ok(options) => options,
            Err(error) => {
                tracing::error!(%error, "mqtt publisher not started");
                *self.counters.last_error.lock() = Some(error);
                return;
            }
        };
        let client_id = options.client_id();
        tracing::info!(broker = %self.config.broker, %client_id, prefix = %self.config.prefix, "mqtt publisher started");
        let catalog = self.bus.catalog().clone();
        let prefix = format!("{}/{}", self.config.prefix, self.site);
        let topics: Vec<Arc<str>> = labels(&catalog)
            .iter()
            .map(|l| format!("{prefix}/{}", l.topic_suffix()).into())
            .collect();
        let min_interval = Duration::from_millis(self.config.min_interval_ms);
        let mut link = Link {
            queue: VecDeque::new(),
            handed: VecDeque::new(),
            inflight: VecDeque::new(),
            connected: false,
            capacity: self.config.queue_messages,
            counters: self.counters.clone(),
        };
        let mut values = Values {
            topics,
            throttle: Throttle::new(catalog.len(), self.config.deadband, min_interval),
            qos: if self.config.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            retain: self.config.retain_values,
            released: Vec::new(),
        };

        let (client, events) = AsyncClient::new(options, CLIENT_QUEUE);
        let mut polling = poll_after(events, Duration::ZERO);
        let mut backoff = Backoff::default();
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
                (events, result) = &mut polling => {
                    let delay = match result {
                        Ok(event) => {
                            if link.on_event(event) {
                                backoff.reset();
                                tracing::info!(broker = %self.config.broker, "mqtt publisher connected");
                                link.handed_first(&client, self.birth(&client_id));
                            }
                            Duration::ZERO
                        }
                        Err(error) => {
                            link.on_lost(&self.config.broker, &error);
                            backoff.next_delay()
                        }
                    };
                    polling = poll_after(events, delay);
                }
                _ = tick.tick() => {
                    values.release(&mut link);
                    stats.maybe_log(&self.counters);
                }
            }
            link.pump(&client);
        }

        // Clean shutdown: flush what can be flushed within the grace period, say `offline`,
        // then disconnect.
        if link.connected {
            link.push(self.status_message(r#"{"state":"offline"}"#.to_owned()));
            let deadline = tokio::time::sleep(SHUTDOWN_GRACE);
            tokio::pin!(deadline);
            while link.connected && !link.is_empty() {
                link.pump(&client);
                tokio::select! {
                    _ = &mut deadline => break,
                    (events, result) = &mut polling => {
                        match result {
                            Ok(event) => { link.on_event(event); }
                            Err(error) => link.on_lost(&self.config.broker, &error),
                        }
                        polling = poll_after(events, Duration::ZERO);
                    }
                }
            }
            // Everything out, `offline` included: disconnect cleanly. Otherwise just drop the
            // connection: the broker then publishes the last will, also `offline`, whereas a
            // DISCONNECT would leave the retained `online` in place.
            if link.connected && link.is_empty() && client.try_disconnect().is_ok() {
                let _ = tokio::time::timeout(Duration::from_millis(500), async {
                    loop {
                        let (events, result) = (&mut polling).await;
                        match result {
                            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                            Ok(_) => polling = poll_after(events, Duration::ZERO),
                        }
                    }
                })
                .await;
            }
        }
        stats.log(&self.counters, "mqtt publisher stopped");
    }
}

/// Tag values: topics, filters and payloads.
struct Values {
    topics: Vec<Arc<str>>,
    throttle: Throttle,
    qos: QoS,
    retain: bool,
    released: Vec<(fabrique_adapters::TagId, fabrique_adapters::Point)>,
}

impl Values {
    fn on_bus(&mut self, event: &BusEvent, link: &mut Link) {
        let updates = match event {
            BusEvent::Changes(batch) => batch.as_slice(),
            BusEvent::Resync { state, .. } => state.as_slice(),
        };
        let now = std::time::Instant::now();
        for PointUpdate { tag, point } in updates {
            if self.throttle.is_pass_through() {
                self.publish(*tag, point, link);
            } else if let Some(point) = self.throttle.offer(*tag, point.clone(), now) {
                self.publish(*tag, &point, link);
            }
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
        &self,
        tag: fabrique_adapters::TagId,
        point: &fabrique_adapters::Point,
        link: &mut Link,
    ) {
        let Some(topic) = self.topics.get(tag.index()) else {
            return;
        };
        link.push(Message {
            topic: topic.clone(),
            payload: encode(point),
            qos: self.qos,
            retain: self.retain,
            status: false,
        });
    }
}

/// The messages on their way to the broker, and the connection state.
struct Link {
    /// Waiting for the connection (or for room in the client).
    queue: VecDeque<Message>,
    /// Handed to rumqttc, in order, until it writes them (`Outgoing::Publish`).
    handed: VecDeque<Message>,
    /// Written at QoS 1, waiting for their PUBACK, by packet id, in sending order.
    inflight: VecDeque<(u16, Message)>,
    connected: bool,
    capacity: usize,
    counters: Arc<Counters>,
}

impl Link {
    fn push(&mut self, message: Message) {
        // rumqttc would refuse a bigger packet by dropping the connection, again and again.
        if message.payload.len() + message.topic.len() + 16 > MAX_PACKET_BYTES {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.queue.push_back(message);
        if self.queue.len() > self.capacity {
            self.queue.pop_front();
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.handed.is_empty() && self.inflight.is_empty()
    }

    /// Hand queued messages to the client while connected and while it has room.
    fn pump(&mut self, client: &AsyncClient) {
        while self.connected && self.handed.len() < CLIENT_QUEUE {
            let Some(message) = self.queue.pop_front() else {
                break;
            };
            if !self.hand(client, message) {
                break;
            }
        }
        let waiting = self.queue.len() + self.handed.len() + self.inflight.len();
        self.counters
            .queued
            .store(waiting as u64, Ordering::Relaxed);
    }

    /// Give the birth message to the client ahead of the queue.
    fn handed_first(&mut self, client: &AsyncClient, message: Message) {
        self.queue.push_front(message);
        self.pump(client);
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
                self.handed.push_back(message);
                true
            }
            Err(_) => {
                // The client's channel is full: try again after the next event.
                self.queue.push_front(message);
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
                return true;
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(message) = self.handed.pop_front() {
                    if message.qos == QoS::AtMostOnce {
                        self.count_sent(&message);
                    } else {
                        self.inflight.push_back((pkid, message));
                    }
                }
            }
            Event::Incoming(Incoming::PubAck(ack)) => {
                // Acks come back in order: the match is almost always the first one.
                if let Some(i) = self.inflight.iter().position(|(id, _)| *id == ack.pkid) {
                    if let Some((_, message)) = self.inflight.remove(i) {
                        self.count_sent(&message);
                    }
                }
            }
            _ => {}
        }
        false
    }

    fn count_sent(&self, message: &Message) {
        if !message.status {
            self.counters.sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_lost(&mut self, broker: &str, error: &ConnectionError) {
        let error = format!("broker {broker}: {error}");
        let mut last = self.counters.last_error.lock();
        if self.connected {
            tracing::warn!(%error, "mqtt publisher lost the broker; queueing and reconnecting");
        } else if last.as_deref() != Some(error.as_str()) {
            tracing::warn!(%error, "mqtt publisher cannot connect; queueing and retrying");
        }
        *last = Some(error);
        drop(last);
        self.connected = false;
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        // A new session starts empty: what the old one had not delivered goes back first, in
        // the order it was sent.
        let unsent: Vec<Message> = self
            .inflight
            .drain(..)
            .map(|(_, m)| m)
            .chain(self.handed.drain(..))
            .filter(|m| !m.status)
            .collect();
        for message in unsent.into_iter().rev() {
            self.queue.push_front(message);
        }
        while self.queue.len() > self.capacity {
            self.queue.pop_front();
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The once-a-minute log line.
#[derive(Default)]
struct Stats {
    last: Option<Instant>,
    sent: u64,
    dropped: u64,
    retries: u64,
}

impl Stats {
    fn maybe_log(&mut self, counters: &Counters) {
        let now = Instant::now();
        let last = *self.last.get_or_insert(now);
        if now.duration_since(last) < STATS_EVERY {
            return;
        }
        self.last = Some(now);
        let sent = counters.sent.load(Ordering::Relaxed);
        let dropped = counters.dropped.load(Ordering::Relaxed);
        let retries = counters.retries.load(Ordering::Relaxed);
        let queued = counters.queued.load(Ordering::Relaxed);
        let changed = sent != self.sent || dropped != self.dropped || retries != self.retries;
        if changed || queued > 0 {
            self.log(counters, "mqtt publisher");
        }
        (self.sent, self.dropped, self.retries) = (sent, dropped, retries);
    }

    fn log(&self, counters: &Counters, what: &str) {
        let sent = counters.sent.load(Ordering::Relaxed);
        tracing::info!(
            sent,
            sent_last_period = sent - self.sent,
            queued = counters.queued.load(Ordering::Relaxed),
            dropped = counters.dropped.load(Ordering::Relaxed),
            retries = counters.retries.load(Ordering::Relaxed),
            last_error = counters.last_error.lock().as_deref().unwrap_or(""),
            "{what}"
        );
    }
}
