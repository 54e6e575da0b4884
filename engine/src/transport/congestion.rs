//! Congestion control (spec §8.1) behind a small trait, slow-start exit (HyStart++), and the
//! pacer (spec §8.2).
//!
//! Controllers count bytes. They see acknowledgements and congestion events; the connection
//! decides which losses are congestion events (loss discrimination, spec §8.1).

use std::time::Duration;

use super::rtt::RttEstimator;
use crate::time::Time;

/// A congestion controller (the quinn-proto shape).
pub trait Controller: std::fmt::Debug + Send {
    /// A packet of `bytes` counted in flight was sent.
    fn on_sent(&mut self, now: Time, bytes: u64);
    /// A packet of `bytes` sent at `sent` was acknowledged. `app_limited`: it was sent while
    /// less than half the window was in use (the application or flow control held the sender
    /// back), so it says nothing about whether the path could take more: the window must not
    /// grow on it (RFC 9002 §7.8), though a delay-based controller may still shrink.
    fn on_ack(&mut self, now: Time, sent: Time, bytes: u64, app_limited: bool, rtt: &RttEstimator);
    /// Loss of a packet sent at `sent` is a congestion signal; `persistent` per RFC 9002 §7.6.
    fn on_congestion_event(&mut self, now: Time, sent: Time, persistent: bool);
    /// The path MTU changed.
    fn on_mtu(&mut self, mtu: u64);
    /// The congestion window in bytes.
    fn window(&self) -> u64;
    /// True while in slow start.
    fn in_slow_start(&self) -> bool;
}

/// Which controller a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CongestionKind {
    /// CUBIC, RFC 9438 (default).
    #[default]
    Cubic,
    /// NewReno, RFC 9002 §7.3.
    NewReno,
    /// LEDBAT, RFC 6817: delay-based background traffic that yields to other flows.
    Ledbat,
}

impl CongestionKind {
    /// A fresh controller for a path with this MTU.
    pub fn build(self, mtu: u64) -> Box<dyn Controller> {
        match self {
            CongestionKind::Cubic => Box::new(Cubic::new(mtu)),
            CongestionKind::NewReno => Box::new(NewReno::new(mtu)),
            CongestionKind::Ledbat => Box::new(Ledbat::new(mtu)),
        }
    }
}

fn initial_window(mtu: u64) -> u64 {
    // RFC 9002 §7.2: min(10 * max_datagram_size, max(14720, 2 * max_datagram_size)).
    (10 * mtu).min(14_720u64.max(2 * mtu)).max(10 * 1200)
}

/// RTT samples a round takes before HyStart++ compares its minimum (RFC 9406 §4.3,
/// N_RTT_SAMPLE).
const HYSTART_SAMPLES: u32 = 8;
/// Bounds of the RTT rise that ends slow start (RFC 9406 §4.3, MIN/MAX_RTT_THRESH).
const HYSTART_MIN_THRESH: Duration = Duration::from_millis(4);
const HYSTART_MAX_THRESH: Duration = Duration::from_millis(16);
/// Growth divisor in conservative slow start (RFC 9406 §4.3, CSS_GROWTH_DIVISOR).
const CSS_GROWTH_DIVISOR: u64 = 4;
/// Rounds of conservative slow start before congestion avoidance (RFC 9406 §4.3, CSS_ROUNDS).
const CSS_ROUNDS: u32 = 5;

/// How much an acknowledgement in slow start grows the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlowStartGrowth {
    /// Standard slow start: by the bytes acknowledged.
    Full,
    /// Conservative slow start: by a quarter of them.
    Conservative,
    /// Slow start is over: the window becomes the slow-start threshold.
    Exit,
}

