//! Whole swarms in the simulator: one [`PeerNode`] per simulated process, each in a swarm of
//! the same data, with a stand-in tracker (peers told of each other), joins, leaves and
//! crash-restarts, for the peer layer's simulation tests and the swarm benchmark
//! (`engine/examples/swarm_sim.rs`).
//!
//! The nodes are the production peer node, hosted by [`Sim`] like any core: nothing here
//! drives a swarm itself. A node's bytes live in a [`Shared`] store that outlives a crash;
//! [`MemStore`] keeps them, [`SyntheticStore`] keeps none (so a benchmark of gigabytes needs
//! no memory). It reads no clock.

use std::net::SocketAddr;
use std::time::Duration;

use super::{NodeId, Sim};
use crate::node::{NodeConfig, PeerNode, SwarmPhase, SwarmSpec};
use crate::peer::swarm::{SwarmConfig, SwarmCore};
pub use crate::storage::mem::{MemStore, Shared, SimStore, SyntheticStore};
use crate::time::Time;
use crate::transport::Config;

/// Where a node of a [`SimSwarm`] is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Running.
    Up,
    /// Stopping (since then); it goes down after [`SimSwarm::leave_grace`].
    Leaving(Time),
    /// Gone (left or crashed): no process, datagrams to it vanish.
    Down,
}

/// One node of a [`SimSwarm`].
pub struct SwarmNode<S> {
    /// Its simulator node.
    pub id: NodeId,
    /// Its data, kept across crash and restart.
    pub store: Shared<S>,
    /// Where it is in its life.
    pub phase: Phase,
    /// When its current process first reported completion.
    pub completed_at: Option<Time>,
    /// Times it was restarted.
    pub restarts: u64,
}

/// A swarm of [`PeerNode`]s in a [`Sim`].
pub struct SimSwarm<S> {
    /// The network.
    pub sim: Sim,
    /// The nodes, in the order added.
    pub nodes: Vec<SwarmNode<S>>,
    /// Virtual time between two looks of the test loop (completion, the stand-in tracker).
    pub quantum: Duration,
    /// How long a leaving node keeps running to close its connections.
    pub leave_grace: Duration,
    /// How often the stand-in tracker tells every live node of every other live node
    /// (`None`: only at join).
    pub announce_every: Option<Duration>,
    /// Settings of every node made from now on (peer id, port, swarm and transport settings
    /// are filled in per node).
    pub node: NodeConfig,
    next_announce: Time,
    swarm_id: [u8; 32],
    total: u64,
    fragment_length: u32,
    seed: u64,
    cores_made: u64,
}

