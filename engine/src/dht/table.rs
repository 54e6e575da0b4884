//! The DHT routing table of one address family: k-buckets of nodes by XOR distance from our
//! id, with the anti-Sybil address rules (`spec/dht.md` §7).
//!
//! Only nodes that answered one of our queries are entered ([`Table::heard`]); a node that
//! only queried us is pinged first (the node asks [`Table::wants`]). Bucket `i` holds the ids
//! that share exactly `i` leading bits with ours; the last bucket holds the rest and is the
//! only one that splits. One entry per IP address in the whole table (loopback addresses are
//! keyed by address and port, for tests on one host), at most one per /24 (IPv4) or /64
//! (IPv6) in a bucket, and a node whose id changes for the same address is dropped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use st_proto::krpc::Id;

use crate::rng::Rng;
use crate::time::Time;

/// Leading bits `a` and `b` share (160 when equal).
pub(crate) fn common_prefix(a: &Id, b: &Id) -> usize {
    for i in 0..20 {
        let x = a[i] ^ b[i];
        if x != 0 {
            return i * 8 + x.leading_zeros() as usize;
        }
    }
    160
}

/// XOR distance (compared as a big-endian number).
pub(crate) fn distance(a: &Id, b: &Id) -> Id {
    let mut d = [0u8; 20];
    for i in 0..20 {
        d[i] = a[i] ^ b[i];
    }
    d
}

/// What an address counts as for the one-entry-per-IP rule.
pub(crate) fn addr_key(a: SocketAddr) -> SocketAddr {
    if a.ip().is_loopback() {
        a
    } else {
        SocketAddr::new(a.ip(), 0)
    }
}

/// The /24 (IPv4) or /64 (IPv6) an address is in; `None` for loopback (exempt).
fn subnet(a: SocketAddr) -> Option<[u8; 8]> {
    let mut s = [0u8; 8];
    match a.ip() {
        _ if a.ip().is_loopback() => return None,
        IpAddr::V4(ip) => s[..3].copy_from_slice(&ip.octets()[..3]),
        IpAddr::V6(ip) => s.copy_from_slice(&ip.octets()[..8]),
    }
    Some(s)
}

/// One node of the table.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) id: Id,
    pub(crate) addr: SocketAddr,
    /// Last answer from it.
    pub(crate) seen: Time,
    /// Queries in a row it did not answer.
    pub(crate) fails: u8,
    /// A ping to it is under way.
    pub(crate) pinging: bool,
}

struct Bucket {
    entries: Vec<Entry>,
    /// Replacements, newest last.
    cache: Vec<Entry>,
    /// Last time a node was added or answered.
    changed: Time,
    /// To be refreshed whatever `changed` says.
    refresh: bool,
}

/// Settings of a table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TableConfig {
    /// Nodes per bucket (and replacements per bucket).
    pub(crate) k: usize,
    /// Most buckets.
    pub(crate) max_buckets: usize,
    /// Failed queries in a row that make a node bad.
    pub(crate) bad_after: u8,
}

/// Where [`Table::heard`] put a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heard {
    /// Already there: refreshed.
    Refreshed,
    /// Added to a bucket.
    Added,
    /// Kept as a replacement (its bucket is full of good nodes).
    Cached,
    /// Not taken: our own id, an address rule, or its bucket and cache are full.
    Refused,
    /// The address came with another id: the old entry was dropped, the new one not taken.
    IdChanged,
}

/// The routing table.
pub(crate) struct Table {
    own: Id,
    cfg: TableConfig,
    buckets: Vec<Bucket>,
    /// Which id holds each address key (entries and replacements).
    by_addr: HashMap<SocketAddr, Id>,
}

impl Table {
    pub(crate) fn new(own: Id, cfg: TableConfig, now: Time) -> Table {
        Table {
            own,
            cfg,
            buckets: vec![Bucket {
                entries: Vec::new(),
                cache: Vec::new(),
                changed: now,
                refresh: false,
            }],
            by_addr: HashMap::new(),
        }
    }

    fn index(&self, id: &Id) -> usize {
        common_prefix(&self.own, id).min(self.buckets.len() - 1)
    }

