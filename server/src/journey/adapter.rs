//! The kiosk as a station of the truck: `Stations/Reception/Kiosk` with its counters on the bus
//! (so in OPC UA, MQTT and InfluxDB like any machine), and the OPC UA methods `Kiosk.Scan(Code)
//! -> OrderId` and `Orders.FindOrder(OrderId)`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fabrique_adapters::{
    Adapter, AdapterContext, ArgumentSpec, CallError, CallRequest, CatalogError, Command, DataType,
    FabriqueType, MethodSpec, ObjectType, Publisher, TagId, TagRegistrar, TagSpec, Timestamp,
    Value, WriteError,
};

use super::Journey;

pub const KIOSK: &str = "Stations/Reception/Kiosk";
pub const SCAN_METHOD: &str = "Stations/Reception/Kiosk/Scan";
pub const FIND_ORDER_METHOD: &str = "Orders/FindOrder";

struct Tags {
    scans: TagId,
    launched: TagId,
    rejected: TagId,
    last_scan: TagId,
    last_code: TagId,
    last_result: TagId,
    designs_created: TagId,
    designs_refused: TagId,
}

pub struct KioskAdapter {
    journey: Arc<Journey>,
    tags: Option<Tags>,
}

impl KioskAdapter {
    pub fn new(journey: Arc<Journey>) -> Self {
        KioskAdapter {
            journey,
            tags: None,
        }
    }
}

fn publish(journey: &Journey, tags: &Tags, out: &mut Publisher) {
    let now = Timestamp::now();
    let c = &journey.counters;
    out.set(
        tags.scans,
        Value::UInt(c.scans.load(Ordering::Relaxed)),
        now,
    );
    out.set(
        tags.launched,
        Value::UInt(c.launched.load(Ordering::Relaxed)),
        now,
    );
    out.set(
        tags.rejected,
        Value::UInt(c.rejected.load(Ordering::Relaxed)),
        now,
    );
    out.set(
        tags.designs_created,
        Value::UInt(c.designs_created.load(Ordering::Relaxed)),
        now,
    );
    out.set(
        tags.designs_refused,
        Value::UInt(c.designs_refused.load(Ordering::Relaxed)),
        now,
    );
    let last = c.last.lock().clone();
    match last {
        Some(last) => {
            out.set(tags.last_scan, Value::Time(last.at), now);
            out.set(tags.last_code, Value::text(last.code), now);
            out.set(tags.last_result, Value::text(last.result), now);
        }
        None => {
            out.set(tags.last_scan, Value::Time(Timestamp::NULL), now);
            out.set(tags.last_code, Value::text(""), now);
            out.set(tags.last_result, Value::text(""), now);
        }
    }
    out.flush();
}

async fn call(journey: &Journey, request: &CallRequest) -> Result<Vec<Value>, CallError> {
    let text_arg = || match request.args.as_slice() {
        [Value::Text(t)] => Ok(t.to_string()),
        _ => Err(CallError::InvalidArgument(format!(
            "{} expects one String argument",
            request.method
        ))),
    };
    match request.method.as_str() {
        SCAN_METHOD => {
            let code = text_arg()?;
            journey
                .scan(&code)
                .await
                .map(|order| vec![Value::text(order)])
                .map_err(|e| e.to_call_error())
        }
        FIND_ORDER_METHOD => {
            let id = text_arg()?;
            match journey.find_order(id.trim()).await {
                Some(fields) => Ok(fields.into_iter().map(Value::text).collect()),
                None => Err(CallError::Status(
                    opcua::types::StatusCode::BadNotFound,
                    format!("no order `{id}`"),
                )),
            }
        }
        other => Err(CallError::UnknownMethod(other.to_owned())),
    }
}

