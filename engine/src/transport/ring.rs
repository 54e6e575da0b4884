//! A growable byte ring addressed by offset from its head; backs the stream send and receive
//! buffers without per-packet allocation.

use st_proto::crc::copy_crc32c_append;

/// Byte ring. Capacity is a whole number of pages and only grows (to a bound the caller
/// enforces).
#[derive(Debug, Default)]
pub(crate) struct Ring {
    buf: Vec<u8>,
    head: usize,
    len: usize,
}

impl Ring {
    /// Bytes from the head to the highest byte written.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
    /// True if no bytes are held.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Allocated capacity.
    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }
    fn reserve(&mut self, need: usize) {
        if need <= self.buf.len() {
            return;
        }
        let old = self.buf.len();
        // Half as much again (not double: a ring is touched all over as it cycles, so every
        // byte of capacity costs a page fault), in whole pages.
        let cap = need.max(old + old / 2).max(4096).next_multiple_of(4096);
        // Grown in place: a large buffer is reallocated by remapping its pages, so the bytes
        // held are neither copied nor is a second buffer's worth of fresh pages touched (a
        // connection's rings grow to megabytes; page faults were a visible share of a busy
        // peer's CPU). `reserve_exact` first: `resize` alone would double the allocation.
        self.buf.reserve_exact(cap - old);
        self.buf.resize(cap, 0);
        if self.head + self.len > old {
            // The bytes wrapped: `[head, old)` then `[0, tail)`. The shorter part moves, the
            // front one to just past the old end if it fits there, else the back one to the
            // new end (`len < cap`, so the two never overlap).
            let tail = self.head + self.len - old;
            let back = old - self.head;
            if tail <= back && tail <= cap - old {
                self.buf.copy_within(..tail, old);
            } else {
                let head = cap - back;
                self.buf.copy_within(self.head..old, head);
                self.head = head;
            }
        }
    }

    /// `head + off` as an index: both are below the capacity, so one subtraction wraps it.
    fn index(&self, off: usize) -> usize {
        let i = self.head + off;
        if i >= self.buf.len() {
            i - self.buf.len()
        } else {
            i
        }
    }
    /// Writes `data` at `off` bytes from the head, growing as needed.
    pub(crate) fn write_at(&mut self, off: usize, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = off + data.len();
        self.reserve(end);
        let cap = self.buf.len();
        let start = self.index(off);
        let first = (cap - start).min(data.len());
        self.buf[start..start + first].copy_from_slice(&data[..first]);
        self.buf[..data.len() - first].copy_from_slice(&data[first..]);
        self.len = self.len.max(end);
    }
    /// Appends at the end.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.write_at(self.len, data);
    }
    /// Appends `len` bytes that `fill` writes in place: it gets the space as two slices (the
    /// second is empty unless the ring wraps there). If `fill` fails nothing is appended.
    pub(crate) fn append_with<E>(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8], &mut [u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if len == 0 {
            return fill(&mut [], &mut []);
        }
        let end = self.len + len;
        self.reserve(end);
        let cap = self.buf.len();
        let start = self.index(self.len);
        let first = (cap - start).min(len);
        // The free space is [start, start + first) and, if it wraps, [0, len - first), which
        // lies below `start` (the bytes in use sit between them).
        let (lo, hi) = self.buf.split_at_mut(start);
        fill(&mut hi[..first], &mut lo[..len - first])?;
        self.len = end;
        Ok(())
    }

    /// Drops the last `n` bytes appended (undoes a partial append).
    pub(crate) fn truncate_tail(&mut self, n: usize) {
        self.len = self.len.saturating_sub(n);
    }

    /// The `len` bytes starting `off` bytes from the head, as two slices (the second empty
    /// unless they wrap). The caller keeps `off + len <= len()`.
    fn slices(&self, off: usize, len: usize) -> (&[u8], &[u8]) {
        if len == 0 {
            return (&[], &[]);
        }
        let start = self.index(off);
        let first = (self.buf.len() - start).min(len);
        (&self.buf[start..start + first], &self.buf[..len - first])
    }
    /// Copies `out.len()` bytes starting `off` bytes from the head. The caller keeps
    /// `off + out.len() <= len()`.
    pub(crate) fn read_at(&self, off: usize, out: &mut [u8]) {
        let (a, b) = self.slices(off, out.len());
        out[..a.len()].copy_from_slice(a);
        out[a.len()..].copy_from_slice(b);
    }
    /// [`Ring::read_at`], returning the CRC-32C of the bytes continued from `crc`: a packet's
    /// checksum is computed as its payload is copied in, in one pass (spec transport.md §2.1).
    pub(crate) fn read_at_crc(&self, off: usize, out: &mut [u8], crc: u32) -> u32 {
        let (a, b) = self.slices(off, out.len());
        let (oa, ob) = out.split_at_mut(a.len());
        copy_crc32c_append(copy_crc32c_append(crc, oa, a), ob, b)
    }
    /// Copies `len` bytes at `off` into `out` (cleared first; its allocation is reused).
    pub(crate) fn read_into(&self, off: usize, len: usize, out: &mut Vec<u8>) {
        out.clear();
        let (a, b) = self.slices(off, len);
        out.extend_from_slice(a);
        out.extend_from_slice(b);
    }

    /// Moves the head `n` bytes on, `n` possibly past the last byte held: offsets are then
    /// counted from there (the bytes skipped are stored elsewhere or were never received).
    pub(crate) fn skip(&mut self, n: usize) {
        if n >= self.len {
            self.head = 0;
            self.len = 0;
        } else {
            self.consume(n);
        }
    }

    /// Drops `n` bytes from the head.
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        if self.buf.is_empty() {
            return;
        }
        self.head = self.index(n);
        self.len -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random pushes, gapped writes and consumes against a plain byte vector: the ring must
    /// hold the same bytes from its head however often it grew while wrapped.
    #[test]
    fn grows_in_place_with_the_bytes_in_order() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut r = Ring::default();
        let mut model: Vec<u8> = Vec::new();
        let mut grew_wrapped = 0;
        let mut most = 0;
        let mut byte = 0u8;
        for _ in 0..4000 {
            let (cap, wrapped) = (r.capacity(), r.head + r.len > r.capacity());
            match next(3) {
                0 => {
                    let n = next(3000) as usize;
                    let data: Vec<u8> = (0..n)
                        .map(|_| {
                            byte = byte.wrapping_add(1);
                            byte
                        })
                        .collect();
                    r.push(&data);
                    model.extend_from_slice(&data);
                }
                1 => {
                    // A write past the end leaves a gap (out-of-order data on the receive
                    // side); what the gap holds is unspecified, so the model takes it from
                    // the ring once the bytes around it are checked.
                    let held_before = model.len();
                    let off = held_before + next(500) as usize;
                    let data = [byte; 7];
                    r.write_at(off, &data);
                    let mut held = vec![0u8; off + data.len()];
                    r.read_at(0, &mut held);
                    assert_eq!(held[..held_before], model[..]);
                    assert_eq!(held[off..], data);
                    model = held;
                }
                _ => {
                    let n = (next(4000) as usize).min(model.len());
                    r.consume(n);
                    model.drain(..n);
                }
            }
            grew_wrapped += usize::from(wrapped && r.capacity() > cap);
            assert_eq!(r.len(), model.len());
            let mut held = vec![0u8; model.len()];
            r.read_at(0, &mut held);
            assert_eq!(held, model);
            // Growth is by half again, in pages: never more than that over the most held.
            most = most.max(r.len());
            assert!(r.capacity() <= (most * 3 / 2).max(4096).next_multiple_of(4096));
        }
        assert!(grew_wrapped > 0, "the test never grew a wrapped ring");
    }

    /// Growing a ring whose bytes wrapped, both ways: the front part moves past the old end
    /// (it is the shorter), or the back part moves to the new end.
    #[test]
    fn a_wrapped_ring_grows_by_moving_its_shorter_part() {
        const CAP: usize = 16 << 10;
        for (back, front) in [(12_000usize, 2000usize), (1000, 12_000)] {
            let mut r = Ring::default();
            r.push(&vec![0; CAP]);
            r.consume(CAP);
            r.push(&vec![0; CAP - back]);
            r.consume(CAP - back);
            // `back` bytes to the end of the ring, `front` wrapped to its start.
            let data: Vec<u8> = (0..back + front + 4000).map(|i| (i % 251) as u8).collect();
            r.push(&data[..back + front]);
            assert_eq!((r.capacity(), r.head), (CAP, CAP - back));
            r.push(&data[back + front..]);
            assert_eq!(r.capacity(), CAP * 3 / 2, "half as much again, not double");
            let mut held = vec![0u8; data.len()];
            r.read_at(0, &mut held);
            assert_eq!(held, data, "back {back}, front {front}");
        }
    }

    /// The checksum of bytes read across the ring's end is that of the bytes, continued.
    #[test]
    fn a_checksummed_read_across_the_wrap() {
        let mut r = Ring::default();
        r.push(&[0; 3000]);
        r.consume(3000);
        let data: Vec<u8> = (0..2000u32).map(|i| (i * 7) as u8).collect();
        r.push(&data);
        assert!(r.head + r.len() > r.capacity(), "the bytes wrap");
        let mut out = vec![0u8; 1500];
        let c = r.read_at_crc(300, &mut out, 0x1234_5678);
        assert_eq!(out, data[300..1800]);
        assert_eq!(
            c,
            st_proto::crc::crc32c_append(0x1234_5678, &data[300..1800])
        );
    }

    #[test]
    fn wraps_and_grows() {
        let mut r = Ring::default();
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        r.push(&data[..3000]);
        r.consume(2500);
        r.push(&data[3000..]);
        let mut out = vec![0u8; 7500];
        r.read_at(0, &mut out);
        assert_eq!(out, data[2500..]);
        r.write_at(7600, b"xy");
        assert_eq!(r.len(), 7602);
        let mut o = [0u8; 2];
        r.read_at(7600, &mut o);
        assert_eq!(&o, b"xy");
        // In-place appends, across the wrap, and one that fails (nothing appended).
        let mut w = Ring::default();
        w.push(&[0; 3000]);
        w.consume(3000);
        let before = w.len();
        let r2: Result<(), ()> = w.append_with(2000, |a, b| {
            assert_eq!(
                (a.len(), b.len()),
                (1096, 904),
                "4096-byte ring, tail at 3000"
            );
            a.fill(7);
            b.fill(8);
            Ok(())
        });
        assert!(r2.is_ok());
        let mut got = vec![0u8; 2000];
        w.read_at(before, &mut got);
        assert!(got[..1096].iter().all(|&x| x == 7) && got[1096..].iter().all(|&x| x == 8));
        assert_eq!(w.append_with(10, |_, _| Err("no")), Err("no"));
        assert_eq!(w.len(), before + 2000);
        w.truncate_tail(500);
        assert_eq!(w.len(), before + 1500);
        let mut v = vec![1, 2, 3];
        r.read_into(0, 7500, &mut v);
        assert_eq!(v, data[2500..]);
        r.read_into(7600, 2, &mut v);
        assert_eq!(v, b"xy");
    }
}
