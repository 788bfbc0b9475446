//! What a visit, a survey answer and a tour stop are, and how outside input becomes one.
//!
//! Every entry point (HTTP, MQTT, OPC UA) goes through these parsers, so a response refused on
//! one is refused on all, with the same reason and the same [`Rejection`] kind.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use fabrique_adapters::text::check_visible;
use fabrique_adapters::Timestamp;
use serde::{Deserialize, Serialize};

/// Largest body (HTTP) or payload (MQTT) a record may have.
pub const MAX_BODY_BYTES: usize = 4096;
/// Largest group that checks in at once (a coach holds about 60; two classes together, 120).
pub const MAX_GROUP_SIZE: u64 = 500;
const MAX_NAME_CHARS: usize = 100;

/// Who the visitors are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Audience {
    MiddleSchool,
    HighSchool,
    Student,
    JobSeeker,
    Retraining,
    Teacher,
    Company,
    GeneralPublic,
    /// Pupils' parents (open days, school events).
    Parent,
    /// Guidance counsellors (psychologues de l'Éducation nationale, Mission locale, CIO).
    GuidanceCounsellor,
}

impl Audience {
    pub const ALL: [Audience; 10] = [
        Audience::MiddleSchool,
        Audience::HighSchool,
        Audience::Student,
        Audience::JobSeeker,
        Audience::Retraining,
        Audience::Teacher,
        Audience::Company,
        Audience::GeneralPublic,
        Audience::Parent,
        Audience::GuidanceCounsellor,
    ];

    /// The code used in JSON, SQL and the form.
    pub fn code(self) -> &'static str {
        match self {
            Audience::MiddleSchool => "middle_school",
            Audience::HighSchool => "high_school",
            Audience::Student => "student",
            Audience::JobSeeker => "job_seeker",
            Audience::Retraining => "retraining",
            Audience::Teacher => "teacher",
            Audience::Company => "company",
            Audience::GeneralPublic => "general_public",
            Audience::Parent => "parent",
            Audience::GuidanceCounsellor => "guidance_counsellor",
        }
    }

    /// The browse name under `Visits/Audiences` and `Visits/Survey/Audiences`.
    pub fn browse_name(self) -> &'static str {
        match self {
            Audience::MiddleSchool => "MiddleSchool",
            Audience::HighSchool => "HighSchool",
            Audience::Student => "Student",
            Audience::JobSeeker => "JobSeeker",
            Audience::Retraining => "Retraining",
            Audience::Teacher => "Teacher",
            Audience::Company => "Company",
            Audience::GeneralPublic => "GeneralPublic",
            Audience::Parent => "Parent",
            Audience::GuidanceCounsellor => "GuidanceCounsellor",
        }
    }

    pub fn from_code(code: &str) -> Option<Audience> {
        Audience::ALL.into_iter().find(|a| a.code() == code)
    }

    fn parse(code: &str) -> Result<Audience, Rejection> {
        Audience::from_code(code).ok_or_else(|| {
            let known: Vec<&str> = Audience::ALL.iter().map(|a| a.code()).collect();
            Rejection::new(
                RejectionKind::UnknownAudience,
                format!(
                    "unknown audience `{}` (one of: {})",
                    shorten(code),
                    known.join(", ")
                ),
            )
        })
    }
}

/// Why an input was refused; one log line per kind and entry point, a counter for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectionKind {
    TooLarge,
    MalformedJson,
    UnknownField,
    MissingField,
    WrongType,
    UnknownAudience,
    OutOfRange,
    BadTime,
    BadStop,
    UnknownTrade,
}

impl RejectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionKind::TooLarge => "too-large",
            RejectionKind::MalformedJson => "malformed-json",
            RejectionKind::UnknownField => "unknown-field",
            RejectionKind::MissingField => "missing-field",
            RejectionKind::WrongType => "wrong-type",
            RejectionKind::UnknownAudience => "unknown-audience",
            RejectionKind::OutOfRange => "out-of-range",
            RejectionKind::BadTime => "bad-time",
            RejectionKind::BadStop => "bad-stop",
            RejectionKind::UnknownTrade => "unknown-trade",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejection {
    pub kind: RejectionKind,
    pub reason: String,
}

impl Rejection {
    pub fn new(kind: RejectionKind, reason: impl Into<String>) -> Self {
        Rejection {
            kind,
            reason: reason.into(),
        }
    }

