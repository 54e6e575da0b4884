//! Checks shared by the fuzz targets (`fuzz/fuzz_targets/transport.rs`) and the corpus replay
//! test (`engine/tests/fuzz_corpus.rs`), so both run the same code on stable and nightly.
//!
//! [`transport_check`] interprets its input as a script of operations on a client and a server
//! endpoint joined by in-memory queues: deliver, drop, duplicate or mutate datagrams (with or
//! without fixing the checksum), inject raw bytes, step the clock, and application commands.
//! Invariants: nothing panics, the number of connections and every buffer stay within the
//! configured bounds.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crate::time::Time;
use crate::transport::{Config, ConnHandle, Endpoint, Event};

struct Cursor<'a> {
    d: &'a [u8],
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.d.split_first()?;
        self.d = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from(self.byte()?) << 8 | u16::from(self.byte()?))
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.d.len());
        let (a, b) = self.d.split_at(n);
        self.d = b;
        a
    }
}

const QUEUE_CAP: usize = 256;

fn cfg(accept: bool) -> Config {
    Config {
        accept,
        max_message: 64 << 10,
        recv_window: 128 << 10,
        send_buffer: 256 << 10,
        max_connections: 8,
        idle_timeout: Duration::from_secs(5),
        keep_alive: Some(Duration::from_secs(1)),
        skip_period: 8,
        ..Config::default()
    }
}

/// Runs one script. `Err` describes a broken invariant.
pub fn transport_check(data: &[u8]) -> Result<(), String> {
    let caddr: SocketAddr = ([10, 0, 0, 1], 1000).into();
    let saddr: SocketAddr = ([10, 0, 0, 2], 2000).into();
    let mut client = Endpoint::new(cfg(false), 1);
    let mut server = Endpoint::new(cfg(true), 2);
    let mut now = Time::from_micros(1_000_000);
    let ch = client.connect(now, saddr);
    let mut sh: Option<ConnHandle> = None;
    let mut to_server: VecDeque<Vec<u8>> = VecDeque::new();
    let mut to_client: VecDeque<Vec<u8>> = VecDeque::new();
    let mut buf = vec![0u8; 65_536];
    let msg = vec![0x5au8; 64 << 10];
    let mut c = Cursor { d: data };
    let mut steps = 0;
    while let Some(op) = c.byte() {
        steps += 1;
        if steps > 4096 {
            break;
        }
        match op % 10 {
            0 => {
                let ms = u64::from(c.byte().unwrap_or(1));
                now = now + Duration::from_millis(ms * ms);
                client.handle_timeout(now);
                server.handle_timeout(now);
            }
            1 => {
                if let Some(d) = to_server.pop_front() {
                    serve(&mut server, now, caddr, &d, &mut to_client);
                }
            }
            2 => {
                if let Some(d) = to_client.pop_front() {
                    client.handle(now, saddr, &d);
                }
            }
            3 => {
                let which = c.byte().unwrap_or(0);
                let q = if which & 1 == 0 {
                    &mut to_server
                } else {
                    &mut to_client
                };
                if which & 2 == 0 {
                    q.pop_front();
                } else if let Some(d) = q.front().cloned() {
                    q.push_back(d);
                }
            }
            4 | 5 => {
                // Mutate the next datagram; op 5 also fixes the checksum so the body is parsed.
                let at = usize::from(c.u16().unwrap_or(0));
                let x = c.byte().unwrap_or(1);
                let to_srv = at & 1 == 0;
                let q = if to_srv {
                    &mut to_server
                } else {
                    &mut to_client
                };
                if let Some(mut d) = q.pop_front() {
                    if !d.is_empty() {
                        let i = at % d.len();
                        d[i] ^= x;
                    }
                    if op % 10 == 5 {
                        st_proto::packet::seal(&mut d);
                    }
                    if to_srv {
                        serve(&mut server, now, caddr, &d, &mut to_client);
                    } else {
                        client.handle(now, saddr, &d);
                    }
                }
            }
            6 => {
                // Raw bytes, optionally with a valid header prefix and checksum.
                let n = usize::from(c.byte().unwrap_or(0)) * 8;
                let mut d = c.take(n).to_vec();
                let b = c.byte().unwrap_or(0);
                if b & 1 == 1 && d.len() >= st_proto::packet::HEADER_LEN {
                    d[..2].copy_from_slice(&st_proto::packet::MAGIC);
                    d[2] = st_proto::packet::VERSION;
                    d[3] = 1 + b % 8;
                    if b & 2 == 2 {
                        // Aim at a live connection id.
                        let cid = sh.and_then(|h| server.cids(h)).map_or(0, |x| x.0);
                        d[4..12].copy_from_slice(&cid.to_be_bytes());
                    }
                    st_proto::packet::seal(&mut d);
                }
                // Bit 2 or 3: from the client's address (bit 3 alone combines with type DATA).
                let from: SocketAddr = if b & 12 != 0 {
                    caddr
                } else {
                    ([192, 0, 2, b], 7).into()
                };
                if from == caddr {
                    serve(&mut server, now, from, &d, &mut to_client);
                } else {
                    server.handle(now, from, &d);
                }
            }
            7 => {
                let len = usize::from(c.u16().unwrap_or(0)) % msg.len();
                let _ = client.send(ch, &msg[..len]);
                if let Some(h) = sh {
                    let _ = server.send(h, &msg[..len / 2]);
                }
            }
            8 => {
                while client.recv(ch).is_some() {}
                if let Some(h) = sh {
                    while server.recv(h).is_some() {}
                }
            }
            _ => match c.byte().unwrap_or(0) % 4 {
                0 => client.finish(now, ch),
                1 => client.close(now, ch, 0x100, b"fuzz"),
                2 => {
                    let _ = client.request(now, saddr, &[1, 2, 3]);
                }
                _ => {
                    if let Some(h) = sh {
                        server.close(now, h, 0x101, b"");
                    }
                }
            },
        }
        // Drain output into the queues and events into the application.
        while let Some(t) = client.poll_transmit(now, &mut buf) {
            for d in t.datagrams(&buf) {
                if to_server.len() < QUEUE_CAP {
                    to_server.push_back(d.to_vec());
                }
            }
        }
        while let Some(t) = server.poll_transmit(now, &mut buf) {
            for d in t.datagrams(&buf) {
                if to_client.len() < QUEUE_CAP && t.remote == caddr {
                    to_client.push_back(d.to_vec());
                }
            }
        }
        while client.poll_event().is_some() {}
        while let Some(ev) = server.poll_event() {
            if let Event::Connected(h) = ev {
                sh = Some(h);
            }
        }
        check_bounds(&client, &server, ch, sh)?;
    }
    Ok(())
}

