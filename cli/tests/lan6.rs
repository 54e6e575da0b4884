//! Swarms on an IPv6-only LAN: namespaces that the test creates and removes itself (a bridge
//! and hosts whose eth0 holds only a ULA address, fd00:5354:NET::/64, and its link-local one;
//! no IPv4 address but lo's, see `lan6_up` in `bench/netns.sh`).
//!
//! - LAN discovery alone (`spec/discovery.md` §3): one host seeds a `.st` file with no
//!   tracker; three others fetch it with no tracker and no DHT, finding the seed and each other
//!   through the IPv6 group `ff12::5354:4c44` only (the IPv4 group cannot be joined there).
//! - A tracker over IPv6: `st udp-tracker` bound to host 0's ULA address, a seed and a fetcher
//!   on two other hosts with `--no-lan --no-dht`, meeting through `udp://[fd00:…]:PORT`.
//!
//! Both end with bit-identical files, fetched from IPv6 peers. Needs root and iproute2
//! (`ip netns`). Where namespaces cannot be made, the test says so on stderr and passes
//! without running: it is the environment, not the code, that is missing.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "a test driver outside the product: it waits on child processes with deadlines and speaks to them over its own sockets"
)]

mod common;

use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Proc, Scratch, data};

/// Namespaces `PREFIX-sw`, `PREFIX-h0` … made by `bench/netns.sh` (`lan6_up`); removed on
/// drop, so also when the test panics.
struct Lan6 {
    prefix: String,
    hosts: usize,
    /// The third group of the hosts' ULA /64, `fd00:5354:NET::/64`.
    net: u16,
}

fn netns_script(cmd: &str) -> std::io::Result<std::process::Output> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/netns.sh");
    Command::new("bash")
        .arg("-c")
        .arg(format!("set -e; source '{}'; {cmd}", script.display()))
        .output()
}

impl Lan6 {
    /// An IPv6-only LAN of `hosts` hosts; `tag` keeps the LANs of concurrent tests apart.
    fn up(tag: &str, hosts: usize) -> Option<Lan6> {
        let pid = std::process::id();
        let salt = tag
            .bytes()
            .fold(0u16, |a, b| a.wrapping_mul(31) ^ u16::from(b));
        let lan = Lan6 {
            prefix: format!("st6{pid}{tag}"),
            hosts,
            net: (pid as u16) ^ salt,
        };
        lan.down();
        let up = format!("lan6_up {} {hosts} {:x}", lan.prefix, lan.net);
        match netns_script(&up) {
            Ok(o) if o.status.success() => Some(lan),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot create IPv6 network namespaces (root, iproute2 and IPv6 \
                     needed): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run bash: {e}");
                None
            }
        }
    }

    fn host(&self, k: usize) -> String {
        format!("{}-h{k}", self.prefix)
    }

    /// Host `k`'s ULA address.
    fn ip(&self, k: usize) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x5354, self.net, 0, 0, 0, 0, k as u16 + 1)
    }

    fn down(&self) {
        let _ = netns_script(&format!("lan6_down {} {}", self.prefix, self.hosts));
    }
}

impl Drop for Lan6 {
    fn drop(&mut self) {
        self.down();
    }
}

