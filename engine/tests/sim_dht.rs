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

/// Two peer processes on two subnets, no tracker, no shared multicast: the seed and the
/// fetcher know only a DHT node (a bare `DhtNode` on a third subnet); the fetch completes
/// through the DHT alone, with 1 % loss.
#[test]
fn peer_nodes_in_two_subnets_fetch_through_the_dht_alone() {
    use st_engine::driver::Core;
    use st_engine::node::{NodeConfig, NodeEvent, PeerNode, SwarmPhase, SwarmSpec};
    use st_engine::sim::{PipeConfig, Sim};
    use st_engine::storage::mem::{MemStore, Shared};

    const FRAG: u32 = 16 * 1024;
    st_engine::sim::for_seeds(&[1, 2], |seed| {
        let mut sim = Sim::new(
            seed,
            PipeConfig {
                latency: Duration::from_millis(20),
                loss: 0.01,
                ..PipeConfig::default()
            },
        );
        let mut rng = st_engine::rng::Rng::new(seed);
        let router: SocketAddr = "10.9.0.1:6881".parse().unwrap();
        let now = sim.now();
        sim.add_core_at(
            router,
            st_engine::dht::DhtNode::new(DhtConfig::default(), now, seed),
        );
        let mut data = vec![0u8; 300_000];
        rng.fill(&mut data);
        let mut id = [0u8; 32];
        rng.fill(&mut id);
        let full = MemStore::full(&data, FRAG);
        let spec = |fetch: bool| SwarmSpec {
            id,
            name: "dht-only".into(),
            total_length: data.len() as u64,
            fragment_length: FRAG,
            trackers: Vec::new(),
            fetch,
            unrecorded_data: false,
            private: false,
        };
        let node = |addr: SocketAddr, rng: &mut st_engine::rng::Rng| {
            let mut peer_id = [0u8; 16];
            rng.fill(&mut peer_id);
            let mut cfg = NodeConfig {
                peer_id,
                port: addr.port(),
                dht: Some(DhtConfig {
                    bootstrap: vec![router],
                    ipv6: false,
                    ..DhtConfig::default()
                }),
                seed: rng.next_u64(),
                ..NodeConfig::default()
            };
            cfg.stop_when_complete = false;
            PeerNode::new(cfg, sim.now())
        };
        let seed_addr: SocketAddr = "10.1.0.2:6881".parse().unwrap();
        let fetch_addr: SocketAddr = "10.2.0.2:6881".parse().unwrap();
        let mut s = node(seed_addr, &mut rng);
        s.add_swarm(sim.now(), spec(false), Box::new(full.clone()))
            .unwrap();
        let mut f = node(fetch_addr, &mut rng);
        let store = Shared::new(MemStore::empty_like(&full));
        f.add_swarm(sim.now(), spec(true), Box::new(store.clone()))
            .unwrap();
        sim.add_core_at(seed_addr, s);
        let fid = sim.add_core_at(fetch_addr, f);
        let limit = sim.now() + Duration::from_secs(300);
        let mut from_dht = 0;
        let mut complete = false;
        while !complete && sim.now() < limit {
            let to = sim.now() + Duration::from_millis(100);
            while sim.step(to) {}
            let node = sim.core::<PeerNode>(fid).unwrap();
            while let Some(ev) = node.poll_event() {
                if let NodeEvent::Progress(p) = &ev {
                    from_dht = from_dht.max(p.found.dht);
                    assert_eq!(p.found.trackers + p.found.lan, 0);
                }
            }
            complete = node.phase(&id) == Some(SwarmPhase::Complete);
            let _ = node.poll_timeout();
        }
        eprintln!(
            "seed {seed}: complete {complete} at {:?}, peers from the DHT {from_dht}",
            sim.now()
        );
        assert!(complete, "seed {seed}: the fetch did not complete");
        assert!(
            store.0.borrow().data == data,
            "seed {seed}: different bytes"
        );
        let n = sim.core::<PeerNode>(fid).unwrap();
        let st = n.dht().unwrap().stats();
        eprintln!("fetcher DHT: {st:?}");
        assert!(
            st.peers_found > 0,
            "the fetcher found its peer through a DHT search"
        );
    });
}

