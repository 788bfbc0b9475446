//! The gateway's node manager: the in-memory address space of async-opcua for browsing and
//! reading, with writes and method calls forwarded to adapters.
//!
//! Tag values are not stored in the address space: reads come from the bus's latest table, so
//! a value is never older than the bus. Writes go to the owning adapter; the value changes
//! only once the device has accepted it (the adapter publishes it before answering), and a
//! refusal reaches the client as a Bad status code.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use fabrique_adapters::{CallError, PointBus, TagId, TagSpec, Value, WriteError};
use futures::future::join_all;
use opcua::nodes::{NodeSetImport, TypeTree};
use opcua::server::address_space::AddressSpace;
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{
    CoreNodeManager, InMemoryNodeManagerImpl, InMemoryNodeManagerImplBuilder,
};
use opcua::server::node_manager::{
    HistoryNode, MethodCall, MonitoredItemRef, ParsedReadValueId, RequestContext, ServerContext,
    WriteNode,
};
use opcua::server::CreateMonitoredItem;
use opcua::sync::RwLock;
use opcua::types::{
    AttributeId, DataValue, DateTime, NodeId, ReadAtTimeDetails, ReadEventDetails,
    ReadProcessedDetails, ReadRawModifiedDetails, StatusCode, TimestampsToReturn, Variant,
};

use super::address_space::{
    self, DeviceNameplate, StaticModel, INSTANCES_NAMESPACE, TYPES_NAMESPACE,
};
use super::convert::{data_value, natural_variant};
use super::events::Audited;
use super::security::Role;
use super::standard::{self, live::Derived, MachineDecl};
use crate::commands::CommandRouter;

/// Everything needed to build the address space when the server starts.
pub struct GatewayNodesBuilder {
    pub types: Box<dyn NodeSetImport>,
    pub model: StaticModel,
    pub bus: PointBus,
    pub router: CommandRouter,
    /// The historian behind HistoryRead; `None` when `[history] enabled = false`.
    pub history: Option<Arc<crate::history::Historian>>,
    /// `opcua.tag_node_manager`: the tag node manager (tags/) serves the tag variables, so
    /// none are built here.
    pub tag_node_manager: bool,
}

impl InMemoryNodeManagerImplBuilder for GatewayNodesBuilder {
    type Impl = GatewayNodes;

    fn build(self, context: ServerContext, space: &mut AddressSpace) -> GatewayNodes {
        let (types_ns, ns) = {
            let mut type_tree = context.type_tree.write();
            // The companion specifications first: the gateway's types extend them.
            standard::import_companions(space, type_tree.namespaces_mut());
            space.import_node_set(&*self.types, type_tree.namespaces_mut());
            let namespaces = type_tree.namespaces_mut();
            (
                namespaces.add_namespace(TYPES_NAMESPACE),
                namespaces.add_namespace(INSTANCES_NAMESPACE),
            )
        };
        space.add_namespace(TYPES_NAMESPACE, types_ns);
        space.add_namespace(INSTANCES_NAMESPACE, ns);
        let catalog = self.bus.catalog().clone();
        let tag_variables = !self.tag_node_manager;
        let built = address_space::build(space, ns, types_ns, &self.model, &catalog, tag_variables);
        let devices: Vec<String> = self.model.devices.iter().map(|d| d.path.clone()).collect();
        let events_stored = self.history.as_ref().is_some_and(|h| h.events.is_some());
        super::events::set_up_notifiers(space, ns, &devices, events_stored);
        if let Some(history) = &self.history {
            let nodes = built.tag_nodes.iter().enumerate();
            let nodes = nodes.map(|(i, id)| (TagId(i as u32), id));
            crate::history::ua::mark_historized(space, history, &catalog, nodes);
        }
        let companions = fabrique_companion::uri::ALL
            .iter()
            .filter_map(|uri| Some((*uri, space.namespace_index(uri)?)));
        let namespaces = companions
            .chain([(TYPES_NAMESPACE, types_ns), (INSTANCES_NAMESPACE, ns)])
            .map(|(uri, index)| NamespaceMetadata {
                namespace_uri: uri.to_owned(),
                namespace_index: index,
                ..Default::default()
            })
            .collect();
        let watched = Arc::new(super::events::Watched::default());
        let event_history = self.history.as_ref().and_then(|h| h.events.clone());
        GatewayNodes {
            namespaces,
            ns,
            types_ns,
            tags: Arc::new(RwLock::new(TagNodes {
                by_tag: built.tag_nodes,
                // With the tag node manager, requests for tag variables never reach this node
                // manager: only the aliases need the way back (about 10 MB at 100,000 tags).
                by_node: if tag_variables {
                    built.node_tags
                } else {
                    HashMap::new()
                },
                aliases: Vec::new(),
            })),
            bus: self.bus,
            router: self.router,
            history: self.history,
            audit: super::events::Audit {
                subscriptions: context.subscriptions.clone(),
                ns,
                server_id: context.info.application_uri.to_string(),
                watched: watched.clone(),
                history: event_history,
            },
            watched,
            alarms: Default::default(),
            machines: self.model.machines,
            tag_variables,
            derived: Arc::default(),
            standard: OnceLock::new(),
        }
    }
}

