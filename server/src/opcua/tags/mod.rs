//! The tag node manager: bus tags served from the tag catalogue and the bus's latest table,
//! through async-opcua's raw `NodeManager` trait, with no node object per tag.
//!
//! With `opcua.tag_node_manager = true` the in-memory address space keeps the objects (site,
//! stations, devices, steps, orders, the companion structure) and this node manager answers for
//! every tag variable and its EngineeringUnits/EURange properties: Browse (including the
//! references from the in-memory objects to their tags), Read of every attribute,
//! TranslateBrowsePaths, Write (confirmed by the device, as before), monitored items and
//! HistoryRead. A node is built only for the request that needs one of its attributes; a Value
//! read is one lookup in the bus's latest table. NodeIds are the same strings as the in-memory
//! path's, so clients see no difference.

mod browse;
pub mod ids;
pub mod variable;

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use fabrique_adapters::{PointBus, TagCatalog, TagId, Value};

use super::address_space::{browse_namespace, TYPES_NAMESPACE};
use futures::future::join_all;
use opcua::nodes::{DefaultTypeTree, NodeType};
use opcua::server::address_space::{
    is_supported_data_encoding, read_node_value, validate_node_read, validate_node_write,
};
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::InMemoryNodeManager;
use opcua::server::node_manager::{
    BrowseNode, BrowsePathItem, ExternalReferenceRequest, HistoryNode, NodeManager,
    NodeManagerBuilder, ParsedReadValueId, ReadNode, RequestContext, ServerContext, WriteNode,
};
use opcua::server::CreateMonitoredItem;
use opcua::types::{
    AttributeId, DataValue, DateTime, NodeId, ReadAtTimeDetails, ReadProcessedDetails,
    ReadRawModifiedDetails, StatusCode, TimestampsToReturn,
};

use super::address_space::INSTANCES_NAMESPACE;
use super::convert::data_value;
use super::events::{Audit, Audited};
use super::nodes::{keep_timestamps, write_status, GatewayNodes};
use super::security::Role;
use crate::commands::CommandRouter;
use ids::{Children, TagNode};

/// What the tag node manager needs; the namespace index is resolved at `init`, once the
/// in-memory node manager has registered the instances namespace.
pub struct TagNodeManagerBuilder {
    pub bus: PointBus,
    pub router: CommandRouter,
    pub history: Option<Arc<crate::history::Historian>>,
}

impl NodeManagerBuilder for TagNodeManagerBuilder {
    fn build(
        self: Box<Self>,
        context: ServerContext,
    ) -> Arc<opcua::server::node_manager::DynNodeManager> {
        Arc::new(TagNodeManager {
            bus: self.bus,
            router: self.router,
            history: self.history,
            ns: OnceLock::new(),
            types_ns: OnceLock::new(),
            audit: OnceLock::new(),
            children: Children::default(),
            subscriptions: context.subscriptions.clone(),
            server_id: context.info.application_uri.to_string(),
        })
    }
}

pub struct TagNodeManager {
    bus: PointBus,
    router: CommandRouter,
    history: Option<Arc<crate::history::Historian>>,
    /// The instances namespace index (set by `init`).
    ns: OnceLock<u16>,
    types_ns: OnceLock<u16>,
    /// Audit events for writes, on the same notifiers as the in-memory node manager's.
    audit: OnceLock<Audit>,
    children: Children,
    subscriptions: Arc<opcua::server::SubscriptionCache>,
    server_id: String,
}

/// A write that passed the checks and now waits for its device.
struct PendingWrite {
    index: usize,
    tag: TagId,
    value: Value,
}

impl TagNodeManager {
    fn ns(&self) -> Option<u16> {
        self.ns.get().copied()
    }

    /// The instances and the types namespaces (a tag's BrowseName is in one of them).
    fn names(&self) -> Option<(u16, u16)> {
        Some((self.ns()?, self.types_ns.get().copied()?))
    }

    fn parse(&self, catalog: &TagCatalog, id: &NodeId) -> Option<TagNode> {
        ids::parse(self.ns()?, catalog, id)
    }

    fn historized(&self, catalog: &TagCatalog, tag: TagId) -> bool {
        self.history
            .as_ref()
            .is_some_and(|h| h.historizes(catalog, tag))
    }

