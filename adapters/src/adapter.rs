//! The contract between the gateway and a device adapter.
//!
//! An adapter declares its tags once ([`Adapter::declare_tags`]), then runs in its own task
//! ([`Adapter::run`]): it publishes points through its [`Publisher`] and serves the
//! [`Command`]s (writes, method calls) that clients send back towards its device. The gateway
//! never talks to a device any other way, so a slow or dead device can only ever stall its
//! own task.
//!
//! A complete adapter, for a thermometer that a partner reads with their own code:
//!
//! ```
//! use std::time::Duration;
//! use async_trait::async_trait;
//! use fabrique_adapters::adapter::{DeviceHealth, DeviceStatus};
//! use fabrique_adapters::{
//!     Adapter, AdapterContext, CallError, CatalogError, Command, DataType, TagId, TagRegistrar,
//!     TagSpec, Timestamp, Value, WriteError,
//! };
//!
//! struct Thermometer {
//!     temperature: Option<TagId>,
//!     status: Option<DeviceStatus>,
//! }
//!
//! #[async_trait]
//! impl Adapter for Thermometer {
//!     fn name(&self) -> &str {
//!         "thermometer"
//!     }
//!
//!     fn declare_tags(&mut self, tags: &mut TagRegistrar<'_>) -> Result<(), CatalogError> {
//!         let device = "Stations/Partners/Thermometer";
//!         self.status = Some(DeviceStatus::declare(tags, device)?);
//!         let spec = TagSpec::new(format!("{device}/Temperature"), DataType::Float64)
//!             .unit("°C")
//!             .range(-40.0, 125.0);
//!         self.temperature = Some(tags.register(spec)?);
//!         Ok(())
//!     }
//!
//!     async fn run(self: Box<Self>, mut ctx: AdapterContext) {
//!         let (Some(temperature), Some(status)) = (self.temperature, self.status) else {
//!             return;
//!         };
//!         let mut health = DeviceHealth::new(status, vec![temperature]);
//!         health.connected(&mut ctx.publisher, Timestamp::now());
//!         let mut poll = tokio::time::interval(Duration::from_secs(1));
//!         loop {
//!             tokio::select! {
//!                 _ = ctx.shutdown.cancelled() => break,
//!                 // Read-only device: say so rather than leave the client waiting.
//!                 Some(command) = ctx.commands.recv() => command.refuse(),
//!                 _ = poll.tick() => {
//!                     let now = Timestamp::now();
//!                     // Here the real adapter talks to its device; on failure:
//!                     // health.lost(&mut ctx.publisher, "why", now) and retry with a Backoff.
//!                     ctx.publisher.set(temperature, Value::Float(21.5), now);
//!                     health.request_ok(&mut ctx.publisher, now);
//!                     ctx.publisher.flush();
//!                 }
//!             }
//!         }
//!     }
//! }
//! # // Run it for a moment against a real bus, as the gateway would.
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! #     use std::sync::Arc;
//! #     use fabrique_adapters::{AdapterId, PointBus, TagCatalogBuilder};
//! #     let mut adapter = Box::new(Thermometer { temperature: None, status: None });
//! #     let mut catalog = TagCatalogBuilder::new();
//! #     adapter.declare_tags(&mut TagRegistrar::new(&mut catalog, AdapterId(0))).unwrap();
//! #     let bus = PointBus::new(Arc::new(catalog.build()), 16);
//! #     let (_commands, receiver) = tokio::sync::mpsc::channel(1);
//! #     let shutdown = tokio_util::sync::CancellationToken::new();
//! #     let context = AdapterContext { publisher: bus.publisher(), commands: receiver, shutdown: shutdown.clone() };
//! #     let task = tokio::spawn(adapter.run(context));
//! #     let tag = bus.catalog().lookup("Stations/Partners/Thermometer/Temperature").unwrap();
//! #     while bus.latest(tag).value.is_none() { tokio::task::yield_now().await; }
//! #     assert_eq!(bus.latest(tag).value, Some(Value::Float(21.5)));
//! #     shutdown.cancel();
//! #     task.await.unwrap();
//! # }
//! ```
//!
//! Then give it a configuration block and one line in [`crate::registry`], and the gateway
//! shows its tags under `Stations/Partners/Thermometer` with a `Status` object.

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::bus::Publisher;
use crate::model::{FabriqueType, MethodSpec, ObjectSpec, ObjectType};
use crate::point::{Quality, Timestamp, Value};
use crate::tag::{AdapterId, CatalogError, DataType, EuRange, TagCatalogBuilder, TagId, TagSpec};