/// Which node shows which tag, both ways; shared with the bridge, updated by a reload.
#[derive(Default)]
pub struct TagNodes {
    /// Index: `TagId`; a null NodeId for a retired tag.
    by_tag: Vec<NodeId>,
    by_node: HashMap<NodeId, TagId>,
    /// Standard variables that show a tag too (a robot axis' ActualPosition). Index: `TagId`,
    /// like `by_tag`, so the bridge pays an index, not a hash, per change; most are empty.
    aliases: Vec<Vec<NodeId>>,
}

impl TagNodes {
    pub fn node(&self, tag: TagId) -> Option<&NodeId> {
        self.by_tag.get(tag.index()).filter(|id| !id.is_null())
    }

    /// The standard variables that also show `tag`.
    pub fn aliases(&self, tag: TagId) -> &[NodeId] {
        self.aliases.get(tag.index()).map_or(&[], Vec::as_slice)
    }

    fn add_alias(&mut self, node: NodeId, tag: TagId) {
        self.by_node.insert(node.clone(), tag);
        if self.aliases.len() <= tag.index() {
            self.aliases.resize(tag.index() + 1, Vec::new());
        }
        self.aliases[tag.index()].push(node);
    }

    pub fn tag(&self, node: &NodeId) -> Option<TagId> {
        self.by_node.get(node).copied()
    }
}

/// What a reload changes in the address space.
#[derive(Default)]
pub struct NodeChanges {
    /// Device objects (paths) to remove with everything below them: removed and changed devices.
    pub removed_devices: Vec<String>,
    /// Tags whose nodes went with them.
    pub retired_tags: Vec<TagId>,
    /// Device objects to add (added and changed devices), with their nameplate.
    pub added_devices: Vec<DeviceNameplate>,
    /// Their tags, with the ids the grown catalogue gave them.
    pub added_tags: Vec<(TagId, TagSpec)>,
    /// Names of removed and changed devices that have a place in the standard structure.
    pub removed_machines: Vec<String>,
    /// Added and changed devices, to place in the standard structure if they have a kind.
    pub added_machines: Vec<MachineDecl>,
}

pub struct GatewayNodes {
    namespaces: Vec<NamespaceMetadata>,
    ns: u16,
    types_ns: u16,
    tags: Arc<RwLock<TagNodes>>,
    bus: PointBus,
    router: CommandRouter,
    history: Option<Arc<crate::history::Historian>>,
    /// Audit events for writes and calls.
    audit: super::events::Audit,
    /// Event monitored items on the gateway's notifiers (opcua/events.rs).
    watched: Arc<super::events::Watched>,
    /// The conditions' state, shared with the event emitter (alarms/).
    alarms: Arc<crate::alarms::Alarms>,
    /// Machines placed in the standard structure when the server starts (`init`).
    machines: Vec<MachineDecl>,
    /// Whether tag variables are nodes of this address space (false: the tag node manager's).
    tag_variables: bool,
    /// Their computed variables (empty until `init` has run); a reload swaps the list.
    derived: Arc<RwLock<Arc<Vec<Derived>>>>,
    /// What a reload needs to place machines: namespace 0's space and the indexes, from `init`.
    standard: OnceLock<(Arc<RwLock<AddressSpace>>, standard::Namespaces)>,
}

impl GatewayNodes {
    pub fn alarms(&self) -> Arc<crate::alarms::Alarms> {
        self.alarms.clone()
    }

    /// Who watches which notifier, for the event emitter.
    pub fn watched(&self) -> Arc<super::events::Watched> {
        self.watched.clone()
    }

