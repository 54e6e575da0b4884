//! The storage contract: what the peer layer ([`Store`]) and the peer node ([`SwarmStore`])
//! need of a swarm's bytes, whatever holds them (files through the disk thread, files on the
//! calling thread, memory in tests). Owns no data itself.

use std::io;
use std::path::PathBuf;

/// Where the swarm's bytes live, as the peer layer reads and writes them.
pub trait Store {
    /// Reads `buf.len()` bytes at `offset` of `fragment`.
    fn read(&mut self, fragment: u32, offset: u32, buf: &mut [u8]) -> io::Result<()>;
    /// Writes a block.
    fn write(&mut self, fragment: u32, offset: u32, data: &[u8]) -> io::Result<()>;
    /// Writes the block held in `msg[start..]`, taking the buffer: a store that writes on
    /// another thread keeps it rather than copying the block. Returns a buffer for the next
    /// message (`msg` itself when the write was done in place).
    fn write_owned(
        &mut self,
        fragment: u32,
        offset: u32,
        msg: Vec<u8>,
        start: usize,
    ) -> io::Result<Vec<u8>> {
        self.write(fragment, offset, msg.get(start..).unwrap_or_default())?;
        Ok(msg)
    }
    /// Reads fragment `i` back and checks its hash: `Some(true)` (and recorded as verified)
    /// if it matches, `Some(false)` if not, `None` if the check runs elsewhere (a disk thread)
    /// and its result comes back later as [`Done::Verified`].
    fn verify(&mut self, i: u32) -> io::Result<Option<bool>>;
    /// Readies `len` bytes at `offset` of `fragment` (a verified fragment) for a [`Store::read`]
    /// soon: true if they can be read now without waiting for a disk (memory, or a store read
    /// on the calling thread anyway), false if the store brings them in elsewhere (the disk
    /// thread reads them into the page cache) and says so later as [`Done::Prefetched`]. A
    /// failure is reported as prefetched too: the read that follows fails the usual way.
    fn prefetch(&mut self, fragment: u32, offset: u32, len: u32) -> bool {
        let _ = (fragment, offset, len);
        true
    }
}

/// A result of storage work that ran elsewhere (the disk thread) or was deferred.
#[derive(Debug)]
pub enum Done {
    /// Fragment `i` was read back and checked: true if its hash matched (it is then verified,
    /// and recorded at the next sync).
    Verified(u32, bool),
    /// A resume sync finished: how many fragments are recorded, or why it failed.
    Synced(io::Result<usize>),
    /// [`SwarmStore::finish`] finished: the files are in place, or why not.
    Finished(io::Result<()>),
    /// The range asked for by [`Store::prefetch`] can be read without waiting for the disk (or
    /// could not be read: the read that follows says why).
    Prefetched {
        /// The fragment asked for.
        fragment: u32,
        /// The offset in it.
        offset: u32,
        /// The length.
        len: u32,
    },
    /// A write (or the read-back of a verification) failed. Later writes are skipped and later
    /// verifications are not answered: the fetch must stop (verified data and the resume
    /// state are kept).
    Failed(io::Error),
}

/// A swarm's storage as the peer node drives it: the peer layer's [`Store`], plus the
/// durability steps (resume syncs, the final fsync and renames) whose results come back
/// through [`SwarmStore::poll_done`] (`spec/peer.md` §8).
pub trait SwarmStore: Store {
    /// True if fragment `i` is verified here.
    fn is_verified(&self, i: u32) -> bool;
    /// Queues a resume sync; the result comes back as [`Done::Synced`].
    fn sync(&mut self) -> io::Result<()>;
    /// Queues the final fsync and renames (every fragment is verified); the result comes back
    /// as [`Done::Finished`].
    fn finish(&mut self) -> io::Result<()>;
    /// The next result, if one is ready.
    fn poll_done(&mut self) -> Option<Done>;
    /// Where the files end up (empty for a store without files).
    fn final_paths(&self) -> Vec<PathBuf> {
        Vec::new()
    }
}

/// A [`crate::storage::Storage`] used on the calling thread: every step is done at once and its
/// result queued for [`SwarmStore::poll_done`].
pub struct Inline {
    storage: crate::storage::Storage,
    done: std::collections::VecDeque<Done>,
}

impl Inline {
    /// Wraps `storage`.
    pub fn new(storage: crate::storage::Storage) -> Inline {
        Inline {
            storage,
            done: std::collections::VecDeque::new(),
        }
    }
    /// The storage inside.
    pub fn storage(&self) -> &crate::storage::Storage {
        &self.storage
    }
}

impl std::fmt::Debug for Inline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inline").finish_non_exhaustive()
    }
}

impl Store for Inline {
    fn read(&mut self, fragment: u32, offset: u32, buf: &mut [u8]) -> io::Result<()> {
        Ok(self.storage.read(fragment, offset, buf)?)
    }
    fn write(&mut self, fragment: u32, offset: u32, data: &[u8]) -> io::Result<()> {
        Ok(self.storage.write(fragment, offset, data)?)
    }
    fn verify(&mut self, i: u32) -> io::Result<Option<bool>> {
        Ok(self.storage.verify(i).map(Some)?)
    }
}

impl SwarmStore for Inline {
    fn is_verified(&self, i: u32) -> bool {
        self.storage.has(i)
    }
    fn sync(&mut self) -> io::Result<()> {
        let r = self.storage.sync_resume().map_err(io::Error::from);
        self.done.push_back(Done::Synced(r));
        Ok(())
    }
    fn finish(&mut self) -> io::Result<()> {
        let r = self.storage.finish().map_err(io::Error::from);
        self.done.push_back(Done::Finished(r));
        Ok(())
    }
    fn poll_done(&mut self) -> Option<Done> {
        self.done.pop_front()
    }
    fn final_paths(&self) -> Vec<PathBuf> {
        self.storage.final_paths().to_vec()
    }
}

impl Store for crate::storage::Storage {
    fn read(&mut self, fragment: u32, offset: u32, buf: &mut [u8]) -> io::Result<()> {
        Ok(crate::storage::Storage::read(self, fragment, offset, buf)?)
    }
    fn write(&mut self, fragment: u32, offset: u32, data: &[u8]) -> io::Result<()> {
        Ok(crate::storage::Storage::write(
            self, fragment, offset, data,
        )?)
    }
    fn verify(&mut self, i: u32) -> io::Result<Option<bool>> {
        Ok(crate::storage::Storage::verify(self, i).map(Some)?)
    }
}
