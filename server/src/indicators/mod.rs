//! Orders and production indicators, computed on the gateway from the bus.
//!
//! [`IndicatorsEngine`] is a server-side producer written as an [`Adapter`]: it subscribes to
//! the bus, rebuilds the order history from the line's tags ([`history`]), keeps it in SQLite
//! ([`store`]), and publishes the figures ([`figures`]) under `Indicators/...`, so they reach
//! OPC UA, MQTT and InfluxDB like any other tag. [`http`] serves orders and indicators.
//! Definitions: the README, "Orders history and production indicators".

pub mod figures;
pub mod history;
pub mod http;
pub mod store;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{Local, NaiveDate, TimeZone};
use fabrique_adapters::bus::BusEvent;
use fabrique_adapters::line::STEP_COUNT;
use fabrique_adapters::{
    Adapter, AdapterContext, CatalogError, DataType, PointBus, PointUpdate, TagId, TagRegistrar,
    TagSpec, Timestamp, Value,
};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::storage::{OffThread, StorageConfig};
use figures::{compute, Figures};
use history::{micros, History, OrderRecord, Signal, SlotField};

/// `[indicators]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndicatorsConfig {
    pub enabled: bool,
    /// Ideal time between two parts leaving the line, in line seconds: the nominal duration of
    /// the slowest step (additive manufacturing, 240 s). Divided by `simulation.speed` while
    /// the line is the simulator, whose timestamps are wall-clock.
    pub ideal_cycle_time_s: f64,
    /// Shortest time between two recomputations of the figures.
    pub recompute_interval_ms: u64,
}

impl Default for IndicatorsConfig {
    fn default() -> Self {
        IndicatorsConfig {
            enabled: true,
            ideal_cycle_time_s: 240.0,
            recompute_interval_ms: 1000,
        }
    }
}

impl IndicatorsConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.ideal_cycle_time_s.is_finite() && self.ideal_cycle_time_s > 0.0) {
            return Err((
                "indicators.ideal_cycle_time_s",
                format!("must be positive seconds, got {}", self.ideal_cycle_time_s),
            ));
        }
        if !(100..=60_000).contains(&self.recompute_interval_ms) {
            return Err((
                "indicators.recompute_interval_ms",
                format!("must be in 100..=60000, got {}", self.recompute_interval_ms),
            ));
        }
        Ok(())
    }
}

/// The scopes every figure is given for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Total,
    /// The current tour stop: orders placed there.
    Stop,
    /// The gateway's local day: orders finished today.
    Today,
}

const SCOPES: [(Scope, &str); 3] = [
    (Scope::Total, "Total"),
    (Scope::Stop, "Stop"),
    (Scope::Today, "Today"),
];

struct ScopeTags {
    /// `Stop/Town` or `Today/Day`: which stop or day the figures are for.
    label: Option<TagId>,
    delivered: TagId,
    scrapped: TagId,
    checked: TagId,
    throughput: TagId,
    lead_avg: TagId,
    lead_p90: TagId,
    scrap_rate: TagId,
    planned: TagId,
    running: TagId,
    availability: TagId,
    performance: TagId,
    quality: TagId,
    oee: TagId,
    cycle: Vec<(TagId, TagId)>,
}

struct EngineTags {
    scopes: Vec<(Scope, ScopeTags)>,
    in_progress: Vec<TagId>,
    in_progress_total: TagId,
    orders_recorded: TagId,
    ideal_cycle_time: TagId,
}

