//! Swarms in the simulator: a seed and fetchers end with identical data; a peer that sends
//! bad data is banned and the swarm still completes, and an honest peer whose blocks shared a
//! fragment with a liar's is never struck.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::*;
use crate::sim::{PipeConfig, Sim};
use crate::transport::Config;

/// The data of one node, in memory.
struct MemStore {
    data: Vec<u8>,
    hashes: Vec<[u8; 32]>,
    fragment_length: u32,
    /// A malicious store serves garbage.
    liar: bool,
}

impl MemStore {
    fn range(&self, fragment: u32, offset: u32, len: usize) -> std::ops::Range<usize> {
        let start = fragment as usize * self.fragment_length as usize + offset as usize;
        start..start + len
    }
}

impl Store for MemStore {
    fn read(&mut self, fragment: u32, offset: u32, buf: &mut [u8]) -> io::Result<()> {
        let r = self.range(fragment, offset, buf.len());
        buf.copy_from_slice(&self.data[r]);
        if self.liar {
            buf.iter_mut().for_each(|b| *b ^= 0x55);
        }
        Ok(())
    }
    fn write(&mut self, fragment: u32, offset: u32, data: &[u8]) -> io::Result<()> {
        let r = self.range(fragment, offset, data.len());
        self.data[r].copy_from_slice(data);
        Ok(())
    }
    fn verify(&mut self, i: u32) -> io::Result<Option<bool>> {
        let len = st_proto::st_file::Geometry::new(self.data.len() as u64, self.fragment_length)
            .map_or(0, |g| g.len(i)) as usize;
        let r = self.range(i, 0, len);
        Ok(Some(
            <[u8; 32]>::from(Sha256::digest(&self.data[r])) == self.hashes[i as usize],
        ))
    }
}

struct Node {
    id: crate::sim::NodeId,
    core: SwarmCore,
    store: MemStore,
}

const FRAG: u32 = 64 * 1024;

fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// A lossless path of `ms` milliseconds one way.
fn path_of(ms: u64) -> PipeConfig {
    PipeConfig {
        latency: Duration::from_millis(ms),
        ..PipeConfig::default()
    }
}

/// The default peer layer without peer exchange (every test node is told of the others).
fn no_pex() -> SwarmConfig {
    SwarmConfig {
        pex: false,
        ..SwarmConfig::default()
    }
}

/// Builds `fetchers` fetchers and one seed (node 0) (and optionally a liar that claims to have
/// everything), all told of each other; runs until every fetcher completes or `limit`.
fn run_swarm(
    seed: u64,
    fetchers: usize,
    liar: bool,
    pipe: PipeConfig,
    limit: Duration,
) -> (Vec<Node>, Vec<u8>, Sim) {
    run_swarm_cfg(SwarmConfig::default(), seed, fetchers, liar, pipe, limit)
}

/// [`run_swarm`] with every node's peer layer configured by `cfg`.
fn run_swarm_cfg(
    cfg: SwarmConfig,
    seed: u64,
    fetchers: usize,
    liar: bool,
    pipe: PipeConfig,
    limit: Duration,
) -> (Vec<Node>, Vec<u8>, Sim) {
    let size = 2 * 1024 * 1024 + 12_345;
    run_swarm_sized(cfg, seed, size, FRAG, fetchers, liar, pipe, limit)
}

/// [`run_swarm_cfg`] with `size` bytes of data in fragments of `frag`.
#[allow(clippy::too_many_arguments)]
fn run_swarm_sized(
    cfg: SwarmConfig,
    seed: u64,
    size: usize,
    frag: u32,
    fetchers: usize,
    liar: bool,
    pipe: PipeConfig,
    limit: Duration,
) -> (Vec<Node>, Vec<u8>, Sim) {
    let (mut nodes, data, mut sim) = build_swarm(cfg, seed, size, frag, fetchers, liar, pipe);
    let end = sim.now() + limit;
    while sim.now() < end
        && !nodes
            .iter()
            .skip(1)
            .filter(|n| !n.store.liar)
            .all(|n| n.core.complete())
    {
        turn(
            &mut sim,
            nodes.iter_mut().map(|n| (n.id, &mut n.core, &mut n.store)),
        );
    }
    (nodes, data, sim)
}

