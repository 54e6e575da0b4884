//! The peer node: one sans-IO core for a whole peer process. It owns the transport endpoint,
//! peer discovery (a tracker client per swarm, one LAN announcer for all swarms, peer
//! exchange inside each swarm) and any number of swarms with their storage, and it holds every
//! rule of a peer process: routing each event to its swarm, the resume-sync schedule, the
//! completion sequence (verify → fsync → rename → tell the trackers), the stop sequence, the
//! crash-recovery check, the rate limits, and the diagnostics of a node that finds nobody.
//!
//! It reads no clock and owns no socket or thread: the driver (the reactor, or the simulator)
//! passes datagrams, completions and `now` in through [`Core`], and the node reports what
//! happened as [`NodeEvent`]s. Its [`Core::poll_timeout`] covers every deadline it has.

mod rate;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use slab::Slab;
use st_proto::peer::{self as wire, Message};
use st_proto::st_file::Geometry;

use crate::dht::{DhtConfig, DhtEvent, DhtNode};
use crate::discovery::lan::{LanConfig, LanDiscovery};
use crate::discovery::tracker_client::{Progress as Announced, TrackerClient};
use crate::driver::{Core, Transmit};
use crate::peer::swarm::{SwarmConfig, SwarmCore, SwarmStats, close_code};
use crate::storage::{Done, SwarmStore};
use crate::time::Time;
use crate::transport::{self, ConnHandle, Endpoint, Event, RequestId};
pub(crate) use rate::Bucket;

/// Settings of a peer node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This process's peer id (random per process).
    pub peer_id: [u8; 16],
    /// The port peers reach us on (announced to trackers and on the LAN).
    pub port: u16,
    /// The transport's settings (`accept` is set by the node).
    pub transport: transport::Config,
    /// Every swarm's peer-layer settings.
    pub swarm: SwarmConfig,
    /// LAN discovery, or `None` when off (or when the driver could join no group).
    pub lan: Option<LanConfig>,
    /// The DHT (on the same port), or `None` when off.
    pub dht: Option<DhtConfig>,
    /// Gap between resume syncs while a swarm downloads.
    pub sync_every: Duration,
    /// Longest wait, on the way out, for the trackers to hear `stopped`.
    pub stop_grace: Duration,
    /// Gap between two [`NodeEvent::Progress`] of a swarm that is busy.
    pub progress_every: Duration,
    /// After this long, a tracker that never answered and a swarm that found no peer are
    /// reported ([`NodeEvent::TrackerSilent`], [`NodeEvent::NoPeers`]).
    pub quiet_after: Duration,
    /// Upload limit in bytes per second, over every swarm (`None`: none).
    pub max_upload: Option<u64>,
    /// Download limit in bytes per second, over every swarm (`None`: none).
    pub max_download: Option<u64>,
    /// Stop the node once every swarm is complete (a fetch that does not seed afterwards).
    pub stop_when_complete: bool,
    /// Stop the node when a swarm fails (a fetch); otherwise only that swarm stops.
    pub stop_on_failure: bool,
    /// Inbound connections that have not named their swarm are closed after this long.
    pub handshake_timeout: Duration,
    /// Seed of the node's random choices.
    pub seed: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            peer_id: [0; 16],
            port: 0,
            transport: transport::Config::default(),
            swarm: SwarmConfig::default(),
            lan: None,
            dht: None,
            sync_every: Duration::from_secs(5),
            stop_grace: Duration::from_millis(700),
            progress_every: Duration::from_secs(1),
            quiet_after: Duration::from_secs(30),
            max_upload: None,
            max_download: None,
            stop_when_complete: false,
            stop_on_failure: false,
            handshake_timeout: Duration::from_secs(10),
            seed: 0,
        }
    }
}

/// A swarm to join.
#[derive(Debug, Clone)]
pub struct SwarmSpec {
    /// The swarm id (SHA-256 of the `.st` file's info part).
    pub id: [u8; 32],
    /// The advisory name, for messages.
    pub name: String,
    /// Total length in bytes.
    pub total_length: u64,
    /// Fragment length in bytes.
    pub fragment_length: u32,
    /// Trackers, resolved.
    pub trackers: Vec<SocketAddr>,
    /// A download: its store is synced while it runs and finished (fsync, rename) once
    /// complete. `false` for a seed of complete data.
    pub fetch: bool,
    /// Data may be on disk that the store does not record as verified (a `.part` file was
    /// there at start: the process before crashed). The node then checks every fragment the
    /// store does not hold verified before the swarm starts, and trusts only those whose
    /// hash matches (`spec/peer.md` §8.3).
    pub unrecorded_data: bool,
    /// A private swarm (`.st` flag): never put in the DHT nor announced on the LAN
    /// (`spec/dht.md` §16).
    pub private: bool,
}

/// Where a swarm is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwarmPhase {
    /// Checking fragments that may be on disk unrecorded; not connected yet.
    Checking,
    /// Exchanging fragments.
    Running,
    /// Every fragment verified; the files are being synced and moved into place.
    Finishing,
    /// Complete and in place (still serving unless the node stops).
    Complete,
    /// Stopped on an error.
    Failed,
}

/// One swarm's figures, reported once a second while it is busy.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The swarm.
    pub id: [u8; 32],
    /// Verified bytes held.
    pub have: u64,
    /// Total bytes.
    pub total: u64,
    /// Verified bytes received per second, over the last interval.
    pub down_rate: u64,
    /// Block bytes sent per second, over the last interval.
    pub up_rate: u64,
    /// Connected peers.
    pub peers: usize,
    /// Block bytes sent since the swarm was added.
    pub uploaded: u64,
    /// Peers learnt so far from each source: trackers, the LAN, the DHT, peer exchange.
    pub found: Found,
}

/// Peers learnt from each source (a peer learnt twice counts twice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found {
    /// From trackers.
    pub trackers: u64,
    /// From LAN discovery.
    pub lan: u64,
    /// From the DHT.
    pub dht: u64,
    /// From peer exchange.
    pub pex: u64,
}

