//! HTTP: designs, class groups and their QR sheet, the kiosk scan, the follow and line views
//! (JSON and Server-Sent Events), the trades catalogue, and the four pages.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use fabrique_adapters::bus::BusEvent;
use fabrique_adapters::{BusReceiver, CallError, Timestamp};
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Value as JsonValue};

use super::codes::DesignCode;
use super::designs::{Design, GroupId, NewDesign};
use super::{qr, Journey};
use crate::http::Guards;

const MAX_DESIGN_BODY: usize = 4096;
const MAX_GROUP_BODY: usize = 64 * 1024;
const MAX_PUPIL_CHARS: usize = 60;
/// Fewest milliseconds between two views sent on one stream: the machines' values change
/// every tick, a phone needs no more than this.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);
const LINE_EVERY: Duration = Duration::from_millis(1000);

const PAGES: [(&str, &str, &str); 7] = [
    (
        "/concevoir",
        "text/html; charset=utf-8",
        include_str!("page/concevoir.html"),
    ),
    (
        "/borne",
        "text/html; charset=utf-8",
        include_str!("page/borne.html"),
    ),
    (
        "/ligne",
        "text/html; charset=utf-8",
        include_str!("page/ligne.html"),
    ),
    (
        "/journey/journey.css",
        "text/css; charset=utf-8",
        include_str!("page/journey.css"),
    ),
    (
        "/journey/concevoir.js",
        "text/javascript; charset=utf-8",
        include_str!("page/concevoir.js"),
    ),
    (
        "/journey/borne.js",
        "text/javascript; charset=utf-8",
        include_str!("page/borne.js"),
    ),
    (
        "/journey/ligne.js",
        "text/javascript; charset=utf-8",
        include_str!("page/ligne.js"),
    ),
];
const FOLLOW_HTML: &str = include_str!("page/suivi.html");
const FOLLOW_JS: &str = include_str!("page/suivi.js");

type App = Arc<Journey>;

pub fn routes(journey: Arc<Journey>, guards: &Guards) -> Router {
    let mut router = Router::new()
        .route(
            "/api/designs",
            guards
                .public(post(post_design))
                .layer(DefaultBodyLimit::max(MAX_DESIGN_BODY)),
        )
        .route("/api/designs/options", get(design_options))
        .route("/api/designs/{code}", get(get_design))
        .route("/api/designs/{code}/qr.svg", get(design_qr))
        .route(
            "/api/groups",
            guards
                .public(post(post_group))
                .layer(DefaultBodyLimit::max(MAX_GROUP_BODY)),
        )
        .route("/api/groups/{id}", get(get_group))
        .route("/api/groups/{id}/qr-sheet", get(group_sheet))
        .route(
            "/api/kiosk/scan",
            guards
                .public(post(kiosk_scan))
                .layer(DefaultBodyLimit::max(MAX_DESIGN_BODY)),
        )
        .route("/api/follow/{order}", get(follow))
        .route("/api/follow/{order}/events", get(follow_events))
        .route("/api/follow/{order}/qr.svg", get(follow_qr))
        .route("/api/line", get(line))
        .route("/api/line/events", get(line_events))
        .route("/api/trades", get(trades))
        .route(
            "/suivi/{order}",
            get(|| async { page("text/html; charset=utf-8", FOLLOW_HTML) }),
        )
        .route(
            "/journey/suivi.js",
            get(|| async { page("text/javascript; charset=utf-8", FOLLOW_JS) }),
        );
    for (path, content_type, body) in PAGES {
        router = router.route(path, get(move || async move { page(content_type, body) }));
    }
    router.with_state(journey)
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn error(status: StatusCode, kind: &str, reason: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": reason.into(), "kind": kind })),
    )
        .into_response()
}

