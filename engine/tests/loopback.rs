//! Real sockets: two reactors on 127.0.0.1 (ephemeral ports) move 64 MiB intact.

// A real-socket test driver: it bounds its wait in wall time (engine/clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::ops::ControlFlow;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use st_engine::reactor::{Reactor, ReactorConfig};
use st_engine::rng::Rng;
use st_engine::transport::{Config, Event, SendError};

const TOTAL: usize = 64 << 20;
const MSG: usize = 1 << 20;

fn run_pair(client_cfg: Config, server_cfg: Config, rcfg: ReactorConfig) {
    run_pair_on("127.0.0.1:0", TOTAL, client_cfg, server_cfg, rcfg);
}

fn run_pair_on(
    bind: &str,
    total: usize,
    client_cfg: Config,
    server_cfg: Config,
    rcfg: ReactorConfig,
) {
    let bind: std::net::SocketAddr = bind.parse().unwrap();
    let (addr_tx, addr_rx) = mpsc::channel();
    let client_rcfg = rcfg.clone();
    let server = std::thread::spawn(move || {
        let mut r = Reactor::bind(ReactorConfig { bind, ..rcfg }).unwrap();
        addr_tx.send(r.local_addr()).unwrap();
        let mut ep = st_engine::transport::Endpoint::new(server_cfg, 2);
        let mut h = None;
        let mut got = 0usize;
        let mut hash = Sha256::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        r.run(&mut ep, Duration::from_millis(50), |ep, _| {
            while let Some(ev) = ep.poll_event() {
                if let Event::Connected(c) = ev {
                    h = Some(c);
                }
            }
            if let Some(c) = h {
                while let Some(m) = ep.recv(c) {
                    got += m.len();
                    hash.update(&m);
                }
            }
            if got >= total || Instant::now() > deadline {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        // Linger briefly so the last ACKs reach the client.
        let until = Instant::now() + Duration::from_millis(300);
        r.run(&mut ep, Duration::from_millis(10), |_, _| {
            if Instant::now() > until {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        (got, hash.finalize().to_vec())
    });
    let server_addr = addr_rx.recv().unwrap();
    // The sender uses the same reactor settings (without offloads, its GSO batches really go
    // through split_queue).
    let mut r = Reactor::bind(ReactorConfig {
        bind,
        ..client_rcfg.clone()
    })
    .unwrap();
    if !client_rcfg.gso {
        assert!(!r.gso(), "sender without GSO");
    }
    let mut ep = st_engine::transport::Endpoint::new(client_cfg, 1);
    let now = r.now();
    let h = ep.connect(now, server_addr);
    let mut data = vec![0u8; total];
    Rng::new(99).fill(&mut data);
    let want = Sha256::digest(&data).to_vec();
    let mut off = 0;
    let mut connected = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    r.run(&mut ep, Duration::from_millis(50), |ep, _| {
        while let Some(ev) = ep.poll_event() {
            if let Event::Connected(_) = ev {
                connected = true;
            }
        }
        while connected && off < total {
            match ep.send(h, &data[off..off + MSG]) {
                Ok(()) => off += MSG,
                Err(SendError::Blocked) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        let done = off >= total && ep.unacked(h) == Some(0);
        if done || Instant::now() > deadline {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    let (got, hash) = server.join().unwrap();
    assert_eq!(got, total, "server received everything");
    assert_eq!(hash, want, "bytes intact");
    assert_eq!(ep.unacked(h), Some(0));
}

#[test]
fn loopback_64_mib_default_mtu() {
    let server = Config {
        accept: true,
        ..Config::default()
    };
    run_pair(Config::default(), server, ReactorConfig::default());
}

#[test]
fn loopback_64_mib_large_mtu_without_offloads() {
    let client = Config::default().with_fixed_mtu(16_000);
    let server = Config {
        accept: true,
        ..Config::default().with_fixed_mtu(16_000)
    };
    run_pair(
        client,
        server,
        ReactorConfig {
            gso: false,
            gro: false,
            ..ReactorConfig::default()
        },
    );
}

#[test]
fn loopback_ipv6() {
    // Skip where the machine has no IPv6 loopback.
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let server = Config {
        accept: true,
        ..Config::default()
    };
    run_pair_on(
        "[::1]:0",
        8 << 20,
        Config::default(),
        server,
        ReactorConfig::default(),
    );
}
