//! The one place that knows every protocol: a `[[devices]]` block in, adapters out.
//!
//! Adding a protocol means one module and one variant here.

use serde::{Deserialize, Serialize};

use crate::adapter::Adapter;
use crate::device::{ConfigIssue, DeviceCommon, Identification, StandardShape};
use crate::modbus::{ModbusAdapter, ModbusDevice};
use crate::mqtt::{MqttAdapter, MqttDevice};
use crate::octoprint::{OctoPrintAdapter, OctoPrintDevice};
use crate::opcua_client::{OpcUaClient, OpcUaDevice};
use crate::simulator::{
    line::LineConfig, SimulatedDevice, SimulationConfig, SyntheticLoad, TruckSimulator,
};

/// One `[[devices]]` block; `protocol` selects the adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "lowercase")]
pub enum DeviceConfig {
    Simulator(SimulatedDevice),
    Modbus(ModbusDevice),
    Mqtt(MqttDevice),
    OctoPrint(OctoPrintDevice),
    /// A partner's OPC UA server, mirrored through a client session.
    Opcua(OpcUaDevice),
}

impl DeviceConfig {
    /// The keys every partner protocol shares; `None` for a simulated machine.
    pub fn common(&self) -> Option<&DeviceCommon> {
        match self {
            DeviceConfig::Simulator(_) => None,
            DeviceConfig::Modbus(d) => Some(&d.common),
            DeviceConfig::Mqtt(d) => Some(&d.common),
            DeviceConfig::OctoPrint(d) => Some(&d.common),
            DeviceConfig::Opcua(d) => Some(&d.common),
        }
    }

    pub fn name(&self) -> &str {
        match (self, self.common()) {
            (_, Some(c)) => &c.name,
            (DeviceConfig::Simulator(d), None) => &d.name,
            _ => unreachable!("only a simulated machine has no common keys"),
        }
    }

    pub fn station(&self) -> &str {
        match (self, self.common()) {
            (_, Some(c)) => &c.station,
            (DeviceConfig::Simulator(d), None) => &d.station,
            _ => unreachable!("only a simulated machine has no common keys"),
        }
    }

    pub fn protocol(&self) -> &'static str {
        match self {
            DeviceConfig::Simulator(_) => "simulator",
            DeviceConfig::Modbus(_) => "modbus",
            DeviceConfig::Mqtt(_) => "mqtt",
            DeviceConfig::OctoPrint(_) => "octoprint",
            DeviceConfig::Opcua(_) => "opcua",
        }
    }

    pub fn identification(&self) -> &Identification {
        match (self, self.common()) {
            (_, Some(c)) => &c.identification,
            (DeviceConfig::Simulator(d), None) => &d.identification,
            _ => unreachable!("only a simulated machine has no common keys"),
        }
    }

    /// Where the device appears in the companion specifications: declared by a partner
    /// (`kind`, `axes`, `steps`), implied by the machine for a simulated one.
    pub fn standard(&self) -> StandardShape {
        match (self, self.common()) {
            (_, Some(c)) => c.standard(),
            (DeviceConfig::Simulator(d), None) => StandardShape {
                out_of_service: d.out_of_service,
                ..d.kind.standard()
            },
            _ => unreachable!("only a simulated machine has no common keys"),
        }
    }

    /// Names of the tags a partner declares (none for OctoPrint, whose tags are fixed).
    fn tag_names(&self) -> Vec<&str> {
        match self {
            DeviceConfig::Simulator(_) | DeviceConfig::OctoPrint(_) => Vec::new(),
            DeviceConfig::Modbus(d) => d.tags.iter().map(|t| t.common.name.as_str()).collect(),
            DeviceConfig::Mqtt(d) => d.tags.iter().map(|t| t.common.name.as_str()).collect(),
            DeviceConfig::Opcua(d) => d.tags.iter().map(|t| t.common.name.as_str()).collect(),
        }
    }

    /// Checks what serde cannot (addresses, ranges, tag names); the key is relative to the block.
    pub fn validate(&self) -> Result<(), ConfigIssue> {
        if !matches!(self, DeviceConfig::Simulator(_)) {
            self.standard().validate(self.tag_names())?;
        }
        match self {
            DeviceConfig::Simulator(_) => Ok(()),
            DeviceConfig::Modbus(d) => d.compile().map(|_| ()),
            DeviceConfig::Mqtt(d) => d.validate(),
            DeviceConfig::OctoPrint(d) => d.validate(),
            DeviceConfig::Opcua(d) => d.validate(),
        }
    }
}

/// Build the adapters for a configuration: the simulated truck (line and simulated machines,
/// on one clock), the synthetic load if asked for, then one adapter per real device.
pub fn build_adapters(
    simulation: &SimulationConfig,
    line: &LineConfig,
    devices: &[DeviceConfig],
) -> Vec<Box<dyn Adapter>> {
    let simulated = devices
        .iter()
        .filter_map(|d| match d {
            DeviceConfig::Simulator(sim) => Some(sim.clone()),
            _ => None,
        })
        .collect();
    let mut adapters: Vec<Box<dyn Adapter>> = vec![Box::new(TruckSimulator::new(
        simulation.clone(),
        line.clone(),
        simulated,
    ))];
    if simulation.synthetic.tags > 0 || simulation.synthetic.alarm_tags > 0 {
        adapters.push(Box::new(SyntheticLoad::new(simulation.synthetic.clone())));
    }
    adapters.extend(devices.iter().filter_map(build_device_adapter));
    adapters
}

/// The adapter of one partner device (`None` for a simulated machine: the simulator runs
/// those). Used at start and when a reload adds or changes a device.
pub fn build_device_adapter(device: &DeviceConfig) -> Option<Box<dyn Adapter>> {
    match device {
        DeviceConfig::Simulator(_) => None,
        // The configuration was validated with the same check, so this cannot fail.
        DeviceConfig::Modbus(config) => match ModbusAdapter::new(config.clone()) {
            Ok(adapter) => Some(Box::new(adapter)),
            Err(issue) => {
                tracing::error!(device = %config.common.name, key = %issue.key, reason = %issue.reason, "device skipped");
                None
            }
        },
        DeviceConfig::Mqtt(config) => Some(Box::new(MqttAdapter::new(config.clone()))),
        DeviceConfig::OctoPrint(d) => Some(Box::new(OctoPrintAdapter::new(d.clone()))),
        DeviceConfig::Opcua(d) => Some(Box::new(OpcUaClient::new(d.clone()))),
    }
}
