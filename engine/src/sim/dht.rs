//! A simulated DHT network: thousands of production [`DhtNode`]s in one [`Sim`], joined one
//! after another through a bootstrap node, with loss, churn and searches — for the DHT tests
//! and `bench/dht.sh`.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::dht::{DhtConfig, DhtEvent, DhtNode, Id, LookupStats};
use crate::rng::Rng;
use crate::sim::{NodeId, PipeConfig, Sim};

/// Shape of a simulated DHT network.
#[derive(Debug, Clone)]
pub struct DhtNetConfig {
    /// Nodes (node 0 is everyone's bootstrap).
    pub nodes: usize,
    /// One-way latency of every path.
    pub latency: Duration,
    /// Random loss of every datagram.
    pub loss: f64,
    /// Nodes join one after another over this long.
    pub join_over: Duration,
    /// Seed of the simulation.
    pub seed: u64,
}

/// What one search found.
#[derive(Debug, Clone, Copy)]
pub struct SearchResult {
    /// The peer looked for was among the peers found.
    pub found: bool,
    /// The lookup's figures.
    pub stats: LookupStats,
}

/// The network.
pub struct DhtNet {
    /// The simulator.
    pub sim: Sim,
    /// The nodes, in join order.
    pub nodes: Vec<NodeId>,
    /// Which are up.
    pub alive: Vec<bool>,
    rng: Rng,
}

impl DhtNet {
    /// Builds the network: node `i` gets `node_cfg(i)` with node 0 (and, past the first few,
    /// two nodes that joined before it) as bootstrap, at an address of its own /24.
    pub fn build(cfg: &DhtNetConfig, mut node_cfg: impl FnMut(usize) -> DhtConfig) -> DhtNet {
        let pipe = PipeConfig {
            latency: cfg.latency,
            loss: cfg.loss,
            ..PipeConfig::default()
        };
        let mut sim = Sim::new(cfg.seed, pipe);
        sim.share_default_pipe();
        let mut rng = Rng::new(cfg.seed ^ 0xd47);
        let mut nets = HashSet::new();
        let mut nodes: Vec<NodeId> = Vec::new();
        let gap = cfg.join_over / (cfg.nodes.max(1) as u32);
        for i in 0..cfg.nodes {
            let addr = loop {
                let (a, b) = (rng.below(256) as u8, rng.below(256) as u8);
                if nets.insert((a, b)) {
                    let c = 1 + rng.below(254) as u8;
                    break SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, a, b, c)), 6881);
                }
            };
            let mut dc = node_cfg(i);
            dc.ipv6 = false;
            if i > 0 {
                dc.bootstrap.push(sim.addr(nodes[0]));
                for _ in 0..2.min(i - 1) {
                    let j = 1 + rng.below(i as u64 - 1) as usize;
                    dc.bootstrap.push(sim.addr(nodes[j]));
                }
            }
            let now = sim.now();
            let node = DhtNode::new(dc, now, rng.next_u64());
            nodes.push(sim.add_core_at(addr, node));
            let until = sim.now() + gap;
            while sim.step(until) {}
        }
        let n = nodes.len();
        DhtNet {
            sim,
            nodes,
            alive: vec![true; n],
            rng,
        }
    }

    /// Runs the simulation for `d`.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.sim.now() + d;
        while self.sim.step(until) {}
    }

    /// The DHT node `i`, if up.
    pub fn node(&mut self, i: usize) -> Option<&mut DhtNode> {
        self.sim.core::<DhtNode>(self.nodes[i])
    }

    /// The address of node `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.sim.addr(self.nodes[i])
    }

    /// Node `i` serves `key` (announces itself on its DHT port).
    pub fn announce(&mut self, i: usize, key: Id) {
        let now = self.sim.now();
        let port = self.addr(i).port();
        if let Some(d) = self.node(i) {
            d.register(now, key, Some(port), false);
        }
    }

    /// Crashes a `fraction` of the nodes up, never those in `keep`.
    pub fn churn(&mut self, fraction: f64, keep: &[usize]) -> usize {
        let mut n = 0;
        for i in 1..self.nodes.len() {
            if self.alive[i] && !keep.contains(&i) && self.rng.chance(fraction) {
                self.sim.crash(self.nodes[i]);
                self.alive[i] = false;
                n += 1;
            }
        }
        n
    }

    /// A random node that is up (not in `except`).
    pub fn random_alive(&mut self, except: &[usize]) -> usize {
        loop {
            let i = self.rng.below(self.nodes.len() as u64) as usize;
            if self.alive[i] && !except.contains(&i) {
                return i;
            }
        }
    }

    /// Node `i` searches for `key`; true in the result when `want` is among the peers found.
    /// Runs the simulation until the search ends (at most `limit`).
    pub fn search(&mut self, i: usize, key: Id, want: SocketAddr, limit: Duration) -> SearchResult {
        let now = self.sim.now();
        if let Some(d) = self.node(i) {
            while d.poll_event().is_some() {}
            d.register(now, key, None, true);
        }
        let until = now + limit;
        let mut found = false;
        let mut stats = None;
        while stats.is_none() && self.sim.now() < until {
            let step_to = (self.sim.now() + Duration::from_millis(10)).min(until);
            while self.sim.step(step_to) {}
            let Some(d) = self.node(i) else { break };
            while let Some(ev) = d.poll_event() {
                match ev {
                    DhtEvent::Peers { key: k, peers } if k == key => {
                        found |= peers.contains(&want);
                    }
                    DhtEvent::SearchDone { key: k, stats: s } if k == key => stats = Some(s),
                    _ => {}
                }
            }
        }
        if let Some(d) = self.node(i) {
            d.unregister(&key);
        }
        SearchResult {
            found,
            stats: stats.unwrap_or_default(),
        }
    }
}

