//! The line's address: its objects, methods and tags, the same for whatever controls the line
//! (the truck simulator today, a line PLC's adapter tomorrow).

use super::STEP_COUNT;
use crate::adapter::TagRegistrar;
use crate::model::{ArgumentSpec, FabriqueType, MethodSpec, ObjectType};
use crate::tag::{CatalogError, DataType, TagCatalog, TagId, TagSpec};

/// Where step `n` (1-based) stands in the address space: `Line/Steps/Step<n>`.
pub fn step_path(n: usize) -> String {
    format!("Line/Steps/Step{n}")
}

/// Where recent-order slot `n` (1-based) stands: `Orders/Recent/Order<nn>`.
pub fn order_slot_path(n: usize) -> String {
    format!("Orders/Recent/Order{n:02}")
}

/// Step `n`'s tag `name` (`CurrentOrder`, `Progress`...), if the catalogue has the line.
pub fn step_tag(catalog: &TagCatalog, n: usize, name: &str) -> Option<TagId> {
    catalog.lookup(&format!("{}/{name}", step_path(n)))
}

/// One step's tags (`Line/Steps/Step<n>/...`).
pub struct StepTags {
    pub state: TagId,
    pub current_order: TagId,
    pub progress: TagId,
    pub last_cycle_time: TagId,
    pub count: TagId,
    pub number: TagId,
    pub name: TagId,
}

/// One recent-order slot's tags (`Orders/Recent/Order<nn>/...`).
pub struct OrderSlotTags {
    pub id: TagId,
    pub model: TagId,
    pub text: TagId,
    pub step: TagId,
    pub state: TagId,
    pub submitted_at: TagId,
    pub completed_at: TagId,
    pub verdict: TagId,
}

/// Every tag of the line, as any line controller publishes them.
pub struct LineTags {
    pub state: TagId,
    pub mode: TagId,
    pub queued: TagId,
    pub in_progress: TagId,
    pub delivered: TagId,
    pub scrapped: TagId,
    pub last_order_id: TagId,
    pub submitted: TagId,
    pub steps: Vec<StepTags>,
    pub recent: Vec<OrderSlotTags>,
}

