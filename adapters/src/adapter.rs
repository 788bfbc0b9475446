//! The contract between the gateway and a device adapter.
//!
//! An adapter declares its tags once ([`Adapter::declare_tags`]), then runs in its own task
//! ([`Adapter::run`]): it publishes points through its [`Publisher`] and serves the
//! [`Command`]s (writes, method calls) that clients send back towards its device. The gateway
//! never talks to a device any other way, so a slow or dead device can only ever stall its
//! own task.

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::bus::Publisher;
use crate::point::{Quality, Timestamp, Value};
use crate::tag::{AdapterId, CatalogError, DataType, TagCatalogBuilder, TagId, TagSpec};

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

    /// How many tags all adapters have registered so far; with [`Self::registered_since`],
    /// lets an adapter find the tags a helper registered for it.
    pub fn registered(&self) -> usize {
        self.builder.len()
    }

    pub fn registered_since(&self, mark: usize) -> impl Iterator<Item = TagId> {
        (mark..self.builder.len()).map(|i| TagId(i as u32))
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
}

/// The status tags every device carries under `<device>/Status`, published through the bus
/// like any other tag so that every consumer sees them.
#[derive(Debug, Clone)]
pub struct DeviceStatus {
    pub connected: TagId,
    pub last_error: TagId,
    pub reconnects: TagId,
    pub last_read: TagId,
}

impl DeviceStatus {
    pub fn declare(tags: &mut TagRegistrar<'_>, device_path: &str) -> Result<Self, CatalogError> {
        let path = |name: &str| format!("{device_path}/Status/{name}");
        Ok(DeviceStatus {
            connected: tags.register(
                TagSpec::new(path("Connected"), DataType::Bool)
                    .describe("True while the gateway talks to the device"),
            )?,
            last_error: tags.register(
                TagSpec::new(path("LastError"), DataType::String)
                    .describe("Last communication error, empty when none"),
            )?,
            reconnects: tags.register(
                TagSpec::new(path("Reconnects"), DataType::UInt32)
                    .describe("Times the connection was re-established"),
            )?,
            last_read: tags.register(
                TagSpec::new(path("LastReadTime"), DataType::DateTime)
                    .describe("Time of the last successful read"),
            )?,
        })
    }

    /// Stage a healthy status: connected, no error, read just now.
    pub fn healthy(&self, publisher: &mut Publisher, reconnects: u32, now: Timestamp) {
        publisher.set(self.connected, Value::Bool(true), now);
        publisher.set(self.last_error, Value::text(""), now);
        publisher.set(self.reconnects, Value::UInt(reconnects.into()), now);
        publisher.set(self.last_read, Value::Time(now), now);
    }

    /// Stage a lost connection: the device's own tags turn Bad, the status says why.
    pub fn lost(
        &self,
        publisher: &mut Publisher,
        device_tags: &[TagId],
        error: &str,
        now: Timestamp,
    ) {
        publisher.set(self.connected, Value::Bool(false), now);
        publisher.set(self.last_error, Value::text(error), now);
        publisher.set_quality(device_tags, Quality::BAD_COMMUNICATION_ERROR, now);
    }
}
