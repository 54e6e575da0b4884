//! The receiving side of the connection's stream: STREAM frames into the [`Assembler`]
//! (spec §4.1), flow-control credit and MAX_DATA (spec §8.3), the out-of-order range budget
//! (spec §10), messages above our limit (spec §6) and `Readable` signalling.

use st_proto::packet::Frame;

use crate::transport::assembler::Assembler;
use crate::transport::code;

/// Most out-of-order byte ranges the stream receiver holds (spec §10); a packet whose STREAM
/// frames would create more is dropped without being acknowledged.
pub(crate) const MAX_STREAM_RANGES: usize = 256;

/// The receiving half of the stream.
#[derive(Debug)]
pub(super) struct RecvStream {
    asm: Assembler,
    /// The limit we granted the peer.
    local_max_data: u64,
    /// Our receive window (spec §8.3).
    window: u64,
    max_data_pending: bool,
    readable_signalled: bool,
}

impl RecvStream {
    /// An empty stream taking messages up to `max_message` bytes, with a receive `window`.
    pub(super) fn new(max_message: u32, window: u64) -> Self {
        Self {
            asm: Assembler::new(max_message),
            local_max_data: window,
            window,
            max_data_pending: false,
            readable_signalled: false,
        }
    }

    /// The reassembly buffer (for statistics).
    pub(super) fn assembler(&self) -> &Assembler {
        &self.asm
    }

    /// The limit we granted the peer.
    pub(super) fn local_max_data(&self) -> u64 {
        self.local_max_data
    }

    /// Pops the next complete message into `out`; false (and `Readable` owed again) if there
    /// is none. `closed`: the connection is closed, so no credit is granted any more.
    pub(super) fn read(&mut self, out: &mut Vec<u8>, closed: bool) -> bool {
        let Some(len) = self.asm.ready_len() else {
            self.readable_signalled = false;
            return false;
        };
        self.asm.pop_into(len, out);
        self.refresh_credit(closed);
        true
    }

    /// True if the next message's length prefix is above our limit (spec §6).
    pub(super) fn head_too_large(&self) -> bool {
        self.asm.head_too_large()
    }

    /// Flow control credit (spec §8.3): the limit moves to a window past what the application
    /// read once less than half a window is left, or once the next message needs more than is
    /// left (with a window of `max_message + 4`, a long message after a short one can need
    /// more than the credit left while more than half the window is: without this both sides
    /// would wait forever).
    fn refresh_credit(&mut self, closed: bool) {
        if closed {
            return;
        }
        let base = self.asm.base();
        let next_end = self.asm.head_len().map_or(0, |l| base + 4 + l);
        if self.local_max_data.saturating_sub(base) < self.window / 2
            || next_end > self.local_max_data
        {
            self.local_max_data = self.local_max_data.max(base + self.window);
            self.max_data_pending = true;
        }
    }

    /// True if the STREAM frames of a packet leave at most [`MAX_STREAM_RANGES`] out-of-order
    /// ranges in the receive buffer (counted against the current set, an upper bound). Bytes
    /// that extend the in-order prefix are always taken, so a full set never stalls the stream.
    /// `frames` are the packet's frames, all valid.
    pub(super) fn stream_ranges_fit<'a>(&self, frames: impl Iterator<Item = Frame<'a>>) -> bool {
        let base = self.asm.base();
        let prefix_end = base + self.asm.contiguous();
        let mut new = 0;
        for f in frames {
            if let Frame::Stream { offset, data } = f {
                let end = offset.saturating_add(data.len() as u64);
                let off = offset.max(base);
                if off > prefix_end && self.asm.ranges().would_add_range(off, end) {
                    new += 1;
                }
            }
        }
        let out_of_order = self.asm.ranges().len() - usize::from(prefix_end > base);
        out_of_order + new <= MAX_STREAM_RANGES
    }

    /// A STREAM frame (spec §4.1): bytes beyond the credit are a FLOW_CONTROL_ERROR, bytes
    /// already held are dropped, and a readable length prefix above our limit is
    /// MESSAGE_TOO_LARGE. `Err` carries the CLOSE code. `closed` as in [`Self::read`].
    pub(super) fn on_stream(&mut self, offset: u64, data: &[u8], closed: bool) -> Result<(), u32> {
        let end = offset + data.len() as u64;
        if end > self.local_max_data {
            return Err(code::FLOW_CONTROL_ERROR);
        }
        let base = self.asm.base();
        if end <= base || data.is_empty() {
            return Ok(());
        }
        let (off, data) = if offset < base {
            (base, &data[(base - offset) as usize..])
        } else {
            (offset, data)
        };
        if self.asm.ranges().contains_range(off, end) {
            return Ok(());
        }
        self.asm.insert(off, data);
        // A length prefix above our limit is a violation as soon as it is readable.
        if self.asm.head_too_large() {
            return Err(code::MESSAGE_TOO_LARGE);
        }
        self.refresh_credit(closed);
        Ok(())
    }

    /// A MAX_DATA is to be sent (again): the peer sent DATA_BLOCKED, or one carrying it was
    /// lost.
    pub(super) fn request_max_data(&mut self) {
        self.max_data_pending = true;
    }

    /// True if a MAX_DATA frame is due.
    pub(super) fn max_data_pending(&self) -> bool {
        self.max_data_pending
    }

    /// A MAX_DATA frame carrying [`Self::local_max_data`] was written.
    pub(super) fn max_data_sent(&mut self) {
        self.max_data_pending = false;
    }

    /// True if `Readable` is to be reported now: a message is ready and none was reported
    /// since the application last found nothing to read.
    pub(super) fn poll_readable(&mut self) -> bool {
        if !self.readable_signalled && self.asm.ready_len().is_some() {
            self.readable_signalled = true;
            return true;
        }
        false
    }
}
