//! OPC UA client adapter (`protocol = "opcua"`): mirrors chosen nodes of a partner's OPC UA
//! server under the partner's station, live through one subscription, and forwards writes with
//! the Write service.
//!
//! The reconnection loop is ours, not the library's: the session is built with
//! `session_retry_limit(0)` and dropped as soon as its connection goes. Each new connection
//! starts from scratch (namespace array, browse paths, subscription, monitored items), because
//! a restarted partner may have renumbered its namespaces and has forgotten our subscription.

mod config;
mod convert;
mod quiet;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use opcua::client::{
    Client, ClientBuilder, IdentityToken, MonitoredItem, OnSubscriptionNotification, Session,
    SessionEventLoop, SessionPollResult,
};
use opcua::crypto::{CertificateStore, SecurityPolicy};
use opcua::types::{
    AttributeId, BrowsePath, DataValue, MessageSecurityMode, MonitoredItemCreateRequest,
    MonitoringMode, MonitoringParameters, NamespaceMap, NodeId, ObjectId, QualifiedName,
    ReadValueId, ReferenceTypeId, RelativePath, RelativePathElement, StatusChangeNotification,
    StatusCode, TimestampsToReturn, UserTokenPolicy, UserTokenType, WriteValue,
};
use tokio::sync::mpsc;
use tracing::instrument::WithSubscriber;
use tracing::Instrument;

use quiet::Quiet;

use crate::adapter::{
    check_write, Adapter, AdapterContext, CallError, Command, DeviceHealth, DeviceStatus,
    TagRegistrar, WriteError, WriteRequest,
};
use crate::backoff::Backoff;
use crate::device::device_path;
use crate::point::{Quality, Timestamp};
use crate::tag::{Access, CatalogError, TagId};

pub use config::{
    Address, Identity, Namespace, NodeRef, OpcUaDevice, OpcUaTag, PathElement, Policy, Security,
};
use convert::{sample, status_name, variant_of, write_refusal, Sample};

/// How long a closing session may take to say goodbye before it is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Liveness reads while the subscription is quiet; two failed ones drop the session.
const KEEP_ALIVE: Duration = Duration::from_secs(2);

/// One partner OPC UA server.
pub struct OpcUaClient {
    config: OpcUaDevice,
    tags: Vec<Mirrored>,
    status: Option<DeviceStatus>,
}

/// A configured tag, once declared.
struct Mirrored {
    id: TagId,
    config: OpcUaTag,
    address: Address,
}

impl OpcUaClient {
    pub fn new(config: OpcUaDevice) -> Self {
        OpcUaClient {
            config,
            tags: Vec::new(),
            status: None,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }
}

/// Why talking to the partner failed; shown as the device's LastError.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot set up the OPC UA client: {0}")]
    Client(String),
    #[error("environment variable `{0}` (password_env) is not set")]
    MissingPassword(String),
    #[error("cannot read `{0}`: {1}")]
    Identity(&'static str, String),
    #[error("the partner offers no endpoint with security policy {policy} and mode {mode}")]
    NoEndpoint { policy: String, mode: String },
    #[error("no complete connection to {endpoint} within {ms} ms")]
    Timeout { endpoint: String, ms: u64 },
    #[error("{step} failed: {status}")]
    Service { step: &'static str, status: String },
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("the partner ended the subscription: {0}")]
    SubscriptionEnded(String),
}

impl SessionError {
    fn service(step: &'static str, error: &opcua::types::Error) -> Self {
        SessionError::Service {
            step,
            status: status_name(error.status()),
        }
    }
}

/// What the session's event loop and subscription tell the adapter task.
#[derive(Debug)]
enum Notice {
    /// The session is open.
    Up,
    /// The connection is gone; the event loop has stopped.
    Lost(StatusCode),
    /// A monitored item's new value; the handle is the tag's index plus one.
    Data(u32, DataValue),
    /// The partner changed the subscription's state (Bad: it deleted it).
    Subscription(StatusCode),
}

/// Forwards subscription callbacks, which run inside the session's event loop, to the adapter.
struct Forward(mpsc::UnboundedSender<Notice>);

impl OnSubscriptionNotification for Forward {
    fn on_data_value(&mut self, value: DataValue, item: &MonitoredItem) {
        let _ = self.0.send(Notice::Data(item.client_handle(), value));
    }

