//! One swarm's peer sessions (`spec/peer.md`), sans-IO: it reacts to transport events and
//! drives the [`Endpoint`] it is given, and reads and writes data through a [`Store`]. It
//! owns the handshake rules (same swarm, no self-connections, one connection per peer pair),
//! interest, request pipelining (outstanding bytes sized to the measured rate), serving
//! requests to unchoked peers, upload slots with an optimistic unchoke, verification with
//! strikes and bans (a failed fragment with several senders is refetched from one peer
//! before anyone is struck), dialling the peers discovery finds, and peer exchange (telling
//! connected peers which peers we reached, `spec/discovery.md` §4).
//!
//! It reads no clock (`now` is passed in) and touches no socket (the endpoint's datagrams go
//! out through the reactor). Disk IO goes through [`Store`], which a production driver backs
//! with files and a test with memory.
//!
//! This file holds the state, the commands and the dispatchers (`handle_event`, `on_message`,
//! `tick`); each concern is a module of its own: `session` (dialling, greeting, closing),
//! `requests` (pipelines, DATA, timeouts, interest), `choking` (upload slots), `suggest` (a
//! seed's suggestions), `pex` (peer exchange), `verify` (checks, strikes, bans) and `serve`
//! (reading ahead and sending requested blocks).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use st_proto::peer::{
    self, CAP_PEX, CAP_SUGGEST, Handshake, MAX_PEX, Message, PEER_VERSION, PexEntry,
};

use st_proto::st_file::Geometry;
use zerocopy::IntoBytes;

use super::picker::{Block, Picker, Received};
use crate::rng::Rng;
pub use crate::storage::Store;
use crate::time::Time;
use crate::transport::{ConnHandle, Endpoint, Event, SendError};

/// Settings of a swarm's peer layer.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Most connections (dialled and accepted).
    pub max_peers: usize,
    /// Peers served at once (plus one optimistic unchoke). 16 by default: with 8, a choke
    /// round in a swarm of 16 where several peers rank the same one low left it at half its
    /// download rate until the next round, 10 s on, and it finished last (`swarm_sim`,
    /// 16 fetchers at 100 Mbit/s: 1.17–1.21× the bound with 8, 1.12–1.13× with 16; 32
    /// fetchers, 1 GiB: 1.14× and 1.11×).
    pub upload_slots: usize,
    /// Of the upload slots, how many go to the peers that send to us fastest (reciprocation;
    /// by default all); the rest go to the peers that hold the fewest fragments. A seed gives
    /// every slot by need (fewest fragments first), so that nobody falls behind.
    pub reciprocal_slots: usize,
    /// Request block size.
    pub block: u32,
    /// Outstanding request bytes per peer, at least (one default block: deeper pipelines
    /// make every request wait at a slow uploader, and rarity goes stale meanwhile).
    pub min_outstanding: u64,
    /// Outstanding request bytes per peer, at most.
    pub max_outstanding: u64,
    /// Seconds between choke rounds.
    pub choke_interval: Duration,
    /// Strikes (fragments that failed verification) before a peer is banned.
    pub max_strikes: u8,
    /// A request unanswered this long is given up and asked elsewhere.
    pub request_timeout: Duration,
    /// Speak peer exchange (capability bit 0).
    pub pex: bool,
    /// Least time between two PEX messages to one peer (after the first, sent at handshake).
    pub pex_interval: Duration,
    /// Most addresses waiting to be dialled (from trackers, LAN discovery and PEX).
    pub max_candidates: usize,
    /// Speak SUGGEST (capability bit 1): a seed suggests to each peer it serves fragments
    /// no other peer has and it has not sent yet, so that its upload spreads (spec §5).
    pub suggest: bool,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            max_peers: 50,
            upload_slots: 16,
            reciprocal_slots: 16,
            block: 128 * 1024,
            min_outstanding: 128 << 10,
            max_outstanding: 32 << 20,
            choke_interval: Duration::from_secs(10),
            max_strikes: 3,
            request_timeout: Duration::from_secs(5),
            pex: true,
            pex_interval: Duration::from_secs(15),
            max_candidates: 1000,
            suggest: true,
        }
    }
}

