//! Stores for tests and simulations: [`MemStore`] keeps the bytes in memory,
//! [`SyntheticStore`] keeps none (content is a function of the position), [`Shared`] lets a
//! test keep a store across a simulated crash, and [`Faulty`] injects disk faults. Not
//! production API (feature `sim`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use st_proto::st_file::Geometry;

use super::store::{Done, Store, SwarmStore};
use crate::time::Time;

/// Length of fragment `i` of `total` bytes in fragments of `fragment_length`.
fn fragment_len(total: u64, fragment_length: u32, i: u32) -> usize {
    Geometry::new(total, fragment_length).map_or(0, |g| g.len(i) as usize)
}

/// A node's data in memory, checked against the fragments' SHA-256.
#[derive(Debug)]
pub struct MemStore {
    /// The bytes (all of them for a seed; zero where nothing arrived yet).
    pub data: Vec<u8>,
    hashes: Vec<[u8; 32]>,
    fragment_length: u32,
    verified: Vec<bool>,
    /// Verified fragments as of the last sync: what survives a crash (the resume file).
    recorded: Vec<bool>,
    done: VecDeque<Done>,
}

impl Clone for MemStore {
    /// A copy of the data and the verified sets (results not yet taken are not copied).
    fn clone(&self) -> Self {
        MemStore {
            data: self.data.clone(),
            hashes: self.hashes.clone(),
            fragment_length: self.fragment_length,
            verified: self.verified.clone(),
            recorded: self.recorded.clone(),
            done: VecDeque::new(),
        }
    }
}

impl MemStore {
    /// A store holding `data` in full (a seed).
    pub fn full(data: &[u8], fragment_length: u32) -> MemStore {
        let hashes: Vec<[u8; 32]> = data
            .chunks(fragment_length as usize)
            .map(|c| Sha256::digest(c).into())
            .collect();
        MemStore {
            data: data.to_vec(),
            verified: vec![true; hashes.len()],
            recorded: vec![true; hashes.len()],
            hashes,
            fragment_length,
            done: VecDeque::new(),
        }
    }

    /// An empty store for the same content as `seed` (a fetcher).
    pub fn empty_like(seed: &MemStore) -> MemStore {
        MemStore {
            data: vec![0; seed.data.len()],
            hashes: seed.hashes.clone(),
            fragment_length: seed.fragment_length,
            verified: vec![false; seed.hashes.len()],
            recorded: vec![false; seed.hashes.len()],
            done: VecDeque::new(),
        }
    }

    /// The process died: what was verified but not synced is forgotten (the bytes stay, as
    /// written data stays in a `.part` file).
    pub fn crash(&mut self) {
        self.verified.clone_from(&self.recorded);
        self.done.clear();
    }

    /// Fragments recorded by the last sync.
    pub fn recorded(&self, i: u32) -> bool {
        self.recorded.get(i as usize).copied().unwrap_or(false)
    }

    fn range(&self, fragment: u32, offset: u32, len: usize) -> io::Result<std::ops::Range<usize>> {
        let start = fragment as usize * self.fragment_length as usize + offset as usize;
        if start + len > self.data.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "out of range"));
        }
        Ok(start..start + len)
    }
}

impl Store for MemStore {
    fn read(&mut self, fragment: u32, offset: u32, buf: &mut [u8]) -> io::Result<()> {
        let r = self.range(fragment, offset, buf.len())?;
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }
    fn write(&mut self, fragment: u32, offset: u32, data: &[u8]) -> io::Result<()> {
        let r = self.range(fragment, offset, data.len())?;
        self.data[r].copy_from_slice(data);
        Ok(())
    }
    fn verify(&mut self, i: u32) -> io::Result<Option<bool>> {
        let len = fragment_len(self.data.len() as u64, self.fragment_length, i);
        let r = self.range(i, 0, len)?;
        let ok = self
            .hashes
            .get(i as usize)
            .is_some_and(|h| <[u8; 32]>::from(Sha256::digest(&self.data[r])) == *h);
        if let Some(v) = self.verified.get_mut(i as usize) {
            *v = ok;
        }
        Ok(Some(ok))
    }
}

