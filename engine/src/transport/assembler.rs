//! The receive side of a connection's stream (spec §8): bytes arrive by offset, in any order
//! and possibly more than once, and leave as whole length-prefixed messages, in order.
//!
//! Short messages are reassembled in a byte ring and copied out when complete. A long message
//! (a DATA block) is assembled in a buffer of its own as soon as its length prefix is known,
//! and that buffer is handed to the application: its bytes are copied once, from the datagram
//! into the buffer, instead of into the ring and then out of it again.
//!
//! Layout: `base` is the stream offset of the head message's length prefix. From there, a chain
//! of messages taken out of the ring (each one's prefix immediately followed by its body), then
//! the ring, which holds the bytes from `ring_base` (the end of the chain) on. A message joins
//! the chain once every byte before its prefix arrived: a long one gets its own buffer, a
//! short one only when complete, and its bytes move to a second ring (`short`). So a short
//! message between two long ones (a HAVE between DATA blocks) does not hold the next long one
//! back in the ring until the application reads it. Only the last long message of the chain
//! can be incomplete.

use std::collections::VecDeque;

use super::ranges::RangeSet;
use super::ring::Ring;

/// Messages at least this long are assembled directly (a DATA block of the peer protocol is
/// 16 KiB and more; shorter messages are cheap to copy and common).
pub(crate) const DIRECT_MIN: usize = 8 << 10;
/// Messages longer than this stay in the ring: a directly assembled message is allocated
/// whole when its prefix arrives, so this bounds what a prefix alone can make us allocate.
pub(crate) const DIRECT_MAX: usize = 1 << 20;

/// A long message gets its own buffer only if at most this much of its body is already in
/// the ring (as when its prefix arrives late, after a loss): moving more would hold those
/// bytes twice, in the ring's capacity and in the buffer, for no copy saved. It is then read
/// from the ring.
pub(crate) const MOVE_MAX: usize = DIRECT_MIN;
/// A ring emptied by the chain gives its memory back if it grew past this (after a loss it
/// may have held most of a window; in order, it holds prefixes only).
const RING_KEEP: usize = 64 << 10;

/// Most messages in the chain. Each costs a few dozen bytes of bookkeeping, so without a cap
/// a peer filling the receive window with empty messages (4 bytes each) would make us hold
/// eight times the window; past the cap, messages wait in the ring as they arrived.
pub(crate) const MAX_CHAIN: usize = 256;

/// A message of the chain.
#[derive(Debug)]
struct Chained {
    /// Stream offset of the body's first byte (just past the length prefix).
    start: u64,
    /// Length of the body.
    len: usize,
    /// Where the body is.
    body: Body,
}

#[derive(Debug)]
enum Body {
    /// A long message in its own buffer: the body up to the highest byte received (bytes in
    /// between not received yet are unspecified), with a capacity of `len`. Bytes arriving in
    /// order are appended, so the buffer is never zeroed first.
    Own(Vec<u8>),
    /// A short message, complete: its bytes are next in the `short` ring.
    Short,
}

impl Chained {
    fn end(&self) -> u64 {
        self.start + self.len as u64
    }
}

/// Writes `data` at `at` bytes into a long message's body (`at + data.len() <= len`).
fn write_body(buf: &mut Vec<u8>, at: usize, data: &[u8]) {
    if at > buf.len() {
        // Out of order: a gap, overwritten when its bytes arrive.
        buf.resize(at, 0);
    }
    let over = (buf.len() - at).min(data.len());
    buf[at..at + over].copy_from_slice(&data[..over]);
    buf.extend_from_slice(&data[over..]);
}

/// Reassembles a stream into messages.
#[derive(Debug)]
pub(crate) struct Assembler {
    /// Stream offset of the head message's length prefix: everything below was delivered.
    base: u64,
    /// Byte ranges received at or above `base`.
    ranges: RangeSet,
    /// The chain of messages taken out of the ring, from `base` on.
    chain: VecDeque<Chained>,
    /// The bodies of the chain's short messages, in order.
    short: Ring,
    /// Stream bytes from `ring_base` (the end of the chain, or `base`) on.
    ring: Ring,
    ring_base: u64,
    /// Longest message accepted (longer prefixes are the caller's violation to report).
    max_message: usize,
    /// A buffer given back by the application, for the next long message.
    spare: Vec<u8>,
}

