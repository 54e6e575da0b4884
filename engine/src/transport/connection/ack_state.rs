//! The receive side's packet numbers and the ACK policy (spec §4.3): which packet numbers
//! arrived (at most 64 ranges), duplicates (dropped and acknowledged at once), when an ACK is
//! due (every [`ACK_EVERY`] ack-eliciting packets, at once on reordering, a duplicate or a
//! PING, else after the ACK delay) and which ranges an ACK frame carries (not those the peer
//! has seen in an ACK frame it acknowledged).
//!
//! The ACK delay timer itself lives in the connection's timer table; this part says when it is
//! needed and how long it is.

use std::time::Duration;

use st_proto::packet;

use crate::time::Time;
use crate::transport::ranges::RangeSet;
use crate::transport::rtt::RttEstimator;

/// Most ranges a receiver remembers (spec §4.3).
const MAX_RECV_RANGES: usize = 64;
/// Ranges put in one ACK frame: of those the peer may not have seen, the newest 8, and more
/// if more than that hold packets that arrived since the previous ACK. Each range is repeated
/// in every ACK while it is among the newest unseen, which is many times; sending all 64 would
/// make every ACK of a connection that once saw 64 gaps about 550 bytes for the rest of its
/// life (spec §4.3).
pub(super) const ACK_RANGES_SENT: usize = 8;
/// Ack-eliciting packets after which a receiver acknowledges at once (spec §4.3). At 1500-byte
/// datagrams an ACK every 2 packets cost the receiver a datagram and the sender a wake-up per
/// 3 KB; every 10 cuts both fivefold while leaving the sender 9 packets of its window at most
/// unacknowledged for `ack_delay`.
const ACK_EVERY: u32 = 10;
/// Shortest ACK delay timer (spec §4.3): the reactor sleeps in whole milliseconds.
const MIN_ACK_DELAY: Duration = Duration::from_millis(1);

/// Received packet numbers and what is owed to the peer in acknowledgements.
#[derive(Debug)]
pub(super) struct AckState {
    recv_pns: RangeSet,
    largest_recv: Option<(u64, Time)>,
    /// Packet numbers at or above this one arrived after the last ACK we sent.
    acked_below: u64,
    /// Ranges that end at or below this packet number count as seen (spec §4.3): the peer
    /// acknowledged a packet whose ACK frame went that high, which either carried such a
    /// range or came after it had left the newest [`ACK_RANGES_SENT`] for good.
    seen_below: u64,
    ack_needed: bool,
    ack_now: bool,
    eliciting_since_ack: u32,
    /// Our `max_ack_delay` (the longest the peer's PTO allows for).
    max_ack_delay: Duration,
}

impl AckState {
    /// Nothing received yet; `max_ack_delay` is the one we announce.
    pub(super) fn new(max_ack_delay: Duration) -> Self {
        Self {
            recv_pns: RangeSet::new(),
            largest_recv: None,
            acked_below: 0,
            seen_below: 0,
            ack_needed: false,
            ack_now: false,
            eliciting_since_ack: 0,
            max_ack_delay,
        }
    }

    /// True if `pn` arrived before, or lies below every range remembered (it may have been
    /// forgotten, and was then acknowledged before).
    pub(super) fn is_duplicate(&self, pn: u64) -> bool {
        self.recv_pns.contains(pn) || self.recv_pns.first().is_some_and(|(s, _)| pn < s)
    }

    /// Asks for an ACK in the next packet, whatever else is due.
    pub(super) fn ack_immediately(&mut self) {
        self.ack_now = true;
    }

    /// Records the accepted packet `pn`, received at `now`. Returns true if it arrived out of
    /// order (not right after the largest so far).
    pub(super) fn on_packet(&mut self, now: Time, pn: u64) -> bool {
        let out_of_order = match self.largest_recv {
            Some((l, _)) => pn != l + 1,
            None => pn != 0,
        };
        self.recv_pns.insert(pn, pn + 1);
        self.recv_pns.truncate_low(MAX_RECV_RANGES);
        if self.largest_recv.is_none_or(|(l, _)| pn > l) {
            self.largest_recv = Some((pn, now));
        }
        out_of_order
    }

