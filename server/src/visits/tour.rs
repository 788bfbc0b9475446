//! The tour calendar (`[[visits.tour]]`): the planned stops, and which one is due today.
//!
//! A stop is its own identity in the visits database (`stops` table: town, venue, first day),
//! so the truck coming back to a town later in the year makes a new stop, not more of the old
//! one. The gateway switches to a planned stop on its first day (checked at start and every
//! 30 s) unless the current stop starts on or after it, and once per planned stop and run: a
//! stop the crew sets by hand afterwards is left alone, across restarts too.

use serde::{Deserialize, Serialize};

use super::records::Stop;

/// What kind of place the truck stops at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopKind {
    School,
    Event,
    Company,
}

impl StopKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StopKind::School => "school",
            StopKind::Event => "event",
            StopKind::Company => "company",
        }
    }
}

/// `[[visits.tour]]`: one planned stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedStop {
    pub town: String,
    #[serde(default)]
    pub venue: String,
    pub kind: StopKind,
    pub first_day: String,
    pub last_day: String,
}

impl PlannedStop {
    pub fn stop(&self) -> Stop {
        Stop {
            town: self.town.clone(),
            venue: self.venue.clone(),
            first_day: self.first_day.clone(),
            last_day: self.last_day.clone(),
        }
    }
}

/// Each planned stop valid, and no two overlapping (the truck is in one place at a time).
pub fn validate(tour: &[PlannedStop]) -> Result<(), (&'static str, String)> {
    for (i, planned) in tour.iter().enumerate() {
        planned.stop().validate().map_err(|r| {
            (
                "visits.tour",
                format!("stop {} ({}): {}", i + 1, planned.town, r.reason),
            )
        })?;
    }
    let mut sorted: Vec<&PlannedStop> = tour.iter().collect();
    sorted.sort_by(|a, b| a.first_day.cmp(&b.first_day));
    for pair in sorted.windows(2) {
        if pair[1].first_day <= pair[0].last_day {
            return Err((
                "visits.tour",
                format!(
                    "{} ({} to {}) overlaps {} ({} to {})",
                    pair[1].town,
                    pair[1].first_day,
                    pair[1].last_day,
                    pair[0].town,
                    pair[0].first_day,
                    pair[0].last_day
                ),
            ));
        }
    }
    Ok(())
}

/// The planned stop whose days include `today` (ISO dates compare as text).
pub fn due<'a>(tour: &'a [PlannedStop], today: &str) -> Option<&'a PlannedStop> {
    tour.iter()
        .find(|p| p.first_day.as_str() <= today && today <= p.last_day.as_str())
}

/// `past`, `current` or `upcoming`, seen from `today`.
pub fn state(planned: &PlannedStop, today: &str) -> &'static str {
    if planned.last_day.as_str() < today {
        "past"
    } else if planned.first_day.as_str() <= today {
        "current"
    } else {
        "upcoming"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(town: &str, first: &str, last: &str) -> PlannedStop {
        PlannedStop {
            town: town.into(),
            venue: "Lycée".into(),
            kind: StopKind::School,
            first_day: first.into(),
            last_day: last.into(),
        }
    }

    #[test]
    fn the_stop_of_the_day_is_found_and_overlaps_are_refused() {
        let tour = vec![
            planned("Lens", "2026-11-23", "2026-11-27"),
            planned("Arras", "2026-11-30", "2026-12-04"),
            planned("Lens", "2027-05-10", "2027-05-14"),
        ];
        assert!(validate(&tour).is_ok());
        assert_eq!(due(&tour, "2026-11-30").unwrap().town, "Arras");
        assert_eq!(due(&tour, "2026-11-28"), None);
        assert_eq!(due(&tour, "2027-05-14").unwrap().first_day, "2027-05-10");
        assert_eq!(state(&tour[0], "2026-12-01"), "past");
        assert_eq!(state(&tour[1], "2026-12-01"), "current");
        assert_eq!(state(&tour[2], "2026-12-01"), "upcoming");
        let overlapping = vec![
            planned("Lens", "2026-11-23", "2026-11-27"),
            planned("Arras", "2026-11-27", "2026-12-04"),
        ];
        let (key, reason) = validate(&overlapping).unwrap_err();
        assert_eq!(key, "visits.tour");
        assert!(reason.contains("overlaps"), "{reason}");
    }
}
