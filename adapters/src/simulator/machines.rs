//! Simulated machines of the truck. Each reacts to the order at its own production step, so
//! the printer prints, the CNC cuts and the metrology station measures the order the line
//! shows at that step.

use std::collections::BTreeMap;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::adapter::{TagRegistrar, WriteError};
use crate::bus::Publisher;
use crate::device::{StandardKind, StandardShape};
use crate::limits::AlarmLimits;
use crate::point::{Timestamp, Value};
use crate::tag::{CatalogError, DataType, TagId, TagSpec};

use super::line::Order;
use super::noise::{approach, normal};

/// The kinds of machine the simulator knows (`kind = "..."` in a simulated device block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineKind {
    Printer3d,
    Cnc,
    Laser,
    Cobot,
    Metrology,
    Conveyor,
    Packaging,
}

impl MachineKind {
    /// Where this machine stands in the companion specifications (see the README's table in
    /// "Companion specifications"). The conveyor is shown at step 3, material supply.
    pub fn standard(self) -> StandardShape {
        let (kind, step) = match self {
            MachineKind::Printer3d => (StandardKind::MachineTool, 4),
            MachineKind::Cnc => (StandardKind::MachineTool, 5),
            MachineKind::Laser => (StandardKind::MachineTool, 6),
            MachineKind::Cobot => (StandardKind::Robot, 7),
            MachineKind::Metrology => (StandardKind::Machine, 8),
            MachineKind::Conveyor => (StandardKind::Machine, 3),
            MachineKind::Packaging => (StandardKind::Machine, 9),
        };
        let axes = match self {
            MachineKind::Cobot => (1..=Cobot::AXES).map(|n| format!("Joint{n}")).collect(),
            _ => Vec::new(),
        };
        StandardShape {
            kind: Some(kind),
            axes,
            steps: vec![step],
            out_of_service: false,
        }
    }

    /// The production step this machine serves; the conveyor serves them all.
    pub fn step(self) -> Option<usize> {
        match self {
            MachineKind::Printer3d => Some(4),
            MachineKind::Cnc => Some(5),
            MachineKind::Laser => Some(6),
            MachineKind::Cobot => Some(7),
            MachineKind::Metrology => Some(8),
            MachineKind::Packaging => Some(9),
            MachineKind::Conveyor => None,
        }
    }
}

/// What a machine sees of the line on each tick.
#[derive(Clone, Copy)]
pub struct LineView<'a> {
    /// The order at this machine's step, if any.
    pub occupant: Option<&'a Order>,
    /// Whether any order is on the line.
    pub busy: bool,
}

impl LineView<'_> {
    /// The machine's state: `busy` while an order is at its step, `Idle` otherwise.
    fn activity(&self, busy: &'static str) -> Value {
        Value::text(if self.occupant.is_some() {
            busy
        } else {
            "Idle"
        })
    }
}

/// A simulated machine.
pub trait SimMachine: Send {
    /// An order finished this machine's step (see [`MachineKind::step`]).
    fn job_done(&mut self, _order: &Order, _rng: &mut dyn rand::RngCore) {}
    /// An order moved from one step to the next anywhere on the line.
    fn order_moved(&mut self) {}
    /// Advance by `dt` simulated seconds and stage every tag (the bus drops what did not change).
    fn tick(
        &mut self,
        dt: f64,
        view: LineView<'_>,
        rng: &mut dyn rand::RngCore,
        out: &mut Publisher,
        now: Timestamp,
    );
    /// Apply a client write to one of this machine's writable tags.
    fn write(&mut self, tag: TagId, value: &Value) -> Result<(), WriteError>;
}

/// The names of a `kind` machine's analog tags (those that may have alarm limits).
pub fn analog_tags(kind: MachineKind) -> Vec<String> {
    let mut builder = crate::tag::TagCatalogBuilder::new();
    let mut registrar = TagRegistrar::new(&mut builder, crate::tag::AdapterId(0));
    if build(kind, "S/M", &mut registrar, &BTreeMap::new()).is_err() {
        return Vec::new();
    }
    let ids = builder.registered().to_vec();
    ids.into_iter()
        .filter_map(|id| builder.spec(id))
        .filter(|spec| spec.data_type == DataType::Float64 && spec.range.is_some())
        .map(|spec| spec.name().to_owned())
        .collect()
}

