//! `GET /health`: the gateway is alive (it answers) and, per device and sink, ready or not.
//! `GET /health/ready`: the same body, with 503 while anything is not ready, for probes that
//! only look at the status code.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use fabrique_adapters::{TagId, Value};
use serde::Serialize;

use super::Monitoring;

#[derive(Debug, Serialize)]
pub struct Health {
    /// Always true: the process answered.
    live: bool,
    /// Every device connected and every sink delivering.
    ready: bool,
    uptime_s: u64,
    devices: Vec<DeviceHealth>,
    sinks: Vec<SinkHealth>,
}

#[derive(Debug, Serialize)]
struct DeviceHealth {
    station: String,
    device: String,
    protocol: String,
    ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct SinkHealth {
    sink: String,
    /// Connected to its broker or database (or, for a sink that does not say, nothing
    /// waiting in its buffer).
    ready: bool,
    buffered: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

pub async fn health(State(monitoring): State<Monitoring>) -> Json<Health> {
    Json(monitoring.health())
}

pub async fn ready(State(monitoring): State<Monitoring>) -> (StatusCode, Json<Health>) {
    let health = monitoring.health();
    let code = if health.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(health))
}

impl Monitoring {
    fn health(&self) -> Health {
        let inner = &self.inner;
        let text = |tag: Option<TagId>| match tag.and_then(|t| inner.bus.latest(t).value) {
            Some(Value::Text(s)) if !s.is_empty() => Some(s.to_string()),
            _ => None,
        };
        let devices: Vec<DeviceHealth> = self
            .devices()
            .iter()
            .map(|d| {
                let point = inner.bus.latest(d.connected);
                let ready = point.quality.is_good() && point.value == Some(Value::Bool(true));
                DeviceHealth {
                    station: d.station.clone(),
                    device: d.device.clone(),
                    protocol: d.protocol.clone(),
                    ready,
                    last_error: if ready { None } else { text(d.last_error) },
                }
            })
            .collect();
        let sinks: Vec<SinkHealth> = inner
            .sinks
            .iter()
            .map(|s| {
                let counter = |name: &str| {
                    s.counters
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, tag)| *tag)
                };
                let buffered = counter("Buffered")
                    .and_then(|t| inner.bus.latest(t).value)
                    .and_then(|v| v.as_f64())
                    .unwrap_or(0.0) as u64;
                // A sink that reports its link is ready while connected; otherwise, while
                // nothing waits in its buffer.
                let ready = match counter("Connected").and_then(|t| inner.bus.latest(t).value) {
                    Some(Value::Bool(connected)) => connected,
                    _ => buffered == 0,
                };
                SinkHealth {
                    sink: s.name.clone(),
                    ready,
                    buffered,
                    last_error: if ready {
                        None
                    } else {
                        text(counter("LastError"))
                    },
                }
            })
            .collect();
        Health {
            live: true,
            ready: devices.iter().all(|d| d.ready) && sinks.iter().all(|s| s.ready),
            uptime_s: inner.started.elapsed().as_secs(),
            devices,
            sinks,
        }
    }
}
