//! The built-in simulator: the whole truck, alive, with no external service.
//!
//! One adapter, [`TruckSimulator`], runs the production line and every simulated machine on a
//! single simulated clock, so that what the machines show matches the order the line has at
//! their step. [`SyntheticLoad`] is a separate adapter that only exists to load the gateway in
//! benchmarks.

pub mod line;
pub mod machines;
mod noise;
mod synthetic;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::adapter::{
    Adapter, AdapterContext, CallError, CallRequest, Command, DeviceStatus, TagRegistrar,
    WriteError, WriteRequest,
};
use crate::device::{device_path, Identification};
use crate::point::{Timestamp, Value};
use crate::tag::{CatalogError, TagId};

use line::{Line, LineConfig, LineEvent};
use machines::{LineView, MachineKind, SimMachine};
use noise::exponential;

pub use synthetic::{SyntheticConfig, SyntheticLoad};

/// `[simulation]`: the simulated truck's clock, randomness and load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulationConfig {
    /// Seed of the random generator: the same seed gives the same orders, noise and verdicts.
    pub seed: u64,
    /// How many simulated seconds pass per real second (20 runs a 9-minute order in 27 s).
    pub speed: f64,
    /// Real time between two simulation steps, in milliseconds.
    pub tick_ms: u64,
    /// Orders placed on their own, as visitors would, per simulated hour (0: only explicit orders).
    pub orders_per_hour: f64,
    /// Probability that a part comes out of tolerance and is scrapped at metrology.
    pub defect_rate: f64,
    pub synthetic: SyntheticConfig,
    /// The truck's machines as simulated by default. The gateway drops those of a station that
    /// has a device in `[[devices]]`.
    pub devices: Vec<SimulatedDevice>,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        SimulationConfig {
            seed: 2026,
            speed: 1.0,
            tick_ms: 100,
            orders_per_hour: 12.0,
            defect_rate: 0.03,
            synthetic: SyntheticConfig::default(),
            devices: Vec::new(),
        }
    }
}

impl SimulationConfig {
    /// Checks what serde cannot: returns the offending key and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.speed.is_finite() && self.speed > 0.0 && self.speed <= 1000.0) {
            return Err((
                "simulation.speed",
                format!("must be in (0, 1000], got {}", self.speed),
            ));
        }
        if !(10..=10_000).contains(&self.tick_ms) {
            return Err((
                "simulation.tick_ms",
                format!("must be between 10 and 10000, got {}", self.tick_ms),
            ));
        }
        if !(self.orders_per_hour.is_finite() && (0.0..=3600.0).contains(&self.orders_per_hour)) {
            return Err((
                "simulation.orders_per_hour",
                format!("must be between 0 and 3600, got {}", self.orders_per_hour),
            ));
        }
        if !(0.0..=1.0).contains(&self.defect_rate) {
            return Err((
                "simulation.defect_rate",
                format!("must be between 0 and 1, got {}", self.defect_rate),
            ));
        }
        self.synthetic.validate()
    }
}

/// A `[[devices]]` block with `protocol = "simulator"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedDevice {
    pub name: String,
    pub station: String,
    /// Which machine to simulate.
    pub kind: MachineKind,
    #[serde(default)]
    pub identification: Identification,
    /// Alarm limits of the machine's analog tags, by tag name, replacing the built-in ones:
    /// `alarms = { NozzleTemperature = { high = 225.0, high_high = 235.0 } }`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub alarms: std::collections::BTreeMap<String, crate::limits::AlarmLimits>,
    /// Taken out of service by the operator (maintenance, a breakdown): its Machinery
    /// `MachineryItemState` is OutOfService whatever the connection says.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub out_of_service: bool,
}

impl SimulatedDevice {
    /// Every configured alarm names an analog tag of the machine, with usable limits. The
    /// issue's key is below `alarms` (`alarms.NozzleTemperature.high`).
    pub fn validate_alarms(&self) -> Result<(), crate::device::ConfigIssue> {
        if self.alarms.is_empty() {
            return Ok(());
        }
        let analog = machines::analog_tags(self.kind);
        for (tag, limits) in &self.alarms {
            let key = format!("alarms.{tag}");
            if !analog.iter().any(|a| a == tag) {
                return Err(crate::device::ConfigIssue::new(
                    key,
                    format!(
                        "`{tag}` is not an analog tag of a {:?} machine (one of: {})",
                        self.kind,
                        analog.join(", ")
                    ),
                ));
            }
            limits.check(&key)?;
        }
        Ok(())
    }
}

struct Machine {
    name: String,
    kind: MachineKind,
    status: DeviceStatus,
    model: Box<dyn SimMachine>,
}

/// Texts visitors type at the kiosk, for orders that arrive on their own.
const SAMPLE_TEXTS: [&str; 12] = [
    "Léa",
    "Hugo",
    "Chloé",
    "Nathan",
    "Inès",
    "Lucas",
    "Manon",
    "Yanis",
    "Go Lens!",
    "Merci",
    "Zoé & Tom",
    "Team 3B",
];

