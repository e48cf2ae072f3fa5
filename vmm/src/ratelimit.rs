//! Rate-limited warnings: bad input from a guest or a peer is logged, but a flood of it cannot
//! flood the log.

use std::time::{Duration, Instant};

/// Lets one message through per `period`, counting the ones it holds back.
#[derive(Debug)]
pub struct RateLimiter {
    target: &'static str,
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimiter {
    /// One message per `period`, logged under `target` (usually `module_path!()`).
    pub fn new(target: &'static str, period: Duration) -> Self {
        Self {
            target,
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether to log now; if so, also how many messages were held back since the last one.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < self.period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Logs `msg` as a warning if allowed.
    pub fn warn(&mut self, msg: std::fmt::Arguments<'_>) {
        if let Some(held) = self.allow(Instant::now()) {
            if held > 0 {
                log::warn!(target: self.target, "{msg} ({held} similar messages suppressed)");
            } else {
                log::warn!(target: self.target, "{msg}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_per_period() {
        let mut r = RateLimiter::new("test", Duration::from_secs(1));
        let t = Instant::now();
        assert_eq!(r.allow(t), Some(0));
        assert_eq!(r.allow(t + Duration::from_millis(10)), None);
        assert_eq!(r.allow(t + Duration::from_millis(20)), None);
        assert_eq!(r.allow(t + Duration::from_secs(2)), Some(2));
    }
}
