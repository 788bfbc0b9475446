//! The indicators as pure functions of the recorded history: the same history gives the same
//! figures, bit for bit, before and after a restart (and in the integration test's own
//! recomputation). Times are integer microseconds since the Unix epoch; sums are exact
//! integers and each ratio is one floating-point division, so the order of the arithmetic is
//! part of the definition (the README, "Orders history and production indicators").

use serde::Serialize;

use super::history::{LineState, OrderRecord, OrderState};
use fabrique_adapters::line::STEP_COUNT;

const MICROS_PER_SECOND: f64 = 1e6;
const MICROS_PER_HOUR: f64 = 3.6e9;

/// Average and 90th percentile of a set of durations, in seconds (0 when the set is empty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spread {
    pub count: u64,
    pub avg_s: f64,
    pub p90_s: f64,
}

impl Spread {
    pub fn of(mut durations_us: Vec<i64>) -> Spread {
        if durations_us.is_empty() {
            return Spread::default();
        }
        durations_us.sort_unstable();
        let count = durations_us.len() as u64;
        let sum: i64 = durations_us.iter().sum();
        Spread {
            count,
            avg_s: sum as f64 / count as f64 / MICROS_PER_SECOND,
            p90_s: nearest_rank_p90(&durations_us) as f64 / MICROS_PER_SECOND,
        }
    }
}

/// The 90th percentile by the nearest-rank method: the value at rank ⌈0.9·n⌉ (1-based) of the
/// sorted values; an actual observation, never interpolated. `sorted` must not be empty.
pub fn nearest_rank_p90(sorted: &[i64]) -> i64 {
    let n = sorted.len();
    let rank = (9 * n).div_ceil(10).max(1);
    sorted[rank - 1]
}

/// The figures of one scope (all orders, the current stop, today).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub parts_delivered: u64,
    pub parts_scrapped: u64,
    /// Parts with a metrology verdict.
    pub parts_checked: u64,
    pub parts_good: u64,
    pub throughput_per_hour: f64,
    pub lead_time: Spread,
    /// Per step, index 0 = step 1.
    pub cycle_time: [Spread; STEP_COUNT],
    pub scrap_rate_pct: f64,
    pub planned_time_s: f64,
    pub running_time_s: f64,
    pub availability_pct: f64,
    pub performance_pct: f64,
    pub quality_pct: f64,
    pub oee_pct: f64,
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

/// Figures over the finished (delivered or scrapped) orders among `orders`.
///
/// `ideal_cycle_us` is the ideal time between two parts at the bottleneck, in the same clock
/// as the recorded timestamps.
pub fn compute<'a>(
    orders: impl IntoIterator<Item = &'a OrderRecord>,
    line_states: &[LineState],
    ideal_cycle_us: f64,
) -> Figures {
    let mut figures = Figures::default();
    let mut lead = Vec::new();
    let mut cycles: [Vec<i64>; STEP_COUNT] = Default::default();
    let mut window: Option<(i64, i64)> = None;
    for order in orders {
        let (Some(submitted), Some(completed)) = (order.submitted_at, order.completed_at) else {
            continue;
        };
        match order.state {
            OrderState::Delivered => {
                figures.parts_delivered += 1;
                lead.push(completed - submitted);
            }
            OrderState::Scrapped => figures.parts_scrapped += 1,
            OrderState::InProgress | OrderState::Lost => continue,
        }
        if let Some(ok) = order.verdict {
            figures.parts_checked += 1;
            figures.parts_good += u64::from(ok);
        }
        for (k, visit) in order.steps.iter().enumerate() {
            if let Some((entered, Some(left))) = visit {
                cycles[k].push(left - entered);
            }
        }
        window = Some(match window {
            None => (submitted, completed),
            Some((start, end)) => (start.min(submitted), end.max(completed)),
        });
    }
    figures.lead_time = Spread::of(lead);
    for (k, durations) in cycles.into_iter().enumerate() {
        figures.cycle_time[k] = Spread::of(durations);
    }
    let Some((start, end)) = window else {
        return figures;
    };
    let planned_us = end - start;
    let running_us = running_time(line_states, start, end);
    let parts = figures.parts_delivered + figures.parts_scrapped;
    let availability = ratio(running_us as f64, planned_us as f64);
    let performance = ratio(ideal_cycle_us * parts as f64, running_us as f64);
    let quality = ratio(figures.parts_good as f64, figures.parts_checked as f64);
    figures.planned_time_s = planned_us as f64 / MICROS_PER_SECOND;
    figures.running_time_s = running_us as f64 / MICROS_PER_SECOND;
    figures.throughput_per_hour = ratio(
        figures.parts_delivered as f64 * MICROS_PER_HOUR,
        planned_us as f64,
    );
    figures.scrap_rate_pct = 100.0
        * ratio(
            (figures.parts_checked - figures.parts_good) as f64,
            figures.parts_checked as f64,
        );
    figures.availability_pct = 100.0 * availability;
    figures.performance_pct = 100.0 * performance;
    figures.quality_pct = 100.0 * quality;
    figures.oee_pct = 100.0 * (availability * performance * quality);
    figures
}