/// The nodes of [`run_swarm_sized`], not run yet.
fn build_swarm(
    cfg: SwarmConfig,
    seed: u64,
    size: usize,
    frag: u32,
    fetchers: usize,
    liar: bool,
    pipe: PipeConfig,
) -> (Vec<Node>, Vec<u8>, Sim) {
    let data = payload(size, seed);
    let hashes: Vec<[u8; 32]> = data
        .chunks(frag as usize)
        .map(|c| Sha256::digest(c).into())
        .collect();
    let mut sim = Sim::new(seed, pipe);
    let swarm_id = [7u8; 32];
    let mut nodes = Vec::new();
    let roles: Vec<(bool, bool)> = std::iter::once((true, false))
        .chain(liar.then_some((true, true)))
        .chain((0..fetchers).map(|_| (false, false)))
        .collect();
    for (k, &(full, is_liar)) in roles.iter().enumerate() {
        let id = sim.add_node(Config {
            accept: true,
            ..Config::default()
        });
        let mut peer_id = [0u8; 16];
        peer_id[..8].copy_from_slice(&(k as u64 + 1).to_be_bytes());
        let core = SwarmCore::new(
            cfg.clone(),
            swarm_id,
            peer_id,
            sim.addr(id).port(),
            st_proto::st_file::Geometry::new(size as u64, frag).unwrap(),
            |_| full,
            seed ^ k as u64,
            sim.now(),
        );
        let store = MemStore {
            data: if full { data.clone() } else { vec![0; size] },
            hashes: hashes.clone(),
            fragment_length: frag,
            liar: is_liar,
        };
        nodes.push(Node { id, core, store });
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| sim.addr(n.id)).collect();
    for (k, n) in nodes.iter_mut().enumerate() {
        let others: Vec<SocketAddr> = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != k)
            .map(|(_, a)| *a)
            .collect();
        // Fetchers dial; seeds wait to be dialled.
        if !roles[k].0 {
            n.core.add_peers(&others);
        }
    }
    (nodes, data, sim)
}

/// One turn of a simulated swarm, as the production driver does it: each node's transport
/// events go to its core, then the core ticks; then the network runs for 20 ms.
pub(super) fn turn<'a, S: Store + 'a>(
    sim: &mut Sim,
    nodes: impl IntoIterator<Item = (crate::sim::NodeId, &'a mut SwarmCore, &'a mut S)>,
) {
    let now = sim.now();
    for (id, core, store) in nodes {
        let ep = sim.endpoint(id).expect("node up");
        while let Some(ev) = ep.poll_event() {
            core.handle_event(now, ep, store, &ev);
        }
        core.tick(now, ep);
    }
    let limit = now + Duration::from_millis(20);
    while sim.step(limit) {}
}

#[test]
fn seed_and_fetchers_end_with_identical_data() {
    crate::sim::for_seeds(&[1, 2], |seed| {
        let pipe = PipeConfig {
            latency: Duration::from_millis(10),
            loss: 0.01,
            ..PipeConfig::default()
        };
        let (nodes, data, _) = run_swarm(seed, 5, false, pipe, Duration::from_secs(120));
        for (k, n) in nodes.iter().enumerate().skip(1) {
            assert!(n.core.complete(), "fetcher {k} incomplete");
            assert!(n.store.data == data, "fetcher {k} has different bytes");
            assert_eq!(n.core.left(), 0);
        }
        // Fetchers served each other: the seed sent less than every fetcher's full copy.
        let seed_up = nodes[0].core.stats().uploaded;
        let fetchers_up: u64 = nodes.iter().skip(1).map(|n| n.core.stats().uploaded).sum();
        assert!(fetchers_up > 0, "no fetcher uploaded (seed sent {seed_up})");
    });
}

#[test]
fn a_peer_sending_bad_data_is_banned_and_the_swarm_completes() {
    crate::sim::for_seeds(&[3], |seed| {
        let (nodes, data, _) = run_swarm(
            seed,
            3,
            true,
            PipeConfig::default(),
            Duration::from_secs(120),
        );
        for n in nodes.iter().skip(2) {
            assert!(n.core.complete());
            assert!(n.store.data == data);
        }
        let failures: u64 = nodes
            .iter()
            .skip(2)
            .map(|n| n.core.stats().hash_failures)
            .sum();
        assert!(failures > 0, "the liar's data was never caught");
        let liar_addr = nodes[1].core.listen_port;
        for n in nodes.iter().skip(2) {
            let banned = n.core.banned.iter().any(|a| a.port() == liar_addr);
            let struck = n.core.strikes.iter().any(|(a, _)| a.port() == liar_addr);
            assert!(
                banned || !struck || n.core.stats().hash_failures < 3,
                "struck 3 times but not banned"
            );
        }
    });
}