impl SwarmStore for MemStore {
    fn is_verified(&self, i: u32) -> bool {
        self.verified.get(i as usize).copied().unwrap_or(false)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.recorded.clone_from(&self.verified);
        let n = self.recorded.iter().filter(|&&v| v).count();
        self.done.push_back(Done::Synced(Ok(n)));
        Ok(())
    }
    fn finish(&mut self) -> io::Result<()> {
        let r = if self.verified.iter().all(|&v| v) {
            self.recorded.clone_from(&self.verified);
            Ok(())
        } else {
            Err(io::Error::other("not every fragment is verified"))
        };
        self.done.push_back(Done::Finished(r));
        Ok(())
    }
    fn poll_done(&mut self) -> Option<Done> {
        self.done.pop_front()
    }
}

/// A store that keeps no bytes: byte `p` of the content is a fixed function of `p` and a
/// seed, reads generate it, writes are compared with it and dropped, and a fragment verifies
/// when every one of its bytes was written correctly since its last verification (the
/// equivalent of its hash matching, at memcmp cost). Memory: a few bytes per fragment.
#[derive(Debug)]
pub struct SyntheticStore {
    seed: u64,
    total: u64,
    fragment_length: u32,
    verified: Vec<bool>,
    /// Correct bytes written per fragment since its last verification.
    good: Vec<u32>,
    /// A wrong byte was written to the fragment since its last verification.
    bad: Vec<bool>,
    done: VecDeque<Done>,
}

impl Clone for SyntheticStore {
    /// A copy of the state (results not yet taken are not copied).
    fn clone(&self) -> Self {
        SyntheticStore {
            seed: self.seed,
            total: self.total,
            fragment_length: self.fragment_length,
            verified: self.verified.clone(),
            good: self.good.clone(),
            bad: self.bad.clone(),
            done: VecDeque::new(),
        }
    }
}

impl SyntheticStore {
    /// A store of `total` bytes of content `seed`, holding everything (`full`) or nothing.
    pub fn new(seed: u64, total: u64, fragment_length: u32, full: bool) -> SyntheticStore {
        let n = total.div_ceil(u64::from(fragment_length)) as usize;
        SyntheticStore {
            seed,
            total,
            fragment_length,
            verified: vec![full; n],
            good: vec![0; n],
            bad: vec![false; n],
            done: VecDeque::new(),
        }
    }

    fn word(&self, w: u64) -> u64 {
        let mut z = (w ^ self.seed).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fills `buf` with the content at absolute position `pos`.
    pub fn content(&self, pos: u64, buf: &mut [u8]) {
        let mut p = pos;
        let mut k = 0;
        while k < buf.len() {
            let w = self.word(p / 8).to_le_bytes();
            let skip = (p % 8) as usize;
            let n = (8 - skip).min(buf.len() - k);
            buf[k..k + n].copy_from_slice(&w[skip..skip + n]);
            k += n;
            p += n as u64;
        }
    }

    fn matches(&self, pos: u64, data: &[u8]) -> bool {
        let mut chunk = [0u8; 4096];
        data.chunks(chunk.len()).enumerate().all(|(j, d)| {
            let c = &mut chunk[..d.len()];
            self.content(pos + (j * 4096) as u64, c);
            c == d
        })
    }

    fn position(&self, fragment: u32, offset: u32, len: usize) -> io::Result<u64> {
        let pos = u64::from(fragment) * u64::from(self.fragment_length) + u64::from(offset);
        if u64::from(offset) + len as u64 > u64::from(self.fragment_length)
            || pos + len as u64 > self.total
        {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "out of range"));
        }
        Ok(pos)
    }
}