/// What the node reports.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeEvent {
    /// A swarm's figures.
    Progress(Progress),
    /// The crash-recovery check of a swarm ended: `recovered` fragments were found intact.
    Checked {
        /// The swarm.
        id: [u8; 32],
        /// Fragments found intact and now trusted.
        recovered: u32,
    },
    /// A swarm is complete: every fragment verified, synced and in place.
    Complete {
        /// The swarm.
        id: [u8; 32],
        /// Where its files are.
        paths: Vec<PathBuf>,
        /// Bytes downloaded (verified) since it was added.
        bytes: u64,
        /// Time since it was added.
        elapsed: Duration,
    },
    /// A swarm stopped on an error (its verified data and resume state are kept).
    Failed {
        /// The swarm.
        id: [u8; 32],
        /// One line naming the cause.
        message: String,
    },
    /// Something worth a warning that stops nothing (a resume sync that failed on the way out).
    Warning {
        /// The swarm.
        id: [u8; 32],
        /// One line.
        message: String,
    },
    /// A tracker has not answered for `quiet_after` or more (since the swarm was added, or
    /// since it last answered); said again at most every 10 minutes.
    TrackerSilent {
        /// The swarm.
        id: [u8; 32],
        /// The tracker.
        tracker: SocketAddr,
        /// Requests sent to it.
        tries: u32,
        /// Time until the next attempt.
        next_in: Duration,
    },
    /// A swarm found no peer in `quiet_after`: what every source gave.
    NoPeers {
        /// The swarm.
        id: [u8; 32],
        /// One line per source, joined with "; ".
        sources: String,
    },
    /// Something about the node as a whole worth a warning (the DHT found no bootstrap node).
    Notice {
        /// One line.
        message: String,
    },
    /// The DHT's state, to be saved (`spec/dht.md` §15): now and then, and once stopping.
    DhtState(Vec<u8>),
    /// The stop sequence ended: the driver may exit.
    Stopped,
}

/// The DHT key of a swarm: the first 20 bytes of its id (`spec/dht.md` §2).
pub fn dht_key(id: &[u8; 32]) -> [u8; 20] {
    let mut k = [0u8; 20];
    k.copy_from_slice(&id[..20]);
    k
}

/// A silent tracker is reported again at most this often.
const RESAY_SILENT: Duration = Duration::from_secs(600);

/// Most inbound connections waiting to name their swarm (spec `peer.md` §3).
const MAX_UNROUTED: usize = 256;

struct Slot {
    spec: SwarmSpec,
    geometry: Geometry,
    phase: SwarmPhase,
    /// `None` while checking.
    core: Option<SwarmCore>,
    store: Box<dyn SwarmStore>,
    trackers: TrackerClient,
    /// Fragments of the recovery check not answered yet, and how many matched.
    checking: Vec<u32>,
    recovered: u32,
    /// A resume sync is queued and not answered.
    syncing: bool,
    /// Another sync is wanted once the one under way answers.
    sync_again: bool,
    next_sync: Option<Time>,
    next_progress: Option<Time>,
    /// (downloaded, uploaded) at the last progress report.
    last: (u64, u64),
    added: Time,
    /// Verified bytes held when added.
    have_at_start: u64,
    /// The `quiet_after` checks are still to run.
    quiet_check: Option<Time>,
    /// Trackers reported silent, and when (reported again at most every `RESAY_SILENT`).
    said_silent: HashMap<SocketAddr, Time>,
    /// Peers learnt from trackers and from the LAN.
    from_trackers: u64,
    from_lan: u64,
    from_dht: u64,
    /// DHT searches of this swarm that ended, and how many found peers.
    dht_searches: (u32, u32),
    /// The deadline in `timers` (kept so it can be removed).
    deadline: Option<Time>,
    /// Stats of a core that was dropped (failed) or of this slot before the core existed.
    final_stats: Option<SwarmStats>,
    /// Peers learnt while checking, for the peer layer once it starts.
    early_peers: Vec<SocketAddr>,
}

impl Slot {
    fn deadline(&self, stopping: bool) -> Option<Time> {
        let mut d: Option<Time> = None;
        let mut at = |t: Option<Time>| {
            if let Some(t) = t {
                d = Some(d.map_or(t, |x| x.min(t)));
            }
        };
        if let Some(c) = &self.core
            && self.phase != SwarmPhase::Failed
            && !stopping
            && !c.is_idle()
        {
            at(Some(c.poll_timeout()));
        }
        if self.core.is_some() || stopping {
            at(self.trackers.poll_timeout());
        }
        if !stopping {
            if !self.syncing && self.phase == SwarmPhase::Running && self.spec.fetch {
                at(self.next_sync);
            }
            at(self.next_progress);
            at(self.quiet_check);
        }
        d
    }

    fn have(&self) -> u64 {
        match &self.core {
            Some(c) => self.spec.total_length - c.left(),
            None => self.have_at_start,
        }
    }

    fn stats(&self) -> SwarmStats {
        match &self.core {
            Some(c) => c.stats().clone(),
            None => self.final_stats.clone().unwrap_or_default(),
        }
    }
}

/// What one swarm did, for the final summary.
#[derive(Debug, Clone)]
pub struct SwarmSummary {
    /// The swarm.
    pub id: [u8; 32],
    /// Its name.
    pub name: String,
    /// Where it stands.
    pub phase: SwarmPhase,
    /// Counters (bytes down and up, waste, hash failures, bytes per peer).
    pub stats: SwarmStats,
    /// Verified bytes held.
    pub have: u64,
    /// Total bytes.
    pub total: u64,
    /// Where its files are.
    pub paths: Vec<PathBuf>,
}

/// Errors of [`PeerNode::add_swarm`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    /// The node already serves this swarm.
    #[error("this swarm is already being served")]
    Duplicate,
    /// The node is stopping.
    #[error("the node is stopping")]
    Stopping,
    /// The swarm's geometry is impossible.
    #[error("invalid swarm: {0}")]
    Invalid(&'static str),
}

/// The peer node.
pub struct PeerNode {
    cfg: NodeConfig,
    ep: Endpoint,
    lan: Option<LanDiscovery>,
    dht: Option<DhtNode>,
    /// Swarms by DHT key (the first 20 bytes of the id).
    by_key: HashMap<[u8; 20], usize>,
    slots: Slab<Slot>,
    by_id: HashMap<[u8; 32], usize>,
    /// Which swarm each connection belongs to.
    conns: HashMap<ConnHandle, usize>,
    /// Inbound connections that have not sent their HANDSHAKE yet, with when they came.
    unrouted: HashMap<ConnHandle, Time>,
    /// Tracker requests in flight: swarm and tracker index.
    requests: HashMap<RequestId, (usize, usize)>,
    /// Swarm deadlines.
    timers: BTreeSet<(Time, usize)>,
    events: VecDeque<NodeEvent>,
    up: Option<Bucket>,
    down: Option<Bucket>,
    /// Swarms that stopped serving or requesting for want of rate allowance.
    throttled: BTreeSet<usize>,
    /// When the rate buckets let the throttled swarms go on.
    refill_at: Option<Time>,
    stopping: Option<Time>,
    /// The stop's grace ran out (its deadline is no longer wanted: what is left waits for the
    /// disk, whose results wake the node).
    grace_over: bool,
    stopped: bool,
    rx: Vec<u8>,
    /// Every swarm that was ever added completed (for `stop_when_complete`).
    completed: usize,
}

