//! One iterative DHT lookup (`find_node` or `get_peers`): the candidate list by XOR distance,
//! α queries in flight, convergence on the k closest, and the per-lookup budgets
//! (`spec/dht.md` §8).
//!
//! The lookup only decides whom to ask next and when it is done; the DHT node sends the
//! queries, matches the replies and the timeouts, and feeds them back here.

use std::net::SocketAddr;

use st_proto::krpc::Id;

use super::table::distance;
use crate::time::Time;

/// What a lookup looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Nodes close to the target (bootstrap, bucket refresh).
    FindNode,
    /// Peers of the key (and the tokens to announce with).
    GetPeers,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Fresh,
    /// Asked; `slow` once the soft timeout passed (its slot is free, its answer still taken).
    Asked {
        slow: bool,
    },
    Answered,
    Failed,
}

#[derive(Debug, Clone)]
struct Cand {
    /// `None` for a bootstrap router whose id we do not know yet.
    id: Option<Id>,
    addr: SocketAddr,
    dist: Id,
    state: State,
    token: Option<Vec<u8>>,
    verified: bool,
}

/// Settings of a lookup.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LookupConfig {
    pub(crate) k: usize,
    pub(crate) alpha: usize,
    /// Most candidates kept.
    pub(crate) max_candidates: usize,
    /// Most queries sent.
    pub(crate) max_queries: u32,
    /// Most peers gathered.
    pub(crate) max_peers: usize,
}

/// A lookup.
#[derive(Debug)]
pub(crate) struct Lookup {
    pub(crate) target: Id,
    pub(crate) kind: Kind,
    pub(crate) started: Time,
    /// Queries sent.
    pub(crate) queries: u32,
    /// Replies received.
    pub(crate) replies: u32,
    /// Peers gathered, in the order found.
    pub(crate) peers: Vec<SocketAddr>,
    /// When the first peer came.
    pub(crate) first_peer: Option<Time>,
    cfg: LookupConfig,
    cands: Vec<Cand>,
}

impl Lookup {
    pub(crate) fn new(target: Id, kind: Kind, cfg: LookupConfig, now: Time) -> Lookup {
        Lookup {
            target,
            kind,
            started: now,
            queries: 0,
            replies: 0,
            peers: Vec::new(),
            first_peer: None,
            cfg,
            cands: Vec::new(),
        }
    }