    fn on_subscription_status_change(&mut self, notification: StatusChangeNotification) {
        let _ = self.0.send(Notice::Subscription(notification.status));
    }
}

/// Polls the session's event loop and reports when the session opens and when it is lost. It
/// stops at the first loss: reconnecting is the adapter's job.
async fn drive<T>(event_loop: SessionEventLoop<T>, notices: mpsc::UnboundedSender<Notice>)
where
    T: opcua::client::transport::Connector + Send + Sync + 'static,
{
    let events = event_loop.enter();
    tokio::pin!(events);
    let lost = loop {
        match events.next().await {
            Some(Ok(SessionPollResult::Reconnected(_))) => {
                let _ = notices.send(Notice::Up);
            }
            Some(Ok(
                SessionPollResult::ConnectionLost(code) | SessionPollResult::ReconnectFailed(code),
            )) => break code,
            Some(Ok(_)) => {}
            Some(Err(code)) => break code,
            None => break StatusCode::BadConnectionClosed,
        }
    };
    let _ = notices.send(Notice::Lost(lost));
}

fn policy_of(policy: Policy) -> SecurityPolicy {
    match policy {
        Policy::Basic256Sha256 => SecurityPolicy::Basic256Sha256,
        Policy::Aes256Sha256RsaPss => SecurityPolicy::Aes256Sha256RsaPss,
        Policy::Aes128Sha256RsaOaep => SecurityPolicy::Aes128Sha256RsaOaep,
    }
}

/// A user token policy of `kind`: the library matches it against the partner's endpoint.
fn token_policy(kind: UserTokenType) -> UserTokenPolicy {
    UserTokenPolicy {
        token_type: kind,
        ..UserTokenPolicy::anonymous()
    }
}

/// Status codes that mean "the certificates do not agree" rather than "the partner is away".
fn is_certificate_problem(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BadCertificateUntrusted
            | StatusCode::BadCertificateInvalid
            | StatusCode::BadSecurityChecksFailed
            | StatusCode::BadCertificateHostNameInvalid
            | StatusCode::BadCertificateUriInvalid
            | StatusCode::BadCertificateTimeInvalid
            | StatusCode::BadCertificateUseNotAllowed
            | StatusCode::BadCertificateIssuerRevocationUnknown
            | StatusCode::BadCertificateRevocationUnknown
    )
}

/// Where a tag was found on the partner this time, or why not.
type Resolved = Result<NodeId, Unresolved>;

#[derive(Debug, Clone)]
struct Unresolved {
    status: StatusCode,
    reason: String,
}

/// An open session with its subscription.
struct Connection {
    session: Arc<Session>,
    driver: tokio::task::JoinHandle<()>,
    notices: mpsc::UnboundedReceiver<Notice>,
    /// Per tag, in configuration order.
    nodes: Vec<Resolved>,
}