/// How long the line was `Running` within `[start, end]`, from its recorded state changes
/// (sorted by time). Before the first recorded change the state is unknown and not counted.
pub fn running_time(states: &[LineState], start: i64, end: i64) -> i64 {
    let mut total = 0;
    for (i, state) in states.iter().enumerate() {
        if !state.running {
            continue;
        }
        let until = states.get(i + 1).map_or(end, |next| next.at);
        let from = state.at.max(start);
        let to = until.min(end);
        if to > from {
            total += to - from;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(
        state: OrderState,
        submitted: i64,
        completed: i64,
        verdict: Option<bool>,
    ) -> OrderRecord {
        let mut o = OrderRecord::new(0, "ORD-1".into(), "Lens".into());
        o.state = state;
        o.submitted_at = Some(submitted);
        o.completed_at = Some(completed);
        o.verdict = verdict;
        o
    }

    #[test]
    fn p90_is_the_nearest_rank() {
        assert_eq!(nearest_rank_p90(&[7]), 7);
        // n = 10: rank 9.
        let ten: Vec<i64> = (1..=10).collect();
        assert_eq!(nearest_rank_p90(&ten), 9);
        // n = 11: ⌈9.9⌉ = 10.
        let eleven: Vec<i64> = (1..=11).collect();
        assert_eq!(nearest_rank_p90(&eleven), 10);
        // n = 2: ⌈1.8⌉ = 2.
        assert_eq!(nearest_rank_p90(&[1, 5]), 5);
    }

    #[test]
    fn spread_averages_exactly_and_sorts_before_ranking() {
        let s = Spread::of(vec![3_000_000, 1_000_000, 2_000_000]);
        assert_eq!(s.count, 3);
        assert_eq!(s.avg_s, 2.0);
        assert_eq!(s.p90_s, 3.0);
        assert_eq!(Spread::of(Vec::new()), Spread::default());
    }

    #[test]
    fn running_time_counts_only_running_intervals_inside_the_window() {
        let states = [
            LineState {
                at: 0,
                running: true,
            },
            LineState {
                at: 10,
                running: false,
            },
            LineState {
                at: 20,
                running: true,
            },
        ];
        assert_eq!(running_time(&states, 5, 30), 5 + 10);
        assert_eq!(running_time(&states, 12, 18), 0);
        assert_eq!(running_time(&[], 0, 100), 0);
    }

    #[test]
    fn oee_is_availability_times_performance_times_quality() {
        let s = 1_000_000;
        let orders = [
            order(OrderState::Delivered, 0, 100 * s, Some(true)),
            order(OrderState::Delivered, 10 * s, 150 * s, Some(true)),
            order(OrderState::Delivered, 20 * s, 190 * s, Some(true)),
            order(OrderState::Scrapped, 30 * s, 200 * s, Some(false)),
            order(OrderState::InProgress, 40 * s, 300 * s, None),
        ];
        // Running from 0, stopped for 40 s out of the 200 s window.
        let states = [
            LineState {
                at: 0,
                running: true,
            },
            LineState {
                at: 50 * s,
                running: false,
            },
            LineState {
                at: 90 * s,
                running: true,
            },
        ];
        let f = compute(&orders, &states, 20.0 * s as f64);
        assert_eq!((f.parts_delivered, f.parts_scrapped), (3, 1));
        assert_eq!((f.parts_checked, f.parts_good), (4, 3));
        assert_eq!(f.planned_time_s, 200.0);
        assert_eq!(f.running_time_s, 160.0);
        assert_eq!(f.availability_pct, 80.0);
        assert_eq!(f.performance_pct, 50.0); // 20 s × 4 parts / 160 s
        assert_eq!(f.quality_pct, 75.0);
        assert!((f.oee_pct - 30.0).abs() < 1e-9);
        assert_eq!(f.scrap_rate_pct, 25.0);
        assert_eq!(f.throughput_per_hour, 3.0 * 3600.0 / 200.0);
        assert_eq!(f.lead_time.count, 3);
        assert_eq!(f.lead_time.avg_s, (100.0 + 140.0 + 170.0) / 3.0);
        assert_eq!(f.lead_time.p90_s, 170.0);
    }

    #[test]
    fn no_finished_order_gives_zeros_not_nan() {
        let f = compute(&[], &[], 1.0);
        assert_eq!(f, Figures::default());
        assert!(!f.oee_pct.is_nan());
    }
}
