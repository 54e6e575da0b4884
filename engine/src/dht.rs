//! The DHT node: one sans-IO core for the mainline DHT (BEP 5, KRPC over UDP) on the peer's
//! port. It owns the routing tables, the lookups, the peer store and its tokens, the abuse
//! limits, bootstrap, and the announce and search schedule of every key the peer node serves
//! (normative text: `spec/dht.md`).
//!
//! The peer node hands it every datagram that is a bencoded dictionary (§3) and the keys of
//! its swarms ([`DhtNode::register`]); it reports peers it found as [`DhtEvent`]s. It can also
//! run alone (the simulator hosts thousands of them): it is a [`Core`].

mod limits;
mod lookup;
mod store;
mod table;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use slab::Slab;
use st_proto::krpc::{self, Body, Message, Query, Reply, Want, bep42_valid, code};

pub use st_proto::krpc::Id;

use crate::driver::{Core, Transmit};
use crate::node::Bucket;
use crate::rng::Rng;
use crate::time::Time;
use limits::IpLimiter;
use lookup::{Kind, Lookup, LookupConfig};
use store::{Family, PeerStore, Tokens};
use table::{Heard, Table, TableConfig};

/// The client version we send in `v`: "ST" and a 16-bit version.
pub const VERSION: [u8; 4] = *b"ST\x00\x01";

/// Settings of a DHT node (defaults: `spec/dht.md` §13).
#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// Our node id (restored from the state file), or `None` for a random one.
    pub id: Option<Id>,
    /// Nodes known from a previous run (asked first when bootstrapping).
    pub restored: Vec<(Id, SocketAddr)>,
    /// Bootstrap routers, resolved (more can come with [`DhtNode::add_bootstrap`]).
    pub bootstrap: Vec<SocketAddr>,
    /// BEP 43 read-only: answer no queries and ask others not to add us.
    pub read_only: bool,
    /// The socket reaches IPv4 nodes.
    pub ipv4: bool,
    /// The socket reaches IPv6 nodes.
    pub ipv6: bool,
    /// Nodes per bucket, and the closest nodes a lookup converges on.
    pub k: usize,
    /// Queries of a lookup in flight at once.
    pub alpha: usize,
    /// Most buckets per table.
    pub max_buckets: usize,
    /// Most lookups at once.
    pub max_lookups: usize,
    /// Most queries awaiting a reply.
    pub max_pending: usize,
    /// Most queries one lookup sends.
    pub lookup_queries: u32,
    /// Longest a lookup runs.
    pub lookup_time: Duration,
    /// Longest wait before a lookup asks another node instead (adapts down to 3 RTTs).
    pub soft_timeout: Duration,
    /// Shortest soft timeout.
    pub soft_timeout_min: Duration,
    /// A query unanswered this long failed.
    pub query_timeout: Duration,
    /// Outbound queries per second.
    pub queries_per_sec: u64,
    /// Outbound query burst.
    pub query_burst: u64,
    /// Most queued pings and announces.
    pub out_queue: usize,
    /// Inbound messages a source may send per `ip_window` before it is ignored.
    pub ip_max: u32,
    /// The window of `ip_max`.
    pub ip_window: Duration,
    /// How long an offending source is ignored.
    pub ip_ban: Duration,
    /// Most sources the limiter tracks.
    pub ip_table: usize,
    /// Reply bytes per second over every requester.
    pub reply_bytes_per_sec: u64,
    /// Reply byte burst.
    pub reply_burst: u64,
    /// Most keys in the peer store.
    pub max_keys: usize,
    /// Most peers per key.
    pub max_peers_per_key: usize,
    /// Most peers in a `get_peers` reply.
    pub max_values: usize,
    /// Life of an announce in the store.
    pub peer_ttl: Duration,
    /// Gap between two announces of a key we serve.
    pub announce_every: Duration,
    /// First retry of a search that found no peer (doubling to `announce_every`).
    pub search_retry: Duration,
    /// Token secret rotation period.
    pub token_every: Duration,
    /// A bucket unchanged (or a node unheard) this long is refreshed (pinged).
    pub refresh_every: Duration,
    /// First bootstrap retry (doubling to `bootstrap_retry_max`).
    pub bootstrap_retry: Duration,
    /// Longest gap between bootstrap attempts.
    pub bootstrap_retry_max: Duration,
    /// Gap between two state reports ([`DhtEvent::State`]).
    pub save_every: Duration,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            id: None,
            restored: Vec::new(),
            bootstrap: Vec::new(),
            read_only: false,
            ipv4: true,
            ipv6: true,
            k: 8,
            alpha: 3,
            max_buckets: 160,
            max_lookups: 32,
            max_pending: 256,
            lookup_queries: 100,
            lookup_time: Duration::from_secs(30),
            soft_timeout: Duration::from_secs(1),
            soft_timeout_min: Duration::from_millis(250),
            query_timeout: Duration::from_secs(3),
            queries_per_sec: 250,
            query_burst: 50,
            out_queue: 256,
            ip_max: 50,
            ip_window: Duration::from_secs(10),
            ip_ban: Duration::from_secs(300),
            ip_table: 4096,
            reply_bytes_per_sec: 64 * 1024,
            reply_burst: 16 * 1024,
            max_keys: 2000,
            max_peers_per_key: 100,
            max_values: 50,
            peer_ttl: Duration::from_secs(30 * 60),
            announce_every: Duration::from_secs(15 * 60),
            search_retry: Duration::from_secs(5),
            token_every: Duration::from_secs(5 * 60),
            refresh_every: Duration::from_secs(15 * 60),
            bootstrap_retry: Duration::from_secs(5),
            bootstrap_retry_max: Duration::from_secs(600),
            save_every: Duration::from_secs(15 * 60),
        }
    }
}