/// A tenth of the network is hostile (garbage replies, ids crafted next to every target at
/// addresses where nobody is, 200 made-up peers without a token, no tokens at all), and one
/// address floods a node with 10 000 queries: lookups still find every announced swarm, the
/// flood gets at most 50 answers, and every bound holds on every honest node.
#[test]
fn hostile_nodes_and_a_flood_neither_break_lookups_nor_grow_memory() {
    use st_engine::sim::dht::{Attack, Hostile};
    let cfg = DhtNetConfig {
        nodes: 300,
        latency: Duration::from_millis(30),
        loss: 0.02,
        join_over: Duration::from_secs(30),
        seed: 11,
    };
    let dcfg = DhtConfig::default();
    let mut net = DhtNet::build(&cfg, |_| DhtConfig::default());
    let attacks = [
        Attack::Garbage,
        Attack::FakeClosest,
        Attack::HugeValues,
        Attack::NoToken,
    ];
    let mut rng = st_engine::rng::Rng::new(99);
    for h in 0..30u8 {
        let addr: SocketAddr = format!("10.240.{h}.1:6881").parse().unwrap();
        let now = net.sim.now();
        net.sim.add_core_at(
            addr,
            Hostile::new(attacks[usize::from(h) % 4], u64::from(h), now),
        );
        // Each is introduced to 20 honest nodes (as a node found in replies would be).
        for _ in 0..20 {
            let i = rng.below(net.nodes.len() as u64) as usize;
            if let Some(d) = net.node(i) {
                d.ping(now, addr);
            }
        }
    }
    net.run_for(Duration::from_secs(60));
    let mut announcers = Vec::new();
    for s in 0..20 {
        let i = net.random_alive(&announcers);
        net.announce(i, key(100 + s));
        announcers.push(i);
    }
    net.run_for(Duration::from_secs(60));
    let mut found = 0;
    let n = 100;
    for q in 0..n {
        let s = q % 20;
        let who = net.random_alive(&[announcers[s as usize]]);
        let want = net.addr(announcers[s as usize]);
        if net
            .search(who, key(100 + s), want, Duration::from_secs(40))
            .found
        {
            found += 1;
        }
    }
    assert!(
        found * 100 >= n * 99,
        "{found} of {n} searches found the peer"
    );

    // The flood: 10 000 get_peers from one address at node 5.
    let victim = net.addr(5);
    let now = net.sim.now();
    let flooder = net.sim.add_core_at(
        "10.241.0.1:6881".parse().unwrap(),
        Hostile::new(
            Attack::Flood {
                victim,
                count: 10_000,
            },
            7,
            now,
        ),
    );
    let before = net.node(5).unwrap().stats().clone();
    net.run_for(Duration::from_secs(20));
    let after = net.node(5).unwrap().stats().clone();
    let answered = net.sim.core::<Hostile>(flooder).unwrap().replies;
    assert!(answered <= 50, "the flood got {answered} replies");
    // (2 % of the flood is lost on the way.)
    assert!(
        after.limited - before.limited >= 9_500,
        "{} dropped",
        after.limited - before.limited
    );
    assert!(after.reply_bytes_sent - before.reply_bytes_sent < 64 * 1024);
    // Every bound holds everywhere.
    for i in 0..net.nodes.len() {
        let now = net.sim.now();
        let Some(d) = net.node(i) else { continue };
        assert!(d.pending() <= dcfg.max_pending);
        assert!(d.lookups() <= dcfg.max_lookups);
        assert!(d.stored().0 <= dcfg.max_keys);
        assert!(d.limited_sources(now).0 <= dcfg.ip_table);
        assert!(d.nodes() <= 2 * 160 * dcfg.k);
    }
}

/// A private swarm is neither announced to nor looked up in the DHT, nor announced on the
/// LAN, while a public one on the same node is (spec/dht.md §16).
#[test]
fn a_private_swarm_stays_out_of_the_dht_and_off_the_lan() {
    use st_engine::discovery::lan::LanConfig;
    use st_engine::node::{NodeConfig, PeerNode, SwarmSpec};
    use st_engine::sim::{PipeConfig, Sim};
    use st_engine::storage::mem::MemStore;

    let mut sim = Sim::new(5, PipeConfig::default());
    let router: SocketAddr = "10.9.0.1:6881".parse().unwrap();
    let now = sim.now();
    let r = sim.add_core_at(
        router,
        st_engine::dht::DhtNode::new(DhtConfig::default(), now, 5),
    );
    let data = vec![7u8; 100_000];
    let full = MemStore::full(&data, 16 * 1024);
    let spec = |id: u8, private: bool| SwarmSpec {
        id: [id; 32],
        name: format!("s{id}"),
        total_length: data.len() as u64,
        fragment_length: 16 * 1024,
        trackers: Vec::new(),
        fetch: false,
        unrecorded_data: false,
        private,
    };
    let group = LanConfig::default().groups[0];
    let mut n = PeerNode::new(
        NodeConfig {
            port: 6881,
            dht: Some(DhtConfig {
                bootstrap: vec![router],
                ipv6: false,
                ..DhtConfig::default()
            }),
            lan: Some(LanConfig {
                groups: vec![group],
                ..LanConfig::default()
            }),
            ..NodeConfig::default()
        },
        now,
    );
    n.add_swarm(now, spec(1, true), Box::new(full.clone()))
        .unwrap();
    n.add_swarm(now, spec(2, false), Box::new(full.clone()))
        .unwrap();
    let id = sim.add_core_at("10.1.0.2:6881".parse().unwrap(), n);
    // A fetcher of both on the LAN, without DHT: it can learn of the seed only by LAN.
    let mut f = PeerNode::new(
        NodeConfig {
            port: 6881,
            lan: Some(LanConfig {
                groups: vec![group],
                ..LanConfig::default()
            }),
            seed: 9,
            peer_id: [9; 16],
            ..NodeConfig::default()
        },
        now,
    );
    for (i, private) in [(1u8, true), (2, false)] {
        let mut sp = spec(i, private);
        sp.fetch = true;
        f.add_swarm(now, sp, Box::new(MemStore::empty_like(&full)))
            .unwrap();
    }
    let listener = sim.add_core_at("10.1.0.3:6881".parse().unwrap(), f);
    sim.join_group(id, group);
    sim.join_group(listener, group);
    let until = sim.now() + Duration::from_secs(20);
    while sim.step(until) {}
    let node = sim.core::<PeerNode>(id).unwrap();
    let st = node.dht().unwrap().stats().clone();
    assert_eq!(st.searches, 1, "only the public swarm was searched for");
    assert!(st.announces_sent >= 1);
    let router_store = sim.core::<st_engine::dht::DhtNode>(r).unwrap().stored();
    assert_eq!(router_store, (1, 1), "one key announced: the public one");
    use st_engine::node::SwarmPhase;
    let f = sim.core::<PeerNode>(listener).unwrap();
    assert_eq!(
        f.phase(&[2; 32]),
        Some(SwarmPhase::Complete),
        "the public swarm is found on the LAN"
    );
    assert_eq!(
        f.phase(&[1; 32]),
        Some(SwarmPhase::Running),
        "the private one is not announced there"
    );
}