impl Connection {
    async fn close(self) {
        let closing = self.session.disconnect().with_subscriber(Quiet::dispatch());
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// How a connected period ended.
enum Ended {
    Shutdown,
    Lost(SessionError),
}

/// What the adapter task keeps across connections.
struct State {
    health: DeviceHealth,
    /// (tag index, kind of problem) already logged: bad data is logged once, not per sample.
    warned: HashSet<(usize, &'static str)>,
}

impl State {
    fn warn_once(&mut self, tag: usize, kind: &'static str, name: &str, reason: &str) {
        if self.warned.insert((tag, kind)) {
            tracing::warn!(tag = name, reason, "partner node rejected");
        }
    }
}

impl OpcUaClient {
    fn build_client(&self) -> Result<Client, SessionError> {
        let publishing = Duration::from_millis(self.config.publishing_ms);
        let builder = ClientBuilder::new()
            .application_name("Fabrique Gateway")
            .application_uri("urn:fabrique-gateway:client")
            .product_uri("urn:fabrique-gateway")
            .session_name(format!("Fabrique Gateway {}", self.config.common.name));
        let builder = match (self.config.policy(), &self.config.pki_dir) {
            // Security None: no certificate is exchanged, so none is created or checked.
            (None, _) => builder
                .create_sample_keypair(false)
                .trust_server_certs(true),
            // The client's own certificate is made on first use; a partner certificate it has
            // not seen lands in `rejected/` until `fabrique-gateway pki trust` moves it.
            (Some(_), Some(pki)) => builder
                .pki_dir(pki)
                .create_sample_keypair(true)
                .trust_server_certs(false)
                .verify_server_certs(true),
            (Some(_), None) => {
                return Err(SessionError::Client(
                    "message security needs a PKI folder (`pki_dir`)".into(),
                ))
            }
        };
        builder
            .session_retry_limit(0)
            .request_timeout(self.timeout())
            .publish_timeout(self.timeout() + KEEP_ALIVE * 3)
            .min_publish_interval(publishing)
            .keep_alive_interval(KEEP_ALIVE)
            .max_failed_keep_alive_count(2)
            .client()
            .map_err(|errors| SessionError::Client(errors.join("; ")))
    }

    fn identity(&self) -> Result<(IdentityToken, UserTokenPolicy), SessionError> {
        match self.config.identity() {
            Identity::UserName { user, password_env } => {
                let password = std::env::var(&password_env)
                    .map_err(|_| SessionError::MissingPassword(password_env.clone()))?;
                Ok((
                    IdentityToken::new_user_name(user, password),
                    token_policy(UserTokenType::UserName),
                ))
            }
            Identity::Certificate {
                certificate,
                private_key,
            } => {
                let cert = CertificateStore::read_cert(&certificate)
                    .map_err(|reason| SessionError::Identity("identity_certificate", reason))?;
                let key = CertificateStore::read_pkey(&private_key)
                    .map_err(|reason| SessionError::Identity("identity_private_key", reason))?;
                Ok((
                    IdentityToken::X509(Box::new(cert), Box::new(key)),
                    token_policy(UserTokenType::Certificate),
                ))
            }
            Identity::Anonymous => Ok((IdentityToken::Anonymous, UserTokenPolicy::anonymous())),
        }
    }

    /// Why a session did not open, with what to do about a certificate problem.
    fn opening_failed(&self, status: StatusCode) -> SessionError {
        let hint = if self.config.policy().is_some() && is_certificate_problem(status) {
            let pki = self.config.pki_dir.as_deref().unwrap_or(Path::new("?"));
            format!(
                " (the partner's certificate is not trusted yet: it is in {}; \
                 `fabrique-gateway pki list` shows it, `fabrique-gateway pki trust THUMBPRINT` trusts it)",
                pki.join("rejected").display()
            )
        } else {
            String::new()
        };
        SessionError::Service {
            step: "opening the session",
            status: format!("{}{hint}", status_name(status)),
        }
    }

    /// Connect, resolve every tag's node and subscribe to them.
    async fn open(&self, client: &mut Client) -> Result<Connection, SessionError> {
        let (identity, token_policy) = self.identity()?;
        let (policy, mode) = match (self.config.policy(), self.config.security) {
            (None, _) | (_, Security::None) => (SecurityPolicy::None, MessageSecurityMode::None),
            (Some(policy), Security::Sign) => (policy_of(policy), MessageSecurityMode::Sign),
            (Some(policy), Security::SignAndEncrypt) => {
                (policy_of(policy), MessageSecurityMode::SignAndEncrypt)
            }
        };
        let endpoint = (
            self.config.endpoint.as_str(),
            policy.to_str(),
            mode,
            token_policy,
        );
        let (session, event_loop) = client
            .connect_to_matching_endpoint(endpoint, identity)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::BadTcpEndpointUrlInvalid {
                    // No endpoint of the partner matches the configured policy and mode.
                    SessionError::NoEndpoint {
                        policy: policy.to_str().to_owned(),
                        mode: format!("{mode:?}"),
                    }
                } else {
                    SessionError::service("GetEndpoints", &e)
                }
            })?;
        let (sender, notices) = mpsc::unbounded_channel();
        let driver = tokio::spawn(
            drive(event_loop, sender.clone())
                .in_current_span()
                .with_current_subscriber(),
        );
        let mut connection = Connection {
            session,
            driver,
            notices,
            nodes: Vec::new(),
        };
        match connection.notices.recv().await {
            Some(Notice::Up) => {}
            Some(Notice::Lost(status)) => return Err(self.opening_failed(status)),
            _ => return Err(SessionError::Lost("the session's event loop ended".into())),
        }
        let session = connection.session.clone();
        let namespaces = session
            .read_namespace_array()
            .await
            .map_err(|e| SessionError::service("reading the namespace array", &e))?;
        let mut nodes = self.resolve(&session, &namespaces).await?;

        let publishing = Duration::from_millis(self.config.publishing_ms);
        // Keep-alive about once a second, and let the partner keep the subscription for ten
        // keep-alives without a publish request before it deletes it.
        let keep_alive_count = (1000 / self.config.publishing_ms).max(1) as u32;
        let subscription = session
            .create_subscription(
                publishing,
                keep_alive_count * 10,
                keep_alive_count,
                0,
                0,
                true,
                Forward(sender),
            )
            .await
            .map_err(|e| SessionError::service("CreateSubscription", &e))?;

        let monitored: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].is_ok()).collect();
        let requests = monitored
            .iter()
            .filter_map(|&i| {
                let node = nodes[i].as_ref().ok()?;
                Some(MonitoredItemCreateRequest {
                    item_to_monitor: ReadValueId::from(node.clone()),
                    monitoring_mode: MonitoringMode::Reporting,
                    requested_parameters: MonitoringParameters {
                        client_handle: i as u32 + 1,
                        sampling_interval: self.config.sampling_ms as f64,
                        filter: Default::default(),
                        queue_size: 10,
                        discard_oldest: true,
                    },
                })
            })
            .collect::<Vec<_>>();
        if !requests.is_empty() {
            let results = session
                .create_monitored_items(subscription, TimestampsToReturn::Both, requests)
                .await
                .map_err(|e| SessionError::service("CreateMonitoredItems", &e))?;
            for (&i, created) in monitored.iter().zip(&results) {
                let status = created.result.status_code;
                if status.is_bad() {
                    nodes[i] = Err(Unresolved {
                        status,
                        reason: format!("cannot monitor the node ({})", status_name(status)),
                    });
                }
            }
        }
        connection.nodes = nodes;
        Ok(connection)
    }

    /// Each tag's node id on the partner as it is numbered now.
    async fn resolve(
        &self,
        session: &Session,
        namespaces: &NamespaceMap,
    ) -> Result<Vec<Resolved>, SessionError> {
        let index = |ns: &Namespace| match ns {
            Namespace::Index(i) => Ok(*i),
            Namespace::Uri(uri) => namespaces.get_index(uri).ok_or_else(|| Unresolved {
                status: StatusCode::BadNodeIdUnknown,
                reason: format!("namespace `{uri}` is not on the partner server"),
            }),
        };
        let mut nodes = Vec::with_capacity(self.tags.len());
        let mut paths = Vec::new();
        let mut path_tags = Vec::new();
        for (i, tag) in self.tags.iter().enumerate() {
            match &tag.address {
                Address::Node(node) => nodes.push(
                    index(&node.namespace).map(|ns| NodeId::new(ns, node.identifier.clone())),
                ),
                Address::Path(elements) => {
                    let relative = elements
                        .iter()
                        .map(|e| {
                            Ok(RelativePathElement {
                                reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
                                is_inverse: false,
                                include_subtypes: true,
                                target_name: QualifiedName::new(index(&e.namespace)?, &e.name),
                            })
                        })
                        .collect::<Result<Vec<_>, Unresolved>>();
                    match relative {
                        Ok(elements) => {
                            paths.push(BrowsePath {
                                starting_node: ObjectId::ObjectsFolder.into(),
                                relative_path: RelativePath {
                                    elements: Some(elements),
                                },
                            });
                            path_tags.push(i);
                            // Filled in from the translation below.
                            nodes.push(Err(Unresolved {
                                status: StatusCode::BadNoMatch,
                                reason: "browse path not translated".into(),
                            }));
                        }
                        Err(unresolved) => nodes.push(Err(unresolved)),
                    }
                }
            }
        }
        if paths.is_empty() {
            return Ok(nodes);
        }
        let results = session
            .translate_browse_paths_to_node_ids(&paths)
            .await
            .map_err(|e| SessionError::service("TranslateBrowsePathsToNodeIds", &e))?;
        for (&i, result) in path_tags.iter().zip(&results) {
            let target = result
                .targets
                .iter()
                .flatten()
                .find(|t| t.remaining_path_index == u32::MAX && t.target_id.server_index == 0);
            nodes[i] = match target {
                Some(t) if result.status_code.is_good() => {
                    let mut node = t.target_id.node_id.clone();
                    if !t.target_id.namespace_uri.is_null() {
                        match namespaces.get_index(t.target_id.namespace_uri.as_ref()) {
                            Some(ns) => node.namespace = ns,
                            None => {
                                nodes[i] = Err(Unresolved {
                                    status: StatusCode::BadNodeIdUnknown,
                                    reason: "browse path leads to an unknown namespace".into(),
                                });
                                continue;
                            }
                        }
                    }
                    Ok(node)
                }
                _ => {
                    let status = if result.status_code.is_bad() {
                        result.status_code
                    } else {
                        StatusCode::BadNoMatch
                    };
                    Err(Unresolved {
                        status,
                        reason: format!("browse path not found ({})", status_name(status)),
                    })
                }
            };
        }
        Ok(nodes)
    }

    /// Serve one open connection until it is lost or the gateway stops.
    async fn serve(
        &self,
        mut connection: Connection,
        ctx: &mut AdapterContext,
        state: &mut State,
    ) -> Ended {
        let now = Timestamp::now();
        state.health.connected(&mut ctx.publisher, now);
        for (i, node) in connection.nodes.iter().enumerate() {
            if let Err(problem) = node {
                let tag = &self.tags[i];
                ctx.publisher
                    .set_quality(&[tag.id], Quality(problem.status.bits()), now);
                let error = format!("tag `{}`: {}", tag.config.common.name, problem.reason);
                state.warn_once(i, "unresolved", &tag.config.common.name, &problem.reason);
                state.health.request_failed(&mut ctx.publisher, &error, now);
            }
        }
        ctx.publisher.flush();
        tracing::info!(
            endpoint = %self.config.endpoint,
            mirrored = connection.nodes.iter().filter(|n| n.is_ok()).count(),
            "connected to the partner OPC UA server"
        );

        loop {
            tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => {
                    connection.close().await;
                    return Ended::Shutdown;
                }
                notice = connection.notices.recv() => {
                    let Some(first) = notice else {
                        return Ended::Lost(SessionError::Lost("the session's event loop ended".into()));
                    };
                    let mut next = Some(first);
                    let mut data = false;
                    // Take everything already queued, so that one publish response becomes
                    // one batch on the bus.
                    while let Some(notice) = next {
                        if let Some(end) = self.on_notice(notice, ctx, state, &mut data) {
                            ctx.publisher.flush();
                            if let Ended::Lost(SessionError::SubscriptionEnded(_)) = end {
                                // The session itself still works: end it properly.
                                connection.close().await;
                            }
                            return end;
                        }
                        next = connection.notices.try_recv().ok();
                    }
                    if data {
                        state.health.request_ok(&mut ctx.publisher, Timestamp::now());
                    }
                    ctx.publisher.flush();
                }
                Some(command) = ctx.commands.recv() => match command {
                    Command::Write(request) => self.write(request, &connection, ctx, state).await,
                    Command::Call(request) => {
                        let _ = request.reply.send(Err(CallError::UnknownMethod(request.method)));
                    }
                },
            }
        }
    }

    fn on_notice(
        &self,
        notice: Notice,
        ctx: &mut AdapterContext,
        state: &mut State,
        data: &mut bool,
    ) -> Option<Ended> {
        match notice {
            Notice::Data(handle, value) => {
                let index = (handle as usize).checked_sub(1)?;
                let tag = self.tags.get(index)?;
                *data = true;
                let now = Timestamp::now();
                match sample(tag.config.common.data_type, &value, now) {
                    Sample::Point(point) => ctx.publisher.set_point(tag.id, point),
                    Sample::Status(quality, at) => {
                        ctx.publisher.set_quality(&[tag.id], quality, at)
                    }
                    Sample::WrongType { found } => {
                        let reason = format!(
                            "tag `{}`: the partner sent {found}, declared type is {}",
                            tag.config.common.name, tag.config.common.data_type
                        );
                        ctx.publisher.set_quality(
                            &[tag.id],
                            Quality(StatusCode::BadTypeMismatch.bits()),
                            now,
                        );
                        state.warn_once(index, "type", &tag.config.common.name, &reason);
                        state
                            .health
                            .request_failed(&mut ctx.publisher, &reason, now);
                    }
                }
                None
            }
            Notice::Subscription(status) if status.is_bad() => Some(Ended::Lost(
                SessionError::SubscriptionEnded(status_name(status)),
            )),
            Notice::Subscription(_) | Notice::Up => None,
            Notice::Lost(status) => Some(Ended::Lost(SessionError::Lost(status_name(status)))),
        }
    }

    async fn write(
        &self,
        request: WriteRequest,
        connection: &Connection,
        ctx: &mut AdapterContext,
        state: &mut State,
    ) {
        let result = self.forward_write(&request, connection).await;
        let now = Timestamp::now();
        match &result {
            Ok(()) => {
                ctx.publisher.set(request.tag, request.value.clone(), now);
                state.health.request_ok(&mut ctx.publisher, now);
            }
            Err(Sent { error, partner }) => {
                let name = self
                    .tags
                    .iter()
                    .find(|t| t.id == request.tag)
                    .map_or("?", |t| t.config.common.name.as_str());
                tracing::info!(tag = name, partner, %error, "partner refused a write");
                let reason = format!("write to `{name}` refused by the partner: {partner}");
                state
                    .health
                    .request_failed(&mut ctx.publisher, &reason, now);
            }
            Err(_) => {}
        }
        ctx.publisher.flush();
        let _ = request.reply.send(result.map_err(WriteFailure::into_inner));
    }

    /// Check the write here, then send it to the partner.
    async fn forward_write(
        &self,
        request: &WriteRequest,
        connection: &Connection,
    ) -> Result<(), WriteFailure> {
        let Some(index) = self.tags.iter().position(|t| t.id == request.tag) else {
            return Err(Checked(WriteError::NotWritable));
        };
        let tag = &self.tags[index].config;
        if tag.common.access != Access::ReadWrite {
            return Err(Checked(WriteError::NotWritable));
        }
        check_write(tag.common.data_type, tag.common.range, &request.value).map_err(Checked)?;
        let Some(variant) = variant_of(tag.common.data_type, &request.value) else {
            return Err(Checked(WriteError::TypeMismatch(tag.common.data_type)));
        };
        let node = match &connection.nodes[index] {
            Ok(node) => node.clone(),
            Err(problem) => {
                return Err(Checked(WriteError::Refused(format!(
                    "node not available on the partner: {}",
                    problem.reason
                ))))
            }
        };
        let write = WriteValue {
            node_id: node,
            attribute_id: AttributeId::Value as u32,
            value: DataValue::value_only(variant),
            ..Default::default()
        };
        let refusal = |status| Sent {
            error: write_refusal(
                status,
                tag.common.data_type,
                &request.value,
                tag.common.range,
            ),
            partner: status_name(status),
        };
        let writes = [write];
        let sending = connection.session.write(&writes);
        match tokio::time::timeout(self.timeout(), sending.with_subscriber(Quiet::dispatch())).await
        {
            Err(_) => Err(Sent {
                error: WriteError::Timeout,
                partner: format!("no answer within {} ms", self.config.timeout_ms),
            }),
            Ok(Err(error)) => Err(refusal(error.status())),
            Ok(Ok(results)) => match results.first() {
                Some(status) if !status.is_bad() => Ok(()),
                Some(status) => Err(refusal(*status)),
                None => Err(refusal(StatusCode::BadUnexpectedError)),
            },
        }
    }

    /// Between connections: answer commands at once instead of letting them wait.
    /// Returns false when the gateway stops.
    async fn wait(&self, delay: Duration, ctx: &mut AdapterContext) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return false,
                _ = &mut sleep => return true,
                Some(command) = ctx.commands.recv() => not_connected(command),
            }
        }
    }
}

