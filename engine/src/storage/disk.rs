//! The disk thread (`spec/peer.md` §8): a fetch's writes, the read-back that verifies each
//! fragment, the fsyncs of the resume file and the disk reads of the blocks a peer asked for
//! run on their own thread, so that a slow disk never stalls the network reactor. With
//! nothing queued, it allocates the next chunk of a data file held in memory (§8.1), within
//! a budget, before it waits. The SHA-256
//! of the blocks written runs on a second thread, the hash thread (started with the first
//! write or check), which takes each block after its write, in order, and answers the checks
//! (module `hashing`): hashing is most of a fetch's disk work, and so it overlaps the writes.
//! It hashes blocks of two fragments side by side where it can (`st_proto::sha256`), holding a
//! few blocks back to find pairs ([`PAIR_LAG`], [`PAIR_WAIT`]).
//!
//! The reactor side ([`DiskThread`]) is a [`Store`]: `write` hands the block to the thread
//! through a bounded queue (when the queue is full the reactor waits for the disk: that is the
//! back-pressure of a disk slower than the network, and it bounds the memory held in flight;
//! the hash thread's queue is bounded alike, and a full one makes the disk thread wait),
//! `verify` queues the check and answers "pending", and `prefetch` (of a requested block of a
//! verified fragment) answers "ready" if the page cache holds the block ([`Storage::cached`]),
//! else asks the thread to read it (into a scratch buffer: what matters is that the page cache
//! then holds it) and answers "not yet"; the thread says [`Done::Prefetched`] when it is done.
//! Prefetches wait in a queue of their own, unbounded here (the peer layer bounds how many it
//! asks for ahead of what it sends), and the thread takes them before the next queued
//! operation, so that the reactor never waits to ask for one. `read` then copies the
//! block once, from the page cache into the transport's send buffer, on the reactor thread,
//! through duplicated file descriptors (a fragment is verified only after the thread wrote it,
//! so what is read is what was hashed). Results come back through [`DiskThread::poll`]; the
//! threads wake the driver (a [`Wake`]) after each one.
//!
//! A seed's store is a disk thread too, made with [`DiskThread::on_demand`]: its thread starts
//! with the first prefetch the page cache cannot answer, so that the swarms of a large library
//! that nobody asks for (or whose data is in memory) cost no thread.
//!
//! Durability is unchanged: the disk thread owns the [`Storage`], so the resume file still
//! records only fragments that were verified (the hash thread tells the disk thread before it
//! tells the reactor, and a sync first waits for the checks queued before it) and fsynced by
//! the disk thread (module `storage`).

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError, TrySendError, channel,
    sync_channel,
};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Storage;
use super::hashing::Prefixes;
use super::store::{Done, Store, SwarmStore};
use crate::driver::Wake;

/// Operations queued to the disk thread, in order.
enum Op {
    /// `data[start..]` goes at `offset` of `fragment`; the buffer comes back for reuse.
    Write {
        fragment: u32,
        offset: u32,
        data: Vec<u8>,
        start: usize,
        /// Send the buffer back for reuse (it came from [`Store::write_owned`]).
        recycle: bool,
    },
    Verify(u32),
    Sync,
    Finish,
    /// Prefetches wait in their own queue: this wakes the thread to take them.
    Prefetch,
}

/// A range to read ahead: fragment, offset, length.
type Range = (u32, u32, u32);

/// Largest read of a prefetch (a block is at most 256 KiB): the size of the thread's reused
/// buffer.
const PREFETCH_CHUNK: u32 = 256 * 1024;

/// Most operations queued to the disk thread, and most blocks queued to the hash thread: with
/// blocks of at most 256 KiB, at most 32 MiB of written data wait in memory.
pub const QUEUE: usize = 64;

/// The reactor's handle on the disk thread.
pub struct DiskThread {
    /// The reactor's ends of the channels: made with the thread, so that a swarm whose thread
    /// never starts ([`DiskThread::on_demand`]) costs no channel either (their queues are
    /// ~6 KB, 6 MB of a library of 1000 swarms). `None` before the start, or if it failed.
    ends: Option<Ends>,
    /// Reads and the verified set, on the reactor thread.
    reader: Storage,
    join: Option<JoinHandle<Storage>>,
    /// For the thread of [`DiskThread::on_demand`], until it starts.
    waker: Option<Arc<dyn Wake>>,
    /// A prefetch of a range the page cache holds answers "ready" at once (off in tests of
    /// the thread's side).
    look_in_cache: bool,
    /// Verifications queued and not answered yet.
    pending: usize,
    /// Syncs queued and not answered yet.
    syncs: usize,
    /// The thread's end was reported (as [`Done::Failed`]).
    gone_reported: bool,
}

