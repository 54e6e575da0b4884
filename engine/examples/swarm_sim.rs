//! Swarm benchmark in the simulator (issue #5, benchmark (c); run by `bench/swarm-sim.sh`).
//!
//! ```text
//! swarm_sim [--size 1G] [--peers 32] [--fragment 512K] [--mbit 100] [--latency-ms 10]
//!           [--queue 256K] [--quantum-ms 2] [--seed 1] [--limit-s 3600] [--cc cubic]
//!           [--report-s 10] [--slots 8] [--choke-s 10] [--no-suggest] [--dump NODE]
//!           [--reciprocal 8] [--min-outstanding 128K]
//!           [--max-outstanding 32M] [--block 128K] [--overhead 0]
//! ```
//! `--overhead 42` makes every datagram occupy 42 more bytes of its links, the Ethernet, IPv4
//! and UDP headers `tc` counts on the shaped veths of `st lab` (`sim::LinkConfig`).
//! One seed and `--peers` fetchers, every node with `--mbit` of uplink AND of downlink (its
//! access link, shared by all its connections; `sim::LinkConfig`), paths of `--latency-ms`
//! one way, no loss. The data is synthetic (`sim::swarm::SyntheticStore`: no bytes kept), so
//! 1 GiB × 33 nodes needs little memory. Prints the virtual time at which the last fetcher
//! completed, the lower bound (1 + log2(N)/M) · F/u (N fetchers, M fragments, F bits, u the
//! per-node upload rate), their ratio, and the wall time of the run.

// A benchmark driver: it reports wall time (engine/clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::time::{Duration, Instant};

use st_engine::peer::swarm::SwarmConfig;
use st_engine::sim::swarm::{SimSwarm, SyntheticStore};
use st_engine::sim::{LinkConfig, PipeConfig, Sim};
use st_engine::transport::{Config, CongestionKind};

fn parse_size(s: &str) -> u64 {
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .unwrap_or_else(|_| panic!("bad size {s}"))
        * mul
}

