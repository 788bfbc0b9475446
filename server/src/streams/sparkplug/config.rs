//! `[sparkplug]`: the truck as a Sparkplug B Edge Node.

use std::path::PathBuf;

use fabrique_adapters::mqtt::config::parse_broker;
use fabrique_adapters::mqtt::Endpoint;
use serde::{Deserialize, Serialize};

use crate::opcua::security::Role;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SparkplugConfig {
    pub enabled: bool,
    /// `host:port` of the broker (port 1883 when omitted), as in `[mqtt]`.
    pub broker: String,
    /// Sparkplug Group id: first level below `spBv1.0`.
    pub group_id: String,
    /// Edge Node id; the site id (`site.id`) when omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge_node_id: Option<String>,
    /// The Primary Host Application's id: births wait until its `spBv1.0/STATE/<id>` says
    /// online, and the node goes quiet (data buffered) while it says offline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_host_id: Option<String>,
    /// The role NCMD/DCMD writes have, as an OPC UA user of that role: `viewer` refuses every
    /// write, `operator` and `admin` write to writable tags. `Node Control/Rebirth` is always
    /// obeyed (it changes nothing on the truck).
    pub command_role: Role,
    /// Every data metric (and birth metric) carries the property `stop` (String): the stop
    /// the truck was at when the value changed, as `[mqtt] stop_in_payload` does.
    pub stop_in_payload: bool,
    /// MQTT client id; `fabrique-sparkplug-<edge_node_id>` when omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub keep_alive_s: u64,
    /// Data messages kept in memory while the broker (or the primary host) is away, when
    /// there is no disk buffer; when full the oldest are dropped and counted.
    pub queue_messages: usize,
    /// On-disk buffer for what happens while offline, in MiB (`<data_dir>/buffer/sparkplug/`);
    /// sent after the next birth with `is_historical` set. 0: memory only.
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

impl Default for SparkplugConfig {
    fn default() -> Self {
        SparkplugConfig {
            enabled: false,
            broker: "127.0.0.1:1883".into(),
            group_id: "fabrique".into(),
            edge_node_id: None,
            primary_host_id: None,
            command_role: Role::Viewer,
            stop_in_payload: false,
            client_id: None,
            keep_alive_s: 30,
            queue_messages: 10_000,
            disk_buffer_mb: 1024,
            ca_file: None,
            username: None,
            password_env: None,
        }
    }
}

/// Sparkplug ids are topic levels: no `/`, `+`, `#`, not empty.
fn check_id(key: &'static str, id: &str) -> Result<(), (&'static str, String)> {
    if id.is_empty() || id.contains(['/', '+', '#']) {
        return Err((
            key,
            format!("`{id}` must be a non-empty name without `/`, `+` or `#`"),
        ));
    }
    Ok(())
}

impl SparkplugConfig {
    pub fn edge_node_id<'a>(&'a self, site: &'a str) -> &'a str {
        self.edge_node_id.as_deref().unwrap_or(site)
    }

    pub fn endpoint<'a>(&'a self, site: &'a str) -> Endpoint<'a> {
        Endpoint {
            section: "sparkplug",
            broker: &self.broker,
            client_id: self
                .client_id
                .clone()
                .unwrap_or_else(|| format!("fabrique-sparkplug-{}", self.edge_node_id(site))),
            keep_alive_s: self.keep_alive_s,
            username: self.username.as_deref(),
            password_env: self.password_env.as_deref(),
            ca_file: self.ca_file.as_deref(),
        }
    }

    /// Checks what serde cannot; keys are dotted from the root.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        parse_broker(&self.broker).map_err(|r| ("sparkplug.broker", r))?;
        check_id("sparkplug.group_id", &self.group_id)?;
        if let Some(id) = &self.edge_node_id {
            check_id("sparkplug.edge_node_id", id)?;
        }
        if let Some(id) = &self.primary_host_id {
            check_id("sparkplug.primary_host_id", id)?;
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 128 {
                return Err((
                    "sparkplug.client_id",
                    "must be between 1 and 128 characters".into(),
                ));
            }
        }
        if !(1..=65_535).contains(&self.keep_alive_s) {
            return Err((
                "sparkplug.keep_alive_s",
                format!("must be between 1 and 65535, got {}", self.keep_alive_s),
            ));
        }
        crate::streams::sink::check_buffers(
            ("sparkplug.queue_messages", self.queue_messages),
            ("sparkplug.disk_buffer_mb", self.disk_buffer_mb),
        )?;
        if self.password_env.is_some() && self.username.is_none() {
            return Err((
                "sparkplug.password_env",
                "needs a `username` to go with the password".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_checks_name_the_key() {
        let ok = SparkplugConfig::default();
        assert!(ok.validate().is_ok());
        assert_eq!(ok.edge_node_id("truck-1"), "truck-1");
        assert_eq!(
            ok.endpoint("truck-1").client_id,
            "fabrique-sparkplug-truck-1"
        );
        let bad = |f: fn(&mut SparkplugConfig)| {
            let mut c = SparkplugConfig::default();
            f(&mut c);
            c.validate().unwrap_err().0
        };
        assert_eq!(bad(|c| c.group_id = "a/b".into()), "sparkplug.group_id");
        assert_eq!(
            bad(|c| c.edge_node_id = Some("#".into())),
            "sparkplug.edge_node_id"
        );
        assert_eq!(
            bad(|c| c.primary_host_id = Some(String::new())),
            "sparkplug.primary_host_id"
        );
        assert_eq!(bad(|c| c.broker = "mqtt://x".into()), "sparkplug.broker");
        assert_eq!(bad(|c| c.keep_alive_s = 0), "sparkplug.keep_alive_s");
    }
}
