//! Synthetic load: N tags that all change R times a second, for benchmarks.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::adapter::{Adapter, AdapterContext, DeviceStatus, TagRegistrar};
use crate::device::device_path;
use crate::point::{Timestamp, Value};
use crate::tag::{CatalogError, DataType, TagId, TagSpec};

/// `[simulation.synthetic]`: extra tags under `Stations/<station>/<device>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    /// Number of tags (0: no synthetic load).
    pub tags: u32,
    /// Changes per tag per second.
    pub rate_hz: f64,
    pub station: String,
    pub device: String,
    /// Extra tags `A000000…` with alarm limits (high 1, high_high 2), all in alarm from the
    /// start: a load of active limit alarms for benchmarks (0: none).
    pub alarm_tags: u32,
    /// Alarm state changes a second among them: that many tags a second move between High
    /// and HighHigh, in turn.
    pub alarm_changes_hz: f64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            tags: 0,
            rate_hz: 10.0,
            station: "Synthetic".into(),
            device: "Load".into(),
            alarm_tags: 0,
            alarm_changes_hz: 0.0,
        }
    }
}

impl SyntheticConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.tags > 1_000_000 {
            return Err((
                "simulation.synthetic.tags",
                format!("at most 1000000, got {}", self.tags),
            ));
        }
        if !(self.rate_hz.is_finite() && self.rate_hz > 0.0 && self.rate_hz <= 1000.0) {
            return Err((
                "simulation.synthetic.rate_hz",
                format!("must be in (0, 1000], got {}", self.rate_hz),
            ));
        }
        if self.alarm_tags > 100_000 {
            return Err((
                "simulation.synthetic.alarm_tags",
                format!("at most 100000, got {}", self.alarm_tags),
            ));
        }
        if !(self.alarm_changes_hz.is_finite()
            && self.alarm_changes_hz >= 0.0
            && self.alarm_changes_hz <= 100_000.0)
        {
            return Err((
                "simulation.synthetic.alarm_changes_hz",
                format!("must be in [0, 100000], got {}", self.alarm_changes_hz),
            ));
        }
        Ok(())
    }

    /// Browse-path name of synthetic tag `i`: `T000042`.
    pub fn tag_name(i: u32) -> String {
        format!("T{i:06}")
    }
}

/// The value of a synthetic alarm tag: High (1.5) or HighHigh (2.5) for limits 1 and 2.
/// The limits of the alarm tags. The values (`alarm_value`: 1.5 in High, 2.5 in HighHigh)
/// leave each level by more than the deadband: with the default deadband (1.0) an alarm back
/// at 1.5 from HighHigh stayed HighHigh, so each alarm changed once and then never again.
fn alarm_limits() -> crate::limits::AlarmLimits {
    crate::limits::AlarmLimits::high(1.0, 2.0)
        .deadband(0.25)
        .message("Synthetic alarm")
}

fn alarm_value(high_high: bool) -> Value {
    Value::Float(if high_high { 2.5 } else { 1.5 })
}

pub struct SyntheticLoad {
    config: SyntheticConfig,
    tags: Vec<TagId>,
    /// The alarm tags, and whether each is at HighHigh now.
    alarm_tags: Vec<(TagId, bool)>,
    status: Option<DeviceStatus>,
}

impl SyntheticLoad {
    pub fn new(config: SyntheticConfig) -> Self {
        SyntheticLoad {
            config,
            tags: Vec::new(),
            alarm_tags: Vec::new(),
            status: None,
        }
    }
}

#[async_trait]
impl Adapter for SyntheticLoad {
    fn name(&self) -> &str {
        "synthetic-load"
    }

    fn declare_tags(&mut self, tags: &mut TagRegistrar<'_>) -> Result<(), CatalogError> {
        let path = device_path(&self.config.station, &self.config.device);
        self.status = Some(DeviceStatus::declare(tags, &path)?);
        self.tags = (0..self.config.tags)
            .map(|i| {
                tags.register(TagSpec::new(
                    format!("{path}/{}", SyntheticConfig::tag_name(i)),
                    DataType::Float64,
                ))
            })
            .collect::<Result<_, _>>()?;
        let limits = alarm_limits();
        self.alarm_tags = (0..self.config.alarm_tags)
            .map(|i| {
                let spec = TagSpec::new(format!("{path}/A{i:06}"), DataType::Float64)
                    .alarm(limits.clone());
                tags.register(spec).map(|tag| (tag, false))
            })
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    async fn run(mut self: Box<Self>, mut ctx: AdapterContext) {
        let period = Duration::from_secs_f64(1.0 / self.config.rate_hz);
        // The alarm tags: all High at once, then `alarm_changes_hz` of them a second change
        // level, in turn, in batches every 10 ms.
        let now = Timestamp::now();
        for &(tag, high_high) in &self.alarm_tags {
            ctx.publisher.set(tag, alarm_value(high_high), now);
        }
        ctx.publisher.flush();
        let alarm_step = Duration::from_millis(10);
        let mut alarm_interval = tokio::time::interval(alarm_step);
        alarm_interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Owed changes grow with the time elapsed, not the ticks: a late tick catches up.
        let mut last_alarm_tick = std::time::Instant::now();
        let mut owed = 0.0;
        let mut next_alarm = 0;
        let alarms_move = !self.alarm_tags.is_empty() && self.config.alarm_changes_hz > 0.0;
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let scale = 1.0 / f64::from(self.config.tags.max(1));
        if let Some(status) = &self.status {
            status.healthy(&mut ctx.publisher, Timestamp::now());
        }
        let mut round: u64 = 0;
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                // Synthetic tags are read-only; answer rather than leave the client waiting.
                Some(command) = ctx.commands.recv() => command.refuse(),
                _ = interval.tick() => {
                    round += 1;
                    let now = Timestamp::now();
                    // Every tag changes every round; the value encodes round and tag, so a
                    // consumer can check it saw every change.
                    for (i, &tag) in self.tags.iter().enumerate() {
                        ctx.publisher.set(tag, Value::Float(round as f64 + i as f64 * scale), now);
                    }
                    ctx.publisher.flush();
                }
                _ = alarm_interval.tick(), if alarms_move => {
                    let elapsed = last_alarm_tick.elapsed();
                    last_alarm_tick += elapsed;
                    owed += self.config.alarm_changes_hz * elapsed.as_secs_f64();
                    let now = Timestamp::now();
                    while owed >= 1.0 {
                        owed -= 1.0;
                        let (tag, high_high) = &mut self.alarm_tags[next_alarm];
                        *high_high = !*high_high;
                        ctx.publisher.set(*tag, alarm_value(*high_high), now);
                        next_alarm = (next_alarm + 1) % self.alarm_tags.len();
                    }
                    ctx.publisher.flush();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::LimitLevel;

    fn level(previous: Option<LimitLevel>, high_high: bool) -> Option<LimitLevel> {
        let Value::Float(v) = alarm_value(high_high) else {
            unreachable!("alarm values are floats")
        };
        alarm_limits().level(previous, v)
    }

    #[test]
    fn alarm_tags_move_between_high_and_high_high_every_time() {
        assert_eq!(level(None, false), Some(LimitLevel::High));
        let mut at = Some(LimitLevel::High);
        for round in 0..4 {
            let up = level(at, true);
            assert_eq!(up, Some(LimitLevel::HighHigh), "round {round}");
            at = level(up, false);
            assert_eq!(at, Some(LimitLevel::High), "round {round}");
        }
    }
}