impl<S: SimStore + 'static> SimSwarm<S> {
    /// A swarm of `total` bytes in fragments of `fragment_length` over `sim`; every node gets
    /// `cfg` and the transport `transport`.
    pub fn new(
        sim: Sim,
        cfg: SwarmConfig,
        transport: Config,
        total: u64,
        fragment_length: u32,
    ) -> SimSwarm<S> {
        let seed = sim.seed();
        SimSwarm {
            sim,
            nodes: Vec::new(),
            quantum: Duration::from_millis(5),
            leave_grace: Duration::from_secs(2),
            announce_every: Some(Duration::from_secs(15)),
            node: NodeConfig {
                swarm: cfg,
                transport,
                ..NodeConfig::default()
            },
            next_announce: Time::ZERO,
            swarm_id: [0x5a; 32],
            total,
            fragment_length,
            seed,
            cores_made: 0,
        }
    }

    /// The swarm id every node serves.
    pub fn swarm_id(&self) -> [u8; 32] {
        self.swarm_id
    }

    fn fragment_total(&self) -> u32 {
        st_proto::st_file::Geometry::new(self.total, self.fragment_length).map_or(0, |g| g.count())
    }

    /// A new process for a node at `addr` with `store`: a fresh peer id, and a check of
    /// whatever its store does not record (what `st fetch` does after a crash).
    fn new_node(&mut self, addr: SocketAddr, store: &Shared<S>) -> PeerNode {
        self.cores_made += 1;
        let mut peer_id = [0u8; 16];
        peer_id[..8].copy_from_slice(&self.seed.to_be_bytes());
        peer_id[8..].copy_from_slice(&self.cores_made.to_be_bytes());
        let now = self.sim.now();
        let mut node = PeerNode::new(
            NodeConfig {
                peer_id,
                port: addr.port(),
                seed: self.seed ^ self.cores_made.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                ..self.node.clone()
            },
            now,
        );
        let n = self.fragment_total();
        let missing: Vec<u32> = {
            let s = store.0.borrow();
            (0..n).filter(|&i| !s.is_verified(i)).collect()
        };
        let fetch = !missing.is_empty();
        let spec = SwarmSpec {
            id: self.swarm_id,
            name: "sim".into(),
            total_length: self.total,
            fragment_length: self.fragment_length,
            trackers: Vec::new(),
            fetch,
            // A restarted process finds what its predecessor wrote but did not record.
            unrecorded_data: self.cores_made > self.nodes.len() as u64,
            private: false,
        };
        node.add_swarm(now, spec, Box::new(store.clone()))
            .expect("a fresh node takes a swarm");
        node
    }

    /// Adds a node running now with `store` (what it holds verified is what it has) and tells
    /// it of the live nodes, as a tracker would; returns its index.
    pub fn join(&mut self, store: S) -> usize {
        let store = Shared::new(store);
        let addr = self.sim.next_addr();
        let node = self.new_node(addr, &store);
        let id = self.sim.add_core(node);
        self.nodes.push(SwarmNode {
            id,
            store,
            phase: Phase::Up,
            completed_at: None,
            restarts: 0,
        });
        let k = self.nodes.len() - 1;
        self.announce(k);
        k
    }

    /// Addresses of the live nodes.
    pub fn live(&self) -> Vec<SocketAddr> {
        self.nodes
            .iter()
            .filter(|n| n.phase == Phase::Up)
            .map(|n| self.sim.addr(n.id))
            .collect()
    }

    /// Tells node `k` of every other live node.
    pub fn announce(&mut self, k: usize) {
        let me = self.sim.addr(self.nodes[k].id);
        let others: Vec<SocketAddr> = self.live().into_iter().filter(|a| *a != me).collect();
        let (now, id) = (self.sim.now(), self.swarm_id);
        if let Some(node) = self.sim.core::<PeerNode>(self.nodes[k].id) {
            node.add_peers(now, &id, &others);
        }
    }

    /// Node `k` leaves the way `st` does on SIGINT (the node's stop sequence) and goes down
    /// [`Self::leave_grace`] later.
    pub fn leave(&mut self, k: usize) {
        let now = self.sim.now();
        if let Some(node) = self.sim.core::<PeerNode>(self.nodes[k].id) {
            node.stop(now);
            self.nodes[k].phase = Phase::Leaving(now);
        }
    }

    /// Node `k`'s process dies at once (kill -9): the node is gone; the store keeps what it
    /// recorded (the resume file) and the bytes written.
    pub fn crash(&mut self, k: usize) {
        let n = &mut self.nodes[k];
        self.sim.crash(n.id);
        n.store.0.borrow_mut().crash();
        n.phase = Phase::Down;
    }

    /// Restarts a crashed node: a new process (new peer id) at the same address that checks
    /// what its store did not record, then joins again.
    pub fn restart(&mut self, k: usize) {
        let (id, store) = (self.nodes[k].id, self.nodes[k].store.clone());
        let node = self.new_node(self.sim.addr(id), &store);
        self.sim.restart_with(id, node);
        let n = &mut self.nodes[k];
        n.phase = Phase::Up;
        n.completed_at = None;
        n.restarts += 1;
        self.announce(k);
    }

    /// One turn: the stand-in tracker announces when due, leaving nodes go down after their
    /// grace, then the network runs for [`Self::quantum`].
    pub fn turn(&mut self) {
        let now = self.sim.now();
        if let Some(every) = self.announce_every
            && now >= self.next_announce
        {
            self.next_announce = now + every;
            for k in 0..self.nodes.len() {
                if self.nodes[k].phase == Phase::Up {
                    self.announce(k);
                }
            }
        }
        let id = self.swarm_id;
        for k in 0..self.nodes.len() {
            let n = &self.nodes[k];
            let Some(node) = self.sim.core_ref::<PeerNode>(n.id) else {
                continue;
            };
            let complete = node.phase(&id).is_some_and(|p| p == SwarmPhase::Complete);
            if complete && n.completed_at.is_none() && n.phase == Phase::Up {
                self.nodes[k].completed_at = Some(now);
            }
            if let Phase::Leaving(since) = self.nodes[k].phase
                && now.saturating_since(since) >= self.leave_grace
            {
                self.sim.crash(self.nodes[k].id);
                self.nodes[k].phase = Phase::Down;
            }
            // Events are for a driver to render; nobody renders here.
            if let Some(node) = self.sim.core::<PeerNode>(self.nodes[k].id) {
                while node.poll_event().is_some() {}
            }
        }
        let limit = now + self.quantum;
        while self.sim.step(limit) {}
    }

    /// Runs turns until `done` holds (checked before each turn) or `limit` of virtual time
    /// passed; true if `done` held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let end = self.sim.now() + limit;
        while self.sim.now() < end {
            if done(self) {
                return true;
            }
            self.turn();
        }
        done(self)
    }

    /// Node `k`'s peer node, if it is up.
    pub fn node(&self, k: usize) -> Option<&PeerNode> {
        self.sim.core_ref::<PeerNode>(self.nodes[k].id)
    }

    /// Node `k`'s peer layer (panics if it is down: for tests).
    pub fn core(&self, k: usize) -> &SwarmCore {
        self.node(k)
            .and_then(|n| n.swarm(&self.swarm_id))
            .expect("node is up")
    }

    /// True if every node that is up has every fragment.
    pub fn all_up_complete(&self) -> bool {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.phase == Phase::Up)
            .all(|(k, _)| {
                self.node(k)
                    .and_then(|n| n.swarm(&self.swarm_id))
                    .is_some_and(SwarmCore::complete)
            })
    }

    /// Number of fragments.
    pub fn fragment_count(&self) -> u32 {
        self.fragment_total()
    }
}
