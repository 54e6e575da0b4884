//! Real sockets: two reactors on 127.0.0.1 (ephemeral ports) move 64 MiB intact.

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
    let (addr_tx, addr_rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        let mut r = Reactor::bind(ReactorConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            ..rcfg
        })
        .unwrap();
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
            if got >= TOTAL || Instant::now() > deadline {
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
    let mut r = Reactor::bind(ReactorConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..ReactorConfig::default()
    })
    .unwrap();
    let mut ep = st_engine::transport::Endpoint::new(client_cfg, 1);
    let now = r.now();
    let h = ep.connect(now, server_addr);
    let mut data = vec![0u8; TOTAL];
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
        while connected && off < TOTAL {
            match ep.send(h, &data[off..off + MSG]) {
                Ok(()) => off += MSG,
                Err(SendError::Blocked) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        let done = off >= TOTAL && ep.unacked(h) == Some(0);
        if done || Instant::now() > deadline {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    let (got, hash) = server.join().unwrap();
    assert_eq!(got, TOTAL, "server received everything");
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
