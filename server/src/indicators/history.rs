//! The order history rebuilt from the line's tags on the bus, the way a line PLC publishing the
//! same tags would be recorded: a step's `CurrentOrder` changing says which order entered or
//! left which step and when (the point's source timestamp); an order's slot under
//! `Orders/Recent` gives its model, text, times, verdict and outcome.
//!
//! Pure bookkeeping: no bus, no database. [`History::apply`] takes one signal at a time, in bus
//! order, and marks what changed so the caller can write it in one transaction.

use std::collections::{BTreeSet, HashMap};

use fabrique_adapters::line::STEP_COUNT;
use fabrique_adapters::{Timestamp, Value};

/// Where an order ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderState {
    InProgress,
    Delivered,
    Scrapped,
    /// Never finished: the line forgot it (a restart of the simulated line) and reused its id.
    Lost,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::InProgress => "InProgress",
            OrderState::Delivered => "Delivered",
            OrderState::Scrapped => "Scrapped",
            OrderState::Lost => "Lost",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "Queued" | "InProgress" => OrderState::InProgress,
            "Delivered" => OrderState::Delivered,
            "Scrapped" => OrderState::Scrapped,
            "Lost" => OrderState::Lost,
            _ => return None,
        })
    }

    pub fn is_finished(self) -> bool {
        self != OrderState::InProgress
    }
}

/// Entered and (once done) left, in microseconds since the Unix epoch.
pub type Visit = Option<(i64, Option<i64>)>;

/// One order as recorded. Times are microseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRecord {
    /// The database key: order ids restart with a restarted simulated line, rows do not.
    pub row: i64,
    pub id: String,
    pub model: String,
    pub text: String,
    /// The tour stop (town) the order was placed at.
    pub stop: String,
    pub submitted_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub state: OrderState,
    /// Metrology verdict: `Some(true)` is OK.
    pub verdict: Option<bool>,
    /// Index 0 = step 1.
    pub steps: [Visit; STEP_COUNT],
}

impl OrderRecord {
    pub fn new(row: i64, id: String, stop: String) -> Self {
        OrderRecord {
            row,
            id,
            model: String::new(),
            text: String::new(),
            stop,
            submitted_at: None,
            completed_at: None,
            state: OrderState::InProgress,
            verdict: None,
            steps: [None; STEP_COUNT],
        }
    }
}

/// A change of the line's `State`: `running` from `at` until the next change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineState {
    pub at: i64,
    pub running: bool,
}

/// The slot fields an order shows under `Orders/Recent/<slot>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotField {
    Id,
    Model,
    Text,
    State,
    SubmittedAt,
    CompletedAt,
    Verdict,
}

impl SlotField {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "Id" => SlotField::Id,
            "Model" => SlotField::Model,
            "Text" => SlotField::Text,
            "State" => SlotField::State,
            "SubmittedAt" => SlotField::SubmittedAt,
            "CompletedAt" => SlotField::CompletedAt,
            "Verdict" => SlotField::Verdict,
            _ => return None,
        })
    }
}

/// What the recorder listens to, decoded from a bus update.
#[derive(Debug, Clone)]
pub enum Signal {
    /// `Line/Steps/Step<step+1>/CurrentOrder` now holds `order` ("" when idle).
    StepOccupant { step: usize, order: String, at: i64 },
    /// `Orders/Recent/<slot>/<field>` changed.
    Slot {
        slot: usize,
        field: SlotField,
        value: Value,
    },
    /// `Line/State` changed.
    Line { running: bool, at: i64 },
}

/// The latest value of each field of one slot, as the bus showed it.
#[derive(Debug, Clone, Default)]
struct SlotMirror {
    id: String,
    model: String,
    text: String,
    state: String,
    submitted_at: Option<i64>,
    completed_at: Option<i64>,
    verdict: String,
    /// Something changed since the slot was last folded into the history.
    dirty: bool,
}

pub fn micros(t: Timestamp) -> i64 {
    t.as_nanos().div_euclid(1000)
}

fn time_of(value: &Value) -> Option<i64> {
    match value {
        Value::Time(t) if !t.is_null() => Some(micros(*t)),
        _ => None,
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::Text(s) => s.to_string(),
        other => other.to_string(),
    }
}

/// Every order and line state change recorded, plus what is still to be written.
#[derive(Debug, Default)]
pub struct History {
    pub orders: Vec<OrderRecord>,
    pub line_states: Vec<LineState>,
    /// Row of the latest order carrying each id.
    latest_by_id: HashMap<String, usize>,
    occupants: [String; STEP_COUNT],
    slots: Vec<SlotMirror>,
    next_row: i64,
    /// Indexes into `orders` changed since [`History::take_changes`].
    dirty_orders: BTreeSet<usize>,
    /// Line states not yet written.
    new_states: usize,
    /// Step moves that named an order no slot had announced (a PLC without slots, or a gap).
    pub unannounced: u64,
}

/// What to write: changed orders (whole records) and new line states.
pub struct Changes<'a> {
    pub orders: Vec<&'a OrderRecord>,
    pub line_states: &'a [LineState],
}

