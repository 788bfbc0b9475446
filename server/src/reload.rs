//! Reloading the configuration (SIGHUP, `POST /api/admin/reload`) without a restart, part by
//! part, each applied by a function of its own (`apply_*`): partner devices (`[[devices]]`)
//! are added, removed or changed; the running sinks are restarted with their new sections
//! (reload/sinks.rs); the OPC UA users are replaced for new logins; `[stop]` becomes the
//! current stop. Any other change refuses the reload, naming its keys (reload/keys.rs).
//!
//! A reload is checked completely before anything running is touched: the file is loaded and
//! validated like at start, the new adapters are built and declare their tags into a copy of
//! the catalogue. Any error refuses the reload with its reason and the old configuration keeps
//! running. Only then are the removed and changed devices stopped, the catalogue and bus grown,
//! the address space edited and the new adapters started.
//!
//! OPC UA sessions and subscriptions survive: nodes of unchanged devices are not touched, and
//! a changed device's tag with the same path and type keeps its id and NodeId, so monitored
//! items on it carry on with the restarted adapter's values.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use fabrique_adapters::device::device_path;
use fabrique_adapters::limits::AlarmLimits;
use fabrique_adapters::registry::{build_device_adapter, DeviceConfig};
use fabrique_adapters::{AdapterContext, AdapterId, PointBus, TagCatalogBuilder, TagRegistrar};
use opcua::server::node_manager::memory::InMemoryNodeManager;
use opcua::server::ServerHandle;
use serde::Serialize;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod keys;
pub mod sinks;

use crate::commands::CommandRouter;
use crate::config::{ConfigError, GatewayConfig};
use crate::http::Guards;
use crate::monitoring::Monitoring;
use crate::opcua::{DeviceNameplate, GatewayNodes, NodeChanges, UserTables, Users};
use crate::visits::VisitsHandle;
use sinks::SinkSet;

/// How long a stopped device's adapter gets to finish before the reload goes on without it.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("changes to {} need a restart (a reload applies `devices`, `stop`, `opcua.users`, the sections of running sinks and the `alarms` of simulated machines)", quoted(.0))]
    NeedsRestart(Vec<String>),
    #[error("`opcua.users`: {0}")]
    Users(String),
    #[error("device `{device}`: {reason}")]
    Device { device: String, reason: String },
    #[error("more than 65535 adapters since the start: restart the gateway")]
    TooManyAdapters,
}

