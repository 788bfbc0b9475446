//! Standard variables computed from the bus: the Machinery state machines, Machine Tools'
//! operation mode and spindle, Robotics' program flag.
//!
//! They are few (a handful per machine), so they are recomputed from the bus's latest values
//! on a short period and written to the address space only when they change, with the
//! subscriptions told.

use std::sync::Arc;
use std::time::Duration;

use fabrique_adapters::{PointBus, TagId, Timestamp, Value};
use opcua::nodes::NodeType;
use opcua::server::address_space::AddressSpace;
use opcua::server::SubscriptionCache;
use opcua::sync::RwLock;
use opcua::types::{AttributeId, DataValue, LocalizedText, NodeId, Variant};
use tokio_util::sync::CancellationToken;

/// How often derived values are recomputed.
const PERIOD: Duration = Duration::from_millis(100);

/// How a state machine's current state follows the bus.
#[derive(Debug, Clone)]
pub enum StateRule {
    /// Machinery's MachineryItemState: OutOfService when the configuration says so,
    /// NotAvailable while the device is not connected, Executing while an order is at one of
    /// its steps, NotExecuting otherwise.
    ItemState {
        connected: Option<TagId>,
        busy: Vec<TagId>,
        out_of_service: bool,
    },
    /// Machinery's MachineryOperationMode: Processing while the line runs, Setup while it is
    /// stopped (workshops, changeovers).
    OperationMode { line_state: Option<TagId> },
    /// Machine Tools' program state: Running while an order is at the machine's step, Ended
    /// otherwise.
    Program { busy: Vec<TagId> },
}

/// One computed variable (or group of variables).
#[derive(Debug, Clone)]
pub enum Derived {
    /// A finite state machine's `CurrentState` (its name), `CurrentState/Id` (the state's
    /// NodeId) and, if present, `CurrentState/Number`.
    State {
        current: NodeId,
        id: NodeId,
        number: Option<NodeId>,
        /// Browse name, NodeId and number of every state of the machine's type.
        states: Vec<(String, NodeId, u32)>,
        rule: StateRule,
    },
    /// Machine Tools' `MachineOperationMode`: Automatic (1) while the line runs, Setup (2)
    /// while it is stopped.
    OperationMode {
        node: NodeId,
        line_state: Option<TagId>,
    },
    /// True while the tag's value is above `threshold` (a spindle that rotates).
    Above {
        node: NodeId,
        tag: TagId,
        threshold: f64,
    },
    /// True while the tag holds a non-empty text (a program loaded).
    NotEmpty { node: NodeId, tag: TagId },
    /// When the order at a step will be done (Machine Tools' prognosis `PredictedTime`):
    /// now plus the remaining progress at the rate observed since the order arrived, to the
    /// second; the null DateTime while no order is there or too little progress was seen.
    Due {
        node: NodeId,
        order: TagId,
        progress: TagId,
        seen: Arc<parking_lot::Mutex<Option<Arrival>>>,
    },
}

/// An order's arrival at a step, as first observed: the start of the rate estimate.
#[derive(Debug)]
pub struct Arrival {
    order: Arc<str>,
    at: Timestamp,
    progress: f64,
}

/// Progress (percent points) to observe before the rate is trusted.
const MIN_PROGRESS_FOR_RATE: f64 = 1.0;

impl Derived {
    pub fn due(node: NodeId, order: TagId, progress: TagId) -> Self {
        Derived::Due {
            node,
            order,
            progress,
            seen: Arc::default(),
        }
    }
}

/// The predicted end of `order` at `progress` percent now, given where it was first seen.
fn predicted_end(
    seen: &mut Option<Arrival>,
    order: Option<Arc<str>>,
    progress: Option<f64>,
    now: Timestamp,
) -> Timestamp {
    let (Some(order), Some(progress)) = (order.filter(|o| !o.is_empty()), progress) else {
        *seen = None;
        return Timestamp::NULL;
    };
    let arrival = match seen {
        Some(a) if a.order == order => a,
        _ => seen.insert(Arrival {
            order,
            at: now,
            progress,
        }),
    };
    let done = progress - arrival.progress;
    if done < MIN_PROGRESS_FOR_RATE {
        return Timestamp::NULL;
    }
    let remaining_s = now.secs_since(arrival.at) * (100.0 - progress).max(0.0) / done;
    // Whole seconds: the estimate does not notify subscribers at every refresh.
    let end = now.plus_secs_f64(remaining_s);
    Timestamp::from_nanos(end.as_nanos().div_euclid(1_000_000_000) * 1_000_000_000)
}

