//! MQTT devices: the gateway subscribes to the device's telemetry topics on a broker, maps each
//! payload to tags, and publishes client writes to the tag's command topic.
//!
//! One task per device drives the rumqttc event loop itself, so that the connection state,
//! the reconnection delays ([`Backoff`]) and the device status stay in one place. The event
//! loop is polled through a future that owns it, never dropped half-way: cancelling a poll
//! in the middle of a write could lose or corrupt an outgoing packet.
//!
//! Writes: MQTT gives no answer from the device itself, so a write is acknowledged once the
//! broker has taken the command (PUBACK at QoS 1, written to the socket at QoS 0), and the
//! tag keeps showing what the device reports on its telemetry topic, not the value written.

pub mod config;
pub mod connection;
mod payload;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use rumqttc::{
    AsyncClient, ConnectionError, Event, Incoming, MqttOptions, Outgoing, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;

use crate::adapter::{
    check_write, Adapter, AdapterContext, CallError, Command, DeviceHealth, DeviceStatus,
    TagRegistrar, WriteError, WriteRequest,
};
use crate::bus::Publisher;
use crate::device::device_path;
use crate::point::{Quality, Timestamp};
use crate::tag::{Access, CatalogError, TagId};

pub use config::{CommandFormat, MqttDevice, MqttTag};
pub use connection::{poll_after, Connection, Endpoint, Polled, Session};
pub use payload::{decode, encode_command, PayloadError};

/// How long a write waits for the broker to take its command. Below the command router's
/// default timeout (5 s), so that the client gets BadTimeout rather than a silent drop.
const WRITE_TIMEOUT: Duration = Duration::from_secs(4);
/// Requests queued between the adapter and the rumqttc event loop.
const CLIENT_QUEUE: usize = 64;
/// How often pending writes and stale tags are looked at.
const HOUSEKEEPING: Duration = Duration::from_millis(200);

/// The adapter of one `protocol = "mqtt"` device.
pub struct MqttAdapter {
    config: MqttDevice,
    path: String,
    status: Option<DeviceStatus>,
    tags: Vec<TagId>,
}

impl MqttAdapter {
    pub fn new(config: MqttDevice) -> Self {
        MqttAdapter {
            path: device_path(&config.common.station, &config.common.name),
            config,
            status: None,
            tags: Vec::new(),
        }
    }
}

#[async_trait]
impl Adapter for MqttAdapter {
    fn name(&self) -> &str {
        &self.config.common.name
    }

    fn declare_tags(&mut self, tags: &mut TagRegistrar<'_>) -> Result<(), CatalogError> {
        self.status = Some(DeviceStatus::declare(tags, &self.path)?);
        for tag in &self.config.tags {
            self.tags
                .push(tags.register(tag.basics().spec(&self.path))?);
        }
        Ok(())
    }

    async fn run(self: Box<Self>, ctx: AdapterContext) {
        let span = tracing::info_span!("mqtt", device = %self.path);
        let Some(status) = self.status else {
            tracing::error!(device = %self.path, "run before declare_tags; adapter not started");
            return;
        };
        Device::new(self.config, status, self.tags)
            .run(ctx)
            .instrument(span)
            .await;
    }
}

/// A write waiting for the broker.
struct PendingWrite {
    /// Taken when the write is answered early (timeout); the entry stays in its queue so that
    /// the next outgoing publish is still matched with the right write.
    reply: Option<oneshot::Sender<Result<(), WriteError>>>,
    deadline: Instant,
}

/// Telemetry routing: which tags read which topic.
struct Routes {
    /// Distinct topics, in subscription order (SUBACK codes come back in that order).
    topics: Vec<String>,
    by_topic: HashMap<String, Vec<usize>>,
}

impl Routes {
    fn new(tags: &[MqttTag]) -> Self {
        let mut topics = Vec::new();
        let mut by_topic: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, tag) in tags.iter().enumerate() {
            let entry = by_topic.entry(tag.topic.clone()).or_default();
            if entry.is_empty() {
                topics.push(tag.topic.clone());
            }
            entry.push(i);
        }
        Routes { topics, by_topic }
    }
}

/// The running state of one device.
struct Device {
    config: MqttDevice,
    tags: Vec<TagId>,
    routes: Routes,
    health: DeviceHealth,
    qos: QoS,
    /// Writes handed to the client, waiting for their publish to go out (in order).
    awaiting_send: VecDeque<PendingWrite>,
    /// QoS 1 writes sent, waiting for their PUBACK, by packet id.
    awaiting_ack: HashMap<u16, PendingWrite>,
    /// (tag, kind of error) already logged: a chatty bad device must not flood the log.
    logged: HashSet<(usize, &'static str)>,
    /// When each tag last got a value since the connection was (re-)established.
    refreshed: Vec<Option<Instant>>,
    stale: Vec<bool>,
}

impl Device {
    fn new(config: MqttDevice, status: DeviceStatus, tags: Vec<TagId>) -> Self {
        let n = tags.len();
        Device {
            routes: Routes::new(&config.tags),
            health: DeviceHealth::new(status, tags.clone()),
            qos: if config.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            config,
            tags,
            awaiting_send: VecDeque::new(),
            awaiting_ack: HashMap::new(),
            logged: HashSet::new(),
            refreshed: vec![None; n],
            stale: vec![false; n],
        }
    }