fn quoted(keys: &[String]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a reload changes, by device path (`Stations/<station>/<device>`).
#[derive(Debug, Default, PartialEq)]
pub struct DeviceDiff {
    pub added: Vec<DeviceConfig>,
    pub removed: Vec<DeviceConfig>,
    /// The new configuration of each device whose block changed.
    pub changed: Vec<DeviceConfig>,
}

fn path_of(device: &DeviceConfig) -> String {
    device_path(device.station(), device.name())
}

/// What a reload applies, part by part.
#[derive(Default)]
pub struct Plan {
    pub devices: DeviceDiff,
    pub parts: keys::Parts,
    /// The alarm limits of simulated machines changed.
    pub simulated_alarms: bool,
}

/// Compare two valid configurations: what each reloadable part has to do, or the keys that
/// need a restart. Simulated machines run inside the one simulator, so changing which ones run
/// (a `[[devices]]` block hiding a station's simulated machines, too) needs a restart.
pub fn plan(old: &GatewayConfig, new: &GatewayConfig) -> Result<Plan, ReloadError> {
    // The alarm limits of simulated machines apply without a restart (alarms/reload.rs).
    let simulated_alarms = crate::alarms::reload::simulated_alarms_changed(old, new);
    let (old, new) = (
        &crate::alarms::reload::without_simulated_alarms(old),
        &crate::alarms::reload::without_simulated_alarms(new),
    );
    let mut parts = keys::classify(old, new);
    let simulated = |c: &GatewayConfig| -> Vec<DeviceConfig> {
        c.effective_devices()
            .into_iter()
            .filter(|d| matches!(d, DeviceConfig::Simulator(_)))
            .collect()
    };
    if simulated(old) != simulated(new) {
        parts.restart.push(
            "devices with protocol = \"simulator\" (or the simulated machines a device replaces)"
                .to_owned(),
        );
    }
    if !parts.restart.is_empty() {
        return Err(ReloadError::NeedsRestart(parts.restart));
    }
    Ok(Plan {
        devices: device_diff(old, new),
        parts,
        simulated_alarms,
    })
}

/// The partner devices that differ, as long as nothing needs a restart.
pub fn diff(old: &GatewayConfig, new: &GatewayConfig) -> Result<DeviceDiff, ReloadError> {
    plan(old, new).map(|plan| plan.devices)
}

fn device_diff(old: &GatewayConfig, new: &GatewayConfig) -> DeviceDiff {
    let partners = |c: &GatewayConfig| -> HashMap<String, DeviceConfig> {
        c.devices
            .iter()
            .filter(|d| !matches!(d, DeviceConfig::Simulator(_)))
            .map(|d| (path_of(d), d.clone()))
            .collect()
    };
    let (before, after) = (partners(old), partners(new));
    let mut diff = DeviceDiff::default();
    // In the order of the new file (then the old one), so logs and answers read naturally.
    for device in new
        .devices
        .iter()
        .filter(|d| after.contains_key(&path_of(d)))
    {
        match before.get(&path_of(device)) {
            None => diff.added.push(device.clone()),
            Some(old) if old != device => diff.changed.push(device.clone()),
            Some(_) => {}
        }
    }
    for device in old.devices.iter() {
        let path = path_of(device);
        if before.contains_key(&path) && !after.contains_key(&path) {
            diff.removed.push(device.clone());
        }
    }
    diff
}

/// The answer of a reload: device paths, then the other parts it applied.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub tags: usize,
    /// Sinks restarted with their new section (`Mqtt`, `InfluxDB`, `Sparkplug`).
    pub sinks: Vec<String>,
    /// OPC UA users added, removed or changed, by name.
    pub users: Vec<String>,
    /// The town of `[stop]`, when it became the current stop.
    pub stop: Option<String>,
    /// Tags of simulated machines whose alarm limits changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alarm_limits: Vec<String>,
    /// Parts that could not be applied (the rest was), with the reason; also logged.
    pub failed: Vec<String>,
}

/// A partner device's running adapter.
struct RunningDevice {
    owner: AdapterId,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct Current {
    config: GatewayConfig,
    devices: HashMap<String, RunningDevice>,
    /// Set once the sinks run (gateway.rs).
    sinks: Option<SinkSet>,
}

/// Everything a reload touches; one reload at a time.
pub struct Reloader {
    config_path: Option<PathBuf>,
    bus: PointBus,
    router: CommandRouter,
    nodes: Arc<InMemoryNodeManager<GatewayNodes>>,
    server: ServerHandle,
    /// Parent of every device's own stop token.
    shutdown: CancellationToken,
    /// Its device probes follow the devices (set once the HTTP server is up).
    monitoring: OnceLock<Monitoring>,
    /// The OPC UA server's users, replaced by a reload.
    users: OnceLock<Users>,
    /// Where `[stop]` goes when it changes.
    visits: OnceLock<VisitsHandle>,
    state: Mutex<Current>,
}

impl Reloader {
    pub fn new(
        config_path: Option<PathBuf>,
        config: GatewayConfig,
        bus: PointBus,
        router: CommandRouter,
        nodes: Arc<InMemoryNodeManager<GatewayNodes>>,
        server: ServerHandle,
        shutdown: CancellationToken,
    ) -> Self {
        Reloader {
            config_path,
            bus,
            router,
            nodes,
            server,
            shutdown,
            monitoring: OnceLock::new(),
            users: OnceLock::new(),
            visits: OnceLock::new(),
            state: Mutex::new(Current {
                config,
                devices: HashMap::new(),
                sinks: None,
            }),
        }
    }