impl Assembler {
    /// An empty stream that accepts messages up to `max_message` bytes.
    pub(crate) fn new(max_message: u32) -> Self {
        Assembler {
            base: 0,
            ranges: RangeSet::new(),
            chain: VecDeque::new(),
            short: Ring::default(),
            ring: Ring::default(),
            ring_base: 0,
            max_message: max_message as usize,
            spare: Vec::new(),
        }
    }

    /// Stream offset of the next message to deliver.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// Byte ranges received and not delivered.
    pub(crate) fn ranges(&self) -> &RangeSet {
        &self.ranges
    }

    /// Bytes received in order from [`Assembler::base`].
    pub(crate) fn contiguous(&self) -> u64 {
        match self.ranges.first() {
            Some((s, e)) if s <= self.base => e - self.base,
            _ => 0,
        }
    }

    /// Bytes held: in the rings and in the long messages' buffers.
    pub(crate) fn buffered(&self) -> usize {
        let own = |c: &Chained| match &c.body {
            Body::Own(b) => b.len(),
            Body::Short => 0,
        };
        self.ring.len() + self.short.len() + self.chain.iter().map(own).sum::<usize>()
    }

    /// Memory held: the rings' capacity, the long messages' buffers and the spare buffer.
    pub(crate) fn capacity(&self) -> usize {
        let own = |c: &Chained| match &c.body {
            Body::Own(b) => b.capacity(),
            Body::Short => 0,
        };
        self.ring.capacity()
            + self.short.capacity()
            + self.spare.capacity()
            + self.chain.iter().map(own).sum::<usize>()
    }

    /// Stores `data` at stream offset `off`. Bytes below [`Assembler::base`] are ignored.
    pub(crate) fn insert(&mut self, off: u64, data: &[u8]) {
        let (mut off, mut data) = if off < self.base {
            let skip = (self.base - off).min(data.len() as u64) as usize;
            (self.base, &data[skip..])
        } else {
            (off, data)
        };
        if data.is_empty() {
            return;
        }
        let end = off + data.len() as u64;
        self.ranges.insert(off, end);
        loop {
            // The chain: long bodies take their bytes. A prefix's bytes all arrived before its
            // message joined the chain, and so did a short message's: those are skipped.
            // (Bytes at or past `ring_base` are past every message of the chain.)
            let scan = if off < self.ring_base {
                self.chain.len()
            } else {
                0
            };
            for c in self.chain.iter_mut().take(scan) {
                if off >= c.end() {
                    continue;
                }
                if off < c.start {
                    let skip = ((c.start - off) as usize).min(data.len());
                    (off, data) = (off + skip as u64, &data[skip..]);
                    if data.is_empty() {
                        // The bytes ended within the prefix.
                        break;
                    }
                }
                let n = ((c.end() - off) as usize).min(data.len());
                if let Body::Own(buf) = &mut c.body {
                    write_body(buf, (off - c.start) as usize, &data[..n]);
                }
                (off, data) = (off + n as u64, &data[n..]);
                if data.is_empty() {
                    break;
                }
            }
            if data.is_empty() {
                break;
            }
            // Past the chain (which ends at `ring_base`), or no chain (`ring_base == base`).
            // Into the ring up to where the chain may grow (so that a long message's body
            // in the same packet as its prefix goes straight to its buffer), then round again.
            let Some(at) = off.checked_sub(self.ring_base) else {
                debug_assert!(false, "bytes below the ring at {off}");
                break;
            };
            let cut = self.ring_cut(off, end);
            let n = (cut - off) as usize;
            self.ring.write_at(at as usize, &data[..n]);
            (off, data) = (cut, &data[n..]);
            // Bytes from `cut` on are received (in `ranges`) but not written yet.
            self.extend_chain(if data.is_empty() { u64::MAX } else { cut });
        }
        self.extend_chain(u64::MAX);
    }

