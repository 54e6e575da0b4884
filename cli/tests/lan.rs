//! LAN seeding on a real network: namespaces that the test creates and removes itself (a
//! bridge and four hosts on a private 10.78.0.0/24, see `bench/netns.sh`). One host seeds a
//! `.st` file with no tracker; three others fetch it with no tracker and no flags, finding the
//! seed and each other by LAN discovery alone.
//!
//! Needs root and iproute2 (`ip netns`). Where namespaces cannot be made, the test says so on
//! stderr and passes without running: it is the environment, not the code, that is missing.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "a test driver outside the product: it waits on child processes with deadlines and speaks to them over its own sockets"
)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Proc, Scratch, data};

/// Namespaces `PREFIX-sw`, `PREFIX-h0` … made by `bench/netns.sh`; removed on drop.
struct Lan {
    prefix: String,
    hosts: usize,
}

fn netns_script(cmd: &str) -> std::io::Result<std::process::Output> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/netns.sh");
    Command::new("bash")
        .arg("-c")
        .arg(format!("set -e; source '{}'; {cmd}", script.display()))
        .output()
}

impl Lan {
    fn up(hosts: usize) -> Option<Lan> {
        let prefix = format!("stt{}", std::process::id());
        let lan = Lan { prefix, hosts };
        lan.down();
        match netns_script(&format!("lan_up {} {hosts}", lan.prefix)) {
            Ok(o) if o.status.success() => Some(lan),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot create network namespaces (root and iproute2 needed): {}",
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

    fn down(&self) {
        let _ = netns_script(&format!("lan_down {} {}", self.prefix, self.hosts));
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.down();
    }
}

#[test]
fn a_lan_only_swarm_needs_no_tracker() {
    let Some(lan) = Lan::up(4) else {
        return;
    };
    let s = Scratch::new("lan");
    let blob = data(3 * 1024 * 1024 + 4321, 77);
    std::fs::write(s.path("blob.bin"), &blob).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_st"))
        .args([
            "-q",
            "create",
            "blob.bin",
            "--fragment-size",
            "64K",
            "-o",
            "lan.st",
        ])
        .current_dir(&s.0)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("0 trackers"),
        "the .st file has no tracker"
    );
    let h0 = lan.host(0);
    let _seed = Proc::start_in(
        Some(&h0),
        &["-q", "seed", "--no-dht", "lan.st", "blob.bin"],
        &s.0,
    );
    let fetchers: Vec<(usize, Proc)> = (1..4)
        .map(|k| {
            let out = format!("f{k}");
            let host = lan.host(k);
            let p = Proc::start_in(
                Some(&host),
                &["-q", "fetch", "--no-dht", "lan.st", "-o", &out],
                &s.0,
            );
            (k, p)
        })
        .collect();
    for (k, p) in fetchers {
        let (code, summary) = p.finish_within(Duration::from_secs(120));
        assert_eq!(code, 0, "fetcher {k}: {summary}");
        let got = std::fs::read(s.path(&format!("f{k}/blob.bin"))).unwrap();
        assert!(got == blob, "fetcher {k} has different bytes");
        assert!(
            summary.contains("from 10.78.0."),
            "fetcher {k} got its bytes from LAN peers: {summary}"
        );
    }
}