#[test]
fn an_honest_peer_sharing_a_bad_fragment_with_a_liar_is_never_struck() {
    crate::sim::for_seeds(&[4, 5, 6], |seed| {
        // Four blocks per fragment and one request in flight per peer: peers take turns on
        // the started fragments, so a bad fragment often has honest senders too. Without the
        // seed's suggestions, which steer each fetcher to fragments of its own and so make
        // shared fragments (the case under test) rare.
        let cfg = SwarmConfig {
            block: FRAG / 4,
            min_outstanding: u64::from(FRAG / 4),
            max_outstanding: u64::from(FRAG / 4),
            suggest: false,
            ..SwarmConfig::default()
        };
        let (nodes, data, sim) = run_swarm_cfg(
            cfg,
            seed,
            3,
            true,
            PipeConfig::default(),
            Duration::from_secs(120),
        );
        let liar = sim.addr(nodes[1].id);
        let mut shared_failures = 0;
        for (k, n) in nodes.iter().enumerate().skip(2) {
            for (addr, strikes) in &n.core.strikes {
                assert_eq!(
                    *addr, liar,
                    "fetcher {k} struck honest peer {addr} ({strikes} strikes)"
                );
            }
            assert!(
                n.core.banned.iter().all(|a| *a == liar),
                "fetcher {k} banned an honest peer: {:?}",
                n.core.banned
            );
            assert!(n.core.complete(), "fetcher {k} incomplete");
            assert!(n.store.data == data, "fetcher {k} has different bytes");
            // A failure with one sender gives one strike; one with several gives none.
            let struck: u64 = n.core.strikes.values().map(|&s| u64::from(s)).sum();
            shared_failures += n.core.stats().hash_failures - struck;
        }
        assert!(
            shared_failures > 0,
            "no bad fragment had several senders: the test does not test sharing"
        );
        assert!(
            nodes.iter().skip(2).any(|n| n.core.banned.contains(&liar)),
            "the liar was never identified and banned"
        );
    });
}

#[test]
fn a_single_peer_is_never_asked_twice_for_a_block_in_the_endgame() {
    crate::sim::for_seeds(&[5, 6], |seed| {
        let pipe = path_of(10);
        let (nodes, data, _) = run_swarm(seed, 1, false, pipe, Duration::from_secs(60));
        let f = &nodes[1];
        assert!(f.core.complete() && f.store.data == data);
        // One source and a lossless path: every block came once. (The endgame used to ask the
        // same peer again for blocks it had already asked it for: pure waste.)
        assert_eq!(f.core.stats().wasted, 0, "seed {seed}: duplicate blocks");
    });
}

/// A 1 → 1 fetch of a swarm of 1 to 4 fragments (all of which the seed suggests at once, and
/// fewer blocks than the first request pipeline holds): every block is asked and sent once.
/// (The endgame of the pick that took the suggestions used to ask the same peer again for the
/// blocks it had just asked for: the seed sent the whole file twice.)
#[test]
fn a_small_swarm_is_sent_once() {
    let pipe = path_of(10);
    // (fragment length, size): 1..=4 fragments of 64 KiB (one block each), with and without
    // a short last fragment, and 1..=3 fragments of 256 KiB (two 128 KiB blocks each).
    let mut cases: Vec<(u32, usize)> = Vec::new();
    for n in 1..=4usize {
        cases.push((FRAG, n * FRAG as usize));
        cases.push((FRAG, n * FRAG as usize - 1000));
    }
    for n in 1..=3usize {
        cases.push((256 * 1024, n * 256 * 1024));
    }
    for (frag, size) in cases {
        crate::sim::for_seeds(&[7], |seed| {
            let (mut nodes, data, mut sim) = run_swarm_sized(
                SwarmConfig::default(),
                seed,
                size,
                frag,
                1,
                false,
                pipe.clone(),
                Duration::from_secs(30),
            );
            // A second more: copies still on their way arrive and are counted.
            for _ in 0..50 {
                turn(
                    &mut sim,
                    nodes.iter_mut().map(|n| (n.id, &mut n.core, &mut n.store)),
                );
            }
            let (s, f) = (&nodes[0], &nodes[1]);
            assert!(
                f.core.complete() && f.store.data == data,
                "{size} B: incomplete"
            );
            assert_eq!(
                f.core.stats().wasted,
                0,
                "{size} B in {frag} B fragments: waste"
            );
            assert_eq!(
                s.core.stats().uploaded,
                size as u64,
                "{size} B in {frag} B fragments: the seed sent more than the file"
            );
        });
    }
}

