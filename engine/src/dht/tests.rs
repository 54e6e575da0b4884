//! Unit tests of the DHT node: what it answers, to whom, and within which bounds.

use super::*;
use st_proto::krpc::{Body, Message, Query, Want, parse};

fn t0() -> Time {
    Time::from_micros(1_000_000)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Every datagram the node has to send.
fn sent(d: &mut DhtNode, now: Time) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut buf = vec![0u8; 2048];
    let mut v = Vec::new();
    while let Some(t) = d.poll_transmit(now, &mut buf) {
        v.push((t.remote, buf[..t.len].to_vec()));
    }
    v
}

fn query(tid: u16, id: Id, q: Query<'_>, read_only: bool) -> Vec<u8> {
    let tid = tid.to_be_bytes();
    let mut out = Vec::new();
    Message {
        tid: &tid,
        version: None,
        ip: None,
        read_only,
        body: Body::Query {
            id,
            want: Want::default(),
            query: q,
        },
    }
    .encode(&mut out);
    out
}

fn node(read_only: bool) -> DhtNode {
    DhtNode::new(
        DhtConfig {
            read_only,
            ipv6: false,
            ..DhtConfig::default()
        },
        t0(),
        42,
    )
}

#[test]
fn a_flood_from_one_source_gets_fifty_replies_and_one_ping() {
    let mut d = node(false);
    let from = addr("10.1.0.1:5000");
    let mut replies = 0;
    let mut pings = 0;
    for i in 0..1000u16 {
        let mut id = [0u8; 20];
        id[..2].copy_from_slice(&i.to_be_bytes());
        id[19] = 1;
        d.handle(
            t0(),
            from,
            &query(i, id, Query::GetPeers { info_hash: [9; 20] }, false),
        );
        for (to, m) in sent(&mut d, t0()) {
            assert_eq!(to, from);
            match parse(&m).unwrap().body {
                Body::Reply(r) => {
                    assert!(r.token.is_some(), "get_peers replies always carry a token");
                    replies += 1;
                }
                Body::Query {
                    query: Query::Ping, ..
                } => pings += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(replies, 50);
    assert_eq!(pings, 1, "a querier is pinged once, not once per query");
    assert_eq!(d.stats().limited, 950);
}

#[test]
fn announces_need_a_token_given_to_that_ip_and_are_then_found() {
    let mut d = node(false);
    let a = addr("10.1.0.1:5000");
    let key = [7u8; 20];
    d.handle(
        t0(),
        a,
        &query(1, [1; 20], Query::GetPeers { info_hash: key }, false),
    );
    let token = sent(&mut d, t0())
        .into_iter()
        .find_map(|(_, m)| match parse(&m).unwrap().body {
            Body::Reply(r) => r.token.map(<[u8]>::to_vec),
            _ => None,
        })
        .expect("a token");
    // From another IP the token is refused (error 203).
    let announce = |token: &[u8]| {
        query(
            2,
            [1; 20],
            Query::AnnouncePeer {
                info_hash: key,
                port: 0,
                implied_port: true,
                token,
            },
            false,
        )
    };
    let b = addr("10.2.0.1:5000");
    d.handle(t0(), b, &announce(&token));
    let r = sent(&mut d, t0());
    assert!(
        r.iter()
            .any(|(_, m)| matches!(parse(m).unwrap().body, Body::Error { code: 203, .. }))
    );
    d.handle(t0(), a, &announce(&token));
    sent(&mut d, t0());
    assert_eq!(d.stored(), (1, 1));
    // Another node asking for the key gets the announcer, with its source port.
    let c = addr("10.3.0.1:5000");
    d.handle(
        t0(),
        c,
        &query(3, [3; 20], Query::GetPeers { info_hash: key }, false),
    );
    let values: Vec<SocketAddr> = sent(&mut d, t0())
        .into_iter()
        .find_map(|(_, m)| match parse(&m).unwrap().body {
            Body::Reply(r) => Some(r.values),
            _ => None,
        })
        .unwrap();
    assert_eq!(values, vec![a]);
}

#[test]
fn a_read_only_node_answers_nothing_and_read_only_queriers_are_not_pinged() {
    let mut ro = node(true);
    ro.handle(
        t0(),
        addr("10.1.0.1:1"),
        &query(1, [1; 20], Query::Ping, false),
    );
    assert!(sent(&mut ro, t0()).is_empty());
    let mut full = node(false);
    full.handle(
        t0(),
        addr("10.1.0.1:1"),
        &query(1, [1; 20], Query::Ping, true),
    );
    let out = sent(&mut full, t0());
    assert_eq!(out.len(), 1, "one reply, no ping of a read-only querier");
    assert!(matches!(parse(&out[0].1).unwrap().body, Body::Reply(_)));
    // Our own queries say read-only when we are.
    let mut ro = DhtNode::new(
        DhtConfig {
            read_only: true,
            ipv6: false,
            bootstrap: vec![addr("10.9.0.1:6881")],
            ..DhtConfig::default()
        },
        t0(),
        1,
    );
    let q = sent(&mut ro, t0());
    assert!(!q.is_empty());
    assert!(q.iter().all(|(_, m)| parse(m).unwrap().read_only));
}

#[test]
fn unknown_methods_get_204_and_garbage_gets_nothing() {
    let mut d = node(false);
    let from = addr("10.1.0.1:1");
    d.handle(
        t0(),
        from,
        &query(
            1,
            [1; 20],
            Query::Unknown {
                method: b"sample_infohashes",
            },
            false,
        ),
    );
    let out = sent(&mut d, t0());
    assert!(
        out.iter()
            .any(|(_, m)| matches!(parse(m).unwrap().body, Body::Error { code: 204, .. }))
    );
    d.handle(t0(), from, b"d1:x");
    d.handle(t0(), from, b"dxxxxxxxxxx");
    assert!(sent(&mut d, t0()).is_empty());
    assert_eq!(d.stats().malformed, 2);
}

#[test]
fn the_saved_state_brings_back_the_id_and_bootstraps_from_its_nodes() {
    // A node that knows one node (it answered a query).
    let mut a = DhtNode::new(
        DhtConfig {
            ipv6: false,
            bootstrap: vec![addr("10.9.0.1:6881")],
            ..DhtConfig::default()
        },
        t0(),
        5,
    );
    let (to, q) = sent(&mut a, t0()).remove(0);
    let m = parse(&q).unwrap();
    let mut reply = Vec::new();
    Message {
        tid: m.tid,
        version: None,
        ip: Some(addr("10.5.0.5:6881")),
        read_only: false,
        body: Body::Reply(st_proto::krpc::Reply {
            id: [0x55; 20],
            ..Default::default()
        }),
    }
    .encode(&mut reply);
    a.handle(t0(), to, &reply);
    assert_eq!(a.nodes(), 1);
    assert_eq!(a.external_ip(), Some("10.5.0.5".parse().unwrap()));
    let state = st_proto::krpc::State::decode(&a.state()).unwrap();
    assert_eq!(state.id, a.id());
    assert_eq!(state.nodes, vec![([0x55; 20], to)]);
    // Restarted with that state and no router: it asks the remembered node at once.
    let mut b = DhtNode::new(
        DhtConfig {
            id: Some(state.id),
            restored: state.nodes,
            ipv6: false,
            ..DhtConfig::default()
        },
        t0(),
        6,
    );
    assert_eq!(b.id(), a.id());
    let out = sent(&mut b, t0());
    assert!(out.iter().any(|(t, _)| *t == to));
}

#[test]
fn ipv6_nodes_live_in_their_own_table_and_go_to_whoever_wants_n6() {
    let mut d = DhtNode::new(DhtConfig::default(), t0(), 8);
    let v6 = addr("[fd00::7]:6881");
    d.ping(t0(), v6);
    let (to, q) = sent(&mut d, t0()).remove(0);
    assert_eq!(to, v6);
    let m = parse(&q).unwrap();
    let mut reply = Vec::new();
    Message {
        tid: m.tid,
        version: None,
        ip: None,
        read_only: false,
        body: Body::Reply(st_proto::krpc::Reply {
            id: [0x66; 20],
            ..Default::default()
        }),
    }
    .encode(&mut reply);
    d.handle(t0(), v6, &reply);
    assert_eq!(d.nodes(), 1);
    let ask = |want: Want| {
        let mut out = Vec::new();
        Message {
            tid: b"q1",
            version: None,
            ip: None,
            read_only: false,
            body: Body::Query {
                id: [1; 20],
                want,
                query: Query::FindNode { target: [0x66; 20] },
            },
        }
        .encode(&mut out);
        out
    };
    let v4 = addr("10.1.0.1:1");
    d.handle(t0(), v4, &ask(Want::default()));
    d.handle(t0(), v4, &ask(Want { v4: true, v6: true }));
    let replies: Vec<_> = sent(&mut d, t0())
        .into_iter()
        .filter_map(|(_, m)| match parse(&m).unwrap().body {
            Body::Reply(r) => Some((r.nodes.to_vec(), r.nodes6.to_vec())),
            _ => None,
        })
        .collect();
    assert_eq!(replies.len(), 2);
    assert!(
        replies[0].1.is_empty(),
        "an IPv4 querier without want gets IPv4 nodes only"
    );
    let n6: Vec<_> = st_proto::krpc::nodes6(&replies[1].1).collect();
    assert_eq!(n6, vec![([0x66; 20], v6)], "want n6 gets the IPv6 node");
}