/// A device adapter: one instance per device (the simulator is one instance for the whole
/// simulated truck, whose machines share one clock).
#[async_trait]
pub trait Adapter: Send + 'static {
    /// Name used in logs and errors.
    fn name(&self) -> &str;

    /// Declare every tag this adapter will publish. Called once, before the bus exists; keep
    /// the returned [`TagId`]s to publish with.
    fn declare_tags(&mut self, tags: &mut TagRegistrar<'_>) -> Result<(), CatalogError>;

    /// Run until `ctx.shutdown` is cancelled. Errors are the adapter's to handle: report them
    /// through the device status tags and retry; the task must not return early on failure.
    async fn run(self: Box<Self>, ctx: AdapterContext);
}

/// What a running adapter is handed.
pub struct AdapterContext {
    pub publisher: Publisher,
    pub commands: mpsc::Receiver<Command>,
    pub shutdown: CancellationToken,
}

/// Registers tags on behalf of one adapter, so that writes to them are routed back to it.
pub struct TagRegistrar<'a> {
    builder: &'a mut TagCatalogBuilder,
    owner: AdapterId,
}

impl<'a> TagRegistrar<'a> {
    pub fn new(builder: &'a mut TagCatalogBuilder, owner: AdapterId) -> Self {
        TagRegistrar { builder, owner }
    }

    pub fn register(&mut self, spec: TagSpec) -> Result<TagId, CatalogError> {
        self.builder.register(self.owner, spec)
    }

    /// Declare what the object at `path` is (its OPC UA TypeDefinition). An object nobody
    /// declares is a `BaseObjectType`; objects under a [`ObjectType::Folder`] are organised by
    /// it rather than components of it.
    pub fn object(
        &mut self,
        path: impl Into<String>,
        object_type: impl Into<ObjectType>,
    ) -> Result<(), CatalogError> {
        let spec = ObjectSpec::new(path, object_type);
        self.builder.declare_object(self.owner, spec)
    }

    /// Declare a method this adapter serves: calls reach it as [`CallRequest`]s whose
    /// `method` is [`MethodSpec::path`], with the inputs in the declared order and types.
    pub fn method(&mut self, spec: MethodSpec) -> Result<(), CatalogError> {
        self.builder.declare_method(self.owner, spec)
    }

    /// Declare the objects every device sits in: the `Stations` folder, the station, the
    /// device (`Stations/<station>/<device>`) and its `Status`.
    pub fn device(&mut self, device_path: &str) -> Result<(), CatalogError> {
        if let Some((station, _)) = device_path.rsplit_once('/') {
            if let Some((stations, _)) = station.rsplit_once('/') {
                self.object(stations, ObjectType::Folder)?;
            }
            self.object(station, FabriqueType::Station)?;
        }
        self.object(device_path, FabriqueType::Device)?;
        self.object(format!("{device_path}/Status"), FabriqueType::DeviceStatus)
    }

    /// How many tags all adapters have registered so far; with [`Self::registered_since`],
    /// lets an adapter find the tags a helper registered for it.
    pub fn registered(&self) -> usize {
        self.builder.registered().len()
    }