/// HyStart++ (RFC 9406, spec §8.1): ends slow start when the minimum RTT of a round of
/// acknowledgements rises above the previous round's by `clamp(min / 8, 4 ms, 16 ms)`, that
/// is when a queue starts to build, instead of when the queue overflows. Standard slow start
/// into a deep bottleneck queue doubles the window until it has filled the queue, then loses a
/// window's worth; when many connections share an uplink (a peer serving 7 others) they all
/// overshoot together.
///
/// A round ends when a packet sent after the round began is acknowledged (the RFC's
/// `windowEnd`, by send time instead of packet number: both increase together). A round's
/// minimum is taken over the latest RTT at each packet acknowledged, not at each ACK: the
/// receiver acknowledges every 10th packet (spec §4.3), so a window below 80 packets would
/// never collect the RFC's 8 ACKs in a round, and it is exactly the windows of many
/// connections sharing one uplink that are small when they fill its queue.
#[derive(Debug)]
struct HyStart {
    /// Packets sent at or after this time belong to the next round.
    round_start: Option<Time>,
    last_round_min: Duration,
    round_min: Duration,
    round_samples: u32,
    /// `Some(baseline)` in conservative slow start (CSS).
    css_baseline: Option<Duration>,
    css_rounds: u32,
}

impl Default for HyStart {
    fn default() -> Self {
        Self {
            round_start: None,
            last_round_min: Duration::MAX,
            round_min: Duration::MAX,
            round_samples: 0,
            css_baseline: None,
            css_rounds: 0,
        }
    }
}

impl HyStart {
    /// An acknowledgement of a packet sent at `sent`, in slow start (RFC 9406 §4.2).
    fn on_ack(&mut self, now: Time, sent: Time, rtt: &RttEstimator) -> SlowStartGrowth {
        if self.round_start.is_none_or(|r| sent >= r) {
            self.round_start = Some(now);
            self.last_round_min = self.round_min;
            self.round_min = Duration::MAX;
            self.round_samples = 0;
            if self.css_baseline.is_some() {
                self.css_rounds += 1;
                if self.css_rounds >= CSS_ROUNDS {
                    return SlowStartGrowth::Exit;
                }
            }
        }
        if rtt.has_sample() {
            self.round_min = self.round_min.min(rtt.latest());
            self.round_samples += 1;
        }
        if self.round_samples >= HYSTART_SAMPLES {
            match self.css_baseline {
                None if self.last_round_min != Duration::MAX => {
                    let thresh =
                        (self.last_round_min / 8).clamp(HYSTART_MIN_THRESH, HYSTART_MAX_THRESH);
                    if self.round_min >= self.last_round_min + thresh {
                        self.css_baseline = Some(self.round_min);
                        self.css_rounds = 0;
                    }
                }
                // The RTT fell back below the baseline: the rise was spurious (§4.2).
                Some(baseline) if self.round_min < baseline => self.css_baseline = None,
                _ => {}
            }
        }
        if self.css_baseline.is_some() {
            SlowStartGrowth::Conservative
        } else {
            SlowStartGrowth::Full
        }
    }

    /// Slow start grows the window by this much for `bytes` acknowledged; `None` ends it.
    fn growth(&mut self, now: Time, sent: Time, bytes: u64, rtt: &RttEstimator) -> Option<u64> {
        match self.on_ack(now, sent, rtt) {
            SlowStartGrowth::Full => Some(bytes),
            SlowStartGrowth::Conservative => Some(bytes / CSS_GROWTH_DIVISOR),
            SlowStartGrowth::Exit => None,
        }
    }
}

/// NewReno (RFC 9002 §7.3, Appendix B).
#[derive(Debug)]
pub struct NewReno {
    mtu: u64,
    cwnd: u64,
    ssthresh: u64,
    recovery_start: Option<Time>,
    acked: u64,
    hystart: HyStart,
}

impl NewReno {
    /// A controller for this MTU.
    pub fn new(mtu: u64) -> Self {
        Self {
            mtu,
            cwnd: initial_window(mtu),
            ssthresh: u64::MAX,
            recovery_start: None,
            acked: 0,
            hystart: HyStart::default(),
        }
    }
}

