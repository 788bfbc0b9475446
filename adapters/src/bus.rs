//! The point bus: where adapters publish and every consumer reads.
//!
//! Two views of the same data:
//! - the **latest table**, one slot per tag, read by anyone at any time (OPC UA reads, a sink
//!   starting late, a consumer that fell behind);
//! - the **change stream**, batches of changes in publication order, fanned out to every
//!   subscriber through a bounded ring ([`tokio::sync::broadcast`]).
//!
//! Publishing costs one short lock per changed tag and one allocation per batch; a value equal
//! to the one already on the bus (same value, same quality) is dropped at the door, so
//! consumers only ever see real changes. The ring is bounded: a subscriber that falls more than
//! `capacity` batches behind is not allowed to hold memory hostage. It is told how many batches
//! it missed and resynchronises from the latest table, which is exactly what a latest-value
//! consumer (the OPC UA address space) needs.
//!
//! Memory is bounded by tags, not by time: the latest table holds one point per tag, and the
//! ring at most `capacity` batches, however far a subscriber falls behind. A batch is what an
//! adapter flushes at once (one poll, one simulation tick), so the ring holds at most
//! `capacity` rounds of every adapter. Splitting rounds into smaller batches was measured and
//! cost ~300 MB more at 100,000 tags with an OPC UA client subscribed (BENCHMARKS.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::broadcast;

use crate::point::{Point, PointUpdate, Quality, Timestamp, Value};
use crate::tag::{TagCatalog, TagId};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrowError {
    #[error("the new catalogue has {to} tag ids, fewer than the running {from}: ids are never taken back")]
    Shrinks { from: usize, to: usize },
}

/// A batch of changes as it travels on the bus; shared, never copied per subscriber.
pub type PointBatch = Vec<PointUpdate>;

/// Counters of the bus itself, for diagnostics and benchmarks.
#[derive(Debug, Default)]
pub struct BusCounters {
    /// Changes accepted onto the bus.
    pub changes: AtomicU64,
    /// Updates dropped at the door because nothing changed.
    pub unchanged: AtomicU64,
    /// Batches a subscriber missed because it fell behind (summed over subscribers).
    pub lagged_batches: AtomicU64,
}

struct Inner {
    /// Replaced as a whole when the configuration is reloaded ([`PointBus::grow`]).
    catalog: RwLock<Arc<TagCatalog>>,
    /// Grows with the catalogue, never shrinks: ids are never reused. Publishing and reading
    /// take the read side (uncontended except during a reload).
    latest: RwLock<Vec<Mutex<Point>>>,
    changes: broadcast::Sender<Arc<PointBatch>>,
    counters: BusCounters,
}

/// Cheap to clone: every clone is the same bus.
#[derive(Clone)]
pub struct PointBus {
    inner: Arc<Inner>,
}

impl PointBus {
    /// A bus for the tags of `catalog`, keeping up to `capacity` batches for slow subscribers.
    pub fn new(catalog: Arc<TagCatalog>, capacity: usize) -> Self {
        let latest = (0..catalog.len())
            .map(|_| Mutex::new(Point::initial()))
            .collect();
        let (changes, _) = broadcast::channel(capacity.max(1));
        PointBus {
            inner: Arc::new(Inner {
                catalog: RwLock::new(catalog),
                latest: RwLock::new(latest),
                changes,
                counters: BusCounters::default(),
            }),
        }
    }

    /// The current catalogue. Consumers that cache per-tag data check `len()` against their
    /// own tables and refresh when a tag they do not know shows up.
    pub fn catalog(&self) -> Arc<TagCatalog> {
        self.inner.catalog.read().clone()
    }

    /// Switch to `catalog`, a continuation of the current one (built with
    /// [`crate::TagCatalogBuilder::from_catalog`]): every existing id keeps its slot and value,
    /// new ids get the initial Bad/WaitingForInitialData point.
    pub fn grow(&self, catalog: Arc<TagCatalog>) -> Result<(), GrowError> {
        let mut current = self.inner.catalog.write();
        if catalog.len() < current.len() {
            return Err(GrowError::Shrinks {
                from: current.len(),
                to: catalog.len(),
            });
        }
        let mut latest = self.inner.latest.write();
        let missing = catalog.len() - latest.len();
        latest.extend((0..missing).map(|_| Mutex::new(Point::initial())));
        *current = catalog;
        Ok(())
    }

