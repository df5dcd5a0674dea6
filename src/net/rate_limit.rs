//! A token bucket per connection, so one client cannot make the hub spend
//! its time answering a flood of requests.

use std::time::Instant;

/// What to do with a client's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: handle it.
    Allow,
    /// Over the limit: answer `rate_limited` and drop it.
    Limited,
    /// Still sending after `burst` refusals in a row: close the client.
    Exceeded,
}

/// `rate` messages per second on average, `burst` at once.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Refusals since the last allowed message.
    strikes: u32,
    max_strikes: u32,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: now,
            strikes: 0,
            max_strikes: burst,
        }
    }

    /// Takes a token for a message arriving at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = 0;
            return Verdict::Allow;
        }
        self.strikes += 1;
        if self.strikes > self.max_strikes {
            Verdict::Exceeded
        } else {
            Verdict::Limited
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_limited_then_exceeded() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 3, t0);
        for _ in 0..3 {
            assert_eq!(bucket.check(t0), Verdict::Allow);
        }
        for _ in 0..3 {
            assert_eq!(bucket.check(t0), Verdict::Limited);
        }
        assert_eq!(bucket.check(t0), Verdict::Exceeded);
    }

    #[test]
    fn tokens_come_back_at_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 1, t0);
        assert_eq!(bucket.check(t0), Verdict::Allow);
        assert_eq!(bucket.check(t0), Verdict::Limited);
        let later = t0 + Duration::from_millis(100);
        assert_eq!(bucket.check(later), Verdict::Allow);
        assert_eq!(bucket.check(later), Verdict::Limited);
    }
}