    /// The standard variables computed from the bus (empty until the server has started).
    pub fn derived(&self) -> Arc<RwLock<Arc<Vec<Derived>>>> {
        self.derived.clone()
    }

    /// The tag ↔ node maps, kept current across reloads.
    pub fn tag_nodes(&self) -> Arc<RwLock<TagNodes>> {
        self.tags.clone()
    }

    /// Apply a reload to the address space: removed devices' nodes go, added ones appear.
    /// Nodes of other devices are not touched, so monitored items on them keep working; a
    /// changed device's tag that kept its id keeps its NodeId, so its monitored items too.
    pub fn apply(
        &self,
        space: &RwLock<AddressSpace>,
        type_tree: &dyn TypeTree,
        changes: &NodeChanges,
    ) -> usize {
        let mut space = space.write();
        let mut tags = self.tags.write();
        let mut removed = 0;
        for path in &changes.removed_devices {
            removed += address_space::remove_subtree(&mut space, type_tree, self.ns, path);
        }
        for &tag in &changes.retired_tags {
            if let Some(node) = tags.by_tag.get_mut(tag.index()) {
                let node = std::mem::replace(node, NodeId::null());
                tags.by_node.remove(&node);
            }
            if let Some(aliases) = tags.aliases.get_mut(tag.index()) {
                for node in std::mem::take(aliases) {
                    tags.by_node.remove(&node);
                }
            }
        }
        if let Some((_, ns)) = self.standard.get() {
            for name in &changes.removed_machines {
                removed += standard::remove_machine(&mut space, type_tree, *ns, name);
            }
        }
        let specs: Vec<(TagId, &TagSpec)> =
            changes.added_tags.iter().map(|(t, s)| (*t, s)).collect();
        let added = address_space::add(
            &mut space,
            (self.ns, self.types_ns),
            &self.bus.catalog(),
            &changes.added_devices,
            &specs,
            self.tag_variables,
        );
        let devices: Vec<String> = changes
            .added_devices
            .iter()
            .map(|d| d.path.clone())
            .collect();
        let events_stored = self.history.as_ref().is_some_and(|h| h.events.is_some());
        super::events::set_up_notifiers(&mut space, self.ns, &devices, events_stored);
        if let Some(history) = &self.history {
            let nodes = added.iter().map(|(tag, id)| (*tag, id));
            crate::history::ua::mark_historized(&mut space, history, &self.bus.catalog(), nodes);
        }
        for (tag, node) in added {
            if tags.by_tag.len() <= tag.index() {
                tags.by_tag.resize(tag.index() + 1, NodeId::null());
            }
            tags.by_tag[tag.index()] = node.clone();
            if self.tag_variables {
                tags.by_node.insert(node, tag);
            }
        }
        // Added machines take their place in the standard structure, as at start.
        if let Some((core, ns)) = self.standard.get() {
            let core = core.read();
            let bindings = standard::build(
                &core,
                &mut space,
                *ns,
                &changes.added_machines,
                &self.bus.catalog(),
            );
            for (node, tag) in bindings.aliases {
                tags.add_alias(node, tag);
            }
            let mut derived: Vec<Derived> = self
                .derived
                .read()
                .iter()
                .filter(|d| d.nodes().iter().all(|n| space.node_exists(n)))
                .cloned()
                .collect();
            standard::live::write_changed(&bindings.derived, &self.bus, &mut space);
            derived.extend(bindings.derived);
            *self.derived.write() = Arc::new(derived);
        }
        removed
    }
}

/// A write that passed the server's checks and now waits for its device.
struct PendingWrite {
    index: usize,
    tag: TagId,
    value: Value,
}

/// Drop the timestamps the client did not ask for.
pub(super) fn keep_timestamps(mut value: DataValue, wanted: TimestampsToReturn) -> DataValue {
    match wanted {
        TimestampsToReturn::Source => value.server_timestamp = None,
        TimestampsToReturn::Server => value.source_timestamp = None,
        TimestampsToReturn::Neither | TimestampsToReturn::Invalid => {
            value.source_timestamp = None;
            value.server_timestamp = None;
        }
        TimestampsToReturn::Both => {}
    }
    value
}

