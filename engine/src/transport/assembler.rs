//! The receive side of a connection's stream (spec §8): bytes arrive by offset, in any order
//! and possibly more than once, and leave as whole length-prefixed messages, in order.
//!
//! Short messages are reassembled in a byte ring and copied out when complete. A long message
//! (a DATA block) is assembled in a buffer of its own as soon as its length prefix is known,
//! and that buffer is handed to the application: its bytes are copied once, from the datagram
//! into the buffer, instead of into the ring and then out of it again.
//!
//! Layout: `base` is the stream offset of the head message's length prefix. From there, a chain
//! of long messages assembled directly (`direct`, each one's prefix immediately followed by its
//! body), then the ring, which holds the bytes from `ring_base` (the end of the chain) on. Only
//! the last message of the chain can be incomplete: a message joins the chain once every byte
//! before its prefix arrived.

use std::collections::VecDeque;

use super::ranges::RangeSet;
use super::ring::Ring;

/// Messages at least this long are assembled directly (a DATA block of the peer protocol is
/// 16 KiB and more; shorter messages are cheap to copy and common).
pub(crate) const DIRECT_MIN: usize = 8 << 10;
/// Messages longer than this stay in the ring: a directly assembled message is allocated
/// whole when its prefix arrives, so this bounds what a prefix alone can make us allocate.
pub(crate) const DIRECT_MAX: usize = 1 << 20;

/// A long message assembled in its own buffer.
#[derive(Debug)]
struct Direct {
    /// Stream offset of the body's first byte (just past the length prefix).
    start: u64,
    /// Length of the body.
    len: usize,
    /// The body up to the highest byte received (bytes in between not received yet are
    /// unspecified); its capacity is `len`. Bytes arriving in order are appended, so the
    /// buffer is never zeroed first.
    buf: Vec<u8>,
}

impl Direct {
    fn end(&self) -> u64 {
        self.start + self.len as u64
    }

    /// Writes `data` at `at` bytes into the body (`at + data.len() <= len`).
    fn write(&mut self, at: usize, data: &[u8]) {
        if at > self.buf.len() {
            // Out of order: a gap, overwritten when its bytes arrive.
            self.buf.resize(at, 0);
        }
        let over = (self.buf.len() - at).min(data.len());
        self.buf[at..at + over].copy_from_slice(&data[..over]);
        self.buf.extend_from_slice(&data[over..]);
    }
}

/// Reassembles a stream into messages.
#[derive(Debug)]
pub(crate) struct Assembler {
    /// Stream offset of the head message's length prefix: everything below was delivered.
    base: u64,
    /// Byte ranges received at or above `base`.
    ranges: RangeSet,
    /// The chain of directly assembled messages, from `base` on.
    direct: VecDeque<Direct>,
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
            direct: VecDeque::new(),
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

    /// Bytes held in the ring (directly assembled messages excluded).
    pub(crate) fn ring_len(&self) -> usize {
        self.ring.len()
    }

    /// Memory held: the ring's capacity and the directly assembled messages.
    pub(crate) fn capacity(&self) -> usize {
        self.ring.capacity() + self.direct.iter().map(|d| d.buf.capacity()).sum::<usize>()
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
        let (first, end) = (off, off + data.len() as u64);
        // The chain: bodies take their bytes; a prefix's bytes all arrived before its message
        // joined the chain, so they are skipped.
        for d in &mut self.direct {
            if off >= d.end() {
                continue;
            }
            if off < d.start {
                let skip = ((d.start - off) as usize).min(data.len());
                (off, data) = (off + skip as u64, &data[skip..]);
            }
            let n = ((d.end() - off) as usize).min(data.len());
            d.write((off - d.start) as usize, &data[..n]);
            (off, data) = (off + n as u64, &data[n..]);
            if data.is_empty() {
                break;
            }
        }
        if !data.is_empty() {
            // Past the chain (which ends at `ring_base`), or no chain (`ring_base == base`).
            debug_assert!(off >= self.ring_base);
            self.ring.write_at((off - self.ring_base) as usize, data);
        }
        self.ranges.insert(first, end);
        self.extend_chain();
    }

    /// The head message's length, once its prefix arrived.
    pub(crate) fn head_len(&self) -> Option<u64> {
        if let Some(d) = self.direct.front() {
            return Some(d.len as u64);
        }
        if self.contiguous() < 4 {
            return None;
        }
        let mut l = [0u8; 4];
        self.ring.read_at(0, &mut l);
        Some(u64::from(u32::from_be_bytes(l)))
    }

    /// The head message's length if it is complete and not longer than `max_message`.
    pub(crate) fn ready_len(&self) -> Option<usize> {
        let len = self.head_len()?;
        (len <= self.max_message as u64 && self.contiguous() >= 4 + len).then_some(len as usize)
    }

    /// Moves the head message (complete: [`Assembler::ready_len`] is `Some(len)`) into `out`,
    /// whose old allocation may be kept for a later message.
    pub(crate) fn pop_into(&mut self, len: usize, out: &mut Vec<u8>) {
        if let Some(mut d) = self.direct.pop_front() {
            // Every byte arrived, the last one included, so the body is all there.
            debug_assert_eq!((d.buf.len(), d.len), (len, len));
            d.buf.resize(len, 0);
            let old = std::mem::replace(out, d.buf);
            if old.capacity() > self.spare.capacity() {
                self.spare = old;
            }
        } else {
            self.ring.read_into(4, len, out);
            self.ring.skip(4 + len);
            self.ring_base += 4 + len as u64;
        }
        self.base += 4 + len as u64;
        self.ranges.remove_below(self.base);
        self.extend_chain();
    }

    /// Appends to the chain every long message at `ring_base` whose prefix arrived (every byte
    /// before it did too): the body bytes the ring holds move to the message's own buffer.
    fn extend_chain(&mut self) {
        let received_to = self.base + self.contiguous();
        while received_to >= self.ring_base + 4 {
            let mut l = [0u8; 4];
            self.ring.read_at(0, &mut l);
            let len = u32::from_be_bytes(l) as usize;
            if !(DIRECT_MIN..=DIRECT_MAX.min(self.max_message)).contains(&len) {
                return;
            }
            let mut buf = std::mem::take(&mut self.spare);
            let held = self.ring.len().saturating_sub(4).min(len);
            self.ring.read_into(4, held, &mut buf);
            buf.reserve_exact(len - held);
            self.ring.skip(4 + len);
            let start = self.ring_base + 4;
            self.ring_base = start + len as u64;
            self.direct.push_back(Direct { start, len, buf });
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
        for seed in 1..=12u64 {
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
            // Pieces of up to 3000 bytes, some sent twice, sent in windows of 64 shuffled.
            let mut pieces = Vec::new();
            let mut at = 0;
            while at < stream.len() {
                let n = (1 + next(3000) as usize).min(stream.len() - at);
                pieces.push((at, n));
                if next(8) == 0 {
                    let back = next(at as u64 + 1) as usize;
                    pieces.push((at - back, n + back));
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

    /// A prefix announcing a message longer than `DIRECT_MAX` allocates nothing up front: it
    /// waits in the ring like a short one.
    #[test]
    fn a_long_prefix_alone_allocates_nothing() {
        let mut a = Assembler::new(64 << 20);
        a.insert(0, &(32u32 << 20).to_be_bytes());
        assert_eq!(a.head_len(), Some(32 << 20));
        assert!(a.capacity() <= 4096, "{} bytes held", a.capacity());
        a.insert(0, &(32u32 << 20).to_be_bytes());
        assert_eq!(a.ready_len(), None);
    }
}
