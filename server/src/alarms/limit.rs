//! Limit alarms (`ExclusiveLimitAlarmType`, Part 9, 5.8.19): one condition per tag with
//! `alarm = { ... }` limits, evaluated on the point bus (tag values), not on address-space
//! nodes. The limits come from the tag's spec in the bus catalogue, so a reload that changes
//! a tag's limits (a new catalogue) is picked up at the next change of the catalogue.

use std::sync::Arc;

use fabrique_adapters::bus::BusEvent;
use fabrique_adapters::tag::{TagCatalog, TagId};
use fabrique_adapters::{PointBus, Timestamp};
use tokio_util::sync::CancellationToken;

use super::{AlarmLimits, Alarms, ConditionKind, LimitLevel, Observed, LIMIT};

/// The tags that have limits, by `TagId`, from one catalogue.
#[derive(Default)]
struct Limited {
    /// The catalogue these were read from (rebuilt when the bus has another one).
    from: Option<Arc<TagCatalog>>,
    /// Boxed: few tags have limits, and a table of 128-byte slots was 13 MB at 100,000 tags.
    by_tag: Vec<Option<Box<(String, AlarmLimits)>>>,
}

impl Limited {
    /// Read the limits from `catalog` if it is not the one they came from. Returns whether
    /// they were read again (a reload changed the catalogue).
    fn refresh(&mut self, catalog: Arc<TagCatalog>) -> bool {
        if self.from.as_ref().is_some_and(|c| Arc::ptr_eq(c, &catalog)) {
            return false;
        }
        self.by_tag = vec![None; catalog.len()];
        for (id, entry) in catalog.iter() {
            if let Some(limits) = &entry.spec.alarm {
                self.by_tag[id.index()] =
                    Some(Box::new((entry.spec.path.clone(), (**limits).clone())));
            }
        }
        self.from = Some(catalog);
        true
    }

    fn get(&self, tag: TagId) -> Option<&(String, AlarmLimits)> {
        self.by_tag.get(tag.index())?.as_deref()
    }
}

/// The message of a limit alarm in `level` (or back to normal) at `value`.
fn message(path: &str, limits: &AlarmLimits, level: Option<LimitLevel>, value: f64) -> String {
    let what = limits.message.as_deref().unwrap_or(path);
    match level {
        Some(level) => format!("{what}: {} ({value})", level.name()),
        None => format!("{what}: back to normal ({value})"),
    }
}

/// Evaluate one value of a limited tag: the alarm's new state when its level changed.
pub fn evaluate(
    alarms: &Alarms,
    path: &str,
    limits: &AlarmLimits,
    value: f64,
    time: Timestamp,
) -> Option<super::ConditionState> {
    let previous = alarms.limit_level(path);
    let level = limits.level(previous, value);
    // `observe` says nothing when neither the level nor the limits changed.
    alarms.observe(
        path,
        LIMIT,
        Observed {
            active: level.is_some(),
            kind: ConditionKind::ExclusiveLimit {
                level,
                limits: limits.clone(),
            },
            severity: limits.severity,
            message: message(path, limits, level, value),
        },
        time,
    )
}

/// Follows the bus and raises, moves and clears the limit alarms.
pub struct LimitWatch {
    pub bus: PointBus,
    pub alarms: Arc<Alarms>,
}

impl LimitWatch {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut changes = self.bus.subscribe();
        let mut limited = Limited::default();
        // Values present at start count: a nozzle already too hot is an alarm.
        self.check(&mut limited, &self.bus.snapshot());
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                event = changes.recv() => event,
            };
            match event {
                Some(BusEvent::Changes(batch)) => self.check(&mut limited, &batch),
                Some(BusEvent::Resync { state, .. }) => self.check(&mut limited, &state),
                None => break,
            }
        }
    }

    fn check(&self, limited: &mut Limited, updates: &[fabrique_adapters::PointUpdate]) {
        if limited.refresh(self.bus.catalog()) {
            // New limits (a reload) apply to the values the tags hold now, not only to the
            // next change: the bus drops a value that did not change.
            let current: Vec<_> = (0..limited.by_tag.len())
                .filter(|&i| limited.by_tag[i].is_some())
                .map(|i| {
                    let tag = TagId(i as u32);
                    fabrique_adapters::PointUpdate {
                        tag,
                        point: self.bus.latest(tag),
                    }
                })
                .collect();
            self.evaluate_all(limited, &current);
        }
        self.evaluate_all(limited, updates);
    }

    fn evaluate_all(&self, limited: &Limited, updates: &[fabrique_adapters::PointUpdate]) {
        for update in updates {
            let Some((path, limits)) = limited.get(update.tag) else {
                continue;
            };
            // A value of bad quality says nothing of the process: the alarm stays as it is.
            if !update.point.quality.is_good() {
                continue;
            }
            let Some(value) = update.point.value.as_ref().and_then(|v| v.as_f64()) else {
                continue;
            };
            if !value.is_finite() {
                continue;
            }
            evaluate(&self.alarms, path, limits, value, update.point.timestamp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(n: i64) -> Timestamp {
        Timestamp::from_nanos(n)
    }

    #[test]
    fn a_limit_alarm_goes_high_then_high_high_then_back() {
        let alarms = Alarms::default();
        let mut seen = alarms.subscribe();
        let limits = AlarmLimits::high(230.0, 240.0).message("Nozzle overheating");
        let tag = "Stations/Printing/Printer3D/NozzleTemperature";
        assert!(evaluate(&alarms, tag, &limits, 215.0, at(1)).is_none());
        let high = evaluate(&alarms, tag, &limits, 231.0, at(2)).expect("high");
        assert!(high.active && !high.acked);
        assert_eq!(high.message, "Nozzle overheating: High (231)");
        assert!(matches!(
            high.kind,
            ConditionKind::ExclusiveLimit {
                level: Some(LimitLevel::High),
                ..
            }
        ));
        // Noise on the limit: no news.
        assert!(evaluate(&alarms, tag, &limits, 229.5, at(3)).is_none());
        let acked = alarms
            .acknowledge(tag, LIMIT, &high.event_id, "", at(4))
            .expect("acked");
        let higher = evaluate(&alarms, tag, &limits, 241.0, at(5)).expect("high high");
        // A new level asks for a new acknowledgement.
        assert!(higher.active && !higher.acked);
        assert_ne!(higher.event_id, acked.event_id);
        let normal = evaluate(&alarms, tag, &limits, 200.0, at(6)).expect("normal");
        assert!(!normal.active);
        assert!(normal.retain());
        assert!(matches!(
            normal.kind,
            ConditionKind::ExclusiveLimit { level: None, .. }
        ));
        // Every change went through the broadcast, in order.
        let mut levels = Vec::new();
        while let Ok(state) = seen.try_recv() {
            levels.push((state.active, state.acked));
        }
        assert_eq!(
            levels,
            [(true, false), (true, true), (true, false), (false, false)]
        );
    }
}
