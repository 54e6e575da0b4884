//! The deterministic network simulator used by tests (sans-IO, like the cores it drives).
//!
//! A virtual clock and an event queue deliver datagrams between any number of cores — any
//! [`Core`]: transport [`Endpoint`]s, trackers, peer nodes — over *pipes* with latency, jitter, a bandwidth bottleneck with a finite
//! drop-tail queue, random and bursty (Gilbert–Elliott) loss, duplication, reordering,
//! corruption and an MTU black hole; partitions and node crash/restart are scheduled by the
//! test.
//!
//! Each node may also have an access link of limited rate in each direction (see
//! [`LinkConfig`], [`Sim::set_uplink`], [`Sim::set_downlink`]), shared by all its paths, as a
//! home or datacenter host's NIC is: a datagram first waits in the sender's uplink queue and
//! is serialised at the uplink rate, then crosses its pipe (loss, latency, the pipe's own
//! bottleneck), then waits in the receiver's downlink queue and is serialised at the downlink
//! rate. Both queues are FIFO and drop-tail; the downlink queue is served in arrival order
//! (arrivals pass through the event queue, so the order is exact).
//!
//! Multicast: a node joins groups ([`Sim::join_group`]); what its core sends to a group with
//! `poll_multicast` goes, through the same pipes, to every other member, whose core gets it
//! through `handle_multicast` (a LAN segment). Every run is a pure function of its seed. It
//! calls exactly the entry points the reactor calls, so simulated tests run production code.
//! It owns no sockets and reads no clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use std::any::Any;

use crate::driver::Core;
use crate::rng::Rng;
use crate::time::Time;
use crate::transport::{Config, Endpoint};

/// A core the simulator can host: any [`Core`] (looked at again through [`Sim::core`]).
pub trait SimCore: Core + Any {}
impl<T: Core + Any> SimCore for T {}

/// Makes a node's core again after a restart, from a seed.
type Factory = Box<dyn FnMut(u64) -> Box<dyn SimCore>>;

pub mod dht;
pub mod swarm;

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
    /// Largest UDP payload the link carries (default 1472, Ethernet); larger datagrams vanish
    /// silently (an MTU black hole, as with the don't-fragment bit set).
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
            mtu: 1472,
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

/// An access link of a node in one direction: a FIFO serialisation queue at a fixed rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// Rate in bits per second.
    pub rate_bps: u64,
    /// Drop-tail queue in front of the link, bytes (a datagram that would take the backlog
    /// above this is dropped; its [`LinkConfig::overhead_bytes`] count).
    pub queue_bytes: usize,
    /// Bytes each datagram occupies on the link beyond its UDP payload: the headers below
    /// UDP, as a real link's shaper counts them. 42 for IPv4 over Ethernet (14 + 20 + 8, what
    /// `tc` counts on a veth), 62 for IPv6; 0 counts UDP payload bytes alone.
    pub overhead_bytes: usize,
}

/// Counters of a node's access link in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams that passed the link.
    pub datagrams: u64,
    /// Bytes that passed the link, each datagram's [`LinkConfig::overhead_bytes`] included.
    pub bytes: u64,
    /// Datagrams dropped at the full queue.
    pub queue_drops: u64,
}

#[derive(Default)]
struct Link {
    cfg: Option<LinkConfig>,
    /// When the link finishes sending what it has queued, in nanoseconds (finer than
    /// [`Time`], so that rounding does not bias the rate).
    busy_until_ns: u128,
    stats: LinkStats,
}

impl Link {
    /// Queues `len` bytes arriving at `at`; returns when the last bit leaves the link, or
    /// `None` if the queue is full (or the link has no limit: then it returns `at`).
    fn pass(&mut self, at: Time, len: usize) -> Option<Time> {
        let Some(cfg) = self.cfg else {
            return Some(at);
        };
        let len = len + cfg.overhead_bytes;
        let rate = u128::from(cfg.rate_bps.max(1));
        let at_ns = u128::from(at.as_micros()) * 1000;
        let start = self.busy_until_ns.max(at_ns);
        let backlog = (start - at_ns) * rate / 8_000_000_000;
        if backlog + len as u128 > cfg.queue_bytes as u128 {
            self.stats.queue_drops += 1;
            return None;
        }
        self.busy_until_ns = start + (len as u128 * 8_000_000_000).div_ceil(rate);
        self.stats.datagrams += 1;
        self.stats.bytes += len as u64;
        let us = self.busy_until_ns.div_ceil(1000);
        Some(Time::from_micros(u64::try_from(us).unwrap_or(u64::MAX)))
    }
}

