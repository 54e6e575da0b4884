//! Whole peer processes in the simulator: production `PeerNode`s, the production tracker core
//! and LAN discovery over simulated multicast, with trackers that are unreachable at first,
//! several swarms across nodes, rate limits, disk faults and crash-restarts. The oracle is
//! identical bytes, plus what each scenario promises (no data fetched twice after a restart,
//! one error on a full disk, a seed that keeps serving past a bad read).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use st_engine::discovery::lan::LanConfig;
use st_engine::driver::Core;
use st_engine::node::{NodeConfig, NodeEvent, PeerNode, SwarmPhase, SwarmSpec};
use st_engine::peer::swarm::SwarmConfig;
use st_engine::rng::Rng;
use st_engine::sim::{LinkConfig, NodeId, PipeConfig, Sim, for_seeds};
use st_engine::storage::SwarmStore;
use st_engine::storage::mem::{Faults, Faulty, MemStore, Shared};
use st_engine::time::Time;
use st_engine::tracker::server::TrackerCore;
use st_engine::tracker::{Config as TrackerConfig, Tracker};

const FRAG: u32 = 16 * 1024;

type Store = Shared<Faulty<MemStore>>;

struct SwarmData {
    id: [u8; 32],
    data: Vec<u8>,
    full: MemStore,
}

struct Peer {
    id: NodeId,
    cfg: NodeConfig,
    /// (swarm index, store) for every swarm of the node.
    stores: Vec<(usize, Store)>,
    events: Vec<NodeEvent>,
    restarts: u64,
}

struct World {
    sim: Sim,
    /// The clock a slow store reads (see `Faults::slow_verify`).
    clock: Rc<Cell<Time>>,
    rng: Rng,
    tracker: Option<SocketAddr>,
    /// Trackers listed before the real one that never answer (no node has the address).
    dead_trackers: Vec<SocketAddr>,
    lan: bool,
    swarms: Vec<SwarmData>,
    peers: Vec<Peer>,
}

fn group() -> SocketAddr {
    LanConfig::default().groups[0]
}

fn quiet_pipe() -> PipeConfig {
    PipeConfig {
        latency: Duration::from_millis(5),
        ..PipeConfig::default()
    }
}

impl World {
    fn new(seed: u64, pipe: PipeConfig, tracker: bool, lan: bool) -> World {
        let mut sim = Sim::new(seed, pipe);
        let tracker = tracker.then(|| {
            let addr = sim.next_addr();
            let now = sim.now();
            let t = TrackerCore::new(
                Tracker::new(
                    TrackerConfig {
                        interval_secs: 30,
                        ..TrackerConfig::default()
                    },
                    seed,
                ),
                now,
                Duration::from_secs(60),
            );
            sim.add_core(t);
            addr
        });
        World {
            clock: Rc::new(Cell::new(sim.now())),
            sim,
            rng: Rng::new(seed ^ 0x5157),
            tracker,
            dead_trackers: Vec::new(),
            lan,
            swarms: Vec::new(),
            peers: Vec::new(),
        }
    }

    fn tracker_node(&self) -> NodeId {
        NodeId(0)
    }

    /// A swarm of `len` random bytes.
    fn swarm(&mut self, len: usize) -> usize {
        let mut data = vec![0u8; len];
        self.rng.fill(&mut data);
        let mut id = [0u8; 32];
        self.rng.fill(&mut id);
        let full = MemStore::full(&data, FRAG);
        self.swarms.push(SwarmData { id, data, full });
        self.swarms.len() - 1
    }

    fn spec(&self, s: usize, fetch: bool, unrecorded_data: bool) -> SwarmSpec {
        SwarmSpec {
            id: self.swarms[s].id,
            name: format!("swarm{s}"),
            total_length: self.swarms[s].data.len() as u64,
            fragment_length: FRAG,
            trackers: self
                .dead_trackers
                .iter()
                .copied()
                .chain(self.tracker)
                .collect(),
            fetch,
            unrecorded_data,
            private: false,
        }
    }