/// Declare the tags of a `kind` machine under `path` and build it.
/// `alarms`: limits configured for this device's tags (`alarms = { Tag = { ... } }`), which
/// replace the built-in ones; every name must be one of the machine's analog tags.
pub fn build(
    kind: MachineKind,
    path: &str,
    tags: &mut TagRegistrar<'_>,
    alarms: &BTreeMap<String, AlarmLimits>,
) -> Result<Box<dyn SimMachine>, CatalogError> {
    let mut t = Tags {
        tags,
        path,
        alarms,
        used: 0,
    };
    Ok(match kind {
        MachineKind::Printer3d => Box::new(Printer3d::new(&mut t)?),
        MachineKind::Cnc => Box::new(Cnc::new(&mut t)?),
        MachineKind::Laser => Box::new(Laser::new(&mut t)?),
        MachineKind::Cobot => Box::new(Cobot::new(&mut t)?),
        MachineKind::Metrology => Box::new(Metrology::new(&mut t)?),
        MachineKind::Conveyor => Box::new(Conveyor::new(&mut t)?),
        MachineKind::Packaging => Box::new(Packaging::new(&mut t)?),
    })
}

/// Registers a machine's tags under its device path.
struct Tags<'r, 'a> {
    tags: &'r mut TagRegistrar<'a>,
    path: &'r str,
    alarms: &'r BTreeMap<String, AlarmLimits>,
    /// How many of `alarms` an analog tag took.
    used: usize,
}

impl Tags<'_, '_> {
    fn add(
        &mut self,
        name: &str,
        data_type: DataType,
        description: &str,
    ) -> Result<TagId, CatalogError> {
        self.tags.register(
            TagSpec::new(format!("{}/{name}", self.path), data_type).describe(description),
        )
    }

    fn analog(
        &mut self,
        name: &str,
        unit: &str,
        (low, high): (f64, f64),
        description: &str,
    ) -> Result<TagId, CatalogError> {
        let spec = TagSpec::new(format!("{}/{name}", self.path), DataType::Float64)
            .unit(unit)
            .range(low, high)
            .describe(description);
        let spec = match self.alarms.get(name) {
            Some(limits) => {
                self.used += 1;
                spec.alarm(limits.clone())
            }
            None => spec,
        };
        self.tags.register(spec)
    }

    /// An analog tag with the truck's built-in alarm limits (README "Alarms, events and
    /// history"): a limit alarm is raised when the simulated machine leaves its normal range.
    fn limited(
        &mut self,
        name: &str,
        unit: &str,
        (low, high): (f64, f64),
        description: &str,
        limits: crate::limits::AlarmLimits,
    ) -> Result<TagId, CatalogError> {
        let limits = match self.alarms.get(name) {
            Some(configured) => {
                self.used += 1;
                configured.clone()
            }
            None => limits,
        };
        self.tags.register(
            TagSpec::new(format!("{}/{name}", self.path), DataType::Float64)
                .unit(unit)
                .range(low, high)
                .describe(description)
                .alarm(limits),
        )
    }

    fn setpoint(
        &mut self,
        name: &str,
        unit: &str,
        (low, high): (f64, f64),
        initial: f64,
        description: &str,
    ) -> Result<Setpoint, CatalogError> {
        let tag = self.tags.register(
            TagSpec::new(format!("{}/{name}", self.path), DataType::Float64)
                .unit(unit)
                .range(low, high)
                .writable()
                .describe(description),
        )?;
        Ok(Setpoint {
            tag,
            low,
            high,
            value: initial,
        })
    }
}

/// A writable analog setpoint that refuses values outside its range, as a drive would.
struct Setpoint {
    tag: TagId,
    low: f64,
    high: f64,
    value: f64,
}

