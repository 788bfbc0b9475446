//! `GET /api/alarms` (the alarm list and the recent changes) and
//! `POST /api/alarms/{id}/ack` (acknowledge with a comment: the admin token, as every HTTP
//! call that changes the gateway's state).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::north::{active_list, parse_condition_id, AlarmJson, Recent, RECENT};
use super::{Alarms, Refused};
use crate::history::events::EventStore;
use crate::http::Guards;

/// Longest comment taken (characters), as a reasonable bound on what an alarm list shows.
pub const MAX_COMMENT_CHARS: usize = 1000;

#[derive(Clone)]
struct Api {
    alarms: Arc<Alarms>,
    recent: Recent,
}

pub fn routes(alarms: Arc<Alarms>, recent: Recent, guards: &Guards) -> Router {
    Router::new()
        .route("/api/alarms", get(list))
        .route("/api/alarms/{*path}", guards.admin(post(acknowledge)))
        .with_state(Api { alarms, recent })
}

/// The routes as the gateway serves them, the recent list recorded by a task of `tasks`. An
/// acknowledgement made here reaches OPC UA clients as every state change does: through
/// `Alarms::publish` and the reporter task of `opcua/events.rs`.
///
/// The recent list starts from the changes stored before this start: the last ones of the
/// event history when there is one, else the conditions' last states from the alarm state
/// file (restored into `Alarms` before the routes are made), newest first either way.
pub fn gateway_routes(
    opcua: &crate::opcua::OpcUaServer,
    history: Option<Arc<EventStore>>,
    guards: &Guards,
    shutdown: &tokio_util::sync::CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Router {
    let alarms = opcua.nodes.inner().alarms();
    let recent = Recent::default();
    let stored = alarms.clone();
    let before = move || match history {
        Some(history) => history.latest_conditions(RECENT),
        None => {
            let mut states = stored.conditions();
            states.sort_by_key(|s| std::cmp::Reverse(s.time));
            states.truncate(RECENT);
            states
        }
    };
    tasks.spawn(recent.record(&alarms, before, shutdown.clone()));
    routes(alarms, recent, guards)
}

async fn list(State(api): State<Api>) -> Json<serde_json::Value> {
    let recent: Vec<AlarmJson> = api.recent.snapshot().iter().map(AlarmJson::from).collect();
    Json(serde_json::json!({
        "active": active_list(api.alarms.conditions()),
        "recent": recent,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    #[serde(default)]
    comment: String,
    /// The state being acknowledged (`event_id` of `GET /api/alarms`); without it, the
    /// condition's current state.
    #[serde(default)]
    event_id: Option<String>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

async fn acknowledge(State(api): State<Api>, Path(path): Path<String>, body: Bytes) -> Response {
    // Acknowledge, then Confirm once the cause is gone: a retained alarm leaves the list
    // when it is inactive, acknowledged and confirmed (Part 9).
    let (id, confirm) = match (path.strip_suffix("/ack"), path.strip_suffix("/confirm")) {
        (Some(id), _) => (id, false),
        (None, Some(id)) => (id, true),
        (None, None) => {
            return error(
                StatusCode::NOT_FOUND,
                "no such endpoint: POST /api/alarms/{id}/ack or /api/alarms/{id}/confirm",
            )
        }
    };
    let Some((source, name)) = parse_condition_id(id) else {
        return error(StatusCode::NOT_FOUND, format!("no alarm `{id}`"));
    };
    let ack: AckBody = if body.iter().all(u8::is_ascii_whitespace) {
        AckBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(ack) => ack,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("body: expected {{\"comment\": \"...\", \"event_id\": \"<hex>\"}} (both optional): {e}"),
                )
            }
        }
    };
    if ack.comment.chars().count() > MAX_COMMENT_CHARS {
        return error(
            StatusCode::BAD_REQUEST,
            format!("comment: at most {MAX_COMMENT_CHARS} characters"),
        );
    }
    let current = api
        .alarms
        .conditions()
        .into_iter()
        .find(|c| c.source == source && c.name == name);
    let Some(current) = current else {
        return error(StatusCode::NOT_FOUND, format!("no alarm `{id}`"));
    };
    let event_id = match ack.event_id.as_deref() {
        None => current.event_id.clone(),
        Some(hex) => match unhex(hex) {
            Some(bytes) => bytes,
            None => return error(StatusCode::BAD_REQUEST, "event_id: expected hex digits"),
        },
    };
    let now = fabrique_adapters::Timestamp::now();
    let changed = if confirm {
        api.alarms
            .confirm(source, name, &event_id, &ack.comment, now)
    } else {
        api.alarms
            .acknowledge(source, name, &event_id, &ack.comment, now)
    };
    match changed {
        Ok(state) => {
            tracing::info!(alarm = %id, comment = %state.comment, confirm, "alarm acknowledged or confirmed over HTTP");
            // As an OPC UA Acknowledge: answered once the new state is on disk.
            api.alarms.durable().await;
            Json(AlarmJson::from(&state)).into_response()
        }
        Err(refused) => {
            let (status, message) = match refused {
                Refused::UnknownCondition => (StatusCode::NOT_FOUND, "no such alarm"),
                Refused::AlreadyAcked => (StatusCode::CONFLICT, "already acknowledged"),
                Refused::Disabled => (StatusCode::CONFLICT, "the alarm is disabled"),
                Refused::EventIdUnknown => (
                    StatusCode::CONFLICT,
                    "event_id is not the alarm's last state: read GET /api/alarms again",
                ),
                Refused::AlreadyConfirmed => (StatusCode::CONFLICT, "already confirmed"),
                Refused::AlreadyEnabled | Refused::AlreadyDisabled => {
                    (StatusCode::CONFLICT, "refused")
                }
            };
            tracing::info!(alarm = %id, ?refused, confirm, "alarm acknowledgement or confirmation refused");
            error(status, format!("{id}: {message}"))
        }
    }
}
