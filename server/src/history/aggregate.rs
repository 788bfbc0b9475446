//! Aggregates over raw samples (OPC UA Part 13), as pure functions of sorted points.
//!
//! Only Good numeric samples take part. Each interval is `[start, start + interval)`.
//! - Count: the number of such samples; Average: their mean; Minimum, Maximum: theirs.
//! - Interpolative: the value at the interval start, linear between the samples around it.
//! - TimeAverage: the time-weighted mean, the area under the line through the samples
//!   (trapezoids) with the interval's ends interpolated, divided by the time it covers.
//! - Total: TimeAverage × the covered duration in seconds.
//!
//! An interval without data is `BadNoData`. Results carry the interval start as timestamp.

/// The supported aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Average,
    Minimum,
    Maximum,
    Count,
    Interpolative,
    TimeAverage,
    Total,
}

/// A Good numeric sample: (100 ns ticks, value).
pub type Point = (i64, f64);

/// The value at `t`: the sample there, or linear between the samples around it.
/// `None` when there is no sample on both sides (and none exactly at `t`).
pub fn interpolate(points: &[Point], t: i64) -> Option<f64> {
    let i = points.partition_point(|p| p.0 <= t);
    let prev = i.checked_sub(1).map(|j| points[j]);
    match (prev, points.get(i)) {
        (Some((pt, pv)), _) if pt == t => Some(pv),
        (Some((pt, pv)), Some(&(nt, nv))) => {
            let f = (t - pt) as f64 / (nt - pt) as f64;
            Some(pv + (nv - pv) * f)
        }
        _ => None,
    }
}

/// The aggregate over `[start, end)`; `None` when the interval has no data.
/// `points` must be sorted and may extend beyond the interval (bounds for interpolation).
pub fn compute(aggregate: Aggregate, points: &[Point], start: i64, end: i64) -> Option<f64> {
    let lo = points.partition_point(|p| p.0 < start);
    let hi = points.partition_point(|p| p.0 < end);
    let inside = &points[lo..hi];
    match aggregate {
        Aggregate::Count => Some(inside.len() as f64),
        Aggregate::Average => (!inside.is_empty())
            .then(|| inside.iter().map(|p| p.1).sum::<f64>() / inside.len() as f64),
        Aggregate::Minimum => inside.iter().map(|p| p.1).reduce(f64::min),
        Aggregate::Maximum => inside.iter().map(|p| p.1).reduce(f64::max),
        Aggregate::Interpolative => interpolate(points, start),
        Aggregate::TimeAverage | Aggregate::Total => {
            let (area, covered) = integrate(points, inside, start, end)?;
            Some(if aggregate == Aggregate::Total {
                area / 1e7
            } else {
                area / covered as f64
            })
        }
    }
}

/// Area (value × ticks) under the line through the samples, over the part of `[start, end)`
/// the data covers, and that covered duration in ticks.
fn integrate(points: &[Point], inside: &[Point], start: i64, end: i64) -> Option<(f64, i64)> {
    let mut line: Vec<Point> = Vec::with_capacity(inside.len() + 2);
    if let Some(v) = interpolate(points, start) {
        line.push((start, v));
    }
    // A sample exactly at the start is the start bound already.
    let have_start = !line.is_empty();
    line.extend(inside.iter().filter(|p| p.0 > start || !have_start));
    if let Some(v) = interpolate(points, end) {
        line.push((end, v));
    }
    if line.len() < 2 {
        // A single sample and nothing around it: its value over no time.
        return None;
    }
    let area = line
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) as f64 * (w[0].1 + w[1].1) / 2.0)
        .sum();
    let covered = line[line.len() - 1].0 - line[0].0;
    (covered > 0).then_some((area, covered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ramp_averages_as_expected() {
        // value = t, one sample per tick from 0 to 100
        let pts: Vec<Point> = (0..=100).map(|t| (t, t as f64)).collect();
        assert_eq!(compute(Aggregate::Count, &pts, 0, 10), Some(10.0));
        assert_eq!(compute(Aggregate::Average, &pts, 0, 10), Some(4.5));
        assert_eq!(compute(Aggregate::Minimum, &pts, 10, 20), Some(10.0));
        assert_eq!(compute(Aggregate::Maximum, &pts, 10, 20), Some(19.0));
        assert_eq!(compute(Aggregate::Interpolative, &pts, 10, 20), Some(10.0));
        assert_eq!(compute(Aggregate::TimeAverage, &pts, 0, 10), Some(5.0));
        assert_eq!(compute(Aggregate::Total, &pts, 0, 10), Some(50.0 / 1e7));
    }

    #[test]
    fn sparse_samples_interpolate_and_empty_intervals_have_no_data() {
        let pts = vec![(0, 0.0), (100, 10.0)];
        assert_eq!(interpolate(&pts, 50), Some(5.0));
        assert_eq!(interpolate(&pts, 150), None);
        assert_eq!(compute(Aggregate::Average, &pts, 10, 20), None);
        assert_eq!(compute(Aggregate::TimeAverage, &pts, 10, 20), Some(1.5));
        // One second at a constant 2.0 totals 2.0.
        let flat = vec![(0, 2.0), (20_000_000, 2.0)];
        assert_eq!(compute(Aggregate::Total, &flat, 0, 10_000_000), Some(2.0));
    }
}