    fn from_json(error: &serde_json::Error) -> Self {
        let text = error.to_string();
        let kind = match error.classify() {
            serde_json::error::Category::Data if text.starts_with("unknown field") => {
                RejectionKind::UnknownField
            }
            serde_json::error::Category::Data if text.starts_with("missing field") => {
                RejectionKind::MissingField
            }
            serde_json::error::Category::Data => RejectionKind::WrongType,
            _ => RejectionKind::MalformedJson,
        };
        Rejection::new(kind, text)
    }
}

/// A tour stop: where the truck is parked and for which days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stop {
    pub town: String,
    #[serde(default)]
    pub venue: String,
    /// ISO 8601 dates, `YYYY-MM-DD`.
    pub first_day: String,
    pub last_day: String,
}

impl Stop {
    /// Checks a stop from any source: a town, ISO dates, first day not after the last.
    pub fn validate(&self) -> Result<(), Rejection> {
        check_name("town", &self.town)?;
        // The venue may be left out, but not filled with something invisible.
        let venue_issue = match self.venue.is_empty() {
            true => None,
            false => check_visible(&self.venue).err(),
        };
        if self.venue.chars().count() > 2 * MAX_NAME_CHARS || venue_issue.is_some() {
            let why = venue_issue.map_or_else(|| "is too long".to_owned(), |i| i.to_string());
            return Err(Rejection::new(
                RejectionKind::BadStop,
                format!("venue {why}: at most 200 characters, visible, no control characters"),
            ));
        }
        let first = parse_day("first_day", &self.first_day)?;
        let last = parse_day("last_day", &self.last_day)?;
        if first > last {
            return Err(Rejection::new(
                RejectionKind::BadStop,
                format!(
                    "first_day {} is after last_day {}",
                    self.first_day, self.last_day
                ),
            ));
        }
        Ok(())
    }

    pub fn parse_json(body: &[u8]) -> Result<Stop, Rejection> {
        check_size(body)?;
        let stop: Stop = serde_json::from_slice(body).map_err(|e| Rejection::from_json(&e))?;
        stop.validate()?;
        Ok(stop)
    }
}

fn parse_day(key: &str, text: &str) -> Result<NaiveDate, Rejection> {
    // `%Y` alone would take five-digit years and signs; the stop's days are plain ISO dates.
    let plain = text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-';
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|_| plain)
        .ok_or_else(|| {
            Rejection::new(
                RejectionKind::BadStop,
                format!("{key}: `{}` is not an ISO date (YYYY-MM-DD)", shorten(text)),
            )
        })
}

fn check_name(key: &str, text: &str) -> Result<(), Rejection> {
    let issue = check_visible(text).err();
    if issue.is_some() || text.chars().count() > MAX_NAME_CHARS {
        let why = issue.map_or_else(|| "is too long".to_owned(), |i| i.to_string());
        return Err(Rejection::new(
            RejectionKind::BadStop,
            format!(
                "{key} {why}: must be 1 to {MAX_NAME_CHARS} characters, visible, no control characters"
            ),
        ));
    }
    Ok(())
}

fn check_size(body: &[u8]) -> Result<(), Rejection> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Rejection::new(
            RejectionKind::TooLarge,
            format!(
                "body of {} bytes is larger than {MAX_BODY_BYTES}",
                body.len()
            ),
        ));
    }
    Ok(())
}

fn shorten(text: &str) -> String {
    text.chars().take(40).collect()
}

/// When a record happened: given (RFC 3339) or now.
fn parse_at(at: Option<&str>) -> Result<Timestamp, Rejection> {
    let Some(text) = at else {
        return Ok(Timestamp::now());
    };
    let parsed = DateTime::parse_from_rfc3339(text).map_err(|e| {
        Rejection::new(
            RejectionKind::BadTime,
            format!("at: `{}` is not an RFC 3339 time: {e}", shorten(text)),
        )
    })?;
    // Outside these years a time is a typo, and nanoseconds since 1970 would not hold it.
    if !(2000..2100).contains(&parsed.with_timezone(&Utc).year()) {
        return Err(Rejection::new(
            RejectionKind::BadTime,
            format!("at: `{text}` is not between 2000 and 2099"),
        ));
    }
    Ok(Timestamp::from_nanos(
        parsed.timestamp_nanos_opt().unwrap_or_default(),
    ))
}

