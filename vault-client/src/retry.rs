//! Which calls are retried, how long to wait between attempts, and how many retries the client
//! may spend overall.
//!
//! A retry is only ever sent when repeating the call cannot change its outcome: reads
//! (detokenize, reveal, the Admin status calls), tokenize on a deterministic template (the same
//! value gives the same token), and tokenize where every item carries an idempotency key (the
//! server returns the first token). Deletes and other writes are never retried: an UNAVAILABLE
//! answer does not say whether the server acted. Only UNAVAILABLE and RESOURCE_EXHAUSTED are
//! retried; every other code is an answer that a repeat would not change.
//!
//! Backoff is exponential with "equal jitter" (half fixed, half random), so concurrent clients
//! spread out but every wait has a floor. A token-bucket budget (as in Finagle's `RetryBudget`
//! and gRPC's retry throttling, gRFC A6) caps retries at a fraction of requests plus a small
//! floor, so a failing daemon sees at most that much extra load instead of a retry storm.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::error::Error;

/// Retry parameters. Start from [`RetryPolicy::default`] and change fields.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts per call, the first included. 1 disables retries. Default 4.
    pub max_attempts: u32,
    /// The backoff before the first retry (its upper bound; see the module docs). Default 50 ms.
    pub initial_backoff: Duration,
    /// The largest backoff. Default 2 s.
    pub max_backoff: Duration,
    /// Growth of the backoff per retry. Default 2.
    pub multiplier: f64,
    /// Retries allowed per request sent, on average. Default 0.2 (retries ≤ 20% of requests).
    pub budget_ratio: f64,
    /// Retries allowed per second regardless of traffic, so a quiet client can still retry.
    /// Default 1.
    pub budget_floor_per_second: f64,
    /// The most retries that can be saved up and spent at once. Default 10.
    pub budget_burst: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            multiplier: 2.0,
            budget_ratio: 0.2,
            budget_floor_per_second: 1.0,
            budget_burst: 10.0,
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The wait before retry number `retry` (1 for the first retry), given a uniform `jitter`
    /// in `[0, 1)`: between half and all of `min(max_backoff, initial * multiplier^(retry-1))`.
    pub(crate) fn backoff(&self, retry: u32, jitter: f64) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let grown = self.initial_backoff.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        // `0 * inf` is NaN: a zero initial backoff stays zero.
        let grown = if grown.is_nan() { 0.0 } else { grown };
        let ceiling = grown.min(self.max_backoff.as_secs_f64());
        let jitter = jitter.clamp(0.0, 1.0);
        // Finite and non-negative: bounded above by max_backoff, below by zero.
        Duration::from_secs_f64((ceiling / 2.0) * (1.0 + jitter))
    }
}

/// Whether a call may be repeated without changing its outcome (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Safety {
    /// Repeating the call is harmless.
    Idempotent,
    /// The first attempt may have acted; never repeat it.
    NotIdempotent,
}

/// Whether a failed attempt should be retried, before looking at attempts and budget.
pub(crate) fn is_retryable(safety: Safety, error: &Error) -> bool {
    safety == Safety::Idempotent
        && matches!(
            error,
            Error::Unavailable { .. } | Error::ResourceExhausted { .. }
        )
}

/// The retry token bucket shared by every clone of a client.
#[derive(Debug)]
pub(crate) struct Budget {
    ratio: f64,
    floor_per_second: f64,
    burst: f64,
    clock: Arc<dyn Clock>,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    balance: f64,
    refilled_at: Instant,
}

impl Budget {
    pub(crate) fn new(policy: &RetryPolicy, clock: Arc<dyn Clock>) -> Self {
        let burst = policy.budget_burst.max(0.0);
        let now = clock.now();
        Self {
            ratio: policy.budget_ratio.max(0.0),
            floor_per_second: policy.budget_floor_per_second.max(0.0),
            burst,
            clock,
            state: Mutex::new(BudgetState {
                balance: burst,
                refilled_at: now,
            }),
        }
    }

    /// Records a first attempt: it earns `ratio` of a retry.
    pub(crate) fn deposit(&self) {
        self.with_state(|state| state.balance += self.ratio);
    }