/// What the DHT node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhtEvent {
    /// Peers of a registered key, new to the lookup that found them.
    Peers {
        /// The key.
        key: Id,
        /// The peers.
        peers: Vec<SocketAddr>,
    },
    /// A search of a registered key ended.
    SearchDone {
        /// The key.
        key: Id,
        /// Figures of the lookup.
        stats: LookupStats,
    },
    /// A bootstrap got answers: the table holds `nodes` nodes.
    Bootstrapped {
        /// Nodes in the tables.
        nodes: usize,
    },
    /// No bootstrap node and no known node answered (said once; retried with backoff).
    NoBootstrap {
        /// Addresses asked.
        tried: Vec<SocketAddr>,
        /// When it is tried again.
        retry_in: Duration,
    },
    /// The state to save (`spec/dht.md` §15), every `save_every` and once stopped.
    State(Vec<u8>),
}

/// Figures of one lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LookupStats {
    /// Queries sent.
    pub queries: u32,
    /// Replies received.
    pub replies: u32,
    /// Peers found.
    pub peers: usize,
    /// Time from start to the first peer.
    pub first_peer: Option<Duration>,
    /// Time from start to the end.
    pub elapsed: Duration,
}

/// Counters of a DHT node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DhtStats {
    /// Queries sent.
    pub queries_sent: u64,
    /// Bytes of queries sent.
    pub query_bytes_sent: u64,
    /// Replies (and errors) received to our queries.
    pub replies_received: u64,
    /// Queries that timed out.
    pub timeouts: u64,
    /// Queries received.
    pub queries_received: u64,
    /// Bytes of queries received.
    pub query_bytes_received: u64,
    /// Replies (and errors) sent.
    pub replies_sent: u64,
    /// Bytes of replies sent.
    pub reply_bytes_sent: u64,
    /// Replies not sent for want of reply budget.
    pub replies_over_budget: u64,
    /// Datagrams dropped as malformed.
    pub malformed: u64,
    /// Datagrams dropped from a source over its limit.
    pub limited: u64,
    /// Replies that matched no pending query (late, spoofed or unknown).
    pub unmatched: u64,
    /// Queries not sent because the queue was full.
    pub queue_drops: u64,
    /// Searches of registered keys that ended.
    pub searches: u64,
    /// Searches that found at least one peer.
    pub searches_found: u64,
    /// Peers found by searches.
    pub peers_found: u64,
    /// Announces sent.
    pub announces_sent: u64,
    /// Announces received and stored.
    pub announces_stored: u64,
    /// Announces refused (bad token, full store).
    pub announces_refused: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Bootstrap,
    Refresh,
    Search(Id),
}

struct Running {
    lookup: Lookup,
    purpose: Purpose,
    serial: u64,
}

#[derive(Debug, Clone)]
enum Out {
    Ping,
    Announce { key: Id, port: u16, token: Vec<u8> },
}

struct Pending {
    addr: SocketAddr,
    id: Option<Id>,
    /// The lookup (slab key, serial) the query belongs to.
    lookup: Option<(usize, u64)>,
    sent: Time,
    soft: Time,
    hard: Time,
}

struct Reg {
    port: Option<u16>,
    wants_peers: bool,
    next: Time,
    backoff: Duration,
    running: bool,
    /// The table grew while the search ran: if it finds nothing, it runs again at once.
    rerun: bool,
}

struct Boot {
    routers: Vec<SocketAddr>,
    restored: Vec<(Id, SocketAddr)>,
    next: Option<Time>,
    backoff: Duration,
    warned: bool,
    running: bool,
}

