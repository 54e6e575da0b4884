//! What the DHT node keeps for others: the announced peers of each key, bounded and expiring
//! (`spec/dht.md` §11), and the stateless announce tokens (§10).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sha2::{Digest, Sha256};
use st_proto::krpc::Id;

use crate::rng::Rng;
use crate::time::Time;

/// Which peers a read of the store returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    /// IPv4 peers only (a querier over IPv4).
    V4,
    /// IPv6 peers only.
    V6,
    /// Both (our own searches).
    Any,
}

impl Family {
    fn has(self, a: &SocketAddr) -> bool {
        match self {
            Family::V4 => a.is_ipv4(),
            Family::V6 => a.is_ipv6(),
            Family::Any => true,
        }
    }
}

/// Announced peers by key.
pub(crate) struct PeerStore {
    map: HashMap<Id, Vec<(SocketAddr, Time)>>,
    max_keys: usize,
    max_per_key: usize,
    ttl: Duration,
    next_sweep: Time,
}

/// Why an announce was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreError {
    /// The store holds its most keys.
    Full,
}

impl PeerStore {
    pub(crate) fn new(max_keys: usize, max_per_key: usize, ttl: Duration, now: Time) -> PeerStore {
        PeerStore {
            map: HashMap::new(),
            max_keys,
            max_per_key: max_per_key.max(1),
            ttl,
            next_sweep: now + ttl,
        }
    }

    /// Keys held.
    pub(crate) fn keys(&self) -> usize {
        self.map.len()
    }

    /// Peers held over every key.
    pub(crate) fn peers(&self) -> usize {
        self.map.values().map(Vec::len).sum()
    }

    /// Stores (or refreshes) `peer` under `key`. A full key loses its oldest announce; a new
    /// key is refused while the store is full (after dropping what expired).
    pub(crate) fn add(&mut self, now: Time, key: Id, peer: SocketAddr) -> Result<(), StoreError> {
        if !self.map.contains_key(&key) && self.map.len() >= self.max_keys {
            self.sweep(now);
            if self.map.len() >= self.max_keys {
                return Err(StoreError::Full);
            }
        }
        let v = self.map.entry(key).or_default();
        if let Some(e) = v.iter_mut().find(|e| e.0 == peer) {
            e.1 = now;
            return Ok(());
        }
        if v.len() >= self.max_per_key
            && let Some(oldest) = v
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.1)
                .map(|(i, _)| i)
        {
            v.swap_remove(oldest);
        }
        v.push((peer, now));
        Ok(())
    }

    /// At most `n` live peers of `key`, a random choice when there are more.
    pub(crate) fn get(
        &self,
        now: Time,
        key: &Id,
        family: Family,
        n: usize,
        rng: &mut Rng,
    ) -> Vec<SocketAddr> {
        let Some(v) = self.map.get(key) else {
            return Vec::new();
        };
        let mut live: Vec<SocketAddr> = v
            .iter()
            .filter(|e| now.saturating_since(e.1) < self.ttl && family.has(&e.0))
            .map(|e| e.0)
            .collect();
        if live.len() > n {
            // A partial Fisher–Yates shuffle picks n.
            for i in 0..n {
                let j = i + rng.below((live.len() - i) as u64) as usize;
                live.swap(i, j);
            }
            live.truncate(n);
        }
        live
    }

    /// Drops expired announces (at most once per `ttl / 4`, unless forced by a full store).
    pub(crate) fn maybe_sweep(&mut self, now: Time) {
        if now >= self.next_sweep {
            self.sweep(now);
        }
    }

    fn sweep(&mut self, now: Time) {
        let ttl = self.ttl;
        self.map.retain(|_, v| {
            v.retain(|e| now.saturating_since(e.1) < ttl);
            !v.is_empty()
        });
        self.next_sweep = now + ttl / 4;
    }
}

/// Announce tokens: a keyed hash of the requester's IP with a rotating secret, so nothing is
/// kept per requester. A token is accepted while its secret is the current or the previous
/// one: for one to two rotation periods.
pub(crate) struct Tokens {
    current: [u8; 16],
    previous: [u8; 16],
    rotated: Time,
    every: Duration,
}

/// Length of the tokens we give.
pub(crate) const TOKEN_LEN: usize = 8;

impl Tokens {
    pub(crate) fn new(rng: &mut Rng, every: Duration, now: Time) -> Tokens {
        let mut current = [0u8; 16];
        let mut previous = [0u8; 16];
        rng.fill(&mut current);
        rng.fill(&mut previous);
        Tokens {
            current,
            previous,
            rotated: now,
            every,
        }
    }