    /// The node `node` names, built for this request.
    fn node(&self, catalog: &TagCatalog, node: TagNode) -> Option<NodeType> {
        let (ns, types_ns) = self.names()?;
        let spec = &catalog.get(node.tag())?.spec;
        Some(match node {
            TagNode::Variable(tag) => NodeType::Variable(Box::new(variable::variable(
                ns,
                browse_namespace(ns, types_ns, catalog, &spec.path),
                spec,
                self.historized(catalog, tag),
            ))),
            TagNode::Property(_, property) => NodeType::Variable(Box::new(
                variable::property_builder(ns, spec, property)?.build(),
            )),
        })
    }

    /// Read one attribute, as the in-memory address space would have, with the value of a
    /// tag variable from the bus.
    fn read_one(
        &self,
        context: &RequestContext,
        catalog: &TagCatalog,
        read: &ParsedReadValueId,
        max_age: f64,
        timestamps_to_return: TimestampsToReturn,
        now: DateTime,
    ) -> DataValue {
        let Some(node) = self.parse(catalog, &read.node_id) else {
            return status_value(StatusCode::BadNodeIdUnknown);
        };
        match (node, read.attribute_id) {
            (TagNode::Variable(tag), AttributeId::Value) => {
                // Every tag variable is readable by every user (the authenticator only takes
                // write bits away), so the only check left is the encoding.
                if !is_supported_data_encoding(&read.data_encoding) {
                    return status_value(StatusCode::BadDataEncodingInvalid);
                }
                let Some(entry) = catalog.get(tag) else {
                    return status_value(StatusCode::BadNodeIdUnknown);
                };
                let value = data_value(entry.spec.data_type, &self.bus.latest(tag), now);
                keep_timestamps(value, timestamps_to_return)
            }
            _ => {
                let Some(node) = self.node(catalog, node) else {
                    return status_value(StatusCode::BadNodeIdUnknown);
                };
                if let Err(status) = validate_node_read(&node, context, read) {
                    return status_value(status);
                }
                read_node_value(&node, context, read, max_age, timestamps_to_return)
            }
        }
    }

    fn history_nodes<'a, 'b>(
        &self,
        context: &RequestContext,
        nodes: &'b mut [&'a mut HistoryNode],
    ) -> Vec<&'b mut &'a mut HistoryNode> {
        // As the in-memory node manager checks: a variable the user may read the history of.
        let catalog = self.bus.catalog();
        let mut valid = Vec::with_capacity(nodes.len());
        for node in nodes.iter_mut() {
            let Some(tag_node) = self.parse(&catalog, node.node_id()) else {
                node.set_status(StatusCode::BadNodeIdUnknown);
                continue;
            };
            let Some(built) = self.node(&catalog, tag_node) else {
                node.set_status(StatusCode::BadNodeIdUnknown);
                continue;
            };
            let level = opcua::server::address_space::user_access_level(context, &built);
            if !level.contains(opcua::nodes::AccessLevel::HISTORY_READ) {
                node.set_status(StatusCode::BadUserAccessDenied);
                continue;
            }
            valid.push(node);
        }
        valid
    }

    fn resolve(&self, id: &NodeId) -> Option<TagId> {
        match self.parse(&self.bus.catalog(), id)? {
            TagNode::Variable(tag) => Some(tag),
            TagNode::Property(..) => None,
        }
    }
}

fn status_value(status: StatusCode) -> DataValue {
    DataValue {
        status: Some(status),
        ..DataValue::null()
    }
}

#[async_trait]
impl NodeManager for TagNodeManager {
    fn owns_node(&self, id: &NodeId) -> bool {
        self.parse(&self.bus.catalog(), id).is_some()
    }

    fn name(&self) -> &str {
        "fabrique-tags"
    }

    fn namespaces_for_user(&self, _context: &RequestContext) -> Vec<NamespaceMetadata> {
        // The in-memory node manager declares the instances namespace.
        Vec::new()
    }

    async fn init(&self, type_tree: &mut DefaultTypeTree, context: ServerContext) {
        let Some(ns) = type_tree.namespaces().get_index(INSTANCES_NAMESPACE) else {
            tracing::error!(
                "the instances namespace is missing: the tag node manager serves nothing"
            );
            return;
        };
        let _ = self.ns.set(ns);
        if let Some(types_ns) = type_tree.namespaces().get_index(TYPES_NAMESPACE) {
            let _ = self.types_ns.set(types_ns);
        }
        let watched = context
            .node_managers
            .get_of_type::<InMemoryNodeManager<GatewayNodes>>()
            .map(|nodes| nodes.inner().watched())
            .unwrap_or_default();
        let _ = self.audit.set(Audit {
            subscriptions: self.subscriptions.clone(),
            ns,
            server_id: self.server_id.clone(),
            watched,
            history: self.history.as_ref().and_then(|h| h.events.clone()),
        });
        tracing::info!(
            tags = self.bus.catalog().len(),
            "tag variables served by the tag node manager"
        );
    }

