//! Swarms with churn in the simulator: one seed and 30 fetchers over lossy, delayed,
//! rate-limited links with late joiners, a leaver and a crash-restart; and a seed that leaves
//! once one full copy is out. The oracle is identical bytes.

use std::time::Duration;

use st_engine::peer::swarm::SwarmConfig;
use st_engine::rng::Rng;
use st_engine::sim::swarm::{MemStore, Phase, SimSwarm};
use st_engine::sim::{LinkConfig, PipeConfig, Sim, for_seeds};
use st_engine::transport::Config;

const FRAG: u32 = 32 * 1024;

fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// Small blocks and pipelines, to fit the small data.
fn swarm_cfg() -> SwarmConfig {
    SwarmConfig {
        block: 16 * 1024,
        min_outstanding: 64 * 1024,
        ..SwarmConfig::default()
    }
}

fn link(mbit: u64) -> Option<LinkConfig> {
    Some(LinkConfig {
        rate_bps: mbit * 1_000_000,
        queue_bytes: 64 * 1024,
        overhead_bytes: 0,
    })
}

fn limit_links(s: &mut SimSwarm<MemStore>, k: usize) {
    let id = s.nodes[k].id;
    s.sim.set_uplink(id, link(8));
    s.sim.set_downlink(id, link(16));
}

fn verified_bytes(s: &SimSwarm<MemStore>, k: usize, size: usize) -> u64 {
    let c = s.core(k);
    (0..s.fragment_count())
        .filter(|&i| c.has(i))
        .map(|i| (size - i as usize * FRAG as usize).min(FRAG as usize) as u64)
        .sum()
}

/// A swarm of `size` random bytes over `pipe` with its seed joined (links limited); returns
/// the swarm, the data, the seed's store (to make empty fetcher stores like it) and the seed's
/// index.
fn seeded_swarm(
    seed: u64,
    size: usize,
    pipe: PipeConfig,
) -> (SimSwarm<MemStore>, Vec<u8>, MemStore, usize) {
    seeded_swarm_cfg(swarm_cfg(), seed, size, pipe)
}

/// [`seeded_swarm`] with another swarm configuration.
fn seeded_swarm_cfg(
    cfg: SwarmConfig,
    seed: u64,
    size: usize,
    pipe: PipeConfig,
) -> (SimSwarm<MemStore>, Vec<u8>, MemStore, usize) {
    let data = payload(size, seed);
    let mut s: SimSwarm<MemStore> = SimSwarm::new(
        Sim::new(seed, pipe),
        cfg,
        Config::default(),
        size as u64,
        FRAG,
    );
    let seed_store = MemStore::full(&data, FRAG);
    let origin = s.join(seed_store.clone());
    limit_links(&mut s, origin);
    (s, data, seed_store, origin)
}

