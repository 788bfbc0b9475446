//! The production line: orders flowing through the 9 steps, one order per step at a time.
//!
//! Durations are in simulated seconds; timestamps shown to clients are wall-clock (see
//! `simulation.speed` in the README).

use std::collections::VecDeque;

use crate::adapter::{CallError, TagRegistrar};
use crate::bus::Publisher;
use crate::line::{LineTags, OrderSlotTags, StepState};
use crate::point::{Timestamp, Value};
use crate::tag::{CatalogError, TagId};
use rand::Rng;

// The line's domain moved to `crate::line`; these paths stay for code written before.
pub use crate::line::{LineConfig, OrderState, METROLOGY_STEP, STEP_COUNT, STEP_NAMES};

use super::noise::normal;

/// An order on the simulated line.
#[derive(Debug, Clone)]
pub struct Order {
    pub id: String,
    pub seq: u64,
    pub model: String,
    pub text: String,
    /// 0 while queued, then 1..=9.
    pub step: usize,
    pub state: OrderState,
    pub submitted_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    /// Metrology verdict once measured: `Some(true)` is OK.
    pub verdict: Option<bool>,
    /// Drawn at creation: whether this part will come out of tolerance.
    pub defective: bool,
    /// Simulated seconds left in the current step (≤ 0: done, waiting for the next step).
    remaining_s: f64,
    duration_s: f64,
}

impl Order {
    /// Progress through the current step, 0..=1.
    pub fn step_progress(&self) -> f64 {
        if self.duration_s <= 0.0 {
            return 0.0;
        }
        (1.0 - self.remaining_s / self.duration_s).clamp(0.0, 1.0)
    }
}

/// What happened on the line during one tick, for the machines to react to.
#[derive(Debug, Clone)]
pub enum LineEvent {
    Entered { step: usize, order: Order },
    Left { step: usize, order: Order },
}

#[derive(Default, Clone, Copy)]
struct StepStats {
    count: u64,
    last_cycle_s: f64,
}

/// The line model. Owned by the truck simulator; not shared.
pub struct Line {
    config: LineConfig,
    defect_rate: f64,
    running: bool,
    next_seq: u64,
    queue: VecDeque<Order>,
    /// Index `k` holds the order at step `k + 1`.
    stations: [Option<Order>; STEP_COUNT],
    stats: [StepStats; STEP_COUNT],
    delivered: u64,
    scrapped: u64,
    tags: Option<LineTags>,
    /// Orders delivered or scrapped since the last publish, still to be shown.
    finished: Vec<Order>,
    /// Orders placed since the last publish, announced in their slot before they move.
    placed: Vec<Order>,
    /// Every change of a step's occupant since the last publish (step index, order id or ""),
    /// so that a consumer of the bus sees each order enter and leave each step, even when
    /// one tick moves it through several steps.
    moves: Vec<(usize, String)>,
    /// The order each recent slot shows, by sequence number.
    slot_seq: Vec<u64>,
}

impl Line {
    pub fn new(config: LineConfig, defect_rate: f64) -> Self {
        let slots = config.recent_orders;
        Line {
            config,
            defect_rate,
            running: true,
            next_seq: 1,
            queue: VecDeque::new(),
            stations: Default::default(),
            stats: [StepStats::default(); STEP_COUNT],
            delivered: 0,
            scrapped: 0,
            tags: None,
            finished: Vec::new(),
            placed: Vec::new(),
            moves: Vec::new(),
            slot_seq: vec![0; slots],
        }
    }

    pub fn config(&self) -> &LineConfig {
        &self.config
    }

    pub fn declare_tags(&mut self, tags: &mut TagRegistrar<'_>) -> Result<(), CatalogError> {
        self.tags = Some(LineTags::declare(tags, self.config.recent_orders)?);
        Ok(())
    }

    /// Place an order, as the kiosk's QR code does. Returns its id.
    pub fn submit(
        &mut self,
        model: &str,
        text: &str,
        now: Timestamp,
        rng: &mut impl Rng,
    ) -> Result<String, CallError> {
        self.config.check_order(model, text)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let order = Order {
            id: format!("ORD-{seq:06}"),
            seq,
            model: model.to_owned(),
            text: text.trim().to_owned(),
            step: 0,
            state: OrderState::Queued,
            submitted_at: now,
            completed_at: None,
            verdict: None,
            defective: rng.random_bool(self.defect_rate),
            remaining_s: 0.0,
            duration_s: 0.0,
        };
        let id = order.id.clone();
        self.claim_slot(&order);
        self.placed.push(order.clone());
        self.queue.push_back(order);
        Ok(id)
    }

    pub fn set_running(&mut self, running: bool) {
        self.running = running;
    }

