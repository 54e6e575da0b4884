//! The deterministic network simulator used by tests (sans-IO, like the cores it drives).
//!
//! A virtual clock and an event queue deliver datagrams between any number of
//! [`Endpoint`]s over *pipes* with latency, jitter, a bandwidth bottleneck with a finite
//! drop-tail queue, random and bursty (Gilbert–Elliott) loss, duplication, reordering,
//! corruption and an MTU black hole; partitions and node crash/restart are scheduled by the
//! test. Every run is a pure function of its seed. It calls exactly the entry points the reactor
//! calls (`handle`, `handle_timeout`, `poll_transmit`, `poll_timeout`), so simulated tests run
//! production code. It owns no sockets and reads no clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::rng::Rng;
use crate::time::Time;
use crate::transport::{Config, Endpoint};

/// Index of a node in a [`Sim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// Index of a pipe in a [`Sim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PipeId(pub usize);

/// Properties of one direction of a path.
#[derive(Debug, Clone)]
pub struct PipeConfig {
    /// One-way propagation delay.
    pub latency: Duration,
    /// Extra delay, uniform in `[0, jitter]`, per datagram (reorders when large).
    pub jitter: Duration,
    /// Bottleneck rate in bits per second (`None` = infinite).
    pub rate_bps: Option<u64>,
    /// Drop-tail queue in front of the bottleneck, bytes.
    pub queue_bytes: usize,
    /// Independent random loss probability.
    pub loss: f64,
    /// Bursty loss (Gilbert–Elliott): probability of entering the bad state per datagram.
    pub burst_enter: f64,
    /// Probability of leaving the bad state per datagram.
    pub burst_leave: f64,
    /// Loss probability in the bad state.
    pub burst_loss: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability a datagram is held back by `reorder_delay`.
    pub reorder: f64,
    /// Extra delay of a reordered datagram.
    pub reorder_delay: Duration,
    /// Probability one random byte of a datagram is flipped.
    pub corrupt: f64,
    /// Datagrams larger than this vanish silently (MTU black hole).
    pub mtu: usize,
}

impl Default for PipeConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            rate_bps: None,
            queue_bytes: 1 << 20,
            loss: 0.0,
            burst_enter: 0.0,
            burst_leave: 0.3,
            burst_loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(5),
            corrupt: 0.0,
            mtu: 65_535,
        }
    }
}

/// Counters of a pipe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipeStats {
    /// Datagrams offered.
    pub offered: u64,
    /// Datagrams delivered (duplicates count twice).
    pub delivered: u64,
    /// Bytes delivered.
    pub delivered_bytes: u64,
    /// Dropped by random or bursty loss.
    pub lost: u64,
    /// Dropped at the full queue.
    pub queue_drops: u64,
    /// Dropped for exceeding the MTU.
    pub mtu_drops: u64,
    /// Corrupted (and delivered).
    pub corrupted: u64,
}

struct Pipe {
    cfg: PipeConfig,
    busy_until: Time,
    bad: bool,
    stats: PipeStats,
}

struct Node {
    addr: SocketAddr,
    cfg: Config,
    ep: Option<Endpoint>,
    restarts: u64,
    sent: HashMap<SocketAddr, SentLog>,
}

/// What one node handed to the network for one destination address (before any pipe fault,
/// and including destinations that are not nodes, such as spoofed sources).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentLog {
    /// Datagrams.
    pub datagrams: u64,
    /// UDP payload bytes.
    pub bytes: u64,
    /// Send times of the first [`SentLog::TIMES_KEPT`] datagrams.
    pub times: Vec<Time>,
}

impl SentLog {
    /// How many send times are kept.
    pub const TIMES_KEPT: usize = 64;
}