/// The line and the simulated machines of the truck, on one clock.
pub struct TruckSimulator {
    config: SimulationConfig,
    line: Line,
    devices: Vec<SimulatedDevice>,
    machines: Vec<Machine>,
    /// Which machine owns each writable tag.
    writable: HashMap<TagId, usize>,
}

impl TruckSimulator {
    pub fn new(config: SimulationConfig, line: LineConfig, devices: Vec<SimulatedDevice>) -> Self {
        let defect_rate = config.defect_rate;
        TruckSimulator {
            config,
            line: Line::new(line, defect_rate),
            devices,
            machines: Vec::new(),
            writable: HashMap::new(),
        }
    }

    fn call(&mut self, request: &CallRequest, rng: &mut StdRng) -> Result<Vec<Value>, CallError> {
        match request.method.as_str() {
            "Line/SubmitOrder" => {
                let [Value::Text(model), Value::Text(text)] = request.args.as_slice() else {
                    return Err(CallError::InvalidArgument(
                        "expects (Model: String, Text: String)".into(),
                    ));
                };
                let id = self.line.submit(model, text, Timestamp::now(), rng)?;
                tracing::info!(order = %id, %model, "order placed");
                Ok(vec![Value::text(id)])
            }
            "Line/Start" => {
                self.line.set_running(true);
                Ok(Vec::new())
            }
            "Line/Stop" => {
                self.line.set_running(false);
                Ok(Vec::new())
            }
            other => Err(CallError::UnknownMethod(other.to_owned())),
        }
    }

    fn write(&mut self, request: &WriteRequest) -> Result<(), WriteError> {
        let machine = self
            .writable
            .get(&request.tag)
            .ok_or(WriteError::NotWritable)?;
        self.machines[*machine]
            .model
            .write(request.tag, &request.value)
    }

    fn place_random_order(&mut self, rng: &mut StdRng) {
        let models = &self.line.config().models;
        let model = models[rng.random_range(0..models.len())].clone();
        let text = SAMPLE_TEXTS[rng.random_range(0..SAMPLE_TEXTS.len())];
        if let Ok(id) = self.line.submit(&model, text, Timestamp::now(), rng) {
            tracing::debug!(order = %id, "order arrived from the kiosk");
        }
    }

    /// Tell each machine about the orders that finished its step or moved along the line.
    fn dispatch(&mut self, events: &[LineEvent], rng: &mut StdRng) {
        for event in events {
            let LineEvent::Left { step, order } = event else {
                continue;
            };
            for machine in &mut self.machines {
                if machine.kind.step() == Some(*step) {
                    machine.model.job_done(order, rng);
                }
                if *step < line::STEP_COUNT {
                    machine.model.order_moved();
                }
            }
        }
    }
}

#[async_trait]
impl Adapter for TruckSimulator {
    fn name(&self) -> &str {
        "simulator"
    }

    fn declare_tags(&mut self, tags: &mut TagRegistrar<'_>) -> Result<(), CatalogError> {
        self.line.declare_tags(tags)?;
        for device in &self.devices {
            let path = device_path(&device.station, &device.name);
            let status = DeviceStatus::declare(tags, &path)?;
            let before = tags.registered();
            let model = machines::build(device.kind, &path, tags, &device.alarms)?;
            for tag in tags.registered_since(before) {
                if tags.is_writable(tag) {
                    self.writable.insert(tag, self.machines.len());
                }
            }
            self.machines.push(Machine {
                name: device.name.clone(),
                kind: device.kind,
                status,
                model,
            });
        }
        Ok(())
    }

    async fn run(mut self: Box<Self>, mut ctx: AdapterContext) {
        let mut rng = StdRng::seed_from_u64(self.config.seed);
        let tick = Duration::from_millis(self.config.tick_ms);
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mean_arrival_s =
            (self.config.orders_per_hour > 0.0).then(|| 3600.0 / self.config.orders_per_hour);
        let mut next_arrival_s = mean_arrival_s.map(|m| exponential(&mut rng, m));
        let mut last = tokio::time::Instant::now();
        let mut first = true;
        tracing::info!(
            machines = self.machines.len(),
            speed = self.config.speed,
            "truck simulator started"
        );

        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                Some(command) = ctx.commands.recv() => match command {
                    Command::Write(request) => {
                        let result = self.write(&request);
                        if result.is_ok() {
                            ctx.publisher.set(request.tag, request.value.clone(), Timestamp::now());
                            ctx.publisher.flush();
                        }
                        let _ = request.reply.send(result);
                    }
                    Command::Call(request) => {
                        let result = self.call(&request, &mut rng);
                        let _ = request.reply.send(result);
                    }
                },
                _ = interval.tick() => {}
            }
            // Every wake-up advances the clock, so a write or an order is published at once.
            let now_instant = tokio::time::Instant::now();
            let dt = now_instant.duration_since(last).as_secs_f64() * self.config.speed;
            last = now_instant;
            if let (Some(mean), Some(next)) = (mean_arrival_s, next_arrival_s.as_mut()) {
                *next -= dt;
                while *next <= 0.0 {
                    self.place_random_order(&mut rng);
                    *next += exponential(&mut rng, mean);
                }
            }
            let now = Timestamp::now();
            let events = self.line.advance(dt, now, &mut rng);
            self.dispatch(&events, &mut rng);