impl Setpoint {
    fn write(&mut self, value: &Value) -> Result<(), WriteError> {
        let Value::Float(x) = *value else {
            return Err(WriteError::TypeMismatch(DataType::Float64));
        };
        if !(x >= self.low && x <= self.high) {
            return Err(WriteError::OutOfRange {
                value: x,
                low: self.low,
                high: self.high,
            });
        }
        self.value = x;
        Ok(())
    }

    fn stage(&self, out: &mut Publisher, now: Timestamp) {
        out.set(self.tag, Value::Float(self.value), now);
    }
}

fn write_to(setpoints: &mut [&mut Setpoint], tag: TagId, value: &Value) -> Result<(), WriteError> {
    match setpoints.iter_mut().find(|s| s.tag == tag) {
        Some(s) => s.write(value),
        None => Err(WriteError::NotWritable),
    }
}

// ---------------------------------------------------------------------------------------------

struct Printer3d {
    state: TagId,
    job: TagId,
    progress: TagId,
    nozzle: TagId,
    bed: TagId,
    parts: TagId,
    standby: Setpoint,
    nozzle_c: f64,
    bed_c: f64,
    printed: u64,
}

impl Printer3d {
    const PRINT_NOZZLE_C: f64 = 215.0;
    const PRINT_BED_C: f64 = 60.0;

    fn new(t: &mut Tags<'_, '_>) -> Result<Self, CatalogError> {
        Ok(Printer3d {
            state: t.add("State", DataType::String, "Idle, Heating or Printing")?,
            job: t.add("JobName", DataType::String, "Order being printed")?,
            progress: t.analog(
                "JobProgress",
                "%",
                (0.0, 100.0),
                "Progress of the print job",
            )?,
            nozzle: t.limited(
                "NozzleTemperature",
                "°C",
                (0.0, 300.0),
                "Hot-end temperature",
                AlarmLimits::high(230.0, 240.0).message("Nozzle overheating"),
            )?,
            bed: t.limited(
                "BedTemperature",
                "°C",
                (0.0, 120.0),
                "Heated bed temperature",
                AlarmLimits::high(70.0, 80.0).message("Bed overheating"),
            )?,
            parts: t.add(
                "PrintedParts",
                DataType::UInt32,
                "Parts printed since start",
            )?,
            standby: t.setpoint(
                "StandbyTemperature",
                "°C",
                (0.0, 250.0),
                170.0,
                "Nozzle temperature between jobs",
            )?,
            nozzle_c: 25.0,
            bed_c: 25.0,
            printed: 0,
        })
    }
}

impl SimMachine for Printer3d {
    fn job_done(&mut self, _order: &Order, _rng: &mut dyn rand::RngCore) {
        self.printed += 1;
    }

    fn tick(
        &mut self,
        dt: f64,
        view: LineView<'_>,
        rng: &mut dyn rand::RngCore,
        out: &mut Publisher,
        now: Timestamp,
    ) {
        let printing = view.occupant;
        let (nozzle_target, bed_target) = match printing {
            Some(_) => (Self::PRINT_NOZZLE_C, Self::PRINT_BED_C),
            None => (self.standby.value, 50.0),
        };
        self.nozzle_c = approach(self.nozzle_c, nozzle_target, 15.0, dt) + 0.2 * normal(rng);
        self.bed_c = approach(self.bed_c, bed_target, 60.0, dt) + 0.1 * normal(rng);
        let state = match printing {
            None => "Idle",
            Some(_) if self.nozzle_c < Self::PRINT_NOZZLE_C - 10.0 => "Heating",
            Some(_) => "Printing",
        };
        out.set(self.state, Value::text(state), now);
        out.set(
            self.job,
            Value::text(printing.map_or("", |o| o.id.as_str())),
            now,
        );
        out.set(
            self.progress,
            Value::Float(printing.map_or(0.0, |o| 100.0 * o.step_progress())),
            now,
        );
        out.set(self.nozzle, Value::Float(self.nozzle_c), now);
        out.set(self.bed, Value::Float(self.bed_c), now);
        out.set(self.parts, Value::UInt(self.printed), now);
        self.standby.stage(out, now);
    }

