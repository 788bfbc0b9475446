//! HTTP: `/api/stop`, `/api/visits`, `/api/survey`, `/api/stats` and the `/survey` page.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use fabrique_adapters::Timestamp;
use serde_json::{json, Map, Value as JsonValue};

use super::adapter::{Pending, StoreFailed, VisitsHandle};
use super::records::Audience;
use super::records::{
    day_of, rfc3339, CheckIn, Rejection, RejectionKind, Stop, SurveyResponse, MAX_BODY_BYTES,
};
use super::store::{pct, Figures, GroupBy, Scope, Store, StoreError, SurveyFigures, VisitFigures};
use crate::http::Guards;
use crate::storage::{OffThread, StorageConfig};
use std::collections::BTreeMap;

const PAGE_HTML: &str = include_str!("page/survey.html");
const PAGE_CSS: &str = include_str!("page/survey.css");
const PAGE_JS: &str = include_str!("page/survey.js");

#[derive(Clone)]
struct AppState {
    handle: VisitsHandle,
    /// A reader connection beside the writer (WAL): statistics never wait for a commit.
    reader: OffThread<Store>,
}

/// The routes; opens a reader connection on the visits database (after [`VisitsHandle::open`]).
pub fn routes(
    handle: VisitsHandle,
    storage: &StorageConfig,
    guards: &Guards,
) -> Result<Router, StoreError> {
    let state = AppState {
        handle,
        reader: OffThread::new(Store::open_reader(storage)?),
    };
    Ok(Router::new()
        .route(
            "/api/stop",
            get(get_stop).merge(guards.admin(put(put_stop))),
        )
        .route("/api/visits", guards.public(post(post_visit)))
        .route("/api/survey", guards.public(post(post_survey)))
        .route("/api/stats", get(get_stats))
        .route("/api/tour", get(get_tour))
        .route(
            "/survey",
            get(|| async { page("text/html; charset=utf-8", PAGE_HTML) }),
        )
        .route(
            "/survey/survey.css",
            get(|| async { page("text/css; charset=utf-8", PAGE_CSS) }),
        )
        .route(
            "/survey/survey.js",
            get(|| async { page("text/javascript; charset=utf-8", PAGE_JS) }),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state))
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn bad_request(rejection: &Rejection) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": rejection.reason, "kind": rejection.kind.as_str()})),
    )
        .into_response()
}

fn unavailable(error: &StoreFailed) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": format!("not stored: {error}")})),
    )
        .into_response()
}

/// A body that never fully arrived (the client went away, or stopped sending for
/// `http.body_read_timeout_ms`): nothing was answered, so nothing is counted as rejected.
fn unread(raw: &Result<Bytes, BytesRejection>) -> Option<Response> {
    match raw {
        Err(e) if e.status() != StatusCode::PAYLOAD_TOO_LARGE => {
            tracing::debug!(error = %e, "request body not received");
            Some(
                (
                    StatusCode::REQUEST_TIMEOUT,
                    Json(json!({"error": format!("the request body did not arrive: {e}")})),
                )
                    .into_response(),
            )
        }
        _ => None,
    }
}

/// The body, or why it could not be read (too large, mostly).
fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Rejection> {
    body.map_err(|e| {
        let kind = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            RejectionKind::TooLarge
        } else {
            RejectionKind::MalformedJson
        };
        Rejection::new(
            kind,
            format!("cannot read the body (at most {MAX_BODY_BYTES} bytes): {e}"),
        )
    })
}

async fn get_stop(State(state): State<AppState>) -> Response {
    Json(state.handle.current_stop()).into_response()
}

/// `GET /api/tour`: the planned stops with their id, kind and state, and the current stop.
async fn get_tour(State(state): State<AppState>) -> Response {
    let current = state.handle.current_stop();
    let tour = state.handle.shared.tour.clone();
    let computed = state
        .reader
        .run(move |store| {
            let today = day_of(Timestamp::now());
            let mut stops = Vec::with_capacity(tour.len());
            let mut sorted = tour.clone();
            sorted.sort_by(|a, b| a.first_day.cmp(&b.first_day));
            for planned in &sorted {
                let mut entry = json!(planned);
                entry["id"] = json!(store.stop_id(&planned.stop())?);
                entry["state"] = json!(super::tour::state(planned, &today));
                stops.push(entry);
            }
            let next = sorted
                .iter()
                .find(|p| p.first_day > today)
                .map(|p| json!(p));
            let mut current_json = json!(current);
            current_json["id"] = json!(store.stop_id(&current)?);
            Ok::<_, StoreError>(json!({
                "today": today,
                "current": current_json,
                "next": next,
                "stops": stops,
            }))
        })
        .await;
    json_or_500(computed)
}

