//! OPC UA events: the notifier hierarchy, the gateway's event types (Fabrique.NodeSet2.xml,
//! ns=1;i=5001..5005) and their emission from what `crate::events` detects on the bus.
//!
//! ```text
//! Server ─HasNotifier→ Fabrique ─HasNotifier→ Line
//!                               ─HasNotifier→ Stations ─HasNotifier→ <station> ─HasNotifier→ <device>
//! ```
//! An event is reported on its source and on every notifier above it, so a client subscribed
//! on a station gets that station's events, and one on `Server` gets them all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fabrique_adapters::ua::date_time;
use fabrique_adapters::PointBus;
use opcua::nodes::{BaseEventType, Event, EventNotifier, NamespaceMap, NodeType};
use opcua::server::address_space::AddressSpace;
use opcua::server::SubscriptionCache;
use opcua::types::{ByteString, NodeId, ObjectId, ReferenceTypeId, UAString};
use tokio_util::sync::CancellationToken;

use super::address_space::{instance_node_id, TYPES_NAMESPACE};
use crate::events::{Detector, Happening, What};
use crate::history::events::AuditRecord;

mod types {
    //! The event types, as the derive macro wants them: field `order_id` is the property
    //! `OrderId` of the type in the gateway's types namespace.
    use opcua::nodes::BaseEventType;
    use opcua::Event;

    #[derive(Event)]
    #[opcua(identifier = "i=5001", namespace = "urn:fabrique-gateway:types")]
    pub struct OrderSubmittedEventType {
        pub base: BaseEventType,
        pub own_namespace_index: u16,
        pub order_id: String,
    }

    #[derive(Event)]
    #[opcua(identifier = "i=5002", namespace = "urn:fabrique-gateway:types")]
    pub struct OrderDeliveredEventType {
        pub base: BaseEventType,
        pub own_namespace_index: u16,
        pub order_id: String,
    }

    #[derive(Event)]
    #[opcua(identifier = "i=5003", namespace = "urn:fabrique-gateway:types")]
    pub struct PartScrappedEventType {
        pub base: BaseEventType,
        pub own_namespace_index: u16,
        pub order_id: String,
        pub verdict: String,
    }

    #[derive(Event)]
    #[opcua(identifier = "i=5004", namespace = "urn:fabrique-gateway:types")]
    pub struct DeviceConnectionEventType {
        pub base: BaseEventType,
        pub own_namespace_index: u16,
        pub connected: bool,
        pub error: String,
        pub device: String,
    }

    #[derive(Event)]
    #[opcua(identifier = "i=5005", namespace = "urn:fabrique-gateway:types")]
    pub struct StopChangedEventType {
        pub base: BaseEventType,
        pub own_namespace_index: u16,
        pub town: String,
    }
}

/// Objects that report events: `Fabrique`, `Line`, `Stations`, every station and device.
/// Sets their EventNotifier attribute and the HasNotifier references (from `Server` too).
/// Safe to call again after a reload added devices. `history`: their events are stored
/// (HistoryRead bit, HistoryReadEvents in history/ua_events.rs).
pub fn set_up_notifiers(space: &mut AddressSpace, ns: u16, device_paths: &[String], history: bool) {
    let mut edges: Vec<(String, String)> = vec![
        (String::new(), "Line".into()),
        (String::new(), "Stations".into()),
    ];
    for device in device_paths {
        if let Some((station, _)) = device.rsplit_once('/') {
            edges.push(("Stations".into(), station.to_owned()));
            edges.push((station.to_owned(), device.clone()));
        }
    }
    let mut notifiers: Vec<&str> = vec![""];
    notifiers.extend(edges.iter().map(|(_, child)| child.as_str()));
    for path in notifiers {
        if let Some(NodeType::Object(object)) = space.find_mut(&instance_node_id(ns, path)) {
            let mut notifier = EventNotifier::SUBSCRIBE_TO_EVENTS;
            if history {
                notifier |= EventNotifier::HISTORY_READ;
            }
            object.set_event_notifier(notifier);
        }
    }
    let server: NodeId = ObjectId::Server.into();
    let root = instance_node_id(ns, "");
    space.insert_reference(&server, &root, ReferenceTypeId::HasNotifier);
    for (parent, child) in edges {
        let (parent, child) = (instance_node_id(ns, &parent), instance_node_id(ns, &child));
        if space.node_exists(&parent) && space.node_exists(&child) {
            space.insert_reference(&parent, &child, ReferenceTypeId::HasNotifier);
        }
    }
}