impl Controller for NewReno {
    fn on_sent(&mut self, _now: Time, _bytes: u64) {}
    fn on_ack(&mut self, now: Time, sent: Time, bytes: u64, app_limited: bool, rtt: &RttEstimator) {
        if app_limited || self.recovery_start.is_some_and(|r| sent <= r) {
            return;
        }
        if self.cwnd < self.ssthresh {
            match self.hystart.growth(now, sent, bytes, rtt) {
                Some(g) => self.cwnd += g,
                None => self.ssthresh = self.cwnd,
            }
        } else {
            self.acked += bytes;
            if self.acked >= self.cwnd {
                self.acked -= self.cwnd;
                self.cwnd += self.mtu;
            }
        }
    }
    fn on_congestion_event(&mut self, now: Time, sent: Time, persistent: bool) {
        if self.recovery_start.is_some_and(|r| sent <= r) && !persistent {
            return;
        }
        self.recovery_start = Some(now);
        self.cwnd = (self.cwnd / 2).max(2 * self.mtu);
        self.ssthresh = self.cwnd;
        if persistent {
            self.cwnd = 2 * self.mtu;
        }
    }
    fn on_mtu(&mut self, mtu: u64) {
        self.mtu = mtu;
        self.cwnd = self.cwnd.max(2 * mtu);
    }
    fn window(&self) -> u64 {
        self.cwnd
    }
    fn in_slow_start(&self) -> bool {
        self.cwnd < self.ssthresh
    }
}

/// CUBIC (RFC 9438) with the Reno-friendly region and fast convergence.
#[derive(Debug)]
pub struct Cubic {
    mtu: u64,
    cwnd: u64,
    ssthresh: u64,
    w_max: f64,
    k: f64,
    w_est: f64,
    epoch_start: Option<Time>,
    recovery_start: Option<Time>,
    hystart: HyStart,
}

const BETA: f64 = 0.7;
const C: f64 = 0.4;

impl Cubic {
    /// A controller for this MTU.
    pub fn new(mtu: u64) -> Self {
        Self {
            mtu,
            cwnd: initial_window(mtu),
            ssthresh: u64::MAX,
            w_max: 0.0,
            k: 0.0,
            w_est: 0.0,
            epoch_start: None,
            recovery_start: None,
            hystart: HyStart::default(),
        }
    }
}

impl Controller for Cubic {
    fn on_sent(&mut self, _now: Time, _bytes: u64) {}

    fn on_ack(&mut self, now: Time, sent: Time, bytes: u64, app_limited: bool, rtt: &RttEstimator) {
        if app_limited || self.recovery_start.is_some_and(|r| sent <= r) {
            return;
        }
        if self.cwnd < self.ssthresh {
            match self.hystart.growth(now, sent, bytes, rtt) {
                Some(g) => {
                    self.cwnd += g;
                    return;
                }
                None => self.ssthresh = self.cwnd,
            }
        }
        let mss = self.mtu as f64;
        let cwnd_seg = self.cwnd as f64 / mss;
        let epoch = match self.epoch_start {
            Some(e) => e,
            None => {
                self.epoch_start = Some(now);
                if cwnd_seg < self.w_max {
                    self.k = ((self.w_max - cwnd_seg) / C).cbrt();
                } else {
                    self.k = 0.0;
                    self.w_max = cwnd_seg;
                }
                self.w_est = cwnd_seg;
                now
            }
        };
        // RFC 9438 §4.2: target = W_cubic(t + RTT), clamped to [cwnd, 1.5 cwnd].
        let t = (now - epoch + rtt.smoothed()).as_secs_f64();
        let w_cubic = C * (t - self.k).powi(3) + self.w_max;
        let target = w_cubic.clamp(cwnd_seg, 1.5 * cwnd_seg);
        // §4.3 Reno-friendly estimate.
        let alpha = 3.0 * (1.0 - BETA) / (1.0 + BETA);
        self.w_est += alpha * (bytes as f64 / self.cwnd as f64);
        let next = if w_cubic < self.w_est {
            self.w_est
        } else {
            cwnd_seg + (target - cwnd_seg) * (bytes as f64 / self.cwnd as f64)
        };
        self.cwnd = ((next * mss) as u64).max(self.cwnd).max(2 * self.mtu);
    }

