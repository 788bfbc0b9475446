//! Pacing of the listener's `accept()` when the process runs out of resources.
//!
//! When every file descriptor is in use (`EMFILE`, `ENFILE`) or the kernel is short of memory
//! (`ENOBUFS`, `ENOMEM`), the pending connection stays in the backlog and `accept()` fails again
//! at once: retrying without a pause spins a core and, with one log line per failure, floods
//! the log. This waits before the next `accept()` (10 ms, doubling up to 1 s, back to no wait
//! after a success) and logs a repeated failure once per interval, with a count.

use std::io;
use std::time::Duration;

use tokio::time::Instant;
use tracing::error;

/// First pause after a resource-exhaustion failure.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// Longest pause: a freed descriptor is used within this time.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// A failure that repeats is logged at most once per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Whether `error` means the process or the system is out of a resource, so that retrying
/// `accept()` at once would fail the same way.
pub(crate) fn is_resource_exhaustion(error: &io::Error) -> bool {
    if error.kind() == io::ErrorKind::OutOfMemory {
        return true;
    }
    let Some(code) = error.raw_os_error() else {
        return false;
    };
    #[cfg(unix)]
    {
        matches!(
            code,
            libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
        )
    }
    #[cfg(windows)]
    {
        // WSAEMFILE, WSAENOBUFS
        matches!(code, 10024 | 10055)
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = code;
        false
    }
}

/// State of the accept loop's pacing and of its error log.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    /// Pause before the next `accept()`, when the last one failed for lack of resources.
    pause: Option<Duration>,
    resume_at: Option<Instant>,
    /// When the last failure was logged, and the failures since then that were not.
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptBackoff {
    /// When the next `accept()` may run (`None`: now).
    pub(crate) fn resume_at(&self) -> Option<Instant> {
        self.resume_at
    }

    /// A connection was accepted: no more pause. The log keeps its interval: with descriptors
    /// freed one by one, accepts succeed and fail in turn, and each turn must not log again.
    pub(crate) fn on_success(&mut self) {
        self.pause = None;
        self.resume_at = None;
    }

    /// `accept()` failed at `now`; returns the pause before the next attempt, if any.
    pub(crate) fn on_error(&mut self, error: &io::Error, now: Instant) -> Option<Duration> {
        let pause = if is_resource_exhaustion(error) {
            let pause = match self.pause {
                None => FIRST_PAUSE,
                Some(p) => (p * 2).min(MAX_PAUSE),
            };
            self.pause = Some(pause);
            self.resume_at = Some(now + pause);
            Some(pause)
        } else {
            self.resume_at = None;
            None
        };
        let due = self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= LOG_INTERVAL);
        if due {
            let pause_ms = pause.map_or(0, |p| p.as_millis());
            if self.unlogged > 0 {
                error!(
                    "Failed to accept client connection: {error} ({} more failures in the last {} s, not logged); next attempt in {pause_ms} ms",
                    self.unlogged,
                    LOG_INTERVAL.as_secs()
                );
            } else {
                error!(
                    "Failed to accept client connection: {error}; next attempt in {pause_ms} ms"
                );
            }
            self.last_logged = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> io::Error {
        #[cfg(unix)]
        return io::Error::from_raw_os_error(libc::EMFILE);
        #[cfg(not(unix))]
        return io::Error::from(io::ErrorKind::OutOfMemory);
    }

    #[test]
    fn the_pause_doubles_up_to_a_second_and_resets_on_success() {
        let mut backoff = AcceptBackoff::default();
        let now = Instant::now();
        let pauses: Vec<_> = (0..10)
            .map(|_| backoff.on_error(&emfile(), now).unwrap().as_millis())
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert_eq!(backoff.resume_at(), Some(now + MAX_PAUSE));
        backoff.on_success();
        assert_eq!(backoff.resume_at(), None);
        assert_eq!(
            backoff.on_error(&emfile(), now),
            Some(FIRST_PAUSE),
            "after a success, the pause starts small again"
        );
    }

    #[test]
    fn other_errors_do_not_pause() {
        let mut backoff = AcceptBackoff::default();
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(backoff.on_error(&aborted, Instant::now()), None);
        assert_eq!(backoff.resume_at(), None);
    }

    #[test]
    fn a_repeated_failure_is_logged_once_per_interval() {
        let mut backoff = AcceptBackoff::default();
        let t0 = Instant::now();
        backoff.on_error(&emfile(), t0);
        for i in 1..=100 {
            backoff.on_error(&emfile(), t0 + Duration::from_millis(i));
        }
        assert_eq!(backoff.unlogged, 100);
        // Successes in between do not restart the interval.
        backoff.on_success();
        backoff.on_error(&emfile(), t0 + Duration::from_secs(1));
        assert_eq!(backoff.unlogged, 101);
        backoff.on_error(&emfile(), t0 + LOG_INTERVAL);
        assert_eq!(backoff.unlogged, 0);
        assert_eq!(backoff.last_logged, Some(t0 + LOG_INTERVAL));
    }
}