impl std::fmt::Debug for DiskThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskThread")
            .field("pending", &self.pending)
            .finish()
    }
}

/// The reactor's ends of the channels to and from the thread.
struct Ends {
    /// Operations, in order; `None` tells the thread to stop.
    tx: Option<SyncSender<Op>>,
    /// Ranges to read ahead, taken by the thread before its next queued operation.
    prefetch: Sender<Range>,
    rx: Receiver<Done>,
    /// Write buffers the thread is done with, for the next messages.
    spent: Receiver<Vec<u8>>,
}

/// The thread's ends of the channels.
struct Parked {
    ops: Receiver<Op>,
    ahead: Receiver<Range>,
    done: Sender<Done>,
    back: Sender<Vec<u8>>,
    waker: Arc<dyn Wake>,
}

impl DiskThread {
    /// Moves `storage` to a new thread, which calls `waker` after each result.
    pub fn spawn(storage: Storage, waker: Arc<dyn Wake>) -> io::Result<DiskThread> {
        let reader = storage.reader().map_err(io::Error::from)?;
        let (ends, join) = launch(storage, waker)?;
        let mut t = DiskThread::with(reader, None);
        t.ends = Some(ends);
        t.join = Some(join);
        Ok(t)
    }

    /// A disk thread for a store that is only read (a seed's: its fragments are verified
    /// before it is made, and it is neither written nor synced): the thread, and the second
    /// set of file descriptors it reads through, are made when it is first needed (the first
    /// prefetch of a block the page cache does not hold, or any other operation), so that a
    /// seed of many swarms spends neither on those nobody asks for.
    /// Should that fail, the store reads on the calling thread, as [`super::Inline`] does.
    pub fn on_demand(storage: Storage, waker: Arc<dyn Wake>) -> DiskThread {
        DiskThread::with(storage, Some(waker))
    }

    /// The reactor's side, reading through `reader`, with no thread yet.
    fn with(reader: Storage, waker: Option<Arc<dyn Wake>>) -> DiskThread {
        DiskThread {
            ends: None,
            reader,
            join: None,
            waker,
            look_in_cache: true,
            pending: 0,
            syncs: 0,
            gone_reported: false,
        }
    }

    /// Starts the thread of [`DiskThread::on_demand`] if it is not running yet. On failure
    /// (no descriptor or thread to be had) the store reads on the calling thread from then on.
    fn start(&mut self) {
        let Some(waker) = self.waker.take() else {
            return;
        };
        let started = (self.reader.reader())
            .map_err(io::Error::from)
            .and_then(|s| launch(s, waker));
        match started {
            Ok((ends, join)) => {
                self.ends = Some(ends);
                self.join = Some(join);
            }
            Err(e) => {
                log::warn!("cannot start a disk thread ({e}): reading on the network thread");
                // Not an error of the store's: it reads as before.
                self.gone_reported = true;
            }
        }
    }

    /// Whether the channels to the thread exist (they are made with it).
    #[cfg(test)]
    pub(crate) fn has_channels(&self) -> bool {
        self.ends.is_some()
    }

    /// Sends every prefetch to the thread, even of a range the page cache holds.
    #[cfg(test)]
    pub(crate) fn always_prefetch(&mut self) {
        self.look_in_cache = false;
    }

    /// The reactor-side view: verified set, lengths, paths (reads go through it too).
    pub fn view(&self) -> &Storage {
        &self.reader
    }

    /// Verifications queued and not yet answered.
    pub fn pending(&self) -> usize {
        self.pending
    }

    fn send(&mut self, op: Op) -> io::Result<()> {
        self.start();
        let gone = || io::Error::other("the disk thread stopped");
        self.ends
            .as_ref()
            .and_then(|e| e.tx.as_ref())
            .ok_or_else(gone)?
            .send(op)
            .map_err(|_| gone())
    }

