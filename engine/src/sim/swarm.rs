//! Whole swarms in the simulator: [`SwarmCore`]s over a [`Sim`], with a stand-in tracker,
//! joins, leaves and crash-restarts, for the peer layer's simulation tests and the swarm
//! benchmark (`engine/examples/swarm_sim.rs`).
//!
//! It drives each live node the way the production driver does (drain transport events into
//! the core, then `tick`), every [`SimSwarm::quantum`] of virtual time. It owns no data
//! format: a node's bytes live in whatever [`Store`] the caller gives it; [`MemStore`] keeps
//! them, [`SyntheticStore`] keeps none (content is a function of the position, so a benchmark
//! of gigabytes needs no memory). It reads no clock.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{NodeId, Sim};
use crate::peer::swarm::{Store, SwarmConfig, SwarmCore};
use crate::time::Time;
use crate::transport::Config;

/// A store that also says which fragments it holds verified (what a resume file records).
pub trait SimStore: Store {
    /// True if fragment `i` was verified here.
    fn verified(&self, i: u32) -> bool;
}

/// Length of fragment `i` of `total` bytes in fragments of `fragment_length`.
fn fragment_len(total: u64, fragment_length: u32, i: u32) -> usize {
    let start = u64::from(i) * u64::from(fragment_length);
    total.saturating_sub(start).min(u64::from(fragment_length)) as usize
}