    /// Where to stop writing the bytes `[off, end)` into the ring to let the chain grow: at the
    /// end of the prefix at `ring_base` (if every byte before it is here), or at the end of
    /// the short message it announces; else at `end`. Always past `off`.
    fn ring_cut(&self, off: u64, end: u64) -> u64 {
        let received_to = self.base + self.contiguous();
        let prefix_end = self.ring_base + 4;
        if received_to < prefix_end {
            return end;
        }
        if off < prefix_end {
            return prefix_end.min(end);
        }
        // The prefix arrived before `off`, so it is in the ring.
        let mut l = [0u8; 4];
        self.ring.read_at(0, &mut l);
        let len = u32::from_be_bytes(l) as usize;
        let msg_end = prefix_end + len as u64;
        if len < DIRECT_MIN && off < msg_end && msg_end < end {
            msg_end
        } else {
            end
        }
    }

    /// The head message's length, once its prefix arrived.
    pub(crate) fn head_len(&self) -> Option<u64> {
        if let Some(c) = self.chain.front() {
            return Some(c.len as u64);
        }
        if self.contiguous() < 4 {
            return None;
        }
        let mut l = [0u8; 4];
        self.ring.read_at(0, &mut l);
        Some(u64::from(u32::from_be_bytes(l)))
    }

    /// True if the head message's prefix announces more than `max_message` bytes (a
    /// violation as soon as it is readable, spec §6).
    pub(crate) fn head_too_large(&self) -> bool {
        self.head_len().is_some_and(|l| l > self.max_message as u64)
    }

    /// The head message's length if it is complete and not longer than `max_message`.
    pub(crate) fn ready_len(&self) -> Option<usize> {
        let len = self.head_len()?;
        (len <= self.max_message as u64 && self.contiguous() >= 4 + len).then_some(len as usize)
    }

    /// Moves the head message (complete: [`Assembler::ready_len`] is `Some(len)`) into `out`,
    /// whose old allocation may be kept for a later message.
    pub(crate) fn pop_into(&mut self, len: usize, out: &mut Vec<u8>) {
        if let Some(c) = self.chain.pop_front() {
            debug_assert_eq!(c.len, len);
            match c.body {
                Body::Own(mut buf) => {
                    // Every byte arrived, the last one included, so the body is all there.
                    debug_assert_eq!(buf.len(), len);
                    buf.resize(len, 0);
                    let old = std::mem::replace(out, buf);
                    if old.capacity() > self.spare.capacity() && old.capacity() <= DIRECT_MAX {
                        self.spare = old;
                    }
                }
                Body::Short => {
                    self.short.read_into(0, len, out);
                    self.short.consume(len);
                }
            }
        } else {
            self.ring.read_into(4, len, out);
            self.ring_skip(4 + len);
            self.ring_base += 4 + len as u64;
        }
        self.base += 4 + len as u64;
        self.ranges.remove_below(self.base);
        self.extend_chain(u64::MAX);
    }

    /// Moves the ring's head `n` bytes on; a ring left empty gives back its memory if it grew
    /// past [`RING_KEEP`].
    fn ring_skip(&mut self, n: usize) {
        self.ring.skip(n);
        if self.ring.is_empty() && self.ring.capacity() > RING_KEEP {
            self.ring = Ring::default();
        }
    }