    /// The next result, if one is ready. A successful verification is applied to the view
    /// before it is returned.
    /// If the thread is gone (it cannot be, short of a panic), says so once, as
    /// [`Done::Failed`], so that the fetch stops instead of waiting for it for ever.
    pub fn poll(&mut self) -> Option<Done> {
        // Before the thread starts there is nothing to report; if it could not start, the
        // store reads inline and has nothing to report either.
        let ends = self.ends.as_ref()?;
        match ends.rx.try_recv() {
            Ok(d) => {
                self.note(&d);
                Some(d)
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) if !self.gone_reported => {
                self.gone_reported = true;
                Some(Done::Failed(io::Error::other("the disk thread stopped")))
            }
            Err(TryRecvError::Disconnected) => None,
        }
    }

    /// Applies a result to the view and the counts.
    fn note(&mut self, d: &Done) {
        match d {
            Done::Verified(i, ok) => {
                self.pending = self.pending.saturating_sub(1);
                if *ok {
                    self.reader.mark_verified(*i);
                }
            }
            Done::Synced(_) => self.syncs = self.syncs.saturating_sub(1),
            _ => {}
        }
    }

    /// Queues a resume sync; its result comes back as [`Done::Synced`].
    pub fn sync(&mut self) -> io::Result<()> {
        self.send(Op::Sync)?;
        self.syncs += 1;
        Ok(())
    }

    /// Queues the final fsync and renames (after every fragment is verified); the result
    /// comes back as [`Done::Finished`].
    pub fn finish(&mut self) -> io::Result<()> {
        self.send(Op::Finish)
    }

    /// Queues a sync and waits for it, and so for everything queued before it (syncs queued
    /// earlier included): for shutdown. Returns the sync's result, and the first write or
    /// check failure met on the way (a full disk while the queue drained: the fetch must end
    /// with an error even though the resume state was saved). Other results are applied to
    /// the view and dropped.
    pub fn sync_and_wait(&mut self) -> (io::Result<usize>, Option<io::Error>) {
        if let Err(e) = self.sync() {
            return (Err(e), None);
        }
        self.wait_for(|t, d| match d {
            Done::Synced(r) if t.syncs == 0 => Some(r),
            _ => None,
        })
    }

    /// Waits for the answer to a queued [`DiskThread::finish`] (for shutdown: a stop that came
    /// while the files were being moved into place). A write or check failure met on the way
    /// is returned instead of a success. Other results are applied and dropped.
    pub fn wait_finished(&mut self) -> io::Result<()> {
        let (r, failed) = self.wait_for(|_, d| match d {
            Done::Finished(r) => Some(r),
            _ => None,
        });
        failed.map_or(r, Err)
    }

    /// Blocks on the thread's results, applying each, until `want` takes one; returns that
    /// and the first [`Done::Failed`] met on the way (an error if the thread is gone).
    fn wait_for<T>(
        &mut self,
        mut want: impl FnMut(&Self, Done) -> Option<io::Result<T>>,
    ) -> (io::Result<T>, Option<io::Error>) {
        let mut failed = None;
        loop {
            let Some(Ok(d)) = self.ends.as_ref().map(|e| e.rx.recv()) else {
                return (Err(io::Error::other("the disk thread stopped")), failed);
            };
            self.note(&d);
            match d {
                Done::Failed(e) => {
                    failed.get_or_insert(e);
                }
                d => {
                    if let Some(r) = want(self, d) {
                        return (r, failed);
                    }
                }
            }
        }
    }

    /// Closes the operation queue: the thread stops after what is queued (its results can
    /// still come back).
    fn hang_up(&mut self) {
        if let Some(e) = &mut self.ends {
            e.tx = None;
        }
    }

    /// Stops the thread after everything queued is done, and returns the storage.
    pub fn shut_down(mut self) -> Option<Storage> {
        self.hang_up();
        self.join.take()?.join().ok()
    }
}

