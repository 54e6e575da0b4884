//! Real processes on loopback: one `st seed --dir` serving a library of three swarms on one
//! port, one `st fetch a.st b.st` fetching two at once, `--json` read line by line, a fetch
//! interrupted by SIGINT (exit 130, resume state kept), and a rate-limited seed.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "a test driver outside the product: it waits on child processes with deadlines and speaks to them over its own sockets"
)]

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, Scratch, data};

fn st(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_st"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// `st create NAME -t tracker -o NAME.st` in `dir`.
fn create(dir: &Path, name: &str, tracker_port: &str) {
    let url = format!("udp://127.0.0.1:{tracker_port}");
    let st_name = format!("{name}.st");
    let o = st(
        dir,
        &[
            "-q",
            "create",
            name,
            "-t",
            &url,
            "--fragment-size",
            "64K",
            "-o",
            &st_name,
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A tracker, a file `lib/NAME` of `len` bytes (from `seed`) with its `.st`, and a seed of it
/// bound to 127.0.0.1 with `extra` arguments.
fn seeded(s: &Scratch, name: &str, len: usize, seed: u64, extra: &[&str]) -> (Proc, Proc, Vec<u8>) {
    let tracker = tracker(s);
    let lib = s.0.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let bytes = data(len, seed);
    std::fs::write(lib.join(name), &bytes).unwrap();
    create(&lib, name, tracker.port());
    let st_path = format!("lib/{name}.st");
    let data_path = format!("lib/{name}");
    let mut args = vec![
        "-q",
        "seed",
        "--no-dht",
        &st_path,
        &data_path,
        "--bind",
        "127.0.0.1",
    ];
    args.extend_from_slice(extra);
    let seed = Proc::start(&args, &s.0);
    (tracker, seed, bytes)
}

/// `st -q fetch ST -o out` on loopback, to its end: exit code and stdout.
fn fetch_one(s: &Scratch, st_path: &str) -> (i32, String) {
    Proc::start(
        &[
            "-q",
            "fetch",
            "--no-dht",
            st_path,
            "-o",
            "out",
            "--bind",
            "127.0.0.1",
        ],
        &s.0,
    )
    .finish()
}

/// `st ARGS` in `dir`, stdout and stderr piped.
fn spawn_piped(dir: &Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_st"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn tracker(s: &Scratch) -> Proc {
    Proc::start(&["udp-tracker", "--port", "0", "--bind", "127.0.0.1"], &s.0)
}

/// A library directory with three files and their .st files (and a stray .st without data).
fn library(s: &Scratch, tracker_port: &str) -> Vec<Vec<u8>> {
    let lib = s.0.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let mut all = Vec::new();
    for (i, name) in ["a.bin", "b.bin", "c.bin"].iter().enumerate() {
        let bytes = data((1 << 20) + i * 70_000, 40 + i as u64);
        std::fs::write(lib.join(name), &bytes).unwrap();
        create(&lib, name, tracker_port);
        all.push(bytes);
    }
    // A .st whose data is not in the library is skipped with a warning, not fatal.
    std::fs::write(s.0.join("lone.bin"), b"no data in the library").unwrap();
    create(&s.0, "lone.bin", tracker_port);
    std::fs::rename(s.0.join("lone.bin.st"), lib.join("lone.bin.st")).unwrap();
    all
}

#[test]
fn one_seed_serves_a_library_and_one_fetch_takes_two_swarms() {
    let s = Scratch::new("library");
    let tracker = tracker(&s);
    let files = library(&s, tracker.port());
    let state = s.0.join("state");
    let state_arg = state.to_str().unwrap();
    let seed = Proc::start(
        &[
            "-q",
            "seed",
            "--no-dht",
            "--dir",
            "lib",
            "--bind",
            "127.0.0.1",
            "--state-dir",
            state_arg,
        ],
        &s.0,
    );
    // Three fetchers, one per swarm, and one process fetching a and b together.
    let mut fetchers = Vec::new();
    for (i, name) in ["a.bin", "b.bin", "c.bin"].iter().enumerate() {
        let st_path = format!("lib/{name}.st");
        let out = format!("out{i}");
        fetchers.push(Proc::start(
            &[
                "-q",
                "fetch",
                "--no-dht",
                &st_path,
                "-o",
                &out,
                "--bind",
                "127.0.0.1",
            ],
            &s.0,
        ));
    }
    let both = Proc::start(
        &[
            "-q",
            "fetch",
            "--no-dht",
            "lib/a.bin.st",
            "lib/b.bin.st",
            "-o",
            "both",
            "--bind",
            "127.0.0.1",
        ],
        &s.0,
    );
    for (i, f) in fetchers.into_iter().enumerate() {
        let (code, out) = f.finish();
        assert_eq!(code, 0, "fetcher {i}: {out}");
        let name = ["a.bin", "b.bin", "c.bin"][i];
        assert!(std::fs::read(s.0.join(format!("out{i}/{name}"))).unwrap() == files[i]);
    }
    let (code, out) = both.finish();
    assert_eq!(code, 0, "{out}");
    assert!(std::fs::read(s.0.join("both/a.bin")).unwrap() == files[0]);
    assert!(std::fs::read(s.0.join("both/b.bin")).unwrap() == files[1]);
    assert_eq!(
        out.matches("fetched ").count(),
        2,
        "a summary per swarm: {out}"
    );
    // One process, one port, three swarms: the seed remembered what it verified.
    let states = std::fs::read_dir(state.join("seed")).unwrap().count();
    assert_eq!(states, 3, "a state file per swarm served");
    drop(seed);
    drop(tracker);
}

#[test]
fn a_restarted_seed_trusts_what_it_remembers_and_rehashes_a_changed_file() {
    let s = Scratch::new("remember");
    let lib = s.0.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let bytes = data(1 << 20, 7);
    std::fs::write(lib.join("x.bin"), &bytes).unwrap();
    let o = st(&lib, &["-q", "create", "x.bin", "-o", "x.bin.st"]);
    assert!(o.status.success());
    let state = s.0.join("state");
    let run_seed = |extra: &[&str]| -> String {
        let mut args = vec![
            "-v",
            "seed",
            "--no-dht",
            "--dir",
            "lib",
            "--bind",
            "127.0.0.1",
            "--no-lan",
            "--state-dir",
        ];
        args.push(state.to_str().unwrap());
        args.extend_from_slice(extra);
        let mut child = spawn_piped(&s.0, &args);
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.starts_with("listening on"), "{line}");
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "a seed exits 0 on SIGTERM");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let first = run_seed(&[]);
    assert!(
        !first.contains("not hashing"),
        "first start hashes: {first}"
    );
    let second = run_seed(&[]);
    assert!(
        second.contains("not hashing"),
        "second start remembers: {second}"
    );
    let forced = run_seed(&["--recheck"]);
    assert!(
        !forced.contains("not hashing"),
        "--recheck hashes: {forced}"
    );
    // The file changes (same length): hashed again, and the bad fragment is not served.
    let mut changed = bytes.clone();
    changed[10] ^= 1;
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(lib.join("x.bin"), &changed).unwrap();
    let after = run_seed(&[]);
    assert!(
        !after.contains("not hashing"),
        "a changed file is hashed: {after}"
    );
    assert!(after.contains("only 15 of 16 fragments match"), "{after}");
}

#[test]
fn json_mode_prints_only_json_events() {
    let s = Scratch::new("json");
    let (_tracker, _seed, bytes) = seeded(&s, "j.bin", 3 << 20, 21, &[]);
    let o = Command::new(env!("CARGO_BIN_EXE_st"))
        .args([
            "fetch",
            "--no-dht",
            "--json",
            "lib/j.bin.st",
            "-o",
            "out",
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(&s.0)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8(o.stdout).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| {
            e["event"]
                .as_str()
                .expect("every object has a string `event`")
        })
        .collect();
    assert_eq!(kinds.first(), Some(&"listening"), "{kinds:?}");
    assert!(
        events[0]["addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(kinds.last(), Some(&"summary"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "complete").count(), 1);
    let complete = events.iter().find(|e| e["event"] == "complete").unwrap();
    assert_eq!(complete["bytes"].as_u64(), Some(bytes.len() as u64));
    assert!(complete["path"].as_str().unwrap().ends_with("out/j.bin"));
    assert!(complete["seconds"].as_f64().is_some());
    for p in events.iter().filter(|e| e["event"] == "progress") {
        for k in ["have", "total", "down_rate", "up_rate", "peers"] {
            assert!(p[k].is_u64(), "progress {k} is an integer: {p}");
        }
        assert_eq!(p["swarm"].as_str().unwrap().len(), 64);
    }
    let summary = events.last().unwrap();
    let swarms = summary["swarms"].as_array().unwrap();
    assert_eq!(swarms.len(), 1);
    let sw = &swarms[0];
    assert_eq!(sw["down"].as_u64(), Some(bytes.len() as u64));
    for k in ["up", "wasted", "hash_failures"] {
        assert!(sw[k].is_u64(), "{k}: {sw}");
    }
    let from: u64 = sw["from"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(from, bytes.len() as u64, "bytes by peer add up");
    assert!(std::fs::read(s.0.join("out/j.bin")).unwrap() == bytes);
}

#[test]
fn sigint_stops_an_incomplete_fetch_with_130_and_keeps_its_resume_state() {
    let s = Scratch::new("sigint");
    // A slow seed (1 MiB/s), so the fetch is still running when interrupted.
    let (_tracker, _seed, _bytes) = seeded(&s, "big.bin", 8 << 20, 33, &["--max-upload", "1M"]);
    let mut child = spawn_piped(
        &s.0,
        &[
            "fetch",
            "--no-dht",
            "--json",
            "lib/big.bin.st",
            "-o",
            "out",
            "--bind",
            "127.0.0.1",
        ],
    );
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    // Wait (bounded by the child's own progress) for bytes to arrive, and for a resume sync.
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the fetch ended early"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["event"] == "progress" && v["have"].as_u64().unwrap() >= 2 << 20 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress");
    }
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let mut rest = String::new();
    while out.read_line(&mut line).unwrap_or(0) > 0 {
        rest.push_str(&line);
        line.clear();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("st: error"),
        "an interrupt is not an error"
    );
    assert!(rest.contains("\"summary\""), "{rest}");
    assert!(
        !s.0.join("out/big.bin").exists(),
        "not in place: incomplete"
    );
    assert!(s.0.join("out/big.bin.part").exists());
    assert!(
        s.0.join("out/.big.bin.st-resume").exists(),
        "the resume state was saved on the way out"
    );
}

#[test]
fn a_rate_limited_seed_is_not_faster_than_its_limit() {
    let s = Scratch::new("ratelimit");
    let (_tracker, _seed, bytes) = seeded(&s, "r.bin", 4 << 20, 55, &["--max-upload", "8Mbit"]);
    let start = Instant::now();
    let (code, out) = fetch_one(&s, "lib/r.bin.st");
    let took = start.elapsed();
    assert_eq!(code, 0, "{out}");
    assert!(std::fs::read(s.0.join("out/r.bin")).unwrap() == bytes);
    // 4 MiB at 1 MB/s, less the bucket's burst (256 KiB): at least ~3.9 s. A loaded machine
    // can only make it slower.
    let floor = ((4 << 20) - (256 << 10)) as f64 / 1_000_000.0;
    assert!(
        took.as_secs_f64() >= floor * 0.95,
        "fetched in {took:?}, faster than the limit allows ({floor:.2} s)"
    );
}

#[test]
fn a_library_picks_up_a_new_st_file_on_sighup() {
    let s = Scratch::new("hup");
    let tracker = tracker(&s);
    let lib = s.0.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let state = s.0.join("state");
    let err_path = s.0.join("seed.err");
    let seed = Proc::start_with(
        None,
        &[
            "-v",
            "seed",
            "--no-dht",
            "--dir",
            "lib",
            "--bind",
            "127.0.0.1",
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &s.0,
        std::fs::File::create(&err_path).unwrap().into(),
    );
    // The library starts empty; a file and its .st arrive, then SIGHUP.
    let bytes = data(2 << 20, 77);
    std::fs::write(lib.join("late.bin"), &bytes).unwrap();
    create(&lib, "late.bin", tracker.port());
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(seed.child.id() as i32, libc::SIGHUP);
    }
    let (code, out) = fetch_one(&s, "lib/late.bin.st");
    assert_eq!(code, 0, "{out}");
    assert!(std::fs::read(s.0.join("out/late.bin")).unwrap() == bytes);
    // Removed, then SIGHUP: no longer served.
    std::fs::remove_file(lib.join("late.bin.st")).unwrap();
    unsafe {
        libc::kill(seed.child.id() as i32, libc::SIGHUP);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let err = std::fs::read_to_string(&err_path).unwrap();
        if err.contains("removed; no longer serving it") {
            assert!(err.contains("seeding late.bin"), "{err}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the removal was not noticed: {err}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