    /// Appends to the chain the messages at `ring_base` whose prefix arrived (and so every
    /// byte before it): a long one with the body bytes the ring holds moved to its own buffer,
    /// a short one if complete, its body moved to the `short` ring. Bytes from `written_to`
    /// on are not in the ring yet.
    fn extend_chain(&mut self, written_to: u64) {
        let received_to = (self.base + self.contiguous()).min(written_to);
        while received_to >= self.ring_base + 4 && self.chain.len() < MAX_CHAIN {
            let mut l = [0u8; 4];
            self.ring.read_at(0, &mut l);
            let len = u32::from_be_bytes(l) as usize;
            let held = self.ring.len().saturating_sub(4).min(len);
            let body = if (DIRECT_MIN..=DIRECT_MAX.min(self.max_message)).contains(&len)
                && held <= MOVE_MAX
            {
                let mut buf = std::mem::take(&mut self.spare);
                self.ring.read_into(4, held, &mut buf);
                buf.reserve_exact(len - held);
                Body::Own(buf)
            } else if len < DIRECT_MIN && received_to >= self.ring_base + 4 + len as u64 {
                let ring = &self.ring;
                self.short
                    .append_with(len, |a, b| {
                        ring.read_at(4, a);
                        ring.read_at(4 + a.len(), b);
                        Ok::<(), ()>(())
                    })
                    .ok();
                Body::Short
            } else {
                // Short and incomplete, too long for a buffer of its own, or already mostly
                // here: it waits in the ring.
                return;
            };
            self.ring_skip(4 + len);
            let start = self.ring_base + 4;
            self.ring_base = start + len as u64;
            self.chain.push_back(Chained { start, len, body });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

    /// Messages of every kind (short, long, at the bounds, longer than `DIRECT_MAX`), framed
    /// and cut into pieces that arrive shuffled, overlapping and duplicated, and are read at
    /// random moments into buffers of random old contents: every message comes out whole, in
    /// order, exactly once.
    #[test]
    fn delivers_every_message_whole_and_in_order_whatever_the_arrival_order() {
        for seed in 1..=40u64 {
            let mut next = xorshift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let lens = [
                0,
                1,
                DIRECT_MIN - 1,
                DIRECT_MIN,
                DIRECT_MAX,
                DIRECT_MAX + 1,
                16 << 10,
                256 << 10,
            ];
            let msgs: Vec<Vec<u8>> = (0..40)
                .map(|i| {
                    let len = match next(3) {
                        0 => lens[next(lens.len() as u64) as usize],
                        1 => next(300) as usize,
                        _ => DIRECT_MIN + next(300 << 10) as usize,
                    };
                    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
                })
                .collect();
            let mut stream = Vec::new();
            for m in &msgs {
                stream.extend_from_slice(&(m.len() as u32).to_be_bytes());
                stream.extend_from_slice(m);
            }
            // Pieces of up to 3000 bytes (some up to 70 000, some up to 6), some sent twice,
            // sent in windows of 64 shuffled.
            let mut pieces = Vec::new();
            let mut at = 0;
            while at < stream.len() {
                let most = match next(8) {
                    0 | 1 => 70_000,
                    2 => 6,
                    _ => 3000,
                };
                let n = (1 + next(most) as usize).min(stream.len() - at);
                pieces.push((at, n));
                if next(8) == 0 {
                    let back = next(at as u64 + 1) as usize;
                    pieces.push((at - back, n + back));
                }
                if next(8) == 0 {
                    // A copy with other bounds (a retransmission packed differently): it
                    // may end anywhere, in a length prefix say.
                    let s = next(at as u64 + 1) as usize;
                    pieces.push((s, 1 + next((at + n - s) as u64) as usize));
                }
                at += n;
            }
            for w in pieces.chunks_mut(64) {
                for i in (1..w.len()).rev() {
                    w.swap(i, next(i as u64 + 1) as usize);
                }
            }
            let mut a = Assembler::new((DIRECT_MAX + 1) as u32);
            let mut got: Vec<Vec<u8>> = Vec::new();
            let mut out = Vec::new();
            let drain = |a: &mut Assembler,
                         out: &mut Vec<u8>,
                         got: &mut Vec<Vec<u8>>,
                         next: &mut dyn FnMut(u64) -> u64| {
                while let Some(len) = a.ready_len() {
                    a.pop_into(len, out);
                    got.push(out.clone());
                    // The next message may land in a buffer holding old bytes, or in none.
                    match next(3) {
                        0 => *out = Vec::new(),
                        1 => *out = vec![0xee; next(400 << 10) as usize],
                        _ => {}
                    }
                }
            };
            for &(off, n) in &pieces {
                a.insert(off as u64, &stream[off..off + n]);
                if next(4) == 0 {
                    drain(&mut a, &mut out, &mut got, &mut next);
                }
            }
            drain(&mut a, &mut out, &mut got, &mut next);
            assert_eq!(got.len(), msgs.len(), "seed {seed}");
            for (i, (g, m)) in got.iter().zip(&msgs).enumerate() {
                assert!(
                    g == m,
                    "seed {seed}: message {i} ({} bytes) differs",
                    m.len()
                );
            }
            assert_eq!(a.base(), stream.len() as u64);
            assert!(a.ranges().is_empty());
        }
    }

    /// A stream of 256 KiB messages arriving in order: each is assembled in its own buffer,
    /// so the ring never holds more than a packet or two (before, every byte went through it).
    #[test]
    fn long_messages_bypass_the_ring() {
        let mut a = Assembler::new(4 << 20);
        let msg: Vec<u8> = (0..256 << 10).map(|i| (i % 251) as u8).collect();
        let mut stream = Vec::new();
        for _ in 0..8 {
            stream.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            stream.extend_from_slice(&msg);
        }
        let (mut out, mut n, mut most) = (Vec::new(), 0, 0);
        for (i, piece) in stream.chunks(1400).enumerate() {
            a.insert((i * 1400) as u64, piece);
            most = most.max(a.ring.capacity());
            while let Some(len) = a.ready_len() {
                a.pop_into(len, &mut out);
                assert!(out == msg);
                n += 1;
            }
        }
        assert_eq!(n, 8);
        assert!(most <= 8192, "the ring grew to {most} bytes");
    }

    /// Short messages between long ones (a HAVE between DATA blocks) leave the ring as soon
    /// as they are complete, even when the application has not read them yet: the long
    /// messages after them are still assembled in their own buffers.
    #[test]
    fn short_messages_do_not_hold_long_ones_in_the_ring() {
        let mut a = Assembler::new(4 << 20);
        let long: Vec<u8> = (0..64 << 10).map(|i| (i % 253) as u8).collect();
        let mut stream = Vec::new();
        for i in 0..6u8 {
            stream.extend_from_slice(&(long.len() as u32).to_be_bytes());
            stream.extend_from_slice(&long);
            stream.extend_from_slice(&5u32.to_be_bytes());
            stream.extend_from_slice(&[i; 5]);
        }
        let mut most = 0;
        for (i, piece) in stream.chunks(1400).enumerate() {
            a.insert((i * 1400) as u64, piece);
            most = most.max(a.ring.capacity());
        }
        // Nothing was read: everything sits in the chain, the ring held at most a packet.
        assert!(most <= 8192, "the ring grew to {most} bytes");
        let mut out = Vec::new();
        for i in 0..6u8 {
            for want in [&long[..], &[i; 5][..]] {
                let len = a.ready_len().expect("complete");
                a.pop_into(len, &mut out);
                assert!(out == want, "message {i}");
            }
        }
        assert_eq!(a.ready_len(), None);
    }

    /// Packets that carry the end of one message, a short one, and the prefix and start of a
    /// long one: the long one's bytes go straight to its own buffer, none through the ring.
    #[test]
    fn a_long_message_starting_mid_packet_skips_the_ring() {
        let mut a = Assembler::new(4 << 20);
        let long: Vec<u8> = (0..200_000).map(|i| (i % 241) as u8).collect();
        let mut stream = Vec::new();
        for i in 0..4u8 {
            stream.extend_from_slice(&3u32.to_be_bytes());
            stream.extend_from_slice(&[i; 3]);
            stream.extend_from_slice(&(long.len() as u32).to_be_bytes());
            stream.extend_from_slice(&long);
        }
        let mut out = Vec::new();
        let mut got = 0;
        for (i, piece) in stream.chunks(60_000).enumerate() {
            a.insert((i * 60_000) as u64, piece);
            // Only prefixes pass through the ring: it never grows past its first page.
            assert!(
                a.ring.capacity() <= 4096,
                "the ring grew to {}",
                a.ring.capacity()
            );
            while let Some(len) = a.ready_len() {
                a.pop_into(len, &mut out);
                let want: &[u8] = if got % 2 == 0 {
                    &[(got / 2) as u8; 3]
                } else {
                    &long
                };
                assert!(out == want, "message {got}");
                got += 1;
            }
        }
        assert_eq!(got, 8);
    }

    /// A length prefix completed by its first byte arriving last, alone: the long message
    /// joins the chain with nothing left of the packet to place.
    #[test]
    fn a_prefix_completed_by_its_first_byte() {
        let mut a = Assembler::new(4 << 20);
        let long: Vec<u8> = (0..40_000).map(|i| (i % 239) as u8).collect();
        let mut stream = (long.len() as u32).to_be_bytes().to_vec();
        stream.extend_from_slice(&long);
        a.insert(1, &stream[1..3]);
        a.insert(3, &stream[3..100]);
        a.insert(0, &stream[..1]);
        a.insert(100, &stream[100..]);
        let len = a.ready_len().expect("complete");
        let mut out = Vec::new();
        a.pop_into(len, &mut out);
        assert!(out == long);
    }

    /// Thousands of empty messages, unread: the chain stops at its cap and the rest waits in
    /// the ring; all come out, in order, once read.
    #[test]
    fn the_chain_is_capped() {
        let mut a = Assembler::new(4 << 20);
        let long: Vec<u8> = (0..20_000).map(|i| (i % 233) as u8).collect();
        let mut stream = Vec::new();
        for _ in 0..5000 {
            stream.extend_from_slice(&0u32.to_be_bytes());
        }
        stream.extend_from_slice(&(long.len() as u32).to_be_bytes());
        stream.extend_from_slice(&long);
        for (i, piece) in stream.chunks(1000).enumerate() {
            a.insert((i * 1000) as u64, piece);
            assert!(a.chain.len() <= MAX_CHAIN);
        }
        let mut out = vec![1u8; 3];
        for i in 0..5000 {
            let len = a.ready_len().expect("complete");
            a.pop_into(len, &mut out);
            assert!(out.is_empty(), "message {i}");
        }
        let len = a.ready_len().expect("complete");
        a.pop_into(len, &mut out);
        assert!(out == long);
        assert_eq!(a.ready_len(), None);
    }

    /// The first byte of a window lost, the rest received: the long messages wait in the
    /// ring, and when the byte arrives they are read from there rather than moved, so the
    /// memory held stays what the ring alone needed (the connection's bounds, e.g. the
    /// fuzzing harness's 256 KiB for a 128 KiB window, hold).
    #[test]
    fn a_late_first_byte_does_not_double_the_memory_held() {
        let window = 128usize << 10;
        let mut a = Assembler::new(64 << 10);
        let mut stream = Vec::new();
        while stream.len() < window {
            stream.extend_from_slice(&65532u32.to_be_bytes());
            stream.extend((0..65532).map(|i| (i % 227) as u8));
        }
        for (i, piece) in stream[1..].chunks(1400).enumerate() {
            a.insert(1 + (i * 1400) as u64, piece);
        }
        let before = a.capacity();
        a.insert(0, &stream[..1]);
        assert!(
            a.capacity() <= before,
            "{} after, {before} before",
            a.capacity()
        );
        assert!(a.chain.is_empty(), "messages moved out of the ring");
        let mut out = Vec::new();
        for _ in 0..2 {
            let len = a.ready_len().expect("complete");
            a.pop_into(len, &mut out);
            assert!(out[..] == stream[4..4 + 65532]);
        }
        // Emptied, the ring gave its memory back.
        assert!(a.capacity() <= 4096, "{} held", a.capacity());
    }

    /// A prefix announcing a message longer than `DIRECT_MAX` allocates nothing up front: it
    /// waits in the ring like a short one.
    #[test]
    fn a_long_prefix_alone_allocates_nothing() {
        let mut a = Assembler::new(64 << 20);
        a.insert(0, &(32u32 << 20).to_be_bytes());
        assert_eq!(a.head_len(), Some(32 << 20));
        assert!(a.capacity() <= 4096, "{} bytes held", a.capacity());
        assert_eq!(a.ready_len(), None);
    }
}