    pub fn registered_since(&self, mark: usize) -> impl Iterator<Item = TagId> + '_ {
        let since = self.builder.registered().get(mark..).unwrap_or_default();
        since.iter().copied()
    }

    pub fn is_writable(&self, tag: TagId) -> bool {
        self.builder
            .spec(tag)
            .is_some_and(|s| s.access == crate::tag::Access::ReadWrite)
    }
}

/// A request travelling from a client back to the adapter that owns the target.
#[derive(Debug)]
pub enum Command {
    Write(WriteRequest),
    Call(CallRequest),
}

impl Command {
    /// The answer of an adapter whose tags are read-only and that has no methods: a write is
    /// `NotWritable`, a call `UnknownMethod`. Answering, rather than dropping the command,
    /// spares the client its timeout.
    pub fn refuse(self) {
        match self {
            Command::Write(w) => {
                let _ = w.reply.send(Err(WriteError::NotWritable));
            }
            Command::Call(c) => {
                let _ = c.reply.send(Err(CallError::UnknownMethod(c.method)));
            }
        }
    }
}

/// Write `value` to `tag`. The adapter answers once the device has accepted or refused it.
/// On success it publishes the accepted value (and flushes) *before* answering, so that a
/// client reading right after its write sees the new value.
#[derive(Debug)]
pub struct WriteRequest {
    pub tag: TagId,
    pub value: Value,
    pub reply: oneshot::Sender<Result<(), WriteError>>,
}

/// Call a method the adapter offers (for example `Line/SubmitOrder` on the line controller).
#[derive(Debug)]
pub struct CallRequest {
    pub method: String,
    pub args: Vec<Value>,
    pub reply: oneshot::Sender<Result<Vec<Value>, CallError>>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    #[error("tag is read-only")]
    NotWritable,
    #[error("value {value} is outside the range {low}..{high}")]
    OutOfRange { value: f64, low: f64, high: f64 },
    #[error("value does not fit the tag's data type {0}")]
    TypeMismatch(DataType),
    #[error("device is not connected")]
    NotConnected,
    #[error("device refused the write: {0}")]
    Refused(String),
    #[error("device did not answer in time")]
    Timeout,
}

/// What every adapter checks before it writes to its device: the value has the tag's type and
/// lies within its engineering range.
pub fn check_write(
    data_type: DataType,
    range: Option<EuRange>,
    value: &Value,
) -> Result<(), WriteError> {
    if !data_type.accepts(value) {
        return Err(WriteError::TypeMismatch(data_type));
    }
    match (range, value.as_f64()) {
        (Some(range), Some(x)) if !range.contains(x) => Err(WriteError::OutOfRange {
            value: x,
            low: range.low,
            high: range.high,
        }),
        _ => Ok(()),
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("no such method `{0}`")]
    UnknownMethod(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("device did not answer in time")]
    Timeout,
    /// Refused with the precise OPC UA status a client must see (the kiosk's scan: unknown,
    /// expired or already launched code), and the reason for people.
    #[error("{1}")]
    Status(opcua::types::StatusCode, String),
}

/// The status tags every device carries under `<device>/Status`, published through the bus
/// like any other tag so that every consumer sees them.
#[derive(Debug, Clone)]
pub struct DeviceStatus {
    pub connected: TagId,
    pub last_error: TagId,
    pub reconnects: TagId,
    pub last_read: TagId,
    pub requests_ok: TagId,
    pub requests_failed: TagId,
}