/// The `Server` object (in the core node manager's `space`) reports that its events are
/// stored: HistoryReadEvents on it reads them all (the gateway's node manager answers it,
/// `owns_server_events`).
pub fn server_history_read(space: &mut AddressSpace) {
    let server: NodeId = ObjectId::Server.into();
    if let Some(NodeType::Object(object)) = space.find_mut(&server) {
        object.set_event_notifier(object.event_notifier() | EventNotifier::HISTORY_READ);
    }
}

/// How many event monitored items clients hold on each of the gateway's notifiers.
///
/// async-opcua 0.19 reports an event notified on any node to the `Server` object's items
/// too. Notifying every notifier above the source would hand a `Server` subscriber one copy
/// per level, so an event goes only to the levels somebody watches (one copy for `Server`
/// when nobody watches below it).
#[derive(Default)]
pub struct Watched(parking_lot::Mutex<std::collections::HashMap<NodeId, usize>>);

impl Watched {
    pub fn add(&self, node: &NodeId) {
        *self.0.lock().entry(node.clone()).or_default() += 1;
    }

    pub fn remove(&self, node: &NodeId) {
        let mut map = self.0.lock();
        if let Some(n) = map.get_mut(node) {
            *n -= 1;
            if *n == 0 {
                map.remove(node);
            }
        }
    }

    /// Report `event` on the watched ones of `notifiers`, else on `Server` alone.
    fn notify(&self, subscriptions: &SubscriptionCache, event: &dyn Event, notifiers: &[NodeId]) {
        let targets: Vec<NodeId> = {
            let map = self.0.lock();
            notifiers
                .iter()
                .filter(|n| map.contains_key(*n))
                .cloned()
                .collect()
        };
        let server: NodeId = ObjectId::Server.into();
        let targets = if targets.is_empty() {
            vec![server]
        } else {
            targets
        };
        subscriptions.notify_events(targets.iter().map(|id| (event, id)));
    }
}

/// The notifiers an event of `source` is reported on: itself and every one above it
/// (`Server` gets it in any case).
pub(crate) fn notifiers(ns: u16, source: &str) -> Vec<NodeId> {
    let mut out = vec![instance_node_id(ns, "")];
    if source.starts_with("Stations/") {
        let mut path = String::new();
        for part in source.split('/') {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(part);
            out.push(instance_node_id(ns, &path));
        }
        // A machine tool's `Notification/Messages` (standard/machines.rs) reports its
        // device's events too; nobody watches it on other machines, so nothing goes there.
        if let Some(device) = source.split('/').nth(2) {
            out.push(NodeId::new(
                ns,
                format!("Machines/{device}/Notification/Messages"),
            ));
        }
    } else if source == "Line" {
        out.push(instance_node_id(ns, "Line"));
    }
    out
}

/// The NodeId of condition `name` of `source`: `<source>/Alarms/<name>` (the ConditionId).
pub fn condition_node_id(ns: u16, source: &str, name: &str) -> NodeId {
    instance_node_id(ns, &format!("{source}/Alarms/{name}"))
}

/// The source and condition name of a ConditionId made by `condition_node_id`.
pub fn condition_of(ns: u16, node: &NodeId) -> Option<(String, String)> {
    if node.namespace != ns {
        return None;
    }
    let opcua::types::Identifier::String(path) = &node.identifier else {
        return None;
    };
    let prefix = instance_node_id(ns, "");
    let opcua::types::Identifier::String(root) = &prefix.identifier else {
        return None;
    };
    let path = path
        .as_ref()
        .strip_prefix(root.as_ref())?
        .strip_prefix('/')?;
    let (source, name) = path.rsplit_once("/Alarms/")?;
    Some((source.to_owned(), name.to_owned()))
}

