//! What the follow page (`/suivi/{order}`) and the big screen (`/ligne`) show, built from the
//! bus (where each order is now, the machines' live values) and the order history (when it
//! entered and left each step).

use std::collections::HashSet;

use chrono::{DateTime, SecondsFormat, Utc};
use fabrique_adapters::line::{order_slot_path, step_tag, STEP_COUNT};
use fabrique_adapters::{PointBus, TagId, Timestamp, Value};
use rusqlite::params;
use serde_json::{json, Value as Json};

use super::trades::Catalogue;
use super::Journey;
use crate::indicators::history::OrderRecord;
use crate::indicators::store;

/// Finished orders the big screen lists.
const RECENT_FINISHED: usize = 40;

struct SlotTags {
    id: TagId,
    model: Option<TagId>,
    text: Option<TagId>,
    state: Option<TagId>,
}

struct LiveValue {
    name: String,
    tag: TagId,
    unit: Option<String>,
}

/// The bus tags the views read, resolved once from their paths.
pub struct LineTags {
    pub line_state: Option<TagId>,
    current: Vec<Option<TagId>>,
    progress: Vec<Option<TagId>>,
    slots: Vec<SlotTags>,
    live: Vec<Vec<LiveValue>>,
    /// Every tag above: a bus batch touching none of them changes no view.
    watched: HashSet<TagId>,
}

impl LineTags {
    pub fn resolve(bus: &PointBus, catalogue: &Catalogue) -> Self {
        let catalog = bus.catalog();
        let current: Vec<Option<TagId>> = (1..=STEP_COUNT)
            .map(|n| step_tag(&catalog, n, "CurrentOrder"))
            .collect();
        let progress: Vec<Option<TagId>> = (1..=STEP_COUNT)
            .map(|n| step_tag(&catalog, n, "Progress"))
            .collect();
        let mut slots = Vec::new();
        for n in 1.. {
            let slot = |field: &str| catalog.lookup(&format!("{}/{field}", order_slot_path(n)));
            let Some(id) = slot("Id") else { break };
            slots.push(SlotTags {
                id,
                model: slot("Model"),
                text: slot("Text"),
                state: slot("State"),
            });
        }
        let live = (1..=STEP_COUNT)
            .map(|n| {
                let Some(step) = catalogue.step(n) else {
                    return Vec::new();
                };
                let Some(device) = &step.device else {
                    return Vec::new();
                };
                step.values
                    .iter()
                    .filter_map(|name| {
                        let tag = catalog.lookup(&format!("{device}/{name}"))?;
                        let unit = catalog.get(tag).and_then(|e| e.spec.unit.clone());
                        Some(LiveValue {
                            name: name.clone(),
                            tag,
                            unit,
                        })
                    })
                    .collect()
            })
            .collect::<Vec<Vec<LiveValue>>>();
        let line_state = catalog.lookup("Line/State");
        let mut watched: HashSet<TagId> = HashSet::new();
        watched.extend(line_state);
        for tags in [&current, &progress] {
            watched.extend(tags.iter().flatten().copied());
        }
        for slot in &slots {
            watched.insert(slot.id);
            watched.extend(slot.state);
        }
        watched.extend(live.iter().flatten().map(|v| v.tag));
        LineTags {
            line_state,
            current,
            progress,
            slots,
            live,
            watched,
        }
    }

    pub fn watches(&self, tag: TagId) -> bool {
        self.watched.contains(&tag)
    }
}

fn text(bus: &PointBus, tag: Option<TagId>) -> String {
    match tag.map(|t| bus.latest(t).value) {
        Some(Some(Value::Text(s))) => s.to_string(),
        _ => String::new(),
    }
}

fn json_value(value: Option<Value>) -> Json {
    match value {
        Some(Value::Bool(b)) => json!(b),
        Some(Value::Int(i)) => json!(i),
        Some(Value::UInt(u)) => json!(u),
        Some(Value::Float(f)) => json!((f * 100.0).round() / 100.0),
        Some(Value::Text(s)) => json!(s.to_string()),
        Some(other) => json!(other.to_string()),
        None => Json::Null,
    }
}