#[test]
fn a_slot_that_comes_free_is_given_at_once_not_at_the_next_choke_round() {
    // One upload slot and choke rounds a minute apart: the first fetcher to say INTERESTED
    // gets the seed's slot and the second waits. When the first leaves (or, in the second
    // case, loses interest), the second must be served within a second, not at the next
    // round. Before the fix it waited for the round (10 s by default; 3 s of an 8 s st lab run).
    let cfg = SwarmConfig {
        upload_slots: 1,
        reciprocal_slots: 1,
        choke_interval: Duration::from_secs(60),
        pex: false,
        ..SwarmConfig::default()
    };
    let pipe = PipeConfig {
        latency: Duration::from_millis(5),
        rate_bps: Some(20_000_000),
        ..PipeConfig::default()
    };
    for leaves in [true, false] {
        crate::sim::for_seeds(&[3, 4], |seed| {
            let size = 16 * 1024 * 1024;
            let (mut nodes, _data, mut sim) = run_swarm_sized(
                cfg.clone(),
                seed,
                size,
                FRAG,
                2,
                false,
                pipe.clone(),
                Duration::ZERO,
            );
            let unchoked = |nodes: &[Node]| -> Vec<ConnHandle> {
                nodes[0]
                    .core
                    .sessions
                    .iter()
                    .filter(|(_, s)| !s.choking)
                    .map(|(h, _)| *h)
                    .collect()
            };
            // Until both fetchers are connected to the seed and interested, one served.
            let mut waited = 0;
            while !(nodes[0].core.sessions.len() == 2
                && nodes[0].core.sessions.values().all(|s| s.interested)
                && unchoked(&nodes).len() == 1)
            {
                turn(
                    &mut sim,
                    nodes.iter_mut().map(|n| (n.id, &mut n.core, &mut n.store)),
                );
                waited += 1;
                assert!(waited < 100, "seed {seed}: the fetchers never got going");
            }
            let served = unchoked(&nodes)[0];
            let first_addr = nodes[0].core.sessions[&served].addr;
            let first = (1..3)
                .find(|&k| sim.addr(nodes[k].id) == first_addr)
                .expect("the served fetcher is a node");
            assert!(!nodes[first].core.complete());
            let now = sim.now();
            if leaves {
                let ep = sim.endpoint(nodes[first].id).expect("up");
                nodes[first].core.close_all(now, ep);
            } else {
                // As a fetcher says once it wants nothing more of the seed.
                let seed_addr = sim.addr(nodes[0].id);
                let h = *nodes[first]
                    .core
                    .sessions
                    .iter()
                    .find(|(_, s)| s.addr == seed_addr)
                    .expect("a session with the seed")
                    .0;
                let ep = sim.endpoint(nodes[first].id).expect("up");
                SwarmCore::send(
                    ep,
                    h,
                    nodes[first].core.sessions.get_mut(&h).expect("session"),
                    &Message::NotInterested,
                );
            }
            let other = 3 - first;
            let other_addr = sim.addr(nodes[other].id);
            let deadline = sim.now() + Duration::from_secs(1);
            let mut served_other = false;
            while sim.now() < deadline && !served_other {
                turn(
                    &mut sim,
                    nodes.iter_mut().map(|n| (n.id, &mut n.core, &mut n.store)),
                );
                served_other = nodes[0]
                    .core
                    .sessions
                    .values()
                    .any(|s| s.addr == other_addr && !s.choking);
            }
            assert!(
                served_other,
                "seed {seed}, first {}: the free slot was not given within 1 s",
                if leaves { "left" } else { "lost interest" }
            );
        });
    }
}

/// A store whose blocks must come from a disk first: `prefetch` answers "not yet" and notes the
/// range, which the test completes when it likes ([`SwarmCore::prefetched`], as the peer node
/// does on [`crate::storage::Done::Prefetched`]). Reading a range before its prefetch
/// completed panics: the reactor must not wait for the disk.
struct Gated {
    mem: MemStore,
    gated: bool,
    /// Prefetches asked for and not completed yet.
    asked: Vec<(u32, u32, u32)>,
    /// Prefetches completed.
    ready: Vec<(u32, u32, u32)>,
}

impl Store for Gated {
    fn read(&mut self, fragment: u32, offset: u32, buf: &mut [u8]) -> io::Result<()> {
        let end = offset as usize + buf.len();
        assert!(
            !self.gated
                || self
                    .ready
                    .iter()
                    .any(|&(f, o, l)| f == fragment && o <= offset && end <= (o + l) as usize),
            "fragment {fragment} at {offset} read before its prefetch completed"
        );
        self.mem.read(fragment, offset, buf)
    }
    fn write(&mut self, fragment: u32, offset: u32, data: &[u8]) -> io::Result<()> {
        self.mem.write(fragment, offset, data)
    }
    fn verify(&mut self, i: u32) -> io::Result<Option<bool>> {
        self.mem.verify(i)
    }
    fn prefetch(&mut self, fragment: u32, offset: u32, len: u32) -> bool {
        if self.gated {
            self.asked.push((fragment, offset, len));
        }
        !self.gated
    }
}