impl DeviceStatus {
    /// Declare the status tags of the device at `device_path`, and the device's objects
    /// ([`TagRegistrar::device`]): every device has a status, so this is where a device
    /// says what it is.
    pub fn declare(tags: &mut TagRegistrar<'_>, device_path: &str) -> Result<Self, CatalogError> {
        tags.device(device_path)?;
        let mut add = |name: &str, data_type: DataType, text: &str| {
            tags.register(
                TagSpec::new(format!("{device_path}/Status/{name}"), data_type).describe(text),
            )
        };
        Ok(DeviceStatus {
            connected: add(
                "Connected",
                DataType::Bool,
                "True while the gateway talks to the device",
            )?,
            last_error: add(
                "LastError",
                DataType::String,
                "Last communication error, empty when none",
            )?,
            reconnects: add(
                "Reconnects",
                DataType::UInt32,
                "Times the connection was re-established",
            )?,
            last_read: add(
                "LastReadTime",
                DataType::DateTime,
                "Time of the last successful read",
            )?,
            requests_ok: add(
                "RequestsOk",
                DataType::UInt64,
                "Requests the device answered",
            )?,
            requests_failed: add(
                "RequestsFailed",
                DataType::UInt64,
                "Requests that failed or timed out",
            )?,
        })
    }

    /// Stage a healthy status for a device that cannot fail (simulated): connected, no error,
    /// one successful read just now.
    pub fn healthy(&self, publisher: &mut Publisher, now: Timestamp) {
        let mut health = DeviceHealth::new(self.clone(), Vec::new());
        health.connected(publisher, now);
        health.request_ok(publisher, now);
    }
}

/// The connection state of one device and its counters, kept by its adapter and published as
/// the device's status tags. Adapters call it at every transition; it turns the device's own
/// tags Bad when the connection goes and counts reconnections when it comes back.
#[derive(Debug)]
pub struct DeviceHealth {
    status: DeviceStatus,
    /// The device's own tags, turned Bad when the device goes away.
    tags: Vec<TagId>,
    connected: bool,
    ever_connected: bool,
    reconnects: u64,
    ok: u64,
    failed: u64,
    last_error: String,
}