fn rfc3339_us(at_us: Option<i64>) -> Json {
    at_us
        .and_then(DateTime::<Utc>::from_timestamp_micros)
        .map_or(Json::Null, |t| {
            json!(t.to_rfc3339_opts(SecondsFormat::Millis, true))
        })
}

/// Where an order is on the line now, from the bus: its step (1..=9) and progress there.
fn position(bus: &PointBus, tags: &LineTags, order: &str) -> Option<(usize, f64)> {
    tags.current.iter().enumerate().find_map(|(k, tag)| {
        (text(bus, *tag) == order).then(|| {
            let progress = tags.progress[k]
                .and_then(|t| bus.latest(t).value)
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0);
            (k + 1, progress)
        })
    })
}

/// The order as its slot under `Orders/Recent` shows it (before the history has it).
fn from_slot(bus: &PointBus, tags: &LineTags, order: &str) -> Option<(String, String, String)> {
    tags.slots.iter().find_map(|slot| {
        (text(bus, Some(slot.id)) == order).then(|| {
            (
                text(bus, slot.model),
                text(bus, slot.text),
                text(bus, slot.state),
            )
        })
    })
}

impl Journey {
    /// The follow page's view of `order`, or `None` when the gateway knows no such order.
    pub async fn follow_view(&self, order: &str) -> Option<Json> {
        let runtime = self.runtime.get()?;
        let id = order.to_owned();
        let record = self
            .with_orders(move |db| store::find(db, &id))
            .await
            .flatten();
        let id = order.to_owned();
        let design = self
            .with_designs(move |d| d.by_order(&id))
            .await
            .ok()
            .flatten();
        let bus = &runtime.bus;
        let tags = &runtime.line;
        let at = position(bus, tags, order);
        let slot = from_slot(bus, tags, order);
        let (model, text, state) = match (&record, &slot, &design) {
            (Some(r), _, _) => (r.model.clone(), r.text.clone(), r.state.as_str().to_owned()),
            (None, Some((m, t, s)), _) => (m.clone(), t.clone(), s.clone()),
            (None, None, Some(d)) => (d.model.clone(), d.text.clone(), "Queued".to_owned()),
            (None, None, None) => return None,
        };
        // The history says InProgress from submission; until step 1 the order waits.
        let state = if state == "InProgress" && at.is_none() && !record_started(&record) {
            "Queued".to_owned()
        } else {
            state
        };
        let now_us = Timestamp::now().as_nanos() / 1000;
        let steps: Vec<Json> = (1..=STEP_COUNT)
            .map(|n| {
                let visit = record.as_ref().and_then(|r| r.steps[n - 1]);
                let (entered, left) = match visit {
                    Some((e, l)) => (Some(e), l),
                    None => (None, None),
                };
                let current = at.map(|(s, _)| s) == Some(n);
                let duration = match (entered, left) {
                    (Some(e), Some(l)) => Some((l - e) as f64 / 1e6),
                    (Some(e), None) if current => Some((now_us - e).max(0) as f64 / 1e6),
                    _ => None,
                };
                let status = if current {
                    "current"
                } else if left.is_some() {
                    "done"
                } else {
                    "todo"
                };
                let mut step = json!({
                    "number": n,
                    "name": self.catalogue.step(n).map(|s| s.name.clone()).unwrap_or_default(),
                    "status": status,
                    "entered_at": rfc3339_us(entered),
                    "left_at": rfc3339_us(left),
                    "duration_s": duration,
                    "trades": self.catalogue.at_step(n).map(|t| t.id.clone()).collect::<Vec<_>>(),
                });
                if current {
                    let live: Vec<Json> = tags.live[n - 1]
                        .iter()
                        .map(|v| {
                            json!({
                                "name": v.name,
                                "value": json_value(bus.latest(v.tag).value),
                                "unit": v.unit,
                            })
                        })
                        .collect();
                    step["live"] = json!(live);
                    step["progress"] = json!(at.map(|(_, p)| (p * 10.0).round() / 10.0));
                }
                step
            })
            .collect();
        Some(json!({
            "id": order,
            "model": model,
            "text": text,
            "state": state,
            "verdict": record.as_ref().and_then(|r| r.verdict).map(|ok| if ok { "OK" } else { "NOK" }),
            "current_step": at.map(|(s, _)| s),
            "submitted_at": rfc3339_us(record.as_ref().and_then(|r| r.submitted_at)),
            "completed_at": rfc3339_us(record.as_ref().and_then(|r| r.completed_at)),
            "lead_time_s": record.as_ref().and_then(|r| r.submitted_at.zip(r.completed_at)).map(|(s, c)| (c - s) as f64 / 1e6),
            "design": design.map(|d| d.code),
            "line": text_of_line(bus, tags),
            "steps": steps,
        }))
    }

