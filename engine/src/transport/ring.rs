//! A growable byte ring addressed by offset from its head; backs the stream send and receive
//! buffers without per-packet allocation.

/// Byte ring. Capacity is a power of two and only grows (to a bound the caller enforces).
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
        let cap = need.next_power_of_two().max(4096);
        let old = self.buf.len();
        // Grown in place: a large buffer is reallocated by remapping its pages, so the bytes
        // held are neither copied nor is a second buffer's worth of fresh pages touched (a
        // connection's rings grow to megabytes; page faults were a visible share of a busy
        // peer's CPU). Only the part that had wrapped to the front moves, to just past the
        // old end: `head + len <= 2 * old <= cap`, so the bytes stay in order from `head`.
        self.buf.resize(cap, 0);
        let wrapped = (self.head + self.len).saturating_sub(old);
        if wrapped > 0 {
            self.buf.copy_within(..wrapped, old);
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
        let start = (self.head + off) & (cap - 1);
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
        let start = (self.head + self.len) & (cap - 1);
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

    /// Copies `out.len()` bytes starting `off` bytes from the head. The caller keeps
    /// `off + out.len() <= len()`.
    pub(crate) fn read_at(&self, off: usize, out: &mut [u8]) {
        if out.is_empty() {
            return;
        }
        let cap = self.buf.len();
        let start = (self.head + off) & (cap - 1);
        let first = (cap - start).min(out.len());
        let n = out.len();
        out[..first].copy_from_slice(&self.buf[start..start + first]);
        out[first..].copy_from_slice(&self.buf[..n - first]);
    }
    /// Copies `len` bytes starting `off` bytes from the head into a new vector (no zeroing).
    /// Copies `len` bytes at `off` into `out` (cleared first; its allocation is reused).
    pub(crate) fn read_into(&self, off: usize, len: usize, out: &mut Vec<u8>) {
        out.clear();
        if len == 0 {
            return;
        }
        let cap = self.buf.len();
        let start = (self.head + off) & (cap - 1);
        let first = (cap - start).min(len);
        out.extend_from_slice(&self.buf[start..start + first]);
        out.extend_from_slice(&self.buf[..len - first]);
    }

    /// Drops `n` bytes from the head.
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        if self.buf.is_empty() {
            return;
        }
        self.head = (self.head + n) & (self.buf.len() - 1);
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
            assert!(r.capacity() <= 64 << 10);
        }
        assert!(grew_wrapped > 0, "the test never grew a wrapped ring");
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