    /// The OPC UA users and the visits writer, which a reload updates.
    pub fn with_parts(self, users: Users, visits: VisitsHandle) -> Self {
        let _ = self.users.set(users);
        let _ = self.visits.set(visits);
        self
    }

    /// Take over the running sinks: a reload restarts them, `join_all` awaits them.
    pub async fn hold_sinks(&self, sinks: SinkSet) {
        self.state.lock().await.sinks = Some(sinks);
    }

    /// Keep `monitoring`'s device probes in step with reloads.
    pub fn watch(&self, monitoring: Monitoring) {
        let _ = self.monitoring.set(monitoring);
    }

    /// A stop token for a device's adapter, child of the gateway's.
    pub fn device_token(&self) -> CancellationToken {
        self.shutdown.child_token()
    }

    /// Record a partner device's adapter started by the gateway itself.
    pub async fn started(
        &self,
        path: String,
        owner: AdapterId,
        stop: CancellationToken,
        task: JoinHandle<()>,
    ) {
        let running = RunningDevice { owner, stop, task };
        self.state.lock().await.devices.insert(path, running);
    }

    /// Wait for every device adapter to finish (after the gateway's shutdown).
    pub async fn join_all(&self) {
        let mut state = self.state.lock().await;
        for (_, device) in state.devices.drain() {
            device.stop.cancel();
            let _ = device.task.await;
        }
        if let Some(sinks) = &mut state.sinks {
            sinks.join_all().await;
        }
    }

    /// Reload, and log the outcome either way.
    pub async fn reload_logged(&self, trigger: &'static str) -> Result<ReloadSummary, ReloadError> {
        let outcome = self.reload().await;
        match &outcome {
            Ok(s) => tracing::info!(
                trigger,
                added = ?s.added,
                removed = ?s.removed,
                changed = ?s.changed,
                tags = s.tags,
                sinks = ?s.sinks,
                users = ?s.users,
                stop = ?s.stop,
                alarm_limits = ?s.alarm_limits,
                failed = ?s.failed,
                "configuration reloaded"
            ),
            Err(error) => {
                tracing::warn!(trigger, %error, "configuration reload refused; the running one stays")
            }
        }
        outcome
    }

    async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        let mut state = self.state.lock().await;
        let config = GatewayConfig::load(self.config_path.as_deref())?;
        let Plan {
            devices,
            parts,
            simulated_alarms,
        } = plan(&state.config, &config)?;

        // 1. Check everything on copies: nothing running changes until this succeeded.
        let devices = self.prepare_devices(&state, devices)?;
        let users = match parts.users {
            true => {
                Some(UserTables::new(config.opcua.security().users).map_err(ReloadError::Users)?)
            }
            false => None,
        };

        let alarm_limits = match simulated_alarms {
            true => Some(
                crate::alarms::reload::simulated_limits(&config).map_err(|e| {
                    ReloadError::Device {
                        device: "(simulated alarm limits)".into(),
                        reason: e.to_string(),
                    }
                })?,
            ),
            false => None,
        };

        // 2. Apply, part by part.
        let mut summary = self.apply_devices(&mut state, devices, &config).await?;
        if let Some(limits) = alarm_limits {
            summary.alarm_limits = self.apply_alarm_limits(&limits);
        }
        if let Some(tables) = users {
            summary.users = self.apply_users(&state.config, &config, tables);
        }
        if parts.stop {
            match self.apply_stop(&config).await {
                Ok(town) => summary.stop = Some(town),
                Err(error) => summary.failed.push(error),
            }
        }
        if !parts.sinks.is_empty() {
            summary.sinks = self.apply_sinks(&mut state, &parts.sinks, &config).await;
            for kind in &parts.sinks {
                if !summary.sinks.iter().any(|name| name == kind.name) {
                    summary.failed.push(format!(
                        "sink {}: not started with its new section (see the log)",
                        kind.name
                    ));
                }
            }
        }
        state.config = config;
        Ok(summary)
    }