    pub fn counters(&self) -> &BusCounters {
        &self.inner.counters
    }

    /// Publish a batch of updates. Unknown tags and unchanged values are dropped; the rest
    /// update the latest table and go out to subscribers as one batch.
    pub fn publish(&self, mut batch: PointBatch) {
        let inner = &*self.inner;
        let before = batch.len();
        let catalog = inner.catalog.read();
        let latest = inner.latest.read();
        batch.retain(|update| {
            // A retired tag (its device removed by a reload) takes no more values.
            if catalog.get(update.tag).is_none() {
                return false;
            }
            let Some(slot) = latest.get(update.tag.index()) else {
                return false;
            };
            let mut current = slot.lock();
            if current.value == update.point.value && current.quality == update.point.quality {
                return false;
            }
            current.clone_from(&update.point);
            true
        });
        drop(latest);
        drop(catalog);
        let kept = batch.len() as u64;
        inner
            .counters
            .unchanged
            .fetch_add(before as u64 - kept, Ordering::Relaxed);
        if kept == 0 {
            return;
        }
        inner.counters.changes.fetch_add(kept, Ordering::Relaxed);
        // No subscriber is not an error: the latest table still holds the state.
        let _ = inner.changes.send(Arc::new(batch));
    }

    /// The latest point of a tag (the initial Bad/WaitingForInitialData point for unknown ids).
    pub fn latest(&self, tag: TagId) -> Point {
        self.inner
            .latest
            .read()
            .get(tag.index())
            .map_or_else(Point::initial, |slot| slot.lock().clone())
    }

    /// Every live tag's latest point, in tag order (retired tags left out).
    pub fn snapshot(&self) -> PointBatch {
        let catalog = self.catalog();
        self.inner
            .latest
            .read()
            .iter()
            .enumerate()
            .map(|(i, slot)| (TagId(i as u32), slot))
            .filter(|(tag, _)| catalog.get(*tag).is_some())
            .map(|(tag, slot)| PointUpdate {
                tag,
                point: slot.lock().clone(),
            })
            .collect()
    }

    /// The latest point of every tag that has been published at least once: what a consumer
    /// that subscribes late must catch up on (subscribe first, then take this).
    pub fn published_state(&self) -> PointBatch {
        let mut state = self.snapshot();
        state.retain(|u| u.point != Point::initial());
        state
    }

    pub fn subscribe(&self) -> BusReceiver {
        BusReceiver {
            changes: self.inner.changes.subscribe(),
            bus: self.clone(),
        }
    }

    /// A publisher that collects changes and sends them as one batch on [`Publisher::flush`].
    pub fn publisher(&self) -> Publisher {
        Publisher {
            bus: self.clone(),
            pending: Vec::new(),
        }
    }
}

/// What a subscriber gets from [`BusReceiver::recv`].
#[derive(Debug)]
pub enum BusEvent {
    /// The next batch of changes, in publication order.
    Changes(Arc<PointBatch>),
    /// The subscriber fell behind and missed `missed` batches: here is the full latest state.
    Resync { missed: u64, state: PointBatch },
}

/// One consumer's view of the change stream.
pub struct BusReceiver {
    changes: broadcast::Receiver<Arc<PointBatch>>,
    bus: PointBus,
}