struct GatedNode {
    id: crate::sim::NodeId,
    core: SwarmCore,
    store: Gated,
}

impl GatedNode {
    /// Completes the prefetches asked for that `pick` accepts, as the disk thread would.
    fn complete(&mut self, sim: &mut Sim, mut pick: impl FnMut(&(u32, u32, u32)) -> bool) {
        let (done, left): (Vec<_>, Vec<_>) = self.store.asked.drain(..).partition(|r| pick(r));
        self.store.asked = left;
        let ep = sim.endpoint(self.id).expect("up");
        for (f, o, l) in done {
            self.store.ready.push((f, o, l));
            self.core.prefetched(ep, &mut self.store, f, o, l);
        }
    }
}

#[test]
fn a_block_waits_for_its_prefetch_while_other_peers_are_served() {
    let pipe = path_of(5);
    let size = 1 << 20;
    let (nodes, data, mut sim) = build_swarm(SwarmConfig::default(), 9, size, FRAG, 2, false, pipe);
    // The seed's blocks come from a slow disk; the fetchers' from memory.
    let mut nodes: Vec<GatedNode> = nodes
        .into_iter()
        .enumerate()
        .map(|(k, n)| GatedNode {
            id: n.id,
            core: n.core,
            store: Gated {
                mem: n.store,
                gated: k == 0,
                asked: Vec::new(),
                ready: Vec::new(),
            },
        })
        .collect();
    let step = |sim: &mut Sim, nodes: &mut Vec<GatedNode>| {
        turn(
            sim,
            nodes.iter_mut().map(|n| (n.id, &mut n.core, &mut n.store)),
        )
    };
    let asking = |nodes: &[GatedNode]| -> Vec<ConnHandle> {
        nodes[0]
            .core
            .sessions
            .iter()
            .filter(|(_, s)| !s.serving.is_empty())
            .map(|(h, _)| *h)
            .collect()
    };
    // Both fetchers ask the seed for blocks; while its disk answers nothing, nothing is sent
    // (and nothing read: `Gated::read` would panic), but every request reached the disk.
    let mut waited = 0;
    while asking(&nodes).len() < 2 {
        step(&mut sim, &mut nodes);
        waited += 1;
        assert!(waited < 200, "the fetchers never asked the seed");
    }
    for _ in 0..10 {
        step(&mut sim, &mut nodes);
    }
    let seed = &nodes[0];
    assert_eq!(
        seed.core.stats().uploaded,
        0,
        "sent before the disk answered"
    );
    for s in seed.core.sessions.values() {
        assert!(s.serving.iter().all(|x| x.ahead == Ahead::Asked));
    }
    // The disk answers for one peer's blocks: they go at once, the other peer's wait.
    let hs = asking(&nodes);
    let (a, b) = (hs[0], hs[1]);
    let blocks = |h: ConnHandle| -> Vec<Block> {
        nodes[0].core.sessions[&h]
            .serving
            .iter()
            .map(|x| x.block)
            .collect()
    };
    let b_blocks = blocks(b);
    let a_only: Vec<Block> = blocks(a)
        .into_iter()
        .filter(|x| !b_blocks.contains(x))
        .collect();
    assert!(!a_only.is_empty());
    nodes[0].complete(&mut sim, |&(f, o, l)| {
        a_only.contains(&Block {
            fragment: f,
            offset: o,
            length: l,
        })
    });
    let sent = nodes[0].core.stats().uploaded;
    assert!(
        sent > 0,
        "the completed prefetches did not start the sending"
    );
    for _ in 0..10 {
        step(&mut sim, &mut nodes);
    }
    let seed = &nodes[0];
    let a_bytes: u64 = a_only.iter().map(|x| u64::from(x.length)).sum();
    assert_eq!(
        seed.core.stats().uploaded,
        a_bytes,
        "only the ready blocks went"
    );
    for x in &b_blocks {
        assert_eq!(seed.core.served()[x.fragment as usize], 0);
    }
    assert_eq!(
        seed.core.sessions[&b]
            .serving
            .iter()
            .map(|x| x.block)
            .take(b_blocks.len())
            .collect::<Vec<_>>(),
        b_blocks,
        "the other peer's requests still wait, in order"
    );
    // A completion for a block no longer queued is ignored.
    let ep = sim.endpoint(nodes[0].id).expect("up");
    let b0 = b_blocks[0];
    nodes[0].core.on_cancel(
        b,
        peer::BlockRef {
            fragment: b0.fragment.into(),
            offset: b0.offset.into(),
            length: b0.length.into(),
        },
    );
    let seed = &mut nodes[0];
    seed.core
        .prefetched(ep, &mut seed.store, b0.fragment, b0.offset, b0.length);
    assert_eq!(nodes[0].core.stats().uploaded, a_bytes);
    // Then the disk answers everything as it comes: the fetch completes.
    let end = sim.now() + Duration::from_secs(60);
    while !nodes.iter().skip(1).all(|n| n.core.complete()) {
        assert!(sim.now() < end, "the fetchers did not complete");
        nodes[0].complete(&mut sim, |_| true);
        step(&mut sim, &mut nodes);
    }
    for n in nodes.iter().skip(1) {
        assert!(n.store.mem.data == data);
    }
}

