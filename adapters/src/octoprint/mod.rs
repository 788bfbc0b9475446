//! OctoPrint: a 3D printer driven by an OctoPrint server, polled over its REST API.
//!
//! Every `poll_ms` the adapter reads `GET /api/printer` (state, temperatures) and
//! `GET /api/job` (file, progress) with the `X-Api-Key` header, and publishes the fixed tags
//! of [`tags::Field`]. Two kinds of outage are told apart:
//! - OctoPrint unreachable, or refusing the key: the device is lost, every tag (`State` too)
//!   turns Bad, and the adapter retries with backoff;
//! - OctoPrint up but the printer not connected to it (HTTP 409): the device is lost as well,
//!   but `State` stays Good and reads `Offline`, which is what the operator needs to know;
//!   polling goes on at `poll_ms` so the printer shows up as soon as it is plugged back.

pub mod client;
pub mod config;
pub mod tags;

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::json;
use tracing::Instrument;

use crate::adapter::{
    Adapter, AdapterContext, CallError, Command, DeviceHealth, DeviceStatus, TagRegistrar,
    WriteError, WriteRequest,
};
use crate::backoff::Backoff;
use crate::bus::Publisher;
use crate::device::device_path;
use crate::model::MethodSpec;
use crate::point::{Quality, Timestamp, Value};
use crate::tag::{CatalogError, DataType, TagId, TagSpec};

use client::{ApiError, OctoPrintClient};
use config::{ApiKey, ApiKeySource};
use tags::{Field, Reading};

pub use config::OctoPrintDevice;

/// OPC UA `BadDecodingError`: what a tag shows when OctoPrint sent something for it that
/// makes no sense.
const BAD_DECODING: Quality = Quality(0x8007_0000);

/// A heater whose target clients may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heater {
    Nozzle,
    Bed,
}

impl Heater {
    fn endpoint(self) -> &'static str {
        match self {
            Heater::Nozzle => "api/printer/tool",
            Heater::Bed => "api/printer/bed",
        }
    }

    fn command(self, target: f64) -> serde_json::Value {
        match self {
            Heater::Nozzle => json!({"command": "target", "targets": {"tool0": target}}),
            Heater::Bed => json!({"command": "target", "target": target}),
        }
    }

    fn target_field(self) -> Field {
        match self {
            Heater::Nozzle => Field::NozzleTarget,
            Heater::Bed => Field::BedTarget,
        }
    }
}

struct Setpoint {
    tag: TagId,
    heater: Heater,
    max: f64,
}

struct Declared {
    status: DeviceStatus,
    fields: HashMap<Field, TagId>,
    setpoints: Vec<Setpoint>,
}

/// One OctoPrint server and its printer.
pub struct OctoPrintAdapter {
    config: OctoPrintDevice,
    name: String,
    declared: Option<Declared>,
}

impl OctoPrintAdapter {
    pub fn new(config: OctoPrintDevice) -> Self {
        let name = format!("octoprint {}/{}", config.common.station, config.common.name);
        OctoPrintAdapter {
            config,
            name,
            declared: None,
        }
    }
}

#[async_trait]
impl Adapter for OctoPrintAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn declare_tags(&mut self, tags: &mut TagRegistrar<'_>) -> Result<(), CatalogError> {
        let path = device_path(&self.config.common.station, &self.config.common.name);
        let status = DeviceStatus::declare(tags, &path)?;
        let mut fields = HashMap::new();
        for field in Field::ALL {
            fields.insert(field, tags.register(field.spec(&path))?);
        }
        let mut setpoints = Vec::new();
        if self.config.setpoints {
            for (heater, name, max, text) in [
                (
                    Heater::Nozzle,
                    "NozzleTargetSetpoint",
                    self.config.max_nozzle_target,
                    "Nozzle target to set (0 turns the heater off); reads back the current target",
                ),
                (
                    Heater::Bed,
                    "BedTargetSetpoint",
                    self.config.max_bed_target,
                    "Bed target to set (0 turns the heater off); reads back the current target",
                ),
            ] {
                let spec = TagSpec::new(format!("{path}/{name}"), DataType::Float64)
                    .writable()
                    .unit("°C")
                    .range(0.0, max)
                    .describe(text);
                setpoints.push(Setpoint {
                    tag: tags.register(spec)?,
                    heater,
                    max,
                });
            }
        }
        if self.config.job_control {
            for job in JobCommand::ALL {
                tags.method(MethodSpec::new(
                    path.as_str(),
                    job.name(),
                    job.description(),
                ))?;
            }
        }
        self.declared = Some(Declared {
            status,
            fields,
            setpoints,
        });
        Ok(())
    }

    async fn run(mut self: Box<Self>, ctx: AdapterContext) {
        let device = device_path(&self.config.common.station, &self.config.common.name);
        let span = tracing::info_span!("octoprint", device = %device);
        self.serve(ctx).instrument(span).await;
    }
}