    /// Devices: the new adapters built and their tags declared into a copy of the catalogue.
    fn prepare_devices(
        &self,
        state: &Current,
        diff: DeviceDiff,
    ) -> Result<PreparedDevices, ReloadError> {
        let mut catalog = TagCatalogBuilder::from_catalog(&self.bus.catalog());
        let mut changes = NodeChanges::default();
        for device in diff.removed.iter().chain(&diff.changed) {
            let path = path_of(device);
            if let Some(running) = state.devices.get(&path) {
                changes
                    .retired_tags
                    .extend(catalog.retire_owner(running.owner));
            }
            changes.removed_devices.push(path);
            if device.standard().kind.is_some() {
                changes.removed_machines.push(device.name().to_owned());
            }
        }
        let first = self.router.adapters();
        let mut starting = Vec::new();
        for (i, device) in diff.added.iter().chain(&diff.changed).enumerate() {
            let owner = u16::try_from(first + i)
                .map(AdapterId)
                .map_err(|_| ReloadError::TooManyAdapters)?;
            let refused = |reason: String| ReloadError::Device {
                device: device.name().to_owned(),
                reason,
            };
            let mut adapter = build_device_adapter(device)
                .ok_or_else(|| refused("cannot build its adapter".into()))?;
            let mark = catalog.registered().len();
            adapter
                .declare_tags(&mut TagRegistrar::new(&mut catalog, owner))
                .map_err(|e| refused(e.to_string()))?;
            for &tag in &catalog.registered()[mark..] {
                if let Some(spec) = catalog.spec(tag) {
                    changes.added_tags.push((tag, spec.clone()));
                }
            }
            changes.added_devices.push(DeviceNameplate {
                path: path_of(device),
                protocol: device.protocol().to_owned(),
                identification: device.identification().clone(),
            });
            changes
                .added_machines
                .push(crate::opcua::standard::MachineDecl::of(device));
            starting.push((path_of(device), owner, adapter));
        }
        Ok(PreparedDevices {
            diff,
            catalog: Arc::new(catalog.build()),
            changes,
            starting,
        })
    }

    /// Devices: grow the bus, stop the removed and changed adapters, edit the address space,
    /// start the new adapters.
    async fn apply_devices(
        &self,
        state: &mut Current,
        prepared: PreparedDevices,
        config: &GatewayConfig,
    ) -> Result<ReloadSummary, ReloadError> {
        let PreparedDevices {
            diff,
            catalog,
            changes,
            starting,
        } = prepared;
        // The bus first (it cannot refuse a continuation of its own catalogue, but should it,
        // nothing has changed yet): retired tags take no more values from then on.
        self.bus
            .grow(catalog.clone())
            .map_err(|e| ReloadError::Device {
                device: "(catalogue)".into(),
                reason: e.to_string(),
            })?;
        // Stop the old adapters before starting new ones, so a changed device's restarted
        // adapter is the only one publishing to the tags it kept.
        for path in &changes.removed_devices {
            if let Some(running) = state.devices.remove(path) {
                running.stop.cancel();
                if tokio::time::timeout(STOP_TIMEOUT, running.task)
                    .await
                    .is_err()
                {
                    tracing::warn!(device = %path, "adapter did not stop within 5 s");
                }
            }
        }
        {
            let type_tree = self.server.type_tree().read();
            self.nodes
                .inner()
                .apply(self.nodes.address_space(), &*type_tree, &changes);
        }
        let mut senders = Vec::new();
        for (path, owner, adapter) in starting {
            let (sender, commands) = mpsc::channel(crate::gateway::COMMAND_QUEUE);
            senders.push(sender);
            let stop = self.shutdown.child_token();
            let context = AdapterContext {
                publisher: self.bus.publisher(),
                commands,
                shutdown: stop.clone(),
            };
            let task = tokio::spawn(adapter.run(context));
            state
                .devices
                .insert(path, RunningDevice { owner, stop, task });
        }
        self.router.extend(catalog.clone(), senders);
        if let Some(monitoring) = self.monitoring.get() {
            monitoring.reload_devices(&crate::gateway::device_protocols(config));
        }
        Ok(ReloadSummary {
            added: diff.added.iter().map(path_of).collect(),
            removed: diff.removed.iter().map(path_of).collect(),
            changed: diff.changed.iter().map(path_of).collect(),
            tags: catalog.live(),
            ..ReloadSummary::default()
        })
    }