fn declare_scope(
    tags: &mut TagRegistrar<'_>,
    scope: Scope,
    name: &str,
) -> Result<ScopeTags, CatalogError> {
    let p = |tag: &str| format!("Indicators/{name}/{tag}");
    let mut count = |tag: &str, text: &str| {
        tags.register(TagSpec::new(p(tag), DataType::UInt64).describe(text))
    };
    let delivered = count("PartsDelivered", "Parts delivered")?;
    let scrapped = count("PartsScrapped", "Parts scrapped at metrology")?;
    let checked = count("PartsChecked", "Parts with a metrology verdict")?;
    let mut float = |tag: String, unit: &str, text: &str| {
        tags.register(
            TagSpec::new(tag, DataType::Float64)
                .unit(unit)
                .describe(text),
        )
    };
    let percent = "%";
    let scope_tags = ScopeTags {
        label: None,
        delivered,
        scrapped,
        checked,
        throughput: float(
            p("ThroughputPerHour"),
            "parts/h",
            "Parts delivered per planned hour",
        )?,
        lead_avg: float(p("LeadTimeAvg"), "s", "Average submission-to-delivery time")?,
        lead_p90: float(
            p("LeadTimeP90"),
            "s",
            "90th percentile of the lead time (nearest rank)",
        )?,
        scrap_rate: float(p("ScrapRate"), percent, "NOK verdicts / parts checked")?,
        planned: float(
            p("PlannedTime"),
            "s",
            "From the first order placed to the last finished",
        )?,
        running: float(
            p("RunningTime"),
            "s",
            "Part of the planned time the line was Running",
        )?,
        availability: float(p("Availability"), percent, "Running time / planned time")?,
        performance: float(
            p("Performance"),
            percent,
            "Ideal cycle time × parts / running time",
        )?,
        quality: float(p("Quality"), percent, "OK verdicts / parts checked")?,
        oee: float(p("OEE"), percent, "Availability × performance × quality")?,
        cycle: (1..=STEP_COUNT)
            .map(|n| {
                Ok((
                    float(
                        p(&format!("Steps/Step{n}/CycleTimeAvg")),
                        "s",
                        "Average time an order spent at this step",
                    )?,
                    float(
                        p(&format!("Steps/Step{n}/CycleTimeP90")),
                        "s",
                        "90th percentile of the time spent at this step (nearest rank)",
                    )?,
                ))
            })
            .collect::<Result<_, CatalogError>>()?,
    };
    let label = match scope {
        Scope::Total => None,
        Scope::Stop => Some(("Town", "The tour stop these figures are for")),
        Scope::Today => Some(("Day", "The gateway's local day these figures are for")),
    };
    let label = label
        .map(|(tag, text)| tags.register(TagSpec::new(p(tag), DataType::String).describe(text)))
        .transpose()?;
    Ok(ScopeTags {
        label,
        ..scope_tags
    })
}

/// How the engine reads a bus update.
#[derive(Debug, Clone, Copy)]
enum Watched {
    StepOccupant(usize),
    Slot(usize, SlotField),
    LineState,
}

/// The tags the engine reads, from their paths, so a line PLC publishing the same paths is
/// recorded the same way.
struct Watch {
    by_tag: Vec<Option<Watched>>,
    /// `Stop/Town` once the stop is a bus tag; until then the configured town.
    stop_town: Option<TagId>,
    line_mode: Option<TagId>,
}

impl Watch {
    fn new(bus: &PointBus) -> Self {
        let catalog = bus.catalog();
        let mut by_tag = vec![None; catalog.len()];
        let mut slot_names: Vec<String> = Vec::new();
        for (id, entry) in catalog.iter() {
            let path = entry.spec.path.as_str();
            let segments: Vec<&str> = path.split('/').collect();
            let watched = match segments.as_slice() {
                ["Line", "State"] => Some(Watched::LineState),
                ["Line", "Steps", step, "CurrentOrder"] => step
                    .strip_prefix("Step")
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|n| (1..=STEP_COUNT).contains(n))
                    .map(|n| Watched::StepOccupant(n - 1)),
                ["Orders", "Recent", slot, field] => SlotField::from_name(field).map(|field| {
                    let index = slot_names
                        .iter()
                        .position(|s| s == slot)
                        .unwrap_or_else(|| {
                            slot_names.push((*slot).to_owned());
                            slot_names.len() - 1
                        });
                    Watched::Slot(index, field)
                }),
                _ => None,
            };
            by_tag[id.index()] = watched;
        }
        Watch {
            by_tag,
            stop_town: catalog.lookup("Stop/Town"),
            line_mode: catalog.lookup("Line/Mode"),
        }
    }

    fn signal(&self, update: &PointUpdate) -> Option<Signal> {
        let watched = (*self.by_tag.get(update.tag.index())?)?;
        let value = update.point.value.clone()?;
        let at = micros(update.point.timestamp);
        Some(match watched {
            Watched::StepOccupant(step) => Signal::StepOccupant {
                step,
                order: match value {
                    Value::Text(s) => s.to_string(),
                    _ => return None,
                },
                at,
            },
            Watched::Slot(slot, field) => Signal::Slot { slot, field, value },
            Watched::LineState => Signal::Line {
                running: matches!(&value, Value::Text(s) if &**s == "Running"),
                at,
            },
        })
    }
}