impl std::fmt::Debug for PeerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerNode")
            .field("swarms", &self.slots.len())
            .field("connections", &self.conns.len())
            .field("stopping", &self.stopping)
            .finish_non_exhaustive()
    }
}

/// Largest block the rate limits hand out at once, and the least burst of a bucket.
const RATE_QUANTUM: u64 = 256 * 1024;

impl PeerNode {
    /// A node with no swarm yet, started at `now`.
    pub fn new(mut cfg: NodeConfig, now: Time) -> PeerNode {
        cfg.transport.accept = true;
        let ep = Endpoint::new(cfg.transport.clone(), cfg.seed);
        let lan = cfg
            .lan
            .clone()
            .map(|l| LanDiscovery::new(l, cfg.peer_id, cfg.port, &[], now));
        // A burst of an eighth of a second, at least one block: fine-grained enough to be
        // accurate over seconds, coarse enough not to wake for every block.
        let bucket = |r: u64| Bucket::new(r, (r / 8).max(RATE_QUANTUM), now);
        let dht = cfg
            .dht
            .clone()
            .map(|d| DhtNode::new(d, now, cfg.seed ^ 0xd4d4_d4d4_d4d4_d4d4));
        PeerNode {
            dht,
            by_key: HashMap::new(),
            up: cfg.max_upload.map(bucket),
            down: cfg.max_download.map(bucket),
            cfg,
            ep,
            lan,
            slots: Slab::new(),
            by_id: HashMap::new(),
            conns: HashMap::new(),
            unrouted: HashMap::new(),
            requests: HashMap::new(),
            timers: BTreeSet::new(),
            events: VecDeque::new(),
            throttled: BTreeSet::new(),
            refill_at: None,
            stopping: None,
            grace_over: false,
            stopped: false,
            rx: Vec::new(),
            completed: 0,
        }
    }

    /// The transport endpoint (for counters).
    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// LAN discovery, if on.
    pub fn lan(&self) -> Option<&LanDiscovery> {
        self.lan.as_ref()
    }

    /// The DHT node, if on.
    pub fn dht(&self) -> Option<&DhtNode> {
        self.dht.as_ref()
    }

    /// More DHT bootstrap routers (resolved off the reactor thread by the driver).
    pub fn add_dht_bootstrap(&mut self, now: Time, routers: &[SocketAddr]) {
        if let Some(d) = &mut self.dht {
            d.add_bootstrap(now, routers);
            self.drain_dht(now);
        }
    }

    /// Number of swarms.
    pub fn swarm_count(&self) -> usize {
        self.slots.len()
    }

    /// The ids of the swarms, in the order added.
    pub fn swarm_ids(&self) -> Vec<[u8; 32]> {
        let mut v: Vec<(usize, [u8; 32])> =
            self.slots.iter().map(|(k, s)| (k, s.spec.id)).collect();
        v.sort_unstable();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// Where swarm `id` stands.
    pub fn phase(&self, id: &[u8; 32]) -> Option<SwarmPhase> {
        self.by_id.get(id).map(|&k| self.slots[k].phase)
    }

    /// The peer layer of swarm `id` (absent while it checks).
    pub fn swarm(&self, id: &[u8; 32]) -> Option<&SwarmCore> {
        self.by_id
            .get(id)
            .and_then(|&k| self.slots[k].core.as_ref())
    }

    /// The store of swarm `id`.
    pub fn store(&self, id: &[u8; 32]) -> Option<&dyn SwarmStore> {
        self.by_id.get(id).map(|&k| self.slots[k].store.as_ref())
    }

    /// What every swarm did.
    pub fn summary(&self) -> Vec<SwarmSummary> {
        let mut v: Vec<(usize, SwarmSummary)> = self
            .slots
            .iter()
            .map(|(k, s)| {
                (
                    k,
                    SwarmSummary {
                        id: s.spec.id,
                        name: s.spec.name.clone(),
                        phase: s.phase,
                        stats: s.stats(),
                        have: s.have(),
                        total: s.spec.total_length,
                        paths: s.store.final_paths(),
                    },
                )
            })
            .collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v.into_iter().map(|(_, s)| s).collect()
    }

    /// True once the stop sequence ended.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// True once a stop began.
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_some()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// Joins a swarm whose data is in `store` (what it holds verified is what we have).
    pub fn add_swarm(
        &mut self,
        now: Time,
        spec: SwarmSpec,
        store: Box<dyn SwarmStore>,
    ) -> Result<(), AddError> {
        if self.stopping.is_some() {
            return Err(AddError::Stopping);
        }
        if self.by_id.contains_key(&spec.id) {
            return Err(AddError::Duplicate);
        }
        if spec.total_length == 0 {
            return Err(AddError::Invalid("zero length"));
        }
        let geometry = Geometry::new(spec.total_length, spec.fragment_length)
            .ok_or(AddError::Invalid("impossible fragment layout"))?;
        let n = geometry.count();
        let trackers = TrackerClient::new(
            &spec.trackers,
            spec.id,
            self.cfg.peer_id,
            self.cfg.port,
            now,
        );
        // Crash recovery (spec peer.md §8.3): nothing unrecorded is trusted unchecked.
        let checking: Vec<u32> = if spec.unrecorded_data {
            (0..n).filter(|&i| !store.is_verified(i)).collect()
        } else {
            Vec::new()
        };
        let have_at_start = geometry.bytes_in((0..n).filter(|&i| store.is_verified(i)));
        let id = spec.id;
        let k = self.slots.insert(Slot {
            spec,
            geometry,
            phase: SwarmPhase::Checking,
            core: None,
            store,
            trackers,
            checking: Vec::new(),
            recovered: 0,
            syncing: false,
            sync_again: false,
            next_sync: None,
            next_progress: None,
            last: (0, 0),
            added: now,
            have_at_start,
            quiet_check: Some(now + self.cfg.quiet_after),
            said_silent: HashMap::new(),
            from_trackers: 0,
            from_lan: 0,
            from_dht: 0,
            dht_searches: (0, 0),
            deadline: None,
            final_stats: None,
            early_peers: Vec::new(),
        });
        self.by_id.insert(id, k);
        // Crash recovery: data written but never recorded is checked, not trusted.
        let slot = &mut self.slots[k];
        for i in checking {
            match slot.store.verify(i) {
                Ok(Some(ok)) => slot.recovered += u32::from(ok),
                Ok(None) => slot.checking.push(i),
                Err(e) => {
                    let msg = format!("cannot check {}: {e}", slot.spec.name);
                    self.fail(now, k, msg);
                    return Ok(());
                }
            }
        }
        self.poll_store(now, k);
        if self.slots[k].phase == SwarmPhase::Checking && self.slots[k].checking.is_empty() {
            self.start(now, k);
        }
        self.touch(k);
        Ok(())
    }

    /// Leaves swarm `id`: its connections close and its trackers are told `stopped` (once,
    /// without waiting). Its store is dropped (a fetch's resume state is synced first).
    pub fn remove_swarm(&mut self, now: Time, id: &[u8; 32]) -> bool {
        let Some(k) = self.by_id.remove(id) else {
            return false;
        };
        if let Some(t) = self.slots[k].deadline {
            self.timers.remove(&(t, k));
        }
        self.throttled.remove(&k);
        let mut slot = self.slots.remove(k);
        self.dht_forget(&slot.spec.id);
        if let Some(c) = &mut slot.core {
            c.close_all(now, &mut self.ep);
        }
        self.conns.retain(|_, v| *v != k);
        self.requests.retain(|_, v| v.0 != k);
        slot.trackers.stop(now);
        while let Some(out) = slot.trackers.poll_request(now, Announced::default()) {
            self.ep.request(now, out.to, &out.payload);
        }
        if slot.spec.fetch && slot.phase == SwarmPhase::Running {
            let _ = slot.store.sync();
        }
        self.lan_swarms(now);
        true
    }

    /// Peers of swarm `id` learnt elsewhere (a test, a static list).
    pub fn add_peers(&mut self, now: Time, id: &[u8; 32], peers: &[SocketAddr]) {
        if let Some(&k) = self.by_id.get(id) {
            let slot = &mut self.slots[k];
            match &mut slot.core {
                Some(c) => {
                    c.add_peers(peers);
                }
                None => slot.early_peers.extend_from_slice(peers),
            }
            self.run_swarm(now, k);
        }
    }

    /// Begins the stop sequence: every tracker is told `stopped`, every connection closes,
    /// every download's resume state is synced; [`NodeEvent::Stopped`] follows once the syncs
    /// (and any final rename under way) are done and the trackers answered or `stop_grace`
    /// passed.
    pub fn stop(&mut self, now: Time) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(now);
        let keys: Vec<usize> = self.slots.iter().map(|(k, _)| k).collect();
        for k in keys {
            let slot = &mut self.slots[k];
            slot.trackers.stop(now);
            if let Some(c) = &mut slot.core {
                c.close_all(now, &mut self.ep);
            }
            let wants_sync = slot.spec.fetch
                && matches!(
                    slot.phase,
                    SwarmPhase::Running | SwarmPhase::Checking | SwarmPhase::Failed
                );
            if wants_sync && slot.syncing {
                // The sync under way may predate fragments verified since: one more.
                slot.sync_again = true;
            }
            if wants_sync && !slot.syncing {
                match slot.store.sync() {
                    Ok(()) => slot.syncing = true,
                    Err(e) => {
                        let msg = format!(
                            "resume state not saved ({e}); a re-run checks the data on disk"
                        );
                        self.events.push_back(NodeEvent::Warning {
                            id: slot.spec.id,
                            message: msg,
                        });
                    }
                }
            }
            self.poll_store(now, k);
            self.poll_trackers(now, k);
            self.touch(k);
        }
        self.conns.clear();
        if let Some(lan) = &mut self.lan {
            lan.set_swarms(now, &[]);
        }
        let ids: Vec<[u8; 32]> = self.by_id.keys().copied().collect();
        for id in ids {
            self.dht_forget(&id);
        }
        if let Some(d) = &mut self.dht {
            d.stop();
        }
        self.drain_dht(now);
        for (h, _) in std::mem::take(&mut self.unrouted) {
            self.ep.close(now, h, close_code::LEAVING, b"");
        }
        self.check_stopped(now);
    }