/// The DHT node.
pub struct DhtNode {
    cfg: DhtConfig,
    id: Id,
    rng: Rng,
    tables: [Table; 2],
    lookups: Slab<Running>,
    serial: u64,
    pending: HashMap<u16, Pending>,
    soft_q: BTreeSet<(Time, u16)>,
    hard_q: BTreeSet<(Time, u16)>,
    next_tid: u16,
    regs: HashMap<Id, Reg>,
    reg_q: BTreeSet<(Time, Id)>,
    store: PeerStore,
    tokens: Tokens,
    limiter: IpLimiter,
    out_bucket: Bucket,
    reply_bucket: Bucket,
    /// Pings and announces waiting for the query rate.
    outq: VecDeque<(SocketAddr, Option<Id>, Out)>,
    /// Addresses in `outq` as pings (no duplicate pings).
    pinging: BTreeSet<SocketAddr>,
    /// Sources of queries we pinged lately, oldest first (at most one ping per source per
    /// `refresh_every`, so a flood of queries is not answered with a flood of pings).
    pinged: VecDeque<(Time, SocketAddr)>,
    pinged_set: std::collections::HashSet<SocketAddr>,
    /// Datagrams ready to send.
    tx: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Some query waits for rate tokens.
    starved: bool,
    events: VecDeque<DhtEvent>,
    stats: DhtStats,
    votes: HashMap<IpAddr, u32>,
    external: Option<IpAddr>,
    boot: Boot,
    next_tick: Time,
    next_save: Time,
    srtt: Option<Duration>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for DhtNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhtNode")
            .field("nodes", &self.nodes())
            .field("lookups", &self.lookups.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// Most query sources remembered as pinged.
const MAX_PINGED: usize = 4096;
/// Most datagrams waiting to be sent.
const MAX_TX: usize = 1024;
/// How often the node's housekeeping runs.
const TICK: Duration = Duration::from_secs(5);

fn family(a: &SocketAddr) -> usize {
    usize::from(a.is_ipv6())
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

impl DhtNode {
    /// A node started at `now`; `seed` drives its random choices (and its id when none is
    /// given) and must be unpredictable in production (tokens derive from it).
    pub fn new(cfg: DhtConfig, now: Time, seed: u64) -> DhtNode {
        let mut rng = Rng::new(seed);
        let id = cfg.id.unwrap_or_else(|| {
            let mut id = [0u8; 20];
            rng.fill(&mut id);
            id
        });
        let tcfg = TableConfig {
            k: cfg.k,
            max_buckets: cfg.max_buckets.clamp(1, 160),
            bad_after: 2,
        };
        let tokens = Tokens::new(&mut rng, cfg.token_every, now);
        let mut node = DhtNode {
            id,
            tables: [Table::new(id, tcfg, now), Table::new(id, tcfg, now)],
            lookups: Slab::new(),
            serial: 0,
            pending: HashMap::new(),
            soft_q: BTreeSet::new(),
            hard_q: BTreeSet::new(),
            next_tid: rng.next_u64() as u16,
            regs: HashMap::new(),
            reg_q: BTreeSet::new(),
            store: PeerStore::new(cfg.max_keys, cfg.max_peers_per_key, cfg.peer_ttl, now),
            tokens,
            limiter: IpLimiter::new(cfg.ip_table, cfg.ip_window, cfg.ip_max, cfg.ip_ban),
            out_bucket: Bucket::new(cfg.queries_per_sec, cfg.query_burst, now),
            reply_bucket: Bucket::new(cfg.reply_bytes_per_sec, cfg.reply_burst, now),
            outq: VecDeque::new(),
            pinging: BTreeSet::new(),
            pinged: VecDeque::new(),
            pinged_set: std::collections::HashSet::new(),
            tx: VecDeque::new(),
            starved: false,
            events: VecDeque::new(),
            stats: DhtStats::default(),
            votes: HashMap::new(),
            external: None,
            boot: Boot {
                routers: cfg.bootstrap.iter().copied().map(canonical).collect(),
                restored: cfg
                    .restored
                    .iter()
                    .map(|(i, a)| (*i, canonical(*a)))
                    .collect(),
                next: Some(now),
                backoff: cfg.bootstrap_retry,
                warned: false,
                running: false,
            },
            next_tick: now,
            next_save: now + cfg.save_every,
            srtt: None,
            buf: Vec::with_capacity(1500),
            rng,
            cfg,
        };
        node.housekeeping(now);
        node
    }

    /// Our node id.
    pub fn id(&self) -> Id {
        self.id
    }

    /// Nodes in the routing tables.
    pub fn nodes(&self) -> usize {
        self.tables.iter().map(Table::len).sum()
    }

    /// Counters.
    pub fn stats(&self) -> &DhtStats {
        &self.stats
    }

    /// Lookups running.
    pub fn lookups(&self) -> usize {
        self.lookups.len()
    }

    /// Keys and peers in the peer store.
    pub fn stored(&self) -> (usize, usize) {
        (self.store.keys(), self.store.peers())
    }

    /// Sources tracked by the flood limiter, and how many are ignored now.
    pub fn limited_sources(&self, now: Time) -> (usize, usize) {
        (self.limiter.len(), self.limiter.banned(now))
    }

    /// Our address as other nodes see it (BEP 42 `ip` votes), once known.
    pub fn external_ip(&self) -> Option<IpAddr> {
        self.external
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<DhtEvent> {
        self.events.pop_front()
    }

    /// The state to save now (`spec/dht.md` §15).
    pub fn state(&self) -> Vec<u8> {
        let mut nodes = self.tables[0].good(krpc::MAX_STATE_NODES);
        nodes.extend(self.tables[1].good(krpc::MAX_STATE_NODES));
        krpc::State { id: self.id, nodes }.encode()
    }

    /// More bootstrap routers (resolved late); a bootstrap starts at once if the table is
    /// empty.
    pub fn add_bootstrap(&mut self, now: Time, routers: &[SocketAddr]) {
        for &r in routers {
            let r = canonical(r);
            if self.reachable(&r) && !self.boot.routers.contains(&r) {
                self.boot.routers.push(r);
            }
        }
        if self.nodes() == 0 && !self.boot.running {
            self.boot.next = Some(now);
            self.boot.backoff = self.cfg.bootstrap_retry;
            self.housekeeping(now);
        }
    }

    /// Pings `addr` (a node learnt elsewhere): it enters the routing table if it answers.
    pub fn ping(&mut self, now: Time, addr: SocketAddr) {
        let addr = canonical(addr);
        if self.reachable(&addr) {
            self.queue(addr, None, Out::Ping);
            self.pump(now);
        }
    }

    /// Pending queries (bounded by `max_pending`).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Serves `key`: it is searched for at once and then every `announce_every` (sooner
    /// while `wants_peers` and nothing was found); with a `port`, we are announced as a peer
    /// on that port (`implied_port`: the port the announce comes from).
    pub fn register(&mut self, now: Time, key: Id, port: Option<u16>, wants_peers: bool) {
        if let Some(r) = self.regs.get_mut(&key) {
            r.port = port;
            r.wants_peers = wants_peers;
            return;
        }
        self.regs.insert(
            key,
            Reg {
                port,
                wants_peers,
                next: now,
                backoff: self.cfg.search_retry,
                running: false,
                rerun: false,
            },
        );
        self.reg_q.insert((now, key));
        self.start_due(now);
        self.pump(now);
    }

    /// Whether `key` still wants peers (a fetch that completed does not: it is searched for
    /// only to be announced).
    pub fn set_wants_peers(&mut self, key: &Id, wants: bool) {
        if let Some(r) = self.regs.get_mut(key) {
            r.wants_peers = wants;
        }
    }

    /// Stops serving `key` (a search under way ends without announcing).
    pub fn unregister(&mut self, key: &Id) {
        if let Some(r) = self.regs.remove(key) {
            self.reg_q.remove(&(r.next, *key));
        }
    }

    /// Searches for `key` again now (a fetch that lost its peers), if registered and idle.
    pub fn search_now(&mut self, now: Time, key: &Id) {
        if let Some(r) = self.regs.get_mut(key)
            && !r.running
        {
            self.reg_q.remove(&(r.next, *key));
            r.next = now;
            self.reg_q.insert((now, *key));
            self.start_due(now);
            self.pump(now);
        }
    }

    fn reachable(&self, a: &SocketAddr) -> bool {
        if a.is_ipv4() {
            self.cfg.ipv4
        } else {
            self.cfg.ipv6
        }
    }

    // --- sending ---------------------------------------------------------------------------

    fn emit(&mut self, to: SocketAddr, data: Vec<u8>) {
        if self.tx.len() < MAX_TX {
            self.tx.push_back((to, data));
        }
    }

    fn tid(&mut self) -> u16 {
        loop {
            self.next_tid = self.next_tid.wrapping_add(1);
            if !self.pending.contains_key(&self.next_tid) {
                return self.next_tid;
            }
        }
    }

    /// Whether one more query may go now (pending and rate bounds).
    fn can_send(&mut self, now: Time) -> bool {
        if self.pending.len() >= self.cfg.max_pending {
            return false;
        }
        self.out_bucket.refill(now);
        if self.out_bucket.tokens() == 0 {
            self.starved = true;
            return false;
        }
        true
    }

    fn soft_timeout(&self) -> Duration {
        let s = self.srtt.map_or(self.cfg.soft_timeout, |r| r * 3);
        s.clamp(self.cfg.soft_timeout_min, self.cfg.soft_timeout)
    }

    /// Sends a query (the caller checked [`Self::can_send`]).
    fn send_query(
        &mut self,
        now: Time,
        to: SocketAddr,
        id: Option<Id>,
        query: Query<'_>,
        lookup: Option<(usize, u64)>,
    ) {
        let tid = self.tid();
        let tid_bytes = tid.to_be_bytes();
        let want = Want {
            v4: self.cfg.ipv4 && self.cfg.ipv6,
            v6: self.cfg.ipv4 && self.cfg.ipv6,
        };
        let m = Message {
            tid: &tid_bytes,
            version: Some(&VERSION),
            ip: None,
            read_only: self.cfg.read_only,
            body: Body::Query {
                id: self.id,
                want,
                query,
            },
        };
        let mut out = Vec::with_capacity(128);
        m.encode(&mut out);
        self.out_bucket.take(1);
        self.stats.queries_sent += 1;
        self.stats.query_bytes_sent += out.len() as u64;
        let soft = now + self.soft_timeout();
        let hard = now + self.cfg.query_timeout;
        self.pending.insert(
            tid,
            Pending {
                addr: to,
                id,
                lookup,
                sent: now,
                soft,
                hard,
            },
        );
        if lookup.is_some() {
            self.soft_q.insert((soft, tid));
        }
        self.hard_q.insert((hard, tid));
        self.emit(to, out);
    }

    /// Sends what lookups and the queue want, within the rate; finishes lookups that are done.
    fn pump(&mut self, now: Time) {
        self.starved = false;
        let keys: Vec<usize> = self.lookups.iter().map(|(k, _)| k).collect();
        for k in keys {
            while self.can_send(now) {
                let Some(r) = self.lookups.get_mut(k) else {
                    break;
                };
                let Some((id, addr)) = r.lookup.next() else {
                    break;
                };
                let (target, kind, serial) = (r.lookup.target, r.lookup.kind, r.serial);
                let q = match kind {
                    Kind::FindNode => Query::FindNode { target },
                    Kind::GetPeers => Query::GetPeers { info_hash: target },
                };
                self.send_query(now, addr, id, q, Some((k, serial)));
            }
            if self.lookups.get(k).is_some_and(|r| {
                r.lookup.done() || now.saturating_since(r.lookup.started) >= self.cfg.lookup_time
            }) {
                self.finish(now, k);
            }
        }
        while !self.outq.is_empty() && self.can_send(now) {
            let Some((to, id, out)) = self.outq.pop_front() else {
                break;
            };
            match out {
                Out::Ping => {
                    self.pinging.remove(&to);
                    self.send_query(now, to, id, Query::Ping, None);
                }
                Out::Announce { key, port, token } => {
                    self.stats.announces_sent += 1;
                    let q = Query::AnnouncePeer {
                        info_hash: key,
                        port,
                        implied_port: true,
                        token: &token,
                    };
                    self.send_query(now, to, id, q, None);
                }
            }
        }
    }

    fn queue(&mut self, to: SocketAddr, id: Option<Id>, out: Out) {
        if self.outq.len() >= self.cfg.out_queue {
            self.stats.queue_drops += 1;
            return;
        }
        if matches!(out, Out::Ping) && !self.pinging.insert(to) {
            return;
        }
        self.outq.push_back((to, id, out));
    }

    // --- lookups ---------------------------------------------------------------------------

    fn start_lookup(&mut self, now: Time, target: Id, kind: Kind, purpose: Purpose) -> bool {
        if self.lookups.len() >= self.cfg.max_lookups {
            return false;
        }
        let cfg = LookupConfig {
            k: self.cfg.k,
            alpha: self.cfg.alpha,
            max_candidates: 8 * self.cfg.k,
            max_queries: self.cfg.lookup_queries,
            max_peers: 500,
        };
        let mut l = Lookup::new(target, kind, cfg, now);
        for t in 0..2 {
            for (id, a) in self.tables[t].closest(&target, 2 * self.cfg.k) {
                l.add(Some(id), a);
            }
        }
        // A thin table is helped by the nodes of the last run and the routers.
        if self.nodes() < self.cfg.k || purpose == Purpose::Bootstrap {
            for &(id, a) in &self.boot.restored {
                if self.cfg.ipv4 && a.is_ipv4() || self.cfg.ipv6 && a.is_ipv6() {
                    l.add(Some(id), a);
                }
            }
            for &a in &self.boot.routers {
                l.add(None, a);
            }
        }
        self.serial += 1;
        self.lookups.insert(Running {
            lookup: l,
            purpose,
            serial: self.serial,
        });
        true
    }

    fn finish(&mut self, now: Time, k: usize) {
        let r = self.lookups.remove(k);
        let l = &r.lookup;
        match r.purpose {
            Purpose::Bootstrap => {
                self.boot.running = false;
                if l.replies == 0 {
                    let retry_in = self.boot.backoff;
                    self.boot.next = Some(now + retry_in);
                    self.boot.backoff = (retry_in * 2).min(self.cfg.bootstrap_retry_max);
                    if !self.boot.warned {
                        self.boot.warned = true;
                        let mut tried: Vec<SocketAddr> = self.boot.routers.clone();
                        tried.extend(self.boot.restored.iter().map(|x| x.1).take(4));
                        self.events
                            .push_back(DhtEvent::NoBootstrap { tried, retry_in });
                    }
                } else {
                    self.boot.backoff = self.cfg.bootstrap_retry;
                    self.boot.next = None;
                    self.boot.restored.clear();
                    // Then every bucket is filled by a refresh (Kademlia's join).
                    for t in &mut self.tables {
                        t.refresh_all();
                    }
                    self.searches_now(now);
                    self.events.push_back(DhtEvent::Bootstrapped {
                        nodes: self.nodes(),
                    });
                }
            }
            Purpose::Refresh => {}
            Purpose::Search(key) => {
                let stats = LookupStats {
                    queries: l.queries,
                    replies: l.replies,
                    peers: l.peers.len(),
                    first_peer: l.first_peer.map(|t| t.saturating_since(l.started)),
                    elapsed: now.saturating_since(l.started),
                };
                self.stats.searches += 1;
                let found = !l.peers.is_empty();
                if found {
                    self.stats.searches_found += 1;
                }
                let every = self.cfg.announce_every;
                // Re-announces are spread over ±10 %.
                let jitter = self.rng.below(every.as_millis() as u64 / 5 + 1);
                let regular = every - every / 10 + Duration::from_millis(jitter);
                let search_retry = self.cfg.search_retry;
                let targets = l.announce_targets();
                if let Some(reg) = self.regs.get_mut(&key) {
                    reg.running = false;
                    let rerun = std::mem::take(&mut reg.rerun);
                    // A search that found nothing (or nobody to ask: the table is empty; it
                    // goes again as soon as the table gets a node) backs off, doubling.
                    let gap = if rerun && !found && reg.wants_peers {
                        Duration::ZERO
                    } else if found || !reg.wants_peers && l.replies > 0 {
                        reg.backoff = search_retry;
                        regular
                    } else {
                        let b = reg.backoff;
                        reg.backoff = (b * 2).min(every);
                        b
                    };
                    reg.next = now + gap;
                    let port = reg.port;
                    self.reg_q.insert((now + gap, key));
                    if let Some(port) = port {
                        for (to, token) in targets {
                            self.queue(to, None, Out::Announce { key, port, token });
                        }
                    }
                    self.events.push_back(DhtEvent::SearchDone { key, stats });
                }
            }
        }
    }

    /// Every idle search goes now (the table just got its first nodes).
    fn searches_now(&mut self, now: Time) {
        for r in self.regs.values_mut() {
            r.rerun |= r.running;
        }
        let idle: Vec<(Time, Id)> = self
            .regs
            .iter()
            .filter(|(_, r)| !r.running && r.next > now)
            .map(|(k, r)| (r.next, *k))
            .collect();
        for (t, key) in idle {
            self.reg_q.remove(&(t, key));
            if let Some(r) = self.regs.get_mut(&key) {
                r.next = now;
            }
            self.reg_q.insert((now, key));
        }
    }

    /// Starts the searches that are due (as many as the lookup bound allows).
    fn start_due(&mut self, now: Time) {
        while let Some(&(t, key)) = self.reg_q.first() {
            if t > now || self.lookups.len() >= self.cfg.max_lookups {
                break;
            }
            self.reg_q.remove(&(t, key));
            let Some(reg) = self.regs.get_mut(&key) else {
                continue;
            };
            if reg.running || reg.next != t {
                continue;
            }
            reg.running = true;
            let wants = reg.wants_peers;
            self.start_lookup(now, key, Kind::GetPeers, Purpose::Search(key));
            // What was announced to us directly is found at once.
            let local = self
                .store
                .get(now, &key, Family::Any, self.cfg.max_values, &mut self.rng);
            if wants && !local.is_empty() {
                self.events.push_back(DhtEvent::Peers { key, peers: local });
            }
        }
    }

    fn housekeeping(&mut self, now: Time) {
        self.next_tick = now + TICK;
        self.tokens.rotate(now, &mut self.rng);
        self.store.maybe_sweep(now);
        if !self.boot.running
            && self.boot.next.is_some_and(|t| t <= now)
            && (!self.boot.routers.is_empty() || !self.boot.restored.is_empty())
        {
            self.boot.running = self.start_lookup(now, self.id, Kind::FindNode, Purpose::Bootstrap);
        } else if self.nodes() == 0 && !self.boot.running && self.boot.next.is_none() {
            // Everyone left: bootstrap again.
            self.boot.next = Some(now + self.boot.backoff);
        }
        if self.nodes() > 0 {
            // A few refreshes per tick, leaving room for searches.
            for t in 0..2 {
                for _ in 0..3 {
                    if self.lookups.len() + 4 >= self.cfg.max_lookups {
                        break;
                    }
                    let Some(target) =
                        self.tables[t].next_refresh(now, self.cfg.refresh_every, &mut self.rng)
                    else {
                        break;
                    };
                    self.start_lookup(now, target, Kind::FindNode, Purpose::Refresh);
                }
            }
            for t in 0..2 {
                for (id, a) in self.tables[t].take_stale(now, self.cfg.refresh_every, 8) {
                    self.queue(a, Some(id), Out::Ping);
                }
            }
        }
        if now >= self.next_save {
            self.next_save = now + self.cfg.save_every;
            if self.nodes() > 0 {
                self.events.push_back(DhtEvent::State(self.state()));
            }
        }
        self.start_due(now);
        self.pump(now);
    }

    // --- receiving -------------------------------------------------------------------------

    fn on_datagram(&mut self, now: Time, from: SocketAddr, data: &[u8]) {
        let from = canonical(from);
        if !self.limiter.allow(now, from) {
            self.stats.limited += 1;
            return;
        }
        let m = match krpc::parse(data) {
            Ok(m) => m,
            Err(e) => {
                log::trace!("dht: malformed datagram from {from}: {e}");
                self.stats.malformed += 1;
                return;
            }
        };
        match &m.body {
            Body::Query { id, want, query } => {
                self.stats.queries_received += 1;
                self.stats.query_bytes_received += data.len() as u64;
                if self.cfg.read_only {
                    return;
                }
                if !m.read_only
                    && self.reachable(&from)
                    && !self.tables[family(&from)].contains(id, from)
                    && self.tables[family(&from)].wants(id, from)
                    && self.may_ping(now, from)
                {
                    self.queue(from, Some(*id), Out::Ping);
                }
                self.answer(now, from, m.tid, *want, query);
            }
            Body::Reply(r) => self.on_reply(now, from, &m, Some(r)),
            Body::Error { .. } => self.on_reply(now, from, &m, None),
        }
        self.pump(now);
    }

    fn on_reply(&mut self, now: Time, from: SocketAddr, m: &Message<'_>, r: Option<&Reply<'_>>) {
        let Ok(tid) = <[u8; 2]>::try_from(m.tid).map(u16::from_be_bytes) else {
            self.stats.unmatched += 1;
            return;
        };
        match self.pending.get(&tid) {
            Some(p) if p.addr == from => {}
            _ => {
                self.stats.unmatched += 1;
                return;
            }
        }
        let Some(p) = self.pending.remove(&tid) else {
            return;
        };
        self.soft_q.remove(&(p.soft, tid));
        self.hard_q.remove(&(p.hard, tid));
        self.stats.replies_received += 1;
        let rtt = now.saturating_since(p.sent);
        self.srtt = Some(match self.srtt {
            None => rtt,
            Some(s) => (s * 7 + rtt) / 8,
        });
        let Some(r) = r else {
            // An error: the node is there but the lookup learns nothing from it.
            if let Some((k, serial)) = p.lookup
                && let Some(run) = self.lookups.get_mut(k)
                && run.serial == serial
            {
                run.lookup.failed(from);
            }
            return;
        };
        if let Some(ip) = m.ip {
            self.vote(ip.ip().to_canonical());
        }
        if !m.read_only && self.reachable(&from) {
            let was_empty = self.nodes() == 0;
            let h = self.tables[family(&from)].heard(now, r.id, from);
            if was_empty && self.nodes() > 0 {
                // A node alone until now (the first of a closed network) has someone to
                // announce to and ask.
                self.searches_now(now);
            }
            if h == Heard::IdChanged {
                log::debug!("dht: {from} changed its id; dropped");
            }
        }
        let Some((k, serial)) = p.lookup else {
            return;
        };
        let (ipv4, ipv6) = (self.cfg.ipv4, self.cfg.ipv6);
        let Some(run) = self.lookups.get_mut(k).filter(|run| run.serial == serial) else {
            return;
        };
        let nodes = krpc::nodes4(r.nodes)
            .filter(|_| ipv4)
            .chain(krpc::nodes6(r.nodes6).filter(|_| ipv6))
            .filter(|(_, a)| a.port() != 0);
        let values: Vec<SocketAddr> = r.values.iter().copied().filter(|a| a.port() != 0).collect();
        let verified = bep42_valid(&r.id, from.ip());
        let new = run
            .lookup
            .answered(now, from, (r.id, verified), r.token, nodes, &values);
        if let Purpose::Search(key) = run.purpose
            && !new.is_empty()
        {
            self.stats.peers_found += new.len() as u64;
            if self.regs.get(&key).is_some_and(|r| r.wants_peers) {
                self.events.push_back(DhtEvent::Peers { key, peers: new });
            }
        }
    }

    /// Whether a node that queried us may be pinged now (once per `refresh_every` per
    /// source; at most [`MAX_PINGED`] sources remembered).
    fn may_ping(&mut self, now: Time, from: SocketAddr) -> bool {
        let key = table::addr_key(from);
        while let Some(&(t, a)) = self.pinged.front() {
            if now.saturating_since(t) < self.cfg.refresh_every && self.pinged.len() < MAX_PINGED {
                break;
            }
            self.pinged.pop_front();
            self.pinged_set.remove(&a);
        }
        if !self.pinged_set.insert(key) {
            return false;
        }
        self.pinged.push_back((now, key));
        true
    }

    fn vote(&mut self, ip: IpAddr) {
        if self.votes.len() >= 16 && !self.votes.contains_key(&ip) {
            self.votes.clear();
        }
        *self.votes.entry(ip).or_default() += 1;
        self.external = self
            .votes
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(ip, _)| *ip);
    }

    /// Answers a query (`spec/dht.md` §9), within the reply budget.
    fn answer(&mut self, now: Time, from: SocketAddr, tid: &[u8], want: Want, q: &Query<'_>) {
        let mut nodes4 = Vec::new();
        let mut nodes6 = Vec::new();
        let mut values = Vec::new();
        let mut token = None;
        let (w4, w6) = if want.v4 || want.v6 {
            (want.v4, want.v6)
        } else {
            (from.is_ipv4(), from.is_ipv6())
        };
        let mut closest = |target: &Id, this: &Self| {
            if w4 {
                for (id, a) in this.tables[0].closest(target, this.cfg.k) {
                    krpc::put_node(&mut nodes4, &id, a);
                }
            }
            if w6 {
                for (id, a) in this.tables[1].closest(target, this.cfg.k) {
                    krpc::put_node(&mut nodes6, &id, a);
                }
            }
        };
        let mut error = None;
        match q {
            Query::Ping => {}
            Query::FindNode { target } => closest(target, self),
            Query::GetPeers { info_hash } => {
                closest(info_hash, self);
                token = Some(self.tokens.make(from.ip()));
                // Peers of the querier's family only (BEP 32), which also keeps the reply
                // within one datagram (`spec/dht.md` §9).
                let family = if from.is_ipv4() {
                    Family::V4
                } else {
                    Family::V6
                };
                values = self
                    .store
                    .get(now, info_hash, family, self.cfg.max_values, &mut self.rng);
                // We serve this key ourselves: we are a peer of it too.
                if let Some(port) = self.regs.get(info_hash).and_then(|r| r.port)
                    && let Some(ext) = self.external
                    && ext.is_ipv4() == from.is_ipv4()
                {
                    let me = SocketAddr::new(ext, port);
                    if !values.contains(&me) {
                        if values.len() >= self.cfg.max_values {
                            values.pop();
                        }
                        values.push(me);
                    }
                }
            }
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token: t,
            } => {
                let port = if *implied_port { from.port() } else { *port };
                if !self.tokens.check(from.ip(), t) {
                    self.stats.announces_refused += 1;
                    error = Some((code::PROTOCOL, &b"bad token"[..]));
                } else if port == 0 {
                    self.stats.announces_refused += 1;
                    error = Some((code::PROTOCOL, &b"bad port"[..]));
                } else if self
                    .store
                    .add(now, *info_hash, SocketAddr::new(from.ip(), port))
                    .is_err()
                {
                    self.stats.announces_refused += 1;
                    error = Some((code::SERVER, &b"store full"[..]));
                } else {
                    self.stats.announces_stored += 1;
                    // A peer of a key we want announced itself to us: it is found now.
                    if self.regs.get(info_hash).is_some_and(|r| r.wants_peers) {
                        self.events.push_back(DhtEvent::Peers {
                            key: *info_hash,
                            peers: vec![SocketAddr::new(from.ip(), port)],
                        });
                    }
                }
            }
            Query::Unknown { .. } => error = Some((code::METHOD_UNKNOWN, &b"Method Unknown"[..])),
        }
        let body = match error {
            Some((code, message)) => Body::Error { code, message },
            None => Body::Reply(Reply {
                id: self.id,
                nodes: &nodes4,
                nodes6: &nodes6,
                values,
                token: token.as_ref().map(|t| &t[..]),
            }),
        };
        let m = Message {
            tid,
            version: Some(&VERSION),
            ip: Some(from),
            read_only: false,
            body,
        };
        let mut out = std::mem::take(&mut self.buf);
        out.clear();
        m.encode(&mut out);
        self.reply_bucket.refill(now);
        if self.reply_bucket.tokens() < out.len() as u64 {
            self.stats.replies_over_budget += 1;
            self.buf = out;
            return;
        }
        self.reply_bucket.take(out.len() as u64);
        self.stats.replies_sent += 1;
        self.stats.reply_bytes_sent += out.len() as u64;
        self.emit(from, out.clone());
        self.buf = out;
    }

    fn timeouts(&mut self, now: Time) {
        while let Some(&(t, tid)) = self.soft_q.first() {
            if t > now {
                break;
            }
            self.soft_q.remove(&(t, tid));
            if let Some(p) = self.pending.get(&tid)
                && let Some((k, serial)) = p.lookup
                && let Some(run) = self.lookups.get_mut(k)
                && run.serial == serial
            {
                run.lookup.slow(p.addr);
            }
        }
        while let Some(&(t, tid)) = self.hard_q.first() {
            if t > now {
                break;
            }
            self.hard_q.remove(&(t, tid));
            let Some(p) = self.pending.remove(&tid) else {
                continue;
            };
            self.soft_q.remove(&(p.soft, tid));
            self.stats.timeouts += 1;
            if let Some(id) = p.id
                && self.reachable(&p.addr)
            {
                self.tables[family(&p.addr)].failed(&id, p.addr);
            }
            if let Some((k, serial)) = p.lookup
                && let Some(run) = self.lookups.get_mut(k)
                && run.serial == serial
            {
                run.lookup.failed(p.addr);
            }
        }
    }

    /// The final state report, once the peer node stops.
    pub fn stop(&mut self) {
        if self.nodes() > 0 {
            self.events.push_back(DhtEvent::State(self.state()));
        }
    }
}

impl Core for DhtNode {
    fn handle(&mut self, now: Time, remote: SocketAddr, data: &[u8]) {
        self.on_datagram(now, remote, data);
    }

    fn poll_transmit(&mut self, _now: Time, buf: &mut [u8]) -> Option<Transmit> {
        loop {
            let (to, d) = self.tx.pop_front()?;
            if d.len() <= buf.len() {
                buf[..d.len()].copy_from_slice(&d);
                return Some(Transmit {
                    remote: to,
                    len: d.len(),
                    segment_size: None,
                });
            }
        }
    }

    fn poll_timeout(&self) -> Option<Time> {
        let mut t = self.next_tick;
        let mut at = |x: Option<Time>| {
            if let Some(x) = x {
                t = t.min(x);
            }
        };
        at(self.soft_q.first().map(|x| x.0));
        at(self.hard_q.first().map(|x| x.0));
        if self.lookups.len() < self.cfg.max_lookups {
            at(self.reg_q.first().map(|x| x.0));
        }
        if self.starved {
            at(Some(self.out_bucket.ready_at(1)));
        }
        if !self.boot.running && (!self.boot.routers.is_empty() || !self.boot.restored.is_empty()) {
            at(self.boot.next);
        }
        Some(t)
    }

    fn handle_timeout(&mut self, now: Time) {
        self.timeouts(now);
        if now >= self.next_tick || self.boot.next.is_some_and(|t| t <= now) && !self.boot.running {
            self.housekeeping(now);
        } else {
            self.start_due(now);
            self.pump(now);
        }
    }
}

#[cfg(test)]
mod tests;
