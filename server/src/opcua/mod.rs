//! The OPC UA server: configuration, limits, endpoint, and the gateway's node manager.

mod address_space;
mod bridge;
mod convert;
mod nodes;

use std::path::PathBuf;
use std::sync::Arc;

use opcua::crypto::SecurityPolicy;
use opcua::server::node_manager::memory::{InMemoryNodeManager, InMemoryNodeManagerBuilder};
use opcua::server::{Server, ServerBuilder, ServerEndpoint, ServerHandle, ANONYMOUS_USER_TOKEN_ID};
use opcua::types::MessageSecurityMode;
use serde::{Deserialize, Serialize};

pub use address_space::{DeviceNameplate, StaticModel};
pub use bridge::Bridge;
pub use nodes::{GatewayNodes, GatewayNodesBuilder};

/// `[opcua]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpcUaConfig {
    /// Address to listen on. Loopback by default; `0.0.0.0` (or the truck LAN address) exposes
    /// the gateway to SCADA clients on the network.
    pub host: String,
    pub port: u16,
    pub application_name: String,
    pub application_uri: String,
    pub product_uri: String,
    /// Where the server keeps certificates (created on demand).
    pub pki_dir: PathBuf,
    /// The server's subscription timer. async-opcua's default of 100 ms turns a 100 ms
    /// publishing interval into ~6 publishes a second; 10 ms keeps up.
    pub subscription_poll_interval_ms: u64,
    /// How long a write or method call waits for its device before answering BadTimeout.
    pub command_timeout_ms: u64,
    pub limits: LimitsConfig,
}

impl Default for OpcUaConfig {
    fn default() -> Self {
        OpcUaConfig {
            host: "127.0.0.1".into(),
            port: 4840,
            application_name: "Fabrique Gateway".into(),
            application_uri: "urn:fabrique-gateway".into(),
            product_uri: "urn:fabrique-gateway:product".into(),
            pki_dir: PathBuf::from("pki"),
            subscription_poll_interval_ms: 10,
            command_timeout_ms: 5000,
            limits: LimitsConfig::default(),
        }
    }
}

/// `[opcua.limits]`: async-opcua's defaults are sized for small servers (1000 monitored items
/// per subscription, queues of 10, 100 ms minimum intervals, ~327 kB messages); a truck with
/// partner equipment and a benchmark with 100,000 tags need more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_sessions: usize,
    pub max_subscriptions_per_session: usize,
    pub max_monitored_items_per_subscription: usize,
    pub max_monitored_item_queue_size: usize,
    /// 0 lets clients ask for report-by-exception: every change on the bus is queued.
    pub min_sampling_interval_ms: f64,
    pub min_publishing_interval_ms: f64,
    /// 0: no limit.
    pub max_notifications_per_publish: u64,
    pub max_queued_notifications: usize,
    pub max_message_size: usize,
    pub max_chunk_count: usize,
    pub max_array_length: usize,
    pub max_string_length: usize,
    /// Nodes per Read, Write, Browse, RegisterNodes and monitored items per call.
    pub max_nodes_per_request: usize,
    pub max_nodes_per_method_call: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_sessions: 50,
            max_subscriptions_per_session: 20,
            max_monitored_items_per_subscription: 250_000,
            max_monitored_item_queue_size: 100,
            min_sampling_interval_ms: 0.0,
            min_publishing_interval_ms: 10.0,
            max_notifications_per_publish: 0,
            max_queued_notifications: 20,
            max_message_size: 64 * 1024 * 1024,
            max_chunk_count: 2048,
            max_array_length: 250_000,
            max_string_length: 1024 * 1024,
            max_nodes_per_request: 250_000,
            max_nodes_per_method_call: 1000,
        }
    }
}