/// A write error, and whether the partner was asked at all (only then is it counted).
enum WriteFailure {
    Checked(WriteError),
    /// With what the partner said, since the gateway's error cannot always carry it.
    Sent {
        error: WriteError,
        partner: String,
    },
}
use WriteFailure::{Checked, Sent};

impl WriteFailure {
    fn into_inner(self) -> WriteError {
        match self {
            Checked(error) | Sent { error, .. } => error,
        }
    }
}

fn not_connected(command: Command) {
    match command {
        Command::Write(request) => {
            let _ = request.reply.send(Err(WriteError::NotConnected));
        }
        Command::Call(request) => {
            let _ = request
                .reply
                .send(Err(CallError::UnknownMethod(request.method)));
        }
    }
}

#[async_trait]
impl Adapter for OpcUaClient {
    fn name(&self) -> &str {
        &self.config.common.name
    }

    fn declare_tags(&mut self, tags: &mut TagRegistrar<'_>) -> Result<(), CatalogError> {
        let path = device_path(&self.config.common.station, &self.config.common.name);
        self.status = Some(DeviceStatus::declare(tags, &path)?);
        for tag in &self.config.tags {
            let id = tags.register(tag.basics().spec(&path))?;
            // Validated with the configuration; a tag that still fails here stays Bad.
            let address = tag.address().unwrap_or(Address::Path(Vec::new()));
            self.tags.push(Mirrored {
                id,
                config: tag.clone(),
                address,
            });
        }
        Ok(())
    }

