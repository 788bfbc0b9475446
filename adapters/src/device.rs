//! What every device has, whatever its protocol: a name, a station, an identification.

use serde::{Deserialize, Serialize};

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
}