/// How a [`Hostile`] node misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// Answers every query with random bytes (half of them starting like a dictionary).
    Garbage,
    /// Answers with 8 nodes whose ids are crafted next to the target, at addresses where
    /// nobody is (a lookup that follows them finds nothing).
    FakeClosest,
    /// Answers `get_peers` with 200 made-up peers and 8 fake closest nodes, and no token.
    HugeValues,
    /// Answers correctly but never gives a token.
    NoToken,
    /// Sends `count` `get_peers` queries to `victim` as fast as it can, from one address.
    Flood {
        /// The node flooded.
        victim: SocketAddr,
        /// Queries to send.
        count: u32,
    },
}

/// A hostile DHT node of the simulator.
pub struct Hostile {
    attack: Attack,
    id: Id,
    rng: Rng,
    tx: std::collections::VecDeque<(SocketAddr, Vec<u8>)>,
    sent: u32,
    next: crate::time::Time,
    /// Replies it received (to a flood).
    pub replies: u64,
}

impl Hostile {
    /// A hostile node starting at `now`.
    pub fn new(attack: Attack, seed: u64, now: crate::time::Time) -> Hostile {
        let mut rng = Rng::new(seed);
        let mut id = [0u8; 20];
        rng.fill(&mut id);
        Hostile {
            attack,
            id,
            rng,
            tx: std::collections::VecDeque::new(),
            sent: 0,
            next: now,
            replies: 0,
        }
    }

    fn fake_nodes(&mut self, target: &Id, out: &mut Vec<u8>) {
        for i in 0..8u8 {
            let mut id = *target;
            id[19] ^= i + 1;
            let ip = Ipv4Addr::new(10, 250, self.rng.below(256) as u8, 1 + i);
            st_proto::krpc::put_node(out, &id, SocketAddr::new(IpAddr::V4(ip), 6881));
        }
    }
}

impl crate::driver::Core for Hostile {
    fn handle(&mut self, _now: crate::time::Time, remote: SocketAddr, data: &[u8]) {
        use st_proto::krpc::{self, Body, Message, Query, Reply};
        let Ok(m) = krpc::parse(data) else {
            return;
        };
        let Body::Query { query, .. } = &m.body else {
            self.replies += 1;
            return;
        };
        let target = match query {
            Query::FindNode { target } => *target,
            Query::GetPeers { info_hash } => *info_hash,
            _ => self.id,
        };
        let mut out = Vec::new();
        match self.attack {
            Attack::Garbage => {
                let n = 20 + self.rng.below(300) as usize;
                out.resize(n, 0);
                self.rng.fill(&mut out);
                if self.rng.chance(0.5) {
                    out[0] = b'd';
                }
            }
            Attack::Flood { .. } => return,
            attack => {
                let mut nodes = Vec::new();
                self.fake_nodes(&target, &mut nodes);
                let mut values = Vec::new();
                if attack == Attack::HugeValues && matches!(query, Query::GetPeers { .. }) {
                    for _ in 0..200 {
                        let ip = Ipv4Addr::new(10, 251, self.rng.below(256) as u8, 9);
                        values.push(SocketAddr::new(IpAddr::V4(ip), 1));
                    }
                }
                let token = (attack == Attack::FakeClosest
                    && matches!(query, Query::GetPeers { .. }))
                .then_some(&b"tok"[..]);
                let mut id = target;
                id[18] ^= 0x55;
                Message {
                    tid: m.tid,
                    version: None,
                    ip: None,
                    read_only: false,
                    body: Body::Reply(Reply {
                        id,
                        nodes: &nodes,
                        nodes6: &[],
                        values,
                        token,
                    }),
                }
                .encode(&mut out);
            }
        }
        self.tx.push_back((remote, out));
    }

    fn poll_transmit(
        &mut self,
        _now: crate::time::Time,
        buf: &mut [u8],
    ) -> Option<crate::driver::Transmit> {
        let (to, d) = self.tx.pop_front()?;
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Some(crate::driver::Transmit {
            remote: to,
            len: n,
            segment_size: None,
        })
    }

    fn poll_timeout(&self) -> Option<crate::time::Time> {
        match self.attack {
            Attack::Flood { count, .. } if self.sent < count => Some(self.next),
            _ => None,
        }
    }

    fn handle_timeout(&mut self, now: crate::time::Time) {
        use st_proto::krpc::{Body, Message, Query, Want};
        if let Attack::Flood { victim, count } = self.attack {
            // A burst of 100 every millisecond.
            for _ in 0..100 {
                if self.sent >= count {
                    break;
                }
                self.sent += 1;
                let tid = (self.sent as u16).to_be_bytes();
                let mut key = [0u8; 20];
                self.rng.fill(&mut key);
                let mut out = Vec::new();
                Message {
                    tid: &tid,
                    version: None,
                    ip: None,
                    read_only: false,
                    body: Body::Query {
                        id: self.id,
                        want: Want::default(),
                        query: Query::GetPeers { info_hash: key },
                    },
                }
                .encode(&mut out);
                self.tx.push_back((victim, out));
            }
            self.next = now + Duration::from_millis(1);
        }
    }
}
