//! What the crew and their monitoring see of the running gateway: `GET /health` (liveness and
//! readiness per device and sink) and `GET /metrics` (Prometheus text).
//!
//! Everything is read at request time from the bus (device `Status` tags, sink counters under
//! `Diagnostics/Sinks`, the bus's own counters) and from the OPC UA server's diagnostics, so
//! monitoring adds no work to the data path.

mod health;
mod metrics;
mod process;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use fabrique_adapters::{PointBus, TagCatalog, TagId};
use opcua::server::ServerHandle;
use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;

/// A device as monitoring reports it: where it sits and which of its status tags to read.
#[derive(Debug, Clone)]
struct DeviceProbe {
    station: String,
    device: String,
    protocol: String,
    connected: TagId,
    reconnects: Option<TagId>,
    requests_ok: Option<TagId>,
    requests_failed: Option<TagId>,
    last_error: Option<TagId>,
}

/// A sink (MQTT publisher, InfluxDB writer) and its counters on the bus.
#[derive(Debug, Clone)]
struct SinkProbe {
    name: String,
    /// `(counter name as on the bus, tag)`, e.g. `("Sent", …)`.
    counters: Vec<(String, TagId)>,
}

/// Shared by the health and metrics routes.
#[derive(Clone)]
pub struct Monitoring {
    inner: Arc<Inner>,
}

struct Inner {
    bus: PointBus,
    opcua: ServerHandle,
    started: Instant,
    /// Replaced when a reload adds or removes devices.
    devices: RwLock<Arc<Vec<DeviceProbe>>>,
    sinks: Vec<SinkProbe>,
    /// Changes accepted by the bus during the last whole second, kept by [`Monitoring::sample`].
    changes_per_second: AtomicU64,
}

impl Monitoring {
    /// `protocols` maps a device path (`Stations/<station>/<device>`) to its protocol name.
    pub fn new(
        bus: PointBus,
        opcua: ServerHandle,
        protocols: &[(String, String)],
        started: Instant,
    ) -> Self {
        let catalog = bus.catalog();
        let devices = device_probes(&catalog, protocols);
        let mut sinks: Vec<SinkProbe> = Vec::new();
        for (id, entry) in catalog.iter() {
            let segments: Vec<&str> = entry.spec.path.split('/').collect();
            if let ["Diagnostics", "Sinks", sink, counter] = segments.as_slice() {
                match sinks.iter_mut().find(|s| s.name == *sink) {
                    Some(probe) => probe.counters.push(((*counter).to_owned(), id)),
                    None => sinks.push(SinkProbe {
                        name: (*sink).to_owned(),
                        counters: vec![((*counter).to_owned(), id)],
                    }),
                }
            }
        }
        Monitoring {
            inner: Arc::new(Inner {
                bus,
                opcua,
                started,
                devices: RwLock::new(Arc::new(devices)),
                sinks,
                changes_per_second: AtomicU64::new(0),
            }),
        }
    }

    /// The devices probed now.
    fn devices(&self) -> Arc<Vec<DeviceProbe>> {
        self.inner.devices.read().clone()
    }

    /// After a reload: probe the devices of the current catalogue (`protocols` as in `new`).
    pub fn reload_devices(&self, protocols: &[(String, String)]) {
        let probes = device_probes(&self.inner.bus.catalog(), protocols);
        *self.inner.devices.write() = Arc::new(probes);
    }

    pub fn routes(&self) -> Router {
        Router::new()
            .route("/health", get(health::health))
            .route("/health/ready", get(health::ready))
            .route("/metrics", get(metrics::metrics))
            .with_state(self.clone())
    }

    /// Keep the bus rate up to date, once a second, until `shutdown`.
    pub async fn sample(self, shutdown: CancellationToken) {
        let counters = self.inner.bus.counters();
        let mut last = counters.changes.load(Ordering::Relaxed);
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let now = counters.changes.load(Ordering::Relaxed);
            self.inner
                .changes_per_second
                .store(now.saturating_sub(last), Ordering::Relaxed);
            last = now;
        }
    }
}

/// One probe per device with a `Status/Connected` tag in `catalog`.
fn device_probes(catalog: &TagCatalog, protocols: &[(String, String)]) -> Vec<DeviceProbe> {
    let tag = |path: String| catalog.lookup(&path);
    let mut devices = Vec::new();
    for (id, entry) in catalog.iter() {
        let segments: Vec<&str> = entry.spec.path.split('/').collect();
        if let ["Stations", station, device, "Status", "Connected"] = segments.as_slice() {
            let base = format!("Stations/{station}/{device}");
            let protocol = protocols
                .iter()
                .find(|(path, _)| *path == base)
                .map(|(_, protocol)| protocol.clone())
                .unwrap_or_else(|| "simulator".to_owned());
            devices.push(DeviceProbe {
                station: (*station).to_owned(),
                device: (*device).to_owned(),
                protocol,
                connected: id,
                reconnects: tag(format!("{base}/Status/Reconnects")),
                requests_ok: tag(format!("{base}/Status/RequestsOk")),
                requests_failed: tag(format!("{base}/Status/RequestsFailed")),
                last_error: tag(format!("{base}/Status/LastError")),
            });
        }
    }
    devices
}