/// Counters for progress displays and the final summary.
#[derive(Debug, Clone, Default)]
pub struct SwarmStats {
    /// Verified bytes received from peers.
    pub downloaded: u64,
    /// Block bytes sent to peers.
    pub uploaded: u64,
    /// Bytes received that were not needed (duplicates, unrequested).
    pub wasted: u64,
    /// Fragments that failed verification.
    pub hash_failures: u64,
    /// Verified bytes received, per peer address.
    pub from_peer: HashMap<SocketAddr, u64>,
    /// PEX messages sent.
    pub pex_sent: u64,
    /// PEX messages received and used.
    pub pex_received: u64,
    /// PEX messages ignored for coming too often.
    pub pex_ignored: u64,
    /// New addresses learnt by PEX (added to the dial candidates).
    pub pex_learned: u64,
}

/// A fixed-size bit set of fragments.
#[derive(Debug, Clone)]
struct Bits(Vec<u64>, u32);

impl Bits {
    fn new(n: u32) -> Bits {
        Bits(vec![0; (n as usize).div_ceil(64)], n)
    }
    fn get(&self, i: u32) -> bool {
        i < self.1 && self.0[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: u32) -> bool {
        if i >= self.1 || self.get(i) {
            return false;
        }
        self.0[(i / 64) as usize] |= 1 << (i % 64);
        true
    }
    fn count(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }
    fn from_wire(bits: &[u8], n: u32) -> Bits {
        let mut b = Bits::new(n);
        for i in 0..n {
            if bits[(i / 8) as usize] & (0x80 >> (i % 8)) != 0 {
                b.set(i);
            }
        }
        b
    }
}

#[derive(Debug)]
struct Session {
    addr: SocketAddr,
    peer_id: Option<[u8; 16]>,
    outbound: bool,
    have: Bits,
    /// Fragments in `have` that we lack (kept up to date, so interest is not a scan).
    wanted: u32,
    /// They choke us (we may not request).
    choked: bool,
    /// We choke them (we do not serve).
    choking: bool,
    /// They want something of ours.
    interested: bool,
    /// We told them we want something of theirs.
    interesting: bool,
    outstanding: Vec<(Block, Time)>,
    outstanding_bytes: u64,
    /// Requests of theirs to serve, in order, each with its read-ahead state.
    serving: VecDeque<Serve>,
    /// Messages that the transport refused for now (send buffer full), in order.
    queued: VecDeque<Vec<u8>>,
    /// Bytes received from them in the current rate window, and the smoothed rate (B/s).
    window_bytes: u64,
    rate: f64,
    /// Rate windows in a row in which requests timed out and nothing arrived.
    stalls: u8,
    /// The port their HANDSHAKE says they accept connections on.
    listen_port: u16,
    /// Both sides speak peer exchange.
    pex: bool,
    /// Addresses we told them of by PEX (to send only changes). Ordered, like the set it is
    /// compared with, so that which 50 go first is a function of the state, not of a hash seed
    /// (simulations replay from their seed).
    told: BTreeSet<SocketAddr>,
    /// When we last sent them PEX, and when we last used theirs.
    pex_sent_at: Option<Time>,
    pex_rx_at: Option<Time>,
    /// Both sides speak SUGGEST.
    suggest: bool,
    /// Fragments they suggested we ask them for (newest last, at most [`MAX_SUGGESTED`]).
    suggested: Vec<u32>,
    /// Fragments we suggested to them that they have not asked for yet.
    offered: Vec<u32>,
}

/// A request of a peer's, queued to be served.
#[derive(Debug, Clone, Copy)]
struct Serve {
    block: Block,
    ahead: Ahead,
}

/// Where a queued block stands with the store ([`Store::prefetch`]). The blocks asked of the
/// store are always the first of a session's queue: it is asked in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ahead {
    /// Not asked yet (beyond [`READ_AHEAD`]).
    No,
    /// Asked; the store brings it in and says so ([`SwarmCore::prefetched`]).
    Asked,
    /// Readable without waiting for a disk.
    Ready,
}

