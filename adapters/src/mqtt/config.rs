//! The `[[devices]]` block of an MQTT device and what serde alone cannot check about it.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::block::Block;
use crate::device::{DeviceCommon, TagCommon};

use crate::device::{check_tag_names, ConfigIssue, TagBasics};
use crate::tag::{Access, DataType};

/// Largest MQTT packet accepted from the broker: telemetry documents bigger than that are a
/// configuration mistake on the device side, not something to buffer.
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;

/// A `[[devices]]` block with `protocol = "mqtt"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttOptions {
    /// `host:port` of the broker (port 1883 when omitted).
    pub broker: String,
    /// MQTT client id; `fabrique-<device>-<pid>` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Name of the environment variable holding the password: the password itself never sits
    /// in a configuration file, nor in a log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// PEM file of the CA that signed the broker's certificate: connect with TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// QoS of the telemetry subscriptions and of the commands published (0 or 1).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// A tag not refreshed for that long turns UncertainLastUsableValue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_after_ms: Option<u64>,
    pub tags: Vec<MqttTag>,
}

/// The whole `[[devices]]` block: the keys every protocol shares, then these.
pub type MqttDevice = Block<DeviceCommon, MqttOptions>;

fn default_keep_alive_s() -> u64 {
    30
}

fn default_qos() -> u8 {
    1
}

/// One `[[devices.tags]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTagOptions {
    /// Telemetry topic the value arrives on (no wildcards).
    pub topic: String,
    /// RFC 6901 pointer into a JSON payload; without it the whole payload is the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_pointer: Option<String>,
    /// Where writes are published; required for `access = "readwrite"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_format: Option<CommandFormat>,
}

/// The whole `[[devices.tags]]` entry: the keys every protocol's tags share, then these.
pub type MqttTag = Block<TagCommon, MqttTagOptions>;

/// How a written value is encoded on the command topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandFormat {
    /// `{"value": <v>}`
    #[default]
    Json,
    /// The value as text: `21.5`, `true`, `hello`.
    Plain,
}

impl Block<TagCommon, MqttTagOptions> {
    pub fn basics(&self) -> TagBasics<'_> {
        self.common.basics(self.common.data_type)
    }

    fn validate(&self, telemetry_topics: &HashSet<&str>) -> Result<(), ConfigIssue> {
        if self.common.data_type == DataType::DateTime {
            return Err(ConfigIssue::new(
                "type",
                "type `datetime` is not supported by the mqtt adapter; use `string`",
            ));
        }
        check_topic(&self.topic).map_err(|r| ConfigIssue::new("topic", r))?;
        if let Some(pointer) = &self.json_pointer {
            check_json_pointer(pointer).map_err(|r| ConfigIssue::new("json_pointer", r))?;
        }
        if let Some(alarm) = &self.common.alarm {
            alarm.check("alarm")?;
        }
        if let Some(range) = self.common.range {
            if !(range.low.is_finite() && range.high.is_finite() && range.low <= range.high) {
                return Err(ConfigIssue::new(
                    "range",
                    format!(
                        "low ({}) must be finite and not above high ({})",
                        range.low, range.high
                    ),
                ));
            }
        }
        match (self.common.access, &self.command_topic) {
            (Access::ReadWrite, None) => Err(ConfigIssue::new(
                "command_topic",
                "is required when access = \"readwrite\": MQTT writes are published to it",
            )),
            (Access::Read, Some(_)) => Err(ConfigIssue::new(
                "command_topic",
                "is only used by writable tags: set access = \"readwrite\" or remove it",
            )),
            (Access::Read, None) if self.command_format.is_some() => Err(ConfigIssue::new(
                "command_format",
                "is only used by writable tags: set access = \"readwrite\" or remove it",
            )),
            (Access::ReadWrite, Some(topic)) => {
                check_topic(topic).map_err(|r| ConfigIssue::new("command_topic", r))?;
                if telemetry_topics.contains(topic.as_str()) {
                    // The gateway would read its own commands back as telemetry.
                    return Err(ConfigIssue::new(
                        "command_topic",
                        format!("`{topic}` is also a telemetry topic of this device; use a topic of its own"),
                    ));
                }
                Ok(())
            }
            (Access::Read, None) => Ok(()),
        }
    }
}