async fn put_stop(State(state): State<AppState>, raw: Result<Bytes, BytesRejection>) -> Response {
    let stop = match body(raw).and_then(|b| Stop::parse_json(&b)) {
        Ok(stop) => stop,
        Err(rejection) => return bad_request(&rejection),
    };
    match state.handle.submit(Pending::SetStop(stop)).await {
        Ok(_) => Json(state.handle.current_stop()).into_response(),
        Err(error) => unavailable(&error),
    }
}

async fn post_visit(State(state): State<AppState>, raw: Result<Bytes, BytesRejection>) -> Response {
    if let Some(response) = unread(&raw) {
        return response;
    }
    let visit = match body(raw).and_then(|b| CheckIn::parse_json(&b)) {
        Ok(visit) => visit,
        Err(rejection) => {
            state.handle.shared.rejected("http", false, &rejection);
            return bad_request(&rejection);
        }
    };
    let at = visit.at;
    created(state.handle.submit(Pending::Visit(visit, "http")).await, at)
}

async fn post_survey(
    State(state): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(response) = unread(&raw) {
        return response;
    }
    let response = match body(raw)
        .and_then(|b| SurveyResponse::parse_json_with(&b, &state.handle.shared.trades))
    {
        Ok(response) => response,
        Err(rejection) => {
            state.handle.shared.rejected("http", true, &rejection);
            return bad_request(&rejection);
        }
    };
    let at = response.at;
    created(
        state.handle.submit(Pending::Survey(response, "http")).await,
        at,
    )
}

fn created(stored: Result<super::adapter::Stored, StoreFailed>, at: Timestamp) -> Response {
    match stored {
        Ok(stored) => (
            StatusCode::CREATED,
            Json(json!({"id": stored.id, "stop": stored.stop, "at": rfc3339(at)})),
        )
            .into_response(),
        Err(error) => unavailable(&error),
    }
}