impl Store for SyntheticStore {
    fn read(&mut self, fragment: u32, offset: u32, buf: &mut [u8]) -> io::Result<()> {
        let pos = self.position(fragment, offset, buf.len())?;
        self.content(pos, buf);
        Ok(())
    }
    fn write(&mut self, fragment: u32, offset: u32, data: &[u8]) -> io::Result<()> {
        let pos = self.position(fragment, offset, data.len())?;
        let i = fragment as usize;
        if self.matches(pos, data) {
            self.good[i] = self.good[i].saturating_add(data.len() as u32);
        } else {
            self.bad[i] = true;
        }
        Ok(())
    }
    fn verify(&mut self, i: u32) -> io::Result<Option<bool>> {
        let k = i as usize;
        if k >= self.verified.len() {
            return Ok(Some(false));
        }
        let len = fragment_len(self.total, self.fragment_length, i);
        let ok = !self.bad[k] && self.good[k] as usize == len;
        self.verified[k] = ok;
        self.good[k] = 0;
        self.bad[k] = false;
        Ok(Some(ok))
    }
}

impl SwarmStore for SyntheticStore {
    fn is_verified(&self, i: u32) -> bool {
        self.verified.get(i as usize).copied().unwrap_or(false)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.done.push_back(Done::Synced(Ok(0)));
        Ok(())
    }
    fn finish(&mut self) -> io::Result<()> {
        self.done.push_back(Done::Finished(Ok(())));
        Ok(())
    }
    fn poll_done(&mut self) -> Option<Done> {
        self.done.pop_front()
    }
}

/// A store a simulated process can crash with: what it had verified but not yet synced is
/// forgotten, as a real process forgets what its resume file does not say.
pub trait SimStore: SwarmStore {
    /// The process holding the store died.
    fn crash(&mut self) {}
}

impl SimStore for MemStore {
    fn crash(&mut self) {
        MemStore::crash(self);
    }
}

impl SimStore for SyntheticStore {}

impl<S: SimStore> SimStore for Faulty<S> {
    fn crash(&mut self) {
        self.inner.crash();
    }
}

/// A store shared between a test and the node that uses it, so that it outlives the node (a
/// crash drops the node; the data, like a disk's, stays).
#[derive(Debug, Default)]
pub struct Shared<S>(pub Rc<RefCell<S>>);

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared(Rc::clone(&self.0))
    }
}

impl<S> Shared<S> {
    /// Shares `s`.
    pub fn new(s: S) -> Shared<S> {
        Shared(Rc::new(RefCell::new(s)))
    }
}

impl<S: Store> Store for Shared<S> {
    fn read(&mut self, fragment: u32, offset: u32, buf: &mut [u8]) -> io::Result<()> {
        self.0.borrow_mut().read(fragment, offset, buf)
    }
    fn write(&mut self, fragment: u32, offset: u32, data: &[u8]) -> io::Result<()> {
        self.0.borrow_mut().write(fragment, offset, data)
    }
    fn verify(&mut self, i: u32) -> io::Result<Option<bool>> {
        self.0.borrow_mut().verify(i)
    }
    fn prefetch(&mut self, fragment: u32, offset: u32, len: u32) -> bool {
        self.0.borrow_mut().prefetch(fragment, offset, len)
    }
}

impl<S: SwarmStore> SwarmStore for Shared<S> {
    fn is_verified(&self, i: u32) -> bool {
        self.0.borrow().is_verified(i)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.borrow_mut().sync()
    }
    fn finish(&mut self) -> io::Result<()> {
        self.0.borrow_mut().finish()
    }
    fn poll_done(&mut self) -> Option<Done> {
        self.0.borrow_mut().poll_done()
    }
}

/// Disk faults to inject.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Writes fail with "no space left" once this many bytes were written.
    pub space: Option<u64>,
    /// Reads of these fragments fail with an IO error.
    pub bad_reads: Vec<u32>,
    /// A slow disk: each verification's result comes back (through `poll_done`, as from a
    /// disk thread) this long after it was asked, on the clock the test advances.
    pub slow_verify: Option<(Duration, Rc<Cell<Time>>)>,
    /// A slow disk for reads: each prefetch ([`Store::prefetch`]) is answered (through
    /// `poll_done`, as [`Done::Prefetched`], as from a disk thread) this long after it was
    /// asked, on the clock the test advances.
    pub slow_reads: Option<(Duration, Rc<Cell<Time>>)>,
}