impl Drop for DiskThread {
    fn drop(&mut self) {
        self.hang_up();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

impl Store for DiskThread {
    fn read(&mut self, fragment: u32, offset: u32, buf: &mut [u8]) -> io::Result<()> {
        Ok(self.reader.read(fragment, offset, buf)?)
    }

    fn write(&mut self, fragment: u32, offset: u32, data: &[u8]) -> io::Result<()> {
        self.send(Op::Write {
            fragment,
            offset,
            data: data.to_vec(),
            start: 0,
            recycle: false,
        })
    }

    fn write_owned(
        &mut self,
        fragment: u32,
        offset: u32,
        msg: Vec<u8>,
        start: usize,
    ) -> io::Result<Vec<u8>> {
        let capacity = msg.capacity();
        self.send(Op::Write {
            fragment,
            offset,
            data: msg,
            start,
            recycle: true,
        })?;
        // A buffer the thread is done with, or a new one as large (the queue holds at most
        // QUEUE of them, so the pool stays bounded).
        Ok(self
            .ends
            .as_ref()
            .and_then(|e| e.spent.try_recv().ok())
            .unwrap_or_else(|| Vec::with_capacity(capacity)))
    }

    fn verify(&mut self, i: u32) -> io::Result<Option<bool>> {
        self.send(Op::Verify(i))?;
        self.pending += 1;
        Ok(None)
    }

    /// Never waits: a range the page cache holds is ready at once; any other goes to the thread's prefetch queue (unbounded), and a wake-up
    /// to the operation queue only if it has room; when it is full, the thread is busy with
    /// the operations in it and takes the prefetches after the one it is at. If the thread is
    /// gone, the range is "readable now": the read on the reactor thread then tries it.
    fn prefetch(&mut self, fragment: u32, offset: u32, len: u32) -> bool {
        // Already in the page cache: the reactor copies it at once (no second copy, no round
        // trip to the thread, and a seed's thread is not started for it).
        if self.look_in_cache && self.reader.cached(fragment, offset, len) {
            return true;
        }
        self.start();
        let Some(Ends {
            tx: Some(tx),
            prefetch,
            ..
        }) = &self.ends
        else {
            return true;
        };
        if prefetch.send((fragment, offset, len)).is_err() {
            return true;
        }
        match tx.try_send(Op::Prefetch) {
            Ok(()) | Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => true,
        }
    }
}

/// The channels between the reactor and a new thread that will wake `waker` after each result.
/// Starts the disk thread on `storage`: its channels and the thread, named `st-disk`.
fn launch(storage: Storage, waker: Arc<dyn Wake>) -> io::Result<(Ends, JoinHandle<Storage>)> {
    let (ends, parked) = channels(waker);
    let join = std::thread::Builder::new()
        .name("st-disk".into())
        .spawn(move || parked.run(storage))?;
    Ok((ends, join))
}

fn channels(waker: Arc<dyn Wake>) -> (Ends, Parked) {
    let (tx, ops) = sync_channel::<Op>(QUEUE);
    let (done, rx) = channel::<Done>();
    let (back, spent) = channel::<Vec<u8>>();
    let (prefetch, ahead) = channel::<Range>();
    let ends = Ends {
        tx: Some(tx),
        prefetch,
        rx,
        spent,
    };
    let parked = Parked {
        ops,
        ahead,
        done,
        back,
        waker,
    };
    (ends, parked)
}

impl Parked {
    /// The thread: runs the operations in order until the reactor side hangs up, and after
    /// each one the prefetches asked for meanwhile.
    fn run(self, storage: Storage) -> Storage {
        let Parked {
            ops,
            ahead,
            done,
            back,
            waker,
        } = self;
        let mut w = Writer {
            storage,
            failed: false,
            hasher: Hasher::Idle,
            done,
            back,
            waker,
        };
        let mut scratch = Vec::new();
        loop {
            // Idle: allocate the next chunk of a file held in memory before blocking, so
            // that the writes find their pages there (spec peer.md §8.1).
            let op = match ops.try_recv() {
                Ok(op) => op,
                Err(TryRecvError::Empty) if !w.failed && w.storage.allocate_ahead() => continue,
                Err(TryRecvError::Empty) => match ops.recv() {
                    Ok(op) => op,
                    Err(_) => break,
                },
                Err(TryRecvError::Disconnected) => break,
            };
            if let Some(out) = w.apply(op) {
                if w.done.send(out).is_err() {
                    break;
                }
                w.waker.wake();
            }
            // A peer waits for each of these: they go before the next queued operation.
            while let Ok((fragment, offset, len)) = ahead.try_recv() {
                warm(&w.storage, &mut scratch, fragment, offset, len);
                if w.done
                    .send(Done::Prefetched {
                        fragment,
                        offset,
                        len,
                    })
                    .is_err()
                {
                    return w.stop();
                }
                w.waker.wake();
            }
        }
        w.stop()
    }
}

/// Work for the hash thread, in the order the disk thread did it.
enum HashOp {
    /// A block the disk thread wrote.
    Block(Written),
    /// Check fragment `i` (every block of it was written before).
    Verify(u32),
    /// Say [`Hashed::Barrier`] once everything before is done.
    Barrier,
}

/// A block the disk thread wrote: `data[start..]` at `offset` of `fragment`; the buffer goes
/// back to the reactor afterwards if `recycle`.
struct Written {
    fragment: u32,
    offset: u32,
    data: Vec<u8>,
    start: usize,
    recycle: bool,
}

impl Written {
    /// The block's bytes.
    fn bytes(&self) -> &[u8] {
        self.data.get(self.start..).unwrap_or_default()
    }

    /// Hands the buffer back to the reactor, if it came from there (it may have gone: then
    /// the buffer is dropped).
    fn recycle(self, back: &Sender<Vec<u8>>) {
        if self.recycle {
            let _ = back.send(self.data);
        }
    }
}

/// From the hash thread back to the disk thread.
enum Hashed {
    /// Fragment `i` matched its hash (the disk thread records it at the next sync).
    Verified(u32),
    /// A [`HashOp::Barrier`] was reached.
    Barrier,
}

/// Where the blocks the disk thread writes are hashed.
enum Hasher {
    /// Nowhere yet: nothing was written or checked (a seed's thread only reads).
    Idle,
    /// On a thread of its own, started at the first write or check: hashing is most of a
    /// fetch's disk work (SHA-256 runs at about the speed of the network on loopback), so
    /// the disk thread writes the next blocks meanwhile.
    Thread {
        tx: SyncSender<HashOp>,
        rx: Receiver<Hashed>,
        join: JoinHandle<()>,
    },
    /// On the disk thread itself ([`Storage::write`], [`Storage::verify`]): the hash thread
    /// could not be started.
    Here,
}

/// The disk thread's state.
struct Writer {
    storage: Storage,
    /// A write failed (or the hash thread went away): later writes are skipped and later
    /// checks not answered.
    failed: bool,
    hasher: Hasher,
    done: Sender<Done>,
    back: Sender<Vec<u8>>,
    waker: Arc<dyn Wake>,
}

impl Writer {
    /// Runs one operation; returns its result, if it has one to report now.
    fn apply(&mut self, op: Op) -> Option<Done> {
        self.take_hashed();
        match op {
            Op::Write {
                fragment,
                offset,
                data,
                start,
                recycle,
            } => {
                if self.failed {
                    return None;
                }
                self.start_hasher();
                let block = data.get(start..).unwrap_or_default();
                let r = match self.hasher {
                    Hasher::Here => self.storage.write(fragment, offset, block),
                    _ => self.storage.write_unhashed(fragment, offset, block),
                };
                if let (Ok(()), Hasher::Thread { tx, .. }) = (&r, &self.hasher) {
                    let op = HashOp::Block(Written {
                        fragment,
                        offset,
                        data,
                        start,
                        recycle,
                    });
                    if tx.send(op).is_err() {
                        return self.hasher_gone();
                    }
                } else if recycle {
                    // The reactor reuses the buffer (it may have gone: then it is dropped).
                    let _ = self.back.send(data);
                }
                r.err().map(|e| {
                    self.failed = true;
                    Done::Failed(e.into())
                })
            }
            Op::Verify(i) => {
                if self.failed {
                    return None;
                }
                self.start_hasher();
                if let Hasher::Thread { tx, .. } = &self.hasher {
                    // The hash thread answers.
                    return tx
                        .send(HashOp::Verify(i))
                        .err()
                        .and_then(|_| self.hasher_gone());
                }
                Some(match self.storage.verify(i) {
                    Ok(ok) => Done::Verified(i, ok),
                    Err(e) => {
                        self.failed = true;
                        Done::Failed(e.into())
                    }
                })
            }
            Op::Sync => {
                // Every check asked for before the sync is answered first, so that the
                // resume file records each fragment verified so far.
                self.drain_hasher();
                Some(Done::Synced(
                    self.storage.sync_resume().map_err(io::Error::from),
                ))
            }
            Op::Finish => {
                self.drain_hasher();
                Some(Done::Finished(
                    self.storage.finish().map_err(io::Error::from),
                ))
            }
            Op::Prefetch => None,
        }
    }

    /// Starts the hash thread if nothing was hashed yet; hashes here if it cannot start.
    fn start_hasher(&mut self) {
        if !matches!(self.hasher, Hasher::Idle) {
            return;
        }
        let (tx, ops) = sync_channel::<HashOp>(QUEUE);
        let (hashed, rx) = channel::<Hashed>();
        let (done, back, waker) = (self.done.clone(), self.back.clone(), self.waker.clone());
        let started = self
            .storage
            .reader()
            .map_err(io::Error::from)
            .and_then(|reader| {
                std::thread::Builder::new()
                    .name("st-hash".into())
                    .spawn(move || hash_run(&reader, &ops, &hashed, &done, &back, &*waker))
            });
        self.hasher = match started {
            Ok(join) => Hasher::Thread { tx, rx, join },
            Err(e) => {
                log::warn!("cannot start a hash thread ({e}): hashing on the disk thread");
                Hasher::Here
            }
        };
    }

    /// Records the fragments the hash thread verified since the last look.
    fn take_hashed(&mut self) {
        if let Hasher::Thread { rx, .. } = &self.hasher {
            while let Ok(h) = rx.try_recv() {
                if let Hashed::Verified(i) = h {
                    self.storage.mark_verified(i);
                }
            }
        }
    }

    /// Waits until the hash thread has done everything handed to it, recording what it
    /// verified.
    fn drain_hasher(&mut self) {
        let Hasher::Thread { tx, rx, .. } = &self.hasher else {
            return;
        };
        if tx.send(HashOp::Barrier).is_err() {
            return;
        }
        while let Ok(h) = rx.recv() {
            match h {
                Hashed::Verified(i) => self.storage.mark_verified(i),
                Hashed::Barrier => return,
            }
        }
    }

    /// The hash thread is gone (it cannot be, short of a panic): the fetch must stop.
    fn hasher_gone(&mut self) -> Option<Done> {
        self.failed = true;
        Some(Done::Failed(io::Error::other("the hash thread stopped")))
    }

    /// Ends the hash thread after what it holds is done, and gives the storage back with
    /// everything it verified recorded.
    fn stop(mut self) -> Storage {
        if let Hasher::Thread { tx, rx, join } = std::mem::replace(&mut self.hasher, Hasher::Idle) {
            drop(tx);
            let _ = join.join();
            for h in rx.try_iter() {
                if let Hashed::Verified(i) = h {
                    self.storage.mark_verified(i);
                }
            }
        }
        self.storage
    }
}

/// Longest the hash thread waits, with a lone block in hand, for a block of another fragment
/// to hash beside it. At full speed the next fragment's first block comes within a fragment's
/// time; at low rates the wait is over long before the next block, and it happens once per
/// block that came while the thread was idle.
const PAIR_WAIT: Duration = Duration::from_millis(1);

/// Most blocks the hash thread holds back while it looks for pairs (2 MiB of 128 KiB blocks:
/// enough to reach the next fragment's first block when fragments are up to 1 MiB; with
/// larger ones blocks are hashed alone once this many wait).
const PAIR_LAG: usize = 16;

/// The hash thread: hashes the blocks the disk thread wrote, in the order written per
/// fragment, and answers the checks (reading back through `reader` what was not hashed on the
/// way). A block is hashed together with the first later block of another fragment when both
/// extend their fragments' prefixes (`st_proto::sha256`: two for about the price of one); to
/// find one, the thread takes in what is queued, and with a lone block in hand waits up to
/// [`PAIR_WAIT`] for more, holding at most [`PAIR_LAG`] blocks. Nothing is reordered within a
/// fragment, and a check or barrier is answered only after everything queued before it.
fn hash_run(
    reader: &Storage,
    ops: &Receiver<HashOp>,
    hashed: &Sender<Hashed>,
    done: &Sender<Done>,
    back: &Sender<Vec<u8>>,
    waker: &dyn Wake,
) {
    let mut prefixes = Prefixes::default();
    let mut failed = false;
    let mut held: VecDeque<HashOp> = VecDeque::new();
    // Reused by `pair_for`.
    let mut seen = Vec::new();
    // The queue's sender is still there.
    let mut open = true;
    // The last wait for a partner ran out, and nothing came since: do not wait again.
    let mut waited_out = false;
    loop {
        while open && has_room(&held) {
            match ops.try_recv() {
                Ok(op) => {
                    held.push_back(op);
                    waited_out = false;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        if held.is_empty() {
            match ops.recv() {
                Ok(op) => held.push_back(op),
                Err(_) => return,
            }
            waited_out = false;
            continue;
        }
        let partner = match pair_for(&held, &prefixes, &mut seen) {
            Pairing::With(i) => held.remove(i),
            Pairing::Lone if open && !waited_out && may_wait(&held) => {
                match ops.recv_timeout(PAIR_WAIT) {
                    Ok(op) => held.push_back(op),
                    Err(RecvTimeoutError::Timeout) => waited_out = true,
                    Err(RecvTimeoutError::Disconnected) => open = false,
                }
                continue;
            }
            Pairing::Lone | Pairing::None => None,
        };
        match (held.pop_front(), partner) {
            (Some(HashOp::Block(a)), Some(HashOp::Block(b))) => {
                prefixes.written_pair(
                    (a.fragment, a.offset, a.bytes()),
                    (b.fragment, b.offset, b.bytes()),
                );
                a.recycle(back);
                b.recycle(back);
            }
            (Some(HashOp::Block(a)), _) => {
                prefixes.written(a.fragment, a.offset, a.bytes());
                a.recycle(back);
            }
            (Some(HashOp::Verify(i)), _) => {
                if failed {
                    continue;
                }
                let out = match prefixes.check(reader, i) {
                    Ok(ok) => {
                        if ok {
                            // Before the reactor hears of it: a sync or finish it asks for
                            // next finds the fragment recorded.
                            let _ = hashed.send(Hashed::Verified(i));
                        }
                        Done::Verified(i, ok)
                    }
                    Err(e) => {
                        failed = true;
                        Done::Failed(e.into())
                    }
                };
                if done.send(out).is_err() {
                    return;
                }
                waker.wake();
            }
            (Some(HashOp::Barrier), _) => {
                let _ = hashed.send(Hashed::Barrier);
            }
            (None, _) => {}
        }
    }
}

/// Whether the thread may take another operation in beside `held`: it holds fewer than
/// [`QUEUE`] operations and fewer than [`PAIR_LAG`] blocks (the rest wait in the bounded
/// queue, whose back-pressure reaches the disk thread).
fn has_room(held: &VecDeque<HashOp>) -> bool {
    held.len() < QUEUE
        && held
            .iter()
            .filter(|op| matches!(op, HashOp::Block(_)))
            .count()
            < PAIR_LAG
}

/// Whether the thread may wait for a partner with `held` in hand: it has room for another
/// operation ([`has_room`]), and holds no barrier (the disk thread waits for that).
fn may_wait(held: &VecDeque<HashOp>) -> bool {
    has_room(held) && !held.iter().any(|op| matches!(op, HashOp::Barrier))
}

/// What the first held operation can be hashed with.
#[derive(Debug, PartialEq)]
enum Pairing {
    /// It is a block extending its fragment's prefix, and `held[i]` is its partner.
    With(usize),
    /// It is such a block, and none held can be its partner yet.
    Lone,
    /// It is not such a block.
    None,
}

/// The partner of the first held block: the first block of another fragment that is the
/// first operation held on that fragment, extends that fragment's prefix, and comes before
/// any barrier. `seen` is scratch space (the fragments earlier operations concern).
fn pair_for(held: &VecDeque<HashOp>, prefixes: &Prefixes, seen: &mut Vec<u32>) -> Pairing {
    let Some(HashOp::Block(first)) = held.front() else {
        return Pairing::None;
    };
    if !prefixes.extends(first.fragment, first.offset) {
        return Pairing::None;
    }
    seen.clear();
    seen.push(first.fragment);
    for (i, op) in held.iter().enumerate().skip(1) {
        match op {
            HashOp::Barrier => break,
            HashOp::Verify(f) => seen.push(*f),
            HashOp::Block(b) => {
                if !seen.contains(&b.fragment)
                    && prefixes.extends(b.fragment, b.offset)
                    && !b.bytes().is_empty()
                {
                    return Pairing::With(i);
                }
                seen.push(b.fragment);
            }
        }
    }
    Pairing::Lone
}

/// Reads a range into the page cache (through `scratch`, at most [`PREFETCH_CHUNK`] at a
/// time). A failure is only logged: the read on the reactor thread meets it again and reports
/// it the usual way.
fn warm(storage: &Storage, scratch: &mut Vec<u8>, fragment: u32, offset: u32, len: u32) {
    let mut at = 0;
    while at < len {
        let n = (len - at).min(PREFETCH_CHUNK);
        if scratch.len() < n as usize {
            scratch.resize(n as usize, 0);
        }
        let Some(o) = offset.checked_add(at) else {
            return;
        };
        if let Err(e) = storage.read(fragment, o, &mut scratch[..n as usize]) {
            log::debug!("prefetch of fragment {fragment} at {o}: {e}");
            return;
        }
        at += n;
    }
}

impl SwarmStore for DiskThread {
    fn is_verified(&self, i: u32) -> bool {
        self.reader.has(i)
    }
    fn sync(&mut self) -> io::Result<()> {
        DiskThread::sync(self)
    }
    fn finish(&mut self) -> io::Result<()> {
        DiskThread::finish(self)
    }
    fn poll_done(&mut self) -> Option<Done> {
        self.poll()
    }
    fn final_paths(&self) -> Vec<std::path::PathBuf> {
        self.reader.final_paths().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(fragment: u32, offset: u32, len: usize) -> HashOp {
        HashOp::Block(Written {
            fragment,
            offset,
            data: vec![fragment as u8; len],
            start: 0,
            recycle: false,
        })
    }

    /// The partner of the first block is the first block of another fragment that extends
    /// that fragment's prefix and is the first thing held about it, before any barrier.
    #[test]
    fn a_block_pairs_with_the_next_fragments_first_block_and_nothing_is_reordered() {
        let mut p = Prefixes::default();
        let q = |ops: Vec<HashOp>| ops.into_iter().collect::<VecDeque<_>>();
        // The order of a fetch from one seed: a fragment's blocks, its check, the next one.
        let held = q(vec![
            block(5, 0, 64),
            block(5, 64, 64),
            HashOp::Verify(5),
            block(9, 0, 64),
            block(9, 64, 64),
        ]);
        assert_eq!(pair_for(&held, &p, &mut Vec::new()), Pairing::With(3));
        // Not past a barrier (the disk thread waits for everything before it).
        let held = q(vec![block(5, 0, 64), HashOp::Barrier, block(9, 0, 64)]);
        assert_eq!(pair_for(&held, &p, &mut Vec::new()), Pairing::Lone);
        // Not a block whose fragment has an earlier check or block held: its order stays.
        let held = q(vec![block(5, 0, 64), HashOp::Verify(9), block(9, 0, 64)]);
        assert_eq!(pair_for(&held, &p, &mut Vec::new()), Pairing::Lone);
        let held = q(vec![block(5, 0, 64), block(9, 64, 64), block(9, 0, 64)]);
        assert_eq!(
            pair_for(&held, &p, &mut Vec::new()),
            Pairing::Lone,
            "9 at 64 is out of order, 9 at 0 after it"
        );
        // Not a block that would not extend its prefix; the next fragment's is taken.
        p.written(9, 0, &[1; 64]);
        let held = q(vec![block(5, 0, 64), block(9, 0, 64), block(7, 0, 64)]);
        assert_eq!(
            pair_for(&held, &p, &mut Vec::new()),
            Pairing::With(2),
            "9 at 0 rewrites a hashed prefix"
        );
        // Nor is an empty block, nor does a first block that does not extend look for one.
        let held = q(vec![block(5, 0, 64), block(7, 0, 0), block(8, 0, 64)]);
        assert_eq!(pair_for(&held, &p, &mut Vec::new()), Pairing::With(2));
        let held = q(vec![block(5, 64, 64), block(8, 0, 64)]);
        assert_eq!(pair_for(&held, &p, &mut Vec::new()), Pairing::None);
        let held = q(vec![HashOp::Verify(5), block(8, 0, 64)]);
        assert_eq!(pair_for(&held, &p, &mut Vec::new()), Pairing::None);
        // No waiting with a barrier held, or with PAIR_LAG blocks held.
        assert!(may_wait(&q(vec![block(5, 0, 64), HashOp::Verify(5)])));
        assert!(!may_wait(&q(vec![block(5, 0, 64), HashOp::Barrier])));
        let many: VecDeque<_> = (0..PAIR_LAG as u32).map(|k| block(5, 64 * k, 64)).collect();
        assert!(!may_wait(&many) && !has_room(&many), "PAIR_LAG blocks held");
        let checks: VecDeque<_> = (0..QUEUE as u32).map(HashOp::Verify).collect();
        assert!(
            !may_wait(&checks) && !has_room(&checks),
            "QUEUE operations held"
        );
        assert!(has_room(&q(vec![block(5, 0, 64), HashOp::Barrier])));
    }
}