async fn get_stats(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let scope_stop = query.get("stop").cloned();
    let current = state.handle.current_stop();
    let rejected = (
        state
            .handle
            .shared
            .survey_rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        state
            .handle
            .shared
            .visits_rejected
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    let shared = state.handle.shared.clone();
    let computed = state
        .reader
        .run(move |store| {
            let mut stats = stats_json(store, &current, scope_stop.as_deref(), rejected)?;
            let trades = trades_json(store, scope_stop.as_deref(), &shared.trades)?;
            if let Some(survey) = stats.get_mut("survey").and_then(|s| s.as_object_mut()) {
                survey.extend(trades);
            }
            Ok::<_, StoreError>(stats)
        })
        .await;
    json_or_500(computed)
}

fn survey_json(f: &SurveyFigures) -> Map<String, JsonValue> {
    match serde_json::to_value(f) {
        Ok(JsonValue::Object(map)) => map,
        _ => Map::new(),
    }
}

fn visits_json(f: &VisitFigures) -> Map<String, JsonValue> {
    let mut map = Map::new();
    map.insert("visitors".into(), f.visitors.into());
    map.insert("groups".into(), f.groups.into());
    map
}

/// Survey part and visits part of one scope, each with its figures by audience.
fn scope_json(f: &Figures) -> (Map<String, JsonValue>, Map<String, JsonValue>) {
    let mut survey = survey_json(&f.survey);
    let by: Map<String, JsonValue> = f
        .survey_by_audience
        .iter()
        .map(|(a, s)| (a.code().to_owned(), JsonValue::Object(survey_json(s))))
        .collect();
    survey.insert("by_audience".into(), JsonValue::Object(by));
    let mut visits = visits_json(&f.visits);
    let by: Map<String, JsonValue> = f
        .visits_by_audience
        .iter()
        .map(|(a, v)| (a.code().to_owned(), JsonValue::Object(visits_json(v))))
        .collect();
    visits.insert("by_audience".into(), JsonValue::Object(by));
    (survey, visits)
}

/// A trade's count and share: `100 * count / responses` (every response of the group, whether or
/// not it answered the trades question), the same division as every share here.
fn trade_shares(
    counts: Option<&BTreeMap<String, u64>>,
    responses: u64,
    ids: &[String],
) -> JsonValue {
    let map: Map<String, JsonValue> = ids
        .iter()
        .map(|id| {
            let n = counts.and_then(|c| c.get(id)).copied().unwrap_or(0);
            (id.clone(), json!({"count": n, "pct": pct(n, responses)}))
        })
        .collect();
    JsonValue::Object(map)
}

/// The trades question in `/api/stats`: `trades` (over the scope), `trades_by_stop`,
/// `trades_by_audience`; every trade of the catalogue listed, with 0 when nobody chose it.
pub fn trades_json(
    store: &Store,
    scope: Option<&str>,
    ids: &[String],
) -> Result<Map<String, JsonValue>, StoreError> {
    let base = Scope {
        stop: scope,
        ..Scope::default()
    };
    let mut out = Map::new();
    let total = store.figures(base)?.survey.responses;
    let overall = store.trades_grouped(base, None)?;
    out.insert("trades".into(), trade_shares(overall.get(""), total, ids));
    for (key, by) in [
        ("trades_by_stop", GroupBy::Stop),
        ("trades_by_audience", GroupBy::Audience),
    ] {
        let responses = store.survey_grouped(base, by)?;
        let counts = store.trades_grouped(base, Some(by))?;
        let mut groups: Map<String, JsonValue> = responses
            .iter()
            .map(|(k, f)| (k.clone(), trade_shares(counts.get(k), f.responses, ids)))
            .collect();
        if let GroupBy::Audience = by {
            for a in Audience::ALL {
                groups
                    .entry(a.code().to_owned())
                    .or_insert_with(|| trade_shares(None, 0, ids));
            }
        }
        out.insert(key.into(), JsonValue::Object(groups));
    }
    Ok(out)
}

/// `/api/stats`: over every record, or over one stop's (`scope`).
pub fn stats_json(
    store: &Store,
    current: &Stop,
    scope: Option<&str>,
    rejected: (u64, u64),
) -> Result<JsonValue, StoreError> {
    let today = day_of(Timestamp::now());
    let base = Scope {
        stop: scope,
        ..Scope::default()
    };
    let (mut survey, mut visits) = scope_json(&store.figures(base)?);
    // Short names for the headline figures, as the issue names them.
    visits.insert("visitors_total".into(), visits["visitors"].clone());
    visits.insert("groups_total".into(), visits["groups"].clone());

    let at_stop = store.figures(super::adapter::current_scope(store, current)?)?;
    let (s, v) = scope_json(&at_stop);
    visits.insert("visitors_at_stop".into(), v["visitors"].clone());
    survey.insert("current_stop".into(), JsonValue::Object(s));
    visits.insert("current_stop".into(), JsonValue::Object(v));

    let on_day = store.figures(Scope {
        stop: scope,
        day: Some(&today),
        ..Scope::default()
    })?;
    let (s, v) = scope_json(&on_day);
    visits.insert("visitors_today".into(), v["visitors"].clone());
    survey.insert("today".into(), JsonValue::Object(s));
    visits.insert("today".into(), JsonValue::Object(v));

    for (key, by) in [
        ("by_day", GroupBy::Day),
        ("by_stop", GroupBy::Stop),
        ("by_stop_id", GroupBy::StopId),
    ] {
        let s: Map<String, JsonValue> = store
            .survey_grouped(base, by)?
            .iter()
            .map(|(k, f)| (k.clone(), JsonValue::Object(survey_json(f))))
            .collect();
        survey.insert(key.into(), JsonValue::Object(s));
        let v: Map<String, JsonValue> = store
            .visits_grouped(base, by)?
            .iter()
            .map(|(k, f)| (k.clone(), JsonValue::Object(visits_json(f))))
            .collect();
        visits.insert(key.into(), JsonValue::Object(v));
    }
    survey.insert("rejected".into(), rejected.0.into());
    visits.insert("rejected".into(), rejected.1.into());
    // Stops by identity: `by_stop_id` keys are these ids; town and venue are attributes (two
    // stops in one town are two entries).
    let stops: Map<String, JsonValue> = store
        .stops()?
        .into_iter()
        .map(|s| (s.id.to_string(), json!(s)))
        .collect();
    Ok(json!({
        "stops": stops,
        "stop_id": store.stop_id(current)?,
        "stop": current,
        "scope": {"stop": scope},
        "today": today,
        "survey": survey,
        "visits": visits,
    }))
}

/// A JSON body computed off the async threads; a store error or a failed task is a 500 that
/// says why (both are the server's fault, never the request's).
fn json_or_500<E: std::fmt::Display, F: std::fmt::Display>(
    computed: Result<Result<JsonValue, E>, F>,
) -> Response {
    let error = match computed {
        Ok(Ok(body)) => return Json(body).into_response(),
        Ok(Err(error)) => error.to_string(),
        Err(error) => error.to_string(),
    };
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({ "error": error })),
    )
        .into_response()
}