    // --- internals -------------------------------------------------------------------------

    /// Creates the peer layer of a swarm whose check is over, and starts it.
    fn start(&mut self, now: Time, k: usize) {
        let cfg = self.cfg.swarm.clone();
        let seed = self.cfg.seed ^ (k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let (peer_id, port) = (self.cfg.peer_id, self.cfg.port);
        let slot = &mut self.slots[k];
        if slot.recovered > 0 || slot.spec.unrecorded_data {
            self.events.push_back(NodeEvent::Checked {
                id: slot.spec.id,
                recovered: slot.recovered,
            });
        }
        let store = &slot.store;
        let core = SwarmCore::new(
            cfg,
            slot.spec.id,
            peer_id,
            port,
            slot.geometry,
            |i| store.is_verified(i),
            seed,
            now,
        );
        slot.have_at_start = slot.spec.total_length - core.left();
        let complete = core.complete();
        let mut core = core;
        core.add_peers(&std::mem::take(&mut slot.early_peers));
        slot.core = Some(core);
        slot.phase = SwarmPhase::Running;
        slot.next_progress = Some(now);
        if slot.spec.fetch {
            slot.next_sync = Some(now + self.cfg.sync_every);
        }
        let (id, private, fetch) = (slot.spec.id, slot.spec.private, slot.spec.fetch);
        if complete {
            if slot.spec.fetch {
                self.finish(now, k);
            } else {
                self.slots[k].phase = SwarmPhase::Complete;
            }
        }
        // The DHT (spec/dht.md §12): every public swarm is announced; a fetch also wants
        // peers from it.
        if !private
            && self
                .slots
                .get(k)
                .is_some_and(|s| s.phase != SwarmPhase::Failed)
            && let Some(d) = &mut self.dht
        {
            let key = dht_key(&id);
            self.by_key.insert(key, k);
            d.register(now, key, Some(self.cfg.port), fetch && !complete);
            self.drain_dht(now);
        }
        self.lan_swarms(now);
        self.poll_trackers(now, k);
    }

    /// Stops announcing and searching swarm `id` in the DHT.
    fn dht_forget(&mut self, id: &[u8; 32]) {
        let key = dht_key(id);
        if self.by_key.remove(&key).is_some()
            && let Some(d) = &mut self.dht
        {
            d.unregister(&key);
        }
    }

    /// Takes what the DHT found and said.
    fn drain_dht(&mut self, now: Time) {
        loop {
            let Some(ev) = self.dht.as_mut().and_then(DhtNode::poll_event) else {
                return;
            };
            match ev {
                DhtEvent::Peers { key, peers } => {
                    if let Some(&k) = self.by_key.get(&key)
                        && self.stopping.is_none()
                        && let Some(slot) = self.slots.get_mut(k)
                    {
                        slot.from_dht += peers.len() as u64;
                        log::debug!("{}: the DHT gave {} peers", slot.spec.name, peers.len());
                        match &mut slot.core {
                            Some(c) => {
                                c.add_peers(&peers);
                            }
                            None => slot.early_peers.extend(peers),
                        }
                        self.run_swarm(now, k);
                    }
                }
                DhtEvent::SearchDone { key, stats } => {
                    if let Some(&k) = self.by_key.get(&key)
                        && let Some(slot) = self.slots.get_mut(k)
                    {
                        slot.dht_searches.0 += 1;
                        slot.dht_searches.1 += u32::from(stats.peers > 0);
                        log::debug!(
                            "{}: DHT search: {} queries, {} replies, {} peers in {:?}",
                            slot.spec.name,
                            stats.queries,
                            stats.replies,
                            stats.peers,
                            stats.elapsed
                        );
                    }
                }
                DhtEvent::Bootstrapped { nodes } => {
                    log::info!("DHT: bootstrapped, {nodes} nodes in the routing table");
                }
                DhtEvent::NoBootstrap { tried, retry_in } => {
                    let list: Vec<String> = tried.iter().map(ToString::to_string).collect();
                    self.events.push_back(NodeEvent::Notice {
                        message: format!(
                            "DHT: no bootstrap node answered ({}); retrying in {}s, backing off to every 10 minutes",
                            list.join(", "),
                            retry_in.as_secs()
                        ),
                    });
                }
                DhtEvent::State(bytes) => self.events.push_back(NodeEvent::DhtState(bytes)),
            }
        }
    }

    /// Tells LAN discovery which swarms to announce (those running or complete).
    fn lan_swarms(&mut self, now: Time) {
        if let Some(lan) = &mut self.lan {
            let mut ids: Vec<(usize, [u8; 32])> = self
                .slots
                .iter()
                .filter(|(_, s)| {
                    s.core.is_some() && s.phase != SwarmPhase::Failed && !s.spec.private
                })
                .map(|(k, s)| (k, s.spec.id))
                .collect();
            ids.sort_unstable();
            let ids: Vec<[u8; 32]> = ids.into_iter().map(|(_, id)| id).collect();
            lan.set_swarms(now, &ids);
        }
    }

    /// Every fragment verified: the files are synced and moved into place
    /// ([`Done::Finished`] ends it).
    fn finish(&mut self, now: Time, k: usize) {
        let Some(slot) = self.slots.get_mut(k) else {
            return;
        };
        slot.phase = SwarmPhase::Finishing;
        if let Err(e) = slot.store.finish() {
            let msg = format!("{e}");
            self.fail(now, k, msg);
        }
    }

    /// A swarm stops on an error; the node too, with `stop_on_failure`.
    fn fail(&mut self, now: Time, k: usize, message: String) {
        let Some(slot) = self.slots.get_mut(k) else {
            return;
        };
        if slot.phase == SwarmPhase::Failed {
            return;
        }
        let was = slot.phase;
        slot.phase = SwarmPhase::Failed;
        if let Some(c) = &mut slot.core {
            c.close_all(now, &mut self.ep);
        }
        // What was verified is kept: the resume state is saved (a full disk has room for it,
        // reserved in advance: spec peer.md §8).
        slot.next_progress = None;
        if slot.spec.fetch && matches!(was, SwarmPhase::Running | SwarmPhase::Checking) {
            if slot.syncing {
                slot.sync_again = true;
            } else if slot.store.sync().is_ok() {
                slot.syncing = true;
            }
        }
        slot.trackers.stop(now);
        let id = slot.spec.id;
        self.events.push_back(NodeEvent::Failed { id, message });
        self.conns.retain(|_, v| *v != k);
        self.dht_forget(&id);
        self.poll_trackers(now, k);
        self.lan_swarms(now);
        if self.cfg.stop_on_failure {
            self.stop(now);
        }
    }

    /// The one-line message for a disk error; a full disk says what is kept.
    fn disk_error(&self, k: usize, e: &io::Error) -> String {
        let Some(slot) = self.slots.get(k) else {
            return e.to_string();
        };
        if e.kind() == io::ErrorKind::StorageFull {
            let n = slot
                .spec
                .total_length
                .div_ceil(u64::from(slot.spec.fragment_length)) as u32;
            let have = (0..n).filter(|&i| slot.store.is_verified(i)).count();
            format!(
                "{e}; the {have} of {n} fragments verified so far are kept: run the fetch again once there is room"
            )
        } else {
            e.to_string()
        }
    }

    /// Takes the store's results.
    fn poll_store(&mut self, now: Time, k: usize) {
        loop {
            let Some(slot) = self.slots.get_mut(k) else {
                return;
            };
            let Some(done) = slot.store.poll_done() else {
                return;
            };
            match done {
                Done::Verified(i, ok) => {
                    if slot.phase == SwarmPhase::Checking {
                        if let Some(p) = slot.checking.iter().position(|&x| x == i) {
                            slot.checking.swap_remove(p);
                            slot.recovered += u32::from(ok);
                        }
                        if slot.checking.is_empty() && self.stopping.is_none() {
                            self.start(now, k);
                        }
                    } else if slot.core.is_some() {
                        // The allowance is this swarm's before it runs (it may ask for more).
                        self.allow(now, k);
                        if let Some(c) = self.slots.get_mut(k).and_then(|s| s.core.as_mut()) {
                            c.fragment_verified(now, &mut self.ep, i, ok);
                        }
                        self.after_swarm(now, k);
                    }
                }
                Done::Synced(r) => {
                    slot.syncing = false;
                    // A sync asked for while this one ran (the stop's, a failure's): it
                    // records what was verified since this one began.
                    if std::mem::take(&mut slot.sync_again) && slot.store.sync().is_ok() {
                        slot.syncing = true;
                    }
                    if let Err(e) = r {
                        if self.stopping.is_some()
                            || matches!(
                                slot.phase,
                                SwarmPhase::Failed | SwarmPhase::Finishing | SwarmPhase::Complete
                            )
                        {
                            let id = slot.spec.id;
                            self.events.push_back(NodeEvent::Warning {
                                id,
                                message: format!(
                                    "resume state not saved ({e}); a re-run checks the data on disk"
                                ),
                            });
                        } else {
                            let msg = self.disk_error(k, &e);
                            self.fail(now, k, msg);
                        }
                    }
                }
                // The disk thread read blocks that peers asked for: they are sent now.
                Done::Prefetched {
                    fragment,
                    offset,
                    len,
                } => {
                    if slot.core.is_some() {
                        self.allow(now, k);
                        let slot = &mut self.slots[k];
                        if let Some(c) = &mut slot.core {
                            c.prefetched(&mut self.ep, slot.store.as_mut(), fragment, offset, len);
                        }
                        self.settle(now, k);
                    }
                }
                Done::Finished(Ok(())) if slot.phase != SwarmPhase::Finishing => {}
                Done::Finished(Ok(())) => {
                    slot.phase = SwarmPhase::Complete;
                    slot.trackers.set_complete(now);
                    if let Some(d) = &mut self.dht {
                        d.set_wants_peers(&dht_key(&slot.spec.id), false);
                    }
                    let stats = slot.stats();
                    self.events.push_back(NodeEvent::Complete {
                        id: slot.spec.id,
                        paths: slot.store.final_paths(),
                        bytes: stats.downloaded,
                        elapsed: now.saturating_since(slot.added),
                    });
                    self.completed += 1;
                    self.poll_trackers(now, k);
                    if self.cfg.stop_when_complete
                        && self
                            .slots
                            .iter()
                            .all(|(_, s)| s.phase == SwarmPhase::Complete)
                    {
                        self.stop(now);
                    }
                }
                Done::Finished(Err(e)) => {
                    let msg = format!("{e}");
                    self.fail(now, k, msg);
                }
                Done::Failed(e) => {
                    let msg = self.disk_error(k, &e);
                    self.fail(now, k, msg);
                }
            }
            self.touch(k);
        }
    }

    /// After a swarm's peer layer ran: new dials, rate accounting, disk errors, completion,
    /// then the store's results.
    fn after_swarm(&mut self, now: Time, k: usize) {
        self.settle(now, k);
        self.poll_store(now, k);
        self.touch(k);
    }

    /// [`PeerNode::after_swarm`] but the store's results: for a call made from
    /// [`PeerNode::poll_store`], whose loop takes them (one nested call per result would nest
    /// as deep as the results waiting).
    fn settle(&mut self, now: Time, k: usize) {
        let Some(slot) = self.slots.get_mut(k) else {
            return;
        };
        let Some(core) = &mut slot.core else {
            return;
        };
        for h in core.take_dialled() {
            self.conns.insert(h, k);
        }
        // What the allowance given before the call lost is what was sent and asked for.
        let (up_left, down_left) = core.allowance();
        if let (Some(b), Some(left)) = (&mut self.up, up_left) {
            b.take(b.tokens().saturating_sub(left));
        }
        if let (Some(b), Some(left)) = (&mut self.down, down_left) {
            b.take(b.tokens().saturating_sub(left));
        }
        let throttled = core.throttled();
        let io_error = core.take_io_error();
        let complete = core.complete();
        // A quiet swarm that moves bytes again reports its progress again.
        if slot.next_progress.is_none() && self.stopping.is_none() {
            slot.next_progress = Some(now + self.cfg.progress_every);
        }
        if throttled {
            self.throttled.insert(k);
            self.arm_refill(now);
        }
        if let Some(e) = io_error {
            let msg = self.disk_error(k, &e);
            self.fail(now, k, msg);
        } else if complete && self.slots[k].phase == SwarmPhase::Running && self.stopping.is_none()
        {
            if self.slots[k].spec.fetch {
                self.finish(now, k);
            } else {
                self.slots[k].phase = SwarmPhase::Complete;
            }
        }
    }

    /// Gives a swarm the rate allowance left before calling into it.
    fn allow(&mut self, now: Time, k: usize) {
        let up = self.up.as_mut().map(|b| {
            b.refill(now);
            b.tokens()
        });
        let down = self.down.as_mut().map(|b| {
            b.refill(now);
            b.tokens()
        });
        if let Some(c) = self.slots.get_mut(k).and_then(|s| s.core.as_mut()) {
            c.set_allowance(up, down);
        }
    }

    /// When the rate buckets next allow the largest block, if some swarm waits for that (a
    /// bucket's burst is at least that block, so the time comes; `spec/peer.md` §9).
    fn arm_refill(&mut self, now: Time) {
        if self.throttled.is_empty() {
            self.refill_at = None;
            return;
        }
        let at = [&self.up, &self.down]
            .into_iter()
            .flatten()
            .map(|b| b.ready_at(RATE_QUANTUM))
            .max();
        // Never sooner than a millisecond from now: a swarm that is throttled again at once
        // must not make the node spin.
        self.refill_at = at.map(|t| t.max(now + Duration::from_millis(1)));
    }

    /// Routes one transport event to the swarm that owns its connection.
    fn dispatch(&mut self, now: Time, k: usize, ev: &Event) {
        self.allow(now, k);
        let Some(slot) = self.slots.get_mut(k) else {
            return;
        };
        let Some(core) = &mut slot.core else {
            return;
        };
        core.handle_event(now, &mut self.ep, slot.store.as_mut(), ev);
        self.after_swarm(now, k);
    }

    /// An inbound connection sent something: its first message must be a HANDSHAKE naming
    /// one of our swarms (`spec/peer.md` §3); the connection is then that swarm's.
    fn route_inbound(&mut self, now: Time, h: ConnHandle) {
        let mut m = std::mem::take(&mut self.rx);
        if self.ep.recv_into(h, &mut m) {
            self.unrouted.remove(&h);
            let target = match wire::parse(&m) {
                Ok(Message::Handshake(hs)) => self.by_id.get(&hs.swarm_id).copied().filter(|&k| {
                    self.slots[k].core.is_some()
                        && matches!(
                            self.slots[k].phase,
                            SwarmPhase::Running | SwarmPhase::Finishing | SwarmPhase::Complete
                        )
                }),
                _ => None,
            };
            match target {
                Some(k) if self.stopping.is_none() => {
                    self.conns.insert(h, k);
                    self.allow(now, k);
                    let slot = &mut self.slots[k];
                    if let Some(core) = &mut slot.core {
                        core.accept(now, &mut self.ep, slot.store.as_mut(), h, &m);
                        // The rest of what it sent (its HAVE_MAP) goes the usual way.
                        core.handle_event(
                            now,
                            &mut self.ep,
                            slot.store.as_mut(),
                            &Event::Readable(h),
                        );
                    }
                    self.after_swarm(now, k);
                }
                _ => {
                    let code = if self.stopping.is_some() {
                        close_code::LEAVING
                    } else {
                        close_code::WRONG_SWARM
                    };
                    self.ep.close(now, h, code, b"");
                }
            }
        }
        self.rx = m;
    }

    /// Takes every event the endpoint has.
    fn drain(&mut self, now: Time) {
        while let Some(ev) = self.ep.poll_event() {
            match &ev {
                Event::Response(id, payload) => {
                    if let Some((k, t)) = self.requests.remove(id)
                        && let Some(slot) = self.slots.get_mut(k)
                    {
                        let learned = slot.trackers.handle_response(now, t, payload);
                        log::debug!(
                            "{}: tracker {t} answered: {} peers",
                            slot.spec.name,
                            learned.peers.len()
                        );
                        slot.from_trackers += learned.peers.len() as u64;
                        if self.stopping.is_none() {
                            match &mut slot.core {
                                Some(c) => {
                                    c.add_peers(&learned.peers);
                                }
                                None => slot.early_peers.extend(learned.peers),
                            }
                        }
                        // One connect per tracker serves every swarm of the node.
                        let ids = slot.trackers.take_new_ids();
                        if !ids.is_empty() {
                            for (j, other) in self.slots.iter_mut() {
                                if j != k {
                                    for &(addr, cid, at) in &ids {
                                        other.trackers.share_id(addr, cid, at);
                                    }
                                }
                            }
                        }
                        self.run_swarm(now, k);
                    }
                }
                Event::RequestFailed(id) => {
                    if let Some((k, t)) = self.requests.remove(id)
                        && let Some(slot) = self.slots.get_mut(k)
                    {
                        slot.trackers.handle_failure(now, t);
                        // A tracker that answered before and has been silent for
                        // `quiet_after` is reported too, not only one that never answered.
                        if let Some(st) = slot.trackers.status().get(t).copied() {
                            let silent_since = st.last_answer.unwrap_or(slot.added);
                            let said = slot.said_silent.get(&st.addr).copied();
                            if self.stopping.is_none()
                                && now.saturating_since(silent_since) >= self.cfg.quiet_after
                                && said.is_none_or(|w| now.saturating_since(w) >= RESAY_SILENT)
                            {
                                slot.said_silent.insert(st.addr, now);
                                self.events.push_back(NodeEvent::TrackerSilent {
                                    id: slot.spec.id,
                                    tracker: st.addr,
                                    tries: st.tries,
                                    next_in: st.next.saturating_since(now),
                                });
                            }
                        }
                        self.poll_trackers(now, k);
                        self.touch(k);
                    }
                }
                Event::Connected(h) | Event::Readable(h) | Event::Writable(h) => {
                    if let Some(&k) = self.conns.get(h) {
                        self.dispatch(now, k, &ev);
                    } else if matches!(ev, Event::Connected(_)) {
                        if self.stopping.is_some() || self.unrouted.len() >= MAX_UNROUTED {
                            self.ep.close(now, *h, close_code::FULL, b"");
                        } else {
                            self.unrouted.insert(*h, now);
                        }
                    } else if matches!(ev, Event::Readable(_)) && self.unrouted.contains_key(h) {
                        self.route_inbound(now, *h);
                    }
                }
                Event::Closed(h, _) => {
                    self.unrouted.remove(h);
                    if let Some(k) = self.conns.remove(h) {
                        self.dispatch(now, k, &ev);
                    }
                }
            }
        }
        if let Some(lan) = &mut self.lan {
            let mut found = Vec::new();
            while let Some(p) = lan.poll_peer() {
                found.push(p);
            }
            for (id, addr) in found {
                if let Some(&k) = self.by_id.get(&id)
                    && self.stopping.is_none()
                {
                    let slot = &mut self.slots[k];
                    slot.from_lan += 1;
                    match &mut slot.core {
                        Some(c) => {
                            c.add_peers(&[addr]);
                        }
                        None => slot.early_peers.push(addr),
                    }
                    self.run_swarm(now, k);
                }
            }
        }
    }

    /// Runs a swarm's peer layer (dials, rounds) and its trackers.
    fn run_swarm(&mut self, now: Time, k: usize) {
        if self.stopping.is_none()
            && let Some(slot) = self.slots.get(k)
            && slot.phase != SwarmPhase::Failed
            && slot.core.is_some()
        {
            self.allow(now, k);
            let slot = &mut self.slots[k];
            if let Some(c) = &mut slot.core {
                c.tick(now, &mut self.ep);
            }
            self.after_swarm(now, k);
        }
        self.poll_trackers(now, k);
        self.touch(k);
    }

    /// Sends the tracker requests that are due (none while the swarm checks its data: it
    /// announces once it can serve).
    fn poll_trackers(&mut self, now: Time, k: usize) {
        let Some(slot) = self.slots.get_mut(k) else {
            return;
        };
        if slot.core.is_none() && self.stopping.is_none() {
            return;
        }
        let stats = slot.stats();
        let p = Announced {
            left: slot.spec.total_length - slot.have(),
            uploaded: stats.uploaded,
            downloaded: stats.downloaded,
        };
        while let Some(out) = slot.trackers.poll_request(now, p) {
            let id = self.ep.request(now, out.to, &out.payload);
            self.requests.insert(id, (k, out.tracker));
        }
    }

    /// Re-files a swarm's deadline.
    fn touch(&mut self, k: usize) {
        let stopping = self.stopping.is_some();
        let Some(slot) = self.slots.get_mut(k) else {
            return;
        };
        let d = slot.deadline(stopping);
        if d == slot.deadline {
            return;
        }
        if let Some(t) = slot.deadline {
            self.timers.remove(&(t, k));
        }
        slot.deadline = d;
        if let Some(t) = d {
            self.timers.insert((t, k));
        }
    }

    /// A swarm's timers: its rounds, trackers, resume sync, progress and diagnostics.
    fn swarm_timeout(&mut self, now: Time, k: usize) {
        if let Some(slot) = self.slots.get(k)
            && let Some(c) = &slot.core
            && !c.is_idle()
            && c.poll_timeout() <= now
        {
            self.run_swarm(now, k);
        }
        self.poll_trackers(now, k);
        let stopping = self.stopping.is_some();
        let Some(slot) = self.slots.get_mut(k) else {
            return;
        };
        if !stopping
            && slot.phase == SwarmPhase::Running
            && slot.spec.fetch
            && !slot.syncing
            && slot.next_sync.is_some_and(|t| t <= now)
        {
            slot.next_sync = Some(now + self.cfg.sync_every);
            match slot.store.sync() {
                Ok(()) => slot.syncing = true,
                Err(e) => {
                    let msg = self.disk_error(k, &e);
                    self.fail(now, k, msg);
                }
            }
            self.poll_store(now, k);
        }
        let Some(slot) = self.slots.get_mut(k) else {
            return;
        };
        if !stopping && slot.next_progress.is_some_and(|t| t <= now) {
            let stats = slot.stats();
            let secs = self.cfg.progress_every.as_secs_f64().max(1e-3);
            let (d, u) = (
                stats.downloaded.saturating_sub(slot.last.0),
                stats.uploaded.saturating_sub(slot.last.1),
            );
            slot.last = (stats.downloaded, stats.uploaded);
            let busy = d > 0 || u > 0 || slot.phase != SwarmPhase::Complete;
            self.events.push_back(NodeEvent::Progress(Progress {
                id: slot.spec.id,
                have: slot.have(),
                total: slot.spec.total_length,
                down_rate: (d as f64 / secs) as u64,
                up_rate: (u as f64 / secs) as u64,
                peers: slot.core.as_ref().map_or(0, SwarmCore::peer_count),
                uploaded: stats.uploaded,
                found: Found {
                    trackers: slot.from_trackers,
                    lan: slot.from_lan,
                    dht: slot.from_dht,
                    pex: stats.pex_learned,
                },
            }));
            // A complete swarm that moved nothing reports again only once it is busy.
            slot.next_progress = busy.then_some(now + self.cfg.progress_every);
        }
        if !stopping && slot.quiet_check.is_some_and(|t| t <= now) {
            slot.quiet_check = None;
            let id = slot.spec.id;
            for t in slot.trackers.status() {
                if !t.answered && !slot.said_silent.contains_key(&t.addr) {
                    slot.said_silent.insert(t.addr, now);
                    self.events.push_back(NodeEvent::TrackerSilent {
                        id,
                        tracker: t.addr,
                        tries: t.tries,
                        next_in: t.next.saturating_since(now),
                    });
                }
            }
            let found_none = slot.core.as_ref().is_some_and(|c| {
                c.peer_count() == 0 && c.stats().pex_learned == 0 && !c.complete()
            }) && slot.from_trackers == 0
                && slot.from_lan == 0
                && slot.from_dht == 0;
            if found_none && slot.phase == SwarmPhase::Running {
                let trackers = match slot.spec.trackers.len() {
                    0 => "no tracker in the .st file".to_owned(),
                    n => format!(
                        "{n} tracker(s): {} answered, 0 peers",
                        slot.trackers.status().iter().filter(|t| t.answered).count()
                    ),
                };
                let lan = match &self.lan {
                    None => "LAN discovery off".to_owned(),
                    Some(l) => format!(
                        "LAN: {} announces sent, {} heard, none for this swarm",
                        l.stats().sent,
                        l.stats().received
                    ),
                };
                let dht = match (&self.dht, slot.spec.private) {
                    (_, true) => "DHT: not used (private swarm)".to_owned(),
                    (None, _) => "DHT off".to_owned(),
                    (Some(d), _) => format!(
                        "DHT: {} nodes in the routing table, {} searches answered, 0 peers",
                        d.nodes(),
                        slot.dht_searches.0
                    ),
                };
                self.events.push_back(NodeEvent::NoPeers {
                    id,
                    sources: format!("{trackers}; {lan}; {dht}; peer exchange: no peer to ask"),
                });
            }
        }
        self.touch(k);
    }

    /// Ends the stop sequence once nothing is left to wait for.
    fn check_stopped(&mut self, now: Time) {
        let Some(since) = self.stopping else {
            return;
        };
        if self.stopped {
            return;
        }
        let disk_busy = self
            .slots
            .iter()
            .any(|(_, s)| s.syncing || s.phase == SwarmPhase::Finishing);
        let trackers_done = self.slots.iter().all(|(_, s)| s.trackers.stopped());
        let grace_over = now.saturating_since(since) >= self.cfg.stop_grace;
        if !disk_busy && (trackers_done || grace_over) {
            self.stopped = true;
            self.events.push_back(NodeEvent::Stopped);
        }
    }

    /// Closes inbound connections that never named a swarm.
    fn expire_unrouted(&mut self, now: Time) {
        let limit = self.cfg.handshake_timeout;
        let old: Vec<ConnHandle> = self
            .unrouted
            .iter()
            .filter(|(_, t)| now.saturating_since(**t) >= limit)
            .map(|(h, _)| *h)
            .collect();
        for h in old {
            self.unrouted.remove(&h);
            self.ep.close(now, h, close_code::VIOLATION, b"");
        }
    }
}

impl Core for PeerNode {
    fn handle(&mut self, now: Time, remote: SocketAddr, data: &[u8]) {
        // spec/dht.md §3: a bencoded dictionary is the DHT's; ours start with "ST".
        if data.first() == Some(&b'd') {
            if let Some(d) = &mut self.dht {
                d.handle(now, remote, data);
                self.drain_dht(now);
            }
            return;
        }
        self.ep.handle(now, remote, data);
        // The node takes what arrived at once, while it is in cache and before the next
        // datagram: messages do not pile up in the connections' buffers.
        self.drain(now);
        self.check_stopped(now);
    }

