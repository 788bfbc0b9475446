//! The tags every OctoPrint device has, and how OctoPrint's JSON answers map onto them.
//!
//! Pure functions of the answers, so that the mapping is tested without a server.

use serde_json::Value as Json;

use crate::point::Value;
use crate::tag::{DataType, TagSpec};

/// One of the adapter's fixed tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    State,
    Operational,
    Printing,
    Paused,
    NozzleTemperature,
    NozzleTarget,
    BedTemperature,
    BedTarget,
    JobName,
    JobProgress,
    PrintTime,
    PrintTimeLeft,
}

impl Field {
    pub const ALL: [Field; 12] = [
        Field::State,
        Field::Operational,
        Field::Printing,
        Field::Paused,
        Field::NozzleTemperature,
        Field::NozzleTarget,
        Field::BedTemperature,
        Field::BedTarget,
        Field::JobName,
        Field::JobProgress,
        Field::PrintTime,
        Field::PrintTimeLeft,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::State => "State",
            Field::Operational => "Operational",
            Field::Printing => "Printing",
            Field::Paused => "Paused",
            Field::NozzleTemperature => "NozzleTemperature",
            Field::NozzleTarget => "NozzleTarget",
            Field::BedTemperature => "BedTemperature",
            Field::BedTarget => "BedTarget",
            Field::JobName => "JobName",
            Field::JobProgress => "JobProgress",
            Field::PrintTime => "PrintTime",
            Field::PrintTimeLeft => "PrintTimeLeft",
        }
    }

    pub fn spec(self, device_path: &str) -> TagSpec {
        let path = format!("{device_path}/{}", self.name());
        let temperature = |text: &str| {
            TagSpec::new(path.clone(), DataType::Float64)
                .unit("°C")
                .describe(text)
        };
        match self {
            Field::State => TagSpec::new(path, DataType::String).describe(
                "Printer state as OctoPrint words it: Operational, Printing, Paused, Offline, Error…",
            ),
            Field::Operational => TagSpec::new(path, DataType::Bool)
                .describe("True when the printer is connected and ready or busy"),
            Field::Printing => {
                TagSpec::new(path, DataType::Bool).describe("True while a job is printing")
            }
            Field::Paused => {
                TagSpec::new(path, DataType::Bool).describe("True while the job is paused")
            }
            Field::NozzleTemperature => temperature("Nozzle (tool0) temperature"),
            Field::NozzleTarget => temperature("Nozzle (tool0) target temperature, 0 when off"),
            Field::BedTemperature => temperature("Heated bed temperature"),
            Field::BedTarget => temperature("Heated bed target temperature, 0 when off"),
            Field::JobName => TagSpec::new(path, DataType::String)
                .describe("File of the selected job, empty when none"),
            Field::JobProgress => TagSpec::new(path, DataType::Float64)
                .unit("%")
                .range(0.0, 100.0)
                .describe("Completion of the job, 0 when none"),
            Field::PrintTime => TagSpec::new(path, DataType::UInt32)
                .unit("s")
                .describe("Time the job has been printing, 0 when none"),
            Field::PrintTimeLeft => TagSpec::new(path, DataType::UInt32)
                .unit("s")
                .describe("OctoPrint's estimate of the time left, 0 when none or unknown"),
        }
    }
}

/// What one answer says about one tag.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    Value(Value),
    /// Not reported (yet): OctoPrint sends no temperatures until the firmware's first report,
    /// and none for a bed the printer does not have. The tag keeps what it has.
    Absent,
    /// Present but not what OctoPrint documents: rejected, with the reason.
    Invalid(String),
}