impl OpcUaConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.host.trim().is_empty() {
            return Err(("opcua.host", "must not be empty".into()));
        }
        if !(1..=1000).contains(&self.subscription_poll_interval_ms) {
            return Err((
                "opcua.subscription_poll_interval_ms",
                "must be between 1 and 1000".into(),
            ));
        }
        if !(10..=600_000).contains(&self.command_timeout_ms) {
            return Err((
                "opcua.command_timeout_ms",
                "must be between 10 and 600000".into(),
            ));
        }
        let l = &self.limits;
        if l.min_publishing_interval_ms < 1.0 {
            return Err((
                "opcua.limits.min_publishing_interval_ms",
                "must be at least 1".into(),
            ));
        }
        if l.min_sampling_interval_ms < 0.0 {
            return Err((
                "opcua.limits.min_sampling_interval_ms",
                "must not be negative".into(),
            ));
        }
        for (key, value) in [
            ("opcua.limits.max_sessions", l.max_sessions),
            (
                "opcua.limits.max_monitored_items_per_subscription",
                l.max_monitored_items_per_subscription,
            ),
            (
                "opcua.limits.max_monitored_item_queue_size",
                l.max_monitored_item_queue_size,
            ),
            ("opcua.limits.max_message_size", l.max_message_size),
            (
                "opcua.limits.max_nodes_per_request",
                l.max_nodes_per_request,
            ),
        ] {
            if value == 0 {
                return Err((key, "must be greater than 0".into()));
            }
        }
        Ok(())
    }

    pub fn endpoint_url(&self) -> String {
        format!("opc.tcp://{}:{}/", self.host, self.port)
    }
}

/// A built server, its handle, and the gateway's node manager.
pub struct OpcUaServer {
    pub server: Server,
    pub handle: ServerHandle,
    pub nodes: Arc<InMemoryNodeManager<GatewayNodes>>,
}

pub fn build_server(
    config: &OpcUaConfig,
    nodes: GatewayNodesBuilder,
) -> anyhow::Result<OpcUaServer> {
    let limits = &config.limits;
    let mut builder = ServerBuilder::new()
        .application_name(&config.application_name)
        .application_uri(&config.application_uri)
        .product_uri(&config.product_uri)
        .host(&config.host)
        .port(config.port)
        .pki_dir(&config.pki_dir)
        // The server's own self-signed certificate, created in `pki_dir` on first start: even
        // the None endpoint's secure channel expects one, and encrypted endpoints need it.
        .create_sample_keypair(true)
        .add_endpoint(
            "none",
            ServerEndpoint::new(
                "/",
                SecurityPolicy::None,
                MessageSecurityMode::None,
                &[ANONYMOUS_USER_TOKEN_ID.to_owned()],
            ),
        )
        .discovery_urls(vec![config.endpoint_url()])
        .subscription_poll_interval_ms(config.subscription_poll_interval_ms)
        .max_message_size(limits.max_message_size)
        .max_chunk_count(limits.max_chunk_count)
        .max_array_length(limits.max_array_length)
        .max_string_length(limits.max_string_length)
        .max_sessions(limits.max_sessions)
        .diagnostics_enabled(true)
        .with_node_manager(InMemoryNodeManagerBuilder::new(nodes));
    {
        let l = builder.limits_mut();
        let s = &mut l.subscriptions;
        s.max_subscriptions_per_session = limits.max_subscriptions_per_session;
        s.max_monitored_items_per_sub = limits.max_monitored_items_per_subscription;
        s.max_monitored_item_queue_size = limits.max_monitored_item_queue_size;
        s.min_sampling_interval_ms = limits.min_sampling_interval_ms;
        s.min_publishing_interval_ms = limits.min_publishing_interval_ms;
        s.max_notifications_per_publish = limits.max_notifications_per_publish;
        s.max_queued_notifications = limits.max_queued_notifications;
        let o = &mut l.operational;
        o.max_nodes_per_read = limits.max_nodes_per_request;
        o.max_nodes_per_write = limits.max_nodes_per_request;
        o.max_nodes_per_browse = limits.max_nodes_per_request;
        o.max_nodes_per_register_nodes = limits.max_nodes_per_request;
        o.max_monitored_items_per_call = limits.max_nodes_per_request;
        o.max_references_per_browse_node = limits.max_nodes_per_request;
        o.max_nodes_per_translate_browse_paths_to_node_ids = limits.max_nodes_per_request;
        o.max_nodes_per_method_call = limits.max_nodes_per_method_call;
    }
    let (server, handle) = builder
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the OPC UA server: {e}"))?;
    let nodes = handle
        .node_managers()
        .get_of_type::<InMemoryNodeManager<GatewayNodes>>()
        .ok_or_else(|| anyhow::anyhow!("the gateway node manager is missing from the server"))?;
    Ok(OpcUaServer {
        server,
        handle,
        nodes,
    })
}
