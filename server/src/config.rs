//! Configuration: built-in defaults, then an optional TOML file, then `FABRIQUE__*` variables.
//!
//! Every error names the key and where its value came from (the file, a variable, or the
//! built-in defaults), because the person reading it is at a truck with a laptop, not in the
//! source code.

use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use fabrique_adapters::device::{check_name, device_path};
use fabrique_adapters::line::LineConfig;
use fabrique_adapters::simulator::SimulationConfig;
use fabrique_adapters::DeviceConfig;
use serde::{Deserialize, Serialize};

use crate::history::HistoryConfig;
use crate::http::HttpConfig;
use crate::indicators::IndicatorsConfig;
use crate::opcua::OpcUaConfig;
use crate::storage::StorageConfig;
use crate::streams::influxdb::InfluxConfig;
use crate::streams::mqtt::MqttSinkConfig;
use crate::visits::{StopConfig, VisitsConfig};

/// The built-in default: the whole truck, simulated.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Prefix of environment overrides; `__` separates key segments.
pub const ENV_PREFIX: &str = "FABRIQUE";
const ENV_SEPARATOR: &str = "__";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default)]
    pub site: SiteConfig,
    #[serde(default)]
    pub stop: StopConfig,
    #[serde(default)]
    pub opcua: OpcUaConfig,
    #[serde(default)]
    pub bus: BusConfig,
    /// The HTTP server: survey, statistics, health, metrics.
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    /// The MQTT publisher (off by default).
    #[serde(default)]
    pub mqtt: MqttSinkConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Northbound: every point to InfluxDB (off by default).
    #[serde(default)]
    pub influxdb: InfluxConfig,
    /// What the sinks share (the on-disk buffer's fsync).
    #[serde(default)]
    pub streams: crate::streams::StreamsConfig,
    /// The truck as a Sparkplug B Edge Node (off by default).
    #[serde(default)]
    pub sparkplug: crate::streams::sparkplug::SparkplugConfig,
    /// Tour stops, check-ins and the post-visit survey.
    #[serde(default)]
    pub visits: VisitsConfig,
    #[serde(default)]
    pub simulation: SimulationConfig,
    #[serde(default)]
    pub line: LineConfig,
    /// Order history and production indicators.
    #[serde(default)]
    pub indicators: IndicatorsConfig,
    /// The visitor's journey: designs, kiosk, follow pages, trades.
    #[serde(default)]
    pub journey: crate::journey::JourneyConfig,
    /// The embedded historian (on by default) behind OPC UA HistoryRead.
    #[serde(default)]
    pub history: HistoryConfig,
    /// Real (or explicitly simulated) devices; see [`GatewayConfig::effective_devices`].
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
}

/// `[site]`: which truck this is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiteConfig {
    /// Short id, used in topics and as the `site` tag of every point.
    pub id: String,
    /// Name shown to people.
    pub name: String,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            id: "fabrique-hdf".into(),
            name: "Fabrique mobile".into(),
        }
    }
}

/// `[bus]`: the point bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// Batches (one adapter flush each) kept for a slow consumer before it must resynchronise
    /// from the latest values.
    pub capacity: usize,
    /// Changes the ring may hold, at most, counting every batch as a full catalogue: the ring
    /// keeps `min(capacity, max_points / tags)` batches (2 at least). 0: `capacity` alone.
    pub max_points: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            capacity: 64,
            max_points: 1_000_000,
        }
    }
}

impl BusConfig {
    /// Batches the ring keeps for a catalogue of `tags`. A batch can carry every tag (a
    /// simulation tick, a poll of a large device), so 64 batches of 100,000 tags held 250 MB
    /// for a consumer a few seconds behind (BENCHMARKS.md, "Session 5").
    pub fn ring_batches(&self, tags: usize) -> usize {
        if self.max_points == 0 || tags == 0 {
            return self.capacity;
        }
        self.capacity.min((self.max_points / tags).max(2))
    }
}

/// `[log]`: what the gateway says about itself. `RUST_LOG` overrides `level`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `debug`, `info,fabrique_adapters::modbus=debug`.
    pub level: String,
    /// `text` for people at a terminal, `json` (one object per line) for journald or a log
    /// collector.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("in {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Merged(String),
    #[error("invalid `{key}` (from {origin}): {reason}")]
    Invalid {
        key: String,
        origin: String,
        reason: String,
    },
}