    fn node_cfg(&mut self, addr: SocketAddr) -> NodeConfig {
        let mut peer_id = [0u8; 16];
        self.rng.fill(&mut peer_id);
        NodeConfig {
            peer_id,
            port: addr.port(),
            swarm: SwarmConfig {
                block: 16 * 1024,
                min_outstanding: 64 * 1024,
                ..SwarmConfig::default()
            },
            lan: self.lan.then(|| LanConfig {
                groups: vec![group()],
                ..LanConfig::default()
            }),
            sync_every: Duration::from_secs(1),
            seed: self.rng.next_u64(),
            ..NodeConfig::default()
        }
    }

    /// A node seeding `seeds` and fetching `fetches`; `tweak` adjusts its settings.
    fn node(
        &mut self,
        seeds: &[usize],
        fetches: &[usize],
        tweak: impl FnOnce(&mut NodeConfig),
    ) -> usize {
        self.node_with(seeds, fetches, tweak, |_| Faults::default())
    }

    fn node_with(
        &mut self,
        seeds: &[usize],
        fetches: &[usize],
        tweak: impl FnOnce(&mut NodeConfig),
        faults: impl Fn(usize) -> Faults,
    ) -> usize {
        let addr = self.sim.next_addr();
        let mut cfg = self.node_cfg(addr);
        tweak(&mut cfg);
        let now = self.sim.now();
        let mut node = PeerNode::new(cfg.clone(), now);
        let mut stores = Vec::new();
        for (&s, fetch) in seeds
            .iter()
            .map(|s| (s, false))
            .chain(fetches.iter().map(|s| (s, true)))
        {
            let inner = if fetch {
                MemStore::empty_like(&self.swarms[s].full)
            } else {
                self.swarms[s].full.clone()
            };
            let store: Store = Shared::new(Faulty::new(inner, faults(s)));
            node.add_swarm(now, self.spec(s, fetch, false), Box::new(store.clone()))
                .unwrap();
            stores.push((s, store));
        }
        let id = self.sim.add_core(node);
        if self.lan {
            self.sim.join_group(id, group());
        }
        self.peers.push(Peer {
            id,
            cfg,
            stores,
            events: Vec::new(),
            restarts: 0,
        });
        self.peers.len() - 1
    }

    fn peer(&self, k: usize) -> Option<&PeerNode> {
        self.sim.core_ref::<PeerNode>(self.peers[k].id)
    }

    /// Runs the network for `d`, collecting every node's events.
    fn run_for(&mut self, d: Duration) {
        let end = self.sim.now() + d;
        while self.sim.now() < end {
            let limit = (self.sim.now() + Duration::from_millis(50)).min(end);
            while self.sim.step(limit) {}
            self.collect();
        }
    }

    fn collect(&mut self) {
        let now = self.sim.now();
        self.clock.set(now);
        for p in &mut self.peers {
            if let Some(n) = self.sim.core::<PeerNode>(p.id) {
                // What a disk thread's wake does: the node takes the stores' late results.
                n.handle_wake(now);
                while let Some(ev) = n.poll_event() {
                    p.events.push(ev);
                }
            }
        }
    }

