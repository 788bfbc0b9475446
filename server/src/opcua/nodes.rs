//! The gateway's node manager: the in-memory address space of async-opcua for browsing and
//! reading, with writes and method calls forwarded to adapters.
//!
//! Tag values are not stored in the address space: reads come from the bus's latest table, so
//! a value is never older than the bus. Writes go to the owning adapter; the value changes
//! only once the device has accepted it (the adapter publishes it before answering), and a
//! refusal reaches the client as a Bad status code.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use fabrique_adapters::{CallError, PointBus, TagId, Value, WriteError};
use futures::future::join_all;
use opcua::nodes::NodeSetImport;
use opcua::server::address_space::AddressSpace;
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{
    InMemoryNodeManagerImpl, InMemoryNodeManagerImplBuilder,
};
use opcua::server::node_manager::{
    MethodCall, ParsedReadValueId, RequestContext, ServerContext, WriteNode,
};
use opcua::sync::RwLock;
use opcua::types::{
    AttributeId, DataValue, DateTime, NodeId, StatusCode, TimestampsToReturn, Variant,
};

use super::address_space::{self, StaticModel, INSTANCES_NAMESPACE, TYPES_NAMESPACE};
use super::convert::{data_value, natural_variant};
use super::security::Role;
use crate::commands::CommandRouter;
use fabrique_adapters::ua::value_of;

/// Everything needed to build the address space when the server starts.
pub struct GatewayNodesBuilder {
    pub types: Box<dyn NodeSetImport>,
    pub model: StaticModel,
    pub bus: PointBus,
    pub router: CommandRouter,
}

impl InMemoryNodeManagerImplBuilder for GatewayNodesBuilder {
    type Impl = GatewayNodes;

    fn build(self, context: ServerContext, space: &mut AddressSpace) -> GatewayNodes {
        let (types_ns, ns) = {
            let mut type_tree = context.type_tree.write();
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
        let built = address_space::build(space, ns, types_ns, &self.model, &catalog);
        // A method goes to the adapter that owns the tags next to it (`Line/State` for
        // `Line/SubmitOrder`, `Stop/Town` for `Stop/SetStop`).
        let method_anchors = built
            .methods
            .values()
            .filter_map(|method| {
                let parent = method.rsplit_once('/')?.0;
                let prefix = format!("{parent}/");
                let anchor = catalog.lookup(&format!("{parent}/State")).or_else(|| {
                    catalog
                        .iter()
                        .find(|(_, e)| e.spec.path.starts_with(&prefix))
                        .map(|(t, _)| t)
                })?;
                Some((method.clone(), anchor))
            })
            .collect();
        let namespaces = [(TYPES_NAMESPACE, types_ns), (INSTANCES_NAMESPACE, ns)]
            .into_iter()
            .map(|(uri, index)| NamespaceMetadata {
                namespace_uri: uri.to_owned(),
                namespace_index: index,
                ..Default::default()
            })
            .collect();
        GatewayNodes {
            namespaces,
            tag_nodes: built.tag_nodes.into(),
            node_tags: built.node_tags,
            methods: built.methods,
            method_anchors,
            bus: self.bus,
            router: self.router,
        }
    }
}

pub struct GatewayNodes {
    namespaces: Vec<NamespaceMetadata>,
    tag_nodes: Arc<[NodeId]>,
    node_tags: HashMap<NodeId, TagId>,
    methods: HashMap<NodeId, String>,
    /// Method (`Parent/Name`) → a tag of the adapter that serves it.
    method_anchors: HashMap<String, TagId>,
    bus: PointBus,
    router: CommandRouter,
}

impl GatewayNodes {
    /// NodeId of every tag, indexed by `TagId`.
    pub fn tag_nodes(&self) -> Arc<[NodeId]> {
        self.tag_nodes.clone()
    }
}

/// A write that passed the server's checks and now waits for its device.
struct PendingWrite {
    index: usize,
    tag: TagId,
    value: Value,
}

/// Drop the timestamps the client did not ask for.
fn keep_timestamps(mut value: DataValue, wanted: TimestampsToReturn) -> DataValue {
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

fn write_status(error: &WriteError) -> StatusCode {
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
    }
}

#[async_trait]
impl InMemoryNodeManagerImpl for GatewayNodes {
    async fn init(&self, _space: &mut AddressSpace, _context: ServerContext) {}

    fn name(&self) -> &str {
        "fabrique"
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
        let catalog = self.bus.catalog();
        let now = DateTime::now();
        nodes
            .iter()
            .map(|node| {
                let tag = self.node_tags.get(&node.node_id).copied();
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
                let Some(&tag) = self.node_tags.get(&write.node_id) else {
                    node.set_status(StatusCode::BadNotWritable);
                    continue;
                };
                if write.attribute_id != AttributeId::Value {
                    node.set_status(StatusCode::BadNotWritable);
                    continue;
                }
                if write.index_range.has_range() {
                    node.set_status(StatusCode::BadWriteNotSupported);
                    continue;
                }
                let Some(entry) = catalog.get(tag) else {
                    node.set_status(StatusCode::BadNodeIdUnknown);
                    continue;
                };
                let written = write.value.value.as_ref().unwrap_or(&Variant::Empty);
                let Some(value) = value_of(entry.spec.data_type, written) else {
                    node.set_status(StatusCode::BadTypeMismatch);
                    continue;
                };
                pending.push(PendingWrite { index, tag, value });
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
                    tracing::info!(node = %self.tag_nodes[write.tag.index()], %error, "write refused");
                    write_status(&error)
                }
            };
            nodes_to_write[write.index].set_status(status);
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
            let Some(method) = self.methods.get(call.method_id()) else {
                call.set_status(StatusCode::BadMethodInvalid);
                continue;
            };
            if !role.may_call(method) {
                tracing::info!(user = %context.token.0, %method, "method call denied");
                call.set_status(StatusCode::BadUserAccessDenied);
                continue;
            }
            let Some(&anchor) = self.method_anchors.get(method) else {
                call.set_status(StatusCode::BadNotImplemented);
                continue;
            };
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
            match self.router.call(anchor, method.clone(), args).await {
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
        Ok(())
    }
}