    fn on_congestion_event(&mut self, now: Time, sent: Time, persistent: bool) {
        if self.recovery_start.is_some_and(|r| sent <= r) && !persistent {
            return;
        }
        self.recovery_start = Some(now);
        let cwnd_seg = self.cwnd as f64 / self.mtu as f64;
        // §4.7 fast convergence.
        self.w_max = if cwnd_seg < self.w_max {
            cwnd_seg * (1.0 + BETA) / 2.0
        } else {
            cwnd_seg
        };
        self.cwnd = ((self.cwnd as f64 * BETA) as u64).max(2 * self.mtu);
        self.ssthresh = self.cwnd;
        self.epoch_start = None;
        if persistent {
            self.cwnd = 2 * self.mtu;
        }
    }

    fn on_mtu(&mut self, mtu: u64) {
        // Keep the window in packets roughly: scale by the MTU ratio.
        let ratio = mtu as f64 / self.mtu as f64;
        self.w_max /= ratio.max(1e-9);
        self.mtu = mtu;
        self.cwnd = self.cwnd.max(2 * mtu);
    }

    fn window(&self) -> u64 {
        self.cwnd
    }
    fn in_slow_start(&self) -> bool {
        self.cwnd < self.ssthresh
    }
}

/// LEDBAT (RFC 6817) for background transfers: grows while the queuing delay (latest RTT
/// minus the minimum RTT) is below a 25 ms target and shrinks above it, so it uses spare
/// capacity but gives way to loss-based flows, which fill the queue.
#[derive(Debug)]
pub struct Ledbat {
    mtu: u64,
    cwnd: u64,
    recovery_start: Option<Time>,
    slow_start: bool,
}

/// LEDBAT target queuing delay (RFC 6817 §2.5.1 caps it at 100 ms).
pub const LEDBAT_TARGET: Duration = Duration::from_millis(25);

impl Ledbat {
    /// A controller for this MTU.
    pub fn new(mtu: u64) -> Self {
        Self {
            mtu,
            cwnd: initial_window(mtu),
            recovery_start: None,
            slow_start: true,
        }
    }
}

impl Controller for Ledbat {
    fn on_sent(&mut self, _now: Time, _bytes: u64) {}

    fn on_ack(
        &mut self,
        _now: Time,
        sent: Time,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        if self.recovery_start.is_some_and(|r| sent <= r) {
            return;
        }
        let queuing = rtt.latest().saturating_sub(rtt.min());
        let target = LEDBAT_TARGET.as_secs_f64();
        if self.slow_start {
            if queuing.as_secs_f64() < target / 2.0 {
                if !app_limited {
                    self.cwnd += bytes;
                }
                return;
            }
            self.slow_start = false;
        }
        // RFC 6817 §2.4.2: cwnd += GAIN * off_target * bytes_newly_acked * MSS / cwnd.
        let off_target = ((target - queuing.as_secs_f64()) / target).clamp(-1.0, 1.0);
        let delta = off_target * bytes as f64 * self.mtu as f64 / self.cwnd as f64;
        if app_limited && delta > 0.0 {
            return;
        }
        let next = (self.cwnd as f64 + delta).max(2.0 * self.mtu as f64);
        self.cwnd = next as u64;
    }

    fn on_congestion_event(&mut self, now: Time, sent: Time, persistent: bool) {
        if self.recovery_start.is_some_and(|r| sent <= r) && !persistent {
            return;
        }
        self.recovery_start = Some(now);
        self.slow_start = false;
        self.cwnd = (self.cwnd / 2).max(2 * self.mtu);
        if persistent {
            self.cwnd = 2 * self.mtu;
        }
    }

    fn on_mtu(&mut self, mtu: u64) {
        self.mtu = mtu;
        self.cwnd = self.cwnd.max(2 * mtu);
    }

    fn window(&self) -> u64 {
        self.cwnd
    }

    fn in_slow_start(&self) -> bool {
        self.slow_start
    }
}

/// Packets a dry pacer waits to refill before it lets the next go (spec §8.2), as quinn's
/// pacer waits for its whole burst: at 100 Mbit/s shared by 16 connections a connection earns
/// half a packet per millisecond, and releasing each alone made every datagram its own send
/// call and its own buffer through the kernel's qdiscs, veths and bridge.
const PACE_BATCH: f64 = 10.0;

/// Token-bucket pacer (RFC 9002 §7.7, spec §8.2).
#[derive(Debug, Default)]
pub struct Pacer {
    tokens: f64,
    last: Option<Time>,
}