    /// Nodes in buckets (not counting replacements).
    pub(crate) fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.entries.len()).sum()
    }

    /// Number of buckets.
    #[cfg(test)]
    pub(crate) fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// True when an entry has this id and address.
    pub(crate) fn contains(&self, id: &Id, addr: SocketAddr) -> bool {
        self.by_addr.get(&addr_key(addr)) == Some(id)
            && self.buckets[self.index(id)]
                .entries
                .iter()
                .any(|e| e.addr == addr)
    }

    /// Whether a node that is not in the table would be taken if it answered a ping: its
    /// address is new, its /24 is not in its bucket, and the bucket has room or can split.
    pub(crate) fn wants(&self, id: &Id, addr: SocketAddr) -> bool {
        if *id == self.own || self.by_addr.contains_key(&addr_key(addr)) {
            return false;
        }
        let i = self.index(id);
        let b = &self.buckets[i];
        let net = subnet(addr);
        if net.is_some() && b.entries.iter().any(|e| subnet(e.addr) == net) {
            return false;
        }
        b.entries.len() < self.cfg.k
            || (i == self.buckets.len() - 1 && self.buckets.len() < self.cfg.max_buckets)
            || b.entries.iter().any(|e| e.fails >= self.cfg.bad_after)
    }

    /// A node answered one of our queries.
    pub(crate) fn heard(&mut self, now: Time, id: Id, addr: SocketAddr) -> Heard {
        if id == self.own {
            return Heard::Refused;
        }
        let key = addr_key(addr);
        if let Some(old) = self.by_addr.get(&key).copied() {
            if old != id {
                // Spec §7: a node that changes id for the same address is dropped.
                self.remove(&old, key);
                return Heard::IdChanged;
            }
            let i = self.index(&id);
            let b = &mut self.buckets[i];
            if let Some(e) = b.entries.iter_mut().find(|e| e.id == id) {
                if e.addr != addr {
                    // Same IP, other port (a restart): take the new port.
                    e.addr = addr;
                }
                e.seen = now;
                e.fails = 0;
                e.pinging = false;
                b.changed = now;
                return Heard::Refreshed;
            }
            if let Some(e) = b.cache.iter_mut().find(|e| e.id == id) {
                e.seen = now;
                e.fails = 0;
                e.addr = addr;
                return Heard::Cached;
            }
            // Stale map entry (should not happen): forget it and go on.
            self.by_addr.remove(&key);
        }
        // The same id at another address keeps the old entry (no hijack by claiming an id).
        let i = self.index(&id);
        if self.buckets[i].entries.iter().any(|e| e.id == id) {
            return Heard::Refused;
        }
        let entry = Entry {
            id,
            addr,
            seen: now,
            fails: 0,
            pinging: false,
        };
        loop {
            let i = self.index(&id);
            let last = i == self.buckets.len() - 1;
            let k = self.cfg.k;
            let bad_after = self.cfg.bad_after;
            let net = subnet(addr);
            let can_split = last && self.buckets.len() < self.cfg.max_buckets;
            let b = &mut self.buckets[i];
            if net.is_some() && b.entries.iter().any(|e| subnet(e.addr) == net) {
                return Heard::Refused;
            }
            if b.entries.len() < k {
                b.entries.push(entry);
                b.changed = now;
                self.by_addr.insert(key, id);
                return Heard::Added;
            }
            if can_split {
                self.split();
                continue;
            }
            if let Some(p) = b.entries.iter().position(|e| e.fails >= bad_after) {
                let gone = std::mem::replace(&mut b.entries[p], entry);
                b.changed = now;
                self.by_addr.remove(&addr_key(gone.addr));
                self.by_addr.insert(key, id);
                return Heard::Added;
            }
            if net.is_some() && b.cache.iter().any(|e| subnet(e.addr) == net) {
                return Heard::Refused;
            }
            if b.cache.len() >= k {
                let gone = b.cache.remove(0);
                self.by_addr.remove(&addr_key(gone.addr));
            }
            let b = &mut self.buckets[i];
            b.cache.push(entry);
            self.by_addr.insert(key, id);
            return Heard::Cached;
        }
    }

    fn split(&mut self) {
        let i = self.buckets.len() - 1;
        let now = self.buckets[i].changed;
        let own = self.own;
        let old = &mut self.buckets[i];
        let (stay, go): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut old.entries)
            .into_iter()
            .partition(|e| common_prefix(&own, &e.id) == i);
        let (cstay, cgo): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut old.cache)
            .into_iter()
            .partition(|e| common_prefix(&own, &e.id) == i);
        old.entries = stay;
        old.cache = cstay;
        let refresh = self.buckets[i].refresh;
        self.buckets.push(Bucket {
            entries: go,
            cache: cgo,
            changed: now,
            refresh,
        });
        // Replacements move up into room the split made.
        for b in &mut self.buckets[i..] {
            while b.entries.len() < self.cfg.k {
                let Some(e) = b.cache.pop() else { break };
                b.entries.push(e);
            }
        }
    }

    fn remove(&mut self, id: &Id, key: SocketAddr) {
        self.by_addr.remove(&key);
        let i = self.index(id);
        let k = self.cfg.k;
        let b = &mut self.buckets[i];
        b.entries.retain(|e| addr_key(e.addr) != key);
        b.cache.retain(|e| addr_key(e.addr) != key);
        while b.entries.len() < k {
            let Some(e) = b.cache.pop() else { break };
            b.entries.push(e);
        }
    }

    /// A query to `id` at `addr` went unanswered. A node that is bad and has a replacement
    /// waiting is replaced.
    pub(crate) fn failed(&mut self, id: &Id, addr: SocketAddr) {
        let i = self.index(id);
        let bad_after = self.cfg.bad_after;
        let b = &mut self.buckets[i];
        let Some(p) = b.entries.iter().position(|e| e.id == *id && e.addr == addr) else {
            return;
        };
        let e = &mut b.entries[p];
        e.fails = e.fails.saturating_add(1);
        e.pinging = false;
        if e.fails >= bad_after
            && let Some(r) = b.cache.pop()
        {
            let gone = std::mem::replace(&mut b.entries[p], r);
            self.by_addr.remove(&addr_key(gone.addr));
        }
    }

    /// The `n` nodes closest to `target`, closest first (bad nodes last).
    pub(crate) fn closest(&self, target: &Id, n: usize) -> Vec<(Id, SocketAddr)> {
        let bad_after = self.cfg.bad_after;
        let mut all: Vec<(bool, Id, &Entry)> = self
            .buckets
            .iter()
            .flat_map(|b| &b.entries)
            .map(|e| (e.fails >= bad_after, distance(&e.id, target), e))
            .collect();
        if all.len() > n {
            all.select_nth_unstable_by(n, |a, b| (a.0, a.1).cmp(&(b.0, b.1)));
            all.truncate(n);
        }
        all.sort_unstable_by_key(|a| (a.0, a.1));
        all.into_iter().map(|(_, _, e)| (e.id, e.addr)).collect()
    }

    /// Nodes not heard from for `stale` and not being pinged (marked as pinged), at most `n`.
    pub(crate) fn take_stale(
        &mut self,
        now: Time,
        stale: Duration,
        n: usize,
    ) -> Vec<(Id, SocketAddr)> {
        let mut v = Vec::new();
        for b in &mut self.buckets {
            for e in &mut b.entries {
                if v.len() >= n {
                    return v;
                }
                if !e.pinging && now.saturating_since(e.seen) >= stale {
                    e.pinging = true;
                    v.push((e.id, e.addr));
                }
            }
        }
        v
    }

    /// A random id in the first bucket not changed for `stale` (which counts as changed now).
    pub(crate) fn next_refresh(&mut self, now: Time, stale: Duration, rng: &mut Rng) -> Option<Id> {
        let last = self.buckets.len() - 1;
        let i = self
            .buckets
            .iter()
            .position(|b| b.refresh || now.saturating_since(b.changed) >= stale)?;
        self.buckets[i].changed = now;
        self.buckets[i].refresh = false;
        let mut id = [0u8; 20];
        rng.fill(&mut id);
        // Keep our first i bits; bit i differs from ours unless this is the last bucket.
        for bit in 0..=i.min(159) {
            let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
            let ours = self.own[byte] & mask;
            let want = if bit == i && i != last {
                ours ^ mask
            } else if bit < i {
                ours
            } else {
                id[byte] & mask
            };
            id[byte] = (id[byte] & !mask) | want;
        }
        Some(id)
    }

    /// Every bucket is to be refreshed at once (after a bootstrap: Kademlia's join).
    pub(crate) fn refresh_all(&mut self) {
        for b in &mut self.buckets {
            b.refresh = true;
        }
    }

    /// Good nodes (answered, not failing), most recently heard first, at most `n`.
    pub(crate) fn good(&self, n: usize) -> Vec<(Id, SocketAddr)> {
        let mut v: Vec<&Entry> = self
            .buckets
            .iter()
            .flat_map(|b| &b.entries)
            .filter(|e| e.fails == 0)
            .collect();
        v.sort_unstable_by_key(|e| std::cmp::Reverse(e.seen));
        v.into_iter().take(n).map(|e| (e.id, e.addr)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Time {
        Time::from_micros(1_000_000)
    }

    fn cfg() -> TableConfig {
        TableConfig {
            k: 8,
            max_buckets: 160,
            bad_after: 2,
        }
    }

    fn addr(i: u32) -> SocketAddr {
        // Every node in its own /24.
        SocketAddr::new(
            IpAddr::V4(std::net::Ipv4Addr::new(10, (i >> 8) as u8, i as u8, 1)),
            6881,
        )
    }

    #[test]
    fn buckets_split_near_our_id_and_hold_k_each() {
        let own = [0u8; 20];
        let mut t = Table::new(own, cfg(), t0());
        let mut rng = Rng::new(1);
        let mut added = 0;
        for i in 0..2000 {
            let mut id = [0u8; 20];
            rng.fill(&mut id);
            if t.heard(t0(), id, addr(i)) == Heard::Added {
                added += 1;
            }
        }
        assert_eq!(t.len(), added);
        assert!(t.bucket_count() >= 7, "{} buckets", t.bucket_count());
        for b in &t.buckets {
            assert!(b.entries.len() <= 8 && b.cache.len() <= 8);
        }
        // Far buckets are full; the table is far smaller than what it heard.
        assert_eq!(t.buckets[0].entries.len(), 8);
        assert!(added < 200, "{added}");
        // The closest nodes to our own id are all kept.
        let c = t.closest(&own, 8);
        assert_eq!(c.len(), 8);
        for w in c.windows(2) {
            assert!(distance(&w[0].0, &own) < distance(&w[1].0, &own));
        }
    }

    #[test]
    fn one_entry_per_ip_one_per_24_per_bucket_and_id_changes_drop() {
        let own = [0u8; 20];
        let mut t = Table::new(own, cfg(), t0());
        let a: SocketAddr = "10.1.1.1:1".parse().unwrap();
        let mut far = [0x80u8; 20];
        assert_eq!(t.heard(t0(), far, a), Heard::Added);
        // The same IP on another port with another id: an id change; the entry goes.
        far[19] = 1;
        assert_eq!(
            t.heard(t0(), far, "10.1.1.1:2".parse().unwrap()),
            Heard::IdChanged
        );
        assert_eq!(t.len(), 0);
        assert_eq!(t.heard(t0(), far, a), Heard::Added);
        // Another host of the same /24 in the same bucket: refused.
        let mut far2 = [0x81u8; 20];
        far2[0] = 0xc0;
        assert_eq!(
            t.heard(t0(), far2, "10.1.1.2:1".parse().unwrap()),
            Heard::Refused
        );
        assert!(!t.wants(&far2, "10.1.1.2:1".parse().unwrap()));
        // From another /24 it is taken.
        assert!(t.wants(&far2, "10.1.2.2:1".parse().unwrap()));
        assert_eq!(
            t.heard(t0(), far2, "10.1.2.2:1".parse().unwrap()),
            Heard::Added
        );
        // The same id from another address does not move the entry.
        assert_eq!(
            t.heard(t0(), far2, "10.9.9.9:1".parse().unwrap()),
            Heard::Refused
        );
        assert!(t.contains(&far2, "10.1.2.2:1".parse().unwrap()));
        // Loopback is keyed by port: many local nodes fit.
        for p in 1..5u16 {
            let mut id = [0x40u8; 20];
            id[19] = p as u8;
            let l = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), p);
            assert_eq!(t.heard(t0(), id, l), Heard::Added);
        }
    }

    #[test]
    fn bad_nodes_are_replaced_from_the_cache() {
        let own = [0u8; 20];
        let mut t = Table::new(
            own,
            TableConfig {
                max_buckets: 1,
                ..cfg()
            },
            t0(),
        );
        let ids: Vec<Id> = (0..10u8).map(|i| [0x80 | i; 20]).collect();
        for (i, id) in ids.iter().enumerate() {
            t.heard(t0(), *id, addr(i as u32));
        }
        assert_eq!(t.len(), 8);
        assert!(!t.contains(&ids[9], addr(9)));
        t.failed(&ids[0], addr(0));
        assert!(t.contains(&ids[0], addr(0)));
        t.failed(&ids[0], addr(0));
        assert!(!t.contains(&ids[0], addr(0)));
        assert!(
            t.contains(&ids[9], addr(9)),
            "the newest replacement came in"
        );
    }

    #[test]
    fn refresh_targets_fall_in_their_bucket() {
        let mut rng = Rng::new(3);
        let mut own = [0u8; 20];
        rng.fill(&mut own);
        let mut t = Table::new(own, cfg(), t0());
        for i in 0..500 {
            let mut id = [0u8; 20];
            rng.fill(&mut id);
            t.heard(t0(), id, addr(i));
        }
        let later = t0() + Duration::from_secs(901);
        let n = t.bucket_count();
        for i in 0..n {
            let id = t
                .next_refresh(later, Duration::from_secs(900), &mut rng)
                .unwrap();
            assert_eq!(t.index(&id), i);
        }
        assert!(
            t.next_refresh(later, Duration::from_secs(900), &mut rng)
                .is_none()
        );
    }
}