/// `st -q create FILE ARGS…` in `dir`; returns its stdout.
fn create(dir: &Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_st"))
        .args(["-q", "create", "blob.bin", "--fragment-size", "64K"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The peers a fetch summary names ("… from ADDR" lines); each must be an IPv6 address (not
/// IPv4-mapped: there is no IPv4 on the LAN).
fn ipv6_sources(who: &str, summary: &str) -> Vec<SocketAddr> {
    let peers: Vec<SocketAddr> = summary
        .lines()
        .filter_map(|l| l.split_once(" from ").map(|(_, a)| a.trim()))
        .map(|a| {
            a.parse()
                .unwrap_or_else(|e| panic!("{who}: peer {a:?} is no address ({e}): {summary}"))
        })
        .collect();
    assert!(
        !peers.is_empty(),
        "{who}: the summary names its peers: {summary}"
    );
    for p in &peers {
        let v6 = match p {
            SocketAddr::V6(v6) => v6,
            SocketAddr::V4(_) => panic!("{who}: an IPv4 peer {p} on an IPv6-only LAN"),
        };
        assert!(
            v6.ip().to_ipv4_mapped().is_none(),
            "{who}: an IPv4-mapped peer {p} on an IPv6-only LAN"
        );
    }
    peers
}

#[test]
fn an_ipv6_only_lan_swarm_needs_no_tracker() {
    let Some(lan) = Lan6::up("d", 4) else {
        return;
    };
    let s = Scratch::new("lan6-discovery");
    let blob = data(3 * 1024 * 1024 + 4321, 78);
    std::fs::write(s.path("blob.bin"), &blob).unwrap();
    assert!(
        create(&s.0, &["-o", "lan6.st"]).contains("0 trackers"),
        "the .st file has no tracker"
    );
    let h0 = lan.host(0);
    let _seed = Proc::start_in(
        Some(&h0),
        &["-q", "seed", "--no-dht", "lan6.st", "blob.bin"],
        &s.0,
    );
    let fetchers: Vec<(usize, Proc)> = (1..4)
        .map(|k| {
            let out = format!("f{k}");
            let host = lan.host(k);
            let p = Proc::start_in(
                Some(&host),
                &["-q", "fetch", "--no-dht", "lan6.st", "-o", &out],
                &s.0,
            );
            (k, p)
        })
        .collect();
    for (k, p) in fetchers {
        let who = format!("fetcher {k}");
        let (code, summary) = p.finish_within(Duration::from_secs(120));
        assert_eq!(code, 0, "{who}: {summary}");
        let got = std::fs::read(s.path(&format!("f{k}/blob.bin"))).unwrap();
        assert!(got == blob, "{who} has different bytes");
        // Found by multicast: from the source address of an announce, a link-local address of
        // the LAN (with its interface) or a ULA address of the LAN's /64.
        for p in ipv6_sources(&who, &summary) {
            let SocketAddr::V6(v6) = p else {
                unreachable!("ipv6_sources checked it")
            };
            let ula = v6.ip().segments()[..4] == [0xfd00, 0x5354, lan.net, 0];
            assert!(
                (v6.ip().is_unicast_link_local() && v6.scope_id() != 0) || ula,
                "{who}: peer {p} is on the LAN: {summary}"
            );
        }
    }
}

#[test]
fn a_tracker_serves_an_ipv6_only_lan() {
    let Some(lan) = Lan6::up("t", 3) else {
        return;
    };
    let s = Scratch::new("lan6-tracker");
    let blob = data(2 * 1024 * 1024 + 777, 79);
    std::fs::write(s.path("blob.bin"), &blob).unwrap();
    let (h0, h1, h2) = (lan.host(0), lan.host(1), lan.host(2));
    let ip0 = lan.ip(0);
    let tracker = Proc::start_in(
        Some(&h0),
        &[
            "-q",
            "udp-tracker",
            "--bind",
            &ip0.to_string(),
            "--port",
            "0",
        ],
        &s.0,
    );
    let at: SocketAddr = tracker.addr.parse().unwrap();
    assert_eq!(at.ip(), ip0, "the tracker is bound where asked");
    let url = format!("udp://[{ip0}]:{}", at.port());
    assert!(
        create(&s.0, &["-t", &url, "-o", "t6.st"]).contains("1 tracker"),
        "the .st file names the tracker"
    );
    let _seed = Proc::start_in(
        Some(&h1),
        &["-q", "seed", "--no-lan", "--no-dht", "t6.st", "blob.bin"],
        &s.0,
    );
    let fetcher = Proc::start_in(
        Some(&h2),
        &["-q", "fetch", "--no-lan", "--no-dht", "t6.st", "-o", "out"],
        &s.0,
    );
    let (code, summary) = fetcher.finish_within(Duration::from_secs(120));
    assert_eq!(code, 0, "fetcher: {summary}");
    let got = std::fs::read(s.path("out/blob.bin")).unwrap();
    assert!(got == blob, "the fetcher has different bytes");
    // The tracker reports the seed by the address its announce came from: host 1's ULA one.
    let peers = ipv6_sources("fetcher", &summary);
    assert!(
        peers.iter().all(|p| p.ip() == lan.ip(1)),
        "the fetcher got its bytes from the seed on host 1: {summary}"
    );
}
