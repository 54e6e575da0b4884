//! The DHT in the simulator: a thousand production `DhtNode`s with loss and churn, hostile
//! nodes, and whole peer nodes in two subnets that find each other through the DHT alone.

use std::net::SocketAddr;
use std::time::Duration;

use st_engine::dht::{DhtConfig, Id};
use st_engine::sim::dht::{DhtNet, DhtNetConfig, SearchResult};

fn key(i: u64) -> Id {
    let mut k = [0u8; 20];
    st_engine::rng::Rng::new(i ^ 0x5eed).fill(&mut k);
    k
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn a_thousand_nodes_with_loss_and_churn_find_every_announced_swarm() {
    let cfg = DhtNetConfig {
        nodes: 1000,
        latency: Duration::from_millis(50),
        loss: 0.05,
        join_over: Duration::from_secs(100),
        seed: 7,
    };
    let mut net = DhtNet::build(&cfg, |_| DhtConfig::default());
    net.run_for(Duration::from_secs(60));
    let sizes: Vec<usize> = (0..net.nodes.len())
        .filter_map(|i| net.node(i).map(|d| d.nodes()))
        .collect();
    let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
    assert!(
        mean >= 30.0,
        "routing tables hold {mean:.1} nodes on average"
    );
    // 40 swarms, each announced by one node.
    let mut announcers = Vec::new();
    for s in 0..40 {
        let i = net.random_alive(&announcers);
        net.announce(i, key(s));
        announcers.push(i);
    }
    net.run_for(Duration::from_secs(60));
    // 20 % of the nodes go away (the announcers stay: their address is what is looked for).
    let gone = net.churn(0.2, &announcers);
    assert!(gone > 150, "{gone} crashed");
    net.run_for(Duration::from_secs(20));
    let mut results: Vec<SearchResult> = Vec::new();
    for q in 0..300u64 {
        let s = q % 40;
        let who = net.random_alive(&[announcers[s as usize]]);
        let want: SocketAddr = net.addr(announcers[s as usize]);
        results.push(net.search(who, key(s), want, Duration::from_secs(40)));
    }
    let found = results.iter().filter(|r| r.found).count();
    let msgs: Vec<f64> = results.iter().map(|r| f64::from(r.stats.queries)).collect();
    let first: Vec<f64> = results
        .iter()
        .filter_map(|r| r.stats.first_peer)
        .map(|d| d.as_secs_f64())
        .collect();
    eprintln!(
        "found {found}/{}: queries per lookup median {} p99 {}; time to first peer median {:.3} s p99 {:.3} s",
        results.len(),
        percentile(msgs.clone(), 0.5),
        percentile(msgs, 0.99),
        percentile(first.clone(), 0.5),
        percentile(first, 0.99)
    );
    assert!(
        found * 100 >= results.len() * 99,
        "{found} of {} searches found the announced peer",
        results.len()
    );
}