/// A store with disk faults ([`Faults`]) in front of another.
#[derive(Debug)]
pub struct Faulty<S> {
    inner: S,
    /// The faults; change them at any time.
    pub faults: Faults,
    written: u64,
    /// Reads that failed.
    pub failed_reads: u64,
    /// Verifications held back by `slow_verify`: when due, and which fragment.
    held: VecDeque<(Time, u32)>,
    /// Prefetches held back by `slow_reads`: when due, and the range.
    held_reads: VecDeque<(Time, u32, u32, u32)>,
    released: VecDeque<Done>,
}

impl<S> Faulty<S> {
    /// `inner` with `faults`.
    pub fn new(inner: S, faults: Faults) -> Faulty<S> {
        Faulty {
            inner,
            faults,
            written: 0,
            failed_reads: 0,
            held: VecDeque::new(),
            held_reads: VecDeque::new(),
            released: VecDeque::new(),
        }
    }
    /// The store behind.
    pub fn inner(&self) -> &S {
        &self.inner
    }
    /// The store behind, to change.
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: Store> Store for Faulty<S> {
    fn read(&mut self, fragment: u32, offset: u32, buf: &mut [u8]) -> io::Result<()> {
        if self.faults.bad_reads.contains(&fragment) {
            self.failed_reads += 1;
            return Err(io::Error::other("injected read error"));
        }
        self.inner.read(fragment, offset, buf)
    }
    fn write(&mut self, fragment: u32, offset: u32, data: &[u8]) -> io::Result<()> {
        if self
            .faults
            .space
            .is_some_and(|s| self.written + data.len() as u64 > s)
        {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        self.written += data.len() as u64;
        self.inner.write(fragment, offset, data)
    }
    fn verify(&mut self, i: u32) -> io::Result<Option<bool>> {
        if let Some((delay, clock)) = &self.faults.slow_verify {
            self.held.push_back((clock.get() + *delay, i));
            return Ok(None);
        }
        self.inner.verify(i)
    }
    fn prefetch(&mut self, fragment: u32, offset: u32, len: u32) -> bool {
        if let Some((delay, clock)) = &self.faults.slow_reads {
            let due = clock.get() + *delay;
            self.held_reads.push_back((due, fragment, offset, len));
            return false;
        }
        self.inner.prefetch(fragment, offset, len)
    }
}

impl<S: SwarmStore> SwarmStore for Faulty<S> {
    fn is_verified(&self, i: u32) -> bool {
        self.inner.is_verified(i)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()
    }
    fn finish(&mut self) -> io::Result<()> {
        self.inner.finish()
    }
    fn poll_done(&mut self) -> Option<Done> {
        if let Some(d) = self.inner.poll_done() {
            return Some(d);
        }
        let now = self
            .faults
            .slow_verify
            .as_ref()
            .map_or(Time::MAX, |(_, c)| c.get());
        let now_reads = self
            .faults
            .slow_reads
            .as_ref()
            .map_or(Time::MAX, |(_, c)| c.get());
        while let Some(&(due, fragment, offset, len)) = self.held_reads.front()
            && due <= now_reads
        {
            self.held_reads.pop_front();
            self.released.push_back(Done::Prefetched {
                fragment,
                offset,
                len,
            });
        }
        while self.held.front().is_some_and(|(due, _)| *due <= now) {
            let (_, i) = self.held.pop_front()?;
            let d = match self.inner.verify(i) {
                Ok(Some(ok)) => Done::Verified(i, ok),
                Ok(None) => continue,
                Err(e) => Done::Failed(e),
            };
            self.released.push_back(d);
        }
        self.released.pop_front()
    }
}