    fn write(&mut self, tag: TagId, value: &Value) -> Result<(), WriteError> {
        write_to(&mut [&mut self.standby], tag, value)
    }
}

// ---------------------------------------------------------------------------------------------

struct Cnc {
    state: TagId,
    program: TagId,
    spindle: TagId,
    feed: TagId,
    load: TagId,
    parts: TagId,
    feed_override: Setpoint,
    spindle_rpm: f64,
    part_count: u64,
}

impl Cnc {
    const CUTTING_RPM: f64 = 18_000.0;
    const NOMINAL_FEED: f64 = 1_200.0;

    fn new(t: &mut Tags<'_, '_>) -> Result<Self, CatalogError> {
        Ok(Cnc {
            state: t.add("State", DataType::String, "Idle or Running")?,
            program: t.add("Program", DataType::String, "NC program loaded")?,
            spindle: t.analog("SpindleSpeed", "rpm", (0.0, 24_000.0), "Spindle speed")?,
            feed: t.analog("FeedRate", "mm/min", (0.0, 5_000.0), "Actual feed rate")?,
            load: t.limited(
                "SpindleLoad",
                "%",
                (0.0, 100.0),
                "Spindle motor load",
                AlarmLimits::high(80.0, 95.0).message("Spindle overloaded"),
            )?,
            parts: t.add("PartCount", DataType::UInt32, "Parts machined since start")?,
            feed_override: t.setpoint(
                "FeedOverride",
                "%",
                (0.0, 150.0),
                100.0,
                "Feed override set by the operator",
            )?,
            spindle_rpm: 0.0,
            part_count: 0,
        })
    }
}

impl SimMachine for Cnc {
    fn job_done(&mut self, _order: &Order, _rng: &mut dyn rand::RngCore) {
        self.part_count += 1;
    }

    fn tick(
        &mut self,
        dt: f64,
        view: LineView<'_>,
        rng: &mut dyn rand::RngCore,
        out: &mut Publisher,
        now: Timestamp,
    ) {
        let cutting = view.occupant;
        let target = if cutting.is_some() {
            Self::CUTTING_RPM
        } else {
            0.0
        };
        self.spindle_rpm = approach(self.spindle_rpm, target, 1.5, dt).max(0.0);
        let (feed, load) = match cutting {
            Some(_) => (
                Self::NOMINAL_FEED * self.feed_override.value / 100.0,
                (35.0 + 3.0 * normal(rng)).clamp(0.0, 100.0),
            ),
            None => (0.0, 0.0),
        };
        let program = cutting.map_or(String::new(), |o| {
            format!("HOLDER_{}.NC", o.model.to_uppercase())
        });
        out.set(self.state, view.activity("Running"), now);
        out.set(self.program, Value::text(program), now);
        out.set(self.spindle, Value::Float(self.spindle_rpm.round()), now);
        out.set(self.feed, Value::Float(feed), now);
        out.set(self.load, Value::Float(load), now);
        out.set(self.parts, Value::UInt(self.part_count), now);
        self.feed_override.stage(out, now);
    }

    fn write(&mut self, tag: TagId, value: &Value) -> Result<(), WriteError> {
        write_to(&mut [&mut self.feed_override], tag, value)
    }
}

// ---------------------------------------------------------------------------------------------

struct Laser {
    state: TagId,
    progress: TagId,
    text: TagId,
    power: TagId,
    jobs: TagId,
    power_setpoint: Setpoint,
    done: u64,
}