    /// Runs until `done` or `limit`; true if `done` held.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&World) -> bool) -> bool {
        let end = self.sim.now() + limit;
        while self.sim.now() < end {
            if done(self) {
                return true;
            }
            self.run_for(Duration::from_millis(100));
        }
        done(self)
    }

    fn complete(&self, k: usize, s: usize) -> bool {
        self.peer(k)
            .and_then(|n| n.phase(&self.swarms[s].id))
            .is_some_and(|p| p == SwarmPhase::Complete)
    }

    fn all_complete(&self) -> bool {
        (0..self.peers.len()).all(|k| {
            self.peers[k]
                .stores
                .iter()
                .all(|(s, _)| self.complete(k, *s))
        })
    }

    fn store(&self, k: usize, s: usize) -> &Store {
        &self.peers[k]
            .stores
            .iter()
            .find(|(x, _)| *x == s)
            .expect("node has the swarm")
            .1
    }

    fn assert_identical(&self, k: usize, s: usize) {
        let store = self.store(k, s).0.borrow();
        assert!(
            store.inner().data == self.swarms[s].data,
            "node {k} swarm {s}: different bytes"
        );
    }

    /// Kills node `k` (kill -9): it forgets what its resume state does not record.
    fn crash(&mut self, k: usize) {
        self.sim.crash(self.peers[k].id);
        for (_, st) in &self.peers[k].stores {
            st.0.borrow_mut().inner_mut().crash();
        }
    }

    /// Restarts node `k` as `st fetch` would: a new process that checks what is on disk but
    /// unrecorded before trusting it.
    fn restart(&mut self, k: usize) {
        let now = self.sim.now();
        let mut cfg = self.peers[k].cfg.clone();
        self.rng.fill(&mut cfg.peer_id);
        cfg.seed = self.rng.next_u64();
        let mut node = PeerNode::new(cfg, now);
        for (s, st) in &self.peers[k].stores {
            let n = self.swarms[*s].data.len().div_ceil(FRAG as usize) as u32;
            let fetch = (0..n).any(|i| !st.is_verified(i));
            node.add_swarm(now, self.spec(*s, fetch, true), Box::new(st.clone()))
                .unwrap();
        }
        self.sim.restart_with(self.peers[k].id, node);
        self.peers[k].restarts += 1;
    }

    fn downloaded(&self, k: usize, s: usize) -> u64 {
        self.peer(k)
            .and_then(|n| n.swarm(&self.swarms[s].id))
            .map_or(0, |c| c.stats().downloaded)
    }
}

fn recorded_bytes(st: &Store, len: usize) -> u64 {
    let s = st.0.borrow();
    let n = len.div_ceil(FRAG as usize) as u32;
    (0..n)
        .filter(|&i| s.inner().recorded(i))
        .map(|i| (len as u64 - u64::from(i) * u64::from(FRAG)).min(u64::from(FRAG)))
        .sum()
}

/// One seed and three fetchers of `len` bytes, found through a tracker and/or the LAN; all
/// end with identical bytes.
fn one_seed_three_fetchers(seed: u64, tracker: bool, lan: bool, len: usize) -> World {
    let mut w = World::new(seed, quiet_pipe(), tracker, lan);
    let s = w.swarm(len);
    w.node(&[s], &[], |_| {});
    for _ in 0..3 {
        w.node(&[], &[s], |_| {});
    }
    assert!(
        w.run_until(Duration::from_secs(60), World::all_complete),
        "seed {seed}: not complete"
    );
    for k in 1..4 {
        w.assert_identical(k, s);
    }
    w
}

#[test]
fn a_tracker_alone_brings_the_swarm_together() {
    for_seeds(&[1, 2], |seed| {
        let w = one_seed_three_fetchers(seed, true, false, 300_000);
        assert!(w.peer(1).unwrap().lan().is_none());
    });
}

#[test]
fn lan_discovery_alone_brings_the_swarm_together() {
    for_seeds(&[3, 4], |seed| {
        let w = one_seed_three_fetchers(seed, false, true, 200_000);
        let lan = w.peer(1).unwrap().lan().unwrap().stats();
        assert!(lan.found > 0, "peers were found on the LAN: {lan:?}");
    });
}

#[test]
fn a_tracker_unreachable_at_start_is_reported_and_used_once_it_answers() {
    let mut w = World::new(5, quiet_pipe(), true, false);
    let s = w.swarm(100_000);
    w.node(&[s], &[], |_| {});
    w.node(&[], &[s], |_| {});
    let t = w.tracker_node();
    let others: Vec<NodeId> = w.peers.iter().map(|p| p.id).collect();
    let until = w.sim.now() + Duration::from_secs(40);
    let now = w.sim.now();
    w.sim.partition(&[t], &others, now, until);
    w.run_for(Duration::from_secs(35));
    assert!(!w.complete(1, s), "nothing to find without the tracker");
    let silent = w.peers[1]
        .events
        .iter()
        .find_map(|e| match e {
            NodeEvent::TrackerSilent { tracker, tries, .. } => Some((*tracker, *tries)),
            _ => None,
        })
        .expect("the silent tracker is reported after 30 s");
    assert_eq!(Some(silent.0), w.tracker);
    assert!(silent.1 >= 1);
    assert!(
        w.peers[1].events.iter().any(
            |e| matches!(e, NodeEvent::NoPeers { sources, .. } if sources.contains("tracker"))
        ),
        "no peer is reported, naming the sources"
    );
    assert!(
        w.run_until(Duration::from_secs(120), |w| w.complete(1, s)),
        "complete once the tracker answers"
    );
    w.assert_identical(1, s);
}

