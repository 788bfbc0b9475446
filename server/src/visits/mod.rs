//! Tour stops, group check-ins and the post-visit survey.
//!
//! ```text
//! HTTP /api/visits, /api/survey, /api/stop ─┐
//! MQTT <prefix>/<site>/survey/responses ────┼─► writer (VisitsAdapter) ─► visits.sqlite
//! OPC UA Stop.SetStop, Visits.CheckIn ──────┘        │  committed, then figures recomputed
//!                                                    ▼
//!                         bus: Stop/*, Visits/*, Visits/Survey/* ─► OPC UA, MQTT, InfluxDB
//! HTTP /api/stats ◄── reader connection (SQL aggregates over the stored rows)
//! ```

mod adapter;
mod http;
mod mqtt_inbound;
pub mod records;
mod store;
pub mod tour;

pub use adapter::{VisitsAdapter, VisitsHandle};
pub use http::routes;
pub use mqtt_inbound::MqttInbound;
pub use records::Stop;

use serde::{Deserialize, Serialize};

/// `[visits]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VisitsConfig {
    /// With `[mqtt] enabled`: take survey responses and orders from the broker too.
    pub mqtt_subscribe: bool,
    /// `[[visits.tour]]`: the tour calendar; the gateway switches to each stop on its first day.
    pub tour: Vec<tour::PlannedStop>,
}

impl Default for VisitsConfig {
    fn default() -> Self {
        VisitsConfig {
            mqtt_subscribe: true,
            tour: Vec::new(),
        }
    }
}

impl VisitsConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        tour::validate(&self.tour)
    }
}

/// `[stop]`: where the truck is this week.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StopConfig {
    pub town: String,
    pub venue: String,
    /// ISO date, `YYYY-MM-DD`.
    pub first_day: String,
    pub last_day: String,
}

/// The `[stop]` of the configuration as a stop.
pub fn configured_stop(config: &StopConfig) -> Stop {
    Stop {
        town: config.town.clone(),
        venue: config.venue.clone(),
        first_day: config.first_day.clone(),
        last_day: config.last_day.clone(),
    }
}

/// The `[stop]` of the configuration, checked like a stop set at run time.
pub fn validate_stop(config: &StopConfig) -> Result<(), (&'static str, String)> {
    configured_stop(config).validate().map_err(|r| {
        let key = ["town", "venue", "first_day", "last_day"]
            .into_iter()
            .find(|k| r.reason.starts_with(k))
            .map_or("stop", |k| match k {
                "town" => "stop.town",
                "venue" => "stop.venue",
                "first_day" => "stop.first_day",
                _ => "stop.last_day",
            });
        (key, r.reason)
    })
}