impl History {
    /// The history as loaded from storage (orders sorted by row).
    pub fn from_records(orders: Vec<OrderRecord>, line_states: Vec<LineState>) -> Self {
        let next_row = orders.iter().map(|o| o.row).max().unwrap_or(0) + 1;
        let latest_by_id = orders
            .iter()
            .enumerate()
            .map(|(i, o)| (o.id.clone(), i))
            .collect();
        History {
            orders,
            line_states,
            latest_by_id,
            next_row,
            ..History::default()
        }
    }

    pub fn occupant(&self, step: usize) -> &str {
        self.occupants.get(step).map_or("", String::as_str)
    }

    fn create(&mut self, id: &str, stop: &str) -> usize {
        let index = self.orders.len();
        self.orders.push(OrderRecord::new(
            self.next_row,
            id.to_owned(),
            stop.to_owned(),
        ));
        self.next_row += 1;
        self.latest_by_id.insert(id.to_owned(), index);
        self.dirty_orders.insert(index);
        index
    }

    /// The open order carrying `id`, created if none is open.
    fn open_order(&mut self, id: &str, stop: &str) -> usize {
        match self.latest_by_id.get(id) {
            Some(&i) if !self.orders[i].state.is_finished() => i,
            _ => {
                self.unannounced += 1;
                self.create(id, stop)
            }
        }
    }

    pub fn apply(&mut self, signal: Signal, stop: &str) {
        match signal {
            Signal::StepOccupant { step, order, at } => {
                if step >= STEP_COUNT || self.occupants[step] == order {
                    return;
                }
                let previous = std::mem::replace(&mut self.occupants[step], order.clone());
                if !previous.is_empty() {
                    if let Some(&i) = self.latest_by_id.get(&previous) {
                        if let Some((_, left @ None)) = &mut self.orders[i].steps[step] {
                            *left = Some(at);
                            self.dirty_orders.insert(i);
                        }
                    }
                }
                if !order.is_empty() {
                    // Orders are announced in their slot before they move.
                    self.end_of_batch(stop);
                    let i = self.open_order(&order, stop);
                    self.orders[i].steps[step] = Some((at, None));
                    self.dirty_orders.insert(i);
                }
            }
            Signal::Slot { slot, field, value } => {
                if self.slots.len() <= slot {
                    self.slots.resize_with(slot + 1, SlotMirror::default);
                }
                if field == SlotField::Id {
                    // A new order in the slot: what the slot said before is complete.
                    self.fold_slot(slot, stop);
                }
                let mirror = &mut self.slots[slot];
                match field {
                    SlotField::Id => mirror.id = text_of(&value),
                    SlotField::Model => mirror.model = text_of(&value),
                    SlotField::Text => mirror.text = text_of(&value),
                    SlotField::State => mirror.state = text_of(&value),
                    SlotField::SubmittedAt => mirror.submitted_at = time_of(&value),
                    SlotField::CompletedAt => mirror.completed_at = time_of(&value),
                    SlotField::Verdict => mirror.verdict = text_of(&value),
                }
                mirror.dirty = true;
            }
            Signal::Line { running, at } => {
                if self
                    .line_states
                    .last()
                    .is_some_and(|s| s.running == running)
                {
                    return;
                }
                self.line_states.push(LineState { at, running });
                self.new_states += 1;
            }
        }
    }

    /// Fold every slot changed since the last call into the history: call at the end of each
    /// bus batch, once all of a slot's fields for that batch are in.
    pub fn end_of_batch(&mut self, stop: &str) {
        for slot in 0..self.slots.len() {
            self.fold_slot(slot, stop);
        }
    }

    fn fold_slot(&mut self, slot: usize, stop: &str) {
        let Some(mirror) = self.slots.get_mut(slot) else {
            return;
        };
        if !std::mem::take(&mut mirror.dirty) || mirror.id.is_empty() {
            return;
        }
        let mirror = mirror.clone();
        let same =
            |o: &OrderRecord| o.submitted_at.is_none() || o.submitted_at == mirror.submitted_at;
        let index = match self.latest_by_id.get(&mirror.id) {
            Some(&i) if same(&self.orders[i]) => i,
            Some(&i) => {
                // The id came back with another submission time: the line restarted and
                // numbers again from 1. The old order, if still open, will never finish.
                if !self.orders[i].state.is_finished() {
                    self.orders[i].state = OrderState::Lost;
                    self.dirty_orders.insert(i);
                }
                self.create(&mirror.id, stop)
            }
            None => self.create(&mirror.id, stop),
        };
        let order = &mut self.orders[index];
        let before = order.clone();
        order.model = mirror.model;
        order.text = mirror.text;
        order.submitted_at = mirror.submitted_at.or(order.submitted_at);
        if let Some(state) = OrderState::parse(&mirror.state) {
            if !order.state.is_finished() || state.is_finished() {
                order.state = state;
            }
        }
        if order.state.is_finished() {
            order.completed_at = mirror.completed_at.or(order.completed_at);
        }
        match mirror.verdict.as_str() {
            "OK" => order.verdict = Some(true),
            "NOK" => order.verdict = Some(false),
            _ => {}
        }
        if *order != before {
            self.dirty_orders.insert(index);
        }
    }