impl Block<DeviceCommon, MqttOptions> {
    /// Checks what serde cannot; the key is relative to the block.
    pub fn validate(&self) -> Result<(), ConfigIssue> {
        parse_broker(&self.broker).map_err(|r| ConfigIssue::new("broker", r))?;
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 128 {
                return Err(ConfigIssue::new(
                    "client_id",
                    "must be between 1 and 128 characters",
                ));
            }
        }
        if let Some(var) = &self.password_env {
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                return Err(ConfigIssue::new(
                    "password_env",
                    "must be the name of an environment variable",
                ));
            }
            if self.username.is_none() {
                return Err(ConfigIssue::new(
                    "password_env",
                    "needs a `username` to go with the password",
                ));
            }
        }
        if !(1..=65_535).contains(&self.keep_alive_s) {
            return Err(ConfigIssue::new(
                "keep_alive_s",
                format!("must be between 1 and 65535, got {}", self.keep_alive_s),
            ));
        }
        if self.qos > 1 {
            return Err(ConfigIssue::new(
                "qos",
                format!("must be 0 or 1, got {}", self.qos),
            ));
        }
        if let Some(ms) = self.stale_after_ms {
            if !(100..=86_400_000).contains(&ms) {
                return Err(ConfigIssue::new(
                    "stale_after_ms",
                    format!("must be between 100 and 86400000, got {ms}"),
                ));
            }
        }
        if self.tags.is_empty() {
            return Err(ConfigIssue::new(
                "tags",
                "declare at least one [[devices.tags]]",
            ));
        }
        check_tag_names(self.tags.iter().map(|t| t.common.name.as_str()))?;
        let telemetry: HashSet<&str> = self.tags.iter().map(|t| t.topic.as_str()).collect();
        for (i, tag) in self.tags.iter().enumerate() {
            tag.validate(&telemetry)
                .map_err(|e| e.in_tag(i, &tag.common.name))?;
        }
        Ok(())
    }

    pub fn client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("fabrique-{}-{}", self.common.name, std::process::id()))
    }
}

/// `host:port`, `host` (port 1883) or `[v6]:port`.
pub fn parse_broker(broker: &str) -> Result<(String, u16), String> {
    let broker = broker.trim();
    let (host, port) = if let Some(rest) = broker.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{broker}`: missing `]` after the IPv6 address"))?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("`{broker}`: expected `[address]:port`")),
        }
    } else {
        match broker.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (broker, None),
        }
    };
    if host.is_empty() {
        return Err(format!("`{broker}`: expected `host:port`"));
    }
    if host.contains("://") || host.contains('/') {
        return Err(format!(
            "`{broker}`: give `host:port` without a scheme or path"
        ));
    }
    crate::net::check_host(host).map_err(|r| format!("`{broker}`: {r}"))?;
    let port = match port {
        None => 1883,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("`{broker}`: `{p}` is not a port number")),
        },
    };
    Ok((host.to_owned(), port))
}

/// Topics name one place: wildcards would leave it open which tag a message is for.
/// Also checks the MQTT publisher's topic prefix.
pub fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("must not be empty".into());
    }
    if topic.len() > 65_535 {
        return Err("is longer than 65535 bytes".into());
    }
    if topic.contains(['+', '#']) {
        return Err(format!(
            "`{topic}` contains a wildcard (`+` or `#`); give the exact topic of each tag"
        ));
    }
    if topic.contains('\0') {
        return Err("must not contain NUL characters".into());
    }
    Ok(())
}

