//! The metrology NOK alarm: an `OffNormalAlarmType` condition on the line (`Line/Alarms/
//! Metrology`), raised when a part is scrapped at metrology and back to normal when the next
//! part is delivered (it passed metrology). Choice: the next good part ends it, not the
//! acknowledgement, so the alarm list shows a quality problem until production proves it
//! gone; the operator still acknowledges and confirms it like any other alarm.

use fabrique_adapters::Timestamp;

use super::{Alarms, ConditionKind, ConditionState, Observed, METROLOGY};

/// Severity of a scrapped part (as its `PartScrappedEventType`).
const SEVERITY: u16 = 600;
/// The source of the condition: the line object.
pub const SOURCE: &str = "Line";

impl Alarms {
    /// A part was scrapped at metrology (`scrapped`), or one was delivered.
    pub fn part_verdict(
        &self,
        order_id: &str,
        verdict: &str,
        scrapped: bool,
        time: Timestamp,
    ) -> Option<ConditionState> {
        let message = if scrapped {
            format!("Order {order_id} scrapped at metrology: {verdict}")
        } else {
            format!("Order {order_id} delivered: metrology OK again")
        };
        self.observe(
            SOURCE,
            METROLOGY,
            Observed {
                active: scrapped,
                kind: ConditionKind::OffNormal,
                severity: SEVERITY,
                message,
            },
            time,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrapped_part_raises_the_alarm_until_the_next_good_part() {
        let alarms = Alarms::default();
        let t = Timestamp::from_nanos;
        // A delivery with no scrap before it is no news.
        assert!(alarms.part_verdict("A-1", "", false, t(1)).is_none());
        let nok = alarms
            .part_verdict("A-2", "width 41.2 mm out of tolerance", true, t(2))
            .expect("raised");
        assert!(nok.active && !nok.acked && nok.retain());
        assert_eq!(nok.source, "Line");
        assert_eq!(nok.severity, 600);
        assert!(nok.message.contains("A-2 scrapped"), "{}", nok.message);
        // A second scrap while active: still the same alarm.
        assert!(alarms.part_verdict("A-3", "NOK", true, t(3)).is_none());
        let ok = alarms
            .part_verdict("A-4", "", false, t(4))
            .expect("cleared");
        assert!(!ok.active && ok.retain());
    }
}