/// Report a condition's new state as its event on its source's notifiers.
pub fn report_condition(
    subscriptions: &SubscriptionCache,
    watched: &Watched,
    ns: u16,
    state: crate::alarms::ConditionState,
) {
    let targets = notifiers(ns, &state.source);
    let condition = condition_event(ns, state);
    watched.notify(subscriptions, &condition, &targets);
}

/// The event that reports `state`, with its source's and its own NodeIds.
pub(crate) fn condition_event(
    ns: u16,
    state: crate::alarms::ConditionState,
) -> crate::alarms::event::ConditionEvent {
    let source_node = instance_node_id(ns, &state.source);
    let condition_id = condition_node_id(ns, &state.source, state.name);
    crate::alarms::event::condition_event(source_node, condition_id, state)
}

/// Report every condition state change (`Alarms::subscribe`) as its event, until shutdown.
pub async fn report_conditions(
    mut changes: tokio::sync::broadcast::Receiver<crate::alarms::ConditionState>,
    subscriptions: Arc<SubscriptionCache>,
    watched: Arc<Watched>,
    ns: u16,
    shutdown: CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let change = tokio::select! {
            _ = shutdown.cancelled() => break,
            change = changes.recv() => change,
        };
        match change {
            Ok(state) => report_condition(&subscriptions, &watched, ns, state),
            // Fell behind: those events are lost to live subscribers (a ConditionRefresh
            // replays the retained ones); counted in the log.
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "condition events dropped: the reporter fell behind")
            }
            Err(RecvError::Closed) => break,
        }
    }
}

/// Reports happenings as OPC UA events.
pub struct EventEmitter {
    pub bus: PointBus,
    pub subscriptions: Arc<SubscriptionCache>,
    pub namespaces: NamespaceMap,
    /// The instances namespace index.
    pub ns: u16,
    pub watched: Arc<Watched>,
    /// The conditions' state (alarms/), changed by what this emitter detects.
    pub alarms: Arc<crate::alarms::Alarms>,
    /// Where events and condition state changes are stored for HistoryReadEvents.
    pub history: Option<Arc<crate::history::events::EventStore>>,
}

static EVENT_SEQ: AtomicU64 = AtomicU64::new(0);

/// A unique EventId: the process's start time and a sequence number.
pub(crate) fn event_id() -> ByteString {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| fabrique_adapters::Timestamp::now().as_nanos() as u64);
    let mut bytes = start.to_be_bytes().to_vec();
    bytes.extend_from_slice(&EVENT_SEQ.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    ByteString::from(bytes)
}

impl EventEmitter {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut changes = self.bus.subscribe();
        // Every condition's state change (whoever made it: this emitter, a method call, HTTP).
        let mut conditions = self.alarms.subscribe();
        let mut detector = Detector::default();
        // The current values are the detector's starting point, not events.
        detector.observe(&self.bus.catalog(), &self.bus.snapshot());
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                event = changes.recv() => event,
                state = conditions.recv(), if self.history.is_some() => {
                    use tokio::sync::broadcast::error::RecvError;
                    match (&self.history, state) {
                        (Some(history), Ok(state)) => history
                            .record(crate::history::events::StoredEvent::condition(&state)),
                        (_, Err(RecvError::Lagged(missed))) => {
                            tracing::warn!(missed, "event history: condition changes not stored")
                        }
                        // The alarms live as long as this emitter: never closed.
                        _ => {}
                    }
                    continue;
                }
            };
            let happenings = match event {
                Some(fabrique_adapters::bus::BusEvent::Changes(batch)) => {
                    detector.observe(&self.bus.catalog(), &batch)
                }
                Some(fabrique_adapters::bus::BusEvent::Resync { state, .. }) => {
                    detector.observe(&self.bus.catalog(), &state)
                }
                None => break,
            };
            for happening in happenings {
                self.emit(&happening);
            }
        }
    }

    fn notifiers(&self, source: &str) -> Vec<NodeId> {
        notifiers(self.ns, source)
    }

    pub fn emit(&self, happening: &Happening) {
        let ns = &self.namespaces;
        let Some(types_ns) = ns.get_index(TYPES_NAMESPACE) else {
            return;
        };
        let id = event_id();
        if let Some(history) = &self.history {
            history.record(crate::history::events::StoredEvent::happening(
                happening,
                id.as_ref(),
            ));
        }
        let event = happening_event(types_ns, self.ns, happening, id);
        let notifiers = self.notifiers(&happening.source);
        tracing::debug!(source = %happening.source, "event");
        self.watched
            .notify(&self.subscriptions, &*event, &notifiers);
        // Conditions are reported as events by `report_conditions`, like every change.
        match &happening.what {
            What::DeviceConnection { connected, error } => {
                self.alarms
                    .device_connection(&happening.source, *connected, error, happening.time);
            }
            What::PartScrapped { order_id, verdict } => {
                self.alarms
                    .part_verdict(order_id, verdict, true, happening.time);
            }
            What::OrderDelivered { order_id } => {
                self.alarms
                    .part_verdict(order_id, "", false, happening.time);
            }
            _ => {}
        }
    }
}