/// Spec peer.md §5: a HAVE of a fragment the receiver lacks and has not asked anyone for is
/// asked for at once. A holds fragment 0 of 4, B nothing; once B has fragment 0 it asks A for
/// nothing more. Just after B's rate window, A comes to hold fragment 1 and says HAVE: B must
/// ask for it within a round trip and a turn or two, not at its next rate window (250 ms).
/// Before, a HAVE only updated interest, and a connection with nothing outstanding sat idle
/// until the window: in a 16-host swarm at 100 Mbit/s every fetcher's uplink was 20 % busy
/// for 100 ms at 0.4 s, and then 15 connections burst into it together (swarm_sim).
#[test]
fn a_fragment_an_idle_peer_announces_is_asked_for_at_once() {
    crate::sim::for_seeds(&[1, 2, 3], |seed| {
        let size = 4 * FRAG as usize;
        let data = payload(size, seed);
        let hashes: Vec<[u8; 32]> = data
            .chunks(FRAG as usize)
            .map(|c| Sha256::digest(c).into())
            .collect();
        let pipe = path_of(5);
        let mut sim = Sim::new(seed, pipe);
        let cfg = no_pex();
        let mut nodes: Vec<Node> = (0..2u64)
            .map(|k| {
                let id = sim.add_node(Config {
                    accept: true,
                    ..Config::default()
                });
                let mut peer_id = [0u8; 16];
                peer_id[..8].copy_from_slice(&(k + 1).to_be_bytes());
                let holds = k == 0;
                let core = SwarmCore::new(
                    cfg.clone(),
                    [7u8; 32],
                    peer_id,
                    sim.addr(id).port(),
                    st_proto::st_file::Geometry::new(size as u64, FRAG).unwrap(),
                    |i| holds && i == 0,
                    seed ^ k,
                    sim.now(),
                );
                let store = MemStore {
                    // A holds the bytes of every fragment; it claims them as the test says.
                    data: if holds { data.clone() } else { vec![0; size] },
                    hashes: hashes.clone(),
                    fragment_length: FRAG,
                    liar: false,
                };
                Node { id, core, store }
            })
            .collect();
        let a_addr = sim.addr(nodes[0].id);
        nodes[1].core.add_peers(&[a_addr]);
        let run = |sim: &mut Sim, nodes: &mut Vec<Node>| {
            turn(
                sim,
                nodes.iter_mut().map(|n| (n.id, &mut n.core, &mut n.store)),
            )
        };
        let asked_of_a = |nodes: &[Node]| -> Vec<u32> {
            nodes[1]
                .core
                .sessions
                .values()
                .filter(|s| s.addr == a_addr)
                .flat_map(|s| s.outstanding.iter().map(|(b, _)| b.fragment))
                .collect()
        };
        // B fetches fragment 0, then has nothing to ask.
        let mut turns = 0;
        while !(nodes[1].core.has(0) && asked_of_a(&nodes).is_empty()) {
            run(&mut sim, &mut nodes);
            turns += 1;
            assert!(turns < 500, "seed {seed}: B never got fragment 0");
        }
        // Wait for B's rate window to pass, so the next one is 250 ms away.
        let window = nodes[1].core.next_round;
        while nodes[1].core.next_round == window {
            run(&mut sim, &mut nodes);
        }
        let next_window = nodes[1].core.next_round;
        let now = sim.now();
        let ep = sim.endpoint(nodes[0].id).expect("up");
        nodes[0].core.fragment_verified(now, ep, 1, true);
        let announced = sim.now();
        while sim.now() < next_window && !asked_of_a(&nodes).contains(&1) {
            run(&mut sim, &mut nodes);
        }
        assert!(
            asked_of_a(&nodes).contains(&1) || nodes[1].core.has(1),
            "seed {seed}: B never asked for fragment 1 before its next rate window"
        );
        let waited = sim.now() - announced;
        assert!(
            waited <= Duration::from_millis(100),
            "seed {seed}: B asked for fragment 1 only after {waited:?}"
        );
    });
}