    fn poll_transmit(&mut self, now: Time, buf: &mut [u8]) -> Option<Transmit> {
        if let Some(d) = &mut self.dht
            && let Some(t) = d.poll_transmit(now, buf)
        {
            return Some(t);
        }
        self.ep.poll_transmit(now, buf)
    }

    fn poll_timeout(&self) -> Option<Time> {
        if self.stopped {
            return self.ep.poll_timeout();
        }
        let mut d = self.ep.poll_timeout();
        let mut at = |t: Option<Time>| {
            if let Some(t) = t {
                d = Some(d.map_or(t, |x: Time| x.min(t)));
            }
        };
        at(self.timers.first().map(|(t, _)| *t));
        at(self.lan.as_ref().and_then(LanDiscovery::poll_timeout));
        if self.stopping.is_none() {
            at(self.dht.as_ref().and_then(DhtNode::poll_timeout));
        }
        at(self.refill_at);
        at(self
            .unrouted
            .values()
            .min()
            .map(|t| *t + self.cfg.handshake_timeout));
        if !self.grace_over {
            at(self.stopping.map(|t| t + self.cfg.stop_grace));
        }
        d
    }

    fn handle_timeout(&mut self, now: Time) {
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
        if let Some(lan) = &mut self.lan
            && lan.poll_timeout().is_some_and(|t| t <= now)
        {
            lan.handle_timeout(now);
        }
        if !self.unrouted.is_empty() {
            self.expire_unrouted(now);
        }
        if self.stopping.is_none()
            && let Some(d) = &mut self.dht
            && d.poll_timeout().is_some_and(|t| t <= now)
        {
            d.handle_timeout(now);
            self.drain_dht(now);
        }
        if self.refill_at.is_some_and(|t| t <= now) {
            self.refill_at = None;
            for k in std::mem::take(&mut self.throttled) {
                self.allow(now, k);
                if let Some(slot) = self.slots.get_mut(k)
                    && let Some(c) = &mut slot.core
                    && self.stopping.is_none()
                {
                    c.resume(now, &mut self.ep, slot.store.as_mut());
                    self.after_swarm(now, k);
                }
            }
        }
        while let Some(&(t, k)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, k));
            if let Some(s) = self.slots.get_mut(k) {
                s.deadline = None;
            }
            self.swarm_timeout(now, k);
        }
        if self
            .stopping
            .is_some_and(|t| now >= t + self.cfg.stop_grace)
        {
            self.grace_over = true;
        }
        self.drain(now);
        self.check_stopped(now);
    }

    fn handle_multicast(&mut self, now: Time, remote: SocketAddr, data: &[u8]) {
        if let Some(lan) = &mut self.lan {
            lan.handle(now, remote, data);
            self.drain(now);
        }
    }

    fn poll_multicast(&mut self, now: Time, buf: &mut [u8]) -> Option<Transmit> {
        self.lan.as_mut()?.poll_transmit(now, buf)
    }

    fn handle_wake(&mut self, now: Time) {
        let keys: Vec<usize> = self.slots.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.poll_store(now, k);
        }
        self.drain(now);
        self.check_stopped(now);
    }
}