#[test]
fn thirty_fetchers_with_churn_end_with_the_seeds_bytes() {
    for_seeds(&[11], |seed| {
        let size = 1024 * 1024 + 4321;
        let pipe = PipeConfig {
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(5),
            loss: 0.01,
            ..PipeConfig::default()
        };
        let (mut s, data, seed_store, origin) = seeded_swarm(seed, size, pipe);
        // 20 fetchers now, 10 late joiners later.
        for _ in 0..20 {
            let k = s.join(MemStore::empty_like(&seed_store));
            limit_links(&mut s, k);
        }
        let (leaver, crasher) = (1, 2);
        s.run_until(Duration::from_secs(2), |_| false);
        for _ in 0..10 {
            let k = s.join(MemStore::empty_like(&seed_store));
            limit_links(&mut s, k);
        }
        // The leaver goes halfway through; the crasher dies a quarter of the way in.
        let ok = s.run_until(Duration::from_secs(60), |s| {
            let c = s.core(leaver);
            c.left() <= size as u64 / 2 || c.complete()
        });
        assert!(ok, "the leaver never got halfway");
        assert!(
            s.core(leaver).left() > 0,
            "the leaver finished before leaving"
        );
        s.leave(leaver);
        let ok = s.run_until(Duration::from_secs(60), |s| {
            let c = s.core(crasher);
            c.left() <= size as u64 * 3 / 4 || c.complete()
        });
        assert!(ok, "the crasher never got a quarter of the way");
        let had = verified_bytes(&s, crasher, size);
        assert!(had > 0 && had < size as u64, "crasher had {had} bytes");
        s.crash(crasher);
        s.run_until(Duration::from_secs(3), |_| false);
        s.restart(crasher);
        let left_at_restart = s.core(crasher).left();
        assert_eq!(left_at_restart, size as u64 - had, "resumed from the store");

        let done = s.run_until(Duration::from_secs(300), |s| s.all_up_complete());
        let now = s.sim.now();
        assert!(done, "seed {seed}: not all fetchers completed by {now:?}");
        assert_eq!(s.nodes[leaver].phase, Phase::Down);
        for (k, n) in s.nodes.iter().enumerate().skip(1) {
            if k == leaver {
                continue;
            }
            let c = s.core(k);
            assert!(c.complete(), "fetcher {k} incomplete");
            assert_eq!(c.left(), 0, "fetcher {k}");
            assert!(
                n.store.0.borrow().data == data,
                "fetcher {k} has different bytes"
            );
        }
        // The restarted node fetched only what it had not verified before the crash: its
        // verified-bytes counter says so exactly, and the duplicate blocks it threw away
        // (endgame copies whose CANCEL came too late) stay below one copy. Its raw downlink is
        // not a measure of this: after a restart it also carries handshakes, have-maps, PEX
        // and transport traffic of dozens of connections.
        let c = s.core(crasher);
        assert_eq!(c.stats().downloaded, left_at_restart);
        assert!(
            c.stats().wasted < size as u64,
            "restarted node wasted {} bytes for {left_at_restart} missing",
            c.stats().wasted
        );
        // Fetchers served each other: the seed alone did not send 30 copies.
        let seed_up = s.core(origin).stats().uploaded;
        assert!(
            seed_up < 10 * size as u64,
            "the seed uploaded {seed_up} bytes"
        );
    });
}

#[test]
fn fetchers_finish_among_themselves_after_the_seed_leaves() {
    for_seeds(&[21], |seed| {
        let size = 512 * 1024 + 77;
        let pipe = PipeConfig {
            latency: Duration::from_millis(15),
            loss: 0.005,
            ..PipeConfig::default()
        };
        let (mut s, data, seed_store, origin) = seeded_swarm(seed, size, pipe);
        // The seed's uplink is the bottleneck: fetchers lack much when the copy is out.
        s.sim.set_uplink(s.nodes[origin].id, link(2));
        for _ in 0..8 {
            let k = s.join(MemStore::empty_like(&seed_store));
            limit_links(&mut s, k);
        }
        let n = s.fragment_count();
        let copy_out = |s: &SimSwarm<MemStore>| {
            (0..n).all(|i| {
                (1..s.nodes.len()).any(|k| {
                    s.node(k)
                        .and_then(|n| n.swarm(&s.swarm_id()))
                        .is_some_and(|c| c.has(i))
                })
            })
        };
        assert!(
            s.run_until(Duration::from_secs(120), copy_out),
            "one full copy never got out"
        );
        let missing: u64 = (1..s.nodes.len()).map(|k| s.core(k).left()).sum();
        let incomplete = (1..s.nodes.len())
            .filter(|&k| !s.core(k).complete())
            .count();
        assert!(
            incomplete >= 4 && missing > size as u64 / 4,
            "fetchers were (nearly) done before the seed left: {incomplete} incomplete, {missing} bytes missing"
        );
        let seed_up = s.core(origin).stats().uploaded;
        s.leave(origin);
        // While it closes its connections the seed serves nothing more.
        s.run_until(Duration::from_secs(10), |s| {
            if let Some(c) = s.node(origin).and_then(|n| n.swarm(&s.swarm_id())) {
                assert_eq!(c.stats().uploaded, seed_up, "the seed served after leaving");
            }
            s.nodes[origin].phase == Phase::Down
        });
        let done = s.run_until(Duration::from_secs(300), |s| s.all_up_complete());
        assert!(
            done,
            "seed {seed}: the fetchers did not finish without the seed"
        );
        assert_eq!(s.nodes[origin].phase, Phase::Down);
        assert!(s.node(origin).is_none());
        for (k, f) in s.nodes.iter().enumerate().skip(1) {
            assert_eq!(s.core(k).left(), 0, "fetcher {k}");
            assert!(
                f.store.0.borrow().data == data,
                "fetcher {k} has different bytes"
            );
        }
        assert!(seed_up > 0);
    });
}

