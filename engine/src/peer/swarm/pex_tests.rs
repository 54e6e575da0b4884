//! Peer exchange in the simulator: a swarm where only one peer knows the seed and every other
//! peer knows just one neighbour finds itself whole through PEX; addresses not verified as
//! reachable are never passed on.

use std::time::Duration;

use super::*;
use crate::sim::{NodeId, PipeConfig, Sim};
use crate::storage::mem::MemStore;
use crate::transport::Config;

const FRAG: u32 = 32 * 1024;
const SWARM: [u8; 32] = [9; 32];

struct Peer {
    id: NodeId,
    core: SwarmCore,
    store: MemStore,
}

/// Node 0 seeds; node k ≥ 1 is told only of `knows(k)`. `listen_port(k)` is what node k's
/// handshake claims (the sim's real port is 4000). Runs until every fetcher completes or
/// `limit` of virtual time.
fn run(
    seed: u64,
    fetchers: usize,
    pex: bool,
    knows: impl Fn(usize) -> usize,
    listen_port: impl Fn(usize) -> u16,
    limit: Duration,
) -> (Vec<Peer>, Vec<u8>, Sim) {
    let size = 512 * 1024 + 777;
    let mut data = vec![0u8; size];
    Rng::new(seed).fill(&mut data);
    let full = MemStore::full(&data, FRAG);
    let pipe = PipeConfig {
        latency: Duration::from_millis(5),
        loss: 0.005,
        ..PipeConfig::default()
    };
    let mut sim = Sim::new(seed, pipe);
    let mut peers = Vec::new();
    for k in 0..=fetchers {
        let id = sim.add_node(Config {
            accept: true,
            ..Config::default()
        });
        let mut peer_id = [0u8; 16];
        peer_id[..8].copy_from_slice(&(k as u64 + 1).to_be_bytes());
        let core = SwarmCore::new(
            SwarmConfig {
                pex,
                ..SwarmConfig::default()
            },
            SWARM,
            peer_id,
            listen_port(k),
            st_proto::st_file::Geometry::new(size as u64, FRAG).unwrap(),
            |_| k == 0,
            seed ^ k as u64,
            sim.now(),
        );
        let store = if k == 0 {
            full.clone()
        } else {
            MemStore::empty_like(&full)
        };
        peers.push(Peer { id, core, store });
    }
    for k in 1..=fetchers {
        let addr = sim.addr(peers[knows(k)].id);
        peers[k].core.add_peers(&[addr]);
    }
    let end = sim.now() + limit;
    while sim.now() < end && !peers.iter().all(|p| p.core.complete()) {
        super::tests::turn(
            &mut sim,
            peers.iter_mut().map(|p| (p.id, &mut p.core, &mut p.store)),
        );
    }
    (peers, data, sim)
}

#[test]
fn twenty_peers_of_which_one_knows_the_seed_all_find_it_by_pex() {
    crate::sim::for_seeds(&[1, 2], |seed| {
        // A chain: fetcher 1 knows the seed, fetcher k knows fetcher k − 1.
        let (peers, data, _) = run(
            seed,
            20,
            true,
            |k| k - 1,
            |_| 4000,
            Duration::from_secs(300),
        );
        for (k, p) in peers.iter().enumerate().skip(1) {
            assert!(p.core.complete(), "fetcher {k} incomplete");
            assert!(p.store.data == data, "fetcher {k} has different bytes");
        }
        let learned: u64 = peers.iter().map(|p| p.core.stats().pex_learned).sum();
        assert!(learned > 20, "PEX taught only {learned} addresses");
        // Without PEX the seed only ever meets fetcher 1; with it, most of the swarm.
        let seed_peers = peers[0].core.peer_count();
        assert!(
            seed_peers >= 10,
            "the seed met {seed_peers} peers: PEX did not spread its address"
        );
        for (k, p) in peers.iter().enumerate().skip(2) {
            assert!(
                p.core.peer_count() > 2,
                "fetcher {k} knows only its neighbours ({})",
                p.core.peer_count()
            );
        }
    });
}

#[test]
fn without_pex_the_chain_never_reaches_the_seed() {
    // The control for the test above: the same chain with PEX off completes by relaying, but
    // the seed meets only the one peer told of it.
    let (peers, data, _) = run(1, 8, false, |k| k - 1, |_| 4000, Duration::from_secs(300));
    for p in peers.iter().skip(1) {
        assert!(p.core.complete() && p.store.data == data);
        assert_eq!(p.core.stats().pex_learned, 0);
    }
    assert_eq!(peers[0].core.peer_count(), 1);
}

#[test]
fn an_address_not_verified_as_reachable_is_never_passed_on() {
    // Fetcher 1 claims listen port 1 but talks from port 4000: whoever it dials cannot
    // verify port 1 (and port 4000 is not what it claims), so nobody passes it on.
    let (peers, _, sim) = run(
        3,
        6,
        true,
        |_| 0,
        |k| if k == 1 { 1 } else { 4000 },
        Duration::from_secs(120),
    );
    let liar = sim.addr(peers[1].id);
    let claimed = SocketAddr::new(liar.ip(), 1);
    for (k, p) in peers.iter().enumerate() {
        if k == 1 {
            continue;
        }
        assert!(
            !p.core.candidates.contains(&claimed) && !p.core.candidates.contains(&liar),
            "node {k} was told of fetcher 1"
        );
        // Only the seed (which fetcher 1 dialled) has a session with it.
        let with_liar = p.core.sessions.values().any(|s| s.addr == liar);
        assert_eq!(with_liar, k == 0, "node {k}");
    }
    // The others still found each other through the seed.
    assert!(peers[2].core.peer_count() >= 3);
}

#[test]
fn a_pex_swarm_replays_from_its_seed() {
    // Which addresses a PEX message lists first, and so whom a peer dials, must follow from
    // the state, not from a per-process hash seed: the same seed gives the same swarm.
    let summary = || {
        let (peers, _, sim) = run(5, 20, true, |k| k - 1, |_| 4000, Duration::from_secs(300));
        let per_peer: Vec<(u64, u64, usize)> = peers
            .iter()
            .map(|p| {
                let s = p.core.stats();
                (s.pex_learned, s.uploaded, p.core.peer_count())
            })
            .collect();
        (per_peer, sim.now())
    };
    assert_eq!(summary(), summary());
}