impl DeviceHealth {
    pub fn new(status: DeviceStatus, tags: Vec<TagId>) -> Self {
        DeviceHealth {
            status,
            tags,
            connected: false,
            ever_connected: false,
            reconnects: 0,
            ok: 0,
            failed: 0,
            last_error: String::new(),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The device's own tags, as given to [`DeviceHealth::new`].
    pub fn tags(&self) -> &[TagId] {
        &self.tags
    }

    /// A connection was (re-)established.
    pub fn connected(&mut self, out: &mut Publisher, now: Timestamp) {
        if !self.connected && self.ever_connected {
            self.reconnects += 1;
        }
        self.connected = true;
        self.ever_connected = true;
        self.last_error.clear();
        out.set(self.status.connected, Value::Bool(true), now);
        out.set(self.status.last_error, Value::text(""), now);
        out.set(self.status.reconnects, Value::UInt(self.reconnects), now);
        out.set(self.status.requests_ok, Value::UInt(self.ok), now);
        out.set(self.status.requests_failed, Value::UInt(self.failed), now);
    }

    /// A request was answered: counts it and stamps the last read time.
    pub fn request_ok(&mut self, out: &mut Publisher, now: Timestamp) {
        self.ok += 1;
        out.set(self.status.requests_ok, Value::UInt(self.ok), now);
        out.set(self.status.last_read, Value::Time(now), now);
    }

    /// A request failed without losing the connection (a refused write, an exception reply).
    pub fn request_failed(&mut self, out: &mut Publisher, error: &str, now: Timestamp) {
        self.failed += 1;
        out.set(self.status.requests_failed, Value::UInt(self.failed), now);
        self.set_error(out, error, now);
    }

    /// The connection is gone (or could not be made): the device's tags turn Bad with the
    /// time it happened, the status says why. Logged once per outage, not per retry.
    pub fn lost(&mut self, out: &mut Publisher, error: &str, now: Timestamp) {
        if self.connected || !self.ever_connected && self.last_error.is_empty() {
            tracing::warn!(error, "device connection lost");
        }
        self.connected = false;
        out.set(self.status.connected, Value::Bool(false), now);
        out.set_quality(&self.tags, Quality::BAD_COMMUNICATION_ERROR, now);
        self.set_error(out, error, now);
    }

    fn set_error(&mut self, out: &mut Publisher, error: &str, now: Timestamp) {
        if self.last_error != error {
            self.last_error = error.to_owned();
            out.set(self.status.last_error, Value::text(error), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::bus::PointBus;
    use crate::tag::{AdapterId, TagCatalogBuilder};

    fn device() -> (PointBus, DeviceStatus, TagId) {
        let mut builder = TagCatalogBuilder::new();
        let mut tags = TagRegistrar::new(&mut builder, AdapterId(0));
        let status = DeviceStatus::declare(&mut tags, "Stations/S/D").unwrap();
        let value = tags
            .register(TagSpec::new("Stations/S/D/Value", DataType::Float64))
            .unwrap();
        (PointBus::new(Arc::new(builder.build()), 16), status, value)
    }

    #[test]
    fn losing_the_device_turns_its_tags_bad_and_coming_back_counts_a_reconnect() {
        let (bus, status, value) = device();
        let mut out = bus.publisher();
        let mut health = DeviceHealth::new(status.clone(), vec![value]);
        let now = Timestamp::now();

        health.connected(&mut out, now);
        out.set(value, Value::Float(1.5), now);
        health.request_ok(&mut out, now);
        out.flush();
        assert_eq!(bus.latest(status.connected).value, Some(Value::Bool(true)));
        assert_eq!(bus.latest(status.reconnects).value, Some(Value::UInt(0)));
        assert_eq!(bus.latest(status.requests_ok).value, Some(Value::UInt(1)));

        health.lost(&mut out, "connection refused", now);
        out.flush();
        let point = bus.latest(value);
        assert_eq!(point.quality, Quality::BAD_COMMUNICATION_ERROR);
        assert_eq!(
            point.value,
            Some(Value::Float(1.5)),
            "the last value is kept"
        );
        assert_eq!(bus.latest(status.connected).value, Some(Value::Bool(false)));
        assert_eq!(
            bus.latest(status.last_error).value,
            Some(Value::text("connection refused"))
        );

        health.connected(&mut out, now);
        out.flush();
        assert_eq!(bus.latest(status.reconnects).value, Some(Value::UInt(1)));
        assert_eq!(bus.latest(status.last_error).value, Some(Value::text("")));
    }

    #[test]
    fn a_device_declares_its_station_its_type_and_its_status() {
        let mut builder = TagCatalogBuilder::new();
        DeviceStatus::declare(
            &mut TagRegistrar::new(&mut builder, AdapterId(0)),
            "Stations/S/D",
        )
        .unwrap();
        // A second device of the same station declares the station again: no conflict.
        DeviceStatus::declare(
            &mut TagRegistrar::new(&mut builder, AdapterId(1)),
            "Stations/S/E",
        )
        .unwrap();
        let catalog = builder.build();
        let of = |path: &str| catalog.object_type(path);
        assert_eq!(of("Stations"), Some(ObjectType::Folder));
        assert_eq!(of("Stations/S"), Some(FabriqueType::Station.into()));
        assert_eq!(of("Stations/S/D"), Some(FabriqueType::Device.into()));
        assert_eq!(
            of("Stations/S/E/Status"),
            Some(FabriqueType::DeviceStatus.into())
        );
    }

    #[test]
    fn failed_requests_are_counted_without_dropping_the_connection() {
        let (bus, status, value) = device();
        let mut out = bus.publisher();
        let mut health = DeviceHealth::new(status.clone(), vec![value]);
        health.connected(&mut out, Timestamp::now());
        health.request_failed(&mut out, "exception 2: illegal address", Timestamp::now());
        out.flush();
        assert!(health.is_connected());
        assert_eq!(
            bus.latest(status.requests_failed).value,
            Some(Value::UInt(1))
        );
        assert_eq!(bus.latest(status.connected).value, Some(Value::Bool(true)));
    }
}