/// A stored event (history/events.rs) as the event that reported it.
pub(crate) fn stored_event(
    types_ns: u16,
    ns: u16,
    stored: &crate::history::events::StoredEvent,
) -> Box<dyn Event> {
    use crate::history::events::Origin;
    match stored.origin() {
        Origin::Happening(happening) => happening_event(
            types_ns,
            ns,
            &happening,
            ByteString::from(stored.event_id()),
        ),
        Origin::Audit(record) => audit_event(
            &record,
            fabrique_adapters::Timestamp::from_nanos(stored.time),
            ByteString::from(stored.event_id()),
        ),
        Origin::Condition(state) => {
            let source_node = instance_node_id(ns, &state.source);
            let condition_id = condition_node_id(ns, &state.source, state.name);
            Box::new(crate::alarms::event::condition_event(
                source_node,
                condition_id,
                state,
            ))
        }
    }
}

/// The event reporting `happening`, of its type in the types namespace `types_ns`.
pub(crate) fn happening_event(
    types_ns: u16,
    ns: u16,
    happening: &Happening,
    event_id: ByteString,
) -> Box<dyn Event> {
    let source_node = instance_node_id(ns, &happening.source);
    let source_name = happening
        .source
        .rsplit('/')
        .next()
        .unwrap_or(&happening.source)
        .to_owned();
    let time = date_time(happening.time);
    let message = happening.what.message(&happening.source);
    let base = |id: u32| {
        BaseEventType::new(
            NodeId::new(types_ns, id),
            event_id.clone(),
            message.as_str(),
            time,
        )
        .set_source_node(source_node.clone())
        .set_source_name(UAString::from(source_name.as_str()))
        .set_receive_time(opcua::types::DateTime::now())
        .set_severity(happening.what.severity())
    };
    match &happening.what {
        What::OrderSubmitted { order_id } => Box::new(types::OrderSubmittedEventType {
            base: base(5001),
            own_namespace_index: types_ns,
            order_id: order_id.clone(),
        }),
        What::OrderDelivered { order_id } => Box::new(types::OrderDeliveredEventType {
            base: base(5002),
            own_namespace_index: types_ns,
            order_id: order_id.clone(),
        }),
        What::PartScrapped { order_id, verdict } => Box::new(types::PartScrappedEventType {
            base: base(5003),
            own_namespace_index: types_ns,
            order_id: order_id.clone(),
            verdict: verdict.clone(),
        }),
        What::DeviceConnection { connected, error } => Box::new(types::DeviceConnectionEventType {
            base: base(5004),
            own_namespace_index: types_ns,
            connected: *connected,
            error: error.clone(),
            device: happening.source.clone(),
        }),
        What::StopChanged { town } => Box::new(types::StopChangedEventType {
            base: base(5005),
            own_namespace_index: types_ns,
            town: town.clone(),
        }),
    }
}