    async fn resolve_external_references(
        &self,
        _context: &RequestContext,
        items: &mut [&mut ExternalReferenceRequest],
    ) {
        let Some(names) = self.names() else { return };
        let catalog = self.bus.catalog();
        for item in items.iter_mut() {
            if let Some(node) = ids::parse(names.0, &catalog, item.node_id()) {
                if let Some(meta) = browse::metadata(names, &catalog, node) {
                    item.set(meta);
                }
            }
        }
    }

    async fn browse(
        &self,
        context: &RequestContext,
        nodes_to_browse: &mut [BrowseNode],
    ) -> Result<(), StatusCode> {
        let Some(names) = self.names() else {
            return Ok(());
        };
        let catalog = self.bus.catalog();
        let children = self.children.of(&catalog);
        let type_tree = context.get_type_tree_for_user();
        for node in nodes_to_browse.iter_mut() {
            browse::browse(names, &catalog, &children, type_tree.get(), node);
        }
        Ok(())
    }

    async fn translate_browse_paths_to_node_ids(
        &self,
        context: &RequestContext,
        nodes: &mut [&mut BrowsePathItem],
    ) -> Result<(), StatusCode> {
        let Some(names) = self.names() else {
            return Ok(());
        };
        let catalog = self.bus.catalog();
        let children = self.children.of(&catalog);
        let type_tree = context.get_type_tree_for_user();
        for item in nodes.iter_mut() {
            browse::translate(names, &catalog, &children, type_tree.get(), context, item);
        }
        Ok(())
    }

    async fn read(
        &self,
        context: &RequestContext,
        max_age: f64,
        timestamps_to_return: TimestampsToReturn,
        nodes_to_read: &mut [&mut ReadNode],
    ) -> Result<(), StatusCode> {
        let catalog = self.bus.catalog();
        let now = DateTime::now();
        for node in nodes_to_read.iter_mut() {
            let value = self.read_one(
                context,
                &catalog,
                node.node(),
                max_age,
                timestamps_to_return,
                now,
            );
            node.set_result(value);
        }
        Ok(())
    }

    async fn write(
        &self,
        context: &RequestContext,
        nodes_to_write: &mut [&mut WriteNode],
    ) -> Result<(), StatusCode> {
        let audit = self.audit.get();
        let report = |node: &NodeId, status: StatusCode| {
            if let Some(audit) = audit {
                audit.report(&context.token.0, Audited::Write { node, status });
            }
        };
        // The same steps, checks and status codes as the in-memory path (nodes.rs).
        let role = Role::of(&context.token);
        if !role.may_write() {
            tracing::info!(user = %context.token.0, nodes = nodes_to_write.len(), "write denied");
            for node in nodes_to_write.iter_mut() {
                node.set_status(StatusCode::BadUserAccessDenied);
                report(&node.value().node_id, StatusCode::BadUserAccessDenied);
            }
            return Ok(());
        }
        let catalog = self.bus.catalog();
        let mut pending = Vec::new();
        {
            let type_tree = context.get_type_tree_for_user();
            for (index, node) in nodes_to_write.iter_mut().enumerate() {
                let write = node.value();
                let parsed = self.parse(&catalog, &write.node_id);
                let Some(built) = parsed.and_then(|n| self.node(&catalog, n)) else {
                    node.set_status(StatusCode::BadNodeIdUnknown);
                    continue;
                };
                if let Err(status) = validate_node_write(&built, context, write, type_tree.get()) {
                    node.set_status(status);
                    continue;
                }
                let Some(TagNode::Variable(tag)) = parsed else {
                    node.set_status(StatusCode::BadNotWritable);
                    continue;
                };
                match variable::value_to_write(&catalog, tag, write) {
                    Ok(value) => pending.push(PendingWrite { index, tag, value }),
                    Err(status) => node.set_status(status),
                }
            }
        }
        // Ask the devices, all at once; an adapter publishes the accepted value on the bus
        // before it answers, so a read right after this write already sees it.
        let answers = join_all(
            pending
                .iter()
                .map(|p| self.router.write(p.tag, p.value.clone())),
        )
        .await;
        for (write, answer) in pending.into_iter().zip(answers) {
            let node = &nodes_to_write[write.index].value().node_id;
            let status = match answer {
                Ok(()) => StatusCode::Good,
                Err(error) => {
                    tracing::info!(%node, %error, "write refused");
                    write_status(&error)
                }
            };
            report(node, status);
            nodes_to_write[write.index].set_status(status);
        }
        Ok(())
    }

