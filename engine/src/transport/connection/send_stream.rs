//! The sending side of the connection's stream: the send buffer and its offsets (acknowledged,
//! to retransmit, next new byte), the peer's flow-control limit and DATA_BLOCKED (spec §4.2),
//! the send allowance, `Blocked`/`Writable` signalling (spec §8.3), and a pending graceful
//! close (spec §7.1).
//!
//! Offsets: `base` is the stream offset of the buffer's first byte (everything below it was
//! acknowledged); `next` is the first byte never sent; `acked` holds acknowledged ranges above
//! `base` and `retx` the ranges to send again.

use crate::transport::SendError;
use crate::transport::ranges::RangeSet;
use crate::transport::ring::Ring;
use crate::transport::rtt::RttEstimator;

/// Smallest send allowance in bytes (see [`send_allowance`]): room for a few largest peer
/// messages whatever the window.
const SEND_FLOOR: usize = 1 << 20;

/// How many unacknowledged bytes (in flight, lost and waiting, or not sent yet) the send
/// buffer may hold before it refuses messages (spec §8.3): one and a half times what the
/// path holds without a queue (the congestion `window` scaled by min RTT / smoothed RTT), at
/// least [`SEND_FLOOR`]. Sized to the path rather than fixed, the buffer neither starves
/// a fast path nor holds megabytes for a slow or bloated one (which a CANCEL could no
/// longer withdraw and which would only wait in a queue), and a connection's memory
/// follows its rate. The configured send buffer stays the hard limit on everything held,
/// acknowledged bytes above a hole included.
fn send_allowance(window: u64, rtt: &RttEstimator) -> usize {
    let mut w = window as f64;
    if rtt.has_sample() {
        let (min, srtt) = (rtt.min().as_secs_f64(), rtt.smoothed().as_secs_f64());
        if srtt > min && min > 0.0 {
            w *= min / srtt;
        }
    }
    ((w * 1.5) as usize).max(SEND_FLOOR)
}

/// The sending half of the stream.
#[derive(Debug)]
pub(super) struct SendStream {
    buf: Ring,
    base: u64,
    next: u64,
    acked: RangeSet,
    retx: RangeSet,
    peer_max_data: u64,
    blocked_reported: Option<u64>,
    data_blocked_pending: bool,
    /// A `send` was refused; `Writable` is owed.
    blocked: bool,
    finishing: bool,
    /// Hard limit on the bytes held (the configured send buffer).
    limit: usize,
}

impl SendStream {
    /// An empty stream whose buffer holds at most `limit` bytes.
    pub(super) fn new(limit: usize) -> Self {
        Self {
            buf: Ring::default(),
            base: 0,
            next: 0,
            acked: RangeSet::new(),
            retx: RangeSet::new(),
            peer_max_data: 0,
            blocked_reported: None,
            data_blocked_pending: false,
            blocked: false,
            finishing: false,
            limit,
        }
    }

    /// Bytes held (unacknowledged and unsent, and acknowledged above a hole).
    pub(super) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Allocated capacity of the buffer.
    pub(super) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// True once everything written was acknowledged.
    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next new stream byte to send.
    pub(super) fn next_offset(&self) -> u64 {
        self.next
    }

    /// The peer's flow-control limit on our stream.
    pub(super) fn peer_max_data(&self) -> u64 {
        self.peer_max_data
    }

    /// A MAX_DATA from the peer (or its `recv_window` parameter): smaller values than one
    /// already received are ignored (spec §4.2).
    pub(super) fn on_peer_max_data(&mut self, v: u64) {
        self.peer_max_data = self.peer_max_data.max(v);
    }

    /// A graceful close waits for this stream to drain (spec §7.1).
    pub(super) fn finish(&mut self) {
        self.finishing = true;
    }

    /// True once [`Self::finish`] was called: no more messages are taken.
    pub(super) fn is_finishing(&self) -> bool {
        self.finishing
    }

    /// Bytes in the send buffer not yet acknowledged.
    fn unacked_in_buffer(&self) -> usize {
        let acked: u64 = self.acked.iter().map(|(s, e)| e - s).sum();
        self.buf.len().saturating_sub(acked as usize)
    }

    /// Queues a message of `head` and then `body_len` bytes that `fill` writes straight into
    /// the buffer (two slices: it may wrap), with its 4-byte length prefix (spec §6). The
    /// message is taken while the send allowance (from the congestion `window` and `rtt`) is
    /// not used up, so it may overshoot by one message (messages larger than the allowance
    /// still go), never past the hard limit; else [`SendError::Blocked`] and `Writable` is owed.
    /// The inner error is `fill`'s, and then nothing is queued.
    pub(super) fn write<E>(
        &mut self,
        head: &[u8],
        body_len: usize,
        fill: impl FnOnce(&mut [u8], &mut [u8]) -> Result<(), E>,
        window: u64,
        rtt: &RttEstimator,
    ) -> Result<Result<(), E>, SendError> {
        let len = head.len() + body_len;
        let add = 4 + len;
        if self.buf.len() + add > self.limit
            || self.unacked_in_buffer() >= send_allowance(window, rtt)
        {
            self.blocked = true;
            return Err(SendError::Blocked);
        }
        self.buf.push(&(len as u32).to_be_bytes());
        self.buf.push(head);
        match self.buf.append_with(body_len, fill) {
            Ok(()) => Ok(Ok(())),
            Err(e) => {
                self.buf.truncate_tail(4 + head.len());
                Ok(Err(e))
            }
        }
    }