/// Audit events for writes and method calls (who, what, result): reported on `Server` and
/// `Fabrique`, as OPC UA's own `AuditWriteUpdateEventType` and `AuditUpdateMethodEventType`,
/// and stored with the other events (HistoryReadEvents on `Fabrique` or `Server`).
pub struct Audit {
    pub subscriptions: Arc<SubscriptionCache>,
    /// The instances namespace index.
    pub ns: u16,
    /// The server's application URI (`ServerId`).
    pub server_id: String,
    pub watched: Arc<Watched>,
    /// Where events are stored; `None` without event history.
    pub history: Option<Arc<crate::history::events::EventStore>>,
}

pub enum Audited<'a> {
    Write {
        node: &'a NodeId,
        status: opcua::types::StatusCode,
    },
    Call {
        object: &'a NodeId,
        method: &'a NodeId,
        status: opcua::types::StatusCode,
    },
}

impl Audit {
    /// `token`: the session's user token, `<role>/<user>` (security.rs).
    pub fn report(&self, token: &str, what: Audited<'_>) {
        let user = token.split_once('/').map_or(token, |(_, user)| user);
        let record = match what {
            Audited::Write { node, status } => AuditRecord {
                user: user.to_owned(),
                server_id: self.server_id.clone(),
                node: node.to_string(),
                method: None,
                status: status.bits(),
            },
            Audited::Call {
                object,
                method,
                status,
            } => AuditRecord {
                user: user.to_owned(),
                server_id: self.server_id.clone(),
                node: object.to_string(),
                method: Some(method.to_string()),
                status: status.bits(),
            },
        };
        let time = fabrique_adapters::Timestamp::now();
        let id = event_id();
        let event = audit_event(&record, time, id.clone());
        if let Some(history) = &self.history {
            history.record(crate::history::events::StoredEvent::audit(
                record,
                time,
                id.as_ref(),
            ));
        }
        let notifiers = [instance_node_id(self.ns, "")];
        self.watched
            .notify(&self.subscriptions, &*event, &notifiers);
    }
}

/// The audit event that reports `record` (live, or rebuilt from the event history).
pub(crate) fn audit_event(
    record: &AuditRecord,
    time: fabrique_adapters::Timestamp,
    event_id: ByteString,
) -> Box<dyn Event> {
    use opcua::core_namespace::events::{
        AuditEventType, AuditUpdateEventType, AuditUpdateMethodEventType, AuditWriteUpdateEventType,
    };
    use opcua::types::{AttributeId, ObjectTypeId, StatusCode};
    // What the live path wrote (`NodeId`'s Display); a record edited by hand that does not
    // parse becomes a null NodeId rather than a lost event.
    let node_id = |s: &str| s.parse::<NodeId>().unwrap_or_default();
    let source = node_id(&record.node);
    let status = StatusCode::from(record.status);
    let user = record.user.as_str();
    let message = match &record.method {
        None => format!("{user} wrote {source}: {status}"),
        Some(method) => format!("{user} called {method} on {source}: {status}"),
    };
    let now = date_time(time);
    let audit = |type_id: ObjectTypeId| AuditEventType {
        base: BaseEventType::new(type_id, event_id.clone(), message.as_str(), now)
            .set_source_node(source.clone())
            .set_source_name(UAString::from(source.to_string()))
            .set_severity(if status.is_good() { 100 } else { 300 }),
        action_time_stamp: now,
        client_audit_entry_id: UAString::null(),
        client_user_id: UAString::from(user),
        server_id: UAString::from(record.server_id.as_str()),
        status: status.is_good(),
    };
    match &record.method {
        None => Box::new(AuditWriteUpdateEventType {
            base: AuditUpdateEventType {
                base: audit(ObjectTypeId::AuditWriteUpdateEventType),
            },
            attribute_id: AttributeId::Value as u32,
            index_range: Default::default(),
            new_value: Default::default(),
            old_value: Default::default(),
        }),
        Some(method) => Box::new(AuditUpdateMethodEventType {
            base: audit(ObjectTypeId::AuditUpdateMethodEventType),
            input_arguments: Default::default(),
            method_id: node_id(method),
            output_arguments: Default::default(),
            status_code_id: status,
        }),
    }
}
