//! Modbus TCP devices (`protocol = "modbus"`): polled reads, coalesced; writes to holding
//! registers and coils.
//!
//! One adapter per device, one TCP connection per adapter. Polling and writes share that
//! connection in the adapter's task, so a write waits at most for the read in flight.

pub mod codec;
mod config;
mod plan;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant, MissedTickBehavior};
use tokio_modbus::client::{Client, Context, Reader, Writer};
use tokio_modbus::{ExceptionCode, Slave};

use crate::adapter::{
    check_write, Adapter, AdapterContext, CallError, Command, DeviceHealth, DeviceStatus,
    TagRegistrar, WriteError, WriteRequest,
};
use crate::backoff::Backoff;
use crate::bus::Publisher;
use crate::device::{device_path, ConfigIssue};
use crate::point::{Quality, Timestamp, Value};
use crate::tag::{CatalogError, TagId};

use codec::{check_raw_fits, Table};
use config::CompiledTag;
pub use config::{ModbusDevice, ModbusTag};
use plan::{plan_reads, ReadRequest};

/// The device answered, but not with usable data for this tag (short reply, bad string).
const BAD_DECODING_ERROR: Quality = Quality(0x8007_0000);
/// An exception reply saying the device has no such address or function: the configuration
/// points at something the device does not have.
const BAD_CONFIGURATION_ERROR: Quality = Quality(0x8089_0000);
/// Any other exception reply (device failure, busy, gateway path unavailable).
const BAD_DEVICE_FAILURE: Quality = Quality(0x808B_0000);

