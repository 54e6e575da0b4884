//! `st udp-tracker` as a real process on 127.0.0.1: a BEP 15 client written from the BEP, the
//! native protocol through real sockets, abuse, and a clean stop on SIGTERM.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "a test driver outside the product: it waits on child processes with deadlines and speaks to them over its own sockets"
)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use st_proto::packet::{self, Header, Packet, PacketType};
use st_proto::tracker::{self as wire, Announce, Event, NativeResponse};

struct TrackerProc {
    child: Child,
    addr: SocketAddr,
    /// Kept open so the tracker never writes to a closed pipe.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl TrackerProc {
    fn start() -> TrackerProc {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> TrackerProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_st"))
            .args(["udp-tracker", "--port", "0", "--bind", "127.0.0.1"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start st udp-tracker");
        // Wait for the readiness line rather than sleeping.
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        TrackerProc {
            child,
            addr,
            _stdout: stdout,
        }
    }
}

impl Drop for TrackerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

/// Sends and waits for the answer, retransmitting as a UDP client must (bounded).
fn ask(s: &UdpSocket, to: SocketAddr, req: &[u8]) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    for _ in 0..6 {
        s.send_to(req, to).unwrap();
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

/// Expects silence: a short wait with no datagram (a slow machine only makes this easier).
fn silent(s: &UdpSocket, to: SocketAddr, req: &[u8]) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s.send_to(req, to).unwrap();
    let mut buf = [0u8; 2048];
    let quiet = s.recv_from(&mut buf).is_err();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    quiet
}

// --- BEP 15, written from the BEP's byte layouts, not from our encoder. ---

fn bep15_connect(s: &UdpSocket, to: SocketAddr) -> u64 {
    let mut req = Vec::new();
    req.extend(0x41727101980u64.to_be_bytes());
    req.extend(0u32.to_be_bytes()); // action: connect
    req.extend(0xC0FFEEu32.to_be_bytes()); // transaction id
    let r = ask(s, to, &req).expect("connect answered");
    assert_eq!(r.len(), 16);
    assert_eq!(u32::from_be_bytes(r[0..4].try_into().unwrap()), 0);
    assert_eq!(u32::from_be_bytes(r[4..8].try_into().unwrap()), 0xC0FFEE);
    u64::from_be_bytes(r[8..16].try_into().unwrap())
}

fn bep15_announce_req(cid: u64, hash: [u8; 20], left: u64, event: u32, port: u16) -> Vec<u8> {
    let mut req = Vec::new();
    req.extend(cid.to_be_bytes());
    req.extend(1u32.to_be_bytes()); // action: announce
    req.extend(42u32.to_be_bytes());
    req.extend(hash);
    req.extend(*b"-XX0001-abcdefghijkl"); // peer id
    req.extend(0u64.to_be_bytes()); // downloaded
    req.extend(left.to_be_bytes());
    req.extend(0u64.to_be_bytes()); // uploaded
    req.extend(event.to_be_bytes());
    req.extend(0u32.to_be_bytes()); // ip: default
    req.extend(7u32.to_be_bytes()); // key
    req.extend((-1i32).to_be_bytes()); // num_want: default
    req.extend(port.to_be_bytes());
    req
}

#[test]
fn bep15_client_conformance() {
    let t = TrackerProc::start();
    let hash = [0x5A; 20];
    let a = client();
    let b = client();
    let ca = bep15_connect(&a, t.addr);
    let r = ask(&a, t.addr, &bep15_announce_req(ca, hash, 1000, 2, 6881)).unwrap();
    assert_eq!(r.len(), 20, "no peers yet");
    assert_eq!(u32::from_be_bytes(r[0..4].try_into().unwrap()), 1);
    assert_eq!(u32::from_be_bytes(r[4..8].try_into().unwrap()), 42);
    let cb = bep15_connect(&b, t.addr);
    let r = ask(&b, t.addr, &bep15_announce_req(cb, hash, 0, 1, 6882)).unwrap();
    assert_eq!(
        u32::from_be_bytes(r[12..16].try_into().unwrap()),
        1,
        "leechers"
    );
    assert_eq!(
        u32::from_be_bytes(r[16..20].try_into().unwrap()),
        1,
        "seeders"
    );
    assert_eq!(
        &r[20..],
        &[127, 0, 0, 1, 0x1A, 0xE1],
        "a's address and its announced port"
    );

    // Scrape: action 2, then seeders, completed, leechers per hash.
    let mut req = Vec::new();
    req.extend(cb.to_be_bytes());
    req.extend(2u32.to_be_bytes());
    req.extend(9u32.to_be_bytes());
    req.extend(hash);
    req.extend([0u8; 20]);
    let r = ask(&b, t.addr, &req).unwrap();
    assert_eq!(r.len(), 8 + 24);
    assert_eq!(&r[8..20], &[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]);
    assert_eq!(&r[20..32], &[0; 12]);

    // Abuse: forged ids, runts and garbage get nothing; the tracker still answers after.
    assert!(silent(
        &a,
        t.addr,
        &bep15_announce_req(ca ^ 0xFF, hash, 1, 0, 1)
    ));
    assert!(
        silent(&a, t.addr, &bep15_announce_req(cb, hash, 1, 0, 1)),
        "b's id from a"
    );
    assert!(silent(&a, t.addr, &[1, 2, 3]));
    assert!(silent(&a, t.addr, &[0xEE; 500]));
    let mut huge_numwant = bep15_announce_req(ca, hash, 1, 0, 6881);
    huge_numwant[92..96].copy_from_slice(&(i32::MAX).to_be_bytes());
    let r = ask(&a, t.addr, &huge_numwant).unwrap();
    assert!(r.len() <= 1200);
}

fn native(s: &UdpSocket, to: SocketAddr, payload: &[u8], rid: u64) -> Option<Vec<u8>> {
    let mut d = [0u8; 1500];
    let hdr = Header {
        ptype: PacketType::Request,
        dcid: 0,
        scid: 0xABCD,
        pn: rid,
    };
    let n = packet::emit(&Packet::Request { hdr, payload }, &mut d).unwrap();
    let r = ask(s, to, &d[..n])?;
    match packet::parse(&r).expect("valid response packet") {
        Packet::Response { hdr, payload } => {
            assert_eq!((hdr.dcid, hdr.pn), (0xABCD, rid));
            Some(payload.to_vec())
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn native_protocol_over_real_sockets() {
    let t = TrackerProc::start();
    let swarm = [0x11; 32];
    let mut seen = Vec::new();
    for (i, left) in [(0u16, 0u64), (1, 50)] {
        let s = client();
        let mut b = [0u8; 16];
        wire::emit_connect_request(&mut b).unwrap();
        let cid = match wire::parse_native_response(&native(&s, t.addr, &b, 1).unwrap()) {
            Some(NativeResponse::Connected(c)) => c,
            other => panic!("{other:?}"),
        };
        let mut buf = [0u8; 96];
        let n = wire::emit_announce_request(
            &mut buf,
            &Announce {
                connection_id: cid,
                swarm_id: swarm,
                peer_id: [i as u8; 16],
                event: Event::Started,
                port: 7000 + i,
                numwant: 10,
                left,
                uploaded: 0,
                downloaded: 0,
            },
        )
        .unwrap();
        let r = native(&s, t.addr, &buf[..n], 2).unwrap();
        match wire::parse_native_response(&r) {
            Some(NativeResponse::Announced(h, peers)) => {
                assert_eq!(h.family, 4);
                seen.push(peers.to_vec());
            }
            other => panic!("{other:?}"),
        }
        // A forged id: silence.
        let mut forged = buf;
        forged[8] ^= 1;
        let mut d = [0u8; 200];
        let hdr = Header {
            ptype: PacketType::Request,
            dcid: 0,
            scid: 1,
            pn: 3,
        };
        let m = packet::emit(
            &Packet::Request {
                hdr,
                payload: &forged[..n],
            },
            &mut d,
        )
        .unwrap();
        assert!(silent(&s, t.addr, &d[..m]));
    }
    assert!(seen[0].is_empty());
    assert_eq!(
        seen[1],
        vec![127, 0, 0, 1, 0x1B, 0x58],
        "the seed, on its announced port 7000"
    );
}

#[test]
fn stops_cleanly_on_sigterm_and_leaves_final_stats() {
    let prom = std::env::temp_dir().join(format!("st-tracker-{}.prom", std::process::id()));
    let _ = std::fs::remove_file(&prom);
    let mut t = TrackerProc::start_with(&["--stats-file", prom.to_str().unwrap()]);
    let c = client();
    bep15_connect(&c, t.addr);
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(t.child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = t.child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(Instant::now() < deadline, "tracker did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&prom).expect("stats file written at exit");
    assert!(
        text.contains("st_tracker_requests_total{kind=\"connect\"} 1"),
        "{text}"
    );
    assert!(text.contains("# TYPE st_tracker_peers gauge"), "{text}");
    let _ = std::fs::remove_file(&prom);
}

#[test]
fn print_config_reads_back_and_bad_config_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_st"))
        .args(["udp-tracker", "--print-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("interval_secs = 300"));
    let dir = std::env::temp_dir().join(format!("st-tracker-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.conf");
    std::fs::write(&good, text.replace("max_numwant = 200", "max_numwant = 7")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_st"))
        .args([
            "udp-tracker",
            "--print-config",
            "--config",
            good.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let again = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        again,
        text.replace("max_numwant = 200", "max_numwant = 7"),
        "--print-config of a printed file reads back identically"
    );
    let bad = dir.join("bad.conf");
    std::fs::write(&bad, "interval_secs = soon\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_st"))
        .args(["udp-tracker", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("line 1: bad value for `interval_secs`"),
        "{err}"
    );
    // An unknown key and an out-of-range value: exit 2, one line naming the key and line.
    for (body, want) in [
        (
            "interval_secs = 30
frobs = 1
",
            "line 2: unknown setting `frobs`",
        ),
        (
            "max_numwant = 0
",
            "line 1: bad value for `max_numwant`",
        ),
        (
            "
interval_secs = 0
",
            "line 2: bad value for `interval_secs`",
        ),
    ] {
        std::fs::write(&bad, body).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_st"))
            .args(["udp-tracker", "--config", bad.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{body}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(want), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