struct Node {
    up: Link,
    down: Link,
    /// The endpoint may have changed since its transmits were drained and its timeout read
    /// (it was handed out by [`Sim::endpoint`], or created): drain it and read again.
    dirty: bool,
    /// The endpoint's `poll_timeout` as of its last drain (valid while not `dirty`).
    timeout: Option<Time>,
    addr: SocketAddr,
    make: Option<Factory>,
    ep: Option<Box<dyn SimCore>>,
    restarts: u64,
    sent: HashMap<SocketAddr, SentLog>,
    /// Multicast groups joined.
    groups: Vec<SocketAddr>,
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

/// Where an arrival is: at the receiver's downlink queue, or through it.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Downlink,
    Deliver,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Arrival {
    at: Time,
    seq: u64,
    stage: Stage,
    dst: usize,
    src: SocketAddr,
    data: Vec<u8>,
    /// Sent to a multicast group (delivered through `handle_multicast`).
    multicast: bool,
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
    /// Node timers `(deadline, node)`; an entry is stale unless it equals the node's `timeout`.
    timers: BinaryHeap<Reverse<(Time, usize)>>,
    /// Nodes marked dirty since the last flush.
    dirty: Vec<usize>,
    /// One pipe for every pair without a route of its own (see [`Sim::share_default_pipe`]).
    shared_pipe: Option<usize>,
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
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            shared_pipe: None,
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

    /// Adds a node running an endpoint with `cfg` (a restart makes a fresh one, with the same
    /// config and secret).
    pub fn add_node(&mut self, mut cfg: Config) -> NodeId {
        if cfg.secret.is_none() {
            // A node keeps its secret across crash/restart.
            let mut s = [0u8; 32];
            self.rng.fill(&mut s);
            cfg.secret = Some(s);
        }
        let seed = self.rng.next_u64();
        let ep = Endpoint::new(cfg.clone(), seed);
        let n = self.add_core(ep);
        self.nodes[n.0].make = Some(Box::new(move |seed| {
            Box::new(Endpoint::new(cfg.clone(), seed)) as Box<dyn SimCore>
        }));
        n
    }

    /// The address the next node added with [`Sim::add_core`] will have.
    pub fn next_addr(&self) -> SocketAddr {
        let i = self.nodes.len() + 1;
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8)),
            4000,
        )
    }

    /// From now on, every pair of nodes without a route of its own shares one pipe made from
    /// the default config (so a simulation of thousands of nodes does not keep a pipe per
    /// pair; the default config must then have no rate and no bursty loss, whose state
    /// would be shared).
    pub fn share_default_pipe(&mut self) {
        if self.shared_pipe.is_none() {
            let p = self.add_pipe(self.default_pipe.clone());
            self.shared_pipe = Some(p.0);
        }
    }

    /// Adds a node running `core` (see [`Sim::next_addr`] for its address). It can be
    /// crashed, and restarted with [`Sim::restart_with`].
    pub fn add_core(&mut self, core: impl SimCore) -> NodeId {
        let addr = self.next_addr();
        self.add_core_at(addr, core)
    }

    /// Adds a node running `core` at `addr` (which no other node has).
    pub fn add_core_at(&mut self, addr: SocketAddr, core: impl SimCore) -> NodeId {
        let i = self.nodes.len();
        assert!(
            !self.by_addr.contains_key(&addr),
            "two simulated nodes at {addr}"
        );
        self.dirty.push(i);
        self.nodes.push(Node {
            up: Link::default(),
            down: Link::default(),
            dirty: true,
            timeout: None,
            addr,
            ep: Some(Box::new(core)),
            make: None,
            restarts: 0,
            sent: HashMap::new(),
            groups: Vec::new(),
        });
        self.by_addr.insert(addr, i);
        NodeId(i)
    }

    /// Node `n` joins multicast `group`: what other members send to it reaches `n`.
    pub fn join_group(&mut self, n: NodeId, group: SocketAddr) {
        if !self.nodes[n.0].groups.contains(&group) {
            self.nodes[n.0].groups.push(group);
        }
    }

    /// The core of node `n` if it is a `T` (`None` while crashed). Its transmits are drained
    /// at the next [`Self::flush`] or [`Self::step`].
    pub fn core<T: SimCore>(&mut self, n: NodeId) -> Option<&mut T> {
        self.nodes[n.0].dirty = true;
        self.dirty.push(n.0);
        let c: &mut dyn Any = self.nodes[n.0].ep.as_deref_mut()?;
        c.downcast_mut::<T>()
    }

    /// The core of node `n` if it is a `T`, to look at.
    pub fn core_ref<T: SimCore>(&self, n: NodeId) -> Option<&T> {
        let c: &dyn Any = self.nodes[n.0].ep.as_deref()?;
        c.downcast_ref::<T>()
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

    /// The endpoint of a node (`None` while crashed). The node's transmits are drained at the
    /// next [`Self::flush`] or [`Self::step`].
    pub fn endpoint(&mut self, n: NodeId) -> Option<&mut Endpoint> {
        self.core::<Endpoint>(n)
    }

    /// The endpoint of a node, to look at (`None` while crashed).
    pub fn endpoint_ref(&self, n: NodeId) -> Option<&Endpoint> {
        self.core_ref::<Endpoint>(n)
    }

    /// Limits node `n`'s uplink (everything it sends, to any destination) from now on;
    /// `None` removes the limit.
    pub fn set_uplink(&mut self, n: NodeId, cfg: Option<LinkConfig>) {
        self.nodes[n.0].up.cfg = cfg;
    }

    /// Limits node `n`'s downlink (everything it receives, from any source) from now on;
    /// `None` removes the limit.
    pub fn set_downlink(&mut self, n: NodeId, cfg: Option<LinkConfig>) {
        self.nodes[n.0].down.cfg = cfg;
    }

    /// Counters of node `n`'s uplink (counted only while a limit is set).
    pub fn uplink_stats(&self, n: NodeId) -> LinkStats {
        self.nodes[n.0].up.stats
    }

    /// Counters of node `n`'s downlink (counted only while a limit is set).
    pub fn downlink_stats(&self, n: NodeId) -> LinkStats {
        self.nodes[n.0].down.stats
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
        if let Some(p) = self.shared_pipe {
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
        self.nodes[n.0].timeout = None;
    }

    /// Restarts a crashed node made by [`Sim::add_node`] with a fresh endpoint (same config
    /// and secret, new seed). A node added with [`Sim::add_core`] needs
    /// [`Sim::restart_with`]; this leaves it down.
    pub fn restart(&mut self, n: NodeId) {
        let node = &mut self.nodes[n.0];
        node.restarts += 1;
        let seed = self.seed ^ (n.0 as u64) << 32 ^ node.restarts;
        node.ep = node.make.as_mut().map(|m| m(seed));
        node.dirty = true;
        self.dirty.push(n.0);
    }

    /// Restarts node `n` (crashed or not: a running core is replaced, as by a crash) with
    /// `core`, at the same address.
    pub fn restart_with(&mut self, n: NodeId, core: impl SimCore) {
        let node = &mut self.nodes[n.0];
        node.restarts += 1;
        node.ep = Some(Box::new(core));
        node.timeout = None;
        node.dirty = true;
        self.dirty.push(n.0);
    }

    fn partitioned(&self, a: usize, b: usize) -> bool {
        self.partitions.iter().any(|p| {
            self.now >= p.from
                && self.now < p.until
                && ((p.a.contains(&NodeId(a)) && p.b.contains(&NodeId(b)))
                    || (p.a.contains(&NodeId(b)) && p.b.contains(&NodeId(a))))
        })
    }

    fn offer(&mut self, src: usize, dst: usize, data: &[u8], multicast: bool) {
        let p = self.pipe_of(NodeId(src), NodeId(dst)).0;
        // The sender's access link first (whatever happens on the path, the datagram used
        // it): the datagram leaves it at `now`.
        let Some(now) = self.nodes[src].up.pass(self.now, data.len()) else {
            return;
        };
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
            let stage = if self.nodes[dst].down.cfg.is_some() {
                Stage::Downlink
            } else {
                Stage::Deliver
            };
            self.seq += 1;
            self.queue.push(Reverse(Arrival {
                at,
                seq: self.seq,
                stage,
                dst,
                src: self.nodes[src].addr,
                data: d,
                multicast,
            }));
        }
    }

    fn drain_transmits(&mut self, i: usize) {
        let mut buf = std::mem::take(&mut self.buf);
        loop {
            let now = self.now;
            let node = &mut self.nodes[i];
            let Some(ep) = node.ep.as_mut() else {
                node.dirty = false;
                node.timeout = None;
                break;
            };
            let Some(t) = ep.poll_transmit(now, &mut buf) else {
                node.dirty = false;
                let t = ep.poll_timeout();
                if t != node.timeout
                    && let Some(t) = t
                {
                    self.timers.push(Reverse((t, i)));
                }
                node.timeout = t;
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
                self.offer(i, dst, d, false);
            }
        }
        // Multicast: to every other member of the group.
        loop {
            let now = self.now;
            let Some(ep) = self.nodes[i].ep.as_mut() else {
                break;
            };
            let Some(t) = ep.poll_multicast(now, &mut buf) else {
                break;
            };
            let members: Vec<usize> = (0..self.nodes.len())
                .filter(|&j| j != i && self.nodes[j].groups.contains(&t.remote))
                .collect();
            let data = buf[..t.len].to_vec();
            for j in members {
                self.offer(i, j, &data, true);
            }
        }
        self.buf = buf;
    }

    /// Lets every node send what it has queued (call after commands like `send`). Only nodes
    /// whose endpoint was handed out since they were last drained can have anything new.
    pub fn flush(&mut self) {
        for i in std::mem::take(&mut self.dirty) {
            if self.nodes[i].dirty {
                self.drain_transmits(i);
            }
        }
    }

    /// The next time something happens, if anything will.
    pub fn next_event(&self) -> Option<Time> {
        let q = self.queue.peek().map(|Reverse(a)| a.at);
        // The earliest timer (a stale entry only makes a step that finds nothing to do).
        let t = self.timers.peek().map(|Reverse((t, _))| *t);
        let t = self
            .dirty
            .iter()
            .filter_map(|&i| self.nodes[i].ep.as_ref()?.poll_timeout())
            .chain(t)
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
        // Stale timer entries (the node's deadline moved, or it crashed) go.
        while let Some(Reverse((t, i))) = self.timers.peek().copied() {
            if self.nodes[i].timeout == Some(t) {
                break;
            }
            self.timers.pop();
        }
        let Some(next) = self.next_event().filter(|&t| t <= limit) else {
            self.now = self.now.max(limit);
            return false;
        };
        self.now = self.now.max(next);
        while self.queue.peek().is_some_and(|Reverse(a)| a.at <= self.now) {
            let Some(Reverse(mut a)) = self.queue.pop() else {
                break;
            };
            let now = self.now;
            if a.stage == Stage::Downlink {
                // Through the receiver's access link, in arrival order.
                if let Some(at) = self.nodes[a.dst].down.pass(now, a.data.len()) {
                    a.at = at;
                    a.stage = Stage::Deliver;
                    self.queue.push(Reverse(a));
                }
                continue;
            }
            if self.nodes[a.dst].ep.is_some() {
                self.pipes_delivered(a.src, a.dst, a.data.len());
            }
            if let Some(ep) = self.nodes[a.dst].ep.as_mut() {
                if a.multicast {
                    ep.handle_multicast(now, a.src, &a.data);
                } else {
                    ep.handle(now, a.src, &a.data);
                }
                self.drain_transmits(a.dst);
            }
        }
        // Timers that expired. A node that neither received nor timed out has nothing new to
        // send (its pacing and retransmissions are timers), so it is not polled.
        let mut due = Vec::new();
        while let Some(Reverse((t, i))) = self.timers.peek().copied() {
            if t > self.now {
                break;
            }
            self.timers.pop();
            if self.nodes[i].timeout == Some(t) {
                due.push(i);
            }
        }
        due.extend(std::mem::take(&mut self.dirty));
        due.sort_unstable();
        due.dedup();
        for i in due {
            let now = self.now;
            let node = &mut self.nodes[i];
            // Its deadline is taken: the next drain files it again.
            node.timeout = None;
            {
                if let Some(ep) = node.ep.as_mut()
                    && ep.poll_timeout().is_some_and(|t| t <= now)
                {
                    ep.handle_timeout(now);
                }
                self.drain_transmits(i);
            }
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
            stage: Stage::Deliver,
            dst: dst.0,
            src,
            data: data.to_vec(),
            multicast: false,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Event;

    #[test]
    fn a_link_serialises_at_its_rate_and_drops_at_a_full_queue() {
        let mut l = Link {
            cfg: Some(LinkConfig {
                rate_bps: 10_000_000,
                queue_bytes: 2500,
                overhead_bytes: 0,
            }),
            ..Link::default()
        };
        let t0 = Time::from_micros(1_000_000);
        let us = |t: Option<Time>| t.map(|t| t.as_micros() - t0.as_micros());
        // 1250 bytes at 10 Mbit/s take 1 ms each, back to back.
        assert_eq!(us(l.pass(t0, 1250)), Some(1000));
        assert_eq!(us(l.pass(t0, 1250)), Some(2000));
        // 2500 bytes are queued: a third datagram does not fit.
        assert_eq!(us(l.pass(t0, 1250)), None);
        assert_eq!(l.stats.queue_drops, 1);
        // Once the queue drained a little, it fits again, after the backlog.
        assert_eq!(
            us(l.pass(t0 + Duration::from_micros(1000), 1250)),
            Some(3000)
        );
        // An idle link sends at once.
        assert_eq!(
            us(l.pass(t0 + Duration::from_secs(1), 125)),
            Some(1_000_100)
        );
        assert_eq!(l.stats.datagrams, 4);
        assert_eq!(l.stats.bytes, 3875);
        // No limit: no delay, no counting.
        let mut free = Link::default();
        assert_eq!(us(free.pass(t0, 60_000)), Some(0));
    }

    /// Streams messages from each `(sender, receiver)` pair for `secs` virtual seconds; returns
    /// the bytes the receivers read.
    fn stream(sim: &mut Sim, pairs: &[(NodeId, NodeId)], secs: u64) -> u64 {
        let now = sim.now();
        let conns: Vec<_> = pairs
            .iter()
            .map(|&(a, b)| {
                let addr = sim.addr(b);
                (a, sim.endpoint(a).expect("up").connect(now, addr))
            })
            .collect();
        let msg = vec![0x5au8; 16 * 1024];
        let end = now + Duration::from_secs(secs);
        let mut got = 0u64;
        while sim.now() < end {
            for &(a, h) in &conns {
                let ep = sim.endpoint(a).expect("up");
                while ep.send(h, &msg).is_ok() {}
            }
            for i in 0..sim.nodes.len() {
                let ep = sim.endpoint(NodeId(i)).expect("up");
                let mut readable = Vec::new();
                while let Some(ev) = ep.poll_event() {
                    if let Event::Readable(h) = ev {
                        readable.push(h);
                    }
                }
                for h in readable {
                    while let Some(m) = ep.recv(h) {
                        got += m.len() as u64;
                    }
                }
            }
            let limit = sim.now() + Duration::from_millis(5);
            while sim.step(limit) {}
        }
        got
    }

    fn sim_with(nodes: usize) -> (Sim, Vec<NodeId>) {
        // Each path alone carries four times the node link.
        let pipe = PipeConfig {
            rate_bps: Some(4 * LINK.rate_bps),
            queue_bytes: 200_000,
            ..PipeConfig::default()
        };
        let mut sim = Sim::new(7, pipe);
        let ids = (0..nodes)
            .map(|_| {
                sim.add_node(Config {
                    accept: true,
                    ..Config::default()
                })
            })
            .collect();
        (sim, ids)
    }

    const LINK: LinkConfig = LinkConfig {
        rate_bps: 4_000_000,
        queue_bytes: 50_000,
        overhead_bytes: 0,
    };

    #[test]
    fn a_node_uplink_limits_all_its_paths_together() {
        let secs = 3;
        let cap = LINK.rate_bps / 8 * secs;
        // Without a limit the two flows move far more than the link would carry.
        let (mut sim, n) = sim_with(3);
        let free = stream(&mut sim, &[(n[0], n[1]), (n[0], n[2])], secs);
        assert!(free > 4 * cap, "unlimited: {free} bytes");
        let (mut sim, n) = sim_with(3);
        sim.set_uplink(n[0], Some(LINK));
        let got = stream(&mut sim, &[(n[0], n[1]), (n[0], n[2])], secs);
        assert!(got <= cap, "uplink passed {got} bytes > {cap}");
        assert!(got > cap * 3 / 4, "uplink passed only {got} bytes of {cap}");
        let st = sim.uplink_stats(n[0]);
        assert!(st.bytes <= cap + LINK.queue_bytes as u64, "{st:?}");
        assert_eq!(sim.downlink_stats(n[1]), LinkStats::default());
    }

    #[test]
    fn a_node_downlink_limits_all_its_paths_together() {
        let secs = 3;
        let cap = LINK.rate_bps / 8 * secs;
        let (mut sim, n) = sim_with(3);
        sim.set_downlink(n[0], Some(LINK));
        let got = stream(&mut sim, &[(n[1], n[0]), (n[2], n[0])], secs);
        assert!(got <= cap, "downlink passed {got} bytes > {cap}");
        assert!(
            got > cap * 3 / 4,
            "downlink passed only {got} bytes of {cap}"
        );
        assert!(sim.downlink_stats(n[0]).bytes <= cap + LINK.queue_bytes as u64);
    }
}