pub(super) fn write_status(error: &WriteError) -> StatusCode {
    match error {
        WriteError::NotWritable => StatusCode::BadNotWritable,
        WriteError::OutOfRange { .. } => StatusCode::BadOutOfRange,
        WriteError::TypeMismatch(_) => StatusCode::BadTypeMismatch,
        WriteError::NotConnected => StatusCode::BadNoCommunication,
        WriteError::Refused(_) => StatusCode::BadDeviceFailure,
        WriteError::Timeout => StatusCode::BadTimeout,
    }
}

fn call_status(error: &CallError) -> StatusCode {
    match error {
        CallError::UnknownMethod(_) => StatusCode::BadMethodInvalid,
        CallError::InvalidArgument(_) => StatusCode::BadInvalidArgument,
        CallError::Refused(_) => StatusCode::BadInvalidState,
        CallError::Timeout => StatusCode::BadTimeout,
        CallError::Status(status, _) => *status,
    }
}

#[async_trait]
impl InMemoryNodeManagerImpl for GatewayNodes {
    /// The standard structure needs namespace 0's type definitions, which the core node
    /// manager holds: built here, once every node manager exists.
    async fn init(&self, space: &mut AddressSpace, context: ServerContext) {
        let started = std::time::Instant::now();
        let Some(core) = context.node_managers.get_of_type::<CoreNodeManager>() else {
            tracing::error!("no core node manager: the standard address space is not built");
            return;
        };
        let Some(ns) = standard::namespaces(space, self.ns, self.types_ns) else {
            tracing::error!(
                "companion namespaces missing: the standard address space is not built"
            );
            return;
        };
        if self.owns_server_events() {
            super::events::server_history_read(&mut core.address_space().write());
        }
        let core_space = core.address_space().read();
        let bindings = standard::build(&core_space, space, ns, &self.machines, &self.bus.catalog());
        let build_ms = started.elapsed().as_millis() as u64;
        // The server checks itself: a violation is a bug of ours (or of a partner's axes list).
        let mut violations = standard::check(&core_space, space, ns, false);
        if !self.tag_variables {
            // Tag variables are the tag node manager's, not nodes of this space; the dry run
            // (`fabrique-gateway check`) builds them and checks them.
            let catalog = self.bus.catalog();
            violations.retain(|v| super::tags::ids::parse(self.ns, &catalog, &v.node).is_none());
        }
        for v in violations.iter().take(20) {
            tracing::error!(path = %v.path, node = %v.node, problem = %v.problem, "standard address space does not conform");
        }
        tracing::info!(
            machines = self
                .machines
                .iter()
                .filter(|m| m.shape.kind.is_some())
                .count(),
            violations = violations.len(),
            build_ms,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "standard address space built"
        );
        let mut tags = self.tags.write();
        for (node, tag) in bindings.aliases {
            tags.add_alias(node, tag);
        }
        standard::live::write_changed(&bindings.derived, &self.bus, space);
        *self.derived.write() = Arc::new(bindings.derived);
        let _ = self.standard.set((core.address_space().clone(), ns));
    }

    fn name(&self) -> &str {
        "fabrique"
    }

    /// ConditionRefresh replays the gateway's conditions (alarms/refresh.rs).
    fn serves_condition_refresh(&self) -> bool {
        true
    }

    /// HistoryReadEvents on `Server`: every stored event of the gateway.
    fn owns_server_events(&self) -> bool {
        self.history.as_ref().is_some_and(|h| h.events.is_some())
    }

    fn namespaces(&self) -> Vec<NamespaceMetadata> {
        self.namespaces.clone()
    }

    async fn read_values(
        &self,
        context: &RequestContext,
        space: &RwLock<AddressSpace>,
        nodes: &[&ParsedReadValueId],
        max_age: f64,
        timestamps_to_return: TimestampsToReturn,
    ) -> Vec<DataValue> {
        let space = space.read();
        let tags = self.tags.read();
        let catalog = self.bus.catalog();
        let now = DateTime::now();
        nodes
            .iter()
            .map(|node| {
                let tag = tags.tag(&node.node_id);
                let entry = tag.and_then(|t| catalog.get(t).map(|e| (t, e)));
                match entry {
                    Some((tag, entry)) if node.attribute_id == AttributeId::Value => {
                        if let Err(status) = space.validate_node_read(context, node) {
                            return DataValue {
                                status: Some(status),
                                ..DataValue::null()
                            };
                        }
                        let value = data_value(entry.spec.data_type, &self.bus.latest(tag), now);
                        keep_timestamps(value, timestamps_to_return)
                    }
                    _ => space.read(context, node, max_age, timestamps_to_return),
                }
            })
            .collect()
    }

