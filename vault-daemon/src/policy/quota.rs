//! Rate quotas: a token bucket per (caller, requested scope, grant limits).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time source, injectable so tests drive quotas and token expiry.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Time since the Unix epoch.
    fn now(&self) -> Duration;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// A sustained rate and a burst, from `rate = "100/s"` and `burst = 200`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket capacity (defaults to one second's worth, at least 1).
    pub burst: u32,
}

impl Rate {
    /// Parse `N/s`, `N/m` (or `N/min`), `N/h`.
    pub(crate) fn parse(text: &str, burst: Option<u32>) -> Result<Self, String> {
        let (n, unit) = text
            .split_once('/')
            .ok_or_else(|| format!("rate `{text}` is not of the form N/s, N/min or N/h"))?;
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("rate `{text}`: N must be a positive integer"))?;
        let seconds = match unit.trim() {
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("rate `{text}`: unknown unit `{other}` (s, min, h)")),
        };
        if n == 0 {
            return Err(format!(
                "rate `{text}`: N must be positive (omit the grant instead)"
            ));
        }
        let per_second = f64::from(n) / seconds;
        let burst = burst.unwrap_or((per_second.ceil() as u32).max(1));
        if burst == 0 {
            return Err("burst must be at least 1".into());
        }
        Ok(Rate { per_second, burst })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s, burst {}", self.per_second, self.burst)
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Duration,
}

/// All buckets. They live outside the (reloadable) policy, keyed by the limits as well, so a
/// reload that keeps a grant's limits keeps its buckets and one that changes them starts fresh.
#[derive(Debug, Default)]
pub(crate) struct Quotas {
    buckets: Mutex<HashMap<(String, String, u64, u32), Bucket>>,
}

impl Quotas {
    /// Take one token; on refusal, how long until one is available.
    pub(crate) fn take(
        &self,
        caller: &str,
        scope: &str,
        rate: Rate,
        now: Duration,
    ) -> Result<(), Duration> {
        let key = (
            caller.to_owned(),
            scope.to_owned(),
            rate.per_second.to_bits(),
            rate.burst,
        );
        // A poisoned lock only means another thread panicked mid-update of a counter; the
        // map is still usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: f64::from(rate.burst),
            last: now,
        });
        let elapsed = now.saturating_sub(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        bucket.last = bucket.last.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / rate.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!(
            Rate::parse("100/s", Some(200)).unwrap(),
            Rate {
                per_second: 100.0,
                burst: 200
            }
        );
        assert_eq!(
            Rate::parse("60/min", None).unwrap(),
            Rate {
                per_second: 1.0,
                burst: 1
            }
        );
        assert_eq!(Rate::parse("7200/h", None).unwrap().per_second, 2.0);
        for bad in ["100", "x/s", "0/s", "5/day", "-1/s"] {
            assert!(Rate::parse(bad, None).is_err(), "{bad}");
        }
        assert!(Rate::parse("1/s", Some(0)).is_err());
    }

    #[test]
    fn bucket_exhausts_and_refills() {
        let q = Quotas::default();
        let rate = Rate {
            per_second: 2.0,
            burst: 3,
        };
        let t0 = Duration::from_secs(1000);
        for _ in 0..3 {
            q.take("a", "tokenize:pan", rate, t0).unwrap();
        }
        let wait = q.take("a", "tokenize:pan", rate, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another caller or scope has its own bucket.
        q.take("b", "tokenize:pan", rate, t0).unwrap();
        q.take("a", "tokenize:ssn", rate, t0).unwrap();
        // Half a second later one token is back; a clock going backwards adds nothing.
        q.take("a", "tokenize:pan", rate, t0 + Duration::from_millis(500))
            .unwrap();
        assert!(q.take("a", "tokenize:pan", rate, t0).is_err());
        // Refill is capped at the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            q.take("a", "tokenize:pan", rate, later).unwrap();
        }
        assert!(q.take("a", "tokenize:pan", rate, later).is_err());
    }
}