/// RFC 6901: empty (the whole document) or `/`-separated tokens where `~` escapes as `~0`/`~1`.
fn check_json_pointer(pointer: &str) -> Result<(), String> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(format!(
            "`{pointer}` must start with `/` (RFC 6901), e.g. `/temp` or `/axes/0/pos`"
        ));
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "`{pointer}`: `~` must be followed by 0 (for `~`) or 1 (for `/`)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(tags: &str) -> Result<MqttDevice, String> {
        let text =
            format!("name = \"oven\"\nstation = \"Partners\"\nbroker = \"127.0.0.1:1883\"\n{tags}");
        toml::from_str(&text).map_err(|e| e.to_string())
    }

    const TEMPERATURE: &str = "[[tags]]\nname = \"Temperature\"\ntopic = \"partner/oven/telemetry\"\njson_pointer = \"/temp\"\ntype = \"float64\"\n";

    #[test]
    fn the_documented_example_is_valid_with_its_defaults() {
        let d = device(TEMPERATURE).unwrap();
        assert_eq!(d.validate(), Ok(()));
        assert_eq!((d.keep_alive_s, d.qos, d.stale_after_ms), (30, 1, None));
        assert!(d.client_id().starts_with("fabrique-oven-"));
        assert_eq!(d.tags[0].json_pointer.as_deref(), Some("/temp"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = device("colour = \"red\"\n").unwrap_err();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn a_writable_tag_needs_a_command_topic() {
        let d = device("[[tags]]\nname = \"Setpoint\"\ntopic = \"t\"\ntype = \"float64\"\naccess = \"readwrite\"\n").unwrap();
        let issue = d.validate().unwrap_err();
        assert_eq!(issue.key, "tags[0].command_topic");
        assert!(issue.reason.contains("tag `Setpoint`"), "{}", issue.reason);
        assert!(issue.reason.contains("readwrite"), "{}", issue.reason);
    }

    #[test]
    fn command_topics_must_not_be_telemetry_topics_or_on_read_only_tags() {
        let d = device("[[tags]]\nname = \"S\"\ntopic = \"t\"\ntype = \"bool\"\naccess = \"readwrite\"\ncommand_topic = \"t\"\n").unwrap();
        assert_eq!(d.validate().unwrap_err().key, "tags[0].command_topic");
        let d = device(
            "[[tags]]\nname = \"S\"\ntopic = \"t\"\ntype = \"bool\"\ncommand_topic = \"c\"\n",
        )
        .unwrap();
        assert!(d.validate().unwrap_err().reason.contains("readwrite"));
    }

    #[test]
    fn wildcards_and_malformed_pointers_are_refused() {
        let d =
            device("[[tags]]\nname = \"A\"\ntopic = \"partner/+/telemetry\"\ntype = \"int16\"\n")
                .unwrap();
        let issue = d.validate().unwrap_err();
        assert_eq!(issue.key, "tags[0].topic");
        assert!(issue.reason.contains("wildcard"));
        let d = device(
            "[[tags]]\nname = \"A\"\ntopic = \"t\"\njson_pointer = \"temp\"\ntype = \"int16\"\n",
        )
        .unwrap();
        assert_eq!(d.validate().unwrap_err().key, "tags[0].json_pointer");
        assert!(check_json_pointer("/a~1b/~0c/0").is_ok());
        assert!(check_json_pointer("/a~2").is_err());
    }

    #[test]
    fn device_options_are_range_checked() {
        let mut d = device(TEMPERATURE).unwrap();
        d.qos = 2;
        assert_eq!(d.validate().unwrap_err().key, "qos");
        d.qos = 0;
        d.keep_alive_s = 0;
        assert_eq!(d.validate().unwrap_err().key, "keep_alive_s");
        d.keep_alive_s = 10;
        d.password_env = Some("OVEN_PASSWORD".into());
        assert_eq!(d.validate().unwrap_err().key, "password_env");
        d.username = Some("oven".into());
        assert_eq!(d.validate(), Ok(()));
        d.tags.clear();
        assert_eq!(d.validate().unwrap_err().key, "tags");
    }

    #[test]
    fn broker_addresses() {
        assert_eq!(
            parse_broker("127.0.0.1:1883"),
            Ok(("127.0.0.1".into(), 1883))
        );
        assert_eq!(parse_broker("localhost"), Ok(("localhost".into(), 1883)));
        assert_eq!(parse_broker("[::1]:8883"), Ok(("::1".into(), 8883)));
        assert!(parse_broker("mqtt://host:1883").is_err());
        assert!(parse_broker("host:99999").is_err());
        assert!(parse_broker(":1883").is_err());
    }
}