/// A `.st` file whose first tracker never answers: the fetch neither waits for it to find
/// peers (the trackers are asked at once) nor to leave (it was never told anything), so the
/// time and rate it reports are those of the transfer (spec `tracker.md` §3, `peer.md` §8.1).
#[test]
fn a_dead_first_tracker_delays_neither_the_fetch_nor_its_exit() {
    let mut w = World::new(15, quiet_pipe(), true, false);
    w.dead_trackers = vec!["10.200.0.1:6969".parse().unwrap()];
    let s = w.swarm(100_000);
    w.node(&[s], &[], |_| {});
    w.node(&[], &[s], |c| c.stop_when_complete = true);
    let start = w.sim.now();
    assert!(
        w.run_until(Duration::from_secs(30), |w| w
            .peer(1)
            .is_some_and(|n| n.is_stopped())),
        "the fetch stops once complete"
    );
    let took = w.sim.now().saturating_since(start);
    let elapsed = w.peers[1]
        .events
        .iter()
        .find_map(|e| match e {
            NodeEvent::Complete { elapsed, .. } => Some(*elapsed),
            _ => None,
        })
        .expect("complete");
    // The retries of the dead tracker take 250 ms + 500 ms + 1 s + 2 s.
    assert!(
        elapsed < Duration::from_millis(500),
        "the transfer waited for the dead tracker: {elapsed:?}"
    );
    assert!(
        took < elapsed + Duration::from_millis(800),
        "the exit waited for the dead tracker: complete after {elapsed:?}, stopped after {took:?}"
    );
    w.assert_identical(1, s);
}

#[test]
fn a_tracker_that_falls_silent_later_is_reported() {
    let mut w = World::new(12, quiet_pipe(), true, false);
    let s = w.swarm(100_000);
    w.node(&[s], &[], |_| {});
    w.run_for(Duration::from_secs(5));
    assert!(
        !w.peers[0]
            .events
            .iter()
            .any(|e| matches!(e, NodeEvent::TrackerSilent { .. })),
        "the tracker answers at first"
    );
    // The tracker goes away for ten minutes: the seed's re-announces fail.
    let t = w.tracker_node();
    let me = w.peers[0].id;
    let now = w.sim.now();
    w.sim
        .partition(&[t], &[me], now, now + Duration::from_secs(600));
    w.run_for(Duration::from_secs(400));
    let silent = w.peers[0]
        .events
        .iter()
        .filter(|e| matches!(e, NodeEvent::TrackerSilent { .. }))
        .count();
    assert_eq!(silent, 1, "reported once, not at every failure");
}

#[test]
fn three_swarms_across_six_nodes_share_peers_and_one_port() {
    for_seeds(&[6, 7], |seed| {
        let mut w = World::new(seed, quiet_pipe(), true, true);
        let (a, b, c) = (w.swarm(150_000), w.swarm(90_000), w.swarm(120_000));
        w.node(&[a, b], &[], |_| {});
        w.node(&[c], &[], |_| {});
        w.node(&[], &[a, c], |_| {});
        w.node(&[], &[b, c], |_| {});
        w.node(&[], &[a, b, c], |_| {});
        w.node(&[], &[a], |_| {});
        assert!(
            w.run_until(Duration::from_secs(120), World::all_complete),
            "seed {seed}: not all complete"
        );
        for k in 2..6 {
            for (s, _) in w.peers[k].stores.clone() {
                w.assert_identical(k, s);
            }
        }
        // Each node served all its swarms through one endpoint (one address).
        let n4 = w.peer(4).unwrap();
        assert_eq!(n4.swarm_count(), 3);
        assert!(
            w.peers[4]
                .events
                .iter()
                .filter(|e| matches!(e, NodeEvent::Complete { .. }))
                .count()
                == 3
        );
    });
}

/// Bytes over `secs` seconds, measured from `start`, against `rate` bytes per second.
fn within(measured: u64, rate: u64, secs: u64, tolerance: f64) -> bool {
    let want = (rate * secs) as f64;
    (measured as f64 - want).abs() <= tolerance * want
}