    /// OPC UA users: new logins are checked against the new tables; open sessions keep the
    /// identity (and role) they were activated with. The names of the users that changed.
    fn apply_users(
        &self,
        old: &GatewayConfig,
        new: &GatewayConfig,
        tables: UserTables,
    ) -> Vec<String> {
        if let Some(users) = self.users.get() {
            users.replace(tables);
        }
        let (before, after) = (old.opcua.security().users, new.opcua.security().users);
        let names: BTreeSet<&String> = before.iter().chain(after).map(|u| &u.name).collect();
        names
            .into_iter()
            .filter(|name| {
                before.iter().find(|u| &u.name == *name) != after.iter().find(|u| &u.name == *name)
            })
            .cloned()
            .collect()
    }

    /// `[stop]`: the current stop, stored (as the configured one too) before the answer.
    async fn apply_stop(&self, config: &GatewayConfig) -> Result<String, String> {
        let stop = crate::visits::configured_stop(&config.stop);
        let town = stop.town.clone();
        let Some(visits) = self.visits.get() else {
            return Err("stop: the visits writer is not running".into());
        };
        visits
            .configure_stop(stop)
            .await
            .map(|_| town)
            .map_err(|error| {
                tracing::error!(%error, "reload: cannot store the new stop");
                format!("stop: {error}")
            })
    }

    /// Simulated machines' alarm limits: the bus gets its catalogue with the new limits (same
    /// ids), which the limit watch applies at once. The tags whose limits changed.
    fn apply_alarm_limits(&self, limits: &[(String, Option<AlarmLimits>)]) -> Vec<String> {
        let Some((catalog, changed)) =
            crate::alarms::reload::with_limits(&self.bus.catalog(), limits)
        else {
            return Vec::new();
        };
        // The same ids and length: `grow` cannot refuse it.
        if let Err(error) = self.bus.grow(Arc::new(catalog)) {
            tracing::error!(%error, "alarm limits not applied");
            return Vec::new();
        }
        changed
    }