/// The server side: its endpoint takes the datagram, and a REQUEST is answered as the
/// tracker answers one ([`crate::transport::respond`]), the reply queued for the client.
fn serve(
    server: &mut Endpoint,
    now: Time,
    from: SocketAddr,
    d: &[u8],
    to_client: &mut VecDeque<Vec<u8>>,
) {
    server.handle(now, from, d);
    if let Ok(st_proto::packet::Packet::Request { hdr, .. }) = st_proto::packet::parse(d) {
        let mut out = [0u8; 256];
        if let Some(n) = crate::transport::respond(&mut out, &hdr, d.len(), |b| {
            let ok = b.get_mut(..2)?;
            ok.copy_from_slice(b"ok");
            Some(2)
        }) && to_client.len() < QUEUE_CAP
        {
            to_client.push_back(out[..n].to_vec());
        }
    }
}

fn check_bounds(
    client: &Endpoint,
    server: &Endpoint,
    ch: ConnHandle,
    sh: Option<ConnHandle>,
) -> Result<(), String> {
    if server.connection_count() > 8 {
        return Err(format!("{} server connections", server.connection_count()));
    }
    for (ep, h) in [(client, Some(ch)), (server, sh)] {
        let Some(s) = h.and_then(|h| ep.stats(h)) else {
            continue;
        };
        if s.send_capacity > 512 << 10 || s.recv_capacity > 256 << 10 {
            return Err(format!("buffers grew past their bounds: {s:?}"));
        }
        if s.tracked_packets > 100_000 {
            return Err(format!("sent-packet table unbounded: {s:?}"));
        }
    }
    Ok(())
}

/// The packet parser check (re-exported so one crate serves both fuzz targets).
pub fn packet_check(data: &[u8]) -> Result<(), String> {
    st_proto::packet::roundtrip_check(data).map(|_| ())
}

/// The `krpc` target's engine half: the datagram goes, from three source addresses, into a
/// DHT node that has a table, a registered key and a running search; nothing may panic and
/// every bound must hold afterwards. (The parser half is `st_proto::krpc::fuzz_check`.)
pub fn dht_check(data: &[u8]) -> Result<(), String> {
    use crate::dht::{DhtConfig, DhtNode};
    use crate::driver::Core;
    let t0 = Time::from_micros(1_000_000);
    let cfg = DhtConfig {
        ipv6: true,
        bootstrap: vec![SocketAddr::from(([10, 0, 0, 1], 6881))],
        ..DhtConfig::default()
    };
    let mut d = DhtNode::new(cfg.clone(), t0, 1);
    d.register(t0, [7; 20], Some(6881), true);
    let mut buf = vec![0u8; 2048];
    while d.poll_transmit(t0, &mut buf).is_some() {}
    let sources = [
        SocketAddr::from(([10, 0, 0, 1], 6881)),
        SocketAddr::from(([10, 0, 0, 2], 6881)),
        "[fd00::1]:6881"
            .parse()
            .unwrap_or(SocketAddr::from(([0; 4], 1))),
    ];
    let mut now = t0;
    for (i, s) in sources.iter().enumerate() {
        d.handle(now, *s, data);
        while d.poll_transmit(now, &mut buf).is_some() {}
        now = now + Duration::from_millis(400 * (i as u64 + 1));
        if d.poll_timeout().is_some_and(|t| t <= now) {
            d.handle_timeout(now);
        }
        while d.poll_event().is_some() {}
    }
    if d.pending() > cfg.max_pending || d.lookups() > cfg.max_lookups {
        return Err(format!("bounds: {d:?}"));
    }
    Ok(())
}