    /// The packet that carried `len` bytes at `off` was acknowledged.
    pub(super) fn on_acked(&mut self, off: u64, len: u32) {
        // A copy (probe or retransmission) can be acknowledged after the original moved the
        // send buffer's base past it: record only what lies above the base, or a stale range
        // at the front of `acked` would stop the base from ever advancing again (the sender
        // wedges with a full send buffer).
        let end = off + u64::from(len);
        let start = off.max(self.base);
        if start < end {
            self.acked.insert(start, end);
        }
        self.retx.remove(off, end);
    }

    /// Releases acknowledged bytes from the front of the buffer. Returns true if a refused
    /// `send` may now succeed (spec §8.3: the unacknowledged bytes are at most half the
    /// allowance and the buffer at most half the limit): the caller reports `Writable`.
    pub(super) fn release_acked(&mut self, window: u64, rtt: &RttEstimator) -> bool {
        self.acked.remove_below(self.base);
        if let Some((s, e)) = self.acked.first()
            && s <= self.base
            && e > self.base
        {
            let n = e - self.base;
            self.buf.consume(n as usize);
            self.base = e;
            self.acked.remove_below(e);
            self.retx.remove_below(e);
            if self.blocked
                && self.buf.len() <= self.limit / 2
                && self.unacked_in_buffer() <= send_allowance(window, rtt) / 2
            {
                self.blocked = false;
                return true;
            }
        }
        false
    }

    /// Queues `s..e` to be sent again (lost, or carried by a probe), less what was
    /// acknowledged meanwhile.
    pub(super) fn requeue(&mut self, s: u64, e: u64) {
        let s = s.max(self.base);
        if s >= e {
            return;
        }
        self.retx.insert(s, e);
        let acked: Vec<(u64, u64)> = self.acked.iter().filter(|&(a, b)| b > s && a < e).collect();
        for (a, b) in acked {
            self.retx.remove(a, b);
        }
    }

    /// Flow-control blocked? (spec §4.2): with new bytes waiting at the peer's limit, one
    /// DATA_BLOCKED per limit.
    pub(super) fn check_blocked(&mut self) {
        let end = self.base + self.buf.len() as u64;
        if self.next < end
            && self.next >= self.peer_max_data
            && self.blocked_reported != Some(self.peer_max_data)
        {
            self.blocked_reported = Some(self.peer_max_data);
            self.data_blocked_pending = true;
        }
    }

    /// True if a DATA_BLOCKED frame is due.
    pub(super) fn data_blocked_pending(&self) -> bool {
        self.data_blocked_pending
    }

    /// A DATA_BLOCKED frame was written.
    pub(super) fn data_blocked_sent(&mut self) {
        self.data_blocked_pending = false;
    }

    /// True if new bytes wait that flow control lets go.
    pub(super) fn has_new(&self) -> bool {
        self.next < (self.base + self.buf.len() as u64).min(self.peer_max_data)
    }

    /// True if anything is to be sent: bytes to retransmit or new bytes allowed.
    pub(super) fn has_data(&self) -> bool {
        !self.retx.is_empty() || self.has_new()
    }

    /// The next range to send, at most `room` bytes: the first to retransmit, else new bytes.
    /// Returns `(start, end, retransmission)`.
    pub(super) fn next_range(&mut self, room: u64) -> Option<(u64, u64, bool)> {
        let has_new = self.has_new();
        if let Some((s, e)) = self.retx.pop_first(room) {
            Some((s, e, true))
        } else if has_new {
            let s = self.next;
            let end = self.base + self.buf.len() as u64;
            let e = end.min(self.peer_max_data).min(s + room);
            self.next = e;
            Some((s, e, false))
        } else {
            None
        }
    }

    /// Copies the bytes from stream offset `s` into `out` (they are in the buffer), and
    /// returns their CRC-32C continued from `crc`.
    pub(super) fn read_at_crc(&self, s: u64, out: &mut [u8], crc: u32) -> u32 {
        self.buf.read_at_crc((s - self.base) as usize, out, crc)
    }

    /// Acknowledged ranges above the base (tests).
    #[cfg(test)]
    pub(super) fn acked_ranges(&self) -> &RangeSet {
        &self.acked
    }
}
