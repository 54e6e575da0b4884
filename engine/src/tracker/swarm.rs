//! One swarm's peer table: per address family, leechers and seeds in two dense vectors (for
//! cheap random selection that can leave seeds out) and an index from (address, port) to the
//! slot. Removal is `swap_remove` with the moved entry's index fixed up, so every operation is
//! O(1) except expiry, which is one pass.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::rng::Rng;

use super::canonical_ip;

/// An address family, as the requester's source address decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Family {
    V4,
    V6,
}

impl Family {
    pub(super) fn of(ip: IpAddr) -> Family {
        match canonical_ip(ip) {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Bytes per peer on the wire: address and port.
    pub(super) fn peer_len(self) -> usize {
        match self {
            Family::V4 => 6,
            Family::V6 => 18,
        }
    }

    /// The family code of native replies.
    pub(super) fn code(self) -> u8 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }
}

/// What an announce did to the table.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Upsert {
    /// The peer was known; `became_seed` if it just turned from leecher to seed.
    Updated { became_seed: bool },
    /// The peer is new; `evicted` if another peer made room for it (the total is unchanged).
    Inserted { evicted: bool },
    /// The peer is new and no room could be made.
    Refused,
}

#[derive(Clone, Copy, Debug)]
struct Entry<const N: usize> {
    addr: [u8; N],
    port: u16,
    /// Tracker time, in seconds, of the last announce.
    last: u32,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    seed: bool,
    idx: u32,
}

#[derive(Debug)]
struct PeerSet<const N: usize> {
    leechers: Vec<Entry<N>>,
    seeds: Vec<Entry<N>>,
    index: HashMap<([u8; N], u16), Slot>,
}

impl<const N: usize> Default for PeerSet<N> {
    fn default() -> Self {
        PeerSet {
            leechers: Vec::new(),
            seeds: Vec::new(),
            index: HashMap::new(),
        }
    }
}

/// How many random peers are looked at to choose one to evict (approximate LRU).
const EVICTION_SAMPLE: usize = 8;

impl<const N: usize> PeerSet<N> {
    fn len(&self) -> usize {
        self.leechers.len() + self.seeds.len()
    }

    fn vec(&mut self, seed: bool) -> &mut Vec<Entry<N>> {
        if seed {
            &mut self.seeds
        } else {
            &mut self.leechers
        }
    }

    fn remove_at(&mut self, seed: bool, idx: usize) -> Entry<N> {
        let v = self.vec(seed);
        let e = v.swap_remove(idx);
        let moved = v.get(idx).map(|m| (m.addr, m.port));
        self.index.remove(&(e.addr, e.port));
        if let Some(k) = moved
            && let Some(slot) = self.index.get_mut(&k)
        {
            slot.idx = idx as u32;
        }
        e
    }

    fn push(&mut self, e: Entry<N>, seed: bool) {
        let v = self.vec(seed);
        v.push(e);
        let idx = (v.len() - 1) as u32;
        self.index.insert((e.addr, e.port), Slot { seed, idx });
    }

    #[allow(clippy::too_many_arguments)]
    fn upsert(
        &mut self,
        addr: [u8; N],
        port: u16,
        seed: bool,
        now: u32,
        full: bool,
        cap: usize,
        rng: &mut Rng,
    ) -> Upsert {
        if let Some(slot) = self.index.get(&(addr, port)).copied() {
            let idx = slot.idx as usize;
            if slot.seed == seed {
                self.vec(seed)[idx].last = now;
                return Upsert::Updated { became_seed: false };
            }
            let mut e = self.remove_at(slot.seed, idx);
            e.last = now;
            self.push(e, seed);
            return Upsert::Updated {
                became_seed: seed && !slot.seed,
            };
        }
        let mut evicted = false;
        if full || self.len() >= cap {
            // Spec §6: evict the stalest of a few randomly sampled peers of this swarm.
            let n = self.len();
            if n == 0 {
                return Upsert::Refused;
            }
            let mut victim: Option<(bool, usize, u32)> = None;
            for _ in 0..EVICTION_SAMPLE.min(n) {
                let i = rng.below(n as u64) as usize;
                let (s, j) = if i < self.leechers.len() {
                    (false, i)
                } else {
                    (true, i - self.leechers.len())
                };
                let last = self.vec(s)[j].last;
                if victim.is_none_or(|(_, _, l)| last < l) {
                    victim = Some((s, j, last));
                }
            }
            if let Some((s, j, _)) = victim {
                self.remove_at(s, j);
                evicted = true;
            }
        }
        self.push(
            Entry {
                addr,
                port,
                last: now,
            },
            seed,
        );
        Upsert::Inserted { evicted }
    }