/// The indicators engine; see the module documentation.
pub struct IndicatorsEngine {
    config: IndicatorsConfig,
    storage: StorageConfig,
    configured_town: String,
    simulation_speed: f64,
    tags: Option<EngineTags>,
}

impl IndicatorsEngine {
    pub fn new(
        config: IndicatorsConfig,
        storage: StorageConfig,
        configured_town: String,
        simulation_speed: f64,
    ) -> Self {
        IndicatorsEngine {
            config,
            storage,
            configured_town,
            simulation_speed,
            tags: None,
        }
    }
}

/// The local calendar day of a time in microseconds.
pub fn local_day(at_us: i64) -> Option<NaiveDate> {
    Local
        .timestamp_opt(at_us.div_euclid(1_000_000), 0)
        .earliest()
        .map(|t| t.date_naive())
}

/// Which finished orders a scope counts.
fn in_scope(order: &OrderRecord, scope: Scope, town: &str, today: Option<NaiveDate>) -> bool {
    match scope {
        Scope::Total => true,
        Scope::Stop => order.stop == town,
        Scope::Today => order.completed_at.and_then(local_day) == today && today.is_some(),
    }
}

/// The running state of the engine.
struct Running {
    history: History,
    /// The order history's database; written off the async threads.
    db: Option<OffThread<Connection>>,
    watch: Watch,
    town: String,
    changed: bool,
    last_day: Option<NaiveDate>,
}

impl Running {
    fn current_town(&self, bus: &PointBus, configured: &str) -> String {
        self.watch
            .stop_town
            .and_then(|tag| match bus.latest(tag).value {
                Some(Value::Text(s)) if !s.trim().is_empty() => Some(s.to_string()),
                _ => None,
            })
            .unwrap_or_else(|| configured.to_owned())
    }

    fn apply(&mut self, batch: &[PointUpdate]) {
        for update in batch {
            // The ideal cycle time depends on the line's mode (simulated seconds or real
            // ones): figures published before the mode was known must be computed again.
            if Some(update.tag) == self.watch.line_mode {
                self.changed = true;
            }
            if let Some(signal) = self.watch.signal(update) {
                self.history.apply(signal, &self.town);
                self.changed = true;
            }
        }
        self.history.end_of_batch(&self.town);
    }

    /// Write what changed since the last save; awaited, so saves stay in order.
    async fn save(&mut self) {
        let changes = self.history.take_changes();
        let Some(db) = self.db.as_ref() else {
            return;
        };
        if changes.orders.is_empty() && changes.line_states.is_empty() {
            return;
        }
        // Owned copies cross to the blocking pool: a handful of records per batch.
        let orders: Vec<_> = changes.orders.into_iter().cloned().collect();
        let line_states = changes.line_states.to_vec();
        let written = db
            .run(move |db| {
                let orders: Vec<_> = orders.iter().collect();
                store::save(db, &orders, &line_states)
            })
            .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot write the order history; kept in memory")
            }
            Err(error) => tracing::error!(%error, "cannot write the order history; kept in memory"),
        }
    }
}

/// How long the engine waits at start for the line to say its mode before publishing anyway.
const MODE_GRACE: Duration = Duration::from_secs(5);

#[async_trait]
impl Adapter for IndicatorsEngine {
    fn name(&self) -> &str {
        "indicators"
    }

    fn declare_tags(&mut self, tags: &mut TagRegistrar<'_>) -> Result<(), CatalogError> {
        tags.object("Indicators", fabrique_adapters::FabriqueType::Indicators)?;
        let scopes = SCOPES
            .iter()
            .map(|&(scope, name)| Ok((scope, declare_scope(tags, scope, name)?)))
            .collect::<Result<_, CatalogError>>()?;
        let in_progress = (1..=STEP_COUNT)
            .map(|n| {
                tags.register(
                    TagSpec::new(format!("Indicators/InProgress/Step{n}"), DataType::UInt32)
                        .describe("Orders at this step now"),
                )
            })
            .collect::<Result<_, CatalogError>>()?;
        self.tags = Some(EngineTags {
            scopes,
            in_progress,
            in_progress_total: tags.register(
                TagSpec::new("Indicators/InProgress/Total", DataType::UInt32)
                    .describe("Orders on the line now"),
            )?,
            orders_recorded: tags.register(
                TagSpec::new("Indicators/OrdersRecorded", DataType::UInt64)
                    .describe("Orders in the history, finished or not"),
            )?,
            ideal_cycle_time: tags.register(
                TagSpec::new("Indicators/IdealCycleTime", DataType::Float64)
                    .unit("s")
                    .describe("Ideal time between two parts, wall-clock, used by Performance"),
            )?,
        });
        Ok(())
    }

