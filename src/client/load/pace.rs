//! `--rate` and `--connect-rate`: a token bucket, driven by the poll loop.
//!
//! The bucket fills at `rate` tokens a second, up to a small burst; each line
//! sent (or connection opened) takes one token. When it is empty, the loop
//! asks [`TokenBucket::wait`] how long until the next token and uses that as
//! its `poll` timeout, so pacing needs no timer thread. Like the checker, the
//! bucket never reads the clock itself: the caller passes `now`, which keeps
//! it testable.

use std::time::{Duration, Instant};

/// The shortest wait [`TokenBucket::wait`] asks for when the bucket is empty.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// Hands out `rate` tokens a second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket for `rate` per second (must be positive), holding one token
    /// to start with and at most a twentieth of a second's worth (or one).
    pub fn new(rate: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            burst: (rate / 20.0).max(1.0),
            tokens: 1.0,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is available: zero exactly when [`TokenBucket::take`]
    /// would succeed now, else at least a millisecond.
    ///
    /// The floor matters: a bucket a hair short of one token would otherwise ask for
    /// a wait that rounds to zero while `take` still refuses, and the loop would spin
    /// without ever sleeping. A millisecond is far below the burst (a twentieth of a
    /// second's worth), so it never lowers the rate.
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate).max(MIN_WAIT)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_at_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, t0);
        assert!(bucket.take(t0), "one token to start with");
        assert!(!bucket.take(t0));
        assert_eq!(bucket.wait(t0), Duration::from_millis(100));
        let later = t0 + Duration::from_millis(100);
        assert_eq!(bucket.wait(later), Duration::ZERO);
        assert!(bucket.take(later));
        assert!(!bucket.take(later));
    }

    #[test]
    fn idle_time_is_not_saved_up_beyond_the_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1000.0, t0);
        let later = t0 + Duration::from_secs(10);
        let taken = (0..1000).take_while(|_| bucket.take(later)).count();
        assert_eq!(taken, 50, "a twentieth of a second's worth");
    }

    /// A bucket a hair short of a token must not ask for a zero wait while `take`
    /// refuses (that made `echoc load --rate` spin at full CPU).
    #[test]
    fn an_almost_full_token_still_means_a_real_wait() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1_000_000.0, t0);
        assert!(bucket.take(t0));
        bucket.tokens = 1.0 - 1e-12;
        assert!(!bucket.take(t0));
        assert!(bucket.wait(t0) >= MIN_WAIT);
    }
}