impl BusReceiver {
    /// The next event, or `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<BusEvent> {
        match self.changes.recv().await {
            Ok(batch) => Some(BusEvent::Changes(batch)),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(self.resync(missed)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// Wait for the next event, then take whatever else is already queued, up to `max` events
    /// in `into`, so a consumer handles a burst in one go (one lock, one write) rather than
    /// batch by batch. `false` once the bus is gone.
    pub async fn recv_many(&mut self, into: &mut Vec<BusEvent>, max: usize) -> bool {
        let Some(first) = self.recv().await else {
            return false;
        };
        into.push(first);
        while into.len() < max.max(1) {
            match self.try_recv() {
                Some(event) => into.push(event),
                None => break,
            }
        }
        true
    }

    /// The next event if one is already waiting.
    pub fn try_recv(&mut self) -> Option<BusEvent> {
        match self.changes.try_recv() {
            Ok(batch) => Some(BusEvent::Changes(batch)),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => Some(self.resync(missed)),
            Err(_) => None,
        }
    }

    fn resync(&self, missed: u64) -> BusEvent {
        self.bus
            .counters()
            .lagged_batches
            .fetch_add(missed, Ordering::Relaxed);
        tracing::warn!(
            missed,
            "bus subscriber fell behind; resynchronising from the latest values"
        );
        BusEvent::Resync {
            missed,
            state: self.bus.snapshot(),
        }
    }
}

/// An adapter's handle on the bus: stage changes, then flush them as one batch.
pub struct Publisher {
    bus: PointBus,
    pending: PointBatch,
}

impl Publisher {
    pub fn bus(&self) -> &PointBus {
        &self.bus
    }

    /// Stage a Good value.
    pub fn set(&mut self, tag: TagId, value: Value, timestamp: Timestamp) {
        self.set_point(
            tag,
            Point {
                value: Some(value),
                quality: Quality::GOOD,
                timestamp,
            },
        );
    }

    pub fn set_point(&mut self, tag: TagId, point: Point) {
        self.pending.push(PointUpdate { tag, point });
    }

    /// Stage a quality change for `tags`, keeping each tag's last value: a device that went
    /// away shows its last known value with a Bad status, never a stale Good one.
    pub fn set_quality(&mut self, tags: &[TagId], quality: Quality, timestamp: Timestamp) {
        for &tag in tags {
            let value = self.bus.latest(tag).value;
            self.set_point(
                tag,
                Point {
                    value,
                    quality,
                    timestamp,
                },
            );
        }
    }

    /// Publish everything staged since the last flush, as one batch.
    pub fn flush(&mut self) {
        if !self.pending.is_empty() {
            let capacity = self.pending.capacity();
            let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(capacity));
            self.bus.publish(batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tag::{AdapterId, DataType, TagCatalogBuilder, TagSpec};

    fn bus_with(n: usize, capacity: usize) -> PointBus {
        let mut b = TagCatalogBuilder::new();
        for i in 0..n {
            b.register(
                AdapterId(0),
                TagSpec::new(format!("T/{i}"), DataType::Float64),
            )
            .unwrap();
        }
        PointBus::new(Arc::new(b.build()), capacity)
    }

    #[tokio::test]
    async fn subscribers_see_changes_in_order_and_unchanged_values_are_dropped() {
        let bus = bus_with(2, 16);
        let mut rx = bus.subscribe();
        let mut p = bus.publisher();
        let t = Timestamp::now();
        p.set(TagId(0), Value::Float(1.0), t);
        p.set(TagId(1), Value::Float(2.0), t);
        p.flush();
        p.set(TagId(0), Value::Float(1.0), t); // unchanged
        p.set(TagId(1), Value::Float(3.0), t);
        p.flush();

        let Some(BusEvent::Changes(first)) = rx.recv().await else {
            panic!("expected a batch")
        };
        assert_eq!(first.len(), 2);
        let Some(BusEvent::Changes(second)) = rx.recv().await else {
            panic!("expected a batch")
        };
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].tag, TagId(1));
        assert_eq!(second[0].point.value, Some(Value::Float(3.0)));
        assert_eq!(bus.counters().unchanged.load(Ordering::Relaxed), 1);
        assert_eq!(bus.latest(TagId(1)).value, Some(Value::Float(3.0)));
    }

    #[tokio::test]
    async fn a_lagging_subscriber_resyncs_from_the_latest_table() {
        let bus = bus_with(1, 2);
        let mut rx = bus.subscribe();
        let mut p = bus.publisher();
        for i in 0..10 {
            p.set(TagId(0), Value::Float(i as f64), Timestamp::now());
            p.flush();
        }
        match rx.recv().await {
            Some(BusEvent::Resync { missed, state }) => {
                assert_eq!(missed, 8);
                assert_eq!(state[0].point.value, Some(Value::Float(9.0)));
            }
            other => panic!("expected a resync, got {other:?}"),
        }
    }

    #[test]
    fn set_quality_keeps_the_last_value() {
        let bus = bus_with(1, 4);
        let mut p = bus.publisher();
        p.set(TagId(0), Value::Float(7.0), Timestamp::now());
        p.flush();
        p.set_quality(&[TagId(0)], Quality::BAD_NO_COMMUNICATION, Timestamp::now());
        p.flush();
        let point = bus.latest(TagId(0));
        assert_eq!(point.value, Some(Value::Float(7.0)));
        assert_eq!(point.quality, Quality::BAD_NO_COMMUNICATION);
    }

    #[tokio::test]
    async fn recv_many_takes_what_is_queued_up_to_the_limit() {
        let bus = bus_with(1, 16);
        let mut rx = bus.subscribe();
        let mut p = bus.publisher();
        for i in 0..5 {
            p.set(TagId(0), Value::Float(i as f64), Timestamp::now());
            p.flush();
        }
        let mut events = Vec::new();
        assert!(rx.recv_many(&mut events, 3).await);
        assert_eq!(events.len(), 3);
        events.clear();
        assert!(rx.recv_many(&mut events, 10).await);
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn published_state_leaves_out_tags_nobody_has_published() {
        let bus = bus_with(3, 4);
        let mut p = bus.publisher();
        p.set(TagId(1), Value::Float(4.0), Timestamp::now());
        p.flush();
        let state = bus.published_state();
        assert_eq!(state.len(), 1);
        assert_eq!(state[0].tag, TagId(1));
    }

    #[tokio::test]
    async fn a_grown_bus_keeps_existing_values_and_carries_the_new_tags() {
        let bus = bus_with(1, 16);
        let mut rx = bus.subscribe();
        let mut p = bus.publisher();
        p.set(TagId(0), Value::Float(1.0), Timestamp::now());
        p.flush();

        let mut grown = TagCatalogBuilder::from_catalog(&bus.catalog());
        let added = grown
            .register(AdapterId(1), TagSpec::new("New/Tag", DataType::Bool))
            .unwrap();
        bus.grow(Arc::new(grown.build())).unwrap();
        assert_eq!(bus.catalog().lookup("New/Tag"), Some(added));
        assert_eq!(bus.latest(added), Point::initial());
        assert_eq!(bus.latest(TagId(0)).value, Some(Value::Float(1.0)));

        p.set(added, Value::Bool(true), Timestamp::now());
        p.flush();
        let Some(BusEvent::Changes(_)) = rx.recv().await else {
            panic!("expected the first batch")
        };
        let Some(BusEvent::Changes(batch)) = rx.recv().await else {
            panic!("expected the new tag's batch")
        };
        assert_eq!(batch[0].tag, added);
        assert_eq!(bus.snapshot().len(), 2);

        // A retired tag takes no more values and leaves the snapshot.
        let mut shrunk = TagCatalogBuilder::from_catalog(&bus.catalog());
        assert_eq!(shrunk.retire_owner(AdapterId(1)), vec![added]);
        bus.grow(Arc::new(shrunk.build())).unwrap();
        p.set(added, Value::Bool(false), Timestamp::now());
        p.flush();
        assert_eq!(bus.latest(added).value, Some(Value::Bool(true)));
        assert_eq!(bus.snapshot().len(), 1);

        // A catalogue that is not a continuation is refused and changes nothing.
        assert!(matches!(
            bus.grow(Arc::new(TagCatalogBuilder::new().build())),
            Err(GrowError::Shrinks { from: 2, to: 0 })
        ));
        assert_eq!(bus.catalog().len(), 2);
    }

    #[test]
    fn updates_for_unknown_tags_are_ignored() {
        let bus = bus_with(1, 4);
        let mut p = bus.publisher();
        p.set(TagId(5), Value::Float(1.0), Timestamp::now());
        p.flush();
        assert_eq!(bus.counters().changes.load(Ordering::Relaxed), 0);
    }
}