    async fn run(self: Box<Self>, mut ctx: AdapterContext) {
        let Some(tags) = &self.tags else {
            return;
        };
        let bus = ctx.publisher.bus().clone();
        let storage = self.storage.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let db = open_history(&storage)?;
            let loaded = store::load(&db);
            Some((db, loaded))
        })
        .await
        .ok()
        .flatten();
        let (db, history) = match opened {
            Some((db, Ok((orders, states)))) => (Some(db), History::from_records(orders, states)),
            Some((db, Err(error))) => {
                tracing::error!(%error, "cannot read the order history; starting empty");
                (Some(db), History::default())
            }
            None => (None, History::default()),
        };
        let db = db.map(OffThread::new);
        tracing::info!(
            orders = history.orders.len(),
            "order history loaded ({})",
            store::DATABASE_FILE
        );
        let mut rx = bus.subscribe();
        let mut state = Running {
            history,
            db,
            watch: Watch::new(&bus),
            town: self.configured_town.clone(),
            changed: true,
            last_day: None,
        };
        state.town = state.current_town(&bus, &self.configured_town);
        state.apply(&bus.published_state());
        state.save().await;
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.config.recompute_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut events = Vec::new();
        let started = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                Some(command) = ctx.commands.recv() => command.refuse(),
                alive = rx.recv_many(&mut events, 256) => {
                    if !alive {
                        break;
                    }
                    let town = state.current_town(&bus, &self.configured_town);
                    if town != state.town {
                        // A new stop: its figures start from its own orders.
                        state.town = town;
                        state.changed = true;
                    }
                    for event in events.drain(..) {
                        match event {
                            BusEvent::Changes(batch) => state.apply(&batch),
                            BusEvent::Resync { missed, state: latest } => {
                                tracing::warn!(missed, "indicators fell behind the bus; step times of the missed changes are lost");
                                state.apply(&latest);
                            }
                        }
                    }
                    state.save().await;
                }
                _ = tick.tick() => {
                    let today = local_day(micros(Timestamp::now()));
                    // Performance needs the line's mode (simulated or real seconds): wait for
                    // it a little at start rather than publish figures off by the speed.
                    let mode_known = state.watch.line_mode.is_none_or(|tag| bus.latest(tag).value.is_some());
                    if !mode_known && started.elapsed() < MODE_GRACE {
                        continue;
                    }
                    if state.changed || today != state.last_day {
                        state.changed = false;
                        state.last_day = today;
                        self.publish(tags, &state, &bus, today, &mut ctx);
                    }
                }
            }
        }
        // The line is not watched while the gateway is down: that time is not running time.
        state.history.apply(
            Signal::Line {
                running: false,
                at: micros(Timestamp::now()),
            },
            &state.town,
        );
        state.save().await;
    }
}

fn open_history(storage: &StorageConfig) -> Option<Connection> {
    let opened = storage
        .open_database(store::DATABASE_FILE)
        .map_err(|e| e.to_string())
        .and_then(|db| {
            store::create_schema(&db)
                .map(|()| db)
                .map_err(|e| e.to_string())
        });
    match opened {
        Ok(db) => Some(db),
        Err(error) => {
            tracing::error!(%error, "the order history is not durable: kept in memory only");
            None
        }
    }
}

impl IndicatorsEngine {
    /// The ideal cycle time in the clock of the recorded timestamps (microseconds).
    fn ideal_cycle_us(&self, bus: &PointBus, watch: &Watch) -> f64 {
        let simulated = watch.line_mode.is_some_and(
            |tag| matches!(bus.latest(tag).value, Some(Value::Text(s)) if &*s == "Simulation"),
        );
        let scale = if simulated {
            self.simulation_speed
        } else {
            1.0
        };
        self.config.ideal_cycle_time_s * 1e6 / scale
    }