/// Every node knows every other (the stand-in tracker tells each of all, and again every
/// 15 s), so both sides of a pair dial each other and one of the two connections is closed as
/// a duplicate (spec peer.md §3). Closing the duplicate must not make its address look
/// unconnected while the surviving session to the same address lives, or the address is
/// dialled again, found a duplicate again, and so on for ever: the connections ever made stay
/// a small multiple of the pairs.
#[test]
fn duplicate_connections_are_not_redialled() {
    for_seeds(&[31], |seed| {
        let size = 256 * 1024 + 5;
        let pipe = PipeConfig {
            latency: Duration::from_millis(10),
            ..PipeConfig::default()
        };
        let (mut s, data, seed_store, _) = seeded_swarm(seed, size, pipe);
        for _ in 0..8 {
            let k = s.join(MemStore::empty_like(&seed_store));
            limit_links(&mut s, k);
        }
        // Everyone learns of everyone (the tracker told early joiners only of earlier ones).
        for k in 0..s.nodes.len() {
            s.announce(k);
        }
        s.run_until(Duration::from_secs(30), |_| false);
        let nodes = s.nodes.len() as u64;
        let pairs = nodes * (nodes - 1) / 2;
        let (mut opened, mut accepted) = (0, 0);
        for k in 0..s.nodes.len() {
            let st = s.node(k).expect("up").endpoint().endpoint_stats();
            opened += st.connections_opened;
            accepted += st.connections_accepted;
        }
        eprintln!("seed {seed}: {nodes} nodes, {opened} connections opened, {accepted} accepted");
        assert!(
            opened <= 3 * pairs && accepted <= opened,
            "seed {seed}: {opened} connections opened ({accepted} accepted) for {pairs} pairs"
        );
        // Each pair is still connected (once: the duplicates are gone), and all have the data.
        for (k, n) in s.nodes.iter().enumerate() {
            let c = s.core(k);
            assert!(c.complete(), "seed {seed}: node {k} incomplete");
            assert!(
                n.store.0.borrow().data == data,
                "node {k} has different bytes"
            );
            let live = s.node(k).expect("up").endpoint().connection_count() as u64;
            assert!(
                live < nodes + 2,
                "seed {seed}: node {k} has {live} connections"
            );
        }
    });
}