/// Bytes at the head of each session's queue of requests that the store is asked to ready
/// ahead of sending ([`Store::prefetch`], `spec/peer.md` §8.2): enough blocks to keep the disk
/// busy while the first ones are sent, and a bound on the reads in flight for peers that
/// queue many requests.
const READ_AHEAD: u64 = 2 << 20;

impl Session {
    fn new(addr: SocketAddr, outbound: bool, n: u32) -> Session {
        Session {
            addr,
            peer_id: None,
            outbound,
            have: Bits::new(n),
            wanted: 0,
            choked: true,
            choking: true,
            interested: false,
            interesting: false,
            outstanding: Vec::new(),
            outstanding_bytes: 0,
            serving: VecDeque::new(),
            queued: VecDeque::new(),
            window_bytes: 0,
            rate: 0.0,
            stalls: 0,
            listen_port: 0,
            pex: false,
            told: BTreeSet::new(),
            pex_sent_at: None,
            pex_rx_at: None,
            suggest: false,
            suggested: Vec::new(),
            offered: Vec::new(),
        }
    }
}

/// Bytes of suggestions a seed keeps outstanding per peer (spec §5): 2 MiB, in at least
/// [`SUGGEST_AHEAD_MIN`] and at most [`MAX_SUGGESTED`] fragments. With 4 fragments of 64 KiB
/// (256 KiB) a fetcher ran out between taking one up and the next SUGGEST and picked on its
/// own, often a fragment the seed had just sent to someone else: the seed then uploaded
/// 1.30 copies and the swarm ended at 1.33× the bound (`swarm_sim --size 64M --peers 8
/// --fragment 64K --mbit 100 --latency-ms 1 --queue 625K`); with 32, 1.21–1.24× (3 seeds).
const SUGGEST_AHEAD_BYTES: u64 = 2 << 20;
/// Fewest suggestions a seed keeps outstanding per peer (spec §5).
const SUGGEST_AHEAD_MIN: usize = 4;
/// Most unclaimed fragments looked at per call when choosing suggestions.
const SUGGEST_SCAN: usize = 64;
/// Most suggestions kept per peer; older ones are forgotten.
const MAX_SUGGESTED: usize = 32;

/// The peer layer of one swarm.
pub struct SwarmCore {
    cfg: SwarmConfig,
    swarm_id: [u8; 32],
    peer_id: [u8; 16],
    listen_port: u16,
    picker: Picker,
    geometry: Geometry,
    /// Ordered, so that every pass over the sessions runs in the same order each run (a
    /// `HashMap` is seeded per process: simulations would not replay from their seed).
    sessions: BTreeMap<ConnHandle, Session>,
    by_peer: HashMap<[u8; 16], ConnHandle>,
    /// Addresses with a session, to avoid dialling twice.
    connected: HashSet<SocketAddr>,
    candidates: Vec<SocketAddr>,
    banned: HashSet<SocketAddr>,
    /// Peers that sent blocks of each fragment in progress (strikes on a bad hash).
    contributors: HashMap<u32, Vec<SocketAddr>>,
    /// Fragments that failed verification with several contributors: their next attempt
    /// takes every block from one peer (`Some` once a peer took it), so that a failure names
    /// its sender (spec §6).
    pinned: HashMap<u32, Option<SocketAddr>>,
    strikes: HashMap<SocketAddr, u8>,
    stats: SwarmStats,
    rng: Rng,
    next_round: Time,
    next_choke: Time,
    optimistic: Option<ConnHandle>,
    rounds: u64,
    io_error: Option<io::Error>,
    /// Bytes in fragments not yet verified (kept, not recounted: the driver asks every turn).
    left: u64,
    /// [`SwarmCore::close_all`] was called: no new connections, no dialling, no serving.
    leaving: bool,
    /// Bytes served of each fragment (to all peers together).
    served: Vec<u64>,
    /// Fragments not yet served nor suggested to anyone, in random order, and the position of
    /// each in it (`u32::MAX` once taken out): what a seed suggests next (spec §5).
    unclaimed: Vec<u32>,
    unclaimed_at: Vec<u32>,
    /// Reused buffer of received messages.
    rx_buf: Vec<u8>,
    /// Connections dialled since the driver last asked ([`SwarmCore::take_dialled`]).
    dialled: Vec<ConnHandle>,
    /// Block bytes this swarm may still serve and request (`None`: no limit); the peer node
    /// sets them from its rate limits before each call ([`SwarmCore::set_allowance`]).
    up_allow: Option<u64>,
    down_allow: Option<u64>,
    /// Serving or requesting stopped for want of allowance: [`SwarmCore::resume`] restarts it.
    throttled: bool,
    /// The mean receive rate of the connections we are downloading from (unchoked and
    /// interesting), bytes/s, as of the last rate window: what sizes their pipelines.
    fair_rate: f64,
}