impl OctoPrintAdapter {
    async fn serve(&mut self, ctx: AdapterContext) {
        let Some(declared) = self.declared.take() else {
            tracing::error!("run without declared tags; the device stays offline");
            return;
        };
        // Both were checked by the configuration layer; should they fail anyway, the device
        // shows why instead of the gateway going down.
        let setup = match (self.config.base_url(), self.config.api_key_source()) {
            (Ok(base), Some(key)) => {
                OctoPrintClient::new(base, self.config.timeout()).map(|c| (c, key))
            }
            (Err(e), _) => Err(format!("url: {e}")),
            (_, None) => Err("no api_key_env or api_key_file".into()),
        };
        let mut device = Device::new(&self.config, declared);
        match setup {
            Ok((client, key)) => device.run(client, key, ctx).await,
            Err(reason) => {
                let mut out = ctx.publisher;
                device.lose(&mut out, &reason, Timestamp::now());
                out.flush();
                ctx.shutdown.cancelled().await;
            }
        }
    }
}

/// The running side of one device: its tags, health and what was already logged.
struct Device {
    status: DeviceStatus,
    poll: std::time::Duration,
    fields: HashMap<Field, TagId>,
    setpoints: Vec<Setpoint>,
    health: DeviceHealth,
    backoff: Backoff,
    /// Tags whose last value was rejected, with why: logged once per tag and reason.
    rejected: HashMap<Field, String>,
    /// The last error that needs a person (a refused or missing key), logged once.
    reported: Option<String>,
}

impl Device {
    fn new(config: &OctoPrintDevice, declared: Declared) -> Self {
        // `State` is handled apart: it stays Good while OctoPrint says the printer is offline.
        let own: Vec<TagId> = declared
            .fields
            .iter()
            .filter(|(f, _)| **f != Field::State)
            .map(|(_, t)| *t)
            .chain(declared.setpoints.iter().map(|s| s.tag))
            .collect();
        Device {
            status: declared.status.clone(),
            poll: config.poll_interval(),
            fields: declared.fields,
            setpoints: declared.setpoints,
            health: DeviceHealth::new(declared.status, own),
            backoff: Backoff::default(),
            rejected: HashMap::new(),
            reported: None,
        }
    }

    fn tag(&self, field: Field) -> Option<TagId> {
        self.fields.get(&field).copied()
    }