#[test]
fn rate_limits_hold_within_five_percent_over_twenty_seconds() {
    let mut w = World::new(8, quiet_pipe(), true, false);
    let s = w.swarm(40 << 20);
    let up = 512 * 1024;
    let down = 384 * 1024;
    // An upload-limited seed and a fetcher; a download-limited fetcher of another seed.
    w.node(&[s], &[], |c| c.max_upload = Some(up));
    w.node(&[], &[s], |_| {});
    let t = w.swarms[s].data.len();
    let s2 = w.swarm(t);
    w.node(&[s2], &[], |_| {});
    w.node(&[], &[s2], |c| c.max_download = Some(down));
    // Warm up, then measure 20 s.
    w.run_for(Duration::from_secs(5));
    let up0 = w
        .peer(0)
        .unwrap()
        .swarm(&w.swarms[s].id)
        .unwrap()
        .stats()
        .uploaded;
    let down0 = w.downloaded(3, s2);
    w.run_for(Duration::from_secs(20));
    let sent = w
        .peer(0)
        .unwrap()
        .swarm(&w.swarms[s].id)
        .unwrap()
        .stats()
        .uploaded
        - up0;
    let got = w.downloaded(3, s2) - down0;
    assert!(
        within(sent, up, 20, 0.05),
        "upload {sent} B in 20 s against {} B",
        up * 20
    );
    assert!(
        within(got, down, 20, 0.05),
        "download {got} B in 20 s against {} B",
        down * 20
    );
}

#[test]
fn a_full_disk_stops_the_fetch_with_one_error_and_the_rerun_fetches_only_the_rest() {
    let mut w = World::new(9, quiet_pipe(), true, false);
    let s = w.swarm(400_000);
    let len = w.swarms[s].data.len();
    w.node(&[s], &[], |_| {});
    let k = w.node_with(
        &[],
        &[s],
        |c| c.stop_on_failure = true,
        |_| Faults {
            space: Some(len as u64 / 2),
            ..Faults::default()
        },
    );
    assert!(
        w.run_until(Duration::from_secs(60), |w| w.peers[k]
            .events
            .contains(&NodeEvent::Stopped)),
        "the node stops"
    );
    let errors: Vec<&NodeEvent> = w.peers[k]
        .events
        .iter()
        .filter(|e| matches!(e, NodeEvent::Failed { .. }))
        .collect();
    assert_eq!(errors.len(), 1, "one error: {errors:?}");
    let NodeEvent::Failed { message, .. } = errors[0] else {
        unreachable!()
    };
    assert!(message.contains("kept"), "it says what is kept: {message}");
    let kept = recorded_bytes(w.store(k, s), len);
    assert!(
        kept > 0 && (kept as usize) < len,
        "some fragments recorded: {kept}"
    );
    // The recorded fragments are the right bytes.
    {
        let st = w.store(k, s).0.borrow();
        for i in 0..len.div_ceil(FRAG as usize) {
            if st.inner().recorded(i as u32) {
                let r = i * FRAG as usize..((i + 1) * FRAG as usize).min(len);
                assert!(st.inner().data[r.clone()] == w.swarms[s].data[r]);
            }
        }
    }
    // Room again: a new process fetches only what was not recorded.
    w.crash(k);
    w.store(k, s).0.borrow_mut().faults = Faults::default();
    w.restart(k);
    assert!(w.run_until(Duration::from_secs(60), |w| w.complete(k, s)));
    w.assert_identical(k, s);
    assert!(
        w.downloaded(k, s) <= len as u64 - kept,
        "fetched {} again; {kept} of {len} were kept",
        w.downloaded(k, s)
    );
}