    fn publish(
        &self,
        tags: &EngineTags,
        state: &Running,
        bus: &PointBus,
        today: Option<NaiveDate>,
        ctx: &mut AdapterContext,
    ) {
        let now = Timestamp::now();
        let ideal_cycle_us = self.ideal_cycle_us(bus, &state.watch);
        let out = &mut ctx.publisher;
        let orders = &state.history.orders;
        for (scope, scope_tags) in &tags.scopes {
            let figures = compute(
                orders
                    .iter()
                    .filter(|o| in_scope(o, *scope, &state.town, today)),
                &state.history.line_states,
                ideal_cycle_us,
            );
            if let Some(label) = scope_tags.label {
                let text = match scope {
                    Scope::Stop => state.town.clone(),
                    _ => today.map(|d| d.to_string()).unwrap_or_default(),
                };
                out.set(label, Value::text(text), now);
            }
            publish_figures(out, scope_tags, &figures, now);
        }
        let mut total = 0;
        for (k, tag) in tags.in_progress.iter().enumerate() {
            let busy = u64::from(!state.history.occupant(k).is_empty());
            total += busy;
            out.set(*tag, Value::UInt(busy), now);
        }
        out.set(tags.in_progress_total, Value::UInt(total), now);
        out.set(tags.orders_recorded, Value::UInt(orders.len() as u64), now);
        out.set(
            tags.ideal_cycle_time,
            Value::Float(ideal_cycle_us / 1e6),
            now,
        );
        out.flush();
    }
}

fn publish_figures(
    out: &mut fabrique_adapters::Publisher,
    tags: &ScopeTags,
    f: &Figures,
    now: Timestamp,
) {
    let mut set = |tag: TagId, value: Value| out.set(tag, value, now);
    set(tags.delivered, Value::UInt(f.parts_delivered));
    set(tags.scrapped, Value::UInt(f.parts_scrapped));
    set(tags.checked, Value::UInt(f.parts_checked));
    set(tags.throughput, Value::Float(f.throughput_per_hour));
    set(tags.lead_avg, Value::Float(f.lead_time.avg_s));
    set(tags.lead_p90, Value::Float(f.lead_time.p90_s));
    set(tags.scrap_rate, Value::Float(f.scrap_rate_pct));
    set(tags.planned, Value::Float(f.planned_time_s));
    set(tags.running, Value::Float(f.running_time_s));
    set(tags.availability, Value::Float(f.availability_pct));
    set(tags.performance, Value::Float(f.performance_pct));
    set(tags.quality, Value::Float(f.quality_pct));
    set(tags.oee, Value::Float(f.oee_pct));
    for ((avg, p90), spread) in tags.cycle.iter().zip(&f.cycle_time) {
        set(*avg, Value::Float(spread.avg_s));
        set(*p90, Value::Float(spread.p90_s));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use fabrique_adapters::simulator::line::{Line, LineConfig, LineEvent};
    use fabrique_adapters::tag::{AdapterId, TagCatalogBuilder};
    use rand::{rngs::StdRng, SeedableRng};

    use super::history::{OrderState, Visit};
    use super::*;

    /// The line runs 100 simulated seconds per tick (several steps per tick for the short
    /// steps) with 30 orders queued at once (more than the 20 recent slots): the history
    /// rebuilt from the bus alone equals what the line did, step by step.
    #[test]
    fn the_history_rebuilt_from_the_bus_is_what_the_line_did() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut catalog = TagCatalogBuilder::new();
        let mut line = Line::new(LineConfig::default(), 0.3);
        line.declare_tags(&mut TagRegistrar::new(&mut catalog, AdapterId(0)))
            .unwrap();
        let bus = PointBus::new(Arc::new(catalog.build()), 1024);
        let watch = Watch::new(&bus);
        let mut rx = bus.subscribe();
        let mut publisher = bus.publisher();
        let mut history = History::default();

        let mut t = Timestamp::from_nanos(1_800_000_000_000_000_000);
        let mut expected: HashMap<String, ([Visit; STEP_COUNT], OrderState)> = HashMap::new();
        for i in 0..30 {
            let id = line.submit("Hexa", &format!("n{i}"), t, &mut rng).unwrap();
            expected.insert(id, ([None; STEP_COUNT], OrderState::InProgress));
        }
        for tick in 0..200 {
            t = t.plus_secs_f64(1.0);
            for event in line.advance(100.0, t, &mut rng) {
                let at = micros(t);
                match event {
                    LineEvent::Entered { step, order } => {
                        expected.get_mut(&order.id).unwrap().0[step - 1] = Some((at, None));
                    }
                    LineEvent::Left { step, order } => {
                        let entry = expected.get_mut(&order.id).unwrap();
                        if let Some((_, left)) = &mut entry.0[step - 1] {
                            *left = Some(at);
                        }
                        if step == STEP_COUNT {
                            entry.1 = OrderState::Delivered;
                        } else if order.verdict == Some(false) {
                            entry.1 = OrderState::Scrapped;
                        }
                    }
                }
            }
            line.publish(&mut publisher, t, tick == 0);
            publisher.flush();
            while let Some(BusEvent::Changes(batch)) = rx.try_recv() {
                for update in batch.iter() {
                    if let Some(signal) = watch.signal(update) {
                        history.apply(signal, "Lens");
                    }
                }
                history.end_of_batch("Lens");
            }
        }
        assert_eq!(history.unannounced, 0);
        assert_eq!(history.orders.len(), 30);
        let mut scrapped = 0;
        for order in &history.orders {
            let (steps, state) = &expected[&order.id];
            assert_eq!(&order.steps, steps, "{}", order.id);
            assert_eq!(order.state, *state, "{}", order.id);
            assert_eq!(order.model, "Hexa");
            assert_eq!(order.verdict, Some(*state == OrderState::Delivered));
            scrapped += u32::from(*state == OrderState::Scrapped);
        }
        assert!(scrapped > 0);
    }
}