fn rfc3339(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp(ns.div_euclid(1_000_000_000), 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn read_body(raw: Result<Bytes, BytesRejection>) -> Result<Bytes, Box<Response>> {
    raw.map_err(|e| {
        let status = e.status();
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too-large"
        } else {
            "bad-body"
        };
        Box::new(error(status, kind, format!("cannot read the body: {e}")))
    })
}

fn design_json(d: &Design, now_ns: i64) -> JsonValue {
    let state = if d.order.is_some() || d.launched_ns.is_some() {
        "launched"
    } else if d.expires_ns <= now_ns {
        "expired"
    } else {
        "ready"
    };
    json!({
        "code": d.code,
        "model": d.model,
        "text": d.text,
        "state": state,
        "order": d.order,
        "pupil": d.pupil,
        "group": d.group,
        "created_at": rfc3339(d.created_ns),
        "expires_at": rfc3339(d.expires_ns),
        "qr": format!("/api/designs/{}/qr.svg", d.code),
        "follow": d.order.as_ref().map(|o| format!("/suivi/{o}")),
    })
}

impl Journey {
    /// A design as entered, checked with the line's own order rules (`SubmitOrder` would refuse
    /// anything refused here, and nothing else).
    fn check_design(&self, model: &str, text: &str) -> Result<NewDesign, String> {
        match self.line_config.check_order(model, text) {
            Ok(()) => Ok(NewDesign {
                model: model.to_owned(),
                text: text.trim().to_owned(),
                pupil: None,
            }),
            Err(CallError::InvalidArgument(reason)) => Err(reason),
            Err(other) => Err(other.to_string()),
        }
    }

    async fn store_designs(
        &self,
        designs: Vec<NewDesign>,
        group: Option<String>,
    ) -> Result<(Option<GroupId>, Vec<Design>), String> {
        let now = Timestamp::now().as_nanos();
        let expires = now.saturating_add(self.config.expiry_ns());
        self.with_designs(move |d| d.create(&designs, group.as_deref(), now, expires))
            .await
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DesignInput {
    model: String,
    text: String,
}

async fn post_design(State(app): State<App>, raw: Result<Bytes, BytesRejection>) -> Response {
    let body = match read_body(raw) {
        Ok(b) => b,
        Err(response) => return *response,
    };
    let input: DesignInput = match serde_json::from_slice(&body) {
        Ok(input) => input,
        Err(e) => {
            app.design_refused("bad-json", &e.to_string());
            return error(StatusCode::BAD_REQUEST, "bad-json", e.to_string());
        }
    };
    let design = match app.check_design(&input.model, &input.text) {
        Ok(d) => d,
        Err(reason) => {
            app.design_refused("bad-design", &reason);
            return error(StatusCode::BAD_REQUEST, "bad-design", reason);
        }
    };
    match app.store_designs(vec![design], None).await {
        Ok((_, stored)) => {
            app.designs_created(stored.len());
            let now = Timestamp::now().as_nanos();
            (StatusCode::CREATED, Json(design_json(&stored[0], now))).into_response()
        }
        Err(reason) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-stored",
            format!("not stored: {reason}"),
        ),
    }
}

async fn design_options(State(app): State<App>) -> Response {
    Json(json!({
        "models": app.line_config.models,
        "max_text_length": app.line_config.max_text_length,
        "expiry_days": app.config.design_expiry_days,
    }))
    .into_response()
}

async fn find_design(app: &App, code: &str) -> Result<Design, Response> {
    let Some(code) = DesignCode::parse(code) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "unknown-code",
            format!(
                "`{}` is not a design code",
                code.chars().take(20).collect::<String>()
            ),
        ));
    };
    let shown = code.to_string();
    match app.with_designs(move |d| d.get(&code)).await {
        Ok(Some(design)) => Ok(design),
        Ok(None) => Err(error(
            StatusCode::NOT_FOUND,
            "unknown-code",
            format!("no design `{shown}`"),
        )),
        Err(reason) => Err(error(StatusCode::SERVICE_UNAVAILABLE, "not-stored", reason)),
    }
}

async fn get_design(State(app): State<App>, Path(code): Path<String>) -> Response {
    match find_design(&app, &code).await {
        Ok(design) => Json(design_json(&design, Timestamp::now().as_nanos())).into_response(),
        Err(response) => response,
    }
}

fn svg_response(data: &str) -> Response {
    match qr::svg(data, 240) {
        Some(svg) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "max-age=86400"),
            ],
            svg,
        )
            .into_response(),
        None => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "qr",
            "cannot make the QR code",
        ),
    }
}