impl LineTags {
    /// Declare the line's objects, methods and tags, with `recent_orders` slots under
    /// `Orders/Recent`.
    pub fn declare(
        tags: &mut TagRegistrar<'_>,
        recent_orders: usize,
    ) -> Result<Self, CatalogError> {
        fn reg(
            tags: &mut TagRegistrar<'_>,
            path: String,
            dt: DataType,
            text: &str,
        ) -> Result<TagId, CatalogError> {
            tags.register(TagSpec::new(path, dt).describe(text))
        }
        declare_line_objects(tags, recent_orders)?;
        let steps = (1..=STEP_COUNT)
            .map(|n| {
                let p = |tag: &str| format!("{}/{tag}", step_path(n));
                Ok(StepTags {
                    number: tags.register(
                        TagSpec::new(p("Number"), DataType::UInt16)
                            .property()
                            .describe("Position of the step on the route"),
                    )?,
                    name: tags.register(
                        TagSpec::new(p("Name"), DataType::String)
                            .property()
                            .describe("What happens at this step"),
                    )?,
                    state: reg(tags, p("State"), DataType::String, "Idle, Busy or Blocked")?,
                    current_order: reg(
                        tags,
                        p("CurrentOrder"),
                        DataType::String,
                        "Order at this step, empty when idle",
                    )?,
                    progress: tags.register(
                        TagSpec::new(p("Progress"), DataType::Float64)
                            .unit("%")
                            .range(0.0, 100.0)
                            .describe("Progress of the current order through this step"),
                    )?,
                    last_cycle_time: tags.register(
                        TagSpec::new(p("LastCycleTime"), DataType::Float64)
                            .unit("s")
                            .describe("Duration of the last completed cycle, simulated seconds"),
                    )?,
                    count: reg(
                        tags,
                        p("Count"),
                        DataType::UInt32,
                        "Orders completed at this step",
                    )?,
                })
            })
            .collect::<Result<Vec<_>, CatalogError>>()?;
        let recent = (1..=recent_orders)
            .map(|n| {
                let p = |tag: &str| format!("{}/{tag}", order_slot_path(n));
                Ok(OrderSlotTags {
                    id: reg(
                        tags,
                        p("Id"),
                        DataType::String,
                        "Order id, empty while the slot is unused",
                    )?,
                    model: reg(tags, p("Model"), DataType::String, "Model ordered")?,
                    text: reg(tags, p("Text"), DataType::String, "Personalisation text")?,
                    step: reg(
                        tags,
                        p("Step"),
                        DataType::UInt16,
                        "Current step, 0 while queued",
                    )?,
                    state: reg(
                        tags,
                        p("State"),
                        DataType::String,
                        "Empty, Queued, InProgress, Delivered or Scrapped",
                    )?,
                    submitted_at: reg(
                        tags,
                        p("SubmittedAt"),
                        DataType::DateTime,
                        "When the order was placed",
                    )?,
                    completed_at: reg(
                        tags,
                        p("CompletedAt"),
                        DataType::DateTime,
                        "When it was delivered or scrapped",
                    )?,
                    verdict: reg(
                        tags,
                        p("Verdict"),
                        DataType::String,
                        "Metrology verdict: OK, NOK or empty",
                    )?,
                })
            })
            .collect::<Result<Vec<_>, CatalogError>>()?;
        Ok(LineTags {
            state: reg(
                tags,
                "Line/State".into(),
                DataType::String,
                "Running or Stopped",
            )?,
            mode: reg(
                tags,
                "Line/Mode".into(),
                DataType::String,
                "Where orders and timings come from",
            )?,
            queued: reg(
                tags,
                "Line/OrdersQueued".into(),
                DataType::UInt32,
                "Orders waiting for step 1",
            )?,
            in_progress: reg(
                tags,
                "Line/OrdersInProgress".into(),
                DataType::UInt32,
                "Orders on the line",
            )?,
            delivered: reg(
                tags,
                "Line/PartsDelivered".into(),
                DataType::UInt32,
                "Parts delivered since start",
            )?,
            scrapped: reg(
                tags,
                "Line/PartsScrapped".into(),
                DataType::UInt32,
                "Parts scrapped at metrology since start",
            )?,
            last_order_id: reg(
                tags,
                "Orders/LastOrderId".into(),
                DataType::String,
                "Id of the last order placed",
            )?,
            submitted: reg(
                tags,
                "Orders/Submitted".into(),
                DataType::UInt32,
                "Orders placed since start",
            )?,
            steps,
            recent,
        })
    }
}

/// The line's objects and the methods its controller serves: `Line` with `SubmitOrder`,
/// `Start` and `Stop`, its `Steps`, and the `Orders` with their `Recent` slots.
pub fn declare_line_objects(
    tags: &mut TagRegistrar<'_>,
    recent_orders: usize,
) -> Result<(), CatalogError> {
    tags.object("Line", FabriqueType::Line)?;
    tags.object("Line/Steps", ObjectType::Folder)?;
    for n in 1..=STEP_COUNT {
        tags.object(step_path(n), FabriqueType::ProductionStep)?;
    }
    tags.object("Orders", FabriqueType::Orders)?;
    tags.object("Orders/Recent", ObjectType::Folder)?;
    for n in 1..=recent_orders {
        tags.object(order_slot_path(n), FabriqueType::Order)?;
    }
    tags.method(
        MethodSpec::new(
            "Line",
            "SubmitOrder",
            "Place a personalised order, as the QR code at the kiosk does",
        )
        .input(ArgumentSpec::string("Model"))
        .input(ArgumentSpec::string("Text"))
        .output(ArgumentSpec::string("OrderId")),
    )?;
    tags.method(MethodSpec::new("Line", "Start", "Start the line"))?;
    tags.method(MethodSpec::new(
        "Line",
        "Stop",
        "Stop the line; orders keep queueing",
    ))
}