    fn options(&self) -> Result<MqttOptions, String> {
        let section = format!("devices[{}]", self.config.common.name);
        Endpoint {
            section: &section,
            broker: &self.config.broker,
            client_id: self.config.client_id(),
            keep_alive_s: self.config.keep_alive_s,
            username: self.config.username.as_deref(),
            password_env: self.config.password_env.as_deref(),
            ca_file: self.config.ca_file.as_deref(),
        }
        // A new session each time: the subscriptions are made again on every CONNACK.
        .options(&Session::default())
    }

    async fn run(mut self, mut ctx: AdapterContext) {
        let options = match self.options() {
            Ok(options) => options,
            Err(error) => {
                tracing::error!(%error, "cannot connect to the broker");
                self.health
                    .lost(&mut ctx.publisher, &error, Timestamp::now());
                ctx.publisher.flush();
                self.idle(ctx).await;
                return;
            }
        };
        tracing::info!(broker = %self.config.broker, client_id = %options.client_id(), "mqtt device started");
        let mut connection = Connection::new(options, CLIENT_QUEUE);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            let out = &mut ctx.publisher;
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                Some(command) = ctx.commands.recv() => match command {
                    Command::Write(request) => self.write(connection.client(), request, out),
                    Command::Call(request) => {
                        let _ = request
                            .reply
                            .send(Err(CallError::UnknownMethod(request.method.clone())));
                    }
                },
                result = connection.next() => match result {
                    Ok(event) => self.on_event(event, connection.client(), out),
                    Err(error) => self.on_lost(&error, out),
                },
                _ = housekeeping.tick() => {
                    self.expire_writes(out);
                    self.mark_stale(out);
                }
            }
            ctx.publisher.flush();
        }
        // Best effort: the event loop is no longer polled, the broker sees the socket close.
        let _ = connection.client().try_disconnect();
    }

    /// No connection can be made (a missing password): answer commands until shutdown.
    async fn idle(&self, mut ctx: AdapterContext) {
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                Some(command) = ctx.commands.recv() => match command {
                    Command::Write(request) => {
                        let _ = request.reply.send(Err(WriteError::NotConnected));
                    }
                    Command::Call(request) => {
                        let _ = request
                            .reply
                            .send(Err(CallError::UnknownMethod(request.method.clone())));
                    }
                },
            }
        }
    }

    fn on_event(&mut self, event: Event, client: &AsyncClient, out: &mut Publisher) {
        match event {
            Event::Incoming(Incoming::ConnAck(_)) => {
                // rumqttc turns a refused CONNACK into an error: this one is a success.
                self.health.connected(out, Timestamp::now());
                tracing::info!(
                    reconnects = self.health.reconnects(),
                    "connected to the broker; subscribing to {} topic(s)",
                    self.routes.topics.len()
                );
                let filters = self
                    .routes
                    .topics
                    .iter()
                    .map(|topic| SubscribeFilter::new(topic.clone(), self.qos));
                if let Err(e) = client.try_subscribe_many(filters) {
                    tracing::error!(error = %e, "could not queue the subscriptions");
                }
            }
            Event::Incoming(Incoming::Publish(message)) => {
                self.on_telemetry(&message.topic, &message.payload, out);
            }
            Event::Incoming(Incoming::SubAck(ack)) => {
                let now = Timestamp::now();
                for (topic, code) in self.routes.topics.iter().zip(&ack.return_codes) {
                    if *code == SubscribeReasonCode::Failure {
                        let error = format!("the broker refused the subscription to `{topic}`");
                        tracing::warn!(%topic, "{error}");
                        self.health.request_failed(out, &error, now);
                    }
                }
            }
            Event::Incoming(Incoming::PubAck(ack)) => {
                if let Some(write) = self.awaiting_ack.remove(&ack.pkid) {
                    self.answer(write.reply, Ok(()), out);
                }
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                // Only writes publish, and the client sends them in the order they were queued.
                if let Some(write) = self.awaiting_send.pop_front() {
                    if pkid == 0 {
                        self.answer(write.reply, Ok(()), out);
                    } else if let Some(older) = self.awaiting_ack.insert(pkid, write) {
                        self.answer(older.reply, Err(WriteError::Timeout), out);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_lost(&mut self, error: &ConnectionError, out: &mut Publisher) {
        let now = Timestamp::now();
        let error = format!("broker {}: {error}", self.config.broker);
        self.health.lost(out, &error, now);
        // A new session drops whatever the old one had in flight: those writes are lost.
        let writes: Vec<PendingWrite> = self
            .awaiting_send
            .drain(..)
            .chain(self.awaiting_ack.drain().map(|(_, w)| w))
            .collect();
        for write in writes {
            self.answer(write.reply, Err(WriteError::NotConnected), out);
        }
        // Bad until fresh telemetry: never let the staleness check turn them Uncertain.
        self.refreshed.fill(None);
        self.stale.fill(false);
    }

    fn on_telemetry(&mut self, topic: &str, payload: &[u8], out: &mut Publisher) {
        let Some(indexes) = self.routes.by_topic.get(topic) else {
            return;
        };
        let now = Timestamp::now();
        for &i in indexes {
            let tag = &self.config.tags[i];
            match decode(payload, tag.json_pointer.as_deref(), tag.common.data_type) {
                Ok(value) => {
                    out.set(self.tags[i], value, now);
                    self.refreshed[i] = Some(Instant::now());
                    self.stale[i] = false;
                    self.health.request_ok(out, now);
                }
                Err(error) => {
                    if self.logged.insert((i, error.kind())) {
                        tracing::warn!(
                            tag = %tag.common.name,
                            %topic,
                            %error,
                            "telemetry rejected, the tag keeps its last value \
                             (logged once per tag and kind of error)"
                        );
                    }
                    let message = format!("tag `{}` on `{topic}`: {error}", tag.common.name);
                    self.health.request_failed(out, &message, now);
                }
            }
        }
    }

    fn write(&mut self, client: &AsyncClient, request: WriteRequest, out: &mut Publisher) {
        match self.publish_command(client, &request) {
            Ok(()) => self.awaiting_send.push_back(PendingWrite {
                reply: Some(request.reply),
                deadline: Instant::now() + WRITE_TIMEOUT,
            }),
            Err(error) => {
                if matches!(error, WriteError::Refused(_)) {
                    self.health
                        .request_failed(out, &error.to_string(), Timestamp::now());
                }
                let _ = request.reply.send(Err(error));
            }
        }
    }

    /// Checks the write and hands the command to the client.
    fn publish_command(
        &self,
        client: &AsyncClient,
        request: &WriteRequest,
    ) -> Result<(), WriteError> {
        let index = self
            .tags
            .iter()
            .position(|&t| t == request.tag)
            .ok_or(WriteError::NotWritable)?;
        let tag = &self.config.tags[index];
        let (Access::ReadWrite, Some(topic)) = (tag.common.access, &tag.command_topic) else {
            return Err(WriteError::NotWritable);
        };
        check_write(tag.common.data_type, tag.common.range, &request.value)?;
        let payload = encode_command(&request.value, tag.command_format.unwrap_or_default())
            .ok_or(WriteError::TypeMismatch(tag.common.data_type))?;
        if !self.health.is_connected() {
            return Err(WriteError::NotConnected);
        }
        client
            .try_publish(topic.clone(), self.qos, false, payload)
            .map_err(|e| WriteError::Refused(format!("MQTT client: {e}")))
    }

    fn answer(
        &mut self,
        reply: Option<oneshot::Sender<Result<(), WriteError>>>,
        result: Result<(), WriteError>,
        out: &mut Publisher,
    ) {
        let Some(reply) = reply else {
            return;
        };
        let now = Timestamp::now();
        match &result {
            Ok(()) => self.health.request_ok(out, now),
            Err(WriteError::NotConnected) => {}
            Err(error) => self.health.request_failed(out, &error.to_string(), now),
        }
        let _ = reply.send(result);
    }

    /// Writes the broker did not take in time are answered Timeout; their queue entries stay
    /// until the event loop reports them, so that later writes are still matched right.
    fn expire_writes(&mut self, out: &mut Publisher) {
        let now = Instant::now();
        let mut expired = Vec::new();
        for write in self.awaiting_send.iter_mut() {
            if write.deadline <= now {
                if let Some(reply) = write.reply.take() {
                    expired.push(reply);
                }
            }
        }
        self.awaiting_ack.retain(|_, write| {
            if write.deadline > now {
                return true;
            }
            if let Some(reply) = write.reply.take() {
                expired.push(reply);
            }
            false
        });
        for reply in expired {
            self.answer(Some(reply), Err(WriteError::Timeout), out);
        }
    }

    fn mark_stale(&mut self, out: &mut Publisher) {
        let Some(ms) = self.config.stale_after_ms else {
            return;
        };
        if !self.health.is_connected() {
            return;
        }
        let limit = Duration::from_millis(ms);
        let now = Timestamp::now();
        for i in 0..self.tags.len() {
            if self.stale[i] {
                continue;
            }
            if self.refreshed[i].is_some_and(|t| t.elapsed() >= limit) {
                self.stale[i] = true;
                out.set_quality(&[self.tags[i]], Quality::UNCERTAIN_LAST_USABLE_VALUE, now);
            }
        }
    }
}