/// Why the connection must be dropped and re-made.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("cannot resolve `{address}`: {source}")]
    Resolve {
        address: String,
        source: std::io::Error,
    },
    #[error("`{0}` resolves to no address")]
    NoAddress(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no answer from {0} within the timeout")]
    Timeout(String),
    #[error("{0}")]
    Modbus(#[from] tokio_modbus::Error),
}

/// The outcome of one request on a live connection.
enum Reply<T> {
    Data(T),
    Exception(ExceptionCode),
}

pub struct ModbusAdapter {
    config: ModbusDevice,
    tags: Vec<CompiledTag>,
    requests: Vec<ReadRequest>,
    ids: Vec<TagId>,
    by_id: HashMap<TagId, usize>,
    status: Option<DeviceStatus>,
}

impl ModbusAdapter {
    /// `Err` only for a block that [`ModbusDevice::compile`] refuses.
    pub fn new(config: ModbusDevice) -> Result<Self, ConfigIssue> {
        let tags = config.compile()?;
        let spans: Vec<_> = tags.iter().map(CompiledTag::span).collect();
        let requests = plan_reads(&spans, config.max_gap);
        Ok(ModbusAdapter {
            config,
            tags,
            requests,
            ids: Vec::new(),
            by_id: HashMap::new(),
            status: None,
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    async fn connect(&self) -> Result<Context, LinkError> {
        let address = &self.config.address;
        let limit = self.timeout();
        let timed_out = || LinkError::Timeout(address.clone());
        let addrs: Vec<SocketAddr> = timeout(limit, tokio::net::lookup_host(address))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| LinkError::Resolve {
                address: address.clone(),
                source,
            })?
            .collect();
        let addr = *addrs
            .first()
            .ok_or_else(|| LinkError::NoAddress(address.clone()))?;
        let stream = timeout(limit, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| LinkError::Connect { addr, source })?;
        // Requests are small and strictly one at a time: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        Ok(tokio_modbus::client::tcp::attach_slave(
            stream,
            Slave(self.config.unit),
        ))
    }

    /// Run `request` with the device timeout. After a timeout the connection is dropped: a
    /// late reply would otherwise be taken for the answer to the next request.
    async fn exchange<T>(
        &self,
        request: impl std::future::Future<Output = tokio_modbus::Result<T>>,
    ) -> Result<Reply<T>, LinkError> {
        match timeout(self.timeout(), request).await {
            Err(_) => Err(LinkError::Timeout(self.config.address.clone())),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(Err(code))) => Ok(Reply::Exception(code)),
            Ok(Ok(Ok(data))) => Ok(Reply::Data(data)),
        }
    }

    /// Read every planned request once and stage the values. `Err` if the connection broke.
    async fn poll(
        &self,
        link: &mut Context,
        health: &mut DeviceHealth,
        out: &mut Publisher,
        logged: &mut HashSet<String>,
    ) -> Result<(), LinkError> {
        for request in &self.requests {
            let (start, count) = (request.start, request.count);
            let reply = match request.table {
                Table::Holding => self
                    .exchange(link.read_holding_registers(start, count))
                    .await?
                    .map(Words::Registers),
                Table::Input => self
                    .exchange(link.read_input_registers(start, count))
                    .await?
                    .map(Words::Registers),
                Table::Coil => self
                    .exchange(link.read_coils(start, count))
                    .await?
                    .map(Words::Bits),
                Table::Discrete => self
                    .exchange(link.read_discrete_inputs(start, count))
                    .await?
                    .map(Words::Bits),
            };
            let now = Timestamp::now();
            match reply {
                Reply::Data(data) => {
                    health.request_ok(out, now);
                    self.stage_values(request, &data, health, out, logged, now);
                }
                Reply::Exception(code) => {
                    let error = format!(
                        "Modbus exception {:#04x} ({code}) reading {} {}..{}",
                        u8::from(code),
                        request.table,
                        start,
                        u32::from(start) + u32::from(count) - 1
                    );
                    if logged.insert(error.clone()) {
                        tracing::warn!(device = %self.config.common.name, %error, "read refused");
                    }
                    health.request_failed(out, &error, now);
                    let quality = match code {
                        ExceptionCode::IllegalFunction | ExceptionCode::IllegalDataAddress => {
                            BAD_CONFIGURATION_ERROR
                        }
                        _ => BAD_DEVICE_FAILURE,
                    };
                    let ids: Vec<TagId> = request.tags.iter().map(|&t| self.ids[t]).collect();
                    out.set_quality(&ids, quality, now);
                }
            }
        }
        Ok(())
    }

    fn stage_values(
        &self,
        request: &ReadRequest,
        data: &Words,
        health: &mut DeviceHealth,
        out: &mut Publisher,
        logged: &mut HashSet<String>,
        now: Timestamp,
    ) {
        for &t in &request.tags {
            let tag = &self.tags[t];
            let offset = usize::from(tag.register.address - request.start);
            let decoded = match data {
                Words::Bits(bits) => {
                    bits.get(offset)
                        .map(|&b| Value::Bool(b))
                        .ok_or(codec::DecodeError::Short {
                            expected: offset + 1,
                            got: bits.len(),
                        })
                }
                Words::Registers(words) => tag.layout.decode(words.get(offset..).unwrap_or(&[])),
            };
            match decoded {
                Ok(raw) => {
                    let value = match tag.scaling {
                        Some(s) => s.apply(&raw).map_or(raw, Value::Float),
                        None => raw,
                    };
                    out.set(self.ids[t], value, now);
                }
                Err(e) => {
                    let error = format!("tag `{}`: {e}", self.config.tags[t].common.name);
                    if logged.insert(error.clone()) {
                        tracing::warn!(device = %self.config.common.name, %error, "bad data from device");
                    }
                    health.request_failed(out, &error, now);
                    out.set_quality(&[self.ids[t]], BAD_DECODING_ERROR, now);
                }
            }
        }
    }

    /// Check, encode and send one write; on success publish the value the device now holds.
    async fn write(
        &self,
        link: &mut Option<Context>,
        request: &WriteRequest,
        health: &mut DeviceHealth,
        out: &mut Publisher,
    ) -> Result<(), WriteError> {
        let Some(&t) = self.by_id.get(&request.tag) else {
            return Err(WriteError::NotWritable);
        };
        let tag = &self.tags[t];
        if !tag.writable {
            return Err(WriteError::NotWritable);
        }
        check_write(tag.exposed, tag.range, &request.value)?;
        let raw = match (tag.scaling, request.value.as_f64()) {
            (Some(s), Some(x)) => s.invert(x, tag.layout.raw)?,
            _ => {
                check_raw_fits(&request.value, tag.layout.raw)?;
                request.value.clone()
            }
        };
        let words = tag.layout.encode(&raw)?;
        let Some(context) = link.as_mut() else {
            return Err(WriteError::NotConnected);
        };
        let address = tag.register.address;
        let reply = match (tag.register.table, words.as_slice()) {
            (Table::Coil, _) => {
                self.exchange(context.write_single_coil(address, raw == Value::Bool(true)))
                    .await
            }
            (_, [word]) => {
                self.exchange(context.write_single_register(address, *word))
                    .await
            }
            (_, words) => {
                self.exchange(context.write_multiple_registers(address, words))
                    .await
            }
        };
        let now = Timestamp::now();
        match reply {
            Ok(Reply::Data(())) => {
                health.request_ok(out, now);
                // What the device now holds, after rounding to the raw type.
                let held = match tag.scaling {
                    Some(s) => s.apply(&raw).map_or(raw, Value::Float),
                    None => raw,
                };
                out.set(request.tag, held, now);
                out.flush();
                Ok(())
            }
            Ok(Reply::Exception(code)) => {
                let error = format!(
                    "Modbus exception {:#04x} ({code}) writing {} {address}",
                    u8::from(code),
                    tag.register.table
                );
                health.request_failed(out, &error, now);
                out.flush();
                Err(WriteError::Refused(error))
            }
            Err(e) => {
                let timed_out = matches!(e, LinkError::Timeout(_));
                *link = None;
                health.lost(out, &e.to_string(), now);
                out.flush();
                Err(if timed_out {
                    WriteError::Timeout
                } else {
                    WriteError::NotConnected
                })
            }
        }
    }
}