    async fn create_monitored_items(
        &self,
        context: &RequestContext,
        items: &mut [&mut CreateMonitoredItem],
    ) -> Result<(), StatusCode> {
        // Values arrive from the bus (bridge.rs notifies the subscriptions by NodeId); here
        // only the initial value, as the in-memory node manager gives it.
        let catalog = self.bus.catalog();
        let now = DateTime::now();
        for item in items.iter_mut() {
            let read = item.item_to_monitor();
            if read.attribute_id == AttributeId::Value {
                let value =
                    self.read_one(context, &catalog, read, 0.0, TimestampsToReturn::Both, now);
                if value.status() != StatusCode::BadAttributeIdInvalid {
                    item.set_initial_value(value);
                }
                item.set_status(StatusCode::Good);
                continue;
            }
            let built = self
                .parse(&catalog, &read.node_id)
                .and_then(|n| self.node(&catalog, n));
            let Some(built) = built else {
                item.set_status(StatusCode::BadNodeIdUnknown);
                continue;
            };
            if let Err(status) = validate_node_read(&built, context, read) {
                item.set_status(status);
                continue;
            }
            if read.attribute_id == AttributeId::EventNotifier {
                // A variable is no event notifier.
                item.set_status(StatusCode::BadAttributeIdInvalid);
                continue;
            }
            let value = read_node_value(&built, context, read, 0.0, item.timestamps_to_return());
            if value.status() != StatusCode::BadAttributeIdInvalid {
                item.set_initial_value(value);
            }
            item.set_status(StatusCode::Good);
        }
        Ok(())
    }

    // HistoryRead of tag variables: the historian (history/ua.rs) does the work.

    async fn history_read_raw_modified(
        &self,
        context: &RequestContext,
        details: &ReadRawModifiedDetails,
        nodes: &mut [&mut HistoryNode],
        timestamps_to_return: TimestampsToReturn,
    ) -> Result<(), StatusCode> {
        let mut nodes = self.history_nodes(context, nodes);
        let history = self
            .history
            .as_ref()
            .ok_or(StatusCode::BadHistoryOperationUnsupported)?;
        let resolve = |id: &NodeId| self.resolve(id);
        crate::history::ua::blocking(|| {
            crate::history::ua::read_raw(
                history,
                details,
                &mut nodes,
                timestamps_to_return,
                &resolve,
            )
        });
        Ok(())
    }

    async fn history_read_at_time(
        &self,
        context: &RequestContext,
        details: &ReadAtTimeDetails,
        nodes: &mut [&mut HistoryNode],
        timestamps_to_return: TimestampsToReturn,
    ) -> Result<(), StatusCode> {
        let mut nodes = self.history_nodes(context, nodes);
        let history = self
            .history
            .as_ref()
            .ok_or(StatusCode::BadHistoryOperationUnsupported)?;
        let resolve = |id: &NodeId| self.resolve(id);
        crate::history::ua::blocking(|| {
            crate::history::ua::read_at_time(
                history,
                details,
                &mut nodes,
                timestamps_to_return,
                &resolve,
            )
        });
        Ok(())
    }

    async fn history_read_processed(
        &self,
        context: &RequestContext,
        details: &ReadProcessedDetails,
        nodes: &mut [&mut HistoryNode],
        timestamps_to_return: TimestampsToReturn,
    ) -> Result<(), StatusCode> {
        let mut nodes = self.history_nodes(context, nodes);
        let history = self
            .history
            .as_ref()
            .ok_or(StatusCode::BadHistoryOperationUnsupported)?;
        let resolve = |id: &NodeId| self.resolve(id);
        crate::history::ua::blocking(|| {
            crate::history::ua::read_processed(
                history,
                details,
                &mut nodes,
                timestamps_to_return,
                &resolve,
            )
        });
        Ok(())
    }
}
