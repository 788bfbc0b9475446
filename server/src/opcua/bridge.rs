//! Bus → subscriptions: every change on the bus reaches the monitored items watching its
//! variable.
//!
//! Tag values are not copied into the address space: reads are served from the bus's latest
//! table (see `GatewayNodes::read_values`), so a change costs one lookup in the subscription
//! cache, and a DataValue is built only for variables somebody monitors. Copying 100,000
//! values into the in-memory address space ten times a second cost more than a core.

use std::sync::Arc;

use fabrique_adapters::bus::BusEvent;
use fabrique_adapters::{PointBus, TagCatalog, Timestamp};
use opcua::server::SubscriptionCache;
use opcua::sync::RwLock;
use opcua::types::{AttributeId, DateTime};
use tokio_util::sync::CancellationToken;

use super::convert::data_value_at;
use super::nodes::TagNodes;
use fabrique_adapters::ua::date_time;

/// Bus batches handed to the subscriptions in one go, at most.
const MAX_BATCHES_PER_NOTIFY: usize = 64;

/// DataValues collected under one notifier, at most. A notifier keeps every value it is given
/// until it is dropped; taking 64 queued batches of 100,000 changes under one notifier held
/// 210 MB at 100,000 tags (BENCHMARKS.md, "Session 5"). 64 K values keep the cost of taking
/// the subscription locks negligible and the memory at a few MB.
const MAX_VALUES_PER_NOTIFIER: usize = 64 * 1024;

pub struct Bridge {
    pub bus: PointBus,
    /// Shared with the node manager: a reload adds and removes nodes.
    pub tag_nodes: Arc<RwLock<TagNodes>>,
    pub subscriptions: Arc<SubscriptionCache>,
}

/// Points of one batch usually share their timestamp; convert it once.
#[derive(Default)]
struct TimeCache(Option<(Timestamp, DateTime)>);

impl TimeCache {
    fn get(&mut self, t: Timestamp) -> DateTime {
        match self.0 {
            Some((cached, dt)) if cached == t => dt,
            _ => {
                let dt = date_time(t);
                self.0 = Some((t, dt));
                dt
            }
        }
    }
}

impl Bridge {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut changes = self.bus.subscribe();
        let mut pending = Vec::new();
        loop {
            // Take what is already queued too (several adapters may have flushed), and hand it
            // all to the subscriptions under one notifier rather than one per batch.
            let received = tokio::select! {
                _ = shutdown.cancelled() => break,
                received = changes.recv_many(&mut pending, MAX_BATCHES_PER_NOTIFY) => received,
            };
            if !received {
                break;
            }
            // The current catalogue each time: a reload may have added tags.
            self.notify(&self.bus.catalog(), &pending);
            pending.clear();
        }
    }

    fn notify(&self, catalog: &TagCatalog, events: &[BusEvent]) {
        let now = DateTime::now();
        let mut times = TimeCache::default();
        let tag_nodes = self.tag_nodes.read();
        let mut notifier = self.subscriptions.data_notifier();
        let mut held = 0;
        let updates = events.iter().flat_map(|event| match event {
            BusEvent::Changes(batch) => batch.as_slice(),
            BusEvent::Resync { state, .. } => state.as_slice(),
        });
        for update in updates {
            let Some(node) = tag_nodes.node(update.tag) else {
                continue;
            };
            // The tag's own variable, then the standard variables that show it too.
            for node in std::iter::once(node).chain(tag_nodes.aliases(update.tag)) {
                let Some(mut batch) = notifier.notify_for(node, AttributeId::Value) else {
                    continue;
                };
                let Some(entry) = catalog.get(update.tag) else {
                    continue;
                };
                let source =
                    (!update.point.timestamp.is_null()).then(|| times.get(update.point.timestamp));
                let value = data_value_at(entry.spec.data_type, &update.point, source, now);
                for (handle, _) in batch.entries() {
                    batch.data_value_to_item(value.clone(), handle);
                    held += 1;
                }
            }
            if held >= MAX_VALUES_PER_NOTIFIER {
                // Hand these over now (dropping the notifier submits them); the read lock is
                // released before it is taken again, so a waiting writer is not deadlocked.
                drop(notifier);
                notifier = self.subscriptions.data_notifier();
                held = 0;
            }
        }
    }
}