#[test]
fn a_bad_read_while_serving_skips_the_block_and_the_seed_serves_on() {
    let mut w = World::new(10, quiet_pipe(), true, false);
    let s = w.swarm(300_000);
    // Seed 0 cannot read fragment 2. Alone, it is asked for it (which seed of two the
    // fetcher asks for a fragment is a draw).
    w.node_with(
        &[s],
        &[],
        |_| {},
        |_| Faults {
            bad_reads: vec![2],
            ..Faults::default()
        },
    );
    let f = w.node(&[], &[s], |_| {});
    assert!(
        w.run_until(Duration::from_secs(60), |w| w
            .store(0, s)
            .0
            .borrow()
            .failed_reads
            > 0),
        "the faulty seed was asked for fragment 2"
    );
    assert!(!w.complete(f, s));
    // Seed 1 can read it: the fetch completes.
    w.node(&[s], &[], |_| {});
    assert!(w.run_until(Duration::from_secs(60), |w| w.complete(f, s)));
    w.assert_identical(f, s);
    let fetcher = w.peer(f).unwrap().swarm(&w.swarms[s].id).unwrap();
    assert_eq!(
        fetcher.stats().hash_failures,
        0,
        "nothing bad was delivered"
    );
    assert!(
        !w.peers[0]
            .events
            .iter()
            .any(|e| matches!(e, NodeEvent::Failed { .. })),
        "a read error does not stop the seed"
    );
    // The faulty seed stays in the swarm: a new fetcher completes, and the seed still holds
    // connections (the read error closed none of them).
    let g = w.node(&[], &[s], |_| {});
    assert!(w.run_until(Duration::from_secs(60), |w| w.complete(g, s)));
    assert!(
        w.peer(0)
            .unwrap()
            .swarm(&w.swarms[s].id)
            .unwrap()
            .peer_count()
            > 0
    );
}

#[test]
fn a_slow_disk_does_not_hold_the_network_back() {
    let mut w = World::new(11, quiet_pipe(), true, false);
    let s = w.swarm(400_000);
    let len = w.swarms[s].data.len() as u64;
    w.node(&[s], &[], |_| {});
    let clock = Rc::clone(&w.clock);
    // Every check of the fetcher's disk takes 3 s.
    let f = w.node_with(
        &[],
        &[s],
        |_| {},
        move |_| Faults {
            slow_verify: Some((Duration::from_secs(3), Rc::clone(&clock))),
            ..Faults::default()
        },
    );
    let (seed_id, fetch_id) = (w.peers[0].id, w.peers[f].id);
    let pipe = w.sim.pipe_of(seed_id, fetch_id);
    w.run_for(Duration::from_millis(1500));
    // The blocks kept coming while no check had answered yet.
    let delivered = w.sim.pipe_stats(pipe).delivered_bytes;
    assert!(
        delivered >= len,
        "only {delivered} of {len} B arrived while the disk was busy"
    );
    assert_eq!(w.downloaded(f, s), 0, "nothing verified yet");
    assert!(w.run_until(Duration::from_secs(60), |w| w.complete(f, s)));
    w.assert_identical(f, s);
}

#[test]
fn a_slow_disk_read_holds_back_only_the_blocks_it_reads() {
    let mut w = World::new(12, quiet_pipe(), true, false);
    let (slow, quick) = (w.swarm(200_000), w.swarm(200_000));
    let clock = Rc::clone(&w.clock);
    // One node seeds both swarms; every read of one of them takes 2 s.
    w.node_with(
        &[slow, quick],
        &[],
        |_| {},
        move |s| Faults {
            slow_reads: (s == slow).then(|| (Duration::from_secs(2), Rc::clone(&clock))),
            ..Faults::default()
        },
    );
    let f_slow = w.node(&[], &[slow], |_| {});
    let f_quick = w.node(&[], &[quick], |_| {});
    // The other swarm of the node is served in full while no read of the slow one is done.
    assert!(w.run_until(Duration::from_millis(1900), |w| w.complete(f_quick, quick)));
    assert_eq!(
        w.downloaded(f_slow, slow),
        0,
        "sent before its read was done"
    );
    // The reads come back (through the store's results, as from a disk thread) and are sent.
    assert!(w.run_until(Duration::from_secs(60), |w| w.complete(f_slow, slow)));
    w.assert_identical(f_slow, slow);
    w.assert_identical(f_quick, quick);
}

