//! Orders and indicators over HTTP:
//! - `POST /api/orders` `{"model": "Wave", "text": "Léa"}` → 201 `{"id": "ORD-000123"}`, routed
//!   to the line's `SubmitOrder` through the [`CommandRouter`], as OPC UA does;
//! - `GET /api/orders/{id}` → the recorded order with its step times;
//! - `GET /api/indicators` → every `Indicators/...` tag, nested as JSON.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use fabrique_adapters::line::STEP_NAMES;
use fabrique_adapters::{CallError, PointBus, TagId, Value};
use rusqlite::Connection;
use serde::Deserialize;
use serde_json::{json, Map};

use super::store;
use crate::commands::CommandRouter;
use crate::http::Guards;
use crate::storage::{OffThread, StorageConfig};

/// What the routes share.
pub struct OrdersApi {
    bus: PointBus,
    router: CommandRouter,
    /// `Line/State`: the anchor that routes `Line/SubmitOrder` to the line's adapter.
    line_anchor: Option<TagId>,
    storage: StorageConfig,
    /// Opened on first use; SQLite in WAL mode lets it read beside the engine's writer.
    db: OffThread<Option<Connection>>,
}

pub fn routes(
    bus: PointBus,
    router: CommandRouter,
    storage: StorageConfig,
    guards: &Guards,
) -> Router {
    let api = Arc::new(OrdersApi {
        line_anchor: bus.catalog().lookup("Line/State"),
        bus,
        router,
        storage,
        db: OffThread::default(),
    });
    Router::new()
        .route("/api/orders", guards.public(post(submit_order)))
        .route("/api/orders/{id}", get(order))
        .route("/api/indicators", get(indicators))
        .with_state(api)
}

fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    (status, Json(json!({ "error": reason.into() }))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderRequest {
    model: String,
    text: String,
}

async fn submit_order(
    State(api): State<Arc<OrdersApi>>,
    body: Result<Json<OrderRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => {
            tracing::debug!(reason = %rejection.body_text(), "order refused");
            return error(StatusCode::BAD_REQUEST, rejection.body_text());
        }
    };
    let Some(anchor) = api.line_anchor else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "this gateway has no line");
    };
    let called = api
        .router
        .call(
            anchor,
            "Line/SubmitOrder".into(),
            vec![Value::text(request.model), Value::text(request.text)],
        )
        .await;
    match called {
        Ok(outputs) => match outputs.first() {
            Some(Value::Text(id)) => {
                (StatusCode::CREATED, Json(json!({ "id": id.to_string() }))).into_response()
            }
            _ => error(StatusCode::BAD_GATEWAY, "the line gave no order id"),
        },
        Err(CallError::InvalidArgument(reason)) => error(StatusCode::BAD_REQUEST, reason),
        Err(CallError::Timeout) => error(StatusCode::GATEWAY_TIMEOUT, "the line did not answer"),
        Err(other) => error(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
    }
}

fn rfc3339(at_us: Option<i64>) -> serde_json::Value {
    at_us
        .and_then(DateTime::<Utc>::from_timestamp_micros)
        .map_or(serde_json::Value::Null, |t| {
            json!(t.to_rfc3339_opts(SecondsFormat::Micros, true))
        })
}

async fn order(State(api): State<Arc<OrdersApi>>, Path(id): Path<String>) -> Response {
    let storage = api.storage.clone();
    let wanted = id.clone();
    let found = api
        .db
        .run(move |db| {
            if db.is_none() {
                *db = Some(
                    storage
                        .open_database(store::DATABASE_FILE)
                        .map_err(|e| e.to_string())?,
                );
            }
            match db.as_ref().map(|db| store::find(db, &wanted)) {
                Some(found) => found.map_err(|e| e.to_string()),
                None => Ok(None),
            }
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|found| found);
    let found = match found {
        Ok(found) => found,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let Some(order) = found else {
        return error(StatusCode::NOT_FOUND, format!("no order `{id}` recorded"));
    };
    let steps: Vec<_> = order
        .steps
        .iter()
        .enumerate()
        .filter_map(|(k, visit)| {
            let (entered, left) = (*visit)?;
            Some(json!({
                "step": k + 1,
                "name": STEP_NAMES[k],
                "entered_at": rfc3339(Some(entered)),
                "left_at": rfc3339(left),
                "duration_s": left.map(|left| (left - entered) as f64 / 1e6),
            }))
        })
        .collect();
    let verdict = order.verdict.map(|ok| if ok { "OK" } else { "NOK" });
    Json(json!({
        "id": order.id,
        "model": order.model,
        "text": order.text,
        "stop": order.stop,
        "state": order.state.as_str(),
        "verdict": verdict,
        "submitted_at": rfc3339(order.submitted_at),
        "completed_at": rfc3339(order.completed_at),
        "lead_time_s": order.submitted_at.zip(order.completed_at).map(|(s, c)| (c - s) as f64 / 1e6),
        "steps": steps,
    }))
    .into_response()
}

fn json_value(value: Option<Value>) -> serde_json::Value {
    match value {
        Some(Value::Bool(b)) => json!(b),
        Some(Value::Int(i)) => json!(i),
        Some(Value::UInt(u)) => json!(u),
        Some(Value::Float(f)) => json!(f),
        Some(Value::Text(s)) => json!(s.to_string()),
        Some(other) => json!(other.to_string()),
        None => serde_json::Value::Null,
    }
}

/// Every `Indicators/...` tag as it is on the bus (so exactly what OPC UA shows), nested by path.
async fn indicators(State(api): State<Arc<OrdersApi>>) -> Response {
    let mut root = Map::new();
    for (id, entry) in api.bus.catalog().iter() {
        let Some(path) = entry.spec.path.strip_prefix("Indicators/") else {
            continue;
        };
        let segments: Vec<&str> = path.split('/').collect();
        insert_at(&mut root, &segments, json_value(api.bus.latest(id).value));
    }
    Json(serde_json::Value::Object(root)).into_response()
}

fn insert_at(node: &mut Map<String, serde_json::Value>, path: &[&str], value: serde_json::Value) {
    match path {
        [] => {}
        [leaf] => {
            node.insert((*leaf).to_owned(), value);
        }
        [first, rest @ ..] => {
            let child = node.entry((*first).to_owned()).or_insert_with(|| json!({}));
            if let Some(object) = child.as_object_mut() {
                insert_at(object, rest, value);
            }
        }
    }
}
