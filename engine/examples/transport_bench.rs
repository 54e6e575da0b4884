//! Bulk transfer benchmark over the real reactor (used by `bench/transport.sh`).
//!
//! ```text
//! transport_bench --listen 127.0.0.1:7000 [--mtu N] [--no-gso] [--no-gro]
//! transport_bench --connect 127.0.0.1:7000 [--bytes 1G] [--msg 1M] [--mtu N] [--idle N] [--no-gso] [--no-gro]
//! ```
//! Both sides print one `RESULT` line: bytes, seconds, Gbit/s, CPU seconds (user+system of the
//! process) and CPU seconds per GiB.

// A benchmark driver: it measures wall time (engine/clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use st_engine::reactor::{Reactor, ReactorConfig};
use st_engine::transport::{Config, Endpoint, Event, SendError};

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn parse_size(s: &str) -> u64 {
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().expect("size") * mul
}

fn report(role: &str, bytes: u64, secs: f64, cpu: f64, r: &Reactor, extra: &str) {
    let gib = bytes as f64 / (1u64 << 30) as f64;
    println!(
        "RESULT role={role} bytes={bytes} secs={secs:.3} gbps={:.3} cpu_s={cpu:.3} cpu_s_per_gib={:.3} gso={} gro={} {extra} {:?}",
        bytes as f64 * 8.0 / secs / 1e9,
        cpu / gib.max(1e-9),
        r.gso(),
        r.gro(),
        r.stats()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut listen: Option<SocketAddr> = None;
    let mut connect: Option<SocketAddr> = None;
    let mut bytes = 1u64 << 30;
    let mut msg = 1usize << 20;
    let mut mtu: Option<u16> = None;
    let mut idle = 0usize;
    let mut rcfg = ReactorConfig::default();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--listen" => listen = Some(v.parse().expect("address")),
            "--connect" => connect = Some(v.parse().expect("address")),
            "--bytes" => bytes = parse_size(&v),
            "--msg" => msg = parse_size(&v) as usize,
            "--mtu" => mtu = Some(v.parse().expect("mtu")),
            "--idle" => idle = v.parse().expect("count"),
            "--no-gso" => {
                rcfg.gso = false;
                i -= 1;
            }
            "--no-gro" => {
                rcfg.gro = false;
                i -= 1;
            }
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    let mut cfg = Config::default();
    if let Some(m) = mtu {
        cfg = cfg.with_fixed_mtu(m);
    }
    if let Some(addr) = listen {
        cfg.accept = true;
        rcfg.bind = addr;
        let mut r = Reactor::bind(rcfg).expect("bind");
        eprintln!("listening on {}", r.local_addr());
        let mut ep = Endpoint::new(cfg, 0x1157);
        let mut h = None;
        let mut got = 0u64;
        let mut first: Option<(Instant, f64)> = None;
        let mut closed = false;
        r.run(&mut ep, Duration::from_millis(100), |ep, _| {
            while let Some(ev) = ep.poll_event() {
                match ev {
                    // The bulk connection is the one that delivers data (`--idle` ones send
                    // none).
                    Event::Readable(c) if h.is_none() => h = Some(c),
                    Event::Closed(c, _) if Some(c) == h => closed = true,
                    _ => {}
                }
            }
            if let Some(c) = h {
                while let Some(m) = ep.recv(c) {
                    if first.is_none() {
                        first = Some((Instant::now(), cpu_seconds()));
                    }
                    got += m.len() as u64;
                }
            }
            if closed {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .expect("reactor");
        let (t0, c0) = first.unwrap_or((Instant::now(), cpu_seconds()));
        let stats = h
            .and_then(|c| ep.stats(c))
            .map(|s| format!("mtu={}", s.mtu))
            .unwrap_or_default();
        report(
            "receiver",
            got,
            t0.elapsed().as_secs_f64(),
            cpu_seconds() - c0,
            &r,
            &stats,
        );
    } else if let Some(addr) = connect {
        rcfg.bind = if addr.is_ipv6() {
            "[::]:0".parse().unwrap()
        } else {
            "0.0.0.0:0".parse().unwrap()
        };
        let mut r = Reactor::bind(rcfg).expect("bind");
        let mut ep = Endpoint::new(cfg, 0xc11e);
        let h = ep.connect(r.now(), addr);
        // Connections that stay open and idle beside the bulk one (`--idle N`): what a node
        // serving a library has, and what per-turn scans of every connection would pay for.
        for _ in 0..idle {
            ep.connect(r.now(), addr);
        }
        let data = vec![0xa5u8; msg];
        let mut sent = 0u64;
        let mut connected = false;
        let mut start = None;
        let mut finished = false;
        let deadline = Instant::now() + Duration::from_secs(600);
        r.run(&mut ep, Duration::from_millis(100), |ep, now| {
            while let Some(ev) = ep.poll_event() {
                match ev {
                    Event::Connected(c) if c == h => {
                        connected = true;
                        start = Some((Instant::now(), cpu_seconds()));
                    }
                    Event::Closed(c, why) if c == h => {
                        eprintln!("closed: {why:?}");
                        return ControlFlow::Break(());
                    }
                    _ => {}
                }
            }
            while connected && sent < bytes {
                let n = msg.min((bytes - sent) as usize);
                match ep.send(h, &data[..n]) {
                    Ok(()) => sent += n as u64,
                    Err(SendError::Blocked) => break,
                    Err(e) => panic!("send: {e}"),
                }
            }
            if connected && sent >= bytes && !finished {
                ep.finish(now, h);
                finished = true;
            }
            if Instant::now() > deadline {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })
        .expect("reactor");
        let (t0, c0) = start.unwrap_or((Instant::now(), cpu_seconds()));
        report(
            "sender",
            sent,
            t0.elapsed().as_secs_f64(),
            cpu_seconds() - c0,
            &r,
            "",
        );
    } else {
        eprintln!(
            "usage: transport_bench --listen ADDR | --connect ADDR [--bytes N] [--msg N] [--mtu N] [--idle N]"
        );
        std::process::exit(2);
    }
}