    /// A new secret once the period is over.
    pub(crate) fn rotate(&mut self, now: Time, rng: &mut Rng) {
        if now.saturating_since(self.rotated) >= self.every {
            self.previous = self.current;
            rng.fill(&mut self.current);
            self.rotated = now;
        }
    }

    fn mac(secret: &[u8; 16], ip: IpAddr) -> [u8; TOKEN_LEN] {
        let mut h = Sha256::new();
        h.update(secret);
        match ip {
            IpAddr::V4(v4) => h.update(v4.octets()),
            IpAddr::V6(v6) => h.update(v6.octets()),
        }
        let d = h.finalize();
        let mut t = [0u8; TOKEN_LEN];
        t.copy_from_slice(&d[..TOKEN_LEN]);
        t
    }

    /// The token for `ip`.
    pub(crate) fn make(&self, ip: IpAddr) -> [u8; TOKEN_LEN] {
        Self::mac(&self.current, ip)
    }

    /// Whether `token` is one we gave `ip` recently (compared in constant time).
    pub(crate) fn check(&self, ip: IpAddr, token: &[u8]) -> bool {
        if token.len() != TOKEN_LEN {
            return false;
        }
        let eq = |t: [u8; TOKEN_LEN]| t.iter().zip(token).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
        // Both are computed, whichever matches.
        let a = eq(Self::mac(&self.current, ip));
        let b = eq(Self::mac(&self.previous, ip));
        a | b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_per_ip_and_live_one_to_two_periods() {
        let t0 = Time::from_micros(1_000_000);
        let mut rng = Rng::new(9);
        let every = Duration::from_secs(300);
        let mut t = Tokens::new(&mut rng, every, t0);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let tok = t.make(ip);
        assert!(t.check(ip, &tok));
        assert!(!t.check(other, &tok));
        assert!(!t.check(ip, &tok[..4]));
        t.rotate(t0 + Duration::from_secs(299), &mut rng);
        assert!(t.check(ip, &tok));
        t.rotate(t0 + every, &mut rng);
        assert!(t.check(ip, &tok), "the previous secret is still accepted");
        t.rotate(t0 + every * 2, &mut rng);
        assert!(!t.check(ip, &tok), "two rotations later it is not");
    }

    #[test]
    fn the_store_is_bounded_and_expires() {
        let t0 = Time::from_micros(1_000_000);
        let ttl = Duration::from_secs(1800);
        let mut s = PeerStore::new(2, 3, ttl, t0);
        let p = |i: u8| SocketAddr::from(([10, 0, 0, i], 1000));
        for i in 0..5 {
            s.add(t0 + Duration::from_secs(u64::from(i)), [1; 20], p(i))
                .unwrap();
        }
        assert_eq!(s.peers(), 3, "a key holds at most 3; the oldest went");
        let mut rng = Rng::new(1);
        let mut got = s.get(
            t0 + Duration::from_secs(10),
            &[1; 20],
            Family::Any,
            10,
            &mut rng,
        );
        got.sort();
        assert_eq!(got, vec![p(2), p(3), p(4)]);
        assert_eq!(s.get(t0, &[1; 20], Family::Any, 2, &mut rng).len(), 2);
        s.add(t0, [2; 20], p(9)).unwrap();
        assert_eq!(s.add(t0, [3; 20], p(9)), Err(StoreError::Full));
        // Once expired, the announces are not given and make room.
        let late = t0 + ttl + Duration::from_secs(10);
        assert!(s.get(late, &[1; 20], Family::Any, 10, &mut rng).is_empty());
        s.add(late, [3; 20], p(9)).unwrap();
        assert_eq!(s.keys(), 1);
    }

    #[test]
    fn a_read_gives_the_asked_family_only() {
        let t0 = Time::from_micros(1_000_000);
        let mut s = PeerStore::new(4, 10, Duration::from_secs(1800), t0);
        let v4 = SocketAddr::from(([10, 0, 0, 1], 1000));
        let v6: SocketAddr = "[fd00::1]:1000".parse().unwrap();
        s.add(t0, [1; 20], v4).unwrap();
        s.add(t0, [1; 20], v6).unwrap();
        let mut rng = Rng::new(1);
        assert_eq!(s.get(t0, &[1; 20], Family::V4, 10, &mut rng), vec![v4]);
        assert_eq!(s.get(t0, &[1; 20], Family::V6, 10, &mut rng), vec![v6]);
        assert_eq!(s.get(t0, &[1; 20], Family::Any, 10, &mut rng).len(), 2);
    }
}