    async fn run(self: Box<Self>, ctx: AdapterContext) {
        let span = tracing::info_span!("opcua", device = %self.config.common.name);
        self.mirror(ctx).instrument(span).await;
    }
}

impl OpcUaClient {
    /// Connect, mirror until the connection goes, wait, again; until the gateway stops.
    async fn mirror(self: Box<Self>, mut ctx: AdapterContext) {
        let Some(status) = self.status.clone() else {
            return;
        };
        let mut state = State {
            health: DeviceHealth::new(status, self.tags.iter().map(|t| t.id).collect()),
            warned: HashSet::new(),
        };
        let mut backoff = Backoff::default();
        let mut client =
            match tracing::dispatcher::with_default(&Quiet::dispatch(), || self.build_client()) {
                Ok(client) => Some(client),
                Err(error) => {
                    state
                        .health
                        .lost(&mut ctx.publisher, &error.to_string(), Timestamp::now());
                    ctx.publisher.flush();
                    None
                }
            };
        loop {
            let Some(client) = client.as_mut() else {
                // Nothing to retry: answer commands until the gateway stops.
                if !self.wait(Duration::from_secs(3600), &mut ctx).await {
                    return;
                }
                continue;
            };
            let opening = tokio::time::timeout(
                self.timeout(),
                self.open(client).with_subscriber(Quiet::dispatch()),
            );
            tokio::pin!(opening);
            let opened = loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    opened = &mut opening => break opened,
                    Some(command) = ctx.commands.recv() => not_connected(command),
                }
            };
            let error = match opened {
                Ok(Ok(connection)) => {
                    backoff.reset();
                    match self.serve(connection, &mut ctx, &mut state).await {
                        Ended::Shutdown => return,
                        Ended::Lost(error) => error,
                    }
                }
                Ok(Err(error)) => error,
                Err(_) => SessionError::Timeout {
                    endpoint: self.config.endpoint.clone(),
                    ms: self.config.timeout_ms,
                },
            };
            state
                .health
                .lost(&mut ctx.publisher, &error.to_string(), Timestamp::now());
            ctx.publisher.flush();
            let delay = backoff.next_delay();
            tracing::debug!(%error, ?delay, "retrying the partner OPC UA server");
            if !self.wait(delay, &mut ctx).await {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tag::{AdapterId, TagCatalogBuilder};

    fn adapter() -> OpcUaClient {
        let device: OpcUaDevice = toml::from_str(
            "name = \"cell\"\nstation = \"Partners\"\nendpoint = \"opc.tcp://127.0.0.1:4841/\"\n\
             [[tags]]\nname = \"T\"\nnode_id = \"nsu=urn:partner:cell;s=T\"\ntype = \"float64\"\n\
             [[tags]]\nname = \"C\"\nbrowse_path = \"Objects/2:Cell/2:C\"\ntype = \"int32\"\naccess = \"readwrite\"\n",
        )
        .unwrap();
        OpcUaClient::new(device)
    }

    #[test]
    fn tags_are_declared_under_the_device_with_its_status() {
        let mut builder = TagCatalogBuilder::new();
        let mut a = adapter();
        a.declare_tags(&mut TagRegistrar::new(&mut builder, AdapterId(3)))
            .unwrap();
        let catalog = builder.build();
        for path in ["Status/Connected", "T", "C"] {
            let id = catalog.lookup(&format!("Stations/Partners/cell/{path}"));
            assert!(id.is_some(), "{path} not declared");
            assert_eq!(catalog.get(id.unwrap()).unwrap().owner, AdapterId(3));
        }
        assert_eq!(a.tags.len(), 2);
        assert!(matches!(a.tags[1].address, Address::Path(ref p) if p.len() == 2));
    }

    #[test]
    fn a_missing_password_variable_is_named() {
        let mut a = adapter();
        assert!(matches!(a.identity(), Ok((IdentityToken::Anonymous, _))));
        a.config.username = Some("operator".into());
        a.config.password_env = Some("FABRIQUE_TEST_UNSET_PARTNER_PASSWORD".into());
        assert!(matches!(
            a.identity(),
            Err(SessionError::MissingPassword(var)) if var == "FABRIQUE_TEST_UNSET_PARTNER_PASSWORD"
        ));
    }

    #[test]
    fn an_unreadable_identity_certificate_is_named() {
        let mut a = adapter();
        a.config.identity_certificate = Some("/nonexistent/user.der".into());
        a.config.identity_private_key = Some("/nonexistent/user.pem".into());
        assert!(matches!(
            a.identity(),
            Err(SessionError::Identity("identity_certificate", _))
        ));
    }
}
