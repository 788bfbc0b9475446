//! Bus → address space: every change on the bus becomes the variable's value, status and
//! source timestamp, and reaches the monitored items of every subscription.

use std::sync::Arc;

use fabrique_adapters::bus::BusEvent;
use fabrique_adapters::{PointBus, PointUpdate, TagCatalog};
use opcua::server::node_manager::memory::InMemoryNodeManager;
use opcua::server::SubscriptionCache;
use opcua::types::{DateTime, NodeId};
use tokio_util::sync::CancellationToken;

use super::convert::data_value;
use super::nodes::GatewayNodes;

pub struct Bridge {
    pub bus: PointBus,
    pub manager: Arc<InMemoryNodeManager<GatewayNodes>>,
    pub subscriptions: Arc<SubscriptionCache>,
}

impl Bridge {
    pub async fn run(self, shutdown: CancellationToken) {
        let nodes = self.manager.inner().tag_nodes();
        let catalog = self.bus.catalog().clone();
        // Subscribe before taking the snapshot: a change in between is seen twice, never lost.
        let mut changes = self.bus.subscribe();
        self.apply(&nodes, &catalog, &self.bus.snapshot());
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                event = changes.recv() => event,
            };
            match event {
                Some(BusEvent::Changes(batch)) => self.apply(&nodes, &catalog, &batch),
                Some(BusEvent::Resync { state, .. }) => self.apply(&nodes, &catalog, &state),
                None => break,
            }
        }
    }

    fn apply(&self, nodes: &[NodeId], catalog: &TagCatalog, updates: &[PointUpdate]) {
        let now = DateTime::now();
        let values = updates.iter().filter_map(|u| {
            let node = nodes.get(u.tag.index())?;
            let data_type = catalog.get(u.tag)?.spec.data_type;
            Some((node, None, data_value(data_type, &u.point, now)))
        });
        if let Err(status) = self.manager.set_values(&self.subscriptions, values) {
            tracing::error!(%status, "the address space refused an update from the bus");
        }
    }
}