/// Two seeds and one fetcher: node 1 is built as the "liar" of [`build_swarm`] and made honest,
/// so the fetcher has two full sources.
fn two_seeds(
    cfg: SwarmConfig,
    seed: u64,
    size: usize,
    pipe: PipeConfig,
) -> (Vec<Node>, Vec<u8>, Sim) {
    let (mut nodes, data, sim) = build_swarm(cfg, seed, size, FRAG, 1, true, pipe);
    nodes[1].store.liar = false;
    (nodes, data, sim)
}

/// [`two_seeds`] of 64 fragments over 20 Mbit/s paths 10 ms long, requests timing out after
/// `request_timeout`.
fn endgame_swarm(seed: u64, request_timeout: Duration) -> (Vec<Node>, Vec<u8>, Sim) {
    let pipe = PipeConfig {
        latency: Duration::from_millis(10),
        rate_bps: Some(20_000_000),
        ..PipeConfig::default()
    };
    let cfg = SwarmConfig {
        request_timeout,
        ..no_pex()
    };
    two_seeds(cfg, seed, 64 * FRAG as usize, pipe)
}

/// `n` turns of every node.
fn turns(sim: &mut Sim, nodes: &mut [Node], n: usize) {
    for _ in 0..n {
        turn(
            sim,
            nodes.iter_mut().map(|n| (n.id, &mut n.core, &mut n.store)),
        );
    }
}

/// Spec §5: the endgame copies a block only when its request is overdue. Two healthy seeds
/// and a fetcher whose pipelines are full when the last blocks are asked: nothing is overdue,
/// so no block comes twice. (The endgame used to ask the other seed at once for every block
/// still outstanding: each copy a whole block that a CANCEL reaches too late, the last half
/// second of a saturated downlink in a 16-host lab spent on duplicates.)
#[test]
fn a_healthy_endgame_asks_for_no_copies() {
    crate::sim::for_seeds(&[1, 2, 3], |seed| {
        let timeout = SwarmConfig::default().request_timeout;
        let (mut nodes, data, mut sim) = endgame_swarm(seed, timeout);
        let mut endgame = false;
        let end = sim.now() + Duration::from_secs(60);
        while sim.now() < end && !nodes[2].core.complete() {
            turn(
                &mut sim,
                nodes.iter_mut().map(|n| (n.id, &mut n.core, &mut n.store)),
            );
            endgame |= nodes[2].core.picker.in_endgame();
        }
        // A second more: copies still on their way arrive and are counted.
        turns(&mut sim, &mut nodes, 50);
        let f = &nodes[2];
        assert!(
            f.core.complete() && f.store.data == data,
            "seed {seed}: incomplete"
        );
        assert!(endgame, "seed {seed}: the fetch never reached the endgame");
        assert_eq!(f.core.stats().wasted, 0, "seed {seed}: duplicate blocks");
    });
}

/// Spec §5: a block asked of a peer that falls silent in the endgame is asked of another once
/// it is overdue, at most [`ENDGAME_PATIENCE`] later, without waiting for the request timeout.
#[test]
fn an_endgame_block_stuck_at_a_silent_peer_is_asked_elsewhere() {
    crate::sim::for_seeds(&[1, 2, 3], |seed| {
        // Requests time out only after a minute: only the endgame can rescue the blocks.
        let (mut nodes, data, mut sim) = endgame_swarm(seed, Duration::from_secs(60));
        let s1_addr = sim.addr(nodes[1].id);
        let stuck_at = |nodes: &[Node]| -> usize {
            nodes[2]
                .core
                .sessions
                .values()
                .filter(|s| s.addr == s1_addr)
                .map(|s| s.outstanding.len())
                .sum()
        };
        // Into the endgame, with blocks asked of seed 1.
        let mut ran = 0;
        while !(nodes[2].core.picker.in_endgame() && stuck_at(&nodes) > 0) {
            turns(&mut sim, &mut nodes, 1);
            ran += 1;
            assert!(ran < 3000, "seed {seed}: no endgame with blocks at seed 1");
        }
        // A healthy endgame, for a few round trips: nothing is overdue, nothing is copied.
        turns(&mut sim, &mut nodes, 5);
        let asked: Vec<Block> = nodes[2]
            .core
            .sessions
            .values()
            .flat_map(|s| s.outstanding.iter().map(|(b, _)| *b))
            .collect();
        let copies = asked
            .iter()
            .filter(|b| asked.iter().filter(|x| x == b).count() > 1)
            .count();
        assert_eq!(
            copies, 0,
            "seed {seed}: copies asked before any request was overdue"
        );
        // Seed 1 falls silent for good.
        let cut = sim.now();
        let (s1, f) = (nodes[1].id, nodes[2].id);
        sim.partition(&[s1], &[f], cut, cut + Duration::from_secs(3600));
        while !nodes[2].core.complete() && sim.now() < cut + Duration::from_secs(30) {
            turn(
                &mut sim,
                nodes.iter_mut().map(|n| (n.id, &mut n.core, &mut n.store)),
            );
        }
        assert!(
            nodes[2].core.complete() && nodes[2].store.data == data,
            "seed {seed}: incomplete 30 s after seed 1 fell silent"
        );
        let took = sim.now() - cut;
        assert!(
            took <= ENDGAME_PATIENCE + Duration::from_secs(1),
            "seed {seed}: the stuck blocks came {took:?} after seed 1 fell silent"
        );
    });
}