async fn design_qr(State(app): State<App>, Path(code): Path<String>) -> Response {
    match find_design(&app, &code).await {
        Ok(design) => svg_response(&design.code),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupInput {
    name: String,
    designs: Vec<PupilInput>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PupilInput {
    pupil: String,
    model: String,
    text: String,
}

/// Split one CSV line on `sep`, with double-quoted fields (`""` inside quotes is a quote).
fn csv_fields(line: &str, sep: char) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            c if c == sep && !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields.into_iter().map(|f| f.trim().to_owned()).collect()
}

/// A class from CSV: `pupil,model,text` per line (`;` works too, as spreadsheets in French
/// write it), an optional header line.
fn parse_csv(text: &str) -> Result<Vec<PupilInput>, String> {
    let text = text.trim_start_matches('\u{feff}');
    let sep = if text.lines().next().is_some_and(|l| l.contains(';')) {
        ';'
    } else {
        ','
    };
    let mut pupils = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields = csv_fields(line, sep);
        let header = i == 0
            && matches!(
                fields.first().map(|f| f.to_lowercase()).as_deref(),
                Some("pupil" | "élève" | "eleve" | "nom" | "name")
            );
        if header {
            continue;
        }
        let [pupil, model, text] = <[String; 3]>::try_from(fields).map_err(|f| {
            format!(
                "line {}: {} fields; expected 3 (pupil{sep}model{sep}text)",
                i + 1,
                f.len()
            )
        })?;
        pupils.push(PupilInput { pupil, model, text });
    }
    Ok(pupils)
}

#[derive(Deserialize)]
struct GroupQuery {
    name: Option<String>,
}

async fn post_group(
    State(app): State<App>,
    Query(query): Query<GroupQuery>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match read_body(raw) {
        Ok(b) => b,
        Err(response) => return *response,
    };
    let csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/csv") || v.starts_with("text/plain"));
    let parsed = if csv {
        match (query.name, std::str::from_utf8(&body)) {
            (None, _) => {
                Err("a CSV upload names its group in the query: /api/groups?name=4e%20B".to_owned())
            }
            (Some(_), Err(_)) => Err("the CSV is not UTF-8 text".to_owned()),
            (Some(name), Ok(text)) => parse_csv(text).map(|designs| GroupInput { name, designs }),
        }
    } else {
        serde_json::from_slice::<GroupInput>(&body).map_err(|e| e.to_string())
    };
    let group = match parsed {
        Ok(group) => group,
        Err(reason) => {
            app.design_refused("bad-group", &reason);
            return error(StatusCode::BAD_REQUEST, "bad-group", reason);
        }
    };
    let name = group.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        app.design_refused("bad-group", "bad group name");
        return error(
            StatusCode::BAD_REQUEST,
            "bad-group",
            "name: 1 to 100 characters, no control characters",
        );
    }
    if group.designs.is_empty() || group.designs.len() > app.config.max_group_designs {
        app.design_refused("bad-group", "bad number of designs");
        return error(
            StatusCode::BAD_REQUEST,
            "bad-group",
            format!(
                "designs: 1 to {} per group (journey.max_group_designs), got {}",
                app.config.max_group_designs,
                group.designs.len()
            ),
        );
    }
    let mut designs = Vec::with_capacity(group.designs.len());
    for (i, p) in group.designs.iter().enumerate() {
        let pupil = p.pupil.trim();
        if pupil.is_empty()
            || pupil.chars().count() > MAX_PUPIL_CHARS
            || pupil.chars().any(char::is_control)
        {
            app.design_refused("bad-design", "bad pupil name");
            return error(
                StatusCode::BAD_REQUEST,
                "bad-design",
                format!(
                    "designs[{i}].pupil: 1 to {MAX_PUPIL_CHARS} characters, no control characters"
                ),
            );
        }
        match app.check_design(&p.model, &p.text) {
            Ok(mut design) => {
                design.pupil = Some(pupil.to_owned());
                designs.push(design);
            }
            Err(reason) => {
                app.design_refused("bad-design", &reason);
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad-design",
                    format!("designs[{i}] ({pupil}): {reason}"),
                );
            }
        }
    }
    match app.store_designs(designs, Some(name.clone())).await {
        Ok((Some(id), stored)) => {
            app.designs_created(stored.len());
            let now = Timestamp::now().as_nanos();
            (
                StatusCode::CREATED,
                Json(json!({
                    "group": id,
                    "name": name,
                    "designs": stored.iter().map(|d| design_json(d, now)).collect::<Vec<_>>(),
                    "qr_sheet": format!("/api/groups/{}/qr-sheet", id.0),
                })),
            )
                .into_response()
        }
        Ok((None, _)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "not-stored",
            "no group id",
        ),
        Err(reason) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-stored",
            format!("not stored: {reason}"),
        ),
    }
}