/// A seed spreads its upload (spec peer.md §5): with its suggestions, it sends (nearly) no
/// fragment twice in full (at most 1 in 12, over 6 seeded runs: a single run varies from 1 to
/// 14 of 128 with the order in which connections get their turn) before it has begun to send
/// every fragment once, so its fetchers get
/// different fragments to trade at once. Without them, fetchers that pick the rarest fragments
/// of the seed at the same moment often pick the same ones, and the seed sends those twice.
/// (Once every fragment has left, fetchers with nothing left to take from each other do ask
/// the seed for fragments still on their way to others: that is the first copy's endgame.)
#[test]
fn a_seed_spreads_its_upload_over_different_fragments() {
    let run = |suggest: bool, seed: u64| -> (usize, u32) {
        let size = 4 * 1024 * 1024;
        let pipe = PipeConfig {
            latency: Duration::from_millis(10),
            ..PipeConfig::default()
        };
        let cfg = SwarmConfig {
            suggest,
            ..swarm_cfg()
        };
        let (mut s, _, seed_store, origin) = seeded_swarm_cfg(cfg, seed, size, pipe);
        for _ in 0..12 {
            let k = s.join(MemStore::empty_like(&seed_store));
            limit_links(&mut s, k);
        }
        let n = s.fragment_count();
        // Until the seed has begun to send the last of its fragments.
        let all_begun = |s: &SimSwarm<MemStore>| s.core(origin).served().iter().all(|&b| b > 0);
        assert!(
            s.run_until(Duration::from_secs(300), all_begun),
            "the seed never sent every fragment"
        );
        let twice = s
            .core(origin)
            .served()
            .iter()
            .filter(|&&b| b >= 2 * u64::from(FRAG))
            .count();
        (twice, n)
    };
    let (mut with, mut without, mut n) = (0, 0, 0);
    for seed in 31..37 {
        let (w, count) = run(true, seed);
        with += w;
        n += count;
        without += run(false, seed).0;
    }
    eprintln!(
        "fragments sent twice before the last was begun: {with} with suggestions, {without} without, of {n}"
    );
    assert!(
        with * 12 <= n as usize,
        "{with} of {n} fragments sent twice"
    );
    assert!(
        without >= 4 * with.max(1),
        "without suggestions: {without}, with: {with}"
    );
}

/// The production defaults on slow shaped links (1 seed and 8 fetchers, 20 Mbit/s up and
/// down each, 1 ms paths, a 128 KiB queue per link, 8 MiB in 64 KiB fragments): the swarm
/// ends near the lower bound and the seed sends little more than one copy. Request pipelines
/// too deep for the rate (they were at least 1 MiB per peer) made every request wait seconds
/// at its uploader: the seed sent 1.6 copies and the swarm took 1.6× the bound.
#[test]
fn a_slow_shaped_swarm_with_the_default_settings_ends_near_the_bound() {
    let size = 8u64 << 20;
    let fragment = 64 * 1024;
    let mbit = 20;
    let data = payload(size as usize, 41);
    let pipe = PipeConfig {
        latency: Duration::from_millis(1),
        ..PipeConfig::default()
    };
    let mut s: SimSwarm<MemStore> = SimSwarm::new(
        Sim::new(41, pipe),
        SwarmConfig::default(),
        Config::default(),
        size,
        fragment,
    );
    let full = MemStore::full(&data, fragment);
    let link = Some(LinkConfig {
        rate_bps: mbit * 1_000_000,
        queue_bytes: 128 * 1024,
        overhead_bytes: 0,
    });
    for k in 0..=8 {
        let store = if k == 0 {
            full.clone()
        } else {
            MemStore::empty_like(&full)
        };
        let k = s.join(store);
        let id = s.nodes[k].id;
        s.sim.set_uplink(id, link);
        s.sim.set_downlink(id, link);
    }
    let start = s.sim.now();
    assert!(
        s.run_until(Duration::from_secs(60), |s| s.all_up_complete()),
        "the swarm did not complete"
    );
    let last = s.nodes[1..]
        .iter()
        .filter_map(|n| n.completed_at)
        .max()
        .expect("completed")
        .saturating_since(start)
        .as_secs_f64();
    let m = size.div_ceil(u64::from(fragment)) as f64;
    let bound = (1.0 + 3.0 / m) * (size * 8) as f64 / (mbit * 1_000_000) as f64;
    let copies = s.core(0).stats().uploaded as f64 / size as f64;
    eprintln!("last completion {last:.2} s, bound {bound:.2} s, seed sent {copies:.2} copies");
    // About 1.3× and 1.3 copies today (9 % of the link is headers, ACKs and retransmissions;
    // the rest is the endgame's tail); 2.2× and 2.7 copies with 1 MiB pipelines.
    assert!(
        last <= 1.5 * bound,
        "{last:.2} s against a bound of {bound:.2} s"
    );
    assert!(copies <= 1.5, "the seed sent {copies:.2} copies");
    for k in 1..=8 {
        assert!(s.core(k).complete());
    }
}