/// The `tracker` target's engine check: feeds the datagram to a [`crate::tracker::Tracker`]
/// with small limits from an IPv4, an IPv6 and an IPv4-mapped source, then once more with a
/// valid connection id patched in (so that the fuzzer reaches announce and scrape, which it
/// could not forge). Invariants: no panic, every reply at most 1200 bytes, a native reply at
/// most 3× its request, a CONNECT answer no larger than its request, and the tables within
/// their limits.
pub fn tracker_check(data: &[u8]) -> Result<(), String> {
    use crate::tracker::{Config, MAX_REPLY, Outcome, Tracker};
    use st_proto::packet::{self, Packet};
    use st_proto::tracker as wire;

    let cfg = Config {
        max_swarms: 4,
        max_peers: 6,
        max_peers_per_swarm: 3,
        offender_threshold: 2,
        offender_table_size: 2,
        ..Config::default()
    };
    let mut t = Tracker::new(cfg.clone(), 7);
    let now = Time::from_micros(1_000_000_000);
    let sources: [SocketAddr; 3] = [
        ([10, 0, 0, 1], 1000).into(),
        ("[fd00::1]:1000".parse().map_err(|_| "addr")?),
        ("[::ffff:10.0.0.2]:1000".parse().map_err(|_| "addr")?),
    ];
    let mut out = [0u8; 2048];
    let check = |t: &Tracker, d: &[u8], o: Outcome, what: &str| -> Result<(), String> {
        if let Outcome::Reply(n) = o {
            if n > MAX_REPLY {
                return Err(format!("{what}: a reply of {n} bytes"));
            }
            if !wire::looks_like_bep15(d) && n > 3 * d.len() {
                return Err(format!("{what}: native reply {n} > 3 × {}", d.len()));
            }
        }
        let (swarms, peers) = t.sizes();
        if swarms > cfg.max_swarms || peers > cfg.max_peers {
            return Err(format!("{what}: {swarms} swarms, {peers} peers"));
        }
        if t.offender_entries() > cfg.offender_table_size {
            return Err(format!("{what}: offender table over its size"));
        }
        Ok(())
    };
    for (i, &src) in sources.iter().enumerate() {
        let later = now + Duration::from_secs(i as u64 * 50);
        let o = t.handle(later, src, data, &mut out);
        check(&t, data, o, "raw")?;
        // Patch in a valid id from a connect of the same source.
        let mut d = data.to_vec();
        let mut c = [0u8; 16];
        wire::emit_bep15_connect(&mut c, 1).map_err(|e| format!("connect: {e}"))?;
        let id = match t.handle(later, src, &c, &mut out) {
            Outcome::Reply(16) => out[8..16].to_vec(),
            Outcome::Reply(n) => return Err(format!("a connect answered with {n} bytes")),
            Outcome::Drop => continue, // ignored as an offender
        };
        if wire::looks_like_bep15(&d) {
            d[..8].copy_from_slice(&id);
        } else if let Ok(Packet::Request { payload, .. }) = packet::parse(&d) {
            if payload.len() >= 16
                && matches!(payload[0], wire::kind::ANNOUNCE | wire::kind::SCRAPE)
            {
                let at = packet::HEADER_LEN + 8;
                d[at..at + 8].copy_from_slice(&id);
                packet::seal(&mut d);
            }
        } else {
            continue;
        }
        let o = t.handle(later, src, &d, &mut out);
        check(&t, &d, o, "patched")?;
        t.handle_timeout(later);
    }
    Ok(())
}

/// The committed corpus of a fuzz target: exactly the files listed in
/// `fuzz/corpus/<target>.sha256` (`sha256sum` format, names relative to
/// `fuzz/corpus/<target>/`), each checked against its hash, in the manifest's order. Files a
/// local fuzzing run added to the directory are not read. `Err` for a missing file, a hash
/// that differs or an unreadable manifest.
pub fn committed_corpus(
    corpus_root: &std::path::Path,
    target: &str,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    use sha2::{Digest, Sha256};
    let manifest = corpus_root.join(format!("{target}.sha256"));
    let text =
        std::fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let mut files = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some((hash, name)) = line.split_once("  ") else {
            return Err(format!(
                "{}:{}: not `HASH  NAME`",
                manifest.display(),
                i + 1
            ));
        };
        let path = corpus_root.join(target).join(name);
        let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let got: String = Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if got != hash {
            return Err(format!(
                "{}: SHA-256 {got}, manifest says {hash}",
                path.display()
            ));
        }
        files.push((name.to_owned(), data));
    }
    Ok(files)
}