async fn load_group(app: &App, id: i64) -> Result<(String, Vec<Design>), Response> {
    match app.with_designs(move |d| d.group(GroupId(id))).await {
        Ok(Some(group)) => Ok(group),
        Ok(None) => Err(error(
            StatusCode::NOT_FOUND,
            "unknown-group",
            format!("no group {id}"),
        )),
        Err(reason) => Err(error(StatusCode::SERVICE_UNAVAILABLE, "not-stored", reason)),
    }
}

async fn get_group(State(app): State<App>, Path(id): Path<i64>) -> Response {
    match load_group(&app, id).await {
        Ok((name, designs)) => {
            let now = Timestamp::now().as_nanos();
            Json(json!({
                "group": id,
                "name": name,
                "designs": designs.iter().map(|d| design_json(d, now)).collect::<Vec<_>>(),
                "qr_sheet": format!("/api/groups/{id}/qr-sheet"),
            }))
            .into_response()
        }
        Err(response) => response,
    }
}

async fn group_sheet(State(app): State<App>, Path(id): Path<i64>) -> Response {
    match load_group(&app, id).await {
        Ok((name, designs)) => {
            let expires = designs
                .iter()
                .map(|d| d.expires_ns)
                .min()
                .and_then(|ns| DateTime::<Utc>::from_timestamp(ns.div_euclid(1_000_000_000), 0))
                .map(|t| {
                    t.with_timezone(&chrono::Local)
                        .format("%d/%m/%Y")
                        .to_string()
                })
                .unwrap_or_default();
            (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                qr::sheet(&name, &designs, &expires),
            )
                .into_response()
        }
        Err(response) => response,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanInput {
    code: String,
}

async fn kiosk_scan(State(app): State<App>, raw: Result<Bytes, BytesRejection>) -> Response {
    let body = match read_body(raw) {
        Ok(b) => b,
        Err(response) => return *response,
    };
    let input: ScanInput = match serde_json::from_slice(&body) {
        Ok(input) => input,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad-json", e.to_string()),
    };
    match app.scan(&input.code).await {
        Ok(order) => (
            StatusCode::CREATED,
            Json(json!({ "order": order, "follow": format!("/suivi/{order}") })),
        )
            .into_response(),
        Err(refused) => {
            let mut response = (
                refused.http_status(),
                Json(json!({
                    "error": refused.message(),
                    "kind": refused.kind(),
                    "status": format!("{}", refused.ua_status()),
                })),
            )
                .into_response();
            if refused.http_status() == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("30"));
            }
            response
        }
    }
}

async fn follow(State(app): State<App>, Path(order): Path<String>) -> Response {
    match app.follow_view(&order).await {
        Some(view) => Json(view).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "unknown-order",
            format!("no order `{}`", order.chars().take(20).collect::<String>()),
        ),
    }
}

/// The follow page's address for a phone: `journey.public_url` when set (the kiosk may reach
/// the gateway on an address phones cannot), else the host the request came to.
fn follow_url(public_url: Option<&str>, headers: &HeaderMap, order: &str) -> String {
    match public_url {
        Some(base) => format!("{}/suivi/{order}", base.trim_end_matches('/')),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1");
            format!("http://{host}/suivi/{order}")
        }
    }
}