/// A read reply: registers or bits.
enum Words {
    Registers(Vec<u16>),
    Bits(Vec<bool>),
}

impl<T> Reply<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Reply<U> {
        match self {
            Reply::Data(d) => Reply::Data(f(d)),
            Reply::Exception(c) => Reply::Exception(c),
        }
    }
}

#[async_trait]
impl Adapter for ModbusAdapter {
    fn name(&self) -> &str {
        &self.config.common.name
    }

    fn declare_tags(&mut self, registrar: &mut TagRegistrar<'_>) -> Result<(), CatalogError> {
        let path = device_path(&self.config.common.station, &self.config.common.name);
        for (tag, compiled) in self.config.tags.iter().zip(&self.tags) {
            let id = registrar.register(tag.basics(compiled.exposed).spec(&path))?;
            self.by_id.insert(id, self.ids.len());
            self.ids.push(id);
        }
        self.status = Some(DeviceStatus::declare(registrar, &path)?);
        Ok(())
    }

    async fn run(self: Box<Self>, mut ctx: AdapterContext) {
        let Some(status) = self.status.clone() else {
            tracing::error!(device = %self.config.common.name, "tags were never declared");
            return;
        };
        let connected_tag = status.connected;
        let mut health = DeviceHealth::new(status, self.ids.clone());
        let mut backoff = Backoff::default();
        let out = &mut ctx.publisher;
        let poll = Duration::from_millis(self.config.poll_ms);
        // Tags start as "waiting for initial data"; the status says we are not connected yet.
        out.set(connected_tag, Value::Bool(false), Timestamp::now());
        out.flush();
        tracing::info!(
            device = %self.config.common.name,
            address = %self.config.address,
            tags = self.tags.len(),
            requests = self.requests.len(),
            "modbus device polling"
        );
        let mut link: Option<Context> = None;
        let mut logged = HashSet::new();
        let mut next_attempt = Instant::now();
        let mut ticker = tokio::time::interval(poll);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            if link.is_none() {
                // Wait for the next attempt, still answering writes.
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    Some(command) = ctx.commands.recv() => {
                        self.serve(command, &mut link, &mut health, out).await;
                        continue;
                    }
                    _ = tokio::time::sleep_until(next_attempt) => {}
                }
                let attempt = tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    attempt = self.connect() => attempt,
                };
                match attempt {
                    Ok(context) => {
                        link = Some(context);
                        logged.clear();
                        health.connected(out, Timestamp::now());
                        out.flush();
                        ticker.reset_immediately();
                    }
                    Err(e) => {
                        health.lost(out, &e.to_string(), Timestamp::now());
                        out.flush();
                        next_attempt = Instant::now() + backoff.next_delay();
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                Some(command) = ctx.commands.recv() => {
                    self.serve(command, &mut link, &mut health, out).await;
                }
                _ = ticker.tick() => {
                    let Some(context) = link.as_mut() else { continue };
                    let polled = tokio::select! {
                        _ = ctx.shutdown.cancelled() => break,
                        polled = self.poll(context, &mut health, out, &mut logged) => polled,
                    };
                    match polled {
                        // Only a device that answers resets the back-off: one that accepts
                        // connections and then drops them keeps backing off.
                        Ok(()) => backoff.reset(),
                        Err(e) => {
                            link = None;
                            health.lost(out, &e.to_string(), Timestamp::now());
                            next_attempt = Instant::now() + backoff.next_delay();
                        }
                    }
                    out.flush();
                }
            }
        }
        if let Some(mut context) = link {
            let _ = timeout(self.timeout(), context.disconnect()).await;
        }
    }
}

impl ModbusAdapter {
    async fn serve(
        &self,
        command: Command,
        link: &mut Option<Context>,
        health: &mut DeviceHealth,
        out: &mut Publisher,
    ) {
        match command {
            Command::Write(request) => {
                let result = self.write(link, &request, health, out).await;
                let _ = request.reply.send(result);
            }
            Command::Call(request) => {
                let _ = request
                    .reply
                    .send(Err(CallError::UnknownMethod(request.method.clone())));
            }
        }
    }
}
