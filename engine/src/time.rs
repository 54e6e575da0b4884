//! The engine's time type: microseconds on a caller-chosen clock.
//!
//! State machines never read a clock; every input carries a [`Time`]. The reactor maps the
//! monotonic clock onto it, the simulator advances a virtual one.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time, in microseconds since an arbitrary epoch chosen by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(pub u64);

impl Time {
    /// Time zero.
    pub const ZERO: Time = Time(0);
    /// A time later than any other.
    pub const MAX: Time = Time(u64::MAX);

    /// Time from microseconds.
    pub const fn from_micros(us: u64) -> Self {
        Time(us)
    }
    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }
    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

/// Whole microseconds of a duration, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(micros(d)))
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, d: Duration) -> Time {
        Time(self.0.saturating_sub(micros(d)))
    }
}

impl Sub<Time> for Time {
    type Output = Duration;
    fn sub(self, o: Time) -> Duration {
        self.saturating_since(o)
    }
}
