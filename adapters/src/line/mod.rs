//! The production line's domain: its 9 steps, the states of a step and of an order, its
//! configuration and the tags, objects and methods through which any line controller shows
//! it. The truck simulator drives it ([`crate::simulator::line`]); an adapter for a real line
//! PLC would declare the same [`LineTags`] and publish the same states.

mod config;
mod tags;

pub use config::LineConfig;
pub use tags::{
    declare_line_objects, order_slot_path, step_path, step_tag, LineTags, OrderSlotTags, StepTags,
};

/// Number of production steps, from design to delivery.
pub const STEP_COUNT: usize = 9;

/// The route of the smartphone holder, in order.
pub const STEP_NAMES: [&str; STEP_COUNT] = [
    "Design",
    "Programming and planning",
    "Material supply",
    "Additive manufacturing",
    "Machining",
    "Laser engraving",
    "Robotic assembly",
    "Metrology check",
    "Packaging and delivery",
];

/// The step at which parts are measured and scrapped when out of tolerance.
pub const METROLOGY_STEP: usize = 8;

/// Where an order is: the `State` of an `Orders/Recent` slot and of `FindOrder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderState {
    Queued,
    InProgress,
    Delivered,
    Scrapped,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Queued => "Queued",
            OrderState::InProgress => "InProgress",
            OrderState::Delivered => "Delivered",
            OrderState::Scrapped => "Scrapped",
        }
    }
}

/// What a step is doing: its `State` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    /// No order at the step.
    Idle,
    /// Working on its order.
    Busy,
    /// Done with its order, waiting for the next step to free up.
    Blocked,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Idle => "Idle",
            StepState::Busy => "Busy",
            StepState::Blocked => "Blocked",
        }
    }
}
