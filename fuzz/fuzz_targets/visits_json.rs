//! The JSON a visitor, a crew or a kiosk sends: a stop, a check-in, a survey answer (HTTP and
//! MQTT) and an order (HTTP and MQTT, checked by the line). Refused with a reason, never a panic.
#![no_main]

use fabrique_adapters::simulator::line::LineConfig;
use fabrique_gateway::visits::records::{CheckIn, Stop, SurveyResponse};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

/// The body `POST /api/orders` and `<prefix>/orders/new` take.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Order {
    model: String,
    text: String,
}

fuzz_target!(|data: &[u8]| {
    if let Ok(stop) = Stop::parse_json(data) {
        // What was accepted validates again (it is stored and re-read at start).
        assert!(stop.validate().is_ok(), "{stop:?}");
    }
    let _ = CheckIn::parse_json(data);
    let _ = SurveyResponse::parse_json(data);
    if let Ok(order) = serde_json::from_slice::<Order>(data) {
        let _ = LineConfig::default().check_order(&order.model, &order.text);
    }
});
