//! The OPC UA server: configuration, limits, endpoint, and the gateway's node manager.

mod address_space;
mod bridge;
mod convert;
pub mod events;
mod nodes;
mod password;
pub mod peers;
pub mod pki;
pub mod security;
pub mod standard;
pub(crate) mod tags;

use std::path::PathBuf;
use std::sync::Arc;

use opcua::server::node_manager::memory::{InMemoryNodeManager, InMemoryNodeManagerBuilder};
use opcua::server::{Server, ServerBuilder, ServerHandle};
use serde::{Deserialize, Serialize};

use security::{EndpointConfig, GatewayAuth, Profile, SecuritySettings, UserConfig};

pub use address_space::{DeviceNameplate, StaticModel, INSTANCES_NAMESPACE};
pub use bridge::Bridge;
pub use nodes::{GatewayNodes, GatewayNodesBuilder, NodeChanges};
pub use security::{UserTables, Users};

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
    /// Where the server keeps certificates: its own (created on first start), and the
    /// trusted, rejected and issuer client certificates (`fabrique-gateway pki`).
    pub pki_dir: PathBuf,
    /// `demo` (the built-in configuration) or `secure` (the default of any other): the
    /// defaults of `anonymous`, `endpoints` and `users`, and what validation accepts.
    pub profile: Profile,
    /// Anonymous sessions (read-only). Unset: true in the demo profile, false otherwise; the
    /// secure profile refuses true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<bool>,
    /// Security policies and modes offered. Unset: the profile's (see `security.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<EndpointConfig>>,
    /// Who may log in, and their role. Unset: the demo users in the demo profile, nobody else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<UserConfig>>,
    /// Extra host names and addresses for the server's certificate (besides `host`, localhost
    /// and the machine's names), e.g. the truck LAN address SCADA clients connect to.
    pub certificate_hosts: Vec<String>,
    /// Demo only: trust every client certificate on first contact instead of rejecting it.
    pub trust_client_certificates: bool,
    /// The server's subscription timer. async-opcua's default of 100 ms turns a 100 ms
    /// publishing interval into ~6 publishes a second; 10 ms keeps up.
    pub subscription_poll_interval_ms: u64,
    /// How long a write or method call waits for its device before answering BadTimeout.
    pub command_timeout_ms: u64,
    /// Serve tag variables from the tag catalogue through the tag node manager (tags/), with
    /// no node object per tag, instead of as nodes of the in-memory address space.
    pub tag_node_manager: bool,
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
            profile: Profile::default(),
            anonymous: None,
            endpoints: None,
            users: None,
            certificate_hosts: Vec::new(),
            trust_client_certificates: false,
            subscription_poll_interval_ms: 10,
            command_timeout_ms: 5000,
            tag_node_manager: true,
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
        // The server binds this at start: refuse here what the bind would refuse then.
        let addrs = fabrique_adapters::net::listen_addrs(&self.host, 0)
            .map_err(|reason| ("opcua.host", reason))?;
        if !addrs
            .iter()
            .any(|a| std::net::TcpListener::bind(*a).is_ok())
        {
            return Err((
                "opcua.host",
                format!("`{}` is not an address of this machine", self.host),
            ));
        }
        if self.port == 0 {
            return Err(("opcua.port", "must be between 1 and 65535".into()));
        }
        if self.application_uri.trim().is_empty() {
            return Err(("opcua.application_uri", "must not be empty".into()));
        }
        for (i, host) in self.certificate_hosts.iter().enumerate() {
            if let Err(reason) = fabrique_adapters::net::check_host(host) {
                return Err(("opcua.certificate_hosts", format!("[{i}]: {reason}")));
            }
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

    /// The security keys with the profile's defaults filled in.
    pub fn security(&self) -> SecuritySettings<'_> {
        let demo = self.profile == Profile::Demo;
        SecuritySettings {
            profile: self.profile,
            anonymous: self.anonymous.unwrap_or(demo),
            endpoints: match &self.endpoints {
                Some(endpoints) => endpoints,
                None if demo => &security::DEMO_ENDPOINTS,
                None => &security::SECURE_ENDPOINTS,
            },
            users: self.users.as_deref().unwrap_or(if demo {
                security::demo_users_ref()
            } else {
                &[]
            }),
            trust_client_certificates: self.trust_client_certificates,
        }
    }

    /// Fill the unset security keys from the profile, so `print-config` shows what runs.
    pub fn apply_profile(&mut self) {
        let settings = self.security();
        let (anonymous, endpoints, users) = (
            settings.anonymous,
            settings.endpoints.to_vec(),
            settings.users.to_vec(),
        );
        self.anonymous = Some(anonymous);
        self.endpoints = Some(endpoints);
        self.users = Some(users);
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
    /// The users logins are checked against; a reload replaces them.
    pub users: Users,
}

pub fn build_server(
    config: &OpcUaConfig,
    nodes: GatewayNodesBuilder,
) -> anyhow::Result<OpcUaServer> {
    let limits = &config.limits;
    let security = config.security();
    pki::ensure_own_certificate(config)?;
    let auth = GatewayAuth::new(security.anonymous, security.users)
        .map_err(|e| anyhow::anyhow!("OPC UA users: {e}"))?;
    let users = auth.users();
    let mut builder = ServerBuilder::new()
        .application_name(&config.application_name)
        .application_uri(&config.application_uri)
        .product_uri(&config.product_uri)
        .host(&config.host)
        .port(config.port)
        .pki_dir(&config.pki_dir)
        // The server's own certificate was created above (with the configured host names);
        // async-opcua reads it from `pki_dir`.
        .create_sample_keypair(false)
        .trust_client_certs(security.trust_client_certificates)
        .with_authenticator(Arc::new(auth))
        .discovery_urls(vec![config.endpoint_url()])
        .subscription_poll_interval_ms(config.subscription_poll_interval_ms)
        .max_message_size(limits.max_message_size)
        .max_chunk_count(limits.max_chunk_count)
        .max_array_length(limits.max_array_length)
        .max_string_length(limits.max_string_length)
        .max_sessions(limits.max_sessions)
        .diagnostics_enabled(true)
        .capabilities(crate::history::ua::capabilities(nodes.history.as_deref()));
    if config.tag_node_manager {
        // Before the in-memory node manager, which owns the whole instances namespace: a
        // request for a tag goes to the first node manager that owns it.
        builder = builder.with_node_manager(tags::TagNodeManagerBuilder {
            bus: nodes.bus.clone(),
            router: nodes.router.clone(),
            history: nodes.history.clone(),
        });
    }
    builder = builder.with_node_manager(InMemoryNodeManagerBuilder::new(nodes));
    for endpoint in security.endpoints {
        builder = builder.add_endpoint(endpoint.id(), endpoint.server_endpoint());
    }
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
        users,
    })
}
