//! Small numeric helpers that make simulated signals look like real ones.

use rand::Rng;

/// A standard normal draw (Box-Muller), enough for sensor noise without another dependency.
pub fn normal(rng: &mut (impl Rng + ?Sized)) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// One step of a first-order lag towards `target` with time constant `tau_s`: how a heater, a
/// spindle or a motor really approaches its setpoint.
pub fn approach(current: f64, target: f64, tau_s: f64, dt_s: f64) -> f64 {
    current + (target - current) * (1.0 - (-dt_s / tau_s).exp())
}

/// An exponential draw with the given mean: time to the next random arrival.
pub fn exponential(rng: &mut impl Rng, mean: f64) -> f64 {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    -mean * u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn normal_draws_have_zero_mean_and_unit_spread() {
        let mut rng = StdRng::seed_from_u64(7);
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }

    #[test]
    fn approach_converges_without_overshoot() {
        let mut t = 20.0;
        for _ in 0..1000 {
            t = approach(t, 215.0, 20.0, 1.0);
            assert!(t <= 215.0);
        }
        assert!((t - 215.0).abs() < 1e-6);
    }
}
