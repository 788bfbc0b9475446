//! What every device has, whatever its protocol: a name, a station, an identification.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::tag::{Access, DataType, EuRange, TagSpec};

/// Nameplate data shown under the device in the address space.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Identification {
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
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
