//! Fragment hashes built as blocks are written (`spec/peer.md` §8.2): the SHA-256 of each
//! fragment's in-order prefix, fed from the block buffers while they are hot, and the check of
//! a whole fragment, which reads back from disk only what follows that prefix.
//!
//! The rules: a block that starts where the fragment's hashed prefix ends extends it; a block
//! that starts below that end was written over bytes already hashed, so the prefix is void
//! (the bytes on disk are what counts) and the check reads the whole fragment back; a block
//! that starts above it (out of order) leaves the prefix as it is. Blocks are given here in
//! the order they were written, after the write.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

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
        Ok(<[u8; 32]>::from(h.finalize()) == want)
    }
}