async fn follow_qr(
    State(app): State<App>,
    headers: HeaderMap,
    Path(order): Path<String>,
) -> Response {
    if order.len() > 40
        || order
            .chars()
            .any(|c| !c.is_ascii_alphanumeric() && c != '-')
    {
        return error(StatusCode::NOT_FOUND, "unknown-order", "not an order id");
    }
    svg_response(&follow_url(
        app.config.public_url.as_deref(),
        &headers,
        &order,
    ))
}

async fn line(State(app): State<App>) -> Response {
    match app.line_view().await {
        Some(view) => Json(view).into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "the gateway is starting",
        ),
    }
}

async fn trades(State(app): State<App>) -> Response {
    Json(json!({
        "steps": app.catalogue.steps.iter().map(|s| json!({"number": s.number, "name": s.name})).collect::<Vec<_>>(),
        "trades": app.catalogue.trades,
    }))
    .into_response()
}

/// Which view a stream sends.
#[derive(Clone)]
enum Watched {
    Order(String),
    Line,
}

struct ViewStream {
    app: App,
    watched: Watched,
    changes: Option<BusReceiver>,
    first: bool,
}

impl ViewStream {
    /// Wait until the bus changes something the view shows, then let changes gather for
    /// `every` so a stream sends at most one view per period.
    async fn wait_for_change(&mut self, every: Duration) -> bool {
        let Some(changes) = self.changes.as_mut() else {
            return false;
        };
        loop {
            match changes.recv().await {
                None => return false,
                Some(BusEvent::Resync { .. }) => break,
                Some(BusEvent::Changes(batch)) => {
                    if self.app.touches_views(batch.iter().map(|u| u.tag)) {
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(every).await;
        while changes.try_recv().is_some() {}
        true
    }
}

/// Server-Sent Events: a view as soon as the client connects (so a phone waking up is current
/// at once: EventSource reconnects by itself), then one each time the bus changes it.
fn view_stream(app: App, watched: Watched) -> impl Stream<Item = Result<Event, Infallible>> {
    let changes = app.bus().map(|b| b.subscribe());
    let state = ViewStream {
        app,
        watched,
        changes,
        first: true,
    };
    futures::stream::unfold(state, |mut s| async move {
        if !s.first {
            let every = match s.watched {
                Watched::Order(_) => FOLLOW_EVERY,
                Watched::Line => LINE_EVERY,
            };
            if !s.wait_for_change(every).await {
                return None;
            }
        }
        s.first = false;
        let (name, view) = match &s.watched {
            Watched::Order(id) => ("order", s.app.follow_view(id).await),
            Watched::Line => ("line", s.app.line_view().await),
        };
        let event = match view {
            Some(view) => Event::default().event(name).json_data(view).ok()?,
            None => Event::default().event("unknown").data("unknown"),
        };
        Some((Ok(event), s))
    })
}

async fn follow_events(
    State(app): State<App>,
    Path(order): Path<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(view_stream(app, Watched::Order(order))).keep_alive(KeepAlive::default())
}

async fn line_events(State(app): State<App>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(view_stream(app, Watched::Line)).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_follow_qr_code_points_where_phones_reach_the_gateway() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            follow_url(None, &headers, "ORD-000001"),
            "http://127.0.0.1:8080/suivi/ORD-000001"
        );
        assert_eq!(
            follow_url(Some("http://192.168.1.10:8080/"), &headers, "ORD-000001"),
            "http://192.168.1.10:8080/suivi/ORD-000001"
        );
    }

    #[test]
    fn a_class_is_read_from_csv_with_commas_or_semicolons() {
        let pupils =
            parse_csv("élève;modèle;texte\nLéa;Wave;Léa\n\"Noé, D.\";Hexa;\"Go \"\"Noé\"\"\"\n")
                .unwrap();
        assert_eq!(pupils.len(), 2);
        assert_eq!(pupils[1].pupil, "Noé, D.");
        assert_eq!(pupils[1].text, "Go \"Noé\"");
        let pupils = parse_csv("Léa,Wave,Léa\r\nTom,Classic,Tom\r\n").unwrap();
        assert_eq!(pupils.len(), 2);
        assert_eq!(pupils[1].text, "Tom");
        let error = parse_csv("Léa,Wave\n").err().unwrap();
        assert!(error.contains("line 1"), "{error}");
    }
}
