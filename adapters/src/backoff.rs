//! Reconnection delays: exponential, capped, with jitter so that devices that failed together
//! do not all come back at the same instant.

use std::time::Duration;

use rand::{rngs::SmallRng, Rng, SeedableRng};

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    rng: SmallRng,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
            rng: SmallRng::from_os_rng(),
        }
    }

    /// The delay before the next attempt: between half and all of the current step, which then
    /// doubles up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = step / 2;
        half + step.saturating_sub(half).mul_f64(self.rng.random::<f64>())
    }

    /// After a success: the next failure starts from the initial delay again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

impl Default for Backoff {
    /// 0.5 s doubling up to 30 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_up_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let steps = [100, 200, 400, 800, 800, 800];
        for step in steps {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(step / 2),
                "{d:?} < half of {step} ms"
            );
            assert!(d <= Duration::from_millis(step), "{d:?} > {step} ms");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