/// Spec §5: a connection's pipeline is sized by the mean rate of the peers we download from
/// (or by half its own, if more), not by its own rate alone. Two seeds with 20 Mbit/s
/// uplinks, one 10 ms away and one 400 ms away: sized by its own rate, the far seed's
/// pipeline (half a second of what it delivered) was less than its round trip, which lowered
/// its rate, which shrank the pipeline to the 128 KiB floor, one 64 KiB block per 0.4 s: it
/// gave 4 % of the bytes (36 % now). A fetcher whose ACKs wait behind its own busy uplink
/// has a longer round trip on every connection, and fell behind the same way.
#[test]
fn a_far_peers_pipeline_is_not_starved_by_its_round_trip() {
    crate::sim::for_seeds(&[1, 2], |seed| {
        let cfg = no_pex();
        let pipe = path_of(10);
        let (mut nodes, data, mut sim) = two_seeds(cfg, seed, 1024 * FRAG as usize, pipe);
        let (near, far, f) = (nodes[0].id, nodes[1].id, nodes[2].id);
        for s in [near, far] {
            sim.set_uplink(
                s,
                Some(crate::sim::LinkConfig {
                    rate_bps: 20_000_000,
                    queue_bytes: 256 * 1024,
                    overhead_bytes: 0,
                }),
            );
        }
        for (a, b) in [(far, f), (f, far)] {
            let p = sim.pipe_of(a, b);
            sim.set_pipe(p, path_of(400));
        }
        let end = sim.now() + Duration::from_secs(120);
        while sim.now() < end && !nodes[2].core.complete() {
            turn(
                &mut sim,
                nodes.iter_mut().map(|n| (n.id, &mut n.core, &mut n.store)),
            );
        }
        let n = &nodes[2];
        assert!(
            n.core.complete() && n.store.data == data,
            "seed {seed}: incomplete"
        );
        let far_addr = sim.addr(far);
        let from_far = n
            .core
            .stats()
            .from_peer
            .get(&far_addr)
            .copied()
            .unwrap_or(0);
        let share = from_far as f64 / data.len() as f64;
        assert!(
            share > 0.12,
            "seed {seed}: the far seed gave {:.1} % of the bytes",
            100.0 * share
        );
    });
}

/// Spec §5: a pipeline covers the round trip, however long. One seed 300 ms away (a 0.6 s
/// round trip) with a 20 Mbit/s uplink: with half a second of data outstanding, as before,
/// the pipeline was less than the round trip, the rate it measured fell, and the pipeline with
/// it, to the 128 KiB floor: ~0.2 MB/s of the link's 2.5, 16 MiB in more than a minute.
#[test]
fn a_pipeline_covers_a_long_round_trip() {
    crate::sim::for_seeds(&[1, 2], |seed| {
        let cfg = no_pex();
        let pipe = path_of(300);
        let size = 256 * FRAG as usize;
        let (mut nodes, data, mut sim) = build_swarm(cfg, seed, size, FRAG, 1, false, pipe);
        sim.set_uplink(
            nodes[0].id,
            Some(crate::sim::LinkConfig {
                rate_bps: 20_000_000,
                queue_bytes: 256 * 1024,
                overhead_bytes: 0,
            }),
        );
        let start = sim.now();
        let end = start + Duration::from_secs(120);
        while sim.now() < end && !nodes[1].core.complete() {
            turn(
                &mut sim,
                nodes.iter_mut().map(|n| (n.id, &mut n.core, &mut n.store)),
            );
        }
        let took = sim.now() - start;
        assert!(
            nodes[1].core.complete() && nodes[1].store.data == data,
            "seed {seed}: incomplete after {took:?}"
        );
        // The link alone needs 6.7 s; slow start over a 0.6 s round trip a few more.
        assert!(
            took < Duration::from_secs(20),
            "seed {seed}: 16 MiB took {took:?} over a 0.6 s round trip"
        );
    });
}