    async fn run(&mut self, client: OctoPrintClient, key: ApiKeySource, mut ctx: AdapterContext) {
        tracing::info!(url = %client.base(), poll_ms = self.poll.as_millis() as u64, "polling OctoPrint");
        // The counters read 0, not "waiting for data", even if OctoPrint is never reached.
        let now = Timestamp::now();
        for counter in [
            self.status.reconnects,
            self.status.requests_ok,
            self.status.requests_failed,
        ] {
            ctx.publisher.set(counter, Value::UInt(0), now);
        }
        loop {
            let delay = self.poll_once(&client, &key, &mut ctx.publisher).await;
            ctx.publisher.flush();
            let wake = tokio::time::sleep(delay);
            tokio::pin!(wake);
            loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    Some(command) = ctx.commands.recv() => match command {
                        Command::Write(request) => {
                            self.write(&client, &key, request, &mut ctx.publisher).await;
                        }
                        Command::Call(request) => {
                            let result = self.job(&client, &key, &request.method, &mut ctx.publisher).await;
                            let _ = request.reply.send(result);
                        }
                    },
                    _ = &mut wake => break,
                }
            }
        }
    }

    /// One poll of both endpoints; returns the time until the next one.
    async fn poll_once(
        &mut self,
        client: &OctoPrintClient,
        key: &ApiKeySource,
        out: &mut Publisher,
    ) -> std::time::Duration {
        let api_key = match key.read() {
            Ok(k) => k,
            Err(e) => {
                let reason = format!("API key: {e}");
                self.report(&reason);
                self.lose(out, &reason, Timestamp::now());
                return self.backoff.next_delay();
            }
        };
        match self.read_all(client, &api_key, out).await {
            Ok(readings) => {
                let now = Timestamp::now();
                self.backoff.reset();
                self.reported = None;
                if !self.health.is_connected() {
                    self.health.connected(out, now);
                    tracing::info!(
                        reconnects = self.health.reconnects(),
                        "reading the printer through OctoPrint"
                    );
                }
                self.apply(readings, out, now);
                self.poll
            }
            Err(ApiError::PrinterOffline(message)) => {
                let now = Timestamp::now();
                self.backoff.reset();
                let reason = ApiError::PrinterOffline(message).to_string();
                self.health.lost(out, &reason, now);
                if let Some(state) = self.tag(Field::State) {
                    out.set(state, Value::text("Offline"), now);
                }
                self.poll
            }
            Err(e) => {
                let reason = match &e {
                    ApiError::Auth { .. } => format!("{e}; check {}", key.describe()),
                    _ => e.to_string(),
                };
                if matches!(e, ApiError::Auth { .. }) {
                    self.report(&reason);
                }
                self.lose(out, &reason, Timestamp::now());
                self.backoff.next_delay()
            }
        }
    }

    /// Both reads, counted; the readings only if both answered.
    async fn read_all(
        &mut self,
        client: &OctoPrintClient,
        key: &ApiKey,
        out: &mut Publisher,
    ) -> Result<Vec<(Field, Reading)>, ApiError> {
        let printer = client.get("api/printer", key).await;
        if matches!(printer, Ok(_) | Err(ApiError::PrinterOffline(_))) {
            // OctoPrint answered, even if only to say the printer is away.
            self.health.request_ok(out, Timestamp::now());
        }
        let mut readings = tags::decode_printer(&printer?);
        let job = client.get("api/job", key).await?;
        self.health.request_ok(out, Timestamp::now());
        readings.extend(tags::decode_job(&job));
        Ok(readings)
    }

    fn apply(&mut self, readings: Vec<(Field, Reading)>, out: &mut Publisher, now: Timestamp) {
        for (field, reading) in readings {
            let Some(tag) = self.tag(field) else { continue };
            match reading {
                Reading::Value(value) => {
                    self.rejected.remove(&field);
                    for setpoint in &self.setpoints {
                        if setpoint.heater.target_field() == field {
                            out.set(setpoint.tag, value.clone(), now);
                        }
                    }
                    out.set(tag, value, now);
                }
                Reading::Absent => {}
                Reading::Invalid(why) => {
                    if self.rejected.get(&field) != Some(&why) {
                        tracing::warn!(tag = field.name(), %why, "rejected a value from OctoPrint");
                        self.rejected.insert(field, why.clone());
                    }
                    let reason = format!("{}: {why}", field.name());
                    self.health.request_failed(out, &reason, now);
                    out.set_quality(&[tag], BAD_DECODING, now);
                }
            }
        }
    }

    /// The device is out of reach: every tag Bad, `State` included.
    fn lose(&mut self, out: &mut Publisher, reason: &str, now: Timestamp) {
        self.health.lost(out, reason, now);
        if let Some(state) = self.tag(Field::State) {
            out.set_quality(&[state], Quality::BAD_COMMUNICATION_ERROR, now);
        }
    }

    /// Errors only a person can fix are logged as errors, once until they change.
    fn report(&mut self, reason: &str) {
        if self.reported.as_deref() != Some(reason) {
            tracing::error!(error = reason, "OctoPrint device needs attention");
            self.reported = Some(reason.to_owned());
        }
    }

    /// A job method (`<device>/PauseJob`...): the command to OctoPrint's job endpoint.
    async fn job(
        &mut self,
        client: &OctoPrintClient,
        key: &ApiKeySource,
        method: &str,
        out: &mut Publisher,
    ) -> Result<Vec<Value>, CallError> {
        let name = method.rsplit('/').next().unwrap_or(method);
        let Some(job) = JobCommand::ALL.into_iter().find(|j| j.name() == name) else {
            return Err(CallError::UnknownMethod(method.to_owned()));
        };
        if !self.health.is_connected() {
            return Err(CallError::Status(
                opcua::types::StatusCode::BadNoCommunication,
                "OctoPrint is not reachable".into(),
            ));
        }
        let api_key = key.read().map_err(|e| {
            CallError::Status(opcua::types::StatusCode::BadNoCommunication, e.to_string())
        })?;
        let result = client.post("api/job", &api_key, &job.command()).await;
        let now = Timestamp::now();
        match result {
            Ok(()) => {
                self.health.request_ok(out, now);
                out.flush();
                tracing::info!(method = name, "print job command sent");
                Ok(Vec::new())
            }
            Err(e) => {
                self.health
                    .request_failed(out, &format!("{name}: {e}"), now);
                out.flush();
                Err(match e {
                    ApiError::Timeout { .. } => CallError::Timeout,
                    ApiError::Unreachable { .. } => CallError::Status(
                        opcua::types::StatusCode::BadNoCommunication,
                        e.to_string(),
                    ),
                    // 409: no job to pause, resume or cancel, or the printer is not operational.
                    other => CallError::Refused(other.to_string()),
                })
            }
        }
    }

    async fn write(
        &mut self,
        client: &OctoPrintClient,
        key: &ApiKeySource,
        request: WriteRequest,
        out: &mut Publisher,
    ) {
        let result = self.try_write(client, key, &request, out).await;
        let _ = request.reply.send(result);
    }

    async fn try_write(
        &mut self,
        client: &OctoPrintClient,
        key: &ApiKeySource,
        request: &WriteRequest,
        out: &mut Publisher,
    ) -> Result<(), WriteError> {
        let Some(setpoint) = self.setpoints.iter().find(|s| s.tag == request.tag) else {
            return Err(WriteError::NotWritable);
        };
        let (heater, max, tag) = (setpoint.heater, setpoint.max, setpoint.tag);
        let target = check_target(&request.value, max)?;
        if !self.health.is_connected() {
            return Err(WriteError::NotConnected);
        }
        let api_key = key.read().map_err(|_| WriteError::NotConnected)?;
        match client
            .post(heater.endpoint(), &api_key, &heater.command(target))
            .await
        {
            Ok(()) => {
                let now = Timestamp::now();
                self.health.request_ok(out, now);
                out.set(tag, Value::Float(target), now);
                if let Some(target_tag) = self.tag(heater.target_field()) {
                    out.set(target_tag, Value::Float(target), now);
                }
                out.flush();
                tracing::info!(tag = ?heater, target, "heater target set");
                Ok(())
            }
            Err(e) => {
                let now = Timestamp::now();
                let reason = format!("write {heater:?} target {target}: {e}");
                self.health.request_failed(out, &reason, now);
                out.flush();
                Err(match e {
                    ApiError::Timeout { .. } => WriteError::Timeout,
                    ApiError::Unreachable { .. } | ApiError::PrinterOffline(_) => {
                        WriteError::NotConnected
                    }
                    other => WriteError::Refused(other.to_string()),
                })
            }
        }
    }
}

