//! The alarm limits of simulated machines, applied by a reload (SIGHUP,
//! `POST /api/admin/reload`) without a restart.
//!
//! A partner device whose limits change is restarted with its new tags (reload.rs); the
//! simulated machines all run in the one simulator, which a reload does not restart. Their
//! limits (`alarms = { Tag = { ... } }` of `[[simulation.devices]]` or of a `[[devices]]` block
//! with `protocol = "simulator"`, else the built-in ones) are only read by the limit watch
//! (`limit.rs`), from the tags' specs in the bus catalogue: a reload gives the bus a copy of its
//! catalogue with the new limits (same ids), and the watch applies them to the values the tags
//! hold at once. Bad limits never get here: the configuration's validation refuses them,
//! naming the key and the file.

use std::collections::BTreeMap;

use fabrique_adapters::adapter::TagRegistrar;
use fabrique_adapters::device::device_path;
use fabrique_adapters::registry::DeviceConfig;
use fabrique_adapters::simulator::{machines, SimulatedDevice};
use fabrique_adapters::tag::{AdapterId, CatalogError, TagCatalog, TagCatalogBuilder};

use super::AlarmLimits;
use crate::config::GatewayConfig;

/// The simulated machines that run, with their device path.
fn simulated(config: &GatewayConfig) -> Vec<(String, SimulatedDevice)> {
    config
        .effective_devices()
        .into_iter()
        .filter_map(|d| match d {
            DeviceConfig::Simulator(s) => Some((device_path(&s.station, &s.name), s)),
            _ => None,
        })
        .collect()
}

/// `config` without the alarm limits of its simulated machines: what else a reload compares
/// (anything else of a simulated machine still needs a restart).
pub fn without_simulated_alarms(config: &GatewayConfig) -> GatewayConfig {
    let mut config = config.clone();
    for device in &mut config.simulation.devices {
        device.alarms.clear();
    }
    for device in &mut config.devices {
        if let DeviceConfig::Simulator(s) = device {
            s.alarms.clear();
        }
    }
    config
}

/// Whether the configured limits of the running simulated machines differ.
pub fn simulated_alarms_changed(old: &GatewayConfig, new: &GatewayConfig) -> bool {
    let limits = |c: &GatewayConfig| -> Vec<(String, BTreeMap<String, AlarmLimits>)> {
        simulated(c)
            .into_iter()
            .map(|(path, device)| (path, device.alarms))
            .collect()
    };
    limits(old) != limits(new)
}

/// The limits of every tag of the simulated machines of `config`, by tag path: configured,
/// else built in, `None` for a tag without. The machines declare their tags into a scratch
/// catalogue, exactly as the simulator did at start, so the built-in limits come from one place.
pub fn simulated_limits(
    config: &GatewayConfig,
) -> Result<Vec<(String, Option<AlarmLimits>)>, CatalogError> {
    let mut out = Vec::new();
    for (path, device) in simulated(config) {
        let mut scratch = TagCatalogBuilder::new();
        let mut registrar = TagRegistrar::new(&mut scratch, AdapterId(0));
        machines::build(device.kind, &path, &mut registrar, &device.alarms)?;
        for &tag in scratch.registered() {
            if let Some(spec) = scratch.spec(tag) {
                out.push((spec.path.clone(), spec.alarm.as_deref().cloned()));
            }
        }
    }
    Ok(out)
}

/// `catalog` with `limits` (tags it does not have are skipped), and the paths of the tags
/// whose limits changed; `None` when none did.
pub fn with_limits(
    catalog: &TagCatalog,
    limits: &[(String, Option<AlarmLimits>)],
) -> Option<(TagCatalog, Vec<String>)> {
    let mut builder = TagCatalogBuilder::from_catalog(catalog);
    let mut changed = Vec::new();
    for (path, alarm) in limits {
        if let Some(tag) = catalog.lookup(path) {
            if builder.set_alarm(tag, alarm.clone()) {
                changed.push(path.clone());
            }
        }
    }
    (!changed.is_empty()).then(|| (builder.build(), changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOZZLE: &str = "Stations/Printing/Printer3D/NozzleTemperature";

    fn config(text: &str) -> GatewayConfig {
        let path = std::env::temp_dir().join(format!(
            "fg-alarm-reload-{}-{}.toml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).unwrap();
        let config = GatewayConfig::load_with_env(Some(&path), std::iter::empty()).unwrap();
        let _ = std::fs::remove_file(&path);
        config
    }

    #[test]
    fn new_limits_of_a_simulated_machine_change_the_catalogue_and_nothing_else() {
        let old = config("# the defaults: the truck\n");
        let truck = simulated_limits(&old).unwrap();
        let built_in = truck.iter().find(|(p, _)| p == NOZZLE).unwrap();
        assert_eq!(built_in.1.as_ref().unwrap().high, Some(230.0));
        // The truck's own catalogue, as the simulator declared it.
        let mut builder = TagCatalogBuilder::new();
        for (path, alarm) in &truck {
            let spec = fabrique_adapters::tag::TagSpec::new(
                path.clone(),
                fabrique_adapters::DataType::Float64,
            );
            let spec = match alarm {
                Some(a) => spec.alarm(a.clone()),
                None => spec,
            };
            builder.register(AdapterId(0), spec).unwrap();
        }
        let catalog = builder.build();
        assert!(with_limits(&catalog, &truck).is_none());

        let mut new = old.clone();
        let printer = new
            .simulation
            .devices
            .iter_mut()
            .find(|d| d.name == "Printer3D")
            .unwrap();
        printer
            .alarms
            .insert("NozzleTemperature".into(), AlarmLimits::high(225.0, 235.0));
        assert!(simulated_alarms_changed(&old, &new));
        assert_eq!(
            without_simulated_alarms(&old),
            without_simulated_alarms(&new)
        );
        let (changed, paths) = with_limits(&catalog, &simulated_limits(&new).unwrap()).unwrap();
        assert_eq!(paths, [NOZZLE]);
        let tag = changed.lookup(NOZZLE).unwrap();
        assert_eq!(catalog.lookup(NOZZLE), Some(tag));
        let limits = changed.get(tag).unwrap().spec.alarm.clone().unwrap();
        assert_eq!((limits.high, limits.high_high), (Some(225.0), Some(235.0)));
    }

    #[test]
    fn a_simulated_device_block_counts_too() {
        let text = r#"
[[devices]]
name = "Printer3D"
station = "Printing"
protocol = "simulator"
kind = "printer3d"
"#;
        let old = config(text);
        let new = config(&format!(
            "{text}alarms = {{ BedTemperature = {{ high = 65.0 }} }}\n"
        ));
        assert!(simulated_alarms_changed(&old, &new));
        assert_eq!(
            without_simulated_alarms(&old),
            without_simulated_alarms(&new)
        );
    }
}