impl Laser {
    fn new(t: &mut Tags<'_, '_>) -> Result<Self, CatalogError> {
        Ok(Laser {
            state: t.add("State", DataType::String, "Idle or Engraving")?,
            progress: t.analog(
                "JobProgress",
                "%",
                (0.0, 100.0),
                "Progress of the engraving",
            )?,
            text: t.add(
                "EngravedText",
                DataType::String,
                "Personalisation being engraved",
            )?,
            power: t.analog("LaserPower", "%", (0.0, 100.0), "Actual laser power")?,
            jobs: t.add("Jobs", DataType::UInt32, "Engravings done since start")?,
            power_setpoint: t.setpoint(
                "PowerSetpoint",
                "%",
                (10.0, 100.0),
                80.0,
                "Laser power used for engraving",
            )?,
            done: 0,
        })
    }
}

impl SimMachine for Laser {
    fn job_done(&mut self, _order: &Order, _rng: &mut dyn rand::RngCore) {
        self.done += 1;
    }

    fn tick(
        &mut self,
        _dt: f64,
        view: LineView<'_>,
        rng: &mut dyn rand::RngCore,
        out: &mut Publisher,
        now: Timestamp,
    ) {
        let job = view.occupant;
        let power = match job {
            Some(_) => (self.power_setpoint.value + 0.5 * normal(rng)).clamp(0.0, 100.0),
            None => 0.0,
        };
        out.set(self.state, view.activity("Engraving"), now);
        out.set(
            self.progress,
            Value::Float(job.map_or(0.0, |o| 100.0 * o.step_progress())),
            now,
        );
        out.set(
            self.text,
            Value::text(job.map_or("", |o| o.text.as_str())),
            now,
        );
        out.set(self.power, Value::Float(power), now);
        out.set(self.jobs, Value::UInt(self.done), now);
        self.power_setpoint.stage(out, now);
    }

    fn write(&mut self, tag: TagId, value: &Value) -> Result<(), WriteError> {
        write_to(&mut [&mut self.power_setpoint], tag, value)
    }
}

// ---------------------------------------------------------------------------------------------

struct Cobot {
    state: TagId,
    program: TagId,
    joints: [TagId; 6],
    cycles: TagId,
    speed: Setpoint,
    angles: [f64; 6],
    done: u64,
}

impl Cobot {
    const AXES: usize = 6;
    const HOME: [f64; 6] = [0.0, -90.0, 90.0, -90.0, -90.0, 0.0];
    const SWING: [f64; 6] = [60.0, 25.0, 30.0, 40.0, 15.0, 90.0];

    fn new(t: &mut Tags<'_, '_>) -> Result<Self, CatalogError> {
        let mut joint =
            |n: usize| t.analog(&format!("Joint{n}"), "°", (-360.0, 360.0), "Joint angle");
        let joints = [
            joint(1)?,
            joint(2)?,
            joint(3)?,
            joint(4)?,
            joint(5)?,
            joint(6)?,
        ];
        Ok(Cobot {
            joints,
            state: t.add("ProgramState", DataType::String, "Idle or Running")?,
            program: t.add("Program", DataType::String, "Robot program")?,
            cycles: t.add("Cycles", DataType::UInt32, "Assembly cycles since start")?,
            speed: t.setpoint(
                "SpeedOverride",
                "%",
                (0.0, 100.0),
                80.0,
                "Speed override, as on the teach pendant",
            )?,
            angles: Self::HOME,
            done: 0,
        })
    }
}

impl SimMachine for Cobot {
    fn job_done(&mut self, _order: &Order, _rng: &mut dyn rand::RngCore) {
        self.done += 1;
    }

    fn tick(
        &mut self,
        dt: f64,
        view: LineView<'_>,
        _rng: &mut dyn rand::RngCore,
        out: &mut Publisher,
        now: Timestamp,
    ) {
        let running = view.occupant;
        for (i, angle) in self.angles.iter_mut().enumerate() {
            let target = match running {
                // Three pick-and-place moves per assembly, each joint on its own phase.
                Some(o) => {
                    let phase =
                        2.0 * std::f64::consts::PI * (3.0 * o.step_progress() + i as f64 / 6.0);
                    Self::HOME[i] + Self::SWING[i] * phase.sin() * self.speed.value / 100.0
                }
                None => Self::HOME[i],
            };
            *angle = approach(*angle, target, 0.3, dt);
            out.set(
                self.joints[i],
                Value::Float((*angle * 100.0).round() / 100.0),
                now,
            );
        }
        out.set(self.state, view.activity("Running"), now);
        out.set(self.program, Value::text("ASSEMBLE_HOLDER"), now);
        out.set(self.cycles, Value::UInt(self.done), now);
        self.speed.stage(out, now);
    }