/// The answer of `GET /api/printer` (HTTP 200).
pub fn decode_printer(body: &Json) -> Vec<(Field, Reading)> {
    let state = &body["state"];
    let flag = |name: &str| match &state["flags"][name] {
        Json::Bool(b) => Reading::Value(Value::Bool(*b)),
        other => Reading::Invalid(format!("state.flags.{name} is {}", kind(other))),
    };
    let text = match &state["text"] {
        Json::String(s) => Reading::Value(Value::text(s)),
        other => Reading::Invalid(format!("state.text is {}", kind(other))),
    };
    let temperature = |heater: &str, which: &str| -> Reading {
        match &body["temperature"][heater] {
            Json::Null => Reading::Absent,
            Json::Object(_) => match &body["temperature"][heater][which] {
                // A heater the firmware has not reported a target for yet.
                Json::Null if which == "target" => Reading::Absent,
                Json::Number(n) => match n.as_f64() {
                    Some(t) if (-273.15..=1000.0).contains(&t) => Reading::Value(Value::Float(t)),
                    _ => Reading::Invalid(format!(
                        "temperature.{heater}.{which} = {n} is not a plausible temperature"
                    )),
                },
                other => {
                    Reading::Invalid(format!("temperature.{heater}.{which} is {}", kind(other)))
                }
            },
            other => Reading::Invalid(format!("temperature.{heater} is {}", kind(other))),
        }
    };
    vec![
        (Field::State, text),
        (Field::Operational, flag("operational")),
        (Field::Printing, flag("printing")),
        (Field::Paused, flag("paused")),
        (Field::NozzleTemperature, temperature("tool0", "actual")),
        (Field::NozzleTarget, temperature("tool0", "target")),
        (Field::BedTemperature, temperature("bed", "actual")),
        (Field::BedTarget, temperature("bed", "target")),
    ]
}

/// The answer of `GET /api/job` (HTTP 200). OctoPrint answers `null` for everything when no
/// job is selected, and for the time left until it has an estimate: those read as empty / 0.
pub fn decode_job(body: &Json) -> Vec<(Field, Reading)> {
    let name = match &body["job"]["file"]["name"] {
        Json::Null => Reading::Value(Value::text("")),
        Json::String(s) => Reading::Value(Value::text(s)),
        other => Reading::Invalid(format!("job.file.name is {}", kind(other))),
    };
    let progress = match &body["progress"]["completion"] {
        Json::Null => Reading::Value(Value::Float(0.0)),
        Json::Number(n) => match n.as_f64() {
            // Rounding can take OctoPrint a hair past 100.
            Some(p) if (0.0..=100.5).contains(&p) => Reading::Value(Value::Float(p.min(100.0))),
            _ => Reading::Invalid(format!("progress.completion = {n} is not a percentage")),
        },
        other => Reading::Invalid(format!("progress.completion is {}", kind(other))),
    };
    let seconds = |key: &str| match &body["progress"][key] {
        Json::Null => Reading::Value(Value::UInt(0)),
        Json::Number(n) => match n.as_f64() {
            Some(s) if (0.0..=f64::from(u32::MAX)).contains(&s) => {
                Reading::Value(Value::UInt(s.round() as u64))
            }
            _ => Reading::Invalid(format!("progress.{key} = {n} is not a duration in s")),
        },
        other => Reading::Invalid(format!("progress.{key} is {}", kind(other))),
    };
    vec![
        (Field::JobName, name),
        (Field::JobProgress, progress),
        (Field::PrintTime, seconds("printTime")),
        (Field::PrintTimeLeft, seconds("printTimeLeft")),
    ]
}

