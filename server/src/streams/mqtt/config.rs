//! `[mqtt]`: the MQTT publisher, every tag change to a broker.

use std::path::PathBuf;

use fabrique_adapters::mqtt::config::{check_topic, parse_broker};
use fabrique_adapters::mqtt::Endpoint;
use serde::{Deserialize, Serialize};

/// What the publisher's messages look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PayloadFormat {
    /// One topic per tag, `{"value", "quality", "status", "ts"}`.
    #[default]
    #[serde(rename = "fabrique")]
    Fabrique,
    /// OPC UA Part 14 PubSub JSON: network and dataset messages (part14.rs).
    #[serde(rename = "ua-json")]
    UaJson,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSinkConfig {
    pub enabled: bool,
    /// `fabrique` (one topic per tag) or `ua-json` (OPC UA Part 14 PubSub JSON).
    pub payload: PayloadFormat,
    /// `ua-json`: the WriterGroupName, a topic level.
    pub ua_writer_group: String,
    /// `ua-json`: a DataSetWriter with nothing to say for that long sends a keep-alive.
    pub ua_keep_alive_ms: u64,
    /// Add the current stop to every message: `"stop": "<town>"` in the own JSON, a `Stop`
    /// field of every dataset message in Part 14.
    pub stop_in_payload: bool,
    /// `host:port` of the broker (port 1883 when omitted).
    pub broker: String,
    /// First topic level: topics are `<prefix>/<site>/<station>/<device>/<tag>`.
    pub prefix: String,
    /// MQTT client id; `fabrique-gateway-<site.id>` when omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// QoS of the value messages, 0 or 1 (the status topic always uses 1).
    pub qos: u8,
    /// Retain the value messages, so that a dashboard connecting late sees every tag at once.
    pub retain_values: bool,
    pub keep_alive_s: u64,
    /// Per tag: at most one message per interval, the latest value once it elapses (0: every
    /// change).
    pub min_interval_ms: u64,
    /// Numeric tags: a change smaller than this (absolute) since the last published value is
    /// not published (0: every change). Quality changes are always published.
    pub deadband: f64,
    /// Messages kept in memory; when full the oldest go to the disk buffer, or are dropped and
    /// counted without one (or once it is full).
    pub queue_messages: usize,
    /// On-disk buffer behind the queue, in MiB (`<data_dir>/buffer/mqtt/`); 0: memory only.
    pub disk_buffer_mb: u64,
    /// PEM file of the CA that signed the broker's certificate: connect with TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Name of the environment variable holding the password (never in a file, never logged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

impl Default for MqttSinkConfig {
    fn default() -> Self {
        MqttSinkConfig {
            enabled: false,
            payload: PayloadFormat::Fabrique,
            ua_writer_group: "fabrique".into(),
            ua_keep_alive_ms: 10_000,
            stop_in_payload: false,
            broker: "127.0.0.1:1883".into(),
            prefix: "fabrique".into(),
            client_id: None,
            qos: 1,
            retain_values: false,
            keep_alive_s: 30,
            min_interval_ms: 0,
            deadband: 0.0,
            queue_messages: 100_000,
            disk_buffer_mb: 1024,
            ca_file: None,
            username: None,
            password_env: None,
        }
    }
}

impl MqttSinkConfig {
    /// How the publisher (and the inbound subscriber, with `-in` after the client id) reach
    /// the broker, through the shared MQTT connection layer.
    pub fn endpoint(&self, client_id: String) -> Endpoint<'_> {
        Endpoint {
            section: "mqtt",
            broker: &self.broker,
            client_id,
            keep_alive_s: self.keep_alive_s,
            username: self.username.as_deref(),
            password_env: self.password_env.as_deref(),
            ca_file: self.ca_file.as_deref(),
        }
    }

    pub fn client_id(&self, site: &str) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("fabrique-gateway-{site}"))
    }

    /// Checks what serde cannot; keys are dotted from the root.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        parse_broker(&self.broker).map_err(|r| ("mqtt.broker", r))?;
        check_topic(&self.prefix).map_err(|r| ("mqtt.prefix", r))?;
        if self.prefix.starts_with('/') || self.prefix.ends_with('/') {
            return Err((
                "mqtt.prefix",
                format!("`{}` must not start or end with `/`", self.prefix),
            ));
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 128 {
                return Err((
                    "mqtt.client_id",
                    "must be between 1 and 128 characters".into(),
                ));
            }
        }
        if self.ua_writer_group.is_empty() || self.ua_writer_group.contains(['/', '+', '#']) {
            return Err((
                "mqtt.ua_writer_group",
                format!(
                    "`{}` must be a non-empty name without `/`, `+` or `#`",
                    self.ua_writer_group
                ),
            ));
        }
        if !(100..=3_600_000).contains(&self.ua_keep_alive_ms) {
            return Err((
                "mqtt.ua_keep_alive_ms",
                format!(
                    "must be between 100 and 3600000, got {}",
                    self.ua_keep_alive_ms
                ),
            ));
        }
        if self.qos > 1 {
            return Err(("mqtt.qos", format!("must be 0 or 1, got {}", self.qos)));
        }
        if !(1..=65_535).contains(&self.keep_alive_s) {
            return Err((
                "mqtt.keep_alive_s",
                format!("must be between 1 and 65535, got {}", self.keep_alive_s),
            ));
        }
        if self.min_interval_ms > 86_400_000 {
            return Err((
                "mqtt.min_interval_ms",
                format!("must be at most 86400000, got {}", self.min_interval_ms),
            ));
        }
        if !(self.deadband.is_finite() && self.deadband >= 0.0) {
            return Err((
                "mqtt.deadband",
                format!("must be a finite number >= 0, got {}", self.deadband),
            ));
        }
        crate::streams::sink::check_buffers(
            ("mqtt.queue_messages", self.queue_messages),
            ("mqtt.disk_buffer_mb", self.disk_buffer_mb),
        )?;
        if let Some(var) = &self.password_env {
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                return Err((
                    "mqtt.password_env",
                    "must be the name of an environment variable".into(),
                ));
            }
            if self.username.is_none() {
                return Err((
                    "mqtt.password_env",
                    "needs a `username` to go with the password".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_checks_name_the_key() {
        let ok = MqttSinkConfig::default();
        assert!(ok.validate().is_ok());
        assert_eq!(ok.client_id("truck"), "fabrique-gateway-truck");
        let bad = |f: fn(&mut MqttSinkConfig)| {
            let mut c = MqttSinkConfig::default();
            f(&mut c);
            c.validate().unwrap_err().0
        };
        assert_eq!(bad(|c| c.qos = 2), "mqtt.qos");
        assert_eq!(bad(|c| c.prefix = "a/#".into()), "mqtt.prefix");
        assert_eq!(bad(|c| c.prefix = "a/".into()), "mqtt.prefix");
        assert_eq!(bad(|c| c.deadband = -1.0), "mqtt.deadband");
        assert_eq!(bad(|c| c.queue_messages = 0), "mqtt.queue_messages");
        assert_eq!(bad(|c| c.disk_buffer_mb = u64::MAX), "mqtt.disk_buffer_mb");
        assert_eq!(bad(|c| c.broker = "mqtt://x".into()), "mqtt.broker");
        assert_eq!(
            bad(|c| c.password_env = Some("P".into())),
            "mqtt.password_env"
        );
    }
}