fn text(bus: &PointBus, tag: Option<TagId>) -> Option<Arc<str>> {
    let point = bus.latest(tag?);
    match point.value {
        Some(Value::Text(t)) if point.quality.is_good() => Some(t),
        _ => None,
    }
}

fn any_busy(bus: &PointBus, busy: &[TagId]) -> bool {
    busy.iter()
        .any(|&t| text(bus, Some(t)).is_some_and(|s| !s.is_empty()))
}

impl StateRule {
    /// The name of the current state.
    pub fn state(&self, bus: &PointBus) -> &'static str {
        match self {
            StateRule::ItemState {
                out_of_service: true,
                ..
            } => "OutOfService",
            StateRule::ItemState {
                connected, busy, ..
            } => {
                let up = match connected {
                    Some(tag) => {
                        let point = bus.latest(*tag);
                        point.quality.is_good() && point.value == Some(Value::Bool(true))
                    }
                    // No status tags: as available as the gateway.
                    None => true,
                };
                if !up {
                    "NotAvailable"
                } else if any_busy(bus, busy) {
                    "Executing"
                } else {
                    "NotExecuting"
                }
            }
            StateRule::OperationMode { line_state } => match text(bus, *line_state).as_deref() {
                Some("Stopped") => "Setup",
                _ => "Processing",
            },
            StateRule::Program { busy } => {
                if any_busy(bus, busy) {
                    "Running"
                } else {
                    "Ended"
                }
            }
        }
    }
}

impl Derived {
    /// The nodes it writes.
    pub fn nodes(&self) -> Vec<&NodeId> {
        match self {
            Derived::State {
                current,
                id,
                number,
                ..
            } => [Some(current), Some(id), number.as_ref()]
                .into_iter()
                .flatten()
                .collect(),
            Derived::OperationMode { node, .. }
            | Derived::Above { node, .. }
            | Derived::NotEmpty { node, .. }
            | Derived::Due { node, .. } => vec![node],
        }
    }

    /// The values this derives now, by node.
    fn values(&self, bus: &PointBus, out: &mut Vec<(NodeId, Variant)>) {
        match self {
            Derived::State {
                current,
                id,
                number,
                states,
                rule,
            } => {
                let name = rule.state(bus);
                let Some((_, state, n)) = states.iter().find(|(s, _, _)| s == name) else {
                    return;
                };
                out.push((
                    current.clone(),
                    Variant::from(LocalizedText::new("en", name)),
                ));
                out.push((id.clone(), Variant::from(state.clone())));
                if let Some(number) = number {
                    out.push((number.clone(), Variant::UInt32(*n)));
                }
            }
            Derived::OperationMode { node, line_state } => {
                let mode = match text(bus, *line_state).as_deref() {
                    Some("Stopped") => 2,
                    _ => 1,
                };
                out.push((node.clone(), Variant::Int32(mode)));
            }
            Derived::Above {
                node,
                tag,
                threshold,
            } => {
                let above = bus
                    .latest(*tag)
                    .value
                    .and_then(|v| v.as_f64())
                    .is_some_and(|v| v > *threshold);
                out.push((node.clone(), Variant::Boolean(above)));
            }
            Derived::NotEmpty { node, tag } => {
                let loaded = text(bus, Some(*tag)).is_some_and(|s| !s.is_empty());
                out.push((node.clone(), Variant::Boolean(loaded)));
            }
            Derived::Due {
                node,
                order,
                progress,
                seen,
            } => {
                let point = bus.latest(*progress);
                let progress = point
                    .value
                    .and_then(|v| v.as_f64())
                    .filter(|_| point.quality.is_good());
                let end = predicted_end(
                    &mut seen.lock(),
                    text(bus, Some(*order)),
                    progress,
                    Timestamp::now(),
                );
                out.push((
                    node.clone(),
                    Variant::DateTime(Box::new(fabrique_adapters::ua::date_time(end))),
                ));
            }
        }
    }
}