    /// Adds a candidate (a node from the table or a reply); `id` is `None` for a bootstrap
    /// router. Duplicates (by address) and candidates beyond the kept ones are ignored.
    pub(crate) fn add(&mut self, id: Option<Id>, addr: SocketAddr) {
        if addr.port() == 0 || self.cands.iter().any(|c| c.addr == addr) {
            return;
        }
        if let Some(id) = id
            && self.cands.iter().any(|c| c.id == Some(id))
        {
            return;
        }
        // A router's distance is unknown: it sorts last.
        let dist = id.map_or([0xff; 20], |id| distance(&id, &self.target));
        let at = self.cands.partition_point(|c| c.dist <= dist);
        if at >= self.cfg.max_candidates {
            return;
        }
        self.cands.insert(
            at,
            Cand {
                id,
                addr,
                dist,
                state: State::Fresh,
                token: None,
                verified: false,
            },
        );
        // Far candidates that were never asked make room; asked ones are kept (their
        // replies are matched by address).
        while self.cands.len() > self.cfg.max_candidates {
            match self.cands.iter().rposition(|c| c.state == State::Fresh) {
                Some(p) => {
                    self.cands.remove(p);
                }
                None => break,
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.cands
            .iter()
            .filter(|c| c.state == State::Asked { slow: false })
            .count()
    }

    /// The next node to ask, if a slot is free and the budget allows (marked asked).
    pub(crate) fn next(&mut self) -> Option<(Option<Id>, SocketAddr)> {
        if self.queries >= self.cfg.max_queries || self.in_flight() >= self.cfg.alpha {
            return None;
        }
        // Only the k closest candidates that have not failed (or gone slow) are worth asking.
        let mut live = 0;
        for c in &mut self.cands {
            match c.state {
                State::Failed | State::Asked { slow: true } => continue,
                State::Fresh => {
                    c.state = State::Asked { slow: false };
                    self.queries += 1;
                    return Some((c.id, c.addr));
                }
                _ => {}
            }
            live += 1;
            if live >= self.cfg.k {
                break;
            }
        }
        None
    }

    /// True when the k closest candidates that did not fail or go slow have all answered
    /// (or none is left to ask), or the query budget is spent and nothing is in flight.
    pub(crate) fn done(&self) -> bool {
        let mut live = 0;
        for c in &self.cands {
            match c.state {
                State::Failed | State::Asked { slow: true } => continue,
                State::Fresh if self.queries < self.cfg.max_queries => return false,
                State::Asked { slow: false } => return false,
                _ => {}
            }
            live += 1;
            if live >= self.cfg.k {
                break;
            }
        }
        true
    }

    fn find(&mut self, addr: SocketAddr) -> Option<&mut Cand> {
        self.cands.iter_mut().find(|c| c.addr == addr)
    }

    /// `addr` answered as `id`: its nodes are candidates, its peers and token are kept.
    /// Returns the peers that are new to this lookup.
    pub(crate) fn answered(
        &mut self,
        now: Time,
        addr: SocketAddr,
        (id, verified): (Id, bool),
        token: Option<&[u8]>,
        nodes: impl Iterator<Item = (Id, SocketAddr)>,
        values: &[SocketAddr],
    ) -> Vec<SocketAddr> {
        self.replies += 1;
        let target = self.target;
        if let Some(c) = self.find(addr) {
            c.state = State::Answered;
            c.token = token.map(<[u8]>::to_vec);
            c.verified = verified;
            if c.id.is_none() {
                // A router: now that its id is known, it takes its place by distance.
                c.id = Some(id);
                c.dist = distance(&id, &target);
                self.cands.sort_by_key(|c| c.dist);
            }
        }
        for (nid, naddr) in nodes {
            self.add(Some(nid), naddr);
        }
        let mut new = Vec::new();
        for &p in values {
            if p.port() != 0 && self.peers.len() < self.cfg.max_peers && !self.peers.contains(&p) {
                self.peers.push(p);
                new.push(p);
            }
        }
        if !new.is_empty() && self.first_peer.is_none() {
            self.first_peer = Some(now);
        }
        new
    }

    /// The query to `addr` passed its soft timeout: its slot is freed.
    pub(crate) fn slow(&mut self, addr: SocketAddr) {
        if let Some(c) = self.find(addr)
            && c.state == (State::Asked { slow: false })
        {
            c.state = State::Asked { slow: true };
        }
    }

    /// The query to `addr` failed (timeout or error).
    pub(crate) fn failed(&mut self, addr: SocketAddr) {
        if let Some(c) = self.find(addr)
            && matches!(c.state, State::Asked { .. })
        {
            c.state = State::Failed;
        }
    }

    /// Where to announce: of the 2k closest that answered with a token, BEP 42-verified
    /// nodes first, then by distance; at most k (spec §8).
    pub(crate) fn announce_targets(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut v: Vec<&Cand> = self
            .cands
            .iter()
            .filter(|c| c.state == State::Answered && c.token.is_some() && c.id.is_some())
            .take(2 * self.cfg.k)
            .collect();
        v.sort_by_key(|c| !c.verified);
        v.into_iter()
            .take(self.cfg.k)
            .filter_map(|c| Some((c.addr, c.token.clone()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LookupConfig {
        LookupConfig {
            k: 8,
            alpha: 3,
            max_candidates: 64,
            max_queries: 100,
            max_peers: 500,
        }
    }

    fn a(i: u8) -> SocketAddr {
        SocketAddr::from(([10, i, 0, 1], 6881))
    }

    #[test]
    fn asks_alpha_at_a_time_closest_first_and_converges_on_k() {
        let t0 = Time::from_micros(1_000_000);
        let mut l = Lookup::new([0; 20], Kind::FindNode, cfg(), t0);
        for i in 1..=20u8 {
            l.add(Some([i; 20]), a(i));
        }
        let asked: Vec<_> = std::iter::from_fn(|| l.next()).collect();
        assert_eq!(asked.len(), 3);
        assert_eq!(asked[0].1, a(1));
        assert!(!l.done());
        // Everyone answers with nothing new: exactly the 8 closest get asked.
        let mut total = 3;
        for (id, addr) in asked {
            l.answered(
                t0,
                addr,
                (id.unwrap(), false),
                None,
                std::iter::empty(),
                &[],
            );
        }
        loop {
            let batch: Vec<_> = std::iter::from_fn(|| l.next()).collect();
            if batch.is_empty() {
                break;
            }
            total += batch.len();
            for (id, addr) in batch {
                l.answered(
                    t0,
                    addr,
                    (id.unwrap(), false),
                    None,
                    std::iter::empty(),
                    &[],
                );
            }
        }
        assert_eq!(total, 8);
        assert!(l.done());
    }

    #[test]
    fn a_slow_node_frees_its_slot_and_a_failed_one_lets_the_next_in() {
        let t0 = Time::from_micros(1_000_000);
        let mut l = Lookup::new([0; 20], Kind::GetPeers, cfg(), t0);
        for i in 1..=9u8 {
            l.add(Some([i; 20]), a(i));
        }
        let first: Vec<_> = std::iter::from_fn(|| l.next()).collect();
        assert_eq!(first.len(), 3);
        l.slow(a(1));
        assert_eq!(l.next().map(|x| x.1), Some(a(4)));
        l.failed(a(1));
        // Answers with a closer node and a peer.
        let peer: SocketAddr = "10.200.0.1:7000".parse().unwrap();
        let new = l.answered(
            t0,
            a(2),
            ([2; 20], true),
            Some(b"tok"),
            [(
                [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                a(99),
            )]
            .into_iter(),
            &[peer, peer],
        );
        assert_eq!(new, vec![peer]);
        assert_eq!(
            l.next().map(|x| x.1),
            Some(a(99)),
            "the closer node is asked next"
        );
        let t = l.announce_targets();
        assert_eq!(t, vec![(a(2), b"tok".to_vec())]);
    }
}
