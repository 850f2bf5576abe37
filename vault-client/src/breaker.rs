//! The circuit breaker: fail fast while the daemon is down, probe for its recovery.
//!
//! Closed: calls go through; `failure_threshold` consecutive failures of the "unavailable"
//! kind open it. Open: calls fail at once with [`Error::CircuitOpen`](crate::Error) until
//! `cool_down` has passed. Half-open: exactly one call (the probe) goes through; its success
//! closes the breaker, its failure opens it for another cool-down, and the others fail fast
//! meanwhile. An answer of any other kind (NOT_FOUND, PERMISSION_DENIED...) proves the daemon is
//! up and counts as a success.
//!
//! The breaker never substitutes anything for the daemon's answer (no cache, no local
//! tokenization, no queue that would hold a value): while open, the caller gets the error and
//! decides.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::error::Error;

/// Circuit breaker parameters. Start from [`BreakerPolicy::default`] and change fields.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerPolicy {
    /// Consecutive "unavailable" failures that open the breaker. 0 disables the breaker.
    /// Default 5.
    pub failure_threshold: u32,
    /// How long the breaker stays open before letting one probe through. Default 5 s.
    pub cool_down: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cool_down: Duration::from_secs(5),
        }
    }
}

impl BreakerPolicy {
    /// A breaker that never opens.
    pub fn disabled() -> Self {
        Self {
            failure_threshold: 0,
            ..Self::default()
        }
    }
}

/// Where the breaker stands, for health checks and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail fast with `Error::CircuitOpen`.
    Open,
    /// The cool-down has passed: the next call (or the one in flight) probes the daemon.
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// The breaker shared by every clone of a client.
#[derive(Debug)]
pub(crate) struct Breaker {
    policy: BreakerPolicy,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl Breaker {
    pub(crate) fn new(policy: BreakerPolicy, clock: Arc<dyn Clock>) -> Self {
        Self {
            policy,
            clock,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if self.clock.now() < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to send one attempt. `Err(CircuitOpen)` means: do not send it.
    pub(crate) fn acquire(&self) -> Result<Permit<'_>, Error> {
        if self.policy.failure_threshold == 0 {
            return Ok(Permit::new(self, false));
        }
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(Permit::new(self, false)),
            State::Open { until } if self.clock.now() < until => Err(Error::CircuitOpen),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                Ok(Permit::new(self, true))
            }
            State::HalfOpen { probing: true } => Err(Error::CircuitOpen),
        }
    }

    fn record(&self, probe: bool, failed: bool) {
        if self.policy.failure_threshold == 0 {
            return;
        }
        let mut state = self.lock();
        match (&mut *state, probe, failed) {
            (_, true, false) => *state = State::Closed { failures: 0 },
            (_, true, true) => self.open(&mut state),
            (State::Closed { failures }, false, false) => *failures = 0,
            (State::Closed { failures }, false, true) => {
                *failures += 1;
                if *failures >= self.policy.failure_threshold {
                    self.open(&mut state);
                }
            }
            // Calls let through before the breaker opened report late: the probe decides.
            (State::Open { .. } | State::HalfOpen { .. }, false, _) => {}
        }
    }

    fn abandon_probe(&self) {
        let mut state = self.lock();
        if let State::HalfOpen { probing: true } = *state {
            // The probe was cancelled without an answer: let the next call probe.
            *state = State::HalfOpen { probing: false };
        }
    }

    fn open(&self, state: &mut State) {
        *state = State::Open {
            until: self.clock.now() + self.policy.cool_down,
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update writes a whole valid state, so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Permission to send one attempt; report its outcome with [`Permit::record`]. Dropping it
/// unreported (the caller's future was cancelled) frees the probe slot.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    recorded: bool,
}

impl<'a> Permit<'a> {
    fn new(breaker: &'a Breaker, probe: bool) -> Self {
        Self {
            breaker,
            probe,
            recorded: false,
        }
    }

    /// Reports the attempt's outcome. A failure is "the daemon did not answer": UNAVAILABLE,
    /// and for a probe also a deadline (a probe that cannot finish proves nothing).
    pub(crate) fn record(mut self, error: Option<&Error>) {
        self.recorded = true;
        let failed = match error {
            None => false,
            Some(e) => e.is_unavailable() || (self.probe && matches!(e, Error::DeadlineExceeded)),
        };
        self.breaker.record(self.probe, failed);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            self.breaker.abandon_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::manual::ManualClock;

    fn unavailable() -> Error {
        Error::Unavailable {
            message: "connection refused".into(),
        }
    }

    fn breaker(clock: &Arc<ManualClock>) -> Breaker {
        Breaker::new(
            BreakerPolicy {
                failure_threshold: 3,
                cool_down: Duration::from_secs(10),
            },
            clock.clone(),
        )
    }

    fn fail(b: &Breaker, n: usize) {
        for _ in 0..n {
            b.acquire().unwrap().record(Some(&unavailable()));
        }
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let clock = Arc::new(ManualClock::new());
        let b = breaker(&clock);
        fail(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed);
        // A success in between resets the count.
        b.acquire().unwrap().record(None);
        fail(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(matches!(b.acquire(), Err(Error::CircuitOpen)));
    }

    #[test]
    fn answers_other_than_unavailable_count_as_success() {
        let clock = Arc::new(ManualClock::new());
        let b = breaker(&clock);
        for _ in 0..10 {
            b.acquire().unwrap().record(Some(&Error::NotFound {
                message: String::new(),
            }));
            b.acquire().unwrap().record(Some(&Error::DeadlineExceeded));
            b.acquire().unwrap().record(Some(&Error::ResourceExhausted {
                message: String::new(),
            }));
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_lets_one_probe_through_and_closes_on_success() {
        let clock = Arc::new(ManualClock::new());
        let b = breaker(&clock);
        fail(&b, 3);
        clock.advance(Duration::from_secs(9));
        assert!(matches!(b.acquire(), Err(Error::CircuitOpen)));
        clock.advance(Duration::from_secs(1));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probe = b.acquire().unwrap();
        assert!(
            matches!(b.acquire(), Err(Error::CircuitOpen)),
            "one probe at a time"
        );
        probe.record(None);
        assert_eq!(b.state(), BreakerState::Closed);
        b.acquire().unwrap().record(None);
    }

    #[test]
    fn failed_probe_reopens_for_another_cool_down() {
        let clock = Arc::new(ManualClock::new());
        let b = breaker(&clock);
        fail(&b, 3);
        clock.advance(Duration::from_secs(10));
        b.acquire().unwrap().record(Some(&unavailable()));
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance(Duration::from_secs(5));
        assert!(matches!(b.acquire(), Err(Error::CircuitOpen)));
        clock.advance(Duration::from_secs(5));
        // A probe that times out also counts as a failure.
        b.acquire().unwrap().record(Some(&Error::DeadlineExceeded));
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn cancelled_probe_frees_the_slot() {
        let clock = Arc::new(ManualClock::new());
        let b = breaker(&clock);
        fail(&b, 3);
        clock.advance(Duration::from_secs(10));
        drop(b.acquire().unwrap());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.acquire().unwrap().record(None);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn late_results_of_calls_sent_before_opening_do_not_decide() {
        let clock = Arc::new(ManualClock::new());
        let b = breaker(&clock);
        let early = b.acquire().unwrap();
        fail(&b, 3);
        early.record(None);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn disabled_breaker_never_opens() {
        let clock = Arc::new(ManualClock::new());
        let b = Breaker::new(BreakerPolicy::disabled(), clock);
        fail(&b, 100);
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
