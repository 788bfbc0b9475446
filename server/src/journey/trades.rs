//! The trades catalogue: who does the work of each step, and the trades before and after the
//! line (marketing, purchasing, sales, recycling). Shipped in French (`config/trades.toml`,
//! built in), replaceable by a file of the same layout (`journey.trades_file`).

use std::collections::HashSet;
use std::path::Path;

use fabrique_adapters::line::STEP_COUNT;
use serde::{Deserialize, Serialize};

/// The built-in catalogue.
pub const BUILT_IN: &str = include_str!("../../../config/trades.toml");

/// Trainings a trade may name, from the shortest to the longest.
pub const TRAININGS: [&str; 7] = [
    "CAP",
    "Bac pro",
    "BTS",
    "BUT",
    "Licence pro",
    "Ingénieur",
    "Master",
];

/// Stages of the product's life a trade belongs to.
pub const STAGES: [&str; 10] = [
    "marketing",
    "conception",
    "achats",
    "production",
    "qualite",
    "maintenance",
    "logistique",
    "vente",
    "recyclage",
    "support",
];

/// Fewest trades a catalogue must hold: the guide's "more than forty trades".
pub const MIN_TRADES: usize = 40;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trade {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Steps of the line (1..=9) where the trade acts; empty for trades off the line.
    #[serde(default)]
    pub steps: Vec<usize>,
    pub stage: String,
    pub training: Vec<String>,
}

/// One step of the line as visitors see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepInfo {
    pub number: usize,
    pub name: String,
    /// Device path (`Stations/<station>/<device>`) whose live values the follow page shows.
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    pub steps: Vec<StepInfo>,
    pub trades: Vec<Trade>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("cannot read the trades file {path} (`journey.trades_file`): {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("trades catalogue {origin}: {reason}")]
    Invalid { origin: String, reason: String },
}

impl Catalogue {
    /// The built-in catalogue, or `file` when set.
    pub fn load(file: Option<&Path>) -> Result<Catalogue, CatalogueError> {
        match file {
            None => Catalogue::parse(BUILT_IN, "(built in)"),
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| CatalogueError::Read {
                        path: path.display().to_string(),
                        source,
                    })?;
                Catalogue::parse(&text, &path.display().to_string())
            }
        }
    }

    pub fn parse(text: &str, origin: &str) -> Result<Catalogue, CatalogueError> {
        let invalid = |reason: String| CatalogueError::Invalid {
            origin: origin.to_owned(),
            reason,
        };
        let catalogue: Catalogue = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        catalogue.validate().map_err(invalid)?;
        Ok(catalogue)
    }

    fn validate(&self) -> Result<(), String> {
        let numbers: Vec<usize> = self.steps.iter().map(|s| s.number).collect();
        if numbers != (1..=STEP_COUNT).collect::<Vec<_>>() {
            return Err(format!(
                "[[steps]] must list the steps 1 to {STEP_COUNT} in order, got {numbers:?}"
            ));
        }
        if self.trades.len() < MIN_TRADES {
            return Err(format!(
                "[[trades]] lists {} trades; at least {MIN_TRADES} are expected",
                self.trades.len()
            ));
        }
        let mut seen = HashSet::new();
        for (i, t) in self.trades.iter().enumerate() {
            let at = format!("trades[{i}] (`{}`)", t.id);
            let id_ok = !t.id.is_empty()
                && t.id.len() <= 60
                && t.id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !id_ok {
                return Err(format!(
                    "{at}.id: 1 to 60 lowercase letters, digits and dashes"
                ));
            }
            if !seen.insert(t.id.as_str()) {
                return Err(format!("{at}.id: listed twice"));
            }
            if t.name.trim().is_empty() || t.description.trim().is_empty() {
                return Err(format!("{at}: name and description must not be empty"));
            }
            if let Some(s) = t.steps.iter().find(|s| !(1..=STEP_COUNT).contains(*s)) {
                return Err(format!("{at}.steps: {s} is not a step (1 to {STEP_COUNT})"));
            }
            if !STAGES.contains(&t.stage.as_str()) {
                return Err(format!(
                    "{at}.stage: `{}` is not one of {}",
                    t.stage,
                    STAGES.join(", ")
                ));
            }
            if t.training.is_empty() {
                return Err(format!("{at}.training: name at least one training"));
            }
            if let Some(x) = t.training.iter().find(|x| !TRAININGS.contains(&x.as_str())) {
                return Err(format!(
                    "{at}.training: `{x}` is not one of {}",
                    TRAININGS.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Trades acting at `step` (1..=9), in catalogue order.
    pub fn at_step(&self, step: usize) -> impl Iterator<Item = &Trade> {
        self.trades.iter().filter(move |t| t.steps.contains(&step))
    }

    pub fn ids(&self) -> Vec<String> {
        self.trades.iter().map(|t| t.id.clone()).collect()
    }

    pub fn step(&self, number: usize) -> Option<&StepInfo> {
        self.steps.get(number.wrapping_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalogue_covers_the_whole_life_of_the_product() {
        let c = Catalogue::load(None).unwrap();
        assert!(c.trades.len() >= MIN_TRADES, "{}", c.trades.len());
        for stage in STAGES {
            assert!(
                c.trades.iter().any(|t| t.stage == stage),
                "no trade at stage {stage}"
            );
        }
        for step in 1..=STEP_COUNT {
            assert!(c.at_step(step).next().is_some(), "no trade at step {step}");
        }
        // Some trades belong to no machine.
        assert!(c.trades.iter().any(|t| t.steps.is_empty()));
        for training in ["CAP", "Bac pro", "BTS", "BUT", "Ingénieur"] {
            assert!(c
                .trades
                .iter()
                .any(|t| t.training.iter().any(|x| x == training)));
        }
    }

    #[test]
    fn a_bad_catalogue_names_the_entry() {
        let mut text = BUILT_IN.replacen("stage = \"marketing\"", "stage = \"astrologie\"", 1);
        let error = Catalogue::parse(&text, "test").unwrap_err().to_string();
        assert!(
            error.contains("charge-etudes-marketing") && error.contains("astrologie"),
            "{error}"
        );
        text = BUILT_IN.replacen("steps = [1]", "steps = [12]", 1);
        let error = Catalogue::parse(&text, "test").unwrap_err().to_string();
        assert!(error.contains("12 is not a step"), "{error}");
    }
}