impl GatewayConfig {
    /// Load the configuration the way the gateway runs: defaults, `file`, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Self::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let file = match file {
            Some(path) => Some((
                path,
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?,
            )),
            None => None,
        };
        Self::load_text_with_env(file, env)
    }

    /// As [`Self::load_with_env`], with the file's text given (`path` names it in errors): the
    /// fuzz target (`fuzz/`) loads thousands of files a second without writing one.
    pub fn load_text_with_env(
        file: Option<(&Path, String)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
            .collect();
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        let mut file_text = None;
        let file = file.map(|(path, text)| {
            file_text = Some(text);
            path
        });
        if let (Some(path), Some(text)) = (file, &file_text) {
            // The file alone first: its own errors then point at its own lines and keys.
            toml::from_str::<GatewayConfig>(text).map_err(|e| ConfigError::File {
                path: path.to_owned(),
                message: e.to_string().trim_end().to_owned(),
            })?;
            builder = builder.add_source(File::from_str(text, FileFormat::Toml));
        }
        let environment = Environment::with_prefix(ENV_PREFIX)
            .prefix_separator(ENV_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("line.models")
            .with_list_parse_key("line.step_durations_s")
            .source(Some(env.iter().cloned().collect()));
        let mut merged: GatewayConfig = builder
            .add_source(environment)
            .build()
            .and_then(Config::try_deserialize::<GatewayConfig>)
            .map_err(|e| {
                let origin = if env.is_empty() {
                    ""
                } else {
                    " (check the FABRIQUE__* environment variables)"
                };
                let file = file
                    .map(|p| format!(" with {}", p.display()))
                    .unwrap_or_default();
                ConfigError::Merged(format!("configuration{file}: {e}{origin}"))
            })?;
        merged.opcua.apply_profile();
        merged.fill_partner_pki_dirs();
        merged
            .validate()
            .map_err(|(key, reason)| ConfigError::Invalid {
                origin: origin_of(&key, file, file_text.as_deref(), &env),
                key,
                reason,
            })?;
        Ok(merged)
    }

    /// Checks what the types alone cannot. Returns the dotted key and the reason.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let own = |(key, reason): (&str, String)| (key.to_owned(), reason);
        self.simulation.validate().map_err(own)?;
        self.line.validate().map_err(own)?;
        self.opcua.validate().map_err(own)?;
        self.opcua.security().validate()?;
        self.http.validate().map_err(own)?;
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(("log.level".into(), format!("not a log filter: {error}")));
        }
        crate::streams::sink::validate(self).map_err(own)?;
        self.streams.validate().map_err(own)?;
        self.indicators.validate().map_err(own)?;
        self.journey.validate().map_err(own)?;
        self.history.validate().map_err(own)?;
        crate::visits::validate_stop(&self.stop).map_err(own)?;
        self.visits.validate().map_err(own)?;
        if self.bus.capacity == 0 || self.bus.capacity > 1_000_000 {
            return Err((
                "bus.capacity".into(),
                "must be between 1 and 1000000".into(),
            ));
        }
        if self.site.id.is_empty() {
            return Err(("site.id".into(), "must not be empty".into()));
        }
        if let Err(issue) = fabrique_adapters::text::check_visible(&self.site.name) {
            return Err(("site.name".into(), issue.to_string()));
        }
        for (key, path) in [
            ("storage.data_dir", &self.storage.data_dir),
            ("opcua.pki_dir", &self.opcua.pki_dir),
        ] {
            let text = path.to_string_lossy();
            if text.is_empty() || text.contains('\0') {
                return Err((
                    key.into(),
                    "must be a directory path, not empty, no NUL".into(),
                ));
            }
        }
        let names = |list: &'static str, i: usize, name: &str, station: &str| {
            check_name(name).map_err(|r| (format!("{list}[{i}].name"), r))?;
            check_name(station).map_err(|r| (format!("{list}[{i}].station"), r))
        };
        for (i, d) in self.simulation.devices.iter().enumerate() {
            names("simulation.devices", i, &d.name, &d.station)?;
            d.validate_alarms().map_err(|issue| {
                (
                    format!("simulation.devices[{i}].{}", issue.key),
                    format!("device `{}`: {}", d.name, issue.reason),
                )
            })?;
        }
        for (i, d) in self.devices.iter().enumerate() {
            names("devices", i, d.name(), d.station())?;
            d.validate().map_err(|issue| {
                (
                    format!("devices[{i}].{}", issue.key),
                    format!("device `{}`: {}", d.name(), issue.reason),
                )
            })?;
        }
        let mut seen = std::collections::HashSet::new();
        for device in self.effective_devices() {
            let path = device_path(device.station(), device.name());
            if !seen.insert(path.clone()) {
                return Err((
                    "devices".into(),
                    format!(
                        "two devices are named `{}` at station `{}`",
                        device.name(),
                        device.station()
                    ),
                ));
            }
        }
        // Objects/Machines/<name> and DeviceSet/<name>: one namespace for every station.
        let mut machines = std::collections::HashSet::new();
        for device in self.effective_devices() {
            if device.standard().kind.is_some() && !machines.insert(device.name().to_owned()) {
                return Err((
                    "devices".into(),
                    format!(
                        "two devices with a `kind` are named `{}`: they share Objects/Machines, rename one",
                        device.name()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The devices the gateway runs: every `[[devices]]` block, plus the simulated machines of
    /// the stations that have no configured device.
    pub fn effective_devices(&self) -> Vec<DeviceConfig> {
        let configured_stations: std::collections::HashSet<&str> =
            self.devices.iter().map(|d| d.station()).collect();
        self.simulation
            .devices
            .iter()
            .filter(|d| !configured_stations.contains(d.station.as_str()))
            .cloned()
            .map(DeviceConfig::Simulator)
            .chain(self.devices.iter().cloned())
            .collect()
    }

    /// Partner OPC UA devices without their own `pki_dir` share the gateway's PKI folder's
    /// `partners/` sub-folder, which `fabrique-gateway pki` covers too.
    fn fill_partner_pki_dirs(&mut self) {
        let partners = crate::opcua::pki::partners_dir(&self.opcua.pki_dir);
        for device in &mut self.devices {
            if let DeviceConfig::Opcua(d) = device {
                d.pki_dir.get_or_insert_with(|| partners.clone());
            }
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Which layer set `key`: the environment wins over the file, the file over the defaults.
fn origin_of(
    key: &str,
    file: Option<&Path>,
    file_text: Option<&str>,
    env: &[(String, String)],
) -> String {
    let base = key.split('[').next().unwrap_or(key);
    let var = format!(
        "{ENV_PREFIX}{ENV_SEPARATOR}{}",
        base.replace('.', ENV_SEPARATOR).to_uppercase()
    );
    if env.iter().any(|(k, _)| *k == var) {
        return format!("environment variable {var}");
    }
    if let (Some(path), Some(text)) = (file, file_text) {
        let table: toml::Table = text.parse().unwrap_or_default();
        let mut node = Some(&toml::Value::Table(table));
        for segment in base.split('.') {
            node = node.and_then(|n| n.get(segment));
        }
        if node.is_some() {
            return path.display().to_string();
        }
    }
    "the built-in defaults".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_bus_ring_is_bounded_by_points_for_large_catalogues() {
        let bus = BusConfig::default();
        assert_eq!(bus.ring_batches(100), 64);
        assert_eq!(bus.ring_batches(100_000), 10);
        assert_eq!(bus.ring_batches(10_000_000), 2);
        let unbounded = BusConfig {
            max_points: 0,
            ..BusConfig::default()
        };
        assert_eq!(unbounded.ring_batches(100_000), 64);
    }

    fn file_with(text: &str) -> tempfile_lite::TempFile {
        tempfile_lite::TempFile::new(text)
    }

    /// A minimal temporary file, removed on drop; enough for these tests.
    mod tempfile_lite {
        use super::*;
        pub struct TempFile(pub PathBuf);
        impl TempFile {
            pub fn new(text: &str) -> Self {
                static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = std::env::temp_dir().join(format!(
                    "fabrique-config-test-{}-{n}.toml",
                    std::process::id()
                ));
                let mut f = std::fs::File::create(&path).unwrap();
                f.write_all(text.as_bytes()).unwrap();
                TempFile(path)
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn the_built_in_default_is_the_whole_simulated_truck() {
        let config = GatewayConfig::load_with_env(None, no_env()).unwrap();
        assert_eq!(config.opcua.host, "127.0.0.1");
        assert_eq!(config.opcua.port, 4840);
        let devices = config.effective_devices();
        assert!(devices.len() >= 7, "got {} devices", devices.len());
        assert!(devices.iter().all(|d| d.protocol() == "simulator"));
    }

    #[test]
    fn a_file_switching_to_the_secure_profile_loses_every_demo_default() {
        let file = file_with("[opcua]\nprofile = \"secure\"\n");
        let err = GatewayConfig::load_with_env(Some(&file.0), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`opcua.users`"), "{err}");
        let file = file_with(
            "[opcua]\nprofile = \"secure\"\n[[opcua.users]]\nname = \"a\"\n\
             thumbprint = \"0123456789abcdef0123456789abcdef01234567\"\nrole = \"admin\"\n",
        );
        let config = GatewayConfig::load_with_env(Some(&file.0), no_env()).unwrap();
        let security = config.opcua.security();
        assert!(!security.anonymous);
        assert_eq!(security.users.len(), 1);
        assert!(security
            .endpoints
            .iter()
            .all(|e| e.policy != crate::opcua::security::PolicyName::None));
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        let file = file_with("[opcua]\nport = 48500\n[simulation]\nspeed = 5.0\n");
        let env = vec![("FABRIQUE__SIMULATION__SPEED".to_string(), "20".to_string())];
        let config = GatewayConfig::load_with_env(Some(&file.0), env).unwrap();
        assert_eq!(config.opcua.port, 48500);
        assert_eq!(config.simulation.speed, 20.0);
    }

    #[test]
    fn an_unknown_key_names_the_key_and_the_file() {
        let file = file_with("[opcua]\nprot = 1\n");
        let err = GatewayConfig::load_with_env(Some(&file.0), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("prot"), "{err}");
        assert!(err.contains(&file.0.display().to_string()), "{err}");
    }

    #[test]
    fn a_bad_value_names_the_key_and_its_origin() {
        let file = file_with("[simulation]\nspeed = -1.0\n");
        let err = GatewayConfig::load_with_env(Some(&file.0), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("simulation.speed"), "{err}");
        assert!(err.contains(&file.0.display().to_string()), "{err}");

        let env = vec![("FABRIQUE__SIMULATION__SPEED".to_string(), "0".to_string())];
        let err = GatewayConfig::load_with_env(None, env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("FABRIQUE__SIMULATION__SPEED"), "{err}");
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let file = file_with("[opcua]\nport = \"abc\"\n");
        let err = GatewayConfig::load_with_env(Some(&file.0), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("port"), "{err}");
        assert!(err.contains(&file.0.display().to_string()), "{err}");
    }

    #[test]
    fn a_configured_device_replaces_the_simulated_ones_of_its_station() {
        let file = file_with(
            "[[devices]]\nname = \"PartnerPrinter\"\nstation = \"Printing\"\nprotocol = \"simulator\"\nkind = \"printer3d\"\n",
        );
        let config = GatewayConfig::load_with_env(Some(&file.0), no_env()).unwrap();
        let at_printing: Vec<String> = config
            .effective_devices()
            .iter()
            .filter(|d| d.station() == "Printing")
            .map(|d| d.name().to_owned())
            .collect();
        assert_eq!(at_printing, vec!["PartnerPrinter".to_string()]);
    }

    #[test]
    fn a_bad_device_name_is_refused_with_its_position() {
        let file = file_with(
            "[[devices]]\nname = \"bad name\"\nstation = \"Partners\"\nprotocol = \"simulator\"\nkind = \"cnc\"\n",
        );
        let err = GatewayConfig::load_with_env(Some(&file.0), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("devices[0].name"), "{err}");
    }

    #[test]
    fn the_influxdb_section_is_off_by_default_and_set_from_file_and_environment() {
        let config = GatewayConfig::load_with_env(None, no_env()).unwrap();
        assert!(!config.influxdb.enabled);
        let file = file_with("[influxdb]\nenabled = true\napi = \"v1\"\nbatch_size = 100\n");
        let env = vec![(
            "FABRIQUE__INFLUXDB__URL".to_string(),
            "http://127.0.0.1:8428".to_string(),
        )];
        let config = GatewayConfig::load_with_env(Some(&file.0), env).unwrap();
        assert!(config.influxdb.enabled);
        assert_eq!(config.influxdb.api, crate::streams::influxdb::Api::V1);
        assert_eq!(config.influxdb.batch_size, 100);
        assert_eq!(config.influxdb.url, "http://127.0.0.1:8428");
        let file = file_with("[influxdb]\nqueue_points = 10\n");
        let err = GatewayConfig::load_with_env(Some(&file.0), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("influxdb.queue_points"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err =
            GatewayConfig::load_with_env(Some(Path::new("/nonexistent/fabrique.toml")), no_env())
                .unwrap_err()
                .to_string();
        assert!(err.contains("/nonexistent/fabrique.toml"), "{err}");
    }
}
