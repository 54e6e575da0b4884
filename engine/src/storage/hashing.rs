//! Fragment hashes built as blocks are written (`spec/peer.md` §8.2): the SHA-256 of each
//! fragment's in-order prefix, fed from the block buffers while they are hot, and the check of
//! a whole fragment, which reads back from disk only what follows that prefix.
//!
//! The rules: a block that starts where the fragment's hashed prefix ends extends it; a block
//! that starts below that end was written over bytes already hashed, so the prefix is void
//! (the bytes on disk are what counts) and the check reads the whole fragment back; a block
//! that starts above it (out of order) leaves the prefix as it is. Blocks are given here in
//! the order they were written, after the write. Blocks of two fragments that both extend
//! their prefixes may be hashed together ([`Prefixes::written_pair`]), which on CPUs with the
//! SHA extensions takes about the time of one (`st_proto::sha256`).

use std::collections::HashMap;

use st_proto::sha256::Sha256;

use super::{Storage, StorageError};

/// Largest read-back at a time (the reused buffer's size at most).
const READ_BACK: usize = 1 << 20;

/// The in-order prefix hashes of the fragments being written.
#[derive(Default)]
pub(crate) struct Prefixes {
    /// Fragment → the SHA-256 of its prefix written in order, and that prefix's length.
    hashing: HashMap<u32, (Sha256, u32)>,
    /// Read-back buffer of [`Prefixes::check`], kept between calls.
    scratch: Vec<u8>,
}

impl Prefixes {
    /// `data` was written at `offset` of `fragment`.
    pub(crate) fn written(&mut self, fragment: u32, offset: u32, data: &[u8]) {
        let mut hashed = self.hashing.get(&fragment).map_or(0, |e| e.1);
        if offset < hashed {
            self.hashing.remove(&fragment);
            hashed = 0;
        }
        if offset == hashed && !data.is_empty() {
            let e = self
                .hashing
                .entry(fragment)
                .or_insert_with(|| (Sha256::new(), 0));
            e.0.update(data);
            e.1 += data.len() as u32;
        }
    }

    /// Whether a block at `offset` of `fragment` would extend its hashed prefix (which is
    /// empty for a fragment not seen yet).
    pub(crate) fn extends(&self, fragment: u32, offset: u32) -> bool {
        offset == self.hashing.get(&fragment).map_or(0, |e| e.1)
    }

    /// Two [`Prefixes::written`] at once, hashed side by side: `a` at `offset_a` of
    /// `fragment_a` and `b` at `offset_b` of `fragment_b`, each extending its fragment's prefix
    /// ([`Prefixes::extends`]) and the fragments different; otherwise one after the other.
    pub(crate) fn written_pair(
        &mut self,
        (fragment_a, offset_a, a): (u32, u32, &[u8]),
        (fragment_b, offset_b, b): (u32, u32, &[u8]),
    ) {
        if fragment_a == fragment_b
            || !self.extends(fragment_a, offset_a)
            || !self.extends(fragment_b, offset_b)
        {
            self.written(fragment_a, offset_a, a);
            self.written(fragment_b, offset_b, b);
            return;
        }
        let (mut x, lx) = self.hashing.remove(&fragment_a).unwrap_or_default();
        let (mut y, ly) = self.hashing.remove(&fragment_b).unwrap_or_default();
        Sha256::update_pair(&mut x, a, &mut y, b);
        self.hashing.insert(fragment_a, (x, lx + a.len() as u32));
        self.hashing.insert(fragment_b, (y, ly + b.len() as u32));
    }

    /// Length of fragment `i`'s hashed prefix, if it has one.
    #[cfg(test)]
    pub(crate) fn hashed(&self, i: u32) -> Option<u32> {
        self.hashing.get(&i).map(|e| e.1)
    }

    /// Drops what was hashed of fragment `i` (it was written whole by other means).
    pub(crate) fn forget(&mut self, i: u32) {
        self.hashing.remove(&i);
    }

    /// Checks fragment `i` of `storage` against its SHA-256: the hashed prefix is taken as it
    /// is, the rest is read back from `storage`. The prefix is used up either way.
    pub(crate) fn check(&mut self, storage: &Storage, i: u32) -> Result<bool, StorageError> {
        let Some(&want) = storage.hashes.get(i as usize) else {
            return Err(StorageError::NoSuchFragment(i));
        };
        let len = storage.fragment_len(i);
        let (mut h, mut at) = self.hashing.remove(&i).unwrap_or_default();
        if at > len {
            (h, at) = (Sha256::new(), 0);
        }
        // The buffer only grows (to at most READ_BACK), so it is zeroed once, not per check.
        let size = ((len - at) as usize).min(READ_BACK);
        if self.scratch.len() < size {
            self.scratch.resize(size, 0);
        }
        while at < len {
            let n = ((len - at) as usize).min(self.scratch.len());
            storage.read(i, at, &mut self.scratch[..n])?;
            h.update(&self.scratch[..n]);
            at += n as u32;
        }
        Ok(h.finalize() == want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(d: &[u8]) -> [u8; 32] {
        Sha256::digest(d)
    }

    /// A pair extends both prefixes as two single writes would; when one of the two would not
    /// extend its prefix (or both are of one fragment), the rules of single writes apply.
    #[test]
    fn a_pair_of_writes_hashes_as_two_single_writes() {
        let a: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let b: Vec<u8> = (0..3000u32).map(|i| (i * 13 + 1) as u8).collect();
        let mut p = Prefixes::default();
        p.written_pair((1, 0, &a[..640]), (2, 0, &b[..1000]));
        assert_eq!((p.hashed(1), p.hashed(2)), (Some(640), Some(1000)));
        assert!(p.extends(1, 640) && p.extends(2, 1000) && !p.extends(1, 0));
        p.written_pair((1, 640, &a[640..]), (2, 1000, &b[1000..]));
        let take = |p: &mut Prefixes, i: u32| {
            let (h, n) = p.hashing.remove(&i).expect("a prefix");
            (h.finalize(), n)
        };
        assert_eq!(take(&mut p, 1), (digest(&a), 1000));
        assert_eq!(take(&mut p, 2), (digest(&b), 3000));
        // 3 at 0 rewrites its hashed prefix: the prefix is void, as for a single write; 4
        // extends its own.
        p.written(3, 0, &a[..100]);
        p.written_pair((3, 0, &a[..50]), (4, 0, &b[..64]));
        assert_eq!((p.hashed(3), p.hashed(4)), (Some(50), Some(64)));
        // Both of one fragment: one after the other.
        p.written_pair((5, 0, &a[..10]), (5, 10, &a[10..30]));
        assert_eq!(p.hashed(5), Some(30));
        assert_eq!(take(&mut p, 5), (digest(&a[..30]), 30));
    }
}