            let out = &mut ctx.publisher;
            self.line.publish(out, now, first);
            let busy = (1..=line::STEP_COUNT).any(|s| self.line.at_step(s).is_some());
            for machine in &mut self.machines {
                let occupant = machine.kind.step().and_then(|s| self.line.at_step(s));
                machine
                    .model
                    .tick(dt, LineView { occupant, busy }, &mut rng, out, now);
                if first {
                    machine.status.healthy(out, now);
                    tracing::debug!(device = %machine.name, "simulated device online");
                }
            }
            out.flush();
            first = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::{mpsc, oneshot};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::bus::PointBus;
    use crate::tag::{AdapterId, TagCatalogBuilder};

    fn device(name: &str, station: &str, kind: MachineKind) -> SimulatedDevice {
        SimulatedDevice {
            out_of_service: false,
            name: name.into(),
            station: station.into(),
            kind,
            identification: Identification::default(),
            alarms: Default::default(),
        }
    }

    #[test]
    fn simulated_alarms_name_analog_tags_with_usable_limits() {
        let mut printer = device("Printer3D", "Printing", MachineKind::Printer3d);
        assert!(printer.validate_alarms().is_ok());
        printer.alarms.insert(
            "NozzleTemperature".into(),
            crate::limits::AlarmLimits::high(225.0, 235.0),
        );
        assert!(printer.validate_alarms().is_ok());
        printer.alarms.insert(
            "BedTemperature".into(),
            crate::limits::AlarmLimits::high(90.0, 80.0),
        );
        let issue = printer.validate_alarms().unwrap_err();
        assert_eq!(issue.key, "alarms.BedTemperature.high_high");
        printer.alarms.clear();
        printer
            .alarms
            .insert("State".into(), crate::limits::AlarmLimits::high(1.0, 2.0));
        let issue = printer.validate_alarms().unwrap_err();
        assert_eq!(issue.key, "alarms.State");
        assert!(
            issue.reason.contains("NozzleTemperature"),
            "{}",
            issue.reason
        );
    }

    #[tokio::test]
    async fn an_order_is_worked_on_by_each_machine_at_its_own_step() {
        let config = SimulationConfig {
            speed: 1000.0,
            tick_ms: 10,
            orders_per_hour: 0.0,
            defect_rate: 0.0,
            ..SimulationConfig::default()
        };
        let machines = vec![
            device("P", "A", MachineKind::Printer3d),
            device("C", "A", MachineKind::Cnc),
            device("L", "A", MachineKind::Laser),
            device("R", "A", MachineKind::Cobot),
            device("M", "A", MachineKind::Metrology),
            device("V", "A", MachineKind::Conveyor),
            device("K", "A", MachineKind::Packaging),
        ];
        let mut sim = Box::new(TruckSimulator::new(config, LineConfig::default(), machines));
        let mut builder = TagCatalogBuilder::new();
        sim.declare_tags(&mut TagRegistrar::new(&mut builder, AdapterId(0)))
            .unwrap();
        let bus = PointBus::new(Arc::new(builder.build()), 64);
        let (commands, receiver) = mpsc::channel(4);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(sim.run(AdapterContext {
            publisher: bus.publisher(),
            commands: receiver,
            shutdown: shutdown.clone(),
        }));

        let (reply, answer) = oneshot::channel();
        let args = vec![Value::text("Wave"), Value::text("Zoé")];
        let call = CallRequest {
            method: "Line/SubmitOrder".into(),
            args,
            reply,
        };
        commands.send(Command::Call(call)).await.unwrap();
        assert_eq!(answer.await.unwrap(), Ok(vec![Value::text("ORD-000001")]));

        let read = |path: &str| bus.latest(bus.catalog().lookup(path).unwrap()).value;
        let delivered = async {
            while read("Line/PartsDelivered") != Some(Value::UInt(1)) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), delivered)
            .await
            .expect("order delivered");
        shutdown.cancel();
        task.await.unwrap();

        for (path, expected) in [
            ("Stations/A/P/PrintedParts", 1),
            ("Stations/A/C/PartCount", 1),
            ("Stations/A/L/Jobs", 1),
            ("Stations/A/R/Cycles", 1),
            ("Stations/A/M/Measured", 1),
            ("Stations/A/M/Rejected", 0),
            ("Stations/A/K/Packed", 1),
            // Transfers between the 9 steps: 8.
            ("Stations/A/V/ItemsTransported", 8),
        ] {
            assert_eq!(read(path), Some(Value::UInt(expected)), "{path}");
        }
        assert_eq!(read("Stations/A/M/Verdict"), Some(Value::text("OK")));
        assert_eq!(
            read("Stations/A/K/LastLabel"),
            Some(Value::text("ORD-000001 Zoé"))
        );
    }
}
