//! Sent packets and loss recovery: packet-number allocation (with the random skips of the
//! optimistic-ACK defence, spec §7), the sent-packet table, bytes in flight, RTT estimation,
//! loss detection and the probe timeout (spec §7, RFC 9002), persistent congestion and loss
//! discrimination (spec §8.1).
//!
//! Recovery decides which packets were acknowledged or lost; it does not know what they
//! carried. It hands each such packet ([`Sent`]: its stream range, whether it carried MAX_DATA,
//! whether it was an MTU probe) back to the connection, which routes it to the stream, flow
//! control, MTU and congestion parts.

use std::collections::VecDeque;
use std::time::Duration;

use st_proto::packet::AckFrame;

use crate::rng::Rng;
use crate::time::Time;
use crate::transport::code;
use crate::transport::rtt::{self, RttEstimator};

/// Packet reordering threshold (RFC 9002 §6.1.1).
const PACKET_THRESHOLD: u64 = 3;

/// A DATA packet sent and counted in flight.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sent {
    /// Packet number.
    pub(super) pn: u64,
    /// When it was sent.
    pub(super) time: Time,
    /// UDP payload bytes.
    pub(super) size: u32,
    /// The stream bytes it carried, as `(offset, len)`.
    pub(super) stream: Option<(u64, u32)>,
    /// It carried MAX_DATA.
    pub(super) max_data: bool,
    /// It was an MTU probe (spec §8.4): its loss is not a congestion signal.
    pub(super) mtu_probe: bool,
    /// Acknowledged or declared lost.
    done: bool,
    /// Sent while the window was in use (in flight, this packet included, at least half the
    /// window): only such packets may grow the window when acknowledged (spec §8.1).
    pub(super) cwnd_limited: bool,
    /// The largest packet number acknowledged by the ACK frame it carried, if it carried one:
    /// once it is acknowledged, the peer has seen that frame's ranges (spec §4.3).
    pub(super) ack_largest: Option<u64>,
}

impl Sent {
    /// A packet `pn` sent at `time` that carries nothing yet; the builder fills in the rest.
    pub(super) fn new(pn: u64, time: Time) -> Self {
        Self {
            pn,
            time,
            size: 0,
            stream: None,
            max_data: false,
            mtu_probe: false,
            done: false,
            cwnd_limited: false,
            ack_largest: None,
        }
    }
}

/// A loss that the controller must act on (spec §8.1).
#[derive(Debug, Clone, Copy)]
pub(super) struct CongestionEvent {
    /// When the most recently sent of the lost packets left.
    pub(super) sent: Time,
    /// Persistent congestion (RFC 9002 §7.6).
    pub(super) persistent: bool,
}

/// Loss recovery state of one connection (RFC 9002).
#[derive(Debug)]
pub(super) struct Recovery {
    next_pn: u64,
    next_skip: u64,
    /// On average one packet number in this many is skipped (spec §7); 0 disables.
    skip_period: u32,
    skipped: VecDeque<u64>,
    rng: Rng,
    largest_acked: Option<u64>,
    sent: VecDeque<Sent>,
    in_flight: u64,
    eliciting_in_flight: u64,
    last_eliciting_sent: Option<Time>,
    rtt: RttEstimator,
    loss_time: Option<Time>,
    pto_count: u32,
    probes: u32,
    loss_rate: f64,
    /// The peer's `max_ack_delay` (spec §3.1), as capped when its parameters arrive.
    peer_max_ack_delay: Duration,
}

impl Recovery {
    /// Fresh state. `rng` draws the skipped packet numbers; `peer_max_ack_delay` holds until the
    /// peer's parameters arrive.
    pub(super) fn new(skip_period: u32, mut rng: Rng, peer_max_ack_delay: Duration) -> Self {
        let next_skip = if skip_period == 0 {
            u64::MAX
        } else {
            1 + rng.below(2 * u64::from(skip_period))
        };
        Self {
            next_pn: 0,
            next_skip,
            skip_period,
            skipped: VecDeque::new(),
            rng,
            largest_acked: None,
            sent: VecDeque::new(),
            in_flight: 0,
            eliciting_in_flight: 0,
            last_eliciting_sent: None,
            rtt: RttEstimator::default(),
            loss_time: None,
            pto_count: 0,
            probes: 0,
            loss_rate: 0.0,
            peer_max_ack_delay,
        }
    }

    /// Sets the peer's `max_ack_delay` (already capped per spec §3.1).
    pub(super) fn set_peer_max_ack_delay(&mut self, d: Duration) {
        self.peer_max_ack_delay = d;
    }

    /// The RTT estimator.
    pub(super) fn rtt(&self) -> &RttEstimator {
        &self.rtt
    }