/// The print job methods (`job_control = true`) and their command to OctoPrint's
/// `POST /api/job`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobCommand {
    Pause,
    Resume,
    Cancel,
}

impl JobCommand {
    const ALL: [JobCommand; 3] = [JobCommand::Pause, JobCommand::Resume, JobCommand::Cancel];

    fn name(self) -> &'static str {
        match self {
            JobCommand::Pause => "PauseJob",
            JobCommand::Resume => "ResumeJob",
            JobCommand::Cancel => "CancelJob",
        }
    }

    fn description(self) -> &'static str {
        match self {
            JobCommand::Pause => "Pause the print job (BadInvalidState: no job is printing)",
            JobCommand::Resume => "Resume the paused print job (BadInvalidState: none is paused)",
            JobCommand::Cancel => "Cancel the print job (BadInvalidState: no job is running)",
        }
    }

    fn command(self) -> serde_json::Value {
        match self {
            JobCommand::Pause => json!({"command": "pause", "action": "pause"}),
            JobCommand::Resume => json!({"command": "pause", "action": "resume"}),
            JobCommand::Cancel => json!({"command": "cancel"}),
        }
    }
}

/// A heater target from a client: a finite Float64 between 0 and `max` °C.
fn check_target(value: &Value, max: f64) -> Result<f64, WriteError> {
    let Value::Float(target) = *value else {
        return Err(WriteError::TypeMismatch(DataType::Float64));
    };
    if !target.is_finite() || !(0.0..=max).contains(&target) {
        return Err(WriteError::OutOfRange {
            value: target,
            low: 0.0,
            high: max,
        });
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_floats_within_the_configured_limit() {
        assert_eq!(check_target(&Value::Float(210.0), 260.0), Ok(210.0));
        assert_eq!(check_target(&Value::Float(0.0), 260.0), Ok(0.0));
        assert!(matches!(
            check_target(&Value::Float(300.0), 260.0),
            Err(WriteError::OutOfRange { high, .. }) if high == 260.0
        ));
        assert!(matches!(
            check_target(&Value::Float(-1.0), 260.0),
            Err(WriteError::OutOfRange { .. })
        ));
        assert!(matches!(
            check_target(&Value::Float(f64::NAN), 260.0),
            Err(WriteError::OutOfRange { .. })
        ));
        assert_eq!(
            check_target(&Value::Int(200), 260.0),
            Err(WriteError::TypeMismatch(DataType::Float64))
        );
    }

    #[test]
    fn heater_commands_follow_the_octoprint_api() {
        assert_eq!(
            Heater::Nozzle.command(200.0),
            json!({"command": "target", "targets": {"tool0": 200.0}})
        );
        assert_eq!(
            Heater::Bed.command(60.0),
            json!({"command": "target", "target": 60.0})
        );
        assert_eq!(Heater::Bed.endpoint(), "api/printer/bed");
    }
}