    /// The big screen's view: every step's order, the queue, the orders finished last.
    pub async fn line_view(&self) -> Option<Json> {
        let runtime = self.runtime.get()?;
        let bus = &runtime.bus;
        let tags = &runtime.line;
        let mut on_line = HashSet::new();
        let steps: Vec<Json> = (1..=STEP_COUNT)
            .map(|n| {
                let id = text(bus, tags.current[n - 1]);
                let order = (!id.is_empty()).then(|| {
                    on_line.insert(id.clone());
                    let (model, text, _) = from_slot(bus, tags, &id).unwrap_or_default();
                    let progress = tags.progress[n - 1]
                        .and_then(|t| bus.latest(t).value)
                        .and_then(|v| v.as_f64())
                        .unwrap_or(0.0);
                    json!({"id": id, "model": model, "text": text, "progress": (progress * 10.0).round() / 10.0})
                });
                json!({
                    "number": n,
                    "name": self.catalogue.step(n).map(|s| s.name.clone()).unwrap_or_default(),
                    "order": order,
                    "trades": self.catalogue.at_step(n).count(),
                })
            })
            .collect();
        let queue: Vec<Json> = tags
            .slots
            .iter()
            .filter(|s| text(bus, s.state) == "Queued")
            .map(|s| {
                json!({"id": text(bus, Some(s.id)), "model": text(bus, s.model), "text": text(bus, s.text)})
            })
            .collect();
        let finished = self
            .with_orders(|db| {
                let mut statement = db.prepare_cached(
                    "SELECT id, model, text, state, completed_at, verdict FROM orders
                     WHERE completed_at IS NOT NULL ORDER BY completed_at DESC, row DESC LIMIT ?1",
                )?;
                let rows = statement.query_map(params![RECENT_FINISHED as i64], |r| {
                    Ok(json!({
                        "id": r.get::<_, String>(0)?,
                        "model": r.get::<_, String>(1)?,
                        "text": r.get::<_, String>(2)?,
                        "state": r.get::<_, String>(3)?,
                        "completed_at": rfc3339_us(r.get::<_, Option<i64>>(4)?),
                        "verdict": r.get::<_, Option<String>>(5)?,
                    }))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .unwrap_or_default();
        Some(json!({
            "line": text_of_line(bus, tags),
            "steps": steps,
            "queue": queue,
            "on_line": on_line.len(),
            "finished": finished,
        }))
    }

    /// `Orders/FindOrder`: Model, Text, State, CurrentStep ("" off the line), DesignCode.
    pub async fn find_order(&self, order: &str) -> Option<[String; 5]> {
        let view = self.follow_view(order).await?;
        let field = |k: &str| view[k].as_str().unwrap_or_default().to_owned();
        Some([
            field("model"),
            field("text"),
            field("state"),
            view["current_step"]
                .as_u64()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            field("design"),
        ])
    }

    /// Whether a bus batch can change a view.
    pub fn touches_views(&self, tags: impl IntoIterator<Item = TagId>) -> bool {
        self.runtime
            .get()
            .is_some_and(|r| tags.into_iter().any(|t| r.line.watches(t)))
    }

    pub fn bus(&self) -> Option<&PointBus> {
        self.runtime.get().map(|r| &r.bus)
    }
}

fn record_started(record: &Option<OrderRecord>) -> bool {
    record
        .as_ref()
        .is_some_and(|r| r.steps.iter().any(Option::is_some))
}

fn text_of_line(bus: &PointBus, tags: &LineTags) -> String {
    text(bus, tags.line_state)
}
