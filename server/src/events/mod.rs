//! What happened, read from the bus: order submitted, delivered or scrapped, a device lost or
//! regained, the stop changed. The OPC UA side (opcua/events.rs) turns these into events.
//!
//! Detection looks at transitions only: the first value the detector sees of a tag is its
//! starting point, not an event (a gateway that starts does not replay the past).

use std::collections::HashMap;

use fabrique_adapters::{PointUpdate, TagCatalog, TagId, Timestamp, Value};

/// One thing that happened, with the object it happened to (a path below `Fabrique`).
#[derive(Debug, Clone, PartialEq)]
pub struct Happening {
    pub what: What,
    /// `Line`, `Stop` or a device path `Stations/<station>/<device>`.
    pub source: String,
    pub time: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub enum What {
    OrderSubmitted { order_id: String },
    OrderDelivered { order_id: String },
    PartScrapped { order_id: String, verdict: String },
    DeviceConnection { connected: bool, error: String },
    StopChanged { town: String },
}

impl What {
    /// OPC UA severity (1..1000): a lost device and a scrapped part are what an operator
    /// must see; the rest is information.
    pub fn severity(&self) -> u16 {
        match self {
            What::DeviceConnection {
                connected: false, ..
            } => 700,
            What::PartScrapped { .. } => 600,
            What::DeviceConnection {
                connected: true, ..
            } => 300,
            What::OrderDelivered { .. } => 200,
            What::OrderSubmitted { .. } | What::StopChanged { .. } => 100,
        }
    }

    pub fn message(&self, source: &str) -> String {
        match self {
            What::OrderSubmitted { order_id } => format!("Order {order_id} submitted"),
            What::OrderDelivered { order_id } => format!("Order {order_id} delivered"),
            What::PartScrapped { order_id, verdict } => {
                format!("Part of order {order_id} scrapped at metrology: {verdict}")
            }
            What::DeviceConnection {
                connected: true, ..
            } => format!("{source}: connection restored"),
            What::DeviceConnection {
                connected: false,
                error,
            } if error.is_empty() => {
                format!("{source}: connection lost")
            }
            What::DeviceConnection {
                connected: false,
                error,
            } => {
                format!("{source}: connection lost ({error})")
            }
            What::StopChanged { town } => format!("The truck's stop is now {town}"),
        }
    }
}

/// The role a watched tag plays.
#[derive(Debug, Clone)]
enum Role {
    /// `<device>/Status/Connected`; the device path.
    Connected(String),
    /// `Orders/Recent/OrderNN/State`; the slot's Id and Verdict tags.
    SlotState {
        id: Option<TagId>,
        verdict: Option<TagId>,
    },
    StopTown,
}

/// Turns bus updates into happenings.
#[derive(Default)]
pub struct Detector {
    catalog_len: usize,
    roles: HashMap<TagId, Role>,
    /// Last seen value of every watched tag and of the tags they read (ids, verdicts, errors).
    last: HashMap<TagId, Value>,
    /// `<device>/Status/LastError` by device path.
    errors: HashMap<String, TagId>,
}

impl Detector {
    fn learn(&mut self, catalog: &TagCatalog) {
        if catalog.len() == self.catalog_len {
            return;
        }
        self.catalog_len = catalog.len();
        self.roles.clear();
        self.errors.clear();
        for (tag, entry) in catalog.iter() {
            let path = entry.spec.path.as_str();
            if let Some(device) = path.strip_suffix("/Status/Connected") {
                self.roles.insert(tag, Role::Connected(device.to_owned()));
            } else if let Some(device) = path.strip_suffix("/Status/LastError") {
                self.errors.insert(device.to_owned(), tag);
            } else if let Some(slot) = path
                .strip_prefix("Orders/Recent/")
                .and_then(|p| p.strip_suffix("/State"))
            {
                let id = catalog.lookup(&format!("Orders/Recent/{slot}/Id"));
                let verdict = catalog.lookup(&format!("Orders/Recent/{slot}/Verdict"));
                self.roles.insert(tag, Role::SlotState { id, verdict });
            } else if path == "Stop/Town" {
                self.roles.insert(tag, Role::StopTown);
            }
        }
    }

