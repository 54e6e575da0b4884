//! One swarm's peer table, laid out for memory first: a tracker under load holds a million
//! swarms, most with one or two peers, so a swarm is 40 bytes plus its peers (12 bytes per IPv4
//! peer, 24 per IPv6 peer). Peers of each family live in one vector sorted by (address, port),
//! seeds and leechers together with a flag telling them apart; lookups are binary searches
//! (as opentracker does), inserts and removals shift the tail.

use std::net::IpAddr;

use crate::rng::Rng;

use super::canonical_ip;

/// How many random peers are looked at to choose one to evict (approximate LRU).
const EVICTION_SAMPLE: usize = 8;

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
    seed: bool,
    /// Tracker time, in seconds, of the last announce.
    last: u32,
}

/// The peers of one family, sorted by (address, port): lookups are binary searches, and
/// there is no index to pay for (a hash index cost more memory than the peers themselves).
#[derive(Debug, Default)]
struct PeerList<const N: usize> {
    entries: Vec<Entry<N>>,
}

impl<const N: usize> PeerList<N> {
    /// `Ok(slot)` if present, else `Err(where it would go)`.
    fn search(&self, addr: [u8; N], port: u16) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|e| (e.addr, e.port).cmp(&(addr, port)))
    }

    fn find(&self, addr: [u8; N], port: u16) -> Option<usize> {
        self.search(addr, port).ok()
    }

    fn insert(&mut self, at: usize, e: Entry<N>) {
        if self.entries.len() == self.entries.capacity() {
            // Grow by half rather than double: most swarms are small and stay so.
            self.entries.reserve_exact((self.entries.len() / 2).max(1));
        }
        self.entries.insert(at, e);
    }

    fn remove_at(&mut self, i: usize) -> Entry<N> {
        let e = self.entries.remove(i);
        if self.entries.capacity() > 2 * self.entries.len().max(2) {
            self.entries.shrink_to_fit();
        }
        e
    }

    /// Removes entries last seen before `deadline`; returns (peers, seeds) removed.
    fn expire(&mut self, deadline: u32) -> (usize, usize) {
        let before = self.entries.len();
        let seeds_before = self.entries.iter().filter(|e| e.seed).count();
        self.entries.retain(|e| e.last >= deadline);
        let removed = before - self.entries.len();
        if removed == 0 {
            return (0, 0);
        }
        let seeds_after = self.entries.iter().filter(|e| e.seed).count();
        if self.entries.capacity() > 2 * self.entries.len().max(2) {
            self.entries.shrink_to_fit();
        }
        (removed, seeds_before - seeds_after)
    }

    /// Writes up to `want` peers other than `me`, starting at a random slot; a seed requester
    /// gets leechers only. Returns how many were written.
    fn select(
        &self,
        me: ([u8; N], u16),
        seed: bool,
        want: usize,
        rng: &mut Rng,
        out: &mut [u8],
    ) -> usize {
        let total = self.entries.len();
        if total == 0 || want == 0 {
            return 0;
        }
        let start = rng.below(total as u64) as usize;
        let mut count = 0;
        for k in 0..total {
            let e = &self.entries[(start + k) % total];
            if (seed && e.seed) || (e.addr, e.port) == me {
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

    /// The index of the stalest of a few randomly sampled entries.
    fn eviction_victim(&self, rng: &mut Rng) -> Option<usize> {
        let n = self.entries.len();
        (0..EVICTION_SAMPLE.min(n))
            .map(|_| rng.below(n as u64) as usize)
            .min_by_key(|&i| self.entries[i].last)
    }
}

/// One swarm: its IPv4 peers inline, its IPv6 peers boxed (most swarms have none), counters.
#[derive(Debug, Default)]
pub(super) struct Swarm {
    v4: PeerList<4>,
    v6: Option<Box<PeerList<16>>>,
    seeds: u32,
    /// Completed downloads reported (each peer counted once, spec §5).
    pub(super) completed: u32,
}

/// The operations shared by both families, so `Swarm` dispatches once.
macro_rules! with_list {
    ($swarm:expr, $ip:expr, |$list:ident, $addr:ident| $body:expr, $none:expr) => {
        match $ip {
            IpAddr::V4(a) => {
                let $addr = a.octets();
                let $list = &mut $swarm.v4;
                $body
            }
            IpAddr::V6(a) => {
                let $addr = a.octets();
                match $swarm.v6.as_deref_mut() {
                    Some($list) => $body,
                    None => $none,
                }
            }
        }
    };
}

impl Swarm {
    pub(super) fn seeders(&self) -> u32 {
        self.seeds
    }

    pub(super) fn leechers(&self) -> u32 {
        let all = self.v4.entries.len() + self.v6.as_ref().map_or(0, |l| l.entries.len());
        all as u32 - self.seeds
    }

    pub(super) fn is_empty(&self) -> bool {
        self.v4.entries.is_empty() && self.v6.as_ref().is_none_or(|l| l.entries.is_empty())
    }

    /// Records an announce. `full`: the tracker is at its global peer limit; `cap`: the
    /// per-swarm, per-family limit.
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
        if ip.is_ipv6() && self.v6.is_none() {
            self.v6 = Some(Box::default());
        }
        let seeds = &mut self.seeds;
        with_list!(
            self,
            ip,
            |list, addr| upsert_in(list, seeds, addr, port, seed, now, full, cap, rng),
            Upsert::Refused
        )
    }

    pub(super) fn remove(&mut self, ip: IpAddr, port: u16) -> bool {
        let seeds = &mut self.seeds;
        let removed = with_list!(
            self,
            ip,
            |list, addr| match list.find(addr, port) {
                Some(i) => {
                    if list.remove_at(i).seed {
                        *seeds -= 1;
                    }
                    true
                }
                None => false,
            },
            false
        );
        if self.v6.as_ref().is_some_and(|l| l.entries.is_empty()) {
            self.v6 = None;
        }
        removed
    }

    /// Removes peers whose last announce is before `deadline`; returns how many.
    pub(super) fn expire(&mut self, deadline: u32) -> usize {
        let (mut n, mut s) = self.v4.expire(deadline);
        if let Some(l) = &mut self.v6 {
            let (n6, s6) = l.expire(deadline);
            n += n6;
            s += s6;
            if l.entries.is_empty() {
                self.v6 = None;
            }
        }
        self.seeds -= s as u32;
        n
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
            IpAddr::V6(a) => self
                .v6
                .as_ref()
                .map_or(0, |l| l.select((a.octets(), port), seed, want, rng, out)),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn upsert_in<const N: usize>(
    list: &mut PeerList<N>,
    seeds: &mut u32,
    addr: [u8; N],
    port: u16,
    seed: bool,
    now: u32,
    full: bool,
    cap: usize,
    rng: &mut Rng,
) -> Upsert {
    let at = match list.search(addr, port) {
        Ok(i) => i,
        Err(at) => at,
    };
    if let Some(e) = list
        .entries
        .get_mut(at)
        .filter(|e| e.addr == addr && e.port == port)
    {
        let became_seed = seed && !e.seed;
        if e.seed != seed {
            if seed {
                *seeds += 1;
            } else {
                *seeds -= 1;
            }
        }
        e.seed = seed;
        e.last = now;
        return Upsert::Updated { became_seed };
    }
    let mut evicted = false;
    let mut at = at;
    if full || list.entries.len() >= cap {
        // Spec §6: evict the stalest of a few randomly sampled peers of this swarm.
        let Some(victim) = list.eviction_victim(rng) else {
            return Upsert::Refused;
        };
        if list.remove_at(victim).seed {
            *seeds -= 1;
        }
        if victim < at {
            at -= 1;
        }
        evicted = true;
    }
    list.insert(
        at,
        Entry {
            addr,
            port,
            seed,
            last: now,
        },
    );
    if seed {
        *seeds += 1;
    }
    Upsert::Inserted { evicted }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn sizes_stay_small() {
        assert_eq!(size_of::<Entry<4>>(), 12);
        assert_eq!(size_of::<Entry<16>>(), 24);
        assert_eq!(size_of::<Swarm>(), 40);
    }

    #[test]
    fn lookups_inserts_and_removals_stay_consistent() {
        let mut s = Swarm::default();
        let mut rng = Rng::new(1);
        let ip = |i: u32| IpAddr::V4(Ipv4Addr::from(i));
        for i in 0..100 {
            s.upsert(ip(i), 1, i % 2 == 0, 5, false, 1000, &mut rng);
        }
        assert_eq!((s.seeders(), s.leechers()), (50, 50));
        // Binary search finds everyone; removals keep the order.
        for i in (0..100).step_by(3) {
            assert!(s.remove(ip(i), 1));
        }
        for i in 0..100 {
            let known =
                s.v4.find(ip(i).to_string().parse::<Ipv4Addr>().unwrap().octets(), 1);
            assert_eq!(known.is_some(), i % 3 != 0, "{i}");
        }
        assert!(
            s.v4.entries
                .windows(2)
                .all(|w| (w[0].addr, w[0].port) < (w[1].addr, w[1].port))
        );
        for i in 0..100 {
            s.remove(ip(i), 1);
        }
        assert!(s.is_empty());
        assert_eq!(s.seeders(), 0);
    }

    #[test]
    fn v6_list_exists_only_while_used() {
        let mut s = Swarm::default();
        let mut rng = Rng::new(1);
        let a = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(
            s.upsert(a, 1, true, 0, false, 10, &mut rng),
            Upsert::Inserted { evicted: false }
        );
        assert_eq!((s.seeders(), s.leechers()), (1, 0));
        assert!(s.remove(a, 1));
        assert!(s.v6.is_none());
        assert_eq!(s.expire(100), 0);
    }
}