    /// An RTT sample outside any ACK frame (the INITIAL/ACCEPT exchange), with no ack delay.
    pub(super) fn on_handshake_rtt(&mut self, sample: Duration) {
        self.rtt.update(sample, Duration::ZERO);
    }

    /// Bytes in flight.
    pub(super) fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Loss probes still to send (RFC 9002 §6.2.4).
    pub(super) fn probes(&self) -> u32 {
        self.probes
    }

    /// Entries in the sent-packet table.
    pub(super) fn tracked(&self) -> usize {
        self.sent.len()
    }

    /// The next packet number to be used (a skipped one included).
    pub(super) fn next_pn(&self) -> u64 {
        self.next_pn
    }

    /// Consecutive probe timeouts.
    pub(super) fn pto_count(&self) -> u32 {
        self.pto_count
    }

    /// Forgets consecutive probe timeouts (an ACK arrived, or the handshake moved on).
    pub(super) fn reset_pto_count(&mut self) {
        self.pto_count = 0;
    }

    /// Allocates a packet number. Now and then one is skipped, and an ACK for it later is an
    /// optimistic ACK (spec §7).
    pub(super) fn take_pn(&mut self) -> u64 {
        let mut pn = self.next_pn;
        if pn == self.next_skip {
            // Optimistic-ACK defence (spec §7).
            self.skipped.push_back(pn);
            if self.skipped.len() > 32 {
                self.skipped.pop_front();
            }
            pn += 1;
            self.next_skip = pn + 1 + self.rng.below(2 * u64::from(self.skip_period));
        }
        self.next_pn = pn + 1;
        pn
    }

    /// The probe timeout without backoff (RFC 9002 §6.2.1).
    pub(super) fn pto_base(&self) -> Duration {
        self.rtt.pto(self.peer_max_ack_delay)
    }

    /// The probe timeout with its exponential backoff, at most 60 s.
    pub(super) fn pto_backoff(&self) -> Duration {
        (self.pto_base() * (1u32 << self.pto_count.min(10))).min(Duration::from_secs(60))
    }

    /// The time-threshold loss deadline (RFC 9002 §6.1.2), if a packet waits on it.
    pub(super) fn loss_time(&self) -> Option<Time> {
        self.loss_time
    }

    /// True if the time-threshold loss deadline has passed.
    pub(super) fn loss_time_expired(&self, now: Time) -> bool {
        self.loss_time.is_some_and(|t| t <= now)
    }

    /// The probe timeout deadline once established (RFC 9002 §A.8): none without ack-eliciting
    /// packets in flight, else the last one's send time plus the backed-off PTO.
    pub(super) fn pto_deadline(&self) -> Option<Time> {
        if self.eliciting_in_flight == 0 {
            None
        } else {
            self.last_eliciting_sent.map(|s| s + self.pto_backoff())
        }
    }

    /// Records an ack-eliciting packet sent and counted in flight; `window` is the congestion
    /// window before the controller sees it.
    pub(super) fn on_sent(&mut self, now: Time, mut s: Sent, window: u64) {
        self.in_flight += u64::from(s.size);
        s.cwnd_limited = 2 * self.in_flight >= window;
        self.eliciting_in_flight += 1;
        self.last_eliciting_sent = Some(now);
        self.sent.push_back(s);
        self.probes = self.probes.saturating_sub(1);
    }

    /// Processes an ACK frame's ranges (RFC 9002 §A.7): checks it acknowledges nothing unsent
    /// or skipped (spec §7), takes an RTT sample (RFC 9002 §5.1) and hands each newly
    /// acknowledged packet, in packet-number order within each range, to `on_acked` with the
    /// updated RTT estimator. Returns whether anything was newly acknowledged; `Err` carries a
    /// CLOSE code.
    pub(super) fn on_ack(
        &mut self,
        now: Time,
        ack: &AckFrame<'_>,
        mut on_acked: impl FnMut(&Sent, &RttEstimator),
    ) -> Result<bool, u32> {
        if ack.largest >= self.next_pn {
            return Err(code::PROTOCOL_VIOLATION);
        }
        for (lo, hi) in ack.iter() {
            if self.skipped.iter().any(|&s| s >= lo && s <= hi) {
                return Err(code::PROTOCOL_VIOLATION);
            }
        }
        self.largest_acked = Some(
            self.largest_acked
                .map_or(ack.largest, |l| l.max(ack.largest)),
        );
        // RTT sample from the largest acknowledged if it is newly acknowledged (§5.1).
        let i = self.sent.partition_point(|p| p.pn < ack.largest);
        if let Some(p) = self.sent.get(i)
            && p.pn == ack.largest
            && !p.done
        {
            let delay = Duration::from_micros(u64::from(ack.delay_us)).min(self.peer_max_ack_delay);
            self.rtt.update(now - p.time, delay);
        }
        let mut newly = false;
        for (lo, hi) in ack.iter() {
            let mut i = self.sent.partition_point(|p| p.pn < lo);
            while let Some(p) = self.sent.get_mut(i) {
                if p.pn > hi {
                    break;
                }
                i += 1;
                if p.done {
                    continue;
                }
                p.done = true;
                let p = *p;
                newly = true;
                self.in_flight = self.in_flight.saturating_sub(u64::from(p.size));
                self.eliciting_in_flight = self.eliciting_in_flight.saturating_sub(1);
                self.loss_rate *= 1.0 - 1.0 / 128.0;
                on_acked(&p, &self.rtt);
            }
        }
        Ok(newly)
    }

