//! A circuit breaker per outbound route: after `failures` failures in a row (refused, timed
//! out, 5xx, cut short) it opens, and requests are answered 503 at once, before any token is
//! revealed; after `open_for` one trial request is let through (half-open): its success
//! closes the breaker, its failure opens it again.
//!
//! ```text
//!            failures in a row ≥ limit
//!   Closed ───────────────────────────▶ Open ──(open_for passed, one caller)──▶ HalfOpen
//!     ▲  ◀──────────── trial succeeded ────────────────────────────────────────── │
//!     │                                  ◀──────────── trial failed ───────────── │
//! ```
//!
//! In memory, per process: a restarted daemon starts closed (a breaker protects the upstream
//! and the callers from waiting, it holds no promise that must survive a crash).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Requests pass; `0` failures in a row so far.
    Closed(u32),
    /// Requests are refused until the instant.
    Open(Instant),
    /// One trial request is out.
    HalfOpen,
}

/// A route's breaker.
#[derive(Debug)]
pub(crate) struct Breaker {
    state: Mutex<State>,
    limit: u32,
    open_for: Duration,
}

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Go ahead.
    Pass,
    /// Go ahead as the half-open trial.
    Trial,
    /// Refused: the breaker is open.
    Refused,
}

impl Breaker {
    pub(crate) fn new(limit: u32, open_for: Duration) -> Breaker {
        Breaker {
            state: Mutex::new(State::Closed(0)),
            limit: limit.max(1),
            open_for,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state now (metrics, tests).
    pub(crate) fn state(&self) -> State {
        *self.lock()
    }

    /// Whether a request may go to the upstream now.
    pub(crate) fn admit(&self, now: Instant) -> Admission {
        let mut s = self.lock();
        match *s {
            State::Closed(_) => Admission::Pass,
            State::Open(until) if now >= until => {
                *s = State::HalfOpen;
                Admission::Trial
            }
            State::Open(_) | State::HalfOpen => Admission::Refused,
        }
    }

    /// The upstream answered (below 500).
    pub(crate) fn succeeded(&self) {
        *self.lock() = State::Closed(0);
    }

    /// The exchange failed.
    pub(crate) fn failed(&self, now: Instant) {
        let mut s = self.lock();
        *s = match *s {
            State::Closed(n) if n + 1 < self.limit => State::Closed(n + 1),
            State::Closed(_) | State::HalfOpen => State::Open(now + self.open_for),
            open @ State::Open(_) => open,
        };
    }

    /// A request admitted as the trial ended without an answer either way (refused before it
    /// was sent for another reason): let the next request try.
    pub(crate) fn abandon_trial(&self) {
        let mut s = self.lock();
        if *s == State::HalfOpen {
            *s = State::Open(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_limit_and_closes_after_a_good_trial() {
        let b = Breaker::new(3, Duration::from_secs(10));
        let t = Instant::now();
        for _ in 0..2 {
            assert_eq!(b.admit(t), Admission::Pass);
            b.failed(t);
        }
        assert_eq!(b.state(), State::Closed(2));
        b.failed(t);
        assert_eq!(b.admit(t), Admission::Refused);
        let later = t + Duration::from_secs(10);
        assert_eq!(b.admit(later), Admission::Trial);
        // Only one trial at a time.
        assert_eq!(b.admit(later), Admission::Refused);
        b.succeeded();
        assert_eq!(b.admit(later), Admission::Pass);
    }

    #[test]
    fn a_failed_trial_opens_again() {
        let b = Breaker::new(1, Duration::from_secs(5));
        let t = Instant::now();
        b.failed(t);
        let later = t + Duration::from_secs(5);
        assert_eq!(b.admit(later), Admission::Trial);
        b.failed(later);
        assert_eq!(b.state(), State::Open(later + Duration::from_secs(5)));
        // A success in between resets the count.
        let b = Breaker::new(2, Duration::from_secs(5));
        b.failed(t);
        b.succeeded();
        b.failed(t);
        assert_eq!(b.state(), State::Closed(1));
    }
}