    /// What changed since the last call; the caller writes it, then forgets it.
    pub fn take_changes(&mut self) -> Changes<'_> {
        let dirty = std::mem::take(&mut self.dirty_orders);
        let new_states = std::mem::take(&mut self.new_states);
        Changes {
            orders: dirty.into_iter().map(|i| &self.orders[i]).collect(),
            line_states: &self.line_states[self.line_states.len() - new_states..],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STOP: &str = "Lens";

    fn slot(h: &mut History, slot: usize, fields: &[(SlotField, Value)]) {
        for (field, value) in fields {
            h.apply(
                Signal::Slot {
                    slot,
                    field: *field,
                    value: value.clone(),
                },
                STOP,
            );
        }
    }

    fn occupant(h: &mut History, step: usize, order: &str, at: i64) {
        h.apply(
            Signal::StepOccupant {
                step,
                order: order.into(),
                at,
            },
            STOP,
        );
    }

    fn at(us: i64) -> Value {
        Value::Time(Timestamp::from_nanos(us * 1000))
    }

    fn announce(h: &mut History, slot_index: usize, id: &str, submitted: i64) {
        slot(
            h,
            slot_index,
            &[
                (SlotField::Id, Value::text(id)),
                (SlotField::Model, Value::text("Wave")),
                (SlotField::Text, Value::text("Léa")),
                (SlotField::State, Value::text("Queued")),
                (SlotField::SubmittedAt, at(submitted)),
            ],
        );
    }

    #[test]
    fn step_times_are_rebuilt_from_the_occupants_of_the_steps() {
        let mut h = History::default();
        announce(&mut h, 0, "ORD-000001", 5);
        // One batch moves the order through steps 1 and 2 at t=10, then it leaves step 2 at 30.
        occupant(&mut h, 0, "ORD-000001", 10);
        occupant(&mut h, 0, "", 10);
        occupant(&mut h, 1, "ORD-000001", 10);
        occupant(&mut h, 1, "", 30);
        h.end_of_batch(STOP);
        let o = &h.orders[0];
        assert_eq!(o.steps[0], Some((10, Some(10))));
        assert_eq!(o.steps[1], Some((10, Some(30))));
        assert_eq!(o.steps[2], None);
        assert_eq!((o.model.as_str(), o.text.as_str()), ("Wave", "Léa"));
        assert_eq!(o.submitted_at, Some(5));
        assert_eq!(h.unannounced, 0);
    }

    #[test]
    fn a_slot_reused_within_a_batch_records_both_orders() {
        let mut h = History::default();
        announce(&mut h, 0, "ORD-000001", 1);
        h.end_of_batch(STOP);
        // The finished order 1 is shown, then its slot's new owner, order 21, again.
        announce(&mut h, 0, "ORD-000021", 2);
        slot(
            &mut h,
            0,
            &[
                (SlotField::Id, Value::text("ORD-000001")),
                (SlotField::SubmittedAt, at(1)),
                (SlotField::State, Value::text("Scrapped")),
                (SlotField::CompletedAt, at(50)),
                (SlotField::Verdict, Value::text("NOK")),
            ],
        );
        announce(&mut h, 0, "ORD-000021", 2);
        h.end_of_batch(STOP);
        assert_eq!(h.orders.len(), 2);
        let first = &h.orders[0];
        assert_eq!(first.state, OrderState::Scrapped);
        assert_eq!(first.verdict, Some(false));
        assert_eq!(first.completed_at, Some(50));
        assert_eq!(h.orders[1].state, OrderState::InProgress);
        assert_eq!(h.orders[1].completed_at, None);
    }

    #[test]
    fn a_reused_id_after_a_line_restart_is_a_new_order_and_the_old_one_is_lost() {
        let mut h = History::default();
        announce(&mut h, 0, "ORD-000001", 1);
        occupant(&mut h, 0, "ORD-000001", 2);
        h.end_of_batch(STOP);
        let loaded = History::from_records(h.orders.clone(), Vec::new());
        let mut h = loaded;
        announce(&mut h, 0, "ORD-000001", 100);
        occupant(&mut h, 0, "ORD-000001", 101);
        h.end_of_batch(STOP);
        assert_eq!(h.orders.len(), 2);
        assert_eq!(h.orders[0].state, OrderState::Lost);
        assert_ne!(h.orders[0].row, h.orders[1].row);
        assert_eq!(h.orders[1].steps[0], Some((101, None)));
    }

    #[test]
    fn changes_are_handed_out_once() {
        let mut h = History::default();
        announce(&mut h, 0, "ORD-000001", 1);
        h.apply(
            Signal::Line {
                running: true,
                at: 0,
            },
            STOP,
        );
        h.apply(
            Signal::Line {
                running: true,
                at: 1,
            },
            STOP,
        );
        h.end_of_batch(STOP);
        let changes = h.take_changes();
        assert_eq!(changes.orders.len(), 1);
        assert_eq!(changes.line_states.len(), 1);
        let changes = h.take_changes();
        assert!(changes.orders.is_empty() && changes.line_states.is_empty());
    }
}
