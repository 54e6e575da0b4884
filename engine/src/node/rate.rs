//! A token bucket: the peer node's upload and download limits (`spec/peer.md` §9).

use std::time::Duration;

use crate::time::Time;

/// Bytes per second with a bounded burst.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    rate: u64,
    burst: u64,
    tokens: u64,
    at: Time,
    /// Fractions of a byte carried between refills (in byte-microseconds).
    carry: u64,
}

impl Bucket {
    /// A bucket of `rate` bytes per second holding at most `burst` bytes, full at `now`.
    pub(crate) fn new(rate: u64, burst: u64, now: Time) -> Bucket {
        let rate = rate.max(1);
        let burst = burst.max(1);
        Bucket {
            rate,
            burst,
            tokens: burst,
            at: now,
            carry: 0,
        }
    }

    /// Adds what accrued since the last refill.
    pub(crate) fn refill(&mut self, now: Time) {
        let us = now.as_micros().saturating_sub(self.at.as_micros());
        if us == 0 {
            return;
        }
        self.at = now;
        let total = u128::from(us) * u128::from(self.rate) + u128::from(self.carry);
        let add = total / 1_000_000;
        self.carry = (total % 1_000_000) as u64;
        self.tokens = (u128::from(self.tokens) + add).min(u128::from(self.burst)) as u64;
        if self.tokens == self.burst {
            self.carry = 0;
        }
    }

    /// Tokens available now (after [`Bucket::refill`]).
    pub(crate) fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Takes `n` tokens (at most what is there).
    pub(crate) fn take(&mut self, n: u64) {
        self.tokens = self.tokens.saturating_sub(n);
    }

    /// When `n` tokens (at most the burst) will be there.
    pub(crate) fn ready_at(&self, n: u64) -> Time {
        let n = n.min(self.burst);
        if self.tokens >= n {
            return self.at;
        }
        let need = u128::from(n - self.tokens) * 1_000_000;
        let us = need
            .saturating_sub(u128::from(self.carry))
            .div_ceil(u128::from(self.rate));
        self.at + Duration::from_micros(us.min(u128::from(u64::MAX)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refills_at_its_rate_and_caps_at_its_burst() {
        let t0 = Time::from_micros(1_000_000);
        let mut b = Bucket::new(1000, 500, t0);
        assert_eq!(b.tokens(), 500);
        b.take(500);
        assert_eq!(b.ready_at(250), t0 + Duration::from_millis(250));
        b.refill(t0 + Duration::from_millis(100));
        assert_eq!(b.tokens(), 100);
        // Sub-byte accruals are carried, not lost: 1000 refills of 1 ms give 1000 bytes.
        let mut b = Bucket::new(1000, 10_000, t0);
        b.take(10_000);
        for k in 1..=1000u64 {
            b.refill(t0 + Duration::from_micros(k * 1000));
        }
        assert_eq!(b.tokens(), 1000);
        b.refill(t0 + Duration::from_secs(60));
        assert_eq!(b.tokens(), 10_000, "capped at the burst");
    }
}
