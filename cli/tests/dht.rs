//! The DHT on a real routed network: namespaces the test creates and removes itself (a router
//! namespace and one host per /24 in 10.77.0.0/16, built by `cli/tests/dht/netns.sh`), so that
//! per-/24 rules behave as on the internet. No tracker and no LAN discovery anywhere: peers
//! meet through the DHT alone.
//!
//! - Real st processes only: a seed is the only bootstrap node of two fetchers on two other
//!   subnets.
//! - Interop with libtorrent (python3-libtorrent, a real mainline DHT node): st finds a peer a
//!   libtorrent node announced; libtorrent finds an st seed's announce; two st nodes fetch
//!   through a libtorrent router; libtorrent nodes that bootstrap only from `st dht node`
//!   find each other; and libtorrent never bans an st address meanwhile.
//!
//! Needs root, iproute2 and (for the interop test) `/usr/bin/python3` with `libtorrent`.
//! Where these cannot be had, the test says SKIPPED on stderr and passes without running.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "a test driver outside the product: it waits on child processes with deadlines and speaks to them over its own sockets"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Proc, Scratch, data};

fn harness() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dht")
}

/// The routed network: `PREFIXrouter` and hosts `PREFIXh1…` at 10.77.K.2; removed on drop.
struct Net {
    prefix: String,
}