/// The kiosk sits in the reception station. It is the gateway itself, with no connection
/// status (Fabrique's `DeviceType` makes one mandatory), so it is a `KioskType`, a DI
/// `DeviceType` whose nameplate says so (opcua/standard/kiosk.rs). It serves `Scan`, and
/// `FindOrder` on the line's `Orders`.
fn declare_objects(tags: &mut TagRegistrar<'_>) -> Result<(), CatalogError> {
    tags.object("Stations", ObjectType::Folder)?;
    tags.object("Stations/Reception", FabriqueType::Station)?;
    tags.object(KIOSK, FabriqueType::Kiosk)?;
    tags.object("Orders", FabriqueType::Orders)?;
    tags.method(
        MethodSpec::new(
            KIOSK,
            "Scan",
            "Launch the design with this code as an order. BadNotFound: unknown code; BadAlreadyExists: launched before; BadRequestNotAllowed: expired; BadInvalidState: line stopped; BadInvalidArgument: not a code",
        )
        .input(ArgumentSpec::string("Code"))
        .output(ArgumentSpec::string("OrderId")),
    )?;
    let find = MethodSpec::new(
        "Orders",
        "FindOrder",
        "Any order by id, not only those in the Recent slots (CurrentStep empty off the line; BadNotFound: no such order)",
    )
    .input(ArgumentSpec::string("OrderId"));
    let find = ["Model", "Text", "State", "CurrentStep", "DesignCode"]
        .into_iter()
        .fold(find, |m, name| m.output(ArgumentSpec::string(name)));
    tags.method(find)
}

#[async_trait]
impl Adapter for KioskAdapter {
    fn name(&self) -> &str {
        "kiosk"
    }

    fn declare_tags(&mut self, tags: &mut TagRegistrar<'_>) -> Result<(), CatalogError> {
        declare_objects(tags)?;
        let mut reg = |name: &str, data_type: DataType, text: &str| {
            tags.register(TagSpec::new(format!("{KIOSK}/{name}"), data_type).describe(text))
        };
        self.tags = Some(Tags {
            scans: reg("Scans", DataType::UInt64, "Codes scanned since start")?,
            launched: reg(
                "Launched",
                DataType::UInt64,
                "Scans that launched an order since start",
            )?,
            rejected: reg(
                "Rejected",
                DataType::UInt64,
                "Scans refused since start (unknown, expired or already launched code, line stopped)",
            )?,
            last_scan: reg("LastScan", DataType::DateTime, "When the last code was scanned")?,
            last_code: reg("LastCode", DataType::String, "The last code scanned, as read")?,
            last_result: reg(
                "LastResult",
                DataType::String,
                "Order id launched by the last scan, or why it was refused",
            )?,
            designs_created: reg(
                "DesignsCreated",
                DataType::UInt64,
                "Designs stored since start (POST /api/designs, class uploads)",
            )?,
            designs_refused: reg(
                "DesignsRefused",
                DataType::UInt64,
                "Designs and class uploads refused since start (bad model or text, bad body)",
            )?,
        });
        Ok(())
    }

    async fn run(self: Box<Self>, mut ctx: AdapterContext) {
        let KioskAdapter { journey, tags } = *self;
        let Some(tags) = tags else { return };
        let out = &mut ctx.publisher;
        publish(&journey, &tags, out);
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                _ = journey.kiosk_changed.notified() => publish(&journey, &tags, out),
                // Counters also move when a scan is refused before it reaches the queue; a
                // slow tick keeps them right whatever happens.
                _ = tokio::time::sleep(Duration::from_secs(5)) => publish(&journey, &tags, out),
                Some(command) = ctx.commands.recv() => match command {
                    Command::Write(w) => {
                        let _ = w.reply.send(Err(WriteError::NotWritable));
                    }
                    Command::Call(request) => {
                        // A scan waits for the line: answered from a task, so the counters
                        // keep flowing meanwhile.
                        let journey = journey.clone();
                        tokio::spawn(async move {
                            let result = call(&journey, &request).await;
                            let _ = request.reply.send(result);
                        });
                    }
                },
            }
        }
    }
}