    /// The order at `step` (1..=9), if any.
    pub fn at_step(&self, step: usize) -> Option<&Order> {
        self.stations.get(step.wrapping_sub(1))?.as_ref()
    }

    /// Orders take the recent slots in turn; a slot shows its order until a newer one takes it.
    fn claim_slot(&mut self, order: &Order) {
        let slot = slot_of(order.seq, self.slot_seq.len());
        self.slot_seq[slot] = order.seq;
    }

    fn draw_duration(&self, step: usize, rng: &mut impl Rng) -> f64 {
        let nominal = self.config.step_durations_s[step - 1];
        (nominal * (1.0 + 0.05 * normal(rng))).max(0.5 * nominal)
    }

    /// Advance the line by `dt` simulated seconds.
    pub fn advance(&mut self, dt: f64, now: Timestamp, rng: &mut impl Rng) -> Vec<LineEvent> {
        let mut events = Vec::new();
        if !self.running {
            return events;
        }
        for order in self.stations.iter_mut().flatten() {
            order.remaining_s -= dt;
        }
        // Walk from the last step back, so an order leaving step k frees it for k-1 in the
        // same pass; repeat while anything moves, for ticks longer than a step.
        loop {
            let mut moved = false;
            for k in (0..STEP_COUNT).rev() {
                let done = self.stations[k]
                    .as_ref()
                    .is_some_and(|o| o.remaining_s <= 0.0);
                let next_free = k + 1 == STEP_COUNT || self.stations[k + 1].is_none();
                if !(done && next_free) {
                    continue;
                }
                let Some(mut order) = self.stations[k].take() else {
                    continue;
                };
                let step = k + 1;
                // Only what this tick overshot carries into the next step: time spent
                // blocked (done, waiting for the next step to free) is not work done there.
                let carry = (-order.remaining_s).min(dt);
                self.stats[k].count += 1;
                self.stats[k].last_cycle_s = order.duration_s;
                if step == METROLOGY_STEP {
                    order.verdict = Some(!order.defective);
                }
                events.push(LineEvent::Left {
                    step,
                    order: order.clone(),
                });
                self.moves.push((k, String::new()));
                moved = true;
                if step == METROLOGY_STEP && order.defective {
                    order.state = OrderState::Scrapped;
                    order.completed_at = Some(now);
                    self.scrapped += 1;
                } else if step == STEP_COUNT {
                    order.state = OrderState::Delivered;
                    order.completed_at = Some(now);
                    self.delivered += 1;
                } else {
                    self.enter(k + 1, order, carry, rng, &mut events);
                    continue;
                }
                self.finished.push(order);
            }
            if self.stations[0].is_none() {
                if let Some(mut order) = self.queue.pop_front() {
                    order.state = OrderState::InProgress;
                    self.enter(0, order, 0.0, rng, &mut events);
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        events
    }

    fn enter(
        &mut self,
        k: usize,
        mut order: Order,
        carry: f64,
        rng: &mut impl Rng,
        events: &mut Vec<LineEvent>,
    ) {
        order.step = k + 1;
        order.duration_s = self.draw_duration(k + 1, rng);
        order.remaining_s = order.duration_s - carry;
        self.moves.push((k, order.id.clone()));
        events.push(LineEvent::Entered {
            step: k + 1,
            order: order.clone(),
        });
        self.stations[k] = Some(order);
    }

    /// Stage the line's tags. `full` also stages what never changes (names, numbers, empty slots).
    pub fn publish(&mut self, publisher: &mut Publisher, now: Timestamp, full: bool) {
        let Some(tags) = &self.tags else {
            return;
        };
        let mut set = |tag: TagId, value: Value| publisher.set(tag, value, now);
        set(
            tags.state,
            Value::text(if self.running { "Running" } else { "Stopped" }),
        );
        set(tags.mode, Value::text("Simulation"));
        set(tags.queued, Value::UInt(self.queue.len() as u64));
        let on_line = self.stations.iter().flatten().count();
        set(tags.in_progress, Value::UInt(on_line as u64));
        set(tags.delivered, Value::UInt(self.delivered));
        set(tags.scrapped, Value::UInt(self.scrapped));
        set(tags.submitted, Value::UInt(self.next_seq - 1));
        if full {
            for slot in &tags.recent {
                set(slot.id, Value::text(""));
                set(slot.model, Value::text(""));
                set(slot.text, Value::text(""));
                set(slot.step, Value::UInt(0));
                set(slot.state, Value::text("Empty"));
                set(slot.submitted_at, Value::Time(Timestamp::NULL));
                set(slot.completed_at, Value::Time(Timestamp::NULL));
                set(slot.verdict, Value::text(""));
            }
        }
        // What happened during the tick, in order, so that a consumer of the bus can record
        // every order exactly: new orders are announced in their slot before they move, then
        // each step's occupant changes one by one, then finished orders show their outcome.
        // A slot whose order was already replaced by a newer one shows the finished order
        // briefly, within this batch, then its current order again (below).
        let slots = self.slot_seq.len();
        for order in &self.placed {
            stage_order(&tags.recent[slot_of(order.seq, slots)], order, &mut set);
        }
        self.placed.clear();
        for (k, occupant) in self.moves.drain(..) {
            set(tags.steps[k].current_order, Value::text(occupant));
        }

        let last_id = if self.next_seq > 1 {
            format!("ORD-{:06}", self.next_seq - 1)
        } else {
            String::new()
        };
        set(tags.last_order_id, Value::text(last_id));

        for (k, step_tags) in tags.steps.iter().enumerate() {
            let order = self.stations[k].as_ref();
            let blocked = order.is_some_and(|o| o.remaining_s <= 0.0);
            let state = match order {
                None => StepState::Idle,
                Some(_) if blocked => StepState::Blocked,
                Some(_) => StepState::Busy,
            };
            if full {
                set(step_tags.number, Value::UInt(k as u64 + 1));
                set(step_tags.name, Value::text(STEP_NAMES[k]));
            }
            set(step_tags.state, Value::text(state.as_str()));
            set(
                step_tags.current_order,
                Value::text(order.map_or("", |o| o.id.as_str())),
            );
            set(
                step_tags.progress,
                Value::Float(order.map_or(0.0, |o| 100.0 * o.step_progress())),
            );
            set(
                step_tags.last_cycle_time,
                Value::Float(self.stats[k].last_cycle_s),
            );
            set(step_tags.count, Value::UInt(self.stats[k].count));
        }

        for order in &self.finished {
            stage_order(&tags.recent[slot_of(order.seq, slots)], order, &mut set);
        }
        // Orders still on the line are re-staged every tick (their step moves); the bus drops
        // whatever did not change.
        let shown = |order: &&Order| self.slot_seq[slot_of(order.seq, slots)] == order.seq;
        for order in self
            .queue
            .iter()
            .chain(self.stations.iter().flatten())
            .chain(self.finished.iter())
            .filter(shown)
        {
            stage_order(&tags.recent[slot_of(order.seq, slots)], order, &mut set);
        }
        self.finished.clear();
    }
}

fn slot_of(seq: u64, slots: usize) -> usize {
    ((seq - 1) % slots as u64) as usize
}

fn stage_order(slot: &OrderSlotTags, order: &Order, set: &mut impl FnMut(TagId, Value)) {
    set(slot.id, Value::text(&order.id));
    set(slot.model, Value::text(&order.model));
    set(slot.text, Value::text(&order.text));
    set(slot.step, Value::UInt(order.step as u64));
    set(slot.state, Value::text(order.state.as_str()));
    set(slot.submitted_at, Value::Time(order.submitted_at));
    set(
        slot.completed_at,
        Value::Time(order.completed_at.unwrap_or(Timestamp::NULL)),
    );
    let verdict = match order.verdict {
        Some(true) => "OK",
        Some(false) => "NOK",
        None => "",
    };
    set(slot.verdict, Value::text(verdict));
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    fn run_until_idle(line: &mut Line, rng: &mut StdRng) -> Vec<LineEvent> {
        let mut all = Vec::new();
        for _ in 0..10_000 {
            all.extend(line.advance(1.0, Timestamp::now(), rng));
            if line.queue.is_empty() && line.stations.iter().all(Option::is_none) {
                break;
            }
        }
        all
    }

    #[test]
    fn an_order_visits_the_nine_steps_in_order_and_is_delivered() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut line = Line::new(LineConfig::default(), 0.0);
        let id = line
            .submit("Wave", "Léa", Timestamp::now(), &mut rng)
            .unwrap();
        let events = run_until_idle(&mut line, &mut rng);
        let entered: Vec<usize> = events
            .iter()
            .filter_map(|e| match e {
                LineEvent::Entered { step, order } if order.id == id => Some(*step),
                _ => None,
            })
            .collect();
        assert_eq!(entered, (1..=9).collect::<Vec<_>>());
        assert_eq!(line.delivered, 1);
        assert_eq!(line.scrapped, 0);
    }

    #[test]
    fn defective_parts_are_scrapped_at_metrology() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut line = Line::new(LineConfig::default(), 1.0);
        line.submit("Hexa", "Hugo", Timestamp::now(), &mut rng)
            .unwrap();
        let events = run_until_idle(&mut line, &mut rng);
        assert!(!events
            .iter()
            .any(|e| matches!(e, LineEvent::Entered { step: 9, .. })));
        assert_eq!(line.scrapped, 1);
        assert_eq!(line.delivered, 0);
    }

    #[test]
    fn steps_hold_one_order_each_and_orders_keep_their_sequence() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut line = Line::new(LineConfig::default(), 0.0);
        for i in 0..5 {
            line.submit("Classic", &format!("n{i}"), Timestamp::now(), &mut rng)
                .unwrap();
        }
        let events = run_until_idle(&mut line, &mut rng);
        let delivered: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                LineEvent::Left { step: 9, order } => Some(order.seq),
                _ => None,
            })
            .collect();
        assert_eq!(delivered, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn bad_orders_are_refused_with_a_reason() {
        let config = LineConfig::default();
        assert!(config.check_order("Wave", "Ok").is_ok());
        assert!(
            matches!(config.check_order("Rocket", "x"), Err(CallError::InvalidArgument(m)) if m.contains("unknown model"))
        );
        assert!(
            matches!(config.check_order("Wave", "   "), Err(CallError::InvalidArgument(m)) if m.contains("blank"))
        );
        let long = "x".repeat(config.max_text_length + 1);
        assert!(
            matches!(config.check_order("Wave", &long), Err(CallError::InvalidArgument(m)) if m.contains("at most"))
        );
    }

    #[test]
    fn time_spent_blocked_does_not_shorten_the_next_step() {
        let mut rng = StdRng::seed_from_u64(5);
        let config = LineConfig::default();
        let slowest = config.step_durations_s.iter().cloned().fold(0.0, f64::max);
        let mut line = Line::new(config, 0.0);
        for i in 0..10 {
            line.submit("Wave", &format!("n{i}"), Timestamp::now(), &mut rng)
                .unwrap();
        }
        let mut left_last_step = Vec::new();
        for t in 0..5000 {
            for event in line.advance(1.0, Timestamp::now(), &mut rng) {
                if let LineEvent::Left { step: 9, .. } = event {
                    left_last_step.push(t as f64);
                }
            }
        }
        assert_eq!(left_last_step.len(), 10);
        // Parts leave no faster than the slowest step allows (its duration varies by ±5 %).
        for pair in left_last_step.windows(2) {
            assert!(pair[1] - pair[0] >= 0.8 * slowest, "{left_last_step:?}");
        }
    }

    #[test]
    fn a_tick_longer_than_steps_publishes_every_occupant_in_order() {
        let mut rng = StdRng::seed_from_u64(6);
        let mut catalog = crate::tag::TagCatalogBuilder::new();
        let mut line = Line::new(LineConfig::default(), 0.0);
        line.declare_tags(&mut TagRegistrar::new(
            &mut catalog,
            crate::tag::AdapterId(0),
        ))
        .unwrap();
        let bus = crate::bus::PointBus::new(std::sync::Arc::new(catalog.build()), 16);
        let steps: Vec<TagId> = (1..=3)
            .map(|n| crate::line::step_tag(&bus.catalog(), n, "CurrentOrder").unwrap())
            .collect();
        let mut rx = bus.subscribe();
        let mut publisher = bus.publisher();
        line.submit("Wave", "a", Timestamp::now(), &mut rng)
            .unwrap();
        line.advance(1.0, Timestamp::now(), &mut rng);
        line.publish(&mut publisher, Timestamp::now(), true);
        publisher.flush();
        while rx.try_recv().is_some() {}
        // 55 simulated seconds: the order leaves step 1 (29 s left), passes step 2 (20 s)
        // and enters step 3, all in one tick.
        line.advance(55.0, Timestamp::now(), &mut rng);
        line.publish(&mut publisher, Timestamp::now(), false);
        publisher.flush();
        let mut seen = Vec::new();
        while let Some(crate::bus::BusEvent::Changes(batch)) = rx.try_recv() {
            for u in batch.iter() {
                if let Some(step) = steps.iter().position(|t| *t == u.tag) {
                    seen.push((step + 1, u.point.value.clone().unwrap().to_string()));
                }
            }
        }
        let id = "ORD-000001".to_owned();
        let expected = vec![
            (1, String::new()),
            (2, id.clone()),
            (2, String::new()),
            (3, id),
        ];
        assert_eq!(seen, expected, "{seen:?}");
    }

    #[test]
    fn a_stopped_line_does_not_move() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut line = Line::new(LineConfig::default(), 0.0);
        line.set_running(false);
        line.submit("Wave", "a", Timestamp::now(), &mut rng)
            .unwrap();
        assert!(line.advance(1000.0, Timestamp::now(), &mut rng).is_empty());
        assert_eq!(line.queue.len(), 1);
    }
}
