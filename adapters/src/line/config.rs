//! `[line]`: the line's configuration, and the order check every line controller applies.

use serde::{Deserialize, Serialize};

use super::STEP_COUNT;
use crate::adapter::CallError;

/// `[line]`: what the kiosk offers and how long each step takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LineConfig {
    /// Models the kiosk offers; `SubmitOrder` refuses any other.
    pub models: Vec<String>,
    /// Longest personalisation text, in characters (the engraving area is small).
    pub max_text_length: usize,
    /// How many recent orders are shown under `Orders/Recent`.
    pub recent_orders: usize,
    /// Nominal duration of each of the 9 steps, in simulated seconds.
    pub step_durations_s: Vec<f64>,
}

impl Default for LineConfig {
    fn default() -> Self {
        LineConfig {
            models: ["Classic", "Wave", "Hexa", "Minimal"]
                .map(String::from)
                .to_vec(),
            max_text_length: 20,
            recent_orders: 20,
            step_durations_s: vec![30.0, 20.0, 15.0, 240.0, 90.0, 45.0, 40.0, 30.0, 25.0],
        }
    }
}

impl LineConfig {
    /// Checks what serde cannot: returns the offending key and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.models.is_empty() || self.models.iter().any(|m| m.trim().is_empty()) {
            return Err((
                "line.models",
                "needs at least one non-empty model name".into(),
            ));
        }
        if self.max_text_length == 0 || self.max_text_length > 200 {
            return Err(("line.max_text_length", "must be between 1 and 200".into()));
        }
        if self.recent_orders == 0 || self.recent_orders > 1000 {
            return Err(("line.recent_orders", "must be between 1 and 1000".into()));
        }
        if self.step_durations_s.len() != STEP_COUNT {
            return Err((
                "line.step_durations_s",
                format!(
                    "needs exactly {STEP_COUNT} durations, got {}",
                    self.step_durations_s.len()
                ),
            ));
        }
        if self
            .step_durations_s
            .iter()
            .any(|d| !(d.is_finite() && *d > 0.0))
        {
            return Err((
                "line.step_durations_s",
                "durations must be positive seconds".into(),
            ));
        }
        Ok(())
    }

    /// Check a kiosk order; the error is what the client is told.
    pub fn check_order(&self, model: &str, text: &str) -> Result<(), CallError> {
        if !self.models.iter().any(|m| m == model) {
            return Err(CallError::InvalidArgument(format!(
                "unknown model `{model}`; the line makes {}",
                self.models.join(", ")
            )));
        }
        // Blank, invisible-only, bidi tricks, control characters: the shared text check.
        if let Err(issue) = crate::text::check_visible(text) {
            return Err(CallError::InvalidArgument(format!(
                "the personalisation text {issue}"
            )));
        }
        let text = text.trim();
        let length = text.chars().count();
        if length > self.max_text_length {
            return Err(CallError::InvalidArgument(format!(
                "the personalisation text has {length} characters; at most {} fit",
                self.max_text_length
            )));
        }
        Ok(())
    }
}
