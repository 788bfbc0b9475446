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

/// The aggregate of each interval `[from + k·step, min(from + (k+1)·step, to))` that starts
/// before `to`, in order (a processed read's answer).
pub fn per_interval(
    aggregate: Aggregate,
    points: &[Point],
    from: i64,
    to: i64,
    step: i64,
) -> Vec<Option<f64>> {
    if step <= 0 || to <= from {
        return Vec::new();
    }
    let intervals = (to - from + step - 1) / step;
    (0..intervals)
        .map(|k| {
            let lo = from + k * step;
            compute(aggregate, points, lo, (lo + step).min(to))
        })
        .collect()
}

/// Area (value × ticks) under the line through the samples, over the part of `[start, end)`
/// the data covers, and that covered duration in ticks. Walks the line once, without
/// building it (a day at 1-minute intervals is 1,440 of these).
fn integrate(points: &[Point], inside: &[Point], start: i64, end: i64) -> Option<(f64, i64)> {
    let start_bound = interpolate(points, start).map(|v| (start, v));
    // A sample exactly at the start is the start bound already.
    let have_start = start_bound.is_some();
    let line = start_bound
        .into_iter()
        .chain(
            inside
                .iter()
                .copied()
                .filter(|p| p.0 > start || !have_start),
        )
        .chain(interpolate(points, end).map(|v| (end, v)));
    let mut first: Option<i64> = None;
    let mut prev: Option<Point> = None;
    let mut area = 0.0;
    for p in line {
        match prev {
            Some(q) => area += (p.0 - q.0) as f64 * (q.1 + p.1) / 2.0,
            None => first = Some(p.0),
        }
        prev = Some(p);
    }
    // Fewer than two points (a single sample and nothing around it): its value over no time.
    let covered = prev?.0 - first?;
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
        // Intervals of 10 over [0, 25): the last one is cut at 25.
        assert_eq!(
            per_interval(Aggregate::Count, &pts, 0, 25, 10),
            vec![Some(10.0), Some(10.0), Some(5.0)]
        );
        assert_eq!(
            per_interval(Aggregate::TimeAverage, &pts, 0, 25, 10),
            vec![Some(5.0), Some(15.0), Some(22.5)]
        );
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
