//! The monitored items of one node and attribute, as the subscription cache keeps them.

use hashbrown::HashMap;

use super::{MonitoredItemEntry, MonitoredItemHandle};

/// The monitored items on one node and attribute, by handle.
///
/// Almost every node is monitored by one item (a client subscribes once to each variable it
/// shows), so that item is kept inline; a hash table is allocated only while two or more
/// items watch the same node. A table per node, most of them holding one item, was the
/// largest part of the cache: one allocation of four slots for every monitored node.
pub(crate) enum ItemEntries {
    One(MonitoredItemHandle, MonitoredItemEntry),
    Many(HashMap<MonitoredItemHandle, MonitoredItemEntry>),
}

impl ItemEntries {
    pub(crate) fn new(handle: MonitoredItemHandle, entry: MonitoredItemEntry) -> Self {
        ItemEntries::One(handle, entry)
    }

    /// Add or replace the entry of `handle`.
    pub(crate) fn insert(&mut self, handle: MonitoredItemHandle, entry: MonitoredItemEntry) {
        match self {
            ItemEntries::One(h, e) if *h == handle => *e = entry,
            ItemEntries::One(..) => {
                let ItemEntries::One(h, e) =
                    std::mem::replace(self, ItemEntries::Many(HashMap::with_capacity(2)))
                else {
                    unreachable!("matched One above");
                };
                if let ItemEntries::Many(map) = self {
                    map.insert(h, e);
                    map.insert(handle, entry);
                }
            }
            ItemEntries::Many(map) => {
                map.insert(handle, entry);
            }
        }
    }

    pub(crate) fn get_mut(&mut self, handle: &MonitoredItemHandle) -> Option<&mut MonitoredItemEntry> {
        match self {
            ItemEntries::One(h, e) => (h == handle).then_some(e),
            ItemEntries::Many(map) => map.get_mut(handle),
        }
    }

    /// Remove the entry of `handle`; true when none is left (the caller drops the set).
    pub(crate) fn remove(&mut self, handle: &MonitoredItemHandle) -> bool {
        match self {
            ItemEntries::One(h, _) => h == handle,
            ItemEntries::Many(map) => {
                map.remove(handle);
                if map.len() == 1 {
                    // Back to one inline entry: the table is freed.
                    let (h, e) = map.drain().next().expect("one entry left");
                    *self = ItemEntries::One(h, e);
                }
                map_is_empty(self)
            }
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&MonitoredItemHandle, &MonitoredItemEntry)> {
        let (one, many) = match self {
            ItemEntries::One(h, e) => (Some((h, e)), None),
            ItemEntries::Many(map) => (None, Some(map.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

fn map_is_empty(entries: &ItemEntries) -> bool {
    matches!(entries, ItemEntries::Many(map) if map.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua_types::{DataEncoding, NumericRange};

    fn handle(id: u32) -> MonitoredItemHandle {
        MonitoredItemHandle {
            subscription_id: 1,
            monitored_item_id: id,
        }
    }

    fn entry(enabled: bool) -> MonitoredItemEntry {
        MonitoredItemEntry {
            enabled,
            data_encoding: DataEncoding::Binary,
            index_range: NumericRange::None,
        }
    }

    fn ids(entries: &ItemEntries) -> Vec<u32> {
        let mut ids: Vec<_> = entries.iter().map(|(h, _)| h.monitored_item_id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn one_item_inline_then_a_table_then_inline_again() {
        let mut entries = ItemEntries::new(handle(1), entry(true));
        assert!(matches!(entries, ItemEntries::One(..)));
        entries.insert(handle(1), entry(false));
        assert!(matches!(entries, ItemEntries::One(..)));
        assert!(!entries.get_mut(&handle(1)).unwrap().enabled);
        entries.insert(handle(2), entry(true));
        entries.insert(handle(3), entry(true));
        assert!(matches!(entries, ItemEntries::Many(_)));
        assert_eq!(ids(&entries), vec![1, 2, 3]);
        entries.get_mut(&handle(3)).unwrap().enabled = false;
        assert!(!entries.get_mut(&handle(3)).unwrap().enabled);
        assert!(entries.get_mut(&handle(4)).is_none());
        assert!(!entries.remove(&handle(2)));
        assert!(!entries.remove(&handle(4)));
        assert!(!entries.remove(&handle(1)));
        assert!(matches!(entries, ItemEntries::One(..)));
        assert_eq!(ids(&entries), vec![3]);
        assert!(!entries.remove(&handle(1)), "not there: the last one stays");
        assert!(entries.remove(&handle(3)), "the last one removed: the set is empty");
    }
}