    async fn write(
        &self,
        context: &RequestContext,
        space: &RwLock<AddressSpace>,
        nodes_to_write: &mut [&mut WriteNode],
    ) -> Result<(), StatusCode> {
        // 0. Only operators and admins write (viewers also see no write bit in their
        // UserAccessLevel); a denied write changes nothing.
        let role = Role::of(&context.token);
        if !role.may_write() {
            tracing::info!(user = %context.token.0, nodes = nodes_to_write.len(), "write denied");
            for node in nodes_to_write.iter_mut() {
                node.set_status(StatusCode::BadUserAccessDenied);
                let status = StatusCode::BadUserAccessDenied;
                let node = &node.value().node_id;
                self.audit
                    .report(&context.token.0, Audited::Write { node, status });
            }
            return Ok(());
        }
        // 1. Check every write under the lock, without waiting on anything.
        let mut pending = Vec::new();
        {
            let catalog = self.bus.catalog();
            let mut space = space.write();
            let type_tree = context.type_tree.read();
            for (index, node) in nodes_to_write.iter_mut().enumerate() {
                let write = node.value();
                if let Err(status) = space.validate_node_write(context, write, &*type_tree) {
                    node.set_status(status);
                    continue;
                }
                let Some(tag) = self.tags.read().tag(&write.node_id) else {
                    node.set_status(StatusCode::BadNotWritable);
                    continue;
                };
                match super::tags::variable::value_to_write(&catalog, tag, write) {
                    Ok(value) => pending.push(PendingWrite { index, tag, value }),
                    Err(status) => node.set_status(status),
                }
            }
        }
        // 2. Ask the devices, all at once. An adapter publishes the accepted value on the bus
        // before it answers, so a read right after this write already sees it.
        let answers = join_all(
            pending
                .iter()
                .map(|p| self.router.write(p.tag, p.value.clone())),
        )
        .await;
        for (write, answer) in pending.into_iter().zip(answers) {
            let status = match answer {
                Ok(()) => StatusCode::Good,
                Err(error) => {
                    let node = self
                        .tags
                        .read()
                        .node(write.tag)
                        .cloned()
                        .unwrap_or_default();
                    tracing::info!(%node, %error, "write refused");
                    write_status(&error)
                }
            };
            nodes_to_write[write.index].set_status(status);
            let node = &nodes_to_write[write.index].value().node_id;
            self.audit
                .report(&context.token.0, Audited::Write { node, status });
        }
        Ok(())
    }

    async fn call(
        &self,
        context: &RequestContext,
        _space: &RwLock<AddressSpace>,
        methods_to_call: &mut [&mut &mut MethodCall],
    ) -> Result<(), StatusCode> {
        let role = Role::of(&context.token);
        for call in methods_to_call.iter_mut() {
            if crate::alarms::methods::is_condition_method(call.method_id()) {
                let may = role.may_write();
                crate::alarms::methods::serve(&self.alarms, self.ns, context, may, call).await;
                continue;
            }
            // Whatever the catalogue declares now: methods a reload added are callable, those
            // of a removed device are not.
            let method = super::tags::ids::path_of(self.ns, call.method_id())
                .filter(|path| self.bus.catalog().method(path).is_some())
                .map(str::to_owned);
            let Some(method) = method else {
                call.set_status(StatusCode::BadMethodInvalid);
                continue;
            };
            let method = &method;
            if !role.may_call(method) {
                tracing::info!(user = %context.token.0, %method, "method call denied");
                call.set_status(StatusCode::BadUserAccessDenied);
                continue;
            }
            let args: Option<Vec<Value>> = call
                .arguments()
                .iter()
                .map(|a| match a {
                    Variant::String(s) => Some(Value::text(s.as_ref())),
                    Variant::Empty => Some(Value::text("")),
                    Variant::UInt32(n) => Some(Value::UInt((*n).into())),
                    Variant::Int32(n) => Some(Value::Int((*n).into())),
                    _ => None,
                })
                .collect();
            let Some(args) = args else {
                call.set_status(StatusCode::BadTypeMismatch);
                continue;
            };
            match self.router.call_method(method.clone(), args).await {
                Ok(outputs) => {
                    call.set_outputs(outputs.iter().map(natural_variant).collect());
                    call.set_status(StatusCode::Good);
                }
                Err(error) => {
                    tracing::info!(%method, %error, "method call refused");
                    call.set_status(call_status(&error));
                }
            }
        }
        for call in methods_to_call.iter() {
            let (object, method) = (call.object_id(), call.method_id());
            let status = call.status();
            self.audit.report(
                &context.token.0,
                Audited::Call {
                    object,
                    method,
                    status,
                },
            );
        }
        Ok(())
    }

