//! What every device has, whatever its protocol: a name, a station, an identification.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::tag::{Access, DataType, EuRange, TagSpec};

/// Nameplate data shown under the device in the address space, and as the machine's
/// `Identification` (Machinery's `MachineIdentificationType`) under `Objects/Machines`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Identification {
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
    /// The manufacturer's order code of the model.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub product_code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub year_of_construction: Option<u16>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub software_revision: String,
    /// Globally unique URI of this very machine; unset: built from manufacturer, model and
    /// serial (see [`Identification::product_instance_uri`]).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub product_instance_uri: String,
}

impl Identification {
    /// The configured URI, or `urn:fabrique:machine:<manufacturer>:<model>:<serial>` (each part
    /// with anything but letters, digits, `-`, `.` and `_` replaced by `-`).
    pub fn product_instance_uri(&self) -> String {
        if !self.product_instance_uri.is_empty() {
            return self.product_instance_uri.clone();
        }
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-._".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .collect()
        };
        format!(
            "urn:fabrique:machine:{}:{}:{}",
            clean(&self.manufacturer),
            clean(&self.model),
            clean(&self.serial)
        )
    }
}

/// Where a device appears in the companion specifications' structure (`kind = "..."` in a
/// `[[devices]]` block): see the README, "Companion specifications".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StandardKind {
    /// Machinery: a machine under `Objects/Machines` (Fabrique `MachineType`).
    Machine,
    /// Machine Tools: a `MachineToolType` under `Objects/Machines`.
    MachineTool,
    /// Robotics: a `MotionDeviceSystemType` in DI's `DeviceSet` and under `Objects/Machines`.
    Robot,
    /// DI: a device (Fabrique `FieldDeviceType`, a DI `DeviceType`) in `DeviceSet`.
    Device,
}

/// The keys of a `[[devices.tags]]` entry that every partner protocol shares; the protocol's
/// own (a register, a topic, a NodeId) come after them in the same table
/// ([`crate::block::Block`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagCommon {
    pub name: String,
    /// The type clients see (for Modbus: the type stored on the device).
    #[serde(rename = "type")]
    pub data_type: crate::tag::DataType,
    #[serde(default)]
    pub access: crate::tag::Access,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<crate::tag::EuRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Limits of the tag's limit alarm (`alarm = { high = 230.0, ... }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<crate::limits::AlarmLimits>,
}

impl TagCommon {
    /// What every adapter needs to register the tag, with the type clients see.
    pub fn basics(&self, data_type: crate::tag::DataType) -> TagBasics<'_> {
        TagBasics {
            name: &self.name,
            data_type,
            access: self.access,
            unit: self.unit.as_deref(),
            range: self.range,
            description: self.description.as_deref(),
            alarm: self.alarm.as_ref(),
        }
    }
}

/// The keys of a `[[devices]]` block that every partner protocol shares; the protocol's own
/// come after them in the same table ([`crate::block::Block`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceCommon {
    pub name: String,
    pub station: String,
    #[serde(default)]
    pub identification: Identification,
    /// Where the device appears in the companion specifications (`machine`, `machine_tool`,
    /// `robot`, `device`); unset: only under `Objects/Fabrique`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<StandardKind>,
    /// A robot's joint position tags, in axis order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub axes: Vec<String>,
    /// Production steps (1-9) this machine performs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<u16>,
    /// Taken out of service by the operator (maintenance, a breakdown): its Machinery
    /// `MachineryItemState` is OutOfService whatever the connection says.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub out_of_service: bool,
}

impl DeviceCommon {
    /// Where the device appears in the companion specifications, as declared.
    pub fn standard(&self) -> StandardShape {
        StandardShape {
            kind: self.kind,
            axes: self.axes.clone(),
            steps: self.steps.clone(),
            out_of_service: self.out_of_service,
        }
    }
}

/// How a device takes its place in the standard structure.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StandardShape {
    /// `None`: the device appears only under `Objects/Fabrique`.
    pub kind: Option<StandardKind>,
    /// A robot's axes, in order: names of its tags holding each joint position.
    pub axes: Vec<String>,
    /// Production steps (1-9) the machine performs: its `MachineryItemState` is Executing
    /// while an order is at one of them.
    pub steps: Vec<u16>,
    /// Taken out of service by configuration: `MachineryItemState` is OutOfService.
    pub out_of_service: bool,
}

impl StandardShape {
    /// Checks a partner's `kind`, `axes` and `steps` against its tag names.
    pub fn validate<'a>(
        &self,
        tag_names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ConfigIssue> {
        let names: HashSet<&str> = tag_names.into_iter().collect();
        if !self.axes.is_empty() && self.kind != Some(StandardKind::Robot) {
            return Err(ConfigIssue::new(
                "axes",
                "only a device with kind = \"robot\" has axes",
            ));
        }
        if self.kind == Some(StandardKind::Robot) && self.axes.is_empty() {
            return Err(ConfigIssue::new(
                "axes",
                "a robot needs the names of its joint position tags, e.g. axes = [\"J1\", \"J2\"]",
            ));
        }
        for (i, axis) in self.axes.iter().enumerate() {
            if !names.contains(axis.as_str()) {
                return Err(ConfigIssue::new(
                    format!("axes[{i}]"),
                    format!("`{axis}` is not a tag of this device"),
                ));
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            if !(1..=9).contains(step) {
                return Err(ConfigIssue::new(
                    format!("steps[{i}]"),
                    format!("{step} is not a production step (1 to 9)"),
                ));
            }
        }
        if !self.steps.is_empty() && self.kind.is_none() {
            return Err(ConfigIssue::new(
                "steps",
                "only a machine (a device with `kind`) performs steps",
            ));
        }
        Ok(())
    }
}

/// Device and station names become browse names and topic segments: keep them plain.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 64 {
        return Err(format!("`{name}` is longer than 64 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "`{name}` contains `{c}`; use letters, digits, `-` and `_`"
        ));
    }
    Ok(())
}