/// The randomized whole-process scenario: fault knobs drawn from the seed (loss, latency,
/// link rates, swarm sizes, discovery), a crash and restart of a fetcher at a random moment.
/// Afterwards every node holds identical bytes, the restarted node fetched nothing it had
/// recorded, and nothing it had not verified was trusted. `ST_SIM_SEEDS` adds seeds.
#[test]
fn randomized_whole_processes_with_crash_restart() {
    let base: Vec<u64> = (100..200).collect();
    for_seeds(&base, |seed| {
        let mut r = Rng::new(seed);
        let pipe = PipeConfig {
            latency: Duration::from_millis(1 + r.below(40)),
            jitter: Duration::from_millis(r.below(5)),
            loss: r.below(3) as f64 / 100.0,
            duplicate: r.below(2) as f64 / 100.0,
            ..PipeConfig::default()
        };
        let (tracker, lan) = match r.below(3) {
            0 => (true, false),
            1 => (false, true),
            _ => (true, true),
        };
        let mut w = World::new(seed, pipe, tracker, lan);
        let len = 256 * 1024 + r.below(768 * 1024) as usize;
        let s = w.swarm(len);
        let fetchers = 2 + r.below(3) as usize;
        w.node(&[s], &[], |_| {});
        for _ in 0..fetchers {
            w.node(&[], &[s], |_| {});
        }
        // Every uplink limited (the seed's most), so that the crash falls mid-transfer.
        for p in 0..w.peers.len() {
            let id = w.peers[p].id;
            let mbit = if p == 0 {
                2 + r.below(6)
            } else {
                2 + r.below(20)
            };
            w.sim.set_uplink(
                id,
                Some(LinkConfig {
                    rate_bps: mbit * 1_000_000,
                    queue_bytes: 64 * 1024,
                    overhead_bytes: 0,
                }),
            );
        }
        let victim = 1 + r.below(fetchers as u64) as usize;
        w.run_for(Duration::from_millis(300 + r.below(1500)));
        w.crash(victim);
        let kept = recorded_bytes(w.store(victim, s), len);
        w.run_for(Duration::from_millis(r.below(2000)));
        w.restart(victim);
        let done = w.run_until(Duration::from_secs(180), World::all_complete);
        let now = w.sim.now();
        assert!(done, "seed {seed}: not complete by {now:?}");
        for k in 1..=fetchers {
            w.assert_identical(k, s);
        }
        assert!(
            w.downloaded(victim, s) <= len as u64 - kept,
            "seed {seed}: the restarted node fetched {} B; {kept} of {len} B were recorded",
            w.downloaded(victim, s)
        );
    });
}

/// The peer layer's close codes are application codes, above the transport's own (spec
/// peer.md §6, transport.md §7.1): a connection naming a swarm the node does not serve is
/// closed with 0x102, not 2 (FLOW_CONTROL_ERROR).
#[test]
fn a_wrong_swarm_is_closed_with_an_application_code() {
    use st_engine::transport::{CloseReason, Config, Event};
    use st_proto::peer::{Handshake, Message, PEER_VERSION, to_vec};
    let mut w = World::new(3, quiet_pipe(), false, false);
    let s = w.swarm(100_000);
    let seed = w.node(&[s], &[], |_| {});
    let seed_addr = w.sim.addr(w.peers[seed].id);
    let client = w.sim.add_node(Config::default());
    let now = w.sim.now();
    let h = w.sim.endpoint(client).unwrap().connect(now, seed_addr);
    let hs = Handshake {
        version: PEER_VERSION,
        capabilities: 0.into(),
        swarm_id: [0xee; 32],
        peer_id: [1; 16],
        listen_port: 0.into(),
    };
    let msg = to_vec(&Message::Handshake(&hs));
    let mut sent = false;
    let mut code = None;
    let until = w.sim.now() + Duration::from_secs(5);
    while code.is_none() && w.sim.now() < until {
        let to = w.sim.now() + Duration::from_millis(10);
        while w.sim.step(to) {}
        let ep = w.sim.endpoint(client).unwrap();
        while let Some(ev) = ep.poll_event() {
            match ev {
                Event::Connected(c) if c == h && !sent => {
                    ep.send(h, &msg).unwrap();
                    sent = true;
                }
                Event::Closed(c, CloseReason::Peer { code: x, .. }) if c == h => code = Some(x),
                _ => {}
            }
        }
    }
    assert_eq!(code, Some(0x102));
}