    fn remove(&mut self, addr: [u8; N], port: u16) -> bool {
        match self.index.get(&(addr, port)).copied() {
            Some(slot) => {
                self.remove_at(slot.seed, slot.idx as usize);
                true
            }
            None => false,
        }
    }

    fn expire(&mut self, deadline: u32) -> usize {
        let mut n = 0;
        for seed in [false, true] {
            let mut i = 0;
            while i < self.vec(seed).len() {
                if self.vec(seed)[i].last < deadline {
                    self.remove_at(seed, i);
                    n += 1;
                } else {
                    i += 1;
                }
            }
        }
        n
    }

    /// Writes up to `want` peers other than the requester, starting at a random place;
    /// a seed requester gets leechers only.
    fn select(
        &self,
        me: ([u8; N], u16),
        seed: bool,
        want: usize,
        rng: &mut Rng,
        out: &mut [u8],
    ) -> usize {
        let total = if seed {
            self.leechers.len()
        } else {
            self.len()
        };
        if total == 0 || want == 0 {
            return 0;
        }
        let start = rng.below(total as u64) as usize;
        let mut count = 0;
        for k in 0..total {
            let i = (start + k) % total;
            let e = if i < self.leechers.len() {
                &self.leechers[i]
            } else {
                &self.seeds[i - self.leechers.len()]
            };
            if (e.addr, e.port) == me {
                continue;
            }
            let at = count * (N + 2);
            out[at..at + N].copy_from_slice(&e.addr);
            out[at + N..at + N + 2].copy_from_slice(&e.port.to_be_bytes());
            count += 1;
            if count == want {
                break;
            }
        }
        count
    }
}

/// One swarm: its IPv4 and IPv6 peers and the completed counter.
#[derive(Debug, Default)]
pub(super) struct Swarm {
    v4: PeerSet<4>,
    v6: PeerSet<16>,
    /// Completed downloads reported (each peer counted once, spec §6).
    pub(super) completed: u32,
}

impl Swarm {
    pub(super) fn seeders(&self) -> u32 {
        (self.v4.seeds.len() + self.v6.seeds.len()) as u32
    }

    pub(super) fn leechers(&self) -> u32 {
        (self.v4.leechers.len() + self.v6.leechers.len()) as u32
    }

    pub(super) fn is_empty(&self) -> bool {
        self.v4.len() + self.v6.len() == 0
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn upsert(
        &mut self,
        ip: IpAddr,
        port: u16,
        seed: bool,
        now: u32,
        full: bool,
        cap: usize,
        rng: &mut Rng,
    ) -> Upsert {
        match ip {
            IpAddr::V4(a) => self.v4.upsert(a.octets(), port, seed, now, full, cap, rng),
            IpAddr::V6(a) => self.v6.upsert(a.octets(), port, seed, now, full, cap, rng),
        }
    }

    pub(super) fn remove(&mut self, ip: IpAddr, port: u16) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4.remove(a.octets(), port),
            IpAddr::V6(a) => self.v6.remove(a.octets(), port),
        }
    }

    /// Removes peers whose last announce is before `deadline`; returns how many.
    pub(super) fn expire(&mut self, deadline: u32) -> usize {
        self.v4.expire(deadline) + self.v6.expire(deadline)
    }

    /// Peers of the requester's family for its reply.
    pub(super) fn select(
        &self,
        ip: IpAddr,
        port: u16,
        seed: bool,
        want: usize,
        rng: &mut Rng,
        out: &mut [u8],
    ) -> usize {
        match ip {
            IpAddr::V4(a) => self.v4.select((a.octets(), port), seed, want, rng, out),
            IpAddr::V6(a) => self.v6.select((a.octets(), port), seed, want, rng, out),
        }
    }
}