    /// Takes one retry from the budget, if there is one.
    pub(crate) fn try_withdraw(&self) -> bool {
        self.with_state(|state| {
            // Tolerates the rounding of summed fractional deposits (5 × 0.2 is one retry).
            if state.balance >= 1.0 - 1e-9 {
                state.balance = (state.balance - 1.0).max(0.0);
                true
            } else {
                false
            }
        })
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut BudgetState) -> T) -> T {
        // The state is two numbers updated together; a panic elsewhere cannot leave them
        // inconsistent, so a poisoned lock is still usable.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.clock.now();
        let elapsed = now.saturating_duration_since(state.refilled_at);
        state.refilled_at = now;
        state.balance =
            (state.balance + elapsed.as_secs_f64() * self.floor_per_second).min(self.burst);
        let out = f(&mut state);
        state.balance = state.balance.min(self.burst);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::manual::ManualClock;

    fn unavailable() -> Error {
        Error::Unavailable {
            message: "down".into(),
        }
    }

    #[test]
    fn only_unavailable_and_resource_exhausted_are_retried_and_only_when_safe() {
        let retried = [
            unavailable(),
            Error::ResourceExhausted {
                message: "quota".into(),
            },
        ];
        for e in &retried {
            assert!(is_retryable(Safety::Idempotent, e), "{e:?}");
            assert!(!is_retryable(Safety::NotIdempotent, e), "{e:?}");
        }
        let not_retried = [
            Error::DeadlineExceeded,
            Error::CircuitOpen,
            Error::Unauthenticated,
            Error::NotFound {
                message: String::new(),
            },
            Error::Sealed {
                message: String::new(),
            },
            Error::InvalidInput {
                index: None,
                message: String::new(),
            },
            Error::Server {
                code: tonic::Code::Internal,
                message: String::new(),
            },
        ];
        for e in &not_retried {
            assert!(!is_retryable(Safety::Idempotent, e), "{e:?}");
        }
    }

    #[test]
    fn backoff_grows_then_caps_and_stays_within_bounds() {
        let p = RetryPolicy::default();
        for retry in 1..=12 {
            let ceiling = (0.05 * 2f64.powi(retry as i32 - 1)).min(2.0);
            let lo = p.backoff(retry, 0.0).as_secs_f64();
            let hi = p.backoff(retry, 0.999_999).as_secs_f64();
            assert!((lo - ceiling / 2.0).abs() < 1e-6, "retry {retry}: {lo}");
            assert!(hi <= ceiling + 1e-6 && hi > lo, "retry {retry}: {hi}");
        }
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(25));
        assert_eq!(p.backoff(40, 1.0), Duration::from_secs(2));
        // Out-of-range jitter is clamped rather than stretching the bounds.
        assert_eq!(p.backoff(1, 7.0), Duration::from_millis(50));
        assert_eq!(p.backoff(u32::MAX, 0.5), Duration::from_millis(1500));
    }

    #[test]
    fn budget_allows_burst_then_ratio_of_requests() {
        let clock = Arc::new(ManualClock::new());
        let policy = RetryPolicy {
            budget_floor_per_second: 0.0,
            ..RetryPolicy::default()
        };
        let budget = Budget::new(&policy, clock.clone());
        // The saved-up burst.
        for _ in 0..10 {
            assert!(budget.try_withdraw());
        }
        assert!(!budget.try_withdraw(), "burst exhausted");
        // 100 requests earn 20 retries, but only `burst` can be saved.
        for _ in 0..100 {
            budget.deposit();
        }
        let granted = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 10);
        // 10 requests earn 2 retries: 20%.
        for _ in 0..10 {
            budget.deposit();
        }
        let granted = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 2);
    }

    #[test]
    fn budget_floor_refills_with_time() {
        let clock = Arc::new(ManualClock::new());
        let budget = Budget::new(&RetryPolicy::default(), clock.clone());
        while budget.try_withdraw() {}
        assert!(!budget.try_withdraw());
        clock.advance(Duration::from_millis(1500));
        assert!(
            budget.try_withdraw(),
            "1.5 s of a 1/s floor gives one retry"
        );
        assert!(!budget.try_withdraw());
        clock.advance(Duration::from_secs(3600));
        let granted = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 10, "the floor also stops at the burst");
    }
}
