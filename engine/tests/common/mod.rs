//! Shared harness for simulation tests: one client streams numbered messages to one server
//! over the simulator; the server checks each arrives exactly once, in order, intact.
#![allow(dead_code)]

use std::time::Duration;

use st_engine::rng::Rng;
use st_engine::sim::{NodeId, PipeConfig, Sim};
use st_engine::time::Time;
use st_engine::transport::{CloseReason, Config, ConnHandle, Event, SendError};

/// Deterministic content of message `i` of a run.
pub fn message(seed: u64, i: usize, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).fill(&mut v);
    if len >= 8 {
        v[..8].copy_from_slice(&(i as u64).to_be_bytes());
    }
    v
}

pub fn server_cfg() -> Config {
    Config {
        accept: true,
        ..Config::default()
    }
}

/// One flow: client `c` sends `sizes.len()` messages to server `s`.
pub struct Flow {
    pub c: NodeId,
    pub s: NodeId,
    pub ch: ConnHandle,
    pub sh: Option<ConnHandle>,
    pub sizes: Vec<usize>,
    pub next_send: usize,
    pub next_recv: usize,
    pub recv_bytes: u64,
    pub paused: bool,
    pub seed: u64,
    pub client_closed: Option<CloseReason>,
    pub server_closed: Option<CloseReason>,
    pub connected: bool,
    pending: Option<Vec<u8>>,
}

pub struct Net {
    pub sim: Sim,
    pub flows: Vec<Flow>,
}

impl Net {
    pub fn new(seed: u64, pipe: PipeConfig) -> Self {
        Self {
            sim: Sim::new(seed, pipe),
            flows: Vec::new(),
        }
    }

    /// Adds a client and a server node and a flow between them; returns the flow index.
    pub fn add_flow(&mut self, client: Config, server: Config, sizes: Vec<usize>) -> usize {
        let c = self.sim.add_node(client);
        let s = self.sim.add_node(server);
        self.add_flow_between(c, s, sizes)
    }

    pub fn add_flow_between(&mut self, c: NodeId, s: NodeId, sizes: Vec<usize>) -> usize {
        let now = self.sim.now();
        let addr = self.sim.addr(s);
        let ch = self.sim.endpoint(c).unwrap().connect(now, addr);
        let seed = self.sim.seed() ^ (self.flows.len() as u64 + 1);
        self.flows.push(Flow {
            c,
            s,
            ch,
            sh: None,
            sizes,
            next_send: 0,
            next_recv: 0,
            recv_bytes: 0,
            paused: false,
            seed,
            client_closed: None,
            server_closed: None,
            connected: false,
            pending: None,
        });
        self.flows.len() - 1
    }

    /// Feeds senders, drains events, checks delivered messages.
    pub fn pump(&mut self) {
        let seed = self.sim.seed();
        for f in &mut self.flows {
            let Some(ep) = self.sim.endpoint(f.c) else {
                continue;
            };
            while f.connected && f.next_send < f.sizes.len() {
                let m = match f.pending.take() {
                    Some(m) => m,
                    None => message(f.seed, f.next_send, f.sizes[f.next_send]),
                };
                match ep.send(f.ch, &m) {
                    Ok(()) => f.next_send += 1,
                    Err(SendError::Blocked) => {
                        f.pending = Some(m);
                        break;
                    }
                    Err(SendError::Closed) => break,
                    Err(e) => panic!("seed {seed}: send failed: {e}"),
                }
            }
        }
        // Server-side events, routed to flows by the client's address.
        let mut servers: Vec<NodeId> = self.flows.iter().map(|f| f.s).collect();
        servers.sort();
        servers.dedup();
        for s in servers {
            let mut evs = Vec::new();
            if let Some(ep) = self.sim.endpoint(s) {
                while let Some(ev) = ep.poll_event() {
                    let remote = match &ev {
                        Event::Connected(h) => ep.remote(*h),
                        _ => None,
                    };
                    evs.push((ev, remote));
                }
            }
            for (ev, remote) in evs {
                match ev {
                    Event::Connected(h) => {
                        let flows = &mut self.flows;
                        let sim = &self.sim;
                        if let Some(f) = flows
                            .iter_mut()
                            .find(|f| f.s == s && f.sh.is_none() && Some(sim.addr(f.c)) == remote)
                        {
                            f.sh = Some(h);
                        }
                    }
                    Event::Closed(h, r) => {
                        if let Some(f) = self.flows.iter_mut().find(|f| f.s == s && f.sh == Some(h))
                        {
                            f.server_closed = Some(r);
                        }
                    }
                    _ => {}
                }
            }
        }
        for fi in 0..self.flows.len() {
            let c = self.flows[fi].c;
            if let Some(ep) = self.sim.endpoint(c) {
                while let Some(ev) = ep.poll_event() {
                    let f = &mut self.flows[fi];
                    match ev {
                        Event::Connected(h) if h == f.ch => f.connected = true,
                        Event::Closed(h, r) if h == f.ch => f.client_closed = Some(r),
                        _ => {}
                    }
                }
            }
            self.read(fi);
        }
        self.sim.flush();
    }

    fn read(&mut self, fi: usize) {
        let seed = self.sim.seed();
        let f = &mut self.flows[fi];
        if f.paused {
            return;
        }
        let Some(sh) = f.sh else { return };
        let Some(ep) = self.sim.endpoint(f.s) else {
            return;
        };
        while let Some(m) = ep.recv(sh) {
            assert!(
                f.next_recv < f.sizes.len(),
                "seed {seed}: extra message delivered"
            );
            let want = message(f.seed, f.next_recv, f.sizes[f.next_recv]);
            assert!(
                m == want,
                "seed {seed}: message {} wrong (len {} want {})",
                f.next_recv,
                m.len(),
                want.len()
            );
            f.next_recv += 1;
            f.recv_bytes += m.len() as u64;
        }
    }

    pub fn all_done(&self) -> bool {
        self.flows.iter().all(|f| f.next_recv == f.sizes.len())
    }

    /// Runs until every flow completed or `limit` of virtual time passed; true if completed.
    pub fn run(&mut self, limit: Duration) -> bool {
        let deadline = self.sim.now() + limit;
        self.pump();
        loop {
            if self.all_done() {
                return true;
            }
            if !self.sim.step(deadline) {
                self.pump();
                return self.all_done();
            }
            self.pump();
        }
    }

    /// Runs for `d` of virtual time regardless of completion.
    pub fn run_for(&mut self, d: Duration) {
        let deadline = self.sim.now() + d;
        self.pump();
        while self.sim.step(deadline) {
            self.pump();
        }
    }

    /// Runs until `cond` holds or `limit` passes.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&mut Net) -> bool) -> bool {
        let deadline = self.sim.now() + limit;
        self.pump();
        loop {
            if cond(self) {
                return true;
            }
            if !self.sim.step(deadline) {
                self.pump();
                return cond(self);
            }
            self.pump();
        }
    }

    pub fn now(&self) -> Time {
        self.sim.now()
    }
}

/// Random message sizes totalling about `total` bytes, each at most `max`.
pub fn sizes(seed: u64, total: usize, max: usize) -> Vec<usize> {
    let mut r = Rng::new(seed ^ 0x51ce);
    let mut v = Vec::new();
    let mut sum = 0;
    while sum < total {
        let s = match r.below(10) {
            0 => 0,
            1..=6 => r.below(2000) as usize,
            _ => r.below(max as u64 + 1) as usize,
        };
        sum += s;
        v.push(s);
    }
    v
}