struct Partition {
    a: Vec<NodeId>,
    b: Vec<NodeId>,
    from: Time,
    until: Time,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Arrival {
    at: Time,
    seq: u64,
    dst: usize,
    src: SocketAddr,
    data: Vec<u8>,
}

/// The simulator.
pub struct Sim {
    now: Time,
    rng: Rng,
    seed: u64,
    seq: u64,
    nodes: Vec<Node>,
    by_addr: HashMap<SocketAddr, usize>,
    pipes: Vec<Pipe>,
    routes: HashMap<(usize, usize), usize>,
    default_pipe: PipeConfig,
    partitions: Vec<Partition>,
    queue: BinaryHeap<Reverse<Arrival>>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .finish()
    }
}

impl Sim {
    /// A simulator whose every random choice follows from `seed`; new paths get `default_pipe`.
    pub fn new(seed: u64, default_pipe: PipeConfig) -> Self {
        Self {
            now: Time::from_micros(1_000_000),
            rng: Rng::new(seed),
            seed,
            seq: 0,
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            pipes: Vec::new(),
            routes: HashMap::new(),
            default_pipe,
            partitions: Vec::new(),
            queue: BinaryHeap::new(),
            buf: vec![0u8; 1 << 16],
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Virtual now.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Adds a node running an endpoint with `cfg`.
    pub fn add_node(&mut self, mut cfg: Config) -> NodeId {
        if cfg.secret.is_none() {
            // A node keeps its secret across crash/restart.
            let mut s = [0u8; 32];
            self.rng.fill(&mut s);
            cfg.secret = Some(s);
        }
        let i = self.nodes.len();
        let addr = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8 + 1)),
            4000,
        );
        let seed = self.rng.next_u64();
        self.nodes.push(Node {
            addr,
            ep: Some(Endpoint::new(cfg.clone(), seed)),
            cfg,
            restarts: 0,
            sent: HashMap::new(),
        });
        self.by_addr.insert(addr, i);
        NodeId(i)
    }

    /// What node `from` sent to address `to` (any address, node or not).
    pub fn sent_to(&self, from: NodeId, to: SocketAddr) -> SentLog {
        self.nodes[from.0]
            .sent
            .get(&to)
            .cloned()
            .unwrap_or_default()
    }

    /// Every destination node `from` sent to, with what it sent.
    pub fn sent_by(&self, from: NodeId) -> impl Iterator<Item = (SocketAddr, &SentLog)> + '_ {
        self.nodes[from.0].sent.iter().map(|(a, l)| (*a, l))
    }

    /// Address of a node.
    pub fn addr(&self, n: NodeId) -> SocketAddr {
        self.nodes[n.0].addr
    }

    /// The endpoint of a node (`None` while crashed).
    pub fn endpoint(&mut self, n: NodeId) -> Option<&mut Endpoint> {
        self.nodes[n.0].ep.as_mut()
    }

    /// Adds a pipe; route directions through it with [`Self::route`].
    pub fn add_pipe(&mut self, cfg: PipeConfig) -> PipeId {
        self.pipes.push(Pipe {
            cfg,
            busy_until: Time::ZERO,
            bad: false,
            stats: PipeStats::default(),
        });
        PipeId(self.pipes.len() - 1)
    }

    /// Sends datagrams from `from` to `to` through `pipe` (several routes may share a pipe:
    /// that is a shared bottleneck).
    pub fn route(&mut self, from: NodeId, to: NodeId, pipe: PipeId) {
        self.routes.insert((from.0, to.0), pipe.0);
    }

    /// Counters of a pipe.
    pub fn pipe_stats(&self, p: PipeId) -> PipeStats {
        self.pipes[p.0].stats
    }

    /// The pipe carrying `from → to` (created from the default config on first use).
    pub fn pipe_of(&mut self, from: NodeId, to: NodeId) -> PipeId {
        if let Some(&p) = self.routes.get(&(from.0, to.0)) {
            return PipeId(p);
        }
        let p = self.add_pipe(self.default_pipe.clone());
        self.route(from, to, p);
        p
    }

    /// Changes a pipe's properties from now on.
    pub fn set_pipe(&mut self, p: PipeId, cfg: PipeConfig) {
        self.pipes[p.0].cfg = cfg;
    }

    /// Drops every datagram between the two sets in `[from, until)`.
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId], from: Time, until: Time) {
        self.partitions.push(Partition {
            a: a.to_vec(),
            b: b.to_vec(),
            from,
            until,
        });
    }

    /// Crashes a node: its endpoint and all its state are gone; datagrams to it vanish.
    pub fn crash(&mut self, n: NodeId) {
        self.nodes[n.0].ep = None;
    }

    /// Restarts a crashed node with a fresh endpoint (same config and secret, new seed).
    pub fn restart(&mut self, n: NodeId) {
        let node = &mut self.nodes[n.0];
        node.restarts += 1;
        let seed = self.seed ^ (n.0 as u64) << 32 ^ node.restarts;
        node.ep = Some(Endpoint::new(node.cfg.clone(), seed));
    }

    fn partitioned(&self, a: usize, b: usize) -> bool {
        self.partitions.iter().any(|p| {
            self.now >= p.from
                && self.now < p.until
                && ((p.a.contains(&NodeId(a)) && p.b.contains(&NodeId(b)))
                    || (p.a.contains(&NodeId(b)) && p.b.contains(&NodeId(a))))
        })
    }

    fn offer(&mut self, src: usize, dst: usize, data: &[u8]) {
        let p = self.pipe_of(NodeId(src), NodeId(dst)).0;
        let now = self.now;
        let partitioned = self.partitioned(src, dst);
        let pipe = &mut self.pipes[p];
        let cfg = &pipe.cfg;
        pipe.stats.offered += 1;
        if data.len() > cfg.mtu {
            pipe.stats.mtu_drops += 1;
            return;
        }
        if partitioned {
            pipe.stats.lost += 1;
            return;
        }
        // Bursty loss state machine (Gilbert–Elliott).
        if pipe.bad {
            if self.rng.chance(cfg.burst_leave) {
                pipe.bad = false;
            }
        } else if self.rng.chance(cfg.burst_enter) {
            pipe.bad = true;
        }
        if self.rng.chance(cfg.loss) || (pipe.bad && self.rng.chance(cfg.burst_loss)) {
            pipe.stats.lost += 1;
            return;
        }
        // Bottleneck with a drop-tail queue.
        let depart = if let Some(rate) = cfg.rate_bps {
            let start = pipe.busy_until.max(now);
            let backlog_us = start.as_micros() - now.as_micros();
            let backlog = backlog_us as u128 * rate as u128 / 8_000_000;
            if backlog as usize + data.len() > cfg.queue_bytes {
                pipe.stats.queue_drops += 1;
                return;
            }
            let tx_us = (data.len() as u128 * 8_000_000).div_ceil(rate as u128) as u64;
            pipe.busy_until = Time::from_micros(start.as_micros() + tx_us);
            pipe.busy_until
        } else {
            now
        };
        let copies = if self.rng.chance(cfg.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let cfg = &self.pipes[p].cfg;
            let mut at = depart + cfg.latency;
            if !cfg.jitter.is_zero() {
                at =
                    at + Duration::from_micros(self.rng.below(crate::time::micros(cfg.jitter) + 1));
            }
            if self.rng.chance(cfg.reorder) {
                at = at + cfg.reorder_delay;
            }
            let mut d = data.to_vec();
            if self.rng.chance(cfg.corrupt) && !d.is_empty() {
                let i = self.rng.below(d.len() as u64) as usize;
                d[i] ^= 1 << self.rng.below(8);
                self.pipes[p].stats.corrupted += 1;
            }
            self.seq += 1;
            self.queue.push(Reverse(Arrival {
                at,
                seq: self.seq,
                dst,
                src: self.nodes[src].addr,
                data: d,
            }));
        }
    }

    fn drain_transmits(&mut self, i: usize) {
        let mut buf = std::mem::take(&mut self.buf);
        loop {
            let now = self.now;
            let Some(ep) = self.nodes[i].ep.as_mut() else {
                break;
            };
            let Some(t) = ep.poll_transmit(now, &mut buf) else {
                break;
            };
            let log = self.nodes[i].sent.entry(t.remote).or_default();
            for d in t.datagrams(&buf) {
                log.datagrams += 1;
                log.bytes += d.len() as u64;
                if log.times.len() < SentLog::TIMES_KEPT {
                    log.times.push(now);
                }
            }
            let Some(&dst) = self.by_addr.get(&t.remote) else {
                continue;
            };
            for d in t.datagrams(&buf) {
                self.offer(i, dst, d);
            }
        }
        self.buf = buf;
    }

    /// Lets every node send what it has queued (call after commands like `send`).
    pub fn flush(&mut self) {
        for i in 0..self.nodes.len() {
            self.drain_transmits(i);
        }
    }

    /// The next time something happens, if anything will.
    pub fn next_event(&self) -> Option<Time> {
        let q = self.queue.peek().map(|Reverse(a)| a.at);
        let t = self
            .nodes
            .iter()
            .filter_map(|n| n.ep.as_ref()?.poll_timeout())
            .min();
        match (q, t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Advances to the next event (not past `limit`) and processes it. Returns false when
    /// nothing is left before `limit` (the clock is then set to `limit`).
    pub fn step(&mut self, limit: Time) -> bool {
        self.flush();
        let Some(next) = self.next_event().filter(|&t| t <= limit) else {
            self.now = self.now.max(limit);
            return false;
        };
        self.now = self.now.max(next);
        while self.queue.peek().is_some_and(|Reverse(a)| a.at <= self.now) {
            let Some(Reverse(a)) = self.queue.pop() else {
                break;
            };
            let now = self.now;
            if self.nodes[a.dst].ep.is_some() {
                self.pipes_delivered(a.src, a.dst, a.data.len());
            }
            if let Some(ep) = self.nodes[a.dst].ep.as_mut() {
                ep.handle(now, a.src, &a.data);
                self.drain_transmits(a.dst);
            }
        }
        for i in 0..self.nodes.len() {
            let now = self.now;
            if let Some(ep) = self.nodes[i].ep.as_mut()
                && ep.poll_timeout().is_some_and(|t| t <= now)
            {
                ep.handle_timeout(now);
            }
            self.drain_transmits(i);
        }
        true
    }

    fn pipes_delivered(&mut self, src: SocketAddr, dst: usize, len: usize) {
        if let Some(&s) = self.by_addr.get(&src)
            && let Some(&p) = self.routes.get(&(s, dst))
        {
            self.pipes[p].stats.delivered += 1;
            self.pipes[p].stats.delivered_bytes += len as u64;
        }
    }

    /// Injects a raw datagram from an arbitrary (possibly spoofed) source address.
    pub fn inject(&mut self, src: SocketAddr, dst: NodeId, data: &[u8]) {
        self.seq += 1;
        let at = self.now;
        self.queue.push(Reverse(Arrival {
            at,
            seq: self.seq,
            dst: dst.0,
            src,
            data: data.to_vec(),
        }));
    }
}

/// Runs `f` for the given seeds plus `ST_SIM_SEEDS` extra ones (environment variable, a
/// count), printing the seed of a failing run. `ST_SIM_SEED=n` runs only seed `n`.
pub fn for_seeds(base: &[u64], mut f: impl FnMut(u64)) {
    let extra: u64 = std::env::var("ST_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut seeds = base.to_vec();
    if let Some(one) = std::env::var("ST_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        seeds = vec![one];
    }
    let mut r = Rng::new(0xfeed ^ base.first().copied().unwrap_or(0));
    seeds.extend((0..extra).map(|_| r.next_u64()));
    for s in seeds {
        struct Guard(u64);
        impl Drop for Guard {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    eprintln!(
                        "simulation failed with seed {} (rerun: ST_SIM_SEED={})",
                        self.0, self.0
                    );
                }
            }
        }
        let g = Guard(s);
        f(s);
        drop(g);
    }
}