fn parse_stop(stop: Option<String>) -> Result<Option<String>, Rejection> {
    match stop {
        Some(name) => {
            check_name("stop", &name)?;
            Ok(Some(name))
        }
        None => Ok(None),
    }
}

/// The local day of a time, `YYYY-MM-DD`: how records are grouped by day.
pub fn day_of(at: Timestamp) -> String {
    // The gateway's local day (its time zone, `TZ`), like the production indicators: a visit
    // at 00:30 in Lens belongs to that day, not to the UTC one before it.
    let nanos = at.as_nanos();
    DateTime::<Utc>::from_timestamp(
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000) as u32,
    )
    .unwrap_or_default()
    .with_timezone(&chrono::Local)
    .date_naive()
    .format("%Y-%m-%d")
    .to_string()
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(at: Timestamp) -> String {
    let nanos = at.as_nanos();
    DateTime::<Utc>::from_timestamp(
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000) as u32,
    )
    .unwrap_or_default()
    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
    .to_string()
}

/// A group checking in.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckIn {
    pub audience: Audience,
    pub size: u64,
    pub at: Timestamp,
    /// `None`: the current stop.
    pub stop: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckInInput {
    audience: String,
    size: u64,
    #[serde(default)]
    at: Option<String>,
    #[serde(default)]
    stop: Option<String>,
}

impl CheckIn {
    pub fn parse_json(body: &[u8]) -> Result<CheckIn, Rejection> {
        check_size(body)?;
        let input: CheckInInput =
            serde_json::from_slice(body).map_err(|e| Rejection::from_json(&e))?;
        CheckIn::new(&input.audience, input.size, input.at.as_deref(), input.stop)
    }

    pub fn new(
        audience: &str,
        size: u64,
        at: Option<&str>,
        stop: Option<String>,
    ) -> Result<CheckIn, Rejection> {
        let audience = Audience::parse(audience)?;
        if !(1..=MAX_GROUP_SIZE).contains(&size) {
            return Err(Rejection::new(
                RejectionKind::OutOfRange,
                format!("size: {size} is not between 1 and {MAX_GROUP_SIZE}"),
            ));
        }
        Ok(CheckIn {
            audience,
            size,
            at: parse_at(at)?,
            stop: parse_stop(stop)?,
        })
    }
}

/// One answer to the post-visit survey.
#[derive(Debug, Clone, PartialEq)]
pub struct SurveyResponse {
    pub audience: Audience,
    /// 4 very satisfied, 3 satisfied, 2 not very satisfied, 1 not satisfied.
    pub satisfaction: u8,
    pub view_changed: bool,
    pub at: Timestamp,
    pub stop: Option<String>,
    /// "Quels métiers vous ont donné envie d'en savoir plus ?": trade ids of the catalogue
    /// (`journey`), sorted, each once; empty when not answered.
    pub trades: Vec<String>,
}

/// Most trades one answer may name.
pub const MAX_TRADES: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SurveyInput {
    audience: String,
    satisfaction: i64,
    view_changed: bool,
    #[serde(default)]
    trades: Vec<String>,
    #[serde(default)]
    at: Option<String>,
    #[serde(default)]
    stop: Option<String>,
}

impl SurveyResponse {
    /// As [`SurveyResponse::parse_json`], the trades checked against the catalogue's ids.
    pub fn parse_json_with(
        body: &[u8],
        known_trades: &[String],
    ) -> Result<SurveyResponse, Rejection> {
        let response = SurveyResponse::parse_json(body)?;
        if let Some(unknown) = response.trades.iter().find(|t| !known_trades.contains(t)) {
            return Err(Rejection::new(
                RejectionKind::UnknownTrade,
                format!(
                    "trades: `{}` is not a trade of the catalogue (GET /api/trades)",
                    shorten(unknown)
                ),
            ));
        }
        Ok(response)
    }