/// A problem in one device block: `key` is relative to the block (`tags[0].register`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: String,
    pub reason: String,
}

impl ConfigIssue {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigIssue {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The same issue about tag `index` named `name`: `tags[3].register`, "tag `Pressure`: …".
    pub fn in_tag(self, index: usize, name: &str) -> Self {
        ConfigIssue {
            key: format!("tags[{index}].{}", self.key),
            reason: format!("tag `{name}`: {}", self.reason),
        }
    }
}

/// The fields every configured tag has, whatever its protocol.
#[derive(Debug, Clone, Copy)]
pub struct TagBasics<'a> {
    pub name: &'a str,
    pub data_type: DataType,
    pub access: Access,
    pub unit: Option<&'a str>,
    pub range: Option<EuRange>,
    pub description: Option<&'a str>,
    /// `alarm = { high = ..., ... }`: limits of the tag's limit alarm.
    pub alarm: Option<&'a crate::limits::AlarmLimits>,
}

impl TagBasics<'_> {
    pub fn spec(&self, device_path: &str) -> TagSpec {
        TagSpec {
            path: format!("{device_path}/{}", self.name),
            data_type: self.data_type,
            access: self.access,
            unit: self.unit.map(str::to_owned),
            range: self.range,
            description: self.description.map(str::to_owned),
            property: false,
            alarm: self.alarm.cloned().map(Box::new),
        }
    }
}

/// Tag names become browse names: plain, unique within the device, and not a reserved child.
pub fn check_tag_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), ConfigIssue> {
    const RESERVED: [&str; 5] = [
        "Status",
        "Manufacturer",
        "Model",
        "SerialNumber",
        "Protocol",
    ];
    let mut seen = HashSet::new();
    for (i, name) in names.into_iter().enumerate() {
        let key = format!("tags[{i}].name");
        check_name(name).map_err(|r| ConfigIssue::new(&key, r))?;
        if RESERVED.contains(&name) {
            return Err(ConfigIssue::new(
                key,
                format!("`{name}` is reserved for the device's own nodes"),
            ));
        }
        if !seen.insert(name) {
            return Err(ConfigIssue::new(
                key,
                format!("tag `{name}` is declared twice"),
            ));
        }
    }
    Ok(())
}

/// Browse path of a device below the site object.
pub fn device_path(station: &str, device: &str) -> String {
    format!("Stations/{station}/{device}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_letters_digits_dash_and_underscore() {
        assert!(check_name("Printer3D_1-a").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").unwrap_err().contains("` `"));
        assert!(check_name("a/b").is_err());
    }

    #[test]
    fn a_standard_shape_names_the_key_it_gets_wrong() {
        let robot = |axes: &[&str]| StandardShape {
            kind: Some(StandardKind::Robot),
            axes: axes.iter().map(|a| a.to_string()).collect(),
            steps: vec![7],
            out_of_service: false,
        };
        let tags = ["J1", "J2"];
        assert!(robot(&["J1", "J2"]).validate(tags).is_ok());
        let unknown = robot(&["J1", "J9"]).validate(tags).unwrap_err();
        assert_eq!(unknown.key, "axes[1]");
        assert!(unknown.reason.contains("`J9`"));
        assert_eq!(robot(&[]).validate(tags).unwrap_err().key, "axes");
        let machine = StandardShape {
            kind: Some(StandardKind::Machine),
            axes: vec!["J1".into()],
            steps: vec![],
            out_of_service: false,
        };
        assert_eq!(machine.validate(tags).unwrap_err().key, "axes");
        let step = StandardShape {
            kind: Some(StandardKind::Machine),
            axes: vec![],
            steps: vec![5, 10],
            out_of_service: false,
        };
        assert_eq!(step.validate(tags).unwrap_err().key, "steps[1]");
        let kindless = StandardShape {
            kind: None,
            axes: vec![],
            steps: vec![5],
            out_of_service: false,
        };
        assert_eq!(kindless.validate(tags).unwrap_err().key, "steps");
    }

    #[test]
    fn the_product_instance_uri_defaults_to_the_nameplate() {
        let id = Identification {
            manufacturer: "ACME Presses".into(),
            model: "HP/200".into(),
            serial: "42".into(),
            ..Identification::default()
        };
        assert_eq!(
            id.product_instance_uri(),
            "urn:fabrique:machine:ACME-Presses:HP-200:42"
        );
    }

    #[test]
    fn tag_names_must_be_unique_and_not_reserved() {
        assert!(check_tag_names(["A", "B"]).is_ok());
        let dup = check_tag_names(["A", "A"]).unwrap_err();
        assert_eq!(dup.key, "tags[1].name");
        assert!(check_tag_names(["Status"])
            .unwrap_err()
            .reason
            .contains("reserved"));
    }
}
