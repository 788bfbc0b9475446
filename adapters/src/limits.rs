//! Alarm limits of an analog tag (`alarm = { high = 230.0, high_high = 240.0, ... }` in a
//! tag's configuration): what the gateway's `ExclusiveLimitAlarmType` conditions compare the
//! tag's values with (server/src/alarms/limit.rs).

use serde::{Deserialize, Serialize};

use crate::device::ConfigIssue;

/// The limits of one tag. At least one limit; `high_high >= high > low >= low_low`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_high: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_low: Option<f64>,
    /// How far back past a limit a value must come to leave its level (hysteresis).
    #[serde(default)]
    pub deadband: f64,
    /// Severity of the alarm's events (1..=1000).
    #[serde(default = "default_severity")]
    pub severity: u16,
    /// The alarm's message; the level and the value are appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn default_severity() -> u16 {
    700
}

/// The level of an exclusive limit alarm (`ExclusiveLimitStateMachineType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitLevel {
    LowLow,
    Low,
    High,
    HighHigh,
}

impl LimitLevel {
    /// -2 (LowLow) .. 2 (HighHigh); 0 is normal.
    fn rank(level: Option<LimitLevel>) -> i8 {
        match level {
            Some(LimitLevel::LowLow) => -2,
            Some(LimitLevel::Low) => -1,
            None => 0,
            Some(LimitLevel::High) => 1,
            Some(LimitLevel::HighHigh) => 2,
        }
    }

    fn of_rank(rank: i8) -> Option<LimitLevel> {
        match rank {
            i8::MIN..=-2 => Some(LimitLevel::LowLow),
            -1 => Some(LimitLevel::Low),
            0 => None,
            1 => Some(LimitLevel::High),
            _ => Some(LimitLevel::HighHigh),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LimitLevel::LowLow => "LowLow",
            LimitLevel::Low => "Low",
            LimitLevel::High => "High",
            LimitLevel::HighHigh => "HighHigh",
        }
    }
}

impl AlarmLimits {
    pub fn high(high: f64, high_high: f64) -> Self {
        AlarmLimits {
            high_high: Some(high_high),
            high: Some(high),
            low: None,
            low_low: None,
            deadband: 1.0,
            severity: default_severity(),
            message: None,
        }
    }

    pub fn low(mut self, low: f64, low_low: f64) -> Self {
        self.low = Some(low);
        self.low_low = Some(low_low);
        self
    }

    pub fn deadband(mut self, deadband: f64) -> Self {
        self.deadband = deadband;
        self
    }

    pub fn message(mut self, message: &str) -> Self {
        self.message = Some(message.to_owned());
        self
    }

    /// The limits are usable: `key` is where they are configured (`tags[2].alarm`).
    pub fn check(&self, key: &str) -> Result<(), ConfigIssue> {
        let issue =
            |field: &str, reason: String| ConfigIssue::new(format!("{key}.{field}"), reason);
        let limits = [
            ("high_high", self.high_high),
            ("high", self.high),
            ("low", self.low),
            ("low_low", self.low_low),
        ];
        if limits.iter().all(|(_, l)| l.is_none()) {
            return Err(ConfigIssue::new(
                key,
                "an alarm needs at least one of high_high, high, low, low_low",
            ));
        }
        for (field, limit) in limits {
            if limit.is_some_and(|l| !l.is_finite()) {
                return Err(issue(field, "must be a finite number".into()));
            }
        }
        // Each present limit against the next present one below it.
        let present: Vec<(&str, f64)> = limits
            .iter()
            .filter_map(|(f, l)| l.map(|l| (*f, l)))
            .collect();
        for pair in present.windows(2) {
            let ((upper, a), (lower, b)) = (pair[0], pair[1]);
            // high > low strictly (a value cannot be high and low at once); the others may meet.
            let strict = upper.starts_with("high") && lower.starts_with("low");
            let ok = if strict { a > b } else { a >= b };
            if !ok {
                let op = if strict { ">" } else { ">=" };
                return Err(issue(
                    upper,
                    format!("{upper} ({a}) must be {op} {lower} ({b}): high_high >= high > low >= low_low"),
                ));
            }
        }
        if !self.deadband.is_finite() || self.deadband < 0.0 {
            return Err(issue(
                "deadband",
                format!("must be a number >= 0 (is {})", self.deadband),
            ));
        }
        if !(1..=1000).contains(&self.severity) {
            return Err(issue(
                "severity",
                format!("must be between 1 and 1000 (is {})", self.severity),
            ));
        }
        Ok(())
    }