    fn write(&mut self, tag: TagId, value: &Value) -> Result<(), WriteError> {
        write_to(&mut [&mut self.speed], tag, value)
    }
}

// ---------------------------------------------------------------------------------------------

/// A measured dimension: nominal value and symmetric tolerance, in mm.
struct Dimension {
    tag: TagId,
    nominal: f64,
    tolerance: f64,
    last: f64,
}

struct Metrology {
    state: TagId,
    verdict: TagId,
    last_order: TagId,
    measured: TagId,
    rejected: TagId,
    dims: [Dimension; 3],
    measured_count: u64,
    rejected_count: u64,
    last_verdict: &'static str,
    last_order_id: String,
}

impl Metrology {
    fn new(t: &mut Tags<'_, '_>) -> Result<Self, CatalogError> {
        let mut dim =
            |name: &str, nominal: f64, tolerance: f64| -> Result<Dimension, CatalogError> {
                Ok(Dimension {
                    tag: t.analog(name, "mm", (0.0, 200.0), "Last measured dimension")?,
                    nominal,
                    tolerance,
                    last: nominal,
                })
            };
        let dims = [
            dim("Width", 80.0, 0.15)?,
            dim("Thickness", 6.0, 0.10)?,
            dim("SlotWidth", 12.0, 0.08)?,
        ];
        Ok(Metrology {
            dims,
            state: t.add("State", DataType::String, "Idle or Measuring")?,
            verdict: t.add("Verdict", DataType::String, "OK or NOK for the last part")?,
            last_order: t.add(
                "LastOrder",
                DataType::String,
                "Order of the last part measured",
            )?,
            measured: t.add("Measured", DataType::UInt32, "Parts measured since start")?,
            rejected: t.add(
                "Rejected",
                DataType::UInt32,
                "Parts out of tolerance since start",
            )?,
            measured_count: 0,
            rejected_count: 0,
            last_verdict: "",
            last_order_id: String::new(),
        })
    }
}

impl SimMachine for Metrology {
    fn job_done(&mut self, order: &Order, rng: &mut dyn rand::RngCore) {
        // Good parts scatter well inside the tolerance; a defective part has one dimension out.
        let bad_dim = order
            .defective
            .then(|| rng.random_range(0..self.dims.len()));
        for (i, d) in self.dims.iter_mut().enumerate() {
            let deviation = if bad_dim == Some(i) {
                let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                sign * d.tolerance * rng.random_range(1.2..2.0)
            } else {
                (d.tolerance / 4.0 * normal(rng)).clamp(-0.9 * d.tolerance, 0.9 * d.tolerance)
            };
            d.last = ((d.nominal + deviation) * 1000.0).round() / 1000.0;
        }
        self.measured_count += 1;
        if order.defective {
            self.rejected_count += 1;
        }
        self.last_verdict = if order.defective { "NOK" } else { "OK" };
        self.last_order_id = order.id.clone();
    }

    fn tick(
        &mut self,
        _dt: f64,
        view: LineView<'_>,
        _rng: &mut dyn rand::RngCore,
        out: &mut Publisher,
        now: Timestamp,
    ) {
        out.set(self.state, view.activity("Measuring"), now);
        for d in &self.dims {
            out.set(d.tag, Value::Float(d.last), now);
        }
        out.set(self.verdict, Value::text(self.last_verdict), now);
        out.set(self.last_order, Value::text(&self.last_order_id), now);
        out.set(self.measured, Value::UInt(self.measured_count), now);
        out.set(self.rejected, Value::UInt(self.rejected_count), now);
    }