/// `cargo test --release -p fabrique-gateway indicators_bench -- --ignored --nocapture`: the
/// figures in BENCHMARKS.md ("Order history and indicators").
#[cfg(test)]
mod indicators_bench {
    use std::time::Instant;

    use super::history::{LineState, OrderState};
    use super::*;

    fn synthetic(n: usize) -> Vec<OrderRecord> {
        let start = 1_800_000_000_000_000i64;
        (0..n)
            .map(|i| {
                let mut o = OrderRecord::new(i as i64 + 1, format!("ORD-{:06}", i + 1), {
                    ["Lens", "Arras", "Douai"][i % 3].to_owned()
                });
                o.model = "Wave".into();
                o.text = "Léa".into();
                let t0 = start + i as i64 * 240_000_000;
                o.submitted_at = Some(t0);
                let mut t = t0;
                for k in 0..STEP_COUNT {
                    let d = 20_000_000 + ((i * 7 + k * 13) % 100) as i64 * 1_000_000;
                    o.steps[k] = Some((t, Some(t + d)));
                    t += d;
                }
                o.completed_at = Some(t);
                let ok = i % 33 != 0;
                o.verdict = Some(ok);
                o.state = if ok {
                    OrderState::Delivered
                } else {
                    OrderState::Scrapped
                };
                o
            })
            .collect()
    }

    #[test]
    #[ignore = "benchmark; run with --release"]
    fn indicators_bench() {
        const ORDERS: usize = 50_000;
        let dir = std::env::temp_dir().join(format!("fabrique-indicators-{}", std::process::id()));
        let storage = StorageConfig {
            data_dir: dir.clone(),
        };
        let orders = synthetic(ORDERS);
        let states = [LineState {
            at: 0,
            running: true,
        }];

        // Recording: one transaction per burst (what the engine does), durable (FULL).
        for burst in [1usize, 10, 250] {
            let _ = std::fs::remove_file(dir.join(store::DATABASE_FILE));
            let mut db = storage.open_database(store::DATABASE_FILE).unwrap();
            store::create_schema(&db).unwrap();
            let n = if burst == 1 { 2_000 } else { ORDERS };
            let refs: Vec<&OrderRecord> = orders[..n].iter().collect();
            let started = Instant::now();
            for chunk in refs.chunks(burst) {
                store::save(&mut db, chunk, &[]).unwrap();
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "record: {n} orders (9 steps each), {burst} per transaction: {:.2} s, {:.0} orders/s",
                secs,
                n as f64 / secs
            );
        }

        let db = storage.open_database(store::DATABASE_FILE).unwrap();
        let started = Instant::now();
        let (loaded, _) = store::load(&db).unwrap();
        println!(
            "load {} orders at start: {:.0} ms",
            loaded.len(),
            started.elapsed().as_secs_f64() * 1e3
        );
        let today = loaded
            .last()
            .and_then(|o| o.completed_at)
            .and_then(local_day);
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let started = Instant::now();
            for (scope, _) in SCOPES {
                let f = compute(
                    loaded.iter().filter(|o| in_scope(o, scope, "Lens", today)),
                    &states,
                    240e6,
                );
                assert!(f.parts_delivered > 0 || scope == Scope::Today);
            }
            best = best.min(started.elapsed().as_secs_f64());
        }
        println!(
            "recompute the 3 scopes over {} orders: {:.1} ms (best of 5)",
            loaded.len(),
            best * 1e3
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
