//! One logical call: deadline, breaker, attempts and backoff around a gRPC method.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Response, Status};

use crate::breaker::{Breaker, BreakerPolicy};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::error::Error;
use crate::retry::{self, Budget, Safety};

/// Per-call settings that override the [`Config`](crate::Config) defaults. Apply them with
/// [`VaultClient::with_options`](crate::VaultClient::with_options).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallOptions {
    pub(crate) deadline: Option<Duration>,
    pub(crate) request_id: Option<String>,
    pub(crate) key_version: Option<u32>,
    pub(crate) deterministic: Option<bool>,
    pub(crate) auto_idempotency_keys: Option<bool>,
    pub(crate) mask: Option<String>,
}

impl CallOptions {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// The call's deadline, retries and backoff included.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The request id recorded in the audit log (at most 128 printable ASCII characters). Every
    /// chunk of a large batch carries the same id.
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Pins the key version: tokenize fails with `FailedPrecondition` unless it is the active
    /// one; detokenize and reveal use it for tokens that do not carry their version.
    pub fn key_version(mut self, version: u32) -> Self {
        self.key_version = Some(version);
        self
    }

    /// Declares (or denies) that the template tokenizes deterministically, overriding
    /// [`Config::deterministic_template`](crate::Config::deterministic_template).
    pub fn deterministic(mut self, deterministic: bool) -> Self {
        self.deterministic = Some(deterministic);
        self
    }

    /// Turns automatic idempotency keys on or off, overriding
    /// [`Config::auto_idempotency_keys`](crate::Config::auto_idempotency_keys).
    pub fn auto_idempotency_keys(mut self, enabled: bool) -> Self {
        self.auto_idempotency_keys = Some(enabled);
        self
    }

    /// The template's mask to reveal with (default: the template's default mask).
    pub fn mask(mut self, mask: impl Into<String>) -> Self {
        self.mask = Some(mask.into());
        self
    }
}

/// What every clone of a client shares: configuration, breaker and retry budget.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) breaker: Breaker,
    budget: Budget,
}

impl Shared {
    pub(crate) fn new(config: Config, breaker: BreakerPolicy) -> Self {
        Self::with_clock(config, breaker, Arc::new(SystemClock))
    }

    pub(crate) fn with_clock(
        config: Config,
        breaker: BreakerPolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            budget: Budget::new(&config.retry, clock.clone()),
            breaker: Breaker::new(breaker, clock),
            config,
        }
    }

    /// Runs `send` until it succeeds, fails for good, or `deadline` passes. Each attempt gets
    /// the remaining time as its gRPC timeout (so the server can give up too) and is cut off
    /// locally at the same instant. A retry happens only for a safe call, on UNAVAILABLE or
    /// RESOURCE_EXHAUSTED, when the backoff fits in the deadline, the breaker lets it through and
    /// the budget has a token; otherwise the last error is returned.
    pub(crate) async fn run<Req, Resp, F, Fut>(
        &self,
        safety: Safety,
        deadline: Duration,
        request: &Req,
        mut send: F,
    ) -> Result<Resp, Error>
    where
        Req: Clone,
        F: FnMut(tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let policy = &self.config.retry;
        let start = Instant::now();
        self.budget.deposit();
        let mut attempt: u32 = 0;
        let mut last_error: Option<Error> = None;
        loop {
            attempt += 1;
            let remaining = deadline.saturating_sub(start.elapsed());
            if remaining.is_zero() {
                return Err(last_error.unwrap_or(Error::DeadlineExceeded));
            }
            let permit = match self.breaker.acquire() {
                Ok(permit) => permit,
                // A retry the breaker stops reports the failure that was seen, not the breaker.
                Err(open) => return Err(last_error.unwrap_or(open)),
            };
            let mut grpc_request = tonic::Request::new(request.clone());
            grpc_request.set_timeout(remaining);
            let sent_at = Instant::now();
            let result = match tokio::time::timeout(remaining, send(grpc_request)).await {
                Ok(Ok(response)) => Ok(response.into_inner()),
                Ok(Err(status)) if is_server_timeout(&status, sent_at.elapsed(), remaining) => {
                    Err(Error::DeadlineExceeded)
                }
                Ok(Err(status)) => Err(Error::from(status)),
                Err(_elapsed) => Err(Error::DeadlineExceeded),
            };
            permit.record(result.as_ref().err());
            let error = match result {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            if attempt >= policy.max_attempts || !retry::is_retryable(safety, &error) {
                return Err(error);
            }
            let backoff = policy.backoff(attempt, fastrand::f64());
            if start.elapsed() + backoff >= deadline || !self.budget.try_withdraw() {
                return Err(error);
            }
            last_error = Some(error);
            tokio::time::sleep(backoff).await;
        }
    }
}

/// tonic reports a `grpc-timeout` that ran out as CANCELLED "Timeout expired" rather than
/// DEADLINE_EXCEEDED (`tonic::Status::from_error`); the server's timer, started when the
/// request arrived, can beat the client's by a hair. Either way, it is the call's deadline.
fn is_server_timeout(status: &Status, waited: Duration, timeout: Duration) -> bool {
    const SLACK: Duration = Duration::from_millis(20);
    status.code() == tonic::Code::Cancelled
        && (status.message() == "Timeout expired" || waited + SLACK >= timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_timeouts_read_as_deadline_exceeded() {
        let second = Duration::from_secs(1);
        let timeout = Status::cancelled("Timeout expired");
        assert!(is_server_timeout(&timeout, Duration::ZERO, second));
        let cancelled = Status::cancelled("client went away");
        assert!(!is_server_timeout(
            &cancelled,
            Duration::from_millis(10),
            second
        ));
        assert!(is_server_timeout(
            &cancelled,
            Duration::from_millis(995),
            second
        ));
        assert!(!is_server_timeout(
            &Status::unavailable("x"),
            second,
            second
        ));
    }
}