    // Event monitored items on the gateway's notifiers, counted for the event emitter.

    async fn create_event_monitored_items(
        &self,
        _context: &RequestContext,
        _space: &RwLock<AddressSpace>,
        items: &mut [&mut &mut CreateMonitoredItem],
    ) {
        for item in items.iter() {
            self.watched.add(&item.item_to_monitor().node_id);
        }
    }

    async fn delete_monitored_items(&self, _context: &RequestContext, items: &[&MonitoredItemRef]) {
        for item in items {
            if item.attribute() == AttributeId::EventNotifier {
                self.watched.remove(item.node_id());
            }
        }
    }

    // HistoryRead of tag variables: the historian (history/ua.rs) does the work.

    async fn history_read_raw_modified(
        &self,
        _context: &RequestContext,
        details: &ReadRawModifiedDetails,
        nodes: &mut [&mut &mut HistoryNode],
        timestamps_to_return: TimestampsToReturn,
    ) -> Result<(), StatusCode> {
        let history = self
            .history
            .as_ref()
            .ok_or(StatusCode::BadHistoryOperationUnsupported)?;
        let resolve = |id: &NodeId| self.tags.read().tag(id);
        crate::history::ua::blocking(|| {
            crate::history::ua::read_raw(history, details, nodes, timestamps_to_return, &resolve)
        });
        Ok(())
    }

    async fn history_read_at_time(
        &self,
        _context: &RequestContext,
        details: &ReadAtTimeDetails,
        nodes: &mut [&mut &mut HistoryNode],
        timestamps_to_return: TimestampsToReturn,
    ) -> Result<(), StatusCode> {
        let history = self
            .history
            .as_ref()
            .ok_or(StatusCode::BadHistoryOperationUnsupported)?;
        let resolve = |id: &NodeId| self.tags.read().tag(id);
        crate::history::ua::blocking(|| {
            crate::history::ua::read_at_time(
                history,
                details,
                nodes,
                timestamps_to_return,
                &resolve,
            )
        });
        Ok(())
    }

    async fn history_read_processed(
        &self,
        _context: &RequestContext,
        details: &ReadProcessedDetails,
        nodes: &mut [&mut &mut HistoryNode],
        timestamps_to_return: TimestampsToReturn,
    ) -> Result<(), StatusCode> {
        let history = self
            .history
            .as_ref()
            .ok_or(StatusCode::BadHistoryOperationUnsupported)?;
        let resolve = |id: &NodeId| self.tags.read().tag(id);
        crate::history::ua::blocking(|| {
            crate::history::ua::read_processed(
                history,
                details,
                nodes,
                timestamps_to_return,
                &resolve,
            )
        });
        Ok(())
    }

    // HistoryReadEvents on the notifiers: the stored events (history/ua_events.rs).
    async fn history_read_events(
        &self,
        context: &RequestContext,
        details: &ReadEventDetails,
        nodes: &mut [&mut &mut HistoryNode],
        _timestamps_to_return: TimestampsToReturn,
    ) -> Result<(), StatusCode> {
        let history = self
            .history
            .as_ref()
            .ok_or(StatusCode::BadHistoryOperationUnsupported)?;
        let store = history
            .events
            .as_deref()
            .ok_or(StatusCode::BadHistoryOperationUnsupported)?;
        let (ns, types_ns) = (self.ns, self.types_ns);
        let build =
            |e: &crate::history::events::StoredEvent| super::events::stored_event(types_ns, ns, e);
        let server: NodeId = opcua::types::ObjectId::Server.into();
        let reported_on = |node: &NodeId, e: &crate::history::events::StoredEvent| {
            *node == server || super::events::notifiers(ns, &e.source).contains(node)
        };
        let source = crate::history::ua_events::EventSource {
            store,
            build: &build,
            reported_on: &reported_on,
            max_per_read: history.config.max_values_per_read as usize,
        };
        let type_tree = context.type_tree().read();
        crate::history::ua::blocking(|| {
            crate::history::ua_events::read_events(&source, details, nodes, &*type_tree)
        });
        Ok(())
    }
}