/// Write every derived value that differs from the address space's; returns those written.
pub fn refresh(
    derived: &[Derived],
    bus: &PointBus,
    space: &RwLock<AddressSpace>,
) -> Vec<(NodeId, DataValue)> {
    write_changed(derived, bus, &mut space.write())
}

/// As [`refresh`], on a space already locked (a machine's states are set as it is built, so
/// no client sees it without them).
pub fn write_changed(
    derived: &[Derived],
    bus: &PointBus,
    space: &mut AddressSpace,
) -> Vec<(NodeId, DataValue)> {
    let mut values = Vec::new();
    for d in derived {
        d.values(bus, &mut values);
    }
    let mut changed = Vec::new();
    for (node, value) in values {
        if let Some(NodeType::Variable(variable)) = space.find_mut(&node) {
            let same = variable
                .value(
                    opcua::types::TimestampsToReturn::Neither,
                    &opcua::types::NumericRange::None,
                    &opcua::types::DataEncoding::Binary,
                    0.0,
                )
                .value
                .as_ref()
                == Some(&value);
            if !same {
                let data_value = DataValue::new_now(value);
                variable.set_data_value(data_value.clone());
                changed.push((node, data_value));
            }
        }
    }
    changed
}

/// Keeps the derived variables current until shutdown.
pub async fn run(
    derived: Arc<RwLock<Arc<Vec<Derived>>>>,
    bus: PointBus,
    space: Arc<RwLock<AddressSpace>>,
    subscriptions: Arc<SubscriptionCache>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        // Empty until the server has built the standard structure; a reload swaps it. The
        // list is taken out of its lock before the address space is: a reload holds the
        // space while it swaps the list.
        let current = derived.read().clone();
        let changed = refresh(&current, &bus, &space);
        if !changed.is_empty() {
            subscriptions.notify_data_change(
                changed
                    .iter()
                    .map(|(node, value)| (value.clone(), node, AttributeId::Value)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use fabrique_adapters::{AdapterId, DataType, TagCatalogBuilder, TagSpec};

    use super::*;

    #[test]
    fn a_machine_out_of_service_says_so_whatever_its_connection() {
        let mut catalog = TagCatalogBuilder::new();
        let connected = catalog
            .register(
                AdapterId(0),
                TagSpec::new("S/D/Status/Connected", DataType::Bool),
            )
            .unwrap();
        let bus = PointBus::new(Arc::new(catalog.build()), 4);
        let rule = |out_of_service| StateRule::ItemState {
            connected: Some(connected),
            busy: Vec::new(),
            out_of_service,
        };
        assert_eq!(rule(false).state(&bus), "NotAvailable");
        assert_eq!(rule(true).state(&bus), "OutOfService");
        let mut out = bus.publisher();
        out.set(connected, Value::Bool(true), Timestamp::now());
        out.flush();
        assert_eq!(rule(false).state(&bus), "NotExecuting");
        assert_eq!(rule(true).state(&bus), "OutOfService");
    }

    #[test]
    fn a_part_is_due_at_the_rate_its_order_progresses() {
        let t0 = Timestamp::from_nanos(1_800_000_000 * 1_000_000_000);
        let order = |s: &str| Some(Arc::<str>::from(s));
        let mut seen = None;
        // First sight: no rate yet.
        assert_eq!(
            predicted_end(&mut seen, order("ORD-1"), Some(20.0), t0),
            Timestamp::NULL
        );
        // 10 points in 5 s: the 70 left take 35 s.
        let t1 = t0.plus_secs_f64(5.0);
        assert_eq!(
            predicted_end(&mut seen, order("ORD-1"), Some(30.0), t1),
            t1.plus_secs_f64(35.0)
        );
        // Another order starts over; an idle step has no prognosis.
        assert_eq!(
            predicted_end(&mut seen, order("ORD-2"), Some(0.0), t1),
            Timestamp::NULL
        );
        assert_eq!(
            predicted_end(&mut seen, order(""), Some(0.0), t1),
            Timestamp::NULL
        );
        assert!(seen.is_none());
    }
}