    /// An ack-eliciting packet was accepted. ACK frequency (spec §4.3): every [`ACK_EVERY`]
    /// ack-eliciting packets, or at once when `immediate` (reordering, a duplicate or a PING:
    /// loss and MTU probes want an answer now). Returns true if the ACK may wait instead, for
    /// [`Self::ack_delay`].
    pub(super) fn on_eliciting(&mut self, immediate: bool) -> bool {
        self.eliciting_since_ack += 1;
        self.ack_needed = true;
        if self.eliciting_since_ack >= ACK_EVERY || immediate {
            self.ack_now = true;
            false
        } else {
            true
        }
    }

    /// How long an ack-eliciting packet may wait for its ACK when fewer than [`ACK_EVERY`]
    /// arrived (spec §4.3): a quarter of the smoothed round trip, at least [`MIN_ACK_DELAY`], at
    /// most `max_ack_delay` (which the peer's PTO allows for); `max_ack_delay` before the first
    /// round-trip sample.
    pub(super) fn ack_delay(&self, rtt: &RttEstimator) -> Duration {
        if rtt.has_sample() {
            (rtt.smoothed() / 4)
                .max(MIN_ACK_DELAY)
                .min(self.max_ack_delay)
        } else {
            self.max_ack_delay
        }
    }

    /// The ACK delay timer fired: an ACK owed is due now.
    pub(super) fn on_ack_timer(&mut self) {
        self.ack_now = self.ack_needed;
    }

    /// True if the next packet should carry an ACK: one is due now, or one is owed and the
    /// packet goes anyway (`may_elicit`).
    pub(super) fn should_send(&self, may_elicit: bool) -> bool {
        self.ack_now || (self.ack_needed && may_elicit)
    }

    /// The peer acknowledged a packet that carried an ACK frame whose largest packet number
    /// was `largest`: the ranges up to there need not be repeated (spec §4.3).
    pub(super) fn on_ack_frame_seen(&mut self, largest: u64) {
        self.seen_below = self.seen_below.max(largest + 1);
    }

    /// The largest packet number received, if any.
    pub(super) fn largest(&self) -> Option<u64> {
        self.largest_recv.map(|(pn, _)| pn)
    }

    /// Writes an ACK frame at `out[n..]` (spec §4.3): every range holding a packet received
    /// since the previous ACK, and up to [`ACK_RANGES_SENT`] of the newest ranges the peer may
    /// not have seen yet (at least one range). Returns `None` if nothing was ever received
    /// (nothing written, nothing changed), else the new end (`n` if the frame did not fit)
    /// with the ACK counted as sent: the caller clears the ACK timer.
    pub(super) fn write_frame(&mut self, out: &mut [u8], n: usize, now: Time) -> Option<usize> {
        if self.recv_pns.is_empty() {
            return None;
        }
        let mut n = n;
        let delay = self
            .largest_recv
            .map_or(0, |(_, t)| (now - t).as_micros() as u32);
        // How many of the newest ranges end above `floor`.
        let above = |floor: u64| {
            self.recv_pns
                .iter()
                .rev()
                .take_while(|&(_, e)| e > floor)
                .count()
        };
        let fresh = above(self.acked_below);
        // Ranges ending at or below `seen_below` were in a frame the peer acknowledged.
        let unseen = above(self.seen_below);
        let ranges = self
            .recv_pns
            .iter()
            .rev()
            .take(fresh.max(unseen.min(ACK_RANGES_SENT)).max(1))
            .map(|(s, e)| (s, e - 1));
        if let Some(m) = packet::write_ack(out, n, delay, ranges) {
            n = m;
        }
        self.acked_below = self.recv_pns.iter().next_back().map_or(0, |(_, e)| e);
        self.ack_now = false;
        self.ack_needed = false;
        self.eliciting_since_ack = 0;
        Some(n)
    }
}

#[cfg(test)]
impl AckState {
    /// Test setup: `s..e` received (and not acknowledged unless [`Self::set_acked_below`]).
    pub(super) fn insert_received(&mut self, s: u64, e: u64) {
        self.recv_pns.insert(s, e);
    }

    /// Test setup: the largest packet number received and when.
    pub(super) fn set_largest_recv(&mut self, pn: u64, at: Time) {
        self.largest_recv = Some((pn, at));
    }

    /// Test setup: packets below `pn` were acknowledged before.
    pub(super) fn set_acked_below(&mut self, pn: u64) {
        self.acked_below = pn;
    }

    /// Ranges of packet numbers remembered.
    pub(super) fn received_ranges(&self) -> usize {
        self.recv_pns.iter().count()
    }
}
