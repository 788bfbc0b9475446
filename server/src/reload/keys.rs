//! Which keys a reload changes, and which part of the running gateway each one belongs to.
//!
//! The two configurations are compared as TOML trees: a table is compared key by key, anything
//! else (a value, an array such as `[[opcua.users]]`) as a whole, so every change is named by
//! its dotted key (`opcua.port`, `mqtt.broker`, `opcua.users`). A key that no reloadable part
//! takes needs a restart, and the reload is refused naming it.

use std::collections::BTreeSet;

use crate::config::GatewayConfig;
use crate::streams::sink::{SinkKind, SINKS};

/// What a reload can apply without a restart, besides the partner devices (`devices`, which
/// reload.rs compares device by device).
#[derive(Default)]
pub struct Parts {
    /// `[stop]` changed: it becomes the current stop.
    pub stop: bool,
    /// `[[opcua.users]]` changed: new logins use the new users.
    pub users: bool,
    /// Running sinks whose section changed: each is restarted with its new section.
    pub sinks: Vec<&'static SinkKind>,
    /// Keys that need a restart, dotted from the root.
    pub restart: Vec<String>,
}

/// The dotted keys whose values differ, in order; `devices` is left to the device diff.
pub fn changed_keys(old: &GatewayConfig, new: &GatewayConfig) -> Vec<String> {
    match (toml::Value::try_from(old), toml::Value::try_from(new)) {
        (Ok(a), Ok(b)) => {
            let mut keys = Vec::new();
            walk("", &a, &b, &mut keys);
            keys.retain(|k| k != "devices");
            keys
        }
        // Cannot happen for a configuration that loaded; refuse rather than guess.
        _ => vec!["the configuration".to_owned()],
    }
}

fn walk(prefix: &str, a: &toml::Value, b: &toml::Value, keys: &mut Vec<String>) {
    match (a, b) {
        (toml::Value::Table(a), toml::Value::Table(b)) => {
            let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for name in names {
                let key = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                match (a.get(name), b.get(name)) {
                    (Some(x), Some(y)) => walk(&key, x, y, keys),
                    (None, None) => {}
                    _ => keys.push(key),
                }
            }
        }
        _ if a != b => keys.push(prefix.to_owned()),
        _ => {}
    }
}

/// The sink whose configuration section is `section` (a sink's section and its buffer folder
/// share the name: `mqtt`, `influxdb`, `sparkplug`; a unit test holds them to it).
fn sink_of(section: &str) -> Option<&'static SinkKind> {
    SINKS.iter().find(|kind| kind.buffer == section)
}

/// Sort the changed keys into the parts that take them, and the ones that need a restart.
///
/// A sink's section applies to it while it runs (it is restarted); switching a sink on or off
/// (`<section>.enabled`) needs a restart, because its diagnostics tags are declared at start.
/// A section of a sink that stays off changes nothing running.
pub fn classify(old: &GatewayConfig, new: &GatewayConfig) -> Parts {
    let mut parts = Parts::default();
    for key in changed_keys(old, new) {
        let (section, rest) = key.split_once('.').unwrap_or((&key, ""));
        match (section, rest) {
            ("stop", _) => parts.stop = true,
            ("opcua", "users") => parts.users = true,
            _ => match sink_of(section) {
                Some(_) if rest == "enabled" || rest.is_empty() => parts.restart.push(key),
                Some(kind) if (kind.enabled)(old) => {
                    if !parts.sinks.iter().any(|k| k.name == kind.name) {
                        parts.sinks.push(kind);
                    }
                }
                Some(_) => {}
                None => parts.restart.push(key),
            },
        }
    }
    // In registry order, as the gateway starts them.
    parts
        .sinks
        .sort_by_key(|kind| SINKS.iter().position(|k| k.name == kind.name));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GatewayConfig {
        GatewayConfig::load_with_env(None, Vec::<(String, String)>::new()).unwrap()
    }

    #[test]
    fn every_sink_section_is_named_like_its_buffer() {
        let keys = match toml::Value::try_from(config()).unwrap() {
            toml::Value::Table(t) => t,
            _ => unreachable!(),
        };
        for kind in SINKS {
            assert!(keys.contains_key(kind.buffer), "{}", kind.buffer);
        }
    }

    #[test]
    fn keys_are_named_dotted_and_sorted_into_parts() {
        let old = {
            let mut c = config();
            c.mqtt.enabled = true;
            c
        };
        let mut new = old.clone();
        new.opcua.port += 1;
        new.stop.town = "Arras".into();
        new.mqtt.broker = "127.0.0.1:1884".into();
        new.influxdb.url = "http://127.0.0.1:9999".into(); // off: nothing to do
        new.opcua.users = Some(Vec::new());
        new.bus.capacity += 1;
        let parts = classify(&old, &new);
        assert!(parts.stop && parts.users);
        assert_eq!(
            parts.sinks.iter().map(|k| k.name).collect::<Vec<_>>(),
            ["Mqtt"]
        );
        assert_eq!(parts.restart, ["bus.capacity", "opcua.port"]);

        let mut off = old.clone();
        off.mqtt.enabled = false;
        let parts = classify(&old, &off);
        assert_eq!(parts.restart, ["mqtt.enabled"]);
        assert!(parts.sinks.is_empty());
    }
}