/// A node's data in memory, checked against the fragments' SHA-256.
#[derive(Debug, Clone)]
pub struct MemStore {
    /// The bytes (all of them for a seed; zero where nothing arrived yet).
    pub data: Vec<u8>,
    hashes: Vec<[u8; 32]>,
    fragment_length: u32,
    verified: Vec<bool>,
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
            hashes,
            fragment_length,
        }
    }

    /// An empty store for the same content as `seed` (a fetcher).
    pub fn empty_like(seed: &MemStore) -> MemStore {
        MemStore {
            data: vec![0; seed.data.len()],
            hashes: seed.hashes.clone(),
            fragment_length: seed.fragment_length,
            verified: vec![false; seed.hashes.len()],
        }
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

impl SimStore for MemStore {
    fn verified(&self, i: u32) -> bool {
        self.verified.get(i as usize).copied().unwrap_or(false)
    }
}

/// A store that keeps no bytes: byte `p` of the content is a fixed function of `p` and a
/// seed, reads generate it, writes are compared with it and dropped, and a fragment verifies
/// when every one of its bytes was written correctly since its last verification (the
/// equivalent of its hash matching, at memcmp cost). Memory: a few bytes per fragment.
#[derive(Debug, Clone)]
pub struct SyntheticStore {
    seed: u64,
    total: u64,
    fragment_length: u32,
    verified: Vec<bool>,
    /// Correct bytes written per fragment since its last verification.
    good: Vec<u32>,
    /// A wrong byte was written to the fragment since its last verification.
    bad: Vec<bool>,
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

impl SimStore for SyntheticStore {
    fn verified(&self, i: u32) -> bool {
        self.verified.get(i as usize).copied().unwrap_or(false)
    }
}

/// Where a node of a [`SimSwarm`] is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Running.
    Up,
    /// Closing its connections (since then); it goes down after [`SimSwarm::leave_grace`].
    Leaving(Time),
    /// Gone (left or crashed): no process, datagrams to it vanish.
    Down,
}

/// One node of a [`SimSwarm`].
pub struct SwarmNode<S> {
    /// Its simulator node.
    pub id: NodeId,
    /// Its peer layer (a fresh one after each restart); `None` once it left or crashed.
    pub core: Option<SwarmCore>,
    /// Its data, kept across crash and restart.
    pub store: S,
    /// Where it is in its life.
    pub phase: Phase,
    /// When its current core first reported completion.
    pub completed_at: Option<Time>,
    /// Times it was restarted.
    pub restarts: u64,
}

/// A swarm of [`SwarmCore`]s in a [`Sim`].
pub struct SimSwarm<S> {
    /// The network.
    pub sim: Sim,
    /// The nodes, in the order added.
    pub nodes: Vec<SwarmNode<S>>,
    /// Virtual time between two turns of the driver loop (events drained, cores ticked).
    pub quantum: Duration,
    /// How long a leaving node keeps running to close its connections.
    pub leave_grace: Duration,
    /// How often the stand-in tracker tells every live node of every other live node
    /// (`None`: only at join).
    pub announce_every: Option<Duration>,
    next_announce: Time,
    cfg: SwarmConfig,
    transport: Config,
    swarm_id: [u8; 32],
    total: u64,
    fragment_length: u32,
    seed: u64,
    cores_made: u64,
}

impl<S: SimStore> SimSwarm<S> {
    /// A swarm of `total` bytes in fragments of `fragment_length` over `sim`; every node gets
    /// `cfg` and the transport `transport` (`accept` is set).
    pub fn new(
        sim: Sim,
        cfg: SwarmConfig,
        transport: Config,
        total: u64,
        fragment_length: u32,
    ) -> SimSwarm<S> {
        let seed = sim.seed();
        SimSwarm {
            sim,
            nodes: Vec::new(),
            quantum: Duration::from_millis(5),
            leave_grace: Duration::from_secs(2),
            announce_every: Some(Duration::from_secs(15)),
            next_announce: Time::ZERO,
            cfg,
            transport: Config {
                accept: true,
                ..transport
            },
            swarm_id: [0x5a; 32],
            total,
            fragment_length,
            seed,
            cores_made: 0,
        }
    }

    fn new_core(&mut self, id: NodeId, k: Option<usize>, store: Option<&S>) -> SwarmCore {
        let n = self.fragment_count();
        let store = store.or_else(|| k.map(|k| &self.nodes[k].store));
        let have: Vec<bool> = (0..n)
            .map(|i| store.is_some_and(|s| s.verified(i)))
            .collect();
        self.cores_made += 1;
        // A new process, a new random peer id (as `st` does).
        let mut peer_id = [0u8; 16];
        peer_id[..8].copy_from_slice(&self.seed.to_be_bytes());
        peer_id[8..].copy_from_slice(&self.cores_made.to_be_bytes());
        SwarmCore::new(
            self.cfg.clone(),
            self.swarm_id,
            peer_id,
            self.sim.addr(id).port(),
            self.total,
            self.fragment_length,
            |i| have[i as usize],
            self.seed ^ self.cores_made.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        )
    }

    /// Adds a node running now with `store` (what it holds verified is what it has) and tells
    /// it of the live nodes, as a tracker would; returns its index.
    pub fn join(&mut self, store: S) -> usize {
        let id = self.sim.add_node(self.transport.clone());
        let core = self.new_core(id, None, Some(&store));
        self.nodes.push(SwarmNode {
            id,
            core: Some(core),
            store,
            phase: Phase::Up,
            completed_at: None,
            restarts: 0,
        });
        let k = self.nodes.len() - 1;
        self.announce(k);
        k
    }

    /// Addresses of the live nodes.
    pub fn live(&self) -> Vec<SocketAddr> {
        self.nodes
            .iter()
            .filter(|n| n.phase == Phase::Up)
            .map(|n| self.sim.addr(n.id))
            .collect()
    }

    /// Tells node `k` of every other live node.
    pub fn announce(&mut self, k: usize) {
        let me = self.sim.addr(self.nodes[k].id);
        let others: Vec<SocketAddr> = self.live().into_iter().filter(|a| *a != me).collect();
        if let Some(c) = self.nodes[k].core.as_mut() {
            c.add_peers(&others);
        }
    }

    /// Node `k` leaves the way `st` does on SIGINT: it closes its connections (choking its
    /// peers first) and goes down [`Self::leave_grace`] later.
    pub fn leave(&mut self, k: usize) {
        let now = self.sim.now();
        let n = &mut self.nodes[k];
        if let (Some(core), Some(ep)) = (n.core.as_mut(), self.sim.endpoint(n.id)) {
            core.close_all(now, ep);
            n.phase = Phase::Leaving(now);
        }
    }

    /// Node `k`'s process dies at once (kill -9): the core and the endpoint are gone; the
    /// store keeps what was verified (the resume file).
    pub fn crash(&mut self, k: usize) {
        let n = &mut self.nodes[k];
        self.sim.crash(n.id);
        n.core = None;
        n.phase = Phase::Down;
    }

    /// Restarts a crashed node: a fresh endpoint (same address and node secret) and a fresh
    /// core with a new peer id that starts from the store's verified fragments.
    pub fn restart(&mut self, k: usize) {
        let id = self.nodes[k].id;
        self.sim.restart(id);
        let core = self.new_core(id, Some(k), None);
        let n = &mut self.nodes[k];
        n.core = Some(core);
        n.phase = Phase::Up;
        n.completed_at = None;
        n.restarts += 1;
        self.announce(k);
    }

    /// One turn: every running node handles its events and ticks, the stand-in tracker
    /// announces when due, then the network runs for [`Self::quantum`].
    pub fn turn(&mut self) {
        let now = self.sim.now();
        if let Some(every) = self.announce_every
            && now >= self.next_announce
        {
            self.next_announce = now + every;
            for k in 0..self.nodes.len() {
                self.announce(k);
            }
        }
        for n in self.nodes.iter_mut() {
            let (Some(core), Some(ep)) = (n.core.as_mut(), self.sim.endpoint(n.id)) else {
                continue;
            };
            while let Some(ev) = ep.poll_event() {
                core.handle_event(now, ep, &mut n.store, &ev);
            }
            core.tick(now, ep);
            if core.complete() && n.completed_at.is_none() {
                n.completed_at = Some(now);
            }
            if let Phase::Leaving(since) = n.phase
                && now.saturating_since(since) >= self.leave_grace
            {
                self.sim.crash(n.id);
                n.core = None;
                n.phase = Phase::Down;
            }
        }
        let limit = now + self.quantum;
        while self.sim.step(limit) {}
    }

    /// Runs turns until `done` holds (checked before each turn) or `limit` of virtual time
    /// passed; true if `done` held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let end = self.sim.now() + limit;
        while self.sim.now() < end {
            if done(self) {
                return true;
            }
            self.turn();
        }
        done(self)
    }

    /// Node `k`'s core (panics if it is down: for tests).
    pub fn core(&self, k: usize) -> &SwarmCore {
        self.nodes[k].core.as_ref().expect("node is up")
    }

    /// True if every node that is up has every fragment.
    pub fn all_up_complete(&self) -> bool {
        self.nodes
            .iter()
            .filter(|n| n.phase == Phase::Up)
            .all(|n| n.core.as_ref().is_some_and(|c| c.complete()))
    }

    /// Number of fragments.
    pub fn fragment_count(&self) -> u32 {
        self.total.div_ceil(u64::from(self.fragment_length)) as u32
    }
}