    pub fn parse_json(body: &[u8]) -> Result<SurveyResponse, Rejection> {
        check_size(body)?;
        let input: SurveyInput =
            serde_json::from_slice(body).map_err(|e| Rejection::from_json(&e))?;
        let audience = Audience::parse(&input.audience)?;
        let satisfaction = u8::try_from(input.satisfaction)
            .ok()
            .filter(|s| (1..=4).contains(s))
            .ok_or_else(|| {
                Rejection::new(
                    RejectionKind::OutOfRange,
                    format!(
                        "satisfaction: {} is not 1, 2, 3 or 4 (4 = very satisfied)",
                        input.satisfaction
                    ),
                )
            })?;
        if input.trades.len() > MAX_TRADES {
            return Err(Rejection::new(
                RejectionKind::OutOfRange,
                format!("trades: at most {MAX_TRADES}, got {}", input.trades.len()),
            ));
        }
        let trades: std::collections::BTreeSet<String> = input.trades.into_iter().collect();
        Ok(SurveyResponse {
            audience,
            satisfaction,
            view_changed: input.view_changed,
            at: parse_at(input.at.as_deref())?,
            stop: parse_stop(input.stop)?,
            trades: trades.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(body: &str) -> RejectionKind {
        SurveyResponse::parse_json(body.as_bytes())
            .unwrap_err()
            .kind
    }

    #[test]
    fn a_valid_response_is_parsed() {
        let r = SurveyResponse::parse_json(
            br#"{"audience":"job_seeker","satisfaction":4,"view_changed":true,"stop":"Arras","at":"2026-11-23T10:00:00+01:00"}"#,
        )
        .unwrap();
        assert_eq!(r.audience, Audience::JobSeeker);
        assert_eq!(r.satisfaction, 4);
        assert!(r.view_changed);
        assert_eq!(r.stop.as_deref(), Some("Arras"));
        assert_eq!(day_of(r.at), "2026-11-23");
        assert_eq!(rfc3339(r.at), "2026-11-23T09:00:00.000Z");
    }

    #[test]
    fn invalid_responses_say_why() {
        let ok = r#""audience":"student","satisfaction":3,"view_changed":false"#;
        assert_eq!(
            kind(r#"{"audience":"alien","satisfaction":3,"view_changed":true}"#),
            RejectionKind::UnknownAudience
        );
        assert_eq!(
            kind(r#"{"audience":"student","satisfaction":5,"view_changed":true}"#),
            RejectionKind::OutOfRange
        );
        assert_eq!(
            kind(r#"{"audience":"student","satisfaction":-1,"view_changed":true}"#),
            RejectionKind::OutOfRange
        );
        assert_eq!(
            kind(r#"{"audience":"student","view_changed":true}"#),
            RejectionKind::MissingField
        );
        assert_eq!(
            kind(&format!("{{{ok},\"x\":1}}")),
            RejectionKind::UnknownField
        );
        assert_eq!(kind(&format!("{{{ok}")), RejectionKind::MalformedJson);
        assert_eq!(
            kind(r#"{"audience":"student","satisfaction":"4","view_changed":true}"#),
            RejectionKind::WrongType
        );
        assert_eq!(
            kind(&format!("{{{ok},\"at\":\"yesterday\"}}")),
            RejectionKind::BadTime
        );
        assert_eq!(
            kind(&format!("{{{ok},\"stop\":\" \"}}")),
            RejectionKind::BadStop
        );
        let big = format!("{{{ok},\"stop\":\"{}\"}}", "x".repeat(MAX_BODY_BYTES));
        assert_eq!(kind(&big), RejectionKind::TooLarge);
    }

    #[test]
    fn check_ins_and_stops_are_checked() {
        let c = CheckIn::parse_json(br#"{"audience":"middle_school","size":24}"#).unwrap();
        assert_eq!(
            (c.audience, c.size, c.stop),
            (Audience::MiddleSchool, 24, None)
        );
        assert!(CheckIn::parse_json(br#"{"audience":"middle_school","size":0}"#).is_err());
        assert!(CheckIn::parse_json(br#"{"audience":"middle_school","size":-3}"#).is_err());
        let stop = |first: &str, last: &str| Stop {
            town: "Lens".into(),
            venue: "Lycée".into(),
            first_day: first.into(),
            last_day: last.into(),
        };
        assert!(stop("2026-11-23", "2026-11-27").validate().is_ok());
        assert!(stop("2026-11-28", "2026-11-27").validate().is_err());
        assert!(stop("2026-13-01", "2026-11-27").validate().is_err());
        assert!(stop("26-11-01", "2026-11-27").validate().is_err());
        let blank = Stop {
            town: "  ".into(),
            ..stop("2026-11-23", "2026-11-23")
        };
        assert_eq!(blank.validate().unwrap_err().kind, RejectionKind::BadStop);
        for a in Audience::ALL {
            assert_eq!(Audience::from_code(a.code()), Some(a));
        }
    }
}