    /// The level of `value` without hysteresis: the most severe limit it reaches.
    fn raw_level(&self, value: f64) -> i8 {
        if self.high_high.is_some_and(|l| value >= l) {
            2
        } else if self.high.is_some_and(|l| value >= l) {
            1
        } else if self.low_low.is_some_and(|l| value <= l) {
            -2
        } else if self.low.is_some_and(|l| value <= l) {
            -1
        } else {
            0
        }
    }

    /// The level of `value` when the alarm was at `previous`: a level is entered at its
    /// limit and left only `deadband` back past it (so noise on a limit raises one alarm).
    pub fn level(&self, previous: Option<LimitLevel>, value: f64) -> Option<LimitLevel> {
        let before = LimitLevel::rank(previous);
        let raw = self.raw_level(value);
        let rank = if before > 0 && raw >= 0 && raw < before {
            // Back toward normal from a high level: held while within the deadband.
            self.raw_level(value + self.deadband).clamp(raw, before)
        } else if before < 0 && raw <= 0 && raw > before {
            self.raw_level(value - self.deadband).clamp(before, raw)
        } else {
            raw
        };
        LimitLevel::of_rank(rank)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AlarmLimits {
        AlarmLimits::high(230.0, 240.0).low(20.0, 10.0)
    }

    #[test]
    fn levels_are_entered_at_their_limit_and_left_past_the_deadband() {
        let l = limits();
        assert_eq!(l.level(None, 225.0), None);
        assert_eq!(l.level(None, 230.0), Some(LimitLevel::High));
        assert_eq!(
            l.level(Some(LimitLevel::High), 241.0),
            Some(LimitLevel::HighHigh)
        );
        // Within the deadband of HighHigh: still HighHigh.
        assert_eq!(
            l.level(Some(LimitLevel::HighHigh), 239.5),
            Some(LimitLevel::HighHigh)
        );
        assert_eq!(
            l.level(Some(LimitLevel::HighHigh), 238.5),
            Some(LimitLevel::High)
        );
        assert_eq!(
            l.level(Some(LimitLevel::High), 229.5),
            Some(LimitLevel::High)
        );
        assert_eq!(l.level(Some(LimitLevel::High), 228.0), None);
        // Straight from HighHigh to normal.
        assert_eq!(l.level(Some(LimitLevel::HighHigh), 100.0), None);
        // Lows, and from one side to the other.
        assert_eq!(l.level(None, 15.0), Some(LimitLevel::Low));
        assert_eq!(l.level(Some(LimitLevel::Low), 20.5), Some(LimitLevel::Low));
        assert_eq!(l.level(Some(LimitLevel::Low), 21.5), None);
        assert_eq!(
            l.level(Some(LimitLevel::LowLow), 250.0),
            Some(LimitLevel::HighHigh)
        );
        assert_eq!(
            l.level(Some(LimitLevel::High), 5.0),
            Some(LimitLevel::LowLow)
        );
    }

    #[test]
    fn check_names_the_key_of_a_bad_limit() {
        assert!(limits().check("tags[0].alarm").is_ok());
        let bad = AlarmLimits::high(240.0, 230.0);
        let issue = bad.check("tags[0].alarm").unwrap_err();
        assert_eq!(issue.key, "tags[0].alarm.high_high");
        assert!(
            issue.reason.contains("high_high >= high > low >= low_low"),
            "{}",
            issue.reason
        );
        let equal = AlarmLimits::high(20.0, 30.0).low(20.0, 10.0);
        assert_eq!(equal.check("a").unwrap_err().key, "a.high");
        let negative = limits().deadband(-1.0);
        assert_eq!(negative.check("a").unwrap_err().key, "a.deadband");
        let none = AlarmLimits {
            high_high: None,
            high: None,
            ..limits()
        }
        .low(f64::NAN, 1.0);
        assert_eq!(none.check("a").unwrap_err().key, "a.low");
    }
}