impl Net {
    fn up(hosts: usize, tag: &str) -> Option<Net> {
        let prefix = format!("stdht-{}-{tag}-", std::process::id());
        let net = Net { prefix };
        net.down();
        let o = Command::new("bash")
            .arg(harness().join("netns.sh"))
            .args(["up", &net.prefix, &hosts.to_string()])
            .output();
        match o {
            Ok(o) if o.status.success() => Some(net),
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

    fn ns(&self, k: usize) -> String {
        format!("{}h{k}", self.prefix)
    }

    fn down(&self) {
        let _ = Command::new("bash")
            .arg(harness().join("netns.sh"))
            .args(["down", &self.prefix])
            .output();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.down();
    }
}

fn ip(k: usize) -> String {
    format!("10.77.{k}.2")
}

fn libtorrent() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import libtorrent"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A background process whose stdout lines are collected; killed on drop.
struct Bg {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// Where its stderr goes.
    err: PathBuf,
}

impl Bg {
    fn start(ns: &str, program: &str, args: &[&str], cwd: &Path) -> Bg {
        let err = cwd.join(format!("{ns}.stderr"));
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .current_dir(cwd)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .spawn()
            .expect("start a process in a namespace");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        Bg { child, lines, err }
    }

    fn lt(ns: &str, args: &[&str], cwd: &Path) -> Bg {
        let script = harness().join("lt_node.py");
        let mut a = vec![script.to_str().unwrap()];
        a.extend_from_slice(args);
        Bg::start(ns, "/usr/bin/python3", &a, cwd)
    }

    fn any(&self, f: impl Fn(&str) -> bool) -> bool {
        self.lines.lock().unwrap().iter().any(|l| f(l))
    }

    /// Its stdout and the end of its stderr, for a failure message.
    fn text(&self) -> String {
        let err = std::fs::read_to_string(&self.err).unwrap_or_default();
        let tail: Vec<&str> = err.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{}\n--- stderr (end) ---\n{}",
            self.lines.lock().unwrap().join("\n"),
            tail.join("\n")
        )
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `cond` holds (at most `limit`).
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

/// A trackerless `.st` of `len` random bytes in `s`, and its data.
fn trackerless(s: &Scratch, len: usize, seed: u64) -> Vec<u8> {
    let blob = data(len, seed);
    std::fs::write(s.path("blob.bin"), &blob).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_st"))
        .args(["-q", "create", "blob.bin", "-o", "blob.st"])
        .current_dir(&s.0)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    blob
}

/// The DHT key of `blob.st` (hex), from `st inspect --json`.
fn key_of(s: &Scratch) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_st"))
        .args(["inspect", "--json", "blob.st"])
        .current_dir(&s.0)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["swarm_id"].as_str().expect("swarm_id")[..40].to_owned()
}

fn fetch_args<'a>(k: usize, bootstrap: &'a str, state: &'a str, out: &'a str) -> Vec<String> {
    [
        "-q",
        "fetch",
        "blob.st",
        "-o",
        out,
        "--no-lan",
        "--bind",
        &ip(k),
        "--port",
        "6881",
        "--dht-bootstrap",
        bootstrap,
        "--state-dir",
        state,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

#[test]
fn st_nodes_on_two_subnets_meet_through_an_st_seed_as_the_only_bootstrap() {
    let Some(net) = Net::up(3, "st") else {
        return;
    };
    let s = Scratch::new("dht-st");
    let blob = trackerless(&s, 2 * 1024 * 1024 + 99, 5);
    let seed_ip = ip(1);
    let _seed = Proc::start_in(
        Some(&net.ns(1)),
        &[
            "-q",
            "seed",
            "blob.st",
            "blob.bin",
            "--no-lan",
            "--bind",
            &seed_ip,
            "--port",
            "6881",
            "--dht-bootstrap",
            "none",
            "--state-dir",
            "state1",
        ],
        &s.0,
    );
    let boot = format!("{seed_ip}:6881");
    let fetchers: Vec<(usize, Proc)> = (2..=3)
        .map(|k| {
            let (state, out) = (format!("state{k}"), format!("out{k}"));
            let args = fetch_args(k, &boot, &state, &out);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            (k, Proc::start_in(Some(&net.ns(k)), &args, &s.0))
        })
        .collect();
    for (k, p) in fetchers {
        let (code, summary) = p.finish_within(Duration::from_secs(90));
        assert_eq!(code, 0, "fetcher {k}: {summary}");
        let got = std::fs::read(s.path(&format!("out{k}/blob.bin"))).unwrap();
        assert!(got == blob, "fetcher {k} has different bytes");
        // The DHT state was saved for the next run.
        assert!(s.path(&format!("state{k}/dht.dat")).exists());
    }
}

#[test]
fn interop_with_libtorrent_a_real_mainline_dht() {
    if !libtorrent() {
        eprintln!("SKIPPED: /usr/bin/python3 cannot import libtorrent (python3-libtorrent)");
        return;
    }
    let Some(net) = Net::up(9, "lt") else {
        return;
    };
    let s = Scratch::new("dht-lt");
    let blob = trackerless(&s, 1024 * 1024 + 7, 9);
    let st_key = key_of(&s);
    let bt_hash = "0123456789abcdef0123456789abcdef01234567";
    let bt_hash2 = "fedcba9876543210fedcba9876543210fedcba98";
    let router = format!("{}:6881", ip(1));
    let bind = |k: usize| format!("{}:6881", ip(k));

    // h1: a libtorrent node every other node bootstraps from; h2: a libtorrent node that
    // announces a BitTorrent info hash.
    let lt_router = Bg::lt(&net.ns(1), &["--bind", &bind(1)], &s.0);
    // libtorrent tries its bootstrap nodes once at start: they must be up first.
    assert!(
        wait_for(Duration::from_secs(30), || lt_router
            .any(|l| l.contains("\"event\":\"ready\""))),
        "the libtorrent router started: {}",
        lt_router.text()
    );
    let lt_announcer = Bg::lt(
        &net.ns(2),
        &[
            "--bind",
            &bind(2),
            "--bootstrap",
            &router,
            "--announce",
            bt_hash,
        ],
        &s.0,
    );
    // h3: an st seed of a trackerless .st, bootstrapping from libtorrent only.
    let _seed = Proc::start_in(
        Some(&net.ns(3)),
        &[
            "-q",
            "seed",
            "blob.st",
            "blob.bin",
            "--no-lan",
            "--bind",
            &ip(3),
            "--port",
            "6881",
            "--dht-bootstrap",
            &router,
            "--state-dir",
            "state3",
        ],
        &s.0,
    );
    // h5: a libtorrent node searching for the st swarm's key.
    let lt_searcher = Bg::lt(
        &net.ns(5),
        &[
            "--bind",
            &bind(5),
            "--bootstrap",
            &router,
            "--search",
            &st_key,
        ],
        &s.0,
    );
    // (3) h4: an st fetch through the libtorrent router.
    let args = fetch_args(4, &router, "state4", "out4");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let fetch = Proc::start_in(Some(&net.ns(4)), &args, &s.0);
    // (1) h6: st looks up the info hash libtorrent announced.
    let st_lookup = Bg::start(
        &net.ns(6),
        env!("CARGO_BIN_EXE_st"),
        &[
            "-v",
            "dht",
            "lookup",
            bt_hash,
            "--bind",
            &ip(6),
            "--dht-bootstrap",
            &router,
            "--timeout",
            "60",
            "--state-dir",
            "state6",
        ],
        &s.0,
    );
    // (4) h7: an st DHT node alone; h8 announces and h9 searches through it only.
    let st_node = Bg::start(
        &net.ns(7),
        env!("CARGO_BIN_EXE_st"),
        &[
            "-q",
            "dht",
            "node",
            "--bind",
            &ip(7),
            "--port",
            "6881",
            "--dht-bootstrap",
            "none",
            "--state-dir",
            "state7",
        ],
        &s.0,
    );
    assert!(
        wait_for(Duration::from_secs(30), || st_node
            .any(|l| l.starts_with("listening on"))),
        "st dht node started: {}",
        st_node.text()
    );
    let via_st = bind(7);
    let lt_announcer2 = Bg::lt(
        &net.ns(8),
        &[
            "--bind",
            &bind(8),
            "--bootstrap",
            &via_st,
            "--announce",
            bt_hash2,
        ],
        &s.0,
    );
    let lt_searcher2 = Bg::lt(
        &net.ns(9),
        &[
            "--bind",
            &bind(9),
            "--bootstrap",
            &via_st,
            "--search",
            bt_hash2,
        ],
        &s.0,
    );

    let (code, summary) = fetch.finish_within(Duration::from_secs(120));
    assert_eq!(
        code, 0,
        "(3) the st fetch through a libtorrent router: {summary}"
    );
    let got = std::fs::read(s.path("out4/blob.bin")).unwrap();
    assert!(got == blob, "(3) the fetch has different bytes");

    let announcer = bind(2);
    assert!(
        wait_for(Duration::from_secs(60), || st_lookup
            .any(|l| l == format!("peer {announcer}"))),
        "(1) st found the peer libtorrent announced: {}\n--- announcer ---\n{}\n--- router ---\n{}",
        st_lookup.text(),
        lt_announcer.text(),
        lt_router.text()
    );
    let st_peer = format!("\"addr\":\"{}\"", bind(3));
    assert!(
        wait_for(Duration::from_secs(60), || {
            lt_searcher.any(|l| l.contains("\"event\":\"peer\"") && l.contains(&st_peer))
        }),
        "(2) libtorrent found the st seed's announce: {}",
        lt_searcher.text()
    );
    let a2 = bind(8);
    assert!(
        wait_for(Duration::from_secs(60), || lt_searcher2
            .any(|l| l.contains("\"event\":\"peer\"") && l.contains(&a2))),
        "(4) libtorrent nodes met through an st node: {}",
        lt_searcher2.text()
    );
    // (5) No libtorrent node banned an st address.
    for (name, lt) in [
        ("router", &lt_router),
        ("announcer", &lt_announcer),
        ("searcher", &lt_searcher),
        ("announcer2", &lt_announcer2),
        ("searcher2", &lt_searcher2),
    ] {
        let text = lt.text();
        for k in [3, 4, 6, 7] {
            let addr = ip(k);
            assert!(
                !text
                    .lines()
                    .any(|l| l.contains("\"event\":\"ban\"") && l.contains(&addr)),
                "(5) libtorrent {name} banned st at {addr}:\n{text}"
            );
        }
    }
}