/// The first line of an error body, for messages (OctoPrint answers `{"error": "..."}`).
pub fn error_text(body: &[u8]) -> String {
    let text = serde_json::from_slice::<Json>(body)
        .ok()
        .and_then(|j| j["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let line = text.lines().next().unwrap_or("").trim();
    line.chars().take(200).collect()
}

fn kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "missing",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reading(readings: &[(Field, Reading)], field: Field) -> Reading {
        readings
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, r)| r.clone())
            .unwrap()
    }

    fn printer(temperature: Json) -> Json {
        json!({
            "sd": {"ready": true},
            "state": {"error": "", "text": "Printing", "flags": {
                "operational": true, "printing": true, "paused": false, "error": false}},
            "temperature": temperature
        })
    }

    #[test]
    fn printer_state_and_temperatures() {
        let r = decode_printer(&printer(json!({
            "tool0": {"actual": 214.8, "target": 215.0, "offset": 0},
            "bed": {"actual": 59.5, "target": 60, "offset": 0}
        })));
        assert_eq!(
            reading(&r, Field::State),
            Reading::Value(Value::text("Printing"))
        );
        assert_eq!(
            reading(&r, Field::Printing),
            Reading::Value(Value::Bool(true))
        );
        assert_eq!(
            reading(&r, Field::Paused),
            Reading::Value(Value::Bool(false))
        );
        assert_eq!(
            reading(&r, Field::NozzleTemperature),
            Reading::Value(Value::Float(214.8))
        );
        assert_eq!(
            reading(&r, Field::BedTarget),
            Reading::Value(Value::Float(60.0))
        );
    }

    #[test]
    fn temperatures_not_reported_yet_are_absent_not_invalid() {
        // What OctoPrint 1.11 answers in the first second after connecting to the printer.
        let r = decode_printer(&printer(json!({})));
        for field in [
            Field::NozzleTemperature,
            Field::NozzleTarget,
            Field::BedTemperature,
            Field::BedTarget,
        ] {
            assert_eq!(reading(&r, field), Reading::Absent, "{field:?}");
        }
        let no_bed = decode_printer(&printer(json!({"tool0": {"actual": 20.0, "target": null}})));
        assert_eq!(reading(&no_bed, Field::BedTemperature), Reading::Absent);
        assert_eq!(reading(&no_bed, Field::NozzleTarget), Reading::Absent);
    }

    #[test]
    fn nonsense_is_rejected_with_the_json_path() {
        let r = decode_printer(&json!({
            "state": {"text": 3, "flags": {"operational": "yes"}},
            "temperature": {"tool0": {"actual": "hot"}, "bed": {"actual": 1e9, "target": 0}}
        }));
        let invalid = |f| match reading(&r, f) {
            Reading::Invalid(why) => why,
            other => panic!("{f:?}: {other:?}"),
        };
        assert_eq!(invalid(Field::State), "state.text is a number");
        assert_eq!(
            invalid(Field::Operational),
            "state.flags.operational is a string"
        );
        assert_eq!(invalid(Field::Printing), "state.flags.printing is missing");
        assert_eq!(
            invalid(Field::NozzleTemperature),
            "temperature.tool0.actual is a string"
        );
        assert!(invalid(Field::BedTemperature).contains("not a plausible temperature"));
    }

    #[test]
    fn a_job_in_progress() {
        let r = decode_job(&json!({
            "job": {"file": {"name": "keyring-wave.gcode"}},
            "progress": {"completion": 42.25, "printTime": 61, "printTimeLeft": 83.6},
            "state": "Printing"
        }));
        assert_eq!(
            reading(&r, Field::JobName),
            Reading::Value(Value::text("keyring-wave.gcode"))
        );
        assert_eq!(
            reading(&r, Field::JobProgress),
            Reading::Value(Value::Float(42.25))
        );
        assert_eq!(
            reading(&r, Field::PrintTime),
            Reading::Value(Value::UInt(61))
        );
        assert_eq!(
            reading(&r, Field::PrintTimeLeft),
            Reading::Value(Value::UInt(84))
        );
    }

    #[test]
    fn no_job_reads_as_empty_and_zero() {
        let r = decode_job(&json!({
            "job": {"file": {"name": null}},
            "progress": {"completion": null, "printTime": null, "printTimeLeft": null},
            "state": "Operational"
        }));
        assert_eq!(reading(&r, Field::JobName), Reading::Value(Value::text("")));
        assert_eq!(
            reading(&r, Field::JobProgress),
            Reading::Value(Value::Float(0.0))
        );
        assert_eq!(
            reading(&r, Field::PrintTimeLeft),
            Reading::Value(Value::UInt(0))
        );
    }

    #[test]
    fn impossible_progress_is_rejected() {
        let r = decode_job(&json!({"progress": {"completion": 250, "printTime": -4}}));
        assert!(matches!(
            reading(&r, Field::JobProgress),
            Reading::Invalid(_)
        ));
        assert!(matches!(reading(&r, Field::PrintTime), Reading::Invalid(_)));
    }

    #[test]
    fn error_bodies_are_shortened_to_their_message() {
        assert_eq!(
            error_text(br#"{"error": "Printer is not operational"}"#),
            "Printer is not operational"
        );
        assert_eq!(error_text(b"<html>\nBad"), "<html>");
    }

    #[test]
    fn every_field_has_a_distinct_name() {
        let names: std::collections::HashSet<_> = Field::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names.len(), Field::ALL.len());
        assert!(crate::device::check_tag_names(names.iter().copied()).is_ok());
    }
}
