//! DHT lookup benchmark in the simulator (issue #15; run by `bench/dht.sh`).
//!
//! ```text
//! dht_sim [--nodes 10000] [--swarms 50] [--searches 500] [--latency-ms 50] [--loss 0]
//!         [--join-s 300] [--settle-s 120] [--seed 1]
//! ```
//! `--nodes` production `DhtNode`s (each on its own /24), paths of `--latency-ms` one way
//! (100 ms round trip by default), join one after another over `--join-s` through node 0 and
//! two earlier nodes, then settle. `--swarms` random nodes announce one key each; then
//! `--searches` lookups from random other nodes. Prints the median and p99 of the virtual time
//! to the first peer and of the queries per lookup, the share of lookups that found the
//! announcer, the reply/query size ratio over the whole network, and the wall time.

// A benchmark driver: it reports wall time (engine/clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::time::{Duration, Instant};

use st_engine::dht::DhtConfig;
use st_engine::sim::dht::{DhtNet, DhtNetConfig};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let nodes: usize = arg(&args, "--nodes", 10_000);
    let swarms: u64 = arg(&args, "--swarms", 50);
    let searches: u64 = arg(&args, "--searches", 500);
    let latency: u64 = arg(&args, "--latency-ms", 50);
    let loss: f64 = arg(&args, "--loss", 0.0);
    let join_s: u64 = arg(&args, "--join-s", 300);
    let settle_s: u64 = arg(&args, "--settle-s", 120);
    let seed: u64 = arg(&args, "--seed", 1);
    let wall = Instant::now();
    let cfg = DhtNetConfig {
        nodes,
        latency: Duration::from_millis(latency),
        loss,
        join_over: Duration::from_secs(join_s),
        seed,
    };
    let mut net = DhtNet::build(&cfg, |_| DhtConfig::default());
    net.run_for(Duration::from_secs(settle_s));
    let built = wall.elapsed();
    let sizes: Vec<usize> = (0..nodes)
        .filter_map(|i| net.node(i).map(|d| d.nodes()))
        .collect();
    let mean_table = sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64;
    let mut rng = st_engine::rng::Rng::new(seed ^ 0xbeef);
    let mut keys = Vec::new();
    let mut announcers = Vec::new();
    for _ in 0..swarms {
        let mut k = [0u8; 20];
        rng.fill(&mut k);
        let i = net.random_alive(&announcers);
        net.announce(i, k);
        keys.push(k);
        announcers.push(i);
    }
    net.run_for(Duration::from_secs(60));
    let (mut first, mut queries) = (Vec::new(), Vec::new());
    let mut found = 0;
    for q in 0..searches {
        let s = (q % swarms) as usize;
        let who = net.random_alive(&[announcers[s]]);
        let want = net.addr(announcers[s]);
        let r = net.search(who, keys[s], want, Duration::from_secs(60));
        if r.found {
            found += 1;
            if let Some(t) = r.stats.first_peer {
                first.push(t.as_secs_f64());
            }
        }
        queries.push(f64::from(r.stats.queries));
    }
    let (mut qb, mut qn, mut rb, mut rn) = (0u64, 0u64, 0u64, 0u64);
    for i in 0..nodes {
        if let Some(d) = net.node(i) {
            let s = d.stats();
            qb += s.query_bytes_sent;
            qn += s.queries_sent;
            rb += s.reply_bytes_sent;
            rn += s.replies_sent;
        }
    }
    println!(
        "nodes {nodes}  rtt {} ms  loss {loss}  mean routing table {mean_table:.1} nodes",
        2 * latency
    );
    println!(
        "lookups {searches}: found {found} ({:.1} %)",
        100.0 * found as f64 / searches as f64
    );
    println!(
        "time to first peer (virtual): median {:.3} s  p99 {:.3} s",
        pct(&mut first, 0.5),
        pct(&mut first, 0.99)
    );
    println!(
        "queries per lookup: median {:.0}  p99 {:.0}",
        pct(&mut queries, 0.5),
        pct(&mut queries, 0.99)
    );
    println!(
        "sizes: query {:.0} B, reply {:.0} B on average; reply/query byte ratio {:.2}",
        qb as f64 / qn.max(1) as f64,
        rb as f64 / rn.max(1) as f64,
        (rb as f64 / rn.max(1) as f64) / (qb as f64 / qn.max(1) as f64)
    );
    println!(
        "wall: {:.1} s (network built in {:.1} s)",
        wall.elapsed().as_secs_f64(),
        built.as_secs_f64()
    );
}