    fn write(&mut self, _tag: TagId, _value: &Value) -> Result<(), WriteError> {
        Err(WriteError::NotWritable)
    }
}

// ---------------------------------------------------------------------------------------------

struct Conveyor {
    running: TagId,
    speed: TagId,
    current: TagId,
    items: TagId,
    setpoint: Setpoint,
    speed_m_min: f64,
    transported: u64,
}

impl Conveyor {
    fn new(t: &mut Tags<'_, '_>) -> Result<Self, CatalogError> {
        Ok(Conveyor {
            running: t.add("Running", DataType::Bool, "Belt moving")?,
            speed: t.limited(
                "Speed",
                "m/min",
                (0.0, 30.0),
                "Actual belt speed",
                AlarmLimits::high(20.0, 25.0)
                    .deadband(0.5)
                    .message("Conveyor too fast"),
            )?,
            current: t.analog("MotorCurrent", "A", (0.0, 10.0), "Drive motor current")?,
            items: t.add(
                "ItemsTransported",
                DataType::UInt32,
                "Transfers between steps since start",
            )?,
            setpoint: t.setpoint(
                "SpeedSetpoint",
                "m/min",
                (0.0, 30.0),
                12.0,
                "Belt speed when running",
            )?,
            speed_m_min: 0.0,
            transported: 0,
        })
    }
}

impl SimMachine for Conveyor {
    fn order_moved(&mut self) {
        self.transported += 1;
    }

    fn tick(
        &mut self,
        dt: f64,
        view: LineView<'_>,
        rng: &mut dyn rand::RngCore,
        out: &mut Publisher,
        now: Timestamp,
    ) {
        let target = if view.busy { self.setpoint.value } else { 0.0 };
        self.speed_m_min = approach(self.speed_m_min, target, 1.0, dt);
        let moving = self.speed_m_min > 0.05;
        let current = if moving {
            1.2 + 0.12 * self.speed_m_min + 0.05 * normal(rng)
        } else {
            0.0
        };
        out.set(self.running, Value::Bool(moving), now);
        out.set(
            self.speed,
            Value::Float((self.speed_m_min * 100.0).round() / 100.0),
            now,
        );
        out.set(self.current, Value::Float(current.max(0.0)), now);
        out.set(self.items, Value::UInt(self.transported), now);
        self.setpoint.stage(out, now);
    }

    fn write(&mut self, tag: TagId, value: &Value) -> Result<(), WriteError> {
        write_to(&mut [&mut self.setpoint], tag, value)
    }
}

// ---------------------------------------------------------------------------------------------

struct Packaging {
    state: TagId,
    packed: TagId,
    label: TagId,
    packed_count: u64,
    last_label: String,
}

impl Packaging {
    fn new(t: &mut Tags<'_, '_>) -> Result<Self, CatalogError> {
        Ok(Packaging {
            state: t.add("State", DataType::String, "Idle or Packing")?,
            packed: t.add(
                "Packed",
                DataType::UInt32,
                "Parts packed and handed over since start",
            )?,
            label: t.add(
                "LastLabel",
                DataType::String,
                "Label printed for the last parcel",
            )?,
            packed_count: 0,
            last_label: String::new(),
        })
    }
}

impl SimMachine for Packaging {
    fn job_done(&mut self, order: &Order, _rng: &mut dyn rand::RngCore) {
        self.packed_count += 1;
        self.last_label = format!("{} {}", order.id, order.text);
    }

    fn tick(
        &mut self,
        _dt: f64,
        view: LineView<'_>,
        _rng: &mut dyn rand::RngCore,
        out: &mut Publisher,
        now: Timestamp,
    ) {
        out.set(self.state, view.activity("Packing"), now);
        out.set(self.packed, Value::UInt(self.packed_count), now);
        out.set(self.label, Value::text(&self.last_label), now);
    }

    fn write(&mut self, _tag: TagId, _value: &Value) -> Result<(), WriteError> {
        Err(WriteError::NotWritable)
    }
}