impl Pacer {
    /// When a packet of `bytes` may leave: `None` for now, else the time to wait for.
    pub fn delay(
        &mut self,
        now: Time,
        bytes: u64,
        mtu: u64,
        window: u64,
        srtt: Duration,
        slow_start: bool,
    ) -> Option<Time> {
        let srtt_us = srtt.as_micros().max(1) as f64;
        let gain = if slow_start { 2.0 } else { 1.25 };
        let rate = gain * window as f64 / srtt_us; // bytes per µs
        let cap = (rate * 2000.0)
            .max(10.0 * mtu as f64)
            .min(window.max(2 * mtu) as f64);
        let last = self.last.unwrap_or(Time::ZERO);
        let elapsed = now.as_micros().saturating_sub(last.as_micros()) as f64;
        self.tokens = if self.last.is_none() {
            cap
        } else {
            (self.tokens + rate * elapsed).min(cap)
        };
        self.last = Some(now);
        if self.tokens >= bytes as f64 {
            return None;
        }
        // Once the bucket is dry, wait until a batch has refilled rather than one packet
        // (spec §8.2): the packets then leave as one GSO send and cross the kernel as one
        // buffer, not one wake-up and one buffer per packet at a slow connection's rate.
        let want = (PACE_BATCH * mtu as f64).min(cap).max(bytes as f64);
        let wait = ((want - self.tokens) / rate).ceil().max(1.0);
        Some(Time(now.as_micros() + wait as u64))
    }
    /// A packet of `bytes` was sent.
    pub fn on_sent(&mut self, bytes: u64) {
        self.tokens = (self.tokens - bytes as f64).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_slow_start_then_reduction() {
        let mut c = Cubic::new(1200);
        let rtt = RttEstimator::default();
        let w0 = c.window();
        c.on_ack(Time(1000), Time(0), 1200, false, &rtt);
        assert_eq!(c.window(), w0 + 1200);
        c.on_congestion_event(Time(2000), Time(1500), false);
        let w1 = c.window();
        assert_eq!(w1, ((w0 + 1200) as f64 * 0.7) as u64);
        // A second loss from before the reduction does not reduce again.
        c.on_congestion_event(Time(2100), Time(1900), false);
        assert_eq!(c.window(), w1);
        // Growth in congestion avoidance is positive and bounded.
        for i in 0..100 {
            c.on_ack(
                Time(3000 + i * 1000),
                Time(2500 + i * 1000),
                1200,
                false,
                &rtt,
            );
        }
        assert!(c.window() > w1 && c.window() < 3 * w1);
        c.on_congestion_event(Time(500_000), Time(400_000), true);
        assert_eq!(c.window(), 2400);
    }

    #[test]
    fn newreno_halves() {
        let mut c = NewReno::new(1200);
        let w0 = c.window();
        c.on_congestion_event(Time(10), Time(5), false);
        assert_eq!(c.window(), w0 / 2);
        assert!(!c.in_slow_start());
    }

    /// An RTT estimator whose latest sample is `latest_ms` above a minimum of `min_ms`.
    fn rtt_with(min_ms: u64, latest_ms: u64) -> RttEstimator {
        let mut rtt = RttEstimator::default();
        rtt.update(Duration::from_millis(min_ms), Duration::ZERO);
        rtt.update(Duration::from_millis(latest_ms), Duration::ZERO);
        rtt
    }

    /// Acknowledgements of packets sent while the window was not in use (RFC 9002 §7.8) grow
    /// neither CUBIC nor NewReno, in slow start or in congestion avoidance; the same
    /// acknowledgements of window-limited packets do.
    #[test]
    fn app_limited_acks_do_not_grow_loss_based_windows() {
        let rtt = rtt_with(20, 20);
        for kind in [CongestionKind::Cubic, CongestionKind::NewReno] {
            let mut c = kind.build(1200);
            let w0 = c.window();
            // Slow start.
            for i in 0..50 {
                c.on_ack(Time(10_000 + i * 1000), Time(i * 1000), 1200, true, &rtt);
            }
            assert!(c.in_slow_start());
            assert_eq!(
                c.window(),
                w0,
                "{kind:?}: grew in slow start on app-limited acks"
            );
            c.on_ack(Time(70_000), Time(60_000), 1200, false, &rtt);
            assert_eq!(c.window(), w0 + 1200, "{kind:?}: a cwnd-limited ack grows");
            // Congestion avoidance, long after the reduction.
            c.on_congestion_event(Time(80_000), Time(75_000), false);
            assert!(!c.in_slow_start());
            let w1 = c.window();
            for i in 0..500 {
                let t = 1_000_000 + i * 1000;
                c.on_ack(Time(t + 20_000), Time(t), 1200, true, &rtt);
            }
            assert_eq!(
                c.window(),
                w1,
                "{kind:?}: grew in congestion avoidance on app-limited acks"
            );
            for i in 0..500 {
                let t = 2_000_000 + i * 1000;
                c.on_ack(Time(t + 20_000), Time(t), 1200, false, &rtt);
            }
            assert!(c.window() > w1, "{kind:?}: cwnd-limited acks grow");
        }
    }

    /// LEDBAT grows on neither kind of app-limited acknowledgement when the queuing delay is
    /// below target (in slow start or after), but still shrinks on them when it is above.
    #[test]
    fn app_limited_acks_do_not_grow_ledbat_but_still_shrink_it() {
        let low = rtt_with(20, 21);
        let high = rtt_with(20, 20 + 2 * LEDBAT_TARGET.as_millis() as u64);
        // Slow start, low delay.
        let mut c = Ledbat::new(1200);
        let w0 = c.window();
        for i in 0..50 {
            c.on_ack(Time(100_000 + i), Time(i), 1200, true, &low);
        }
        assert!(c.in_slow_start());
        assert_eq!(c.window(), w0, "grew in slow start on app-limited acks");
        c.on_ack(Time(200_000), Time(100_000), 1200, false, &low);
        assert_eq!(c.window(), w0 + 1200, "a cwnd-limited ack grows");
        // Congestion avoidance, low delay.
        c.on_congestion_event(Time(300_000), Time(250_000), false);
        assert!(!c.in_slow_start());
        let w1 = c.window();
        for i in 0..200 {
            c.on_ack(Time(500_000 + i), Time(400_000 + i), 1200, true, &low);
        }
        assert_eq!(
            c.window(),
            w1,
            "grew in congestion avoidance on app-limited acks"
        );
        // High delay: app-limited acks still shrink the window.
        for i in 0..20 {
            c.on_ack(Time(700_000 + i), Time(600_000 + i), 1200, true, &high);
        }
        assert!(
            c.window() < w1,
            "did not shrink above target: {}",
            c.window()
        );
        // The same in slow start: a delay above target ends it and shrinks.
        let mut c = Ledbat::new(1200);
        let w0 = c.window();
        for i in 0..20 {
            c.on_ack(Time(100_000 + i), Time(i), 1200, true, &high);
        }
        assert!(!c.in_slow_start());
        assert!(
            c.window() < w0,
            "did not shrink from slow start: {}",
            c.window()
        );
    }

    /// One round of slow start: a window of 1200-byte packets sent at `t` and each
    /// acknowledged `rtt` later. Returns the time after the round.
    fn ss_round(c: &mut dyn Controller, t: u64, rtt: Duration) -> u64 {
        let mut est = RttEstimator::default();
        est.update(Duration::from_millis(2), Duration::ZERO);
        est.update(rtt, Duration::ZERO);
        let packets = c.window() / 1200;
        let rtt_us = rtt.as_micros() as u64;
        for i in 0..packets {
            c.on_ack(Time(t + rtt_us + i), Time(t + i), 1200, false, &est);
        }
        t + rtt_us + packets + 1
    }

    /// HyStart++ (RFC 9406, spec §8.1): a window growing into a queue (100 Mbit/s, 2 ms base
    /// RTT, so every byte beyond 25 kB waits 80 ns) enters conservative slow start once a
    /// round's minimum RTT has risen by 4 ms, grows by a quarter per round for 5 rounds and then
    /// goes on in congestion avoidance: it stops before a 625 kB queue overflows, where standard
    /// slow start doubles past it (12 kB · 2^n: 384 kB, then 768 kB). With a flat RTT, slow
    /// start goes on.
    #[test]
    fn hystart_leaves_slow_start_when_the_rtt_rises() {
        for kind in [CongestionKind::Cubic, CongestionKind::NewReno] {
            let mut c = kind.build(1200);
            let mut t = 0;
            let mut rounds = 0;
            while c.in_slow_start() && rounds < 40 {
                let queue_us = c.window().saturating_sub(25_000) * 2 / 25;
                t = ss_round(&mut *c, t, Duration::from_micros(2000 + queue_us));
                rounds += 1;
            }
            assert!(!c.in_slow_start(), "{kind:?}: never left slow start");
            assert!(
                c.window() < 625_000,
                "{kind:?}: left slow start at {} bytes",
                c.window()
            );
            // The first rise of 4 ms or more is at 192 kB (13.4 ms after 7.7 ms); 5 rounds of
            // a quarter's growth follow.
            assert!(c.window() > 192_000, "{kind:?}: {}", c.window());

            let mut c = kind.build(1200);
            let mut t = 0;
            for _ in 0..10 {
                t = ss_round(&mut *c, t, Duration::from_millis(2));
            }
            assert!(c.in_slow_start(), "{kind:?}: left slow start at a flat RTT");
            assert!(c.window() >= 1 << 20, "{kind:?}: {}", c.window());
        }
    }

    /// A round whose RTT rose (conservative slow start) followed by one back at the baseline
    /// resumes standard slow start (RFC 9406 §4.2): the window doubles again per round.
    #[test]
    fn hystart_resumes_slow_start_after_a_spurious_rise() {
        let mut c = Cubic::new(1200);
        let mut t = 0;
        for _ in 0..3 {
            t = ss_round(&mut c, t, Duration::from_millis(2));
        }
        t = ss_round(&mut c, t, Duration::from_millis(8));
        let w = c.window();
        t = ss_round(&mut c, t, Duration::from_millis(8));
        assert!(
            c.window() < w + w / 2,
            "no conservative growth: {w} -> {}",
            c.window()
        );
        let w = c.window();
        ss_round(&mut c, t, Duration::from_millis(2));
        assert!(c.in_slow_start());
        assert!(c.window() >= w * 19 / 10, "{w} -> {}", c.window());
    }

    #[test]
    fn pacer_spreads_packets() {
        let mut p = Pacer::default();
        let srtt = Duration::from_millis(10);
        // 120 kB window over 10 ms at 1.25 gain = 15 bytes/µs; burst cap = 30 kB.
        let mut t = Time(0);
        let mut sent = 0u64;
        while p.delay(t, 1200, 1200, 120_000, srtt, false).is_none() {
            p.on_sent(1200);
            sent += 1200;
        }
        assert!((12_000..=31_200).contains(&sent), "burst {sent}");
        // Dry: the next send waits for a batch of 10 packets (12 kB at 15 bytes/µs: 800 µs),
        // and then 10 leave back to back.
        let next = p.delay(t, 1200, 1200, 120_000, srtt, false).unwrap();
        assert!(
            next > t && (700..=810).contains(&next.as_micros()),
            "{next:?}"
        );
        t = next;
        let mut batch = 0;
        while p.delay(t, 1200, 1200, 120_000, srtt, false).is_none() {
            p.on_sent(1200);
            batch += 1;
        }
        assert_eq!(batch, 10);
    }

    #[test]
    fn a_dry_pacer_never_waits_for_more_than_its_cap() {
        // A window of 2 packets: the bucket holds 2 packets, so a dry pacer waits for 2,
        // not for a batch of 10 that it could never hold.
        let mut p = Pacer::default();
        let srtt = Duration::from_millis(100);
        let t = Time(0);
        while p.delay(t, 1200, 1200, 2400, srtt, false).is_none() {
            p.on_sent(1200);
        }
        let next = p.delay(t, 1200, 1200, 2400, srtt, false).unwrap();
        let rate = 1.25 * 2400.0 / 100_000.0;
        assert!(next.as_micros() as f64 <= 2400.0 / rate + 1.0, "{next:?}");
    }
}