    /// Sinks: each changed one restarted with its new section, its buffer kept.
    async fn apply_sinks(
        &self,
        state: &mut Current,
        kinds: &[&'static crate::streams::sink::SinkKind],
        config: &GatewayConfig,
    ) -> Vec<String> {
        let old = state.config.clone();
        match &mut state.sinks {
            Some(sinks) => sinks.restart(kinds, &old, config).await,
            None => Vec::new(),
        }
    }
}

/// Devices checked on copies, ready to apply.
struct PreparedDevices {
    diff: DeviceDiff,
    catalog: Arc<fabrique_adapters::TagCatalog>,
    changes: NodeChanges,
    starting: Vec<(String, AdapterId, Box<dyn fabrique_adapters::Adapter>)>,
}

/// `POST /api/admin/reload` (admin token): 200 with the summary, 400 with the reason (and
/// `needs_restart`, the keys, when that is the reason).
pub fn routes(reloader: Arc<Reloader>, guards: &Guards) -> Router {
    Router::new()
        .route("/api/admin/reload", guards.admin(post(post_reload)))
        .with_state(reloader)
}

async fn post_reload(
    State(reloader): State<Arc<Reloader>>,
) -> Result<Json<ReloadSummary>, (StatusCode, Json<serde_json::Value>)> {
    reloader
        .reload_logged("http")
        .await
        .map(Json)
        .map_err(|error| {
            let mut body = serde_json::json!({ "error": error.to_string() });
            if let ReloadError::NeedsRestart(keys) = &error {
                body["needs_restart"] = serde_json::json!(keys);
            }
            (StatusCode::BAD_REQUEST, Json(body))
        })
}

/// Reload on every SIGHUP, until `shutdown`.
pub async fn on_sighup(reloader: Arc<Reloader>, shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; reload over HTTP only");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                received = hangups.recv() => {
                    if received.is_none() {
                        break;
                    }
                    let _ = reloader.reload_logged("SIGHUP").await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (reloader, shutdown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODBUS: &str = "protocol = \"modbus\"\naddress = \"127.0.0.1:1502\"\nunit = 1\n\
        [[devices.tags]]\nname = \"Value\"\nregister = \"holding:0\"\ntype = \"int16\"\n";

    fn config(text: &str) -> GatewayConfig {
        let defaults = include_str!("../../config/default.toml");
        let base: toml::Table = toml::from_str(defaults).unwrap();
        let extra: toml::Table = toml::from_str(text).unwrap();
        let mut merged = base;
        for (key, value) in extra {
            merged.insert(key, value);
        }
        toml::Value::Table(merged).try_into().unwrap()
    }

    fn device(name: &str, station: &str, poll_ms: u32) -> String {
        format!("[[devices]]\nname = \"{name}\"\nstation = \"{station}\"\npoll_ms = {poll_ms}\n{MODBUS}\n")
    }

    fn paths(devices: &[DeviceConfig]) -> Vec<String> {
        devices.iter().map(path_of).collect()
    }

    #[test]
    fn devices_are_added_removed_and_changed_by_station_and_name() {
        let old = config(
            &[
                device("A", "Partners", 100),
                device("B", "Partners", 100),
                device("C", "Partners", 100),
            ]
            .concat(),
        );
        let new = config(
            &[
                device("A", "Partners", 100),
                device("C", "Partners", 250),
                device("B", "Elsewhere", 100),
            ]
            .concat(),
        );
        let diff = diff(&old, &new).unwrap();
        assert_eq!(paths(&diff.added), vec!["Stations/Elsewhere/B"]);
        assert_eq!(paths(&diff.removed), vec!["Stations/Partners/B"]);
        assert_eq!(paths(&diff.changed), vec!["Stations/Partners/C"]);
        assert_eq!(
            crate::reload::diff(&new, &new).unwrap(),
            DeviceDiff::default()
        );
    }

    #[test]
    fn other_sections_need_a_restart_and_are_named() {
        let old = config(&device("A", "Partners", 100));
        let mut new = old.clone();
        new.mqtt.enabled = !new.mqtt.enabled;
        new.bus.capacity += 1;
        let error = diff(&old, &new).unwrap_err().to_string();
        assert!(
            error.starts_with("changes to `bus.capacity`, `mqtt.enabled` need a restart"),
            "{error}"
        );
    }

    #[test]
    fn a_device_that_hides_simulated_machines_needs_a_restart() {
        let old = config(&device("A", "Partners", 100));
        // The default configuration simulates a printer at the Printing station.
        let new = config(&[device("A", "Partners", 100), device("P", "Printing", 100)].concat());
        let error = diff(&old, &new).unwrap_err();
        assert!(
            matches!(&error, ReloadError::NeedsRestart(keys) if keys.len() == 1 && keys[0].contains("simulator")),
            "{error}"
        );
    }
}