/// Request timeouts in a row, with nothing received, after which a connection is replaced.
const MAX_STALLS: u8 = 2;

/// Window over which per-peer receive rates are measured.
const RATE_WINDOW: Duration = Duration::from_millis(250);

/// What a request pipeline holds beyond twice the round trip, in time at the rate it is sized
/// by (spec `peer.md` §5).
const PIPELINE_SLACK: Duration = Duration::from_millis(100);

/// The longest an endgame waits before it asks a second peer for a block (spec `peer.md` §5):
/// the patience for a peer that has gone quiet, whose measured rate promises nothing.
const ENDGAME_PATIENCE: Duration = Duration::from_secs(2);

/// Application error codes in CLOSE (spec `peer.md` §6).
///
/// On the wire each is `0x100 + n`: the transport reserves codes below `0x100` for itself
/// (`spec/transport.md` §7.1, `spec/peer.md` §6).
pub mod close_code {

    /// Where the peer layer's codes start.
    pub const BASE: u32 = 0x100;
    /// Protocol violation.
    pub const VIOLATION: u32 = BASE + 1;
    /// Another swarm.
    pub const WRONG_SWARM: u32 = BASE + 2;
    /// A connection to ourselves.
    pub const SELF: u32 = BASE + 3;
    /// A second connection between the same pair of peers.
    pub const DUPLICATE: u32 = BASE + 4;
    /// Banned for bad data.
    pub const BANNED: u32 = BASE + 5;
    /// Too many peers.
    pub const FULL: u32 = BASE + 6;
    /// Requests kept timing out with nothing received: reconnecting.
    pub const STALLED: u32 = BASE + 7;
    /// The peer is leaving (stopped, or done and not seeding).
    pub const LEAVING: u32 = BASE + 8;
}