    fn text(&self, tag: Option<TagId>) -> String {
        match tag.and_then(|t| self.last.get(&t)) {
            Some(Value::Text(s)) => s.to_string(),
            Some(other) => other.to_string(),
            None => String::new(),
        }
    }

    /// The happenings in `updates`, in order.
    pub fn observe(&mut self, catalog: &TagCatalog, updates: &[PointUpdate]) -> Vec<Happening> {
        self.learn(catalog);
        // Values that describe an event (an order's id, a device's error) usually arrive in
        // the same batch as the change itself: take them all in first.
        let mut changes = Vec::new();
        for update in updates {
            let Some(value) = &update.point.value else {
                continue;
            };
            let previous = self.last.insert(update.tag, value.clone());
            if let Some(role) = self.roles.get(&update.tag) {
                if let Some(previous) = previous.filter(|p| p != value) {
                    changes.push((
                        role.clone(),
                        previous,
                        value.clone(),
                        update.point.timestamp,
                    ));
                }
            }
        }
        let mut out = Vec::new();
        for (role, _previous, value, time) in changes {
            let (what, source) = match (role, value) {
                (Role::Connected(device), Value::Bool(connected)) => {
                    let error = if connected {
                        String::new()
                    } else {
                        self.text(self.errors.get(&device).copied())
                    };
                    (What::DeviceConnection { connected, error }, device)
                }
                (Role::SlotState { id, verdict }, Value::Text(state)) => {
                    let order_id = self.text(id);
                    let what = match &*state {
                        "Queued" => What::OrderSubmitted { order_id },
                        "Delivered" => What::OrderDelivered { order_id },
                        "Scrapped" => What::PartScrapped {
                            order_id,
                            verdict: self.text(verdict),
                        },
                        _ => continue,
                    };
                    (what, "Line".to_owned())
                }
                (Role::StopTown, Value::Text(town)) => (
                    What::StopChanged {
                        town: town.to_string(),
                    },
                    "Stop".to_owned(),
                ),
                _ => continue,
            };
            out.push(Happening { what, source, time });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabrique_adapters::{AdapterId, DataType, Point, Quality, TagCatalogBuilder, TagSpec};

    fn update(tag: TagId, value: Value) -> PointUpdate {
        PointUpdate {
            tag,
            point: Point {
                value: Some(value),
                quality: Quality::GOOD,
                timestamp: Timestamp::from_nanos(1),
            },
        }
    }

    #[test]
    fn transitions_become_happenings_and_first_values_do_not() {
        let mut b = TagCatalogBuilder::new();
        let owner = AdapterId(0);
        let connected = b
            .register(
                owner,
                TagSpec::new("Stations/P/M/Status/Connected", DataType::Bool),
            )
            .unwrap();
        let error = b
            .register(
                owner,
                TagSpec::new("Stations/P/M/Status/LastError", DataType::String),
            )
            .unwrap();
        let state = b
            .register(
                owner,
                TagSpec::new("Orders/Recent/Order01/State", DataType::String),
            )
            .unwrap();
        let id = b
            .register(
                owner,
                TagSpec::new("Orders/Recent/Order01/Id", DataType::String),
            )
            .unwrap();
        let catalog = b.build();
        let mut d = Detector::default();
        let first = d.observe(
            &catalog,
            &[
                update(connected, Value::Bool(true)),
                update(state, Value::text("Empty")),
            ],
        );
        assert!(first.is_empty());
        let events = d.observe(
            &catalog,
            &[
                update(connected, Value::Bool(false)),
                update(error, Value::text("timeout")),
                update(state, Value::text("Queued")),
                update(id, Value::text("A-17")),
            ],
        );
        assert_eq!(
            events.iter().map(|h| h.what.clone()).collect::<Vec<_>>(),
            vec![
                What::DeviceConnection {
                    connected: false,
                    error: "timeout".into()
                },
                What::OrderSubmitted {
                    order_id: "A-17".into()
                },
            ]
        );
        assert_eq!(events[0].source, "Stations/P/M");
        assert_eq!(events[0].what.severity(), 700);
    }
}
