//! Rate limiting for log lines triggered by guest behaviour, so a hostile
//! guest cannot flood cellvm's log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Allows at most `per_second` events per wall-clock second.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: u64,
    /// High 32 bits: second; low 32 bits: count in that second.
    state: AtomicU64,
}

impl RateLimiter {
    /// A limiter allowing `per_second` events each second.
    pub fn new(per_second: u64) -> Self {
        RateLimiter {
            per_second,
            state: AtomicU64::new(0),
        }
    }

    /// Whether one more event may be logged now.
    pub fn allow(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() & 0xffff_ffff)
            .unwrap_or(0);
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let (sec, count) = (cur >> 32, cur & 0xffff_ffff);
            let next = if sec == now {
                if count >= self.per_second {
                    return false;
                }
                cur + 1
            } else {
                (now << 32) | 1
            };
            match self
                .state
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_at_most_the_configured_burst() {
        let rl = RateLimiter::new(3);
        let allowed = (0..100).filter(|_| rl.allow()).count();
        // The loop may straddle a second boundary, which grants one new burst.
        assert!((3..=6).contains(&allowed), "allowed {allowed}");
    }
}