fn main() {
    let mut size = 1u64 << 30;
    let mut peers = 32usize;
    let mut fragment = 512u64 << 10;
    let mut mbit = 100u64;
    let mut latency_ms = 10u64;
    let mut queue = 256u64 << 10;
    let mut quantum_ms = 2u64;
    let mut seed = 1u64;
    let mut limit_s = 3600u64;
    let mut report = Duration::from_secs(10);
    let mut cc = CongestionKind::Cubic;
    let mut swarm = SwarmConfig::default();
    let mut overhead = 0usize;
    let mut dump: Option<usize> = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut v = || {
            it.next()
                .unwrap_or_else(|| panic!("{a} needs a value"))
                .clone()
        };
        match a.as_str() {
            "--size" => size = parse_size(&v()),
            "--peers" => peers = v().parse().expect("--peers N"),
            "--fragment" => fragment = parse_size(&v()),
            "--mbit" => mbit = v().parse().expect("--mbit N"),
            "--latency-ms" => latency_ms = v().parse().expect("--latency-ms N"),
            "--queue" => queue = parse_size(&v()),
            "--quantum-ms" => quantum_ms = v().parse().expect("--quantum-ms N"),
            "--seed" => seed = v().parse().expect("--seed N"),
            "--limit-s" => limit_s = v().parse().expect("--limit-s N"),
            "--report-s" => {
                report = Duration::from_secs_f64(v().parse().expect("--report-s SECONDS"))
            }
            "--dump" => dump = Some(v().parse().expect("--dump NODE")),
            "--no-suggest" => swarm.suggest = false,
            "--reciprocal" => swarm.reciprocal_slots = v().parse().expect("--reciprocal N"),
            "--slots" => swarm.upload_slots = v().parse().expect("--slots N"),
            "--min-outstanding" => swarm.min_outstanding = parse_size(&v()),
            "--max-outstanding" => swarm.max_outstanding = parse_size(&v()),
            "--block" => swarm.block = parse_size(&v()) as u32,
            "--overhead" => overhead = v().parse().expect("--overhead BYTES"),
            "--choke-s" => {
                swarm.choke_interval = Duration::from_secs(v().parse().expect("--choke-s N"))
            }
            "--cc" => {
                cc = match v().as_str() {
                    "cubic" => CongestionKind::Cubic,
                    "newreno" => CongestionKind::NewReno,
                    "ledbat" => CongestionKind::Ledbat,
                    other => panic!("--cc cubic|newreno|ledbat, not {other}"),
                }
            }
            other => panic!("unknown argument {other} (see the doc comment)"),
        }
    }
    let fragment = u32::try_from(fragment).expect("fragment fits u32");
    assert!(peers > 0, "--peers must be at least 1");
    assert!(
        dump.is_none_or(|k| k <= peers),
        "--dump NODE: 0 (the seed) ..= {peers}"
    );
    let rate = mbit * 1_000_000;
    let pipe = PipeConfig {
        latency: Duration::from_millis(latency_ms),
        ..PipeConfig::default()
    };
    let mut s: SimSwarm<SyntheticStore> = SimSwarm::new(
        Sim::new(seed, pipe),
        swarm,
        Config {
            congestion: cc,
            ..Config::default()
        },
        size,
        fragment,
    );
    s.quantum = Duration::from_millis(quantum_ms);
    let link = Some(LinkConfig {
        rate_bps: rate,
        queue_bytes: queue as usize,
        overhead_bytes: overhead,
    });
    for k in 0..=peers {
        let k = s.join(SyntheticStore::new(seed, size, fragment, k == 0));
        let id = s.nodes[k].id;
        s.sim.set_uplink(id, link);
        s.sim.set_downlink(id, link);
    }
    let start = s.sim.now();
    let wall = Instant::now();
    let mut next_report = start + report;
    let mut last_up: Vec<u64> = vec![0; s.nodes.len()];
    let mut last_down: Vec<u64> = vec![0; s.nodes.len()];
    let mut last_drops = (0u64, 0u64);
    let done = s.run_until(Duration::from_secs(limit_s), |s| {
        let reporting = s.sim.now() >= next_report;
        if reporting {
            next_report = s.sim.now() + report;
            let left: u64 = (1..s.nodes.len()).map(|k| s.core(k).left()).sum();
            let finished = (1..s.nodes.len()).filter(|&k| s.core(k).complete()).count();
            // Uplink use since the last report: of all nodes, and of the seed.
            let up: Vec<u64> = s.nodes.iter().map(|n| s.sim.uplink_stats(n.id).bytes).collect();
            let cap = rate as f64 / 8.0 * report.as_secs_f64();
            let all: u64 = up.iter().zip(&last_up).map(|(a, b)| a - b).sum();
            let seed_use = (up[0] - last_up[0]) as f64 / cap;
            let all_use = all as f64 / (cap * up.len() as f64);
            last_up = up;
            // Downlink use of the fetchers still running: lowest, median, highest.
            let down: Vec<u64> = s.nodes.iter().map(|n| s.sim.downlink_stats(n.id).bytes).collect();
            let mut busy: Vec<f64> = (1..s.nodes.len())
                .filter(|&k| !s.core(k).complete())
                .map(|k| 100.0 * (down[k] - last_down[k]) as f64 / cap)
                .collect();
            busy.sort_by(f64::total_cmp);
            last_down = down;
            let drops = s.nodes.iter().fold((0, 0), |(u, d), n| {
                (
                    u + s.sim.uplink_stats(n.id).queue_drops,
                    d + s.sim.downlink_stats(n.id).queue_drops,
                )
            });
            let (du, dd) = (drops.0 - last_drops.0, drops.1 - last_drops.1);
            last_drops = drops;
            let mut prog: Vec<f64> = (1..s.nodes.len())
                .map(|k| 100.0 * (1.0 - s.core(k).left() as f64 / size as f64))
                .collect();
            prog.sort_by(f64::total_cmp);
            let wasted: u64 = (1..s.nodes.len()).map(|k| s.core(k).stats().wasted).sum();
            eprintln!(
                "  fetchers' progress {:.0}/{:.0}/{:.0} % (min/median/max), wasted {} KiB in all",
                prog[0],
                prog[prog.len() / 2],
                prog[prog.len() - 1],
                wasted >> 10
            );
            let pick = |q: f64| busy.get(((busy.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(0.0);
            eprintln!(
                "t={:.1} s: {:.1} % of {} copies, {finished} complete, uplinks {:.0} % busy (seed {:.0} %), downlinks {:.0}/{:.0}/{:.0} % (min/median/max), drops up {du} down {dd} (wall {:.0} s)",
                (s.sim.now() - start).as_secs_f64(),
                100.0 * (1.0 - left as f64 / (size as f64 * peers as f64)),
                peers,
                100.0 * all_use,
                100.0 * seed_use,
                pick(0.0),
                pick(0.5),
                pick(1.0),
                wall.elapsed().as_secs_f64()
            );
        }
        if reporting && let Some(seed) = s.node(0).and_then(|n| n.swarm(&s.swarm_id())) {
            // How many times the seed has sent each fragment (in whole copies).
            let flen = u64::from(fragment);
            let mut h = [0usize; 4];
            for &b in seed.served() {
                h[((b + flen / 2) / flen).min(3) as usize] += 1;
            }
            eprintln!(
                "  seed has sent fragments 0x: {}, 1x: {}, 2x: {}, 3x+: {}",
                h[0], h[1], h[2], h[3]
            );
        }
        if let Some(k) = dump
            && reporting
            && let Some(node) = s.node(k)
            && let Some(core) = node.swarm(&s.swarm_id())
        {
            let ep = node.endpoint();
            for l in core.describe_sessions(ep) {
                eprintln!("  node {k}: {l}");
            }
            eprintln!(
                "  node {k}: downlink {} B, uplink {} B, verified {} B, wasted {} B, uploaded {} B",
                s.sim.downlink_stats(s.nodes[k].id).bytes,
                s.sim.uplink_stats(s.nodes[k].id).bytes,
                core.stats().downloaded,
                core.stats().wasted,
                core.stats().uploaded
            );
        }
        // Every fetcher's data verified is not enough: its completion time is taken when its
        // node reports the swarm complete (files in place), which may come a turn later.
        s.all_up_complete() && s.nodes[1..].iter().all(|n| n.completed_at.is_some())
    });
    let wall = wall.elapsed();
    let m = size.div_ceil(u64::from(fragment)) as f64;
    let bound = (1.0 + (peers as f64).log2() / m) * (size as f64 * 8.0) / rate as f64;
    let times: Vec<f64> = s.nodes[1..]
        .iter()
        .filter_map(|n| n.completed_at.map(|t| (t - start).as_secs_f64()))
        .collect();
    let last = times.iter().copied().fold(0.0, f64::max);
    let first = times.iter().copied().fold(f64::INFINITY, f64::min);
    let seed_up = s.core(0).stats().uploaded;
    let wasted: u64 = (1..s.nodes.len()).map(|k| s.core(k).stats().wasted).sum();
    let drops: u64 = s
        .nodes
        .iter()
        .map(|n| s.sim.uplink_stats(n.id).queue_drops + s.sim.downlink_stats(n.id).queue_drops)
        .sum();
    println!(
        "swarm-sim: {} MiB, 1 seed + {peers} fetchers, {mbit} Mbit/s up and down per node, {latency_ms} ms one way, {} fragments of {} KiB",
        size >> 20,
        m,
        fragment >> 10
    );
    let block_bytes: u64 = (0..s.nodes.len())
        .filter_map(|k| s.node(k).and_then(|n| n.swarm(&s.swarm_id())))
        .map(|c| c.stats().uploaded)
        .sum();
    let link_bytes: u64 = s.nodes.iter().map(|n| s.sim.uplink_stats(n.id).bytes).sum();
    println!(
        "block bytes sent {:.1} % of the bytes the uplinks carried (the rest: headers, acks, retransmissions)",
        100.0 * block_bytes as f64 / link_bytes.max(1) as f64
    );
    let (down_dgrams, down_bytes) = (1..s.nodes.len())
        .map(|k| s.sim.downlink_stats(s.nodes[k].id))
        .fold((0u64, 0u64), |(d, b), l| (d + l.datagrams, b + l.bytes));
    let fetched = (size * peers as u64) as f64;
    println!(
        "fetchers' downlinks: {:.1} % of their bytes were the blocks they needed; {:.0} datagrams per MiB of them",
        100.0 * fetched / down_bytes.max(1) as f64,
        down_dgrams as f64 / (fetched / f64::from(1 << 20))
    );
    println!(
        "seed uploaded {:.2} copies; fetchers wasted {} MiB; link queue drops {drops}",
        seed_up as f64 / size as f64,
        wasted >> 20
    );
    let mut order: Vec<(usize, f64)> = s.nodes[1..]
        .iter()
        .enumerate()
        .filter_map(|(k, n)| n.completed_at.map(|t| (k + 1, (t - start).as_secs_f64())))
        .collect();
    order.sort_by(|a, b| a.1.total_cmp(&b.1));
    let line: Vec<String> = order.iter().map(|(k, t)| format!("{k}:{t:.2}")).collect();
    // What each fetcher got from the seed, in the order of completion: a seed that shares its
    // upload unevenly makes stragglers of those it favours (they must relay the most).
    let seed_addr = s.sim.addr(s.nodes[0].id);
    let from_seed: Vec<String> = order
        .iter()
        .map(|(k, _)| {
            let got = s
                .core(*k)
                .stats()
                .from_peer
                .get(&seed_addr)
                .copied()
                .unwrap_or(0);
            format!("{k}:{}", got >> 20)
        })
        .collect();
    println!("completions (node:s): {}", line.join(" "));
    println!("MiB from the seed, same order: {}", from_seed.join(" "));
    if !done {
        println!(
            "RESULT incomplete after {limit_s} s of virtual time ({} of {peers} done)",
            times.len()
        );
        std::process::exit(1);
    }
    println!(
        "RESULT last completion {last:.2} s (first {first:.2} s), bound {bound:.2} s, ratio {:.3}, wall {:.1} s",
        last / bound,
        wall.as_secs_f64()
    );
}