impl SwarmCore {
    /// A swarm layer for a swarm laid out as `geometry`, started at `now`. `have(i)` tells
    /// which fragments are already verified locally.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: SwarmConfig,
        swarm_id: [u8; 32],
        peer_id: [u8; 16],
        listen_port: u16,
        geometry: Geometry,
        have: impl Fn(u32) -> bool,
        seed: u64,
        now: Time,
    ) -> SwarmCore {
        let mut picker = Picker::new(geometry, cfg.block.min(peer::MAX_BLOCK), seed);
        for i in 0..picker.fragment_count() {
            if have(i) {
                picker.mark_have(i);
            }
        }
        let left = geometry.bytes_in((0..geometry.count()).filter(|&i| !picker.has(i)));
        let picker_fragments = picker.fragment_count();
        // A random order of the fragments for the seed's suggestions (Fisher–Yates).
        let mut order_rng = Rng::new(seed ^ 0x5355_4747);
        let mut unclaimed: Vec<u32> = (0..picker_fragments).collect();
        for k in (1..unclaimed.len()).rev() {
            let j = order_rng.below(k as u64 + 1) as usize;
            unclaimed.swap(k, j);
        }
        let mut unclaimed_at = vec![0u32; unclaimed.len()];
        for (k, &i) in unclaimed.iter().enumerate() {
            unclaimed_at[i as usize] = k as u32;
        }
        SwarmCore {
            left,
            cfg,
            swarm_id,
            peer_id,
            listen_port,
            picker,
            geometry,
            sessions: BTreeMap::new(),
            by_peer: HashMap::new(),
            connected: HashSet::new(),
            candidates: Vec::new(),
            banned: HashSet::new(),
            contributors: HashMap::new(),
            pinned: HashMap::new(),
            strikes: HashMap::new(),
            stats: SwarmStats::default(),
            rng: Rng::new(seed ^ 0x5157_4152_4d21),
            next_round: now,
            next_choke: now,
            optimistic: None,
            rounds: 0,
            io_error: None,
            leaving: false,
            served: vec![0; picker_fragments as usize],
            unclaimed,
            unclaimed_at,
            rx_buf: Vec::new(),
            dialled: Vec::new(),
            up_allow: None,
            down_allow: None,
            throttled: false,
            fair_rate: 0.0,
        }
    }

    /// Connections this swarm dialled since the last call: the driver routes their events here.
    pub fn take_dialled(&mut self) -> Vec<ConnHandle> {
        std::mem::take(&mut self.dialled)
    }

    /// True when the swarm has no connection and nobody to dial: its timers have nothing to
    /// do until a peer is added or connects.
    pub fn is_idle(&self) -> bool {
        self.sessions.is_empty() && self.candidates.is_empty()
    }

    /// Sets the block bytes the swarm may serve (`up`) and request (`down`) from now on
    /// (`None`: no limit). The caller reads what is left with [`SwarmCore::allowance`].
    pub fn set_allowance(&mut self, up: Option<u64>, down: Option<u64>) {
        self.up_allow = up;
        self.down_allow = down;
    }

    /// What is left of the allowances set by [`SwarmCore::set_allowance`].
    pub fn allowance(&self) -> (Option<u64>, Option<u64>) {
        (self.up_allow, self.down_allow)
    }

    /// True if serving or requesting stopped for want of allowance since the last
    /// [`SwarmCore::resume`].
    pub fn throttled(&self) -> bool {
        self.throttled
    }

    /// After the allowance grew: serves what waits and asks for more, on every connection.
    pub fn resume(&mut self, now: Time, ep: &mut Endpoint, store: &mut dyn Store) {
        self.throttled = false;
        if self.leaving {
            return;
        }
        let hs: Vec<ConnHandle> = self.sessions.keys().copied().collect();
        for h in hs {
            self.pump(ep, store, h);
            self.fill_requests(now, ep, h);
        }
    }

    /// An inbound connection whose first message, `first`, named this swarm (the peer node
    /// read it to route the connection): greet it, then take the message as usual.
    pub fn accept(
        &mut self,
        now: Time,
        ep: &mut Endpoint,
        store: &mut dyn Store,
        h: ConnHandle,
        first: &[u8],
    ) {
        self.on_connected(now, ep, h);
        if self.sessions.contains_key(&h) {
            self.on_message(now, ep, store, h, first);
        }
    }

    /// True once every fragment is verified.
    pub fn complete(&self) -> bool {
        self.picker.complete()
    }

    /// True if fragment `i` is verified.
    pub fn has(&self, i: u32) -> bool {
        self.picker.has(i)
    }

    /// Counters.
    pub fn stats(&self) -> &SwarmStats {
        &self.stats
    }

    /// The first disk error met since the last call, if any.
    pub fn take_io_error(&mut self) -> Option<io::Error> {
        self.io_error.take()
    }

    /// Connected peers that completed the handshake.
    pub fn peer_count(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| s.peer_id.is_some())
            .count()
    }

    /// Bytes still missing.
    pub fn left(&self) -> u64 {
        self.left
    }

    fn fragment_len(&self, i: u32) -> u32 {
        self.geometry.len(i)
    }

    /// When [`SwarmCore::tick`] wants to run next.
    pub fn poll_timeout(&self) -> Time {
        self.next_round
    }

    /// Sends `m`, or queues it behind messages the transport pushed back. A control message
    /// is written on the stack and copied once, into the transport's send buffer; only a
    /// message that must wait, or a long one (HAVE_MAP, PEX), takes an allocation.
    fn send(ep: &mut Endpoint, h: ConnHandle, s: &mut Session, m: &Message<'_>) {
        if !s.queued.is_empty() {
            s.queued.push_back(peer::to_vec(m));
            return;
        }
        let mut stack = [0u8; peer::MAX_CONTROL_LEN];
        let long;
        let bytes = match peer::emit(m, &mut stack) {
            Ok(n) => &stack[..n],
            Err(_) => {
                long = peer::to_vec(m);
                &long[..]
            }
        };
        match ep.send(h, bytes) {
            Ok(()) => {}
            Err(SendError::Blocked) => s.queued.push_back(bytes.to_vec()),
            Err(SendError::TooLarge | SendError::Closed) => {}
        }
    }

    /// Handles a transport event for one of this swarm's connections.
    pub fn handle_event(
        &mut self,
        now: Time,
        ep: &mut Endpoint,
        store: &mut dyn Store,
        ev: &Event,
    ) {
        match ev {
            Event::Connected(h) => self.on_connected(now, ep, *h),
            Event::Readable(h) => {
                // One receive buffer, reused for every message (DATA is up to 256 KiB).
                let mut m = std::mem::take(&mut self.rx_buf);
                while ep.recv_into(*h, &mut m) {
                    if !self.sessions.contains_key(h) {
                        break;
                    }
                    // DATA goes to the store with its buffer (no copy of the block); before
                    // the handshake it takes the checked path (a violation there).
                    if m.first() == Some(&peer::msg::DATA)
                        && self.sessions.get(h).is_some_and(|s| s.peer_id.is_some())
                        && let Ok(Message::Data {
                            fragment, offset, ..
                        }) = peer::parse(&m)
                    {
                        self.on_data(now, ep, store, *h, fragment, offset, &mut m);
                        continue;
                    }
                    self.on_message(now, ep, store, *h, &m);
                }
                self.rx_buf = m;
            }
            Event::Writable(h) => self.pump(ep, store, *h),
            Event::Closed(h, _) => {
                let served = self.sessions.get(h).is_some_and(|s| !s.choking);
                self.on_closed(*h);
                if served {
                    self.fill_free_slots(ep);
                }
            }
            _ => {}
        }
    }

    /// One message of a session: checked, then handed to its concern's handler.
    fn on_message(
        &mut self,
        now: Time,
        ep: &mut Endpoint,
        store: &mut dyn Store,
        h: ConnHandle,
        bytes: &[u8],
    ) {
        let Ok(m) = peer::parse(bytes) else {
            return self.violation(ep, now, h, close_code::VIOLATION);
        };
        let Some(s) = self.sessions.get(&h) else {
            return;
        };
        if s.peer_id.is_none() && !matches!(m, Message::Handshake(_)) {
            return self.violation(ep, now, h, close_code::VIOLATION);
        }
        match m {
            Message::Handshake(hs) => self.on_handshake(now, ep, h, hs),
            Message::Pex { added, dropped } => self.on_pex(now, h, added, dropped),
            Message::HaveMap(bits) => self.on_have_map(now, ep, h, bits),
            Message::Have(i) => self.on_have(now, ep, h, i),
            Message::Interested => self.on_interested(ep, h),
            Message::Suggest(i) => self.on_suggest(now, ep, h, i),
            Message::Choke => self.on_choke(h),
            Message::Unchoke => self.on_unchoke(now, ep, h),
            Message::Request(b) => self.on_request(now, ep, store, h, b),
            Message::Cancel(b) => self.on_cancel(h, b),
            Message::Reject(b) => self.on_reject(h, b),
            Message::NotInterested => {
                if let Some(s) = self.sessions.get_mut(&h) {
                    s.interested = false;
                    if !s.choking {
                        self.fill_free_slots(ep);
                    }
                }
            }
            // Taken by the receive loop in `handle_event` (with its buffer) once the handshake
            // is done; before it, it is a violation above.
            Message::Data { .. } => {}
        }
    }

    /// Bytes served of each fragment so far, to all peers together.
    pub fn served(&self) -> &[u64] {
        &self.served
    }

    /// One line per session for diagnostics (simulations, debug logs): the peer, the choke
    /// and interest flags, requests both ways, the receive rate and the transport's window.
    pub fn describe_sessions(&self, ep: &Endpoint) -> Vec<String> {
        self.sessions
            .iter()
            .map(|(h, s)| {
                let t = ep.stats(*h).unwrap_or_default();
                format!(
                    "{} choked {} choking {} interested {} interesting {} wanted {} outstanding {} KiB serving {} queued {} rate {:.0} KB/s | cwnd {} in_flight {} buffered {} srtt {} ms lost {} sent {} retransmitted {} received {} packets {} mtu {}",
                    s.addr,
                    s.choked as u8,
                    s.choking as u8,
                    s.interested as u8,
                    s.interesting as u8,
                    s.wanted,
                    s.outstanding_bytes >> 10,
                    s.serving.len(),
                    s.queued.len(),
                    s.rate / 1000.0,
                    t.cwnd,
                    t.in_flight,
                    t.send_buffered,
                    t.srtt_us / 1000,
                    t.packets_lost,
                    t.bytes_sent,
                    t.stream_bytes_retransmitted,
                    t.r_base,
                    t.packets_sent,
                    t.mtu,
                )
            })
            .collect()
    }

    /// Periodic work, step by step: dial candidates; then, every rate window, rates and
    /// timed-out requests, stalled connections, requests, peer exchange and a check for
    /// leaked request counts; every choke interval, a choke round.
    pub fn tick(&mut self, now: Time, ep: &mut Endpoint) {
        if self.leaving {
            return;
        }
        self.dial(now, ep);
        if now < self.next_round {
            return;
        }
        // Rates are measured over short windows so that the request pipeline follows the
        // link quickly; choke rounds are slower (spec peer.md §5).
        self.next_round = now + RATE_WINDOW;
        let stalled = self.measure_and_expire(now, ep);
        self.reconnect(now, ep, stalled);
        let handles: Vec<ConnHandle> = self.sessions.keys().copied().collect();
        for &h in &handles {
            self.fill_requests(now, ep, h);
        }
        self.pex_round(now, ep, &handles);
        self.reconcile_if_starved(now, ep, &handles);
        if now < self.next_choke {
            return;
        }
        self.choke_round(now, ep, handles);
    }

    /// Closes every connection at once, on the way out. The peers see the close within a
    /// round trip and ask elsewhere for what they had asked of us, instead of waiting for their
    /// requests to time out (a graceful finish would queue the goodbye behind megabytes of data
    /// and, if the process exits first, never send it). Data still queued for them is dropped.
    pub fn close_all(&mut self, now: Time, ep: &mut Endpoint) {
        self.leaving = true;
        self.candidates.clear();
        let hs: Vec<ConnHandle> = self.sessions.keys().copied().collect();
        for h in hs {
            ep.close(now, h, close_code::LEAVING, b"");
            self.on_closed(h);
        }
    }
}

/// The block a REQUEST, CANCEL or REJECT names.
fn block_of(b: peer::BlockRef) -> Block {
    Block {
        fragment: b.fragment.get(),
        offset: b.offset.get(),
        length: b.length.get(),
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so that one peer has one spelling.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

mod choking;
mod pex;
mod requests;
mod serve;
mod session;
mod suggest;
mod verify;

#[cfg(test)]
mod pex_tests;
#[cfg(test)]
mod tests;
