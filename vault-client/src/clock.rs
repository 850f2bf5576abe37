//! A monotonic clock the breaker and the retry budget read, so tests can drive time by hand.

use std::fmt;
use std::time::Instant;

/// Where the breaker and the retry budget read the time.
pub(crate) trait Clock: Send + Sync + fmt::Debug {
    /// The current instant (monotonic).
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Default)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

#[cfg(test)]
pub(crate) mod manual {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// A clock that moves only when told to.
    #[derive(Debug)]
    pub(crate) struct ManualClock(Mutex<Instant>);

    impl ManualClock {
        pub(crate) fn new() -> Self {
            Self(Mutex::new(Instant::now()))
        }

        pub(crate) fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl super::Clock for ManualClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }
}