    /// Declares packets lost (RFC 9002 §6.1, §A.10), handing each to `on_lost` in packet-number
    /// order, and re-arms the time-threshold deadline. Returns the congestion signal to act on
    /// (spec §8.1), if any: MTU probes never count, and a loss counts only if it is persistent
    /// congestion or [`Self::loss_is_congestion`] says so.
    pub(super) fn detect_lost(
        &mut self,
        now: Time,
        mut on_lost: impl FnMut(&Sent),
    ) -> Option<CongestionEvent> {
        let la = self.largest_acked?;
        let loss_delay = self.rtt.loss_delay();
        let lost_before = now - loss_delay;
        self.loss_time = None;
        let mut largest_lost_time: Option<Time> = None;
        let mut first_lost: Option<Time> = None;
        let mut last_lost: Option<Time> = None;
        let mut i = 0;
        while let Some(p) = self.sent.get_mut(i) {
            i += 1;
            if p.pn > la {
                break;
            }
            if p.done {
                continue;
            }
            if p.time <= lost_before || la >= p.pn + PACKET_THRESHOLD {
                p.done = true;
                let p = *p;
                self.in_flight = self.in_flight.saturating_sub(u64::from(p.size));
                self.eliciting_in_flight = self.eliciting_in_flight.saturating_sub(1);
                on_lost(&p);
                if p.mtu_probe {
                    continue;
                }
                self.loss_rate = self.loss_rate * (1.0 - 1.0 / 128.0) + 1.0 / 128.0;
                largest_lost_time = Some(largest_lost_time.map_or(p.time, |t| t.max(p.time)));
                first_lost = Some(first_lost.map_or(p.time, |t| t.min(p.time)));
                last_lost = Some(last_lost.map_or(p.time, |t| t.max(p.time)));
            } else {
                let t = p.time + loss_delay;
                self.loss_time = Some(self.loss_time.map_or(t, |x| x.min(t)));
            }
        }
        if let (Some(sent), Some(first), Some(last)) = (largest_lost_time, first_lost, last_lost) {
            // Persistent congestion (RFC 9002 §7.6.1), approximated by the span of lost packets.
            let pc = (self.rtt.smoothed()
                + (self.rtt.var() * 4).max(rtt::GRANULARITY)
                + self.peer_max_ack_delay)
                * 3;
            let persistent = self.rtt.has_sample() && last - first > pc;
            if persistent || self.loss_is_congestion() {
                return Some(CongestionEvent { sent, persistent });
            }
        }
        None
    }

    /// Loss discrimination (spec §8.1).
    fn loss_is_congestion(&self) -> bool {
        if !self.rtt.has_sample() {
            return true;
        }
        let min = self.rtt.min();
        let thr = min + min / 4 + Duration::from_millis(1);
        self.rtt.latest() > thr || self.rtt.smoothed() > thr || self.loss_rate > 0.1
    }

    /// Drops acknowledged and lost packets from the front of the sent-packet table.
    pub(super) fn drop_done_front(&mut self) {
        while self.sent.front().is_some_and(|p| p.done) {
            self.sent.pop_front();
        }
    }

    /// Counts a probe timeout (RFC 9002 §6.2).
    pub(super) fn on_pto(&mut self) {
        self.pto_count += 1;
    }

    /// Arms two ack-eliciting probes (RFC 9002 §6.2.4) and returns the stream range of the
    /// oldest unacknowledged packet, for the probes to carry.
    pub(super) fn arm_probes(&mut self) -> Option<(u64, u32)> {
        self.probes = 2;
        self.sent.iter().find(|p| !p.done).and_then(|p| p.stream)
    }

    /// The sent-packet table (tests).
    #[cfg(test)]
    pub(super) fn sent(&self) -> &VecDeque<Sent> {
        &self.sent
    }
}
