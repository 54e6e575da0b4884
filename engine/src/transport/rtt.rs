//! RTT estimation (RFC 9002 §5).

use std::time::Duration;

/// Initial RTT before any sample (RFC 9002 §6.2.2, kInitialRtt).
pub const INITIAL_RTT: Duration = Duration::from_millis(333);
/// Timer granularity (RFC 9002 §6.1.2, kGranularity).
pub const GRANULARITY: Duration = Duration::from_millis(1);

/// RTT state of one connection.
#[derive(Debug, Clone, Copy)]
pub struct RttEstimator {
    latest: Duration,
    smoothed: Duration,
    var: Duration,
    min: Duration,
    has_sample: bool,
}

impl Default for RttEstimator {
    fn default() -> Self {
        Self {
            latest: INITIAL_RTT,
            smoothed: INITIAL_RTT,
            var: INITIAL_RTT / 2,
            min: INITIAL_RTT,
            has_sample: false,
        }
    }
}

impl RttEstimator {
    /// Adds a sample (RFC 9002 §5.3). `ack_delay` is already capped at max_ack_delay.
    pub fn update(&mut self, sample: Duration, ack_delay: Duration) {
        self.latest = sample;
        if !self.has_sample {
            self.has_sample = true;
            self.min = sample;
            self.smoothed = sample;
            self.var = sample / 2;
            return;
        }
        self.min = self.min.min(sample);
        let adjusted = if sample >= self.min + ack_delay {
            sample - ack_delay
        } else {
            sample
        };
        let diff = self.smoothed.abs_diff(adjusted);
        self.var = (self.var * 3 + diff) / 4;
        self.smoothed = (self.smoothed * 7 + adjusted) / 8;
    }
    /// Smoothed RTT.
    pub fn smoothed(&self) -> Duration {
        self.smoothed
    }
    /// Latest sample.
    pub fn latest(&self) -> Duration {
        self.latest
    }
    /// Minimum sample.
    pub fn min(&self) -> Duration {
        self.min
    }
    /// RTT variation.
    pub fn var(&self) -> Duration {
        self.var
    }
    /// True once a sample was taken.
    pub fn has_sample(&self) -> bool {
        self.has_sample
    }
    /// Probe timeout without backoff (RFC 9002 §6.2.1).
    pub fn pto(&self, max_ack_delay: Duration) -> Duration {
        self.smoothed + (self.var * 4).max(GRANULARITY) + max_ack_delay
    }
    /// Time-threshold loss delay (RFC 9002 §6.1.2).
    pub fn loss_delay(&self) -> Duration {
        (self.latest.max(self.smoothed) * 9 / 8).max(GRANULARITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sample_then_smoothing() {
        let mut r = RttEstimator::default();
        r.update(Duration::from_millis(100), Duration::ZERO);
        assert_eq!(r.smoothed(), Duration::from_millis(100));
        assert_eq!(r.var(), Duration::from_millis(50));
        r.update(Duration::from_millis(200), Duration::from_millis(20));
        // adjusted = 180, smoothed = (700+180)/8 = 110, var = (150 + 80)/4 = 57.5
        assert_eq!(r.smoothed(), Duration::from_millis(110));
        assert_eq!(r.var(), Duration::from_micros(57_500));
        assert_eq!(r.min(), Duration::from_millis(100));
        assert_eq!(
            r.pto(Duration::from_millis(25)),
            Duration::from_millis(110 + 230 + 25)
        );
    }
}
