//! `st lab` end to end: a small lab completes and writes its results and plots, on namespaces
//! as root and on loopback as an unprivileged user; and a lab interrupted or killed midway
//! leaves no process, namespace or file behind.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "a test driver outside the product: it waits on child processes with deadlines and speaks to them over its own sockets"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Scratch;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Where a lab of PID `pid` keeps its scratch files when nothing is kept.
fn work_dir(out: &Path, pid: u32) -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.join(format!("st-lab-{pid}"))
    } else {
        out.join("work")
    }
}

/// PIDs of the processes whose working directory is `dir` or inside it (besides this one).
fn processes_in(dir: &Path) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c.starts_with(dir))
        })
        .collect()
}

fn check_results(out: &Path, hosts: u64, namespaces: bool) {
    let text = std::fs::read_to_string(out.join("results.json")).expect("results.json");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["hosts"], hosts, "{text}");
    assert_eq!(v["size"], 4 << 20);
    assert_eq!(v["all_complete"], true);
    assert_eq!(
        v["network"],
        if namespaces { "namespaces" } else { "loopback" }
    );
    if namespaces {
        assert_eq!(v["rate_bps"], 200_000_000u64);
        assert!(v["bound_s"].as_f64().unwrap() > 0.16, "{}", v["bound_s"]);
    } else {
        assert!(v["rate_bps"].is_null() && v["bound_s"].is_null());
    }
    let fetchers = v["fetchers"].as_array().unwrap();
    assert_eq!(fetchers.len() as u64, hosts);
    for f in fetchers {
        let start = f["start_s"].as_f64().unwrap();
        let first = f["first_byte_s"].as_f64().unwrap();
        let done = f["complete_s"].as_f64().unwrap();
        assert!(start <= first && first <= done, "{f}");
        assert!(f["cpu_s"].as_f64().unwrap() > 0.0, "{f}");
        let from: u64 = f["bytes_from"]
            .as_object()
            .unwrap()
            .values()
            .map(|b| b.as_u64().unwrap())
            .sum();
        assert_eq!(from, 4 << 20, "every byte came from some peer: {f}");
    }
    for svg in ["progress.svg", "completion.svg"] {
        let s = std::fs::read_to_string(out.join(svg)).unwrap();
        assert!(s.starts_with("<svg") && s.contains("polyline"), "{svg}");
    }
}

/// `st -q lab --out OUT ARGS`.
fn lab(out: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_st"));
    c.args(["-q", "lab", "--out"]).arg(out).args(args);
    c
}

/// As root: namespaces with 200 Mbit/s links, LAN discovery; then the same lab as an
/// unprivileged user (nobody), which must fall back to loopback and say so.
#[test]
fn a_small_lab_completes_and_writes_results_and_plots() {
    let s = Scratch::new("lab");
    let out = s.path("out");
    let o = lab(&out, &["--hosts", "3", "--size", "4M", "--rate", "200Mbit"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("p50 ") && stdout.contains("max "),
        "{stdout}"
    );
    check_results(&out, 3, is_root() && stdout.contains("network namespaces"));
    if !is_root() {
        eprintln!("SKIPPED: the unprivileged run (the test itself is not root)");
        return;
    }
    // An unprivileged user: no namespaces, loopback, and a line that says so.
    let shared = s.path("nobody");
    std::fs::create_dir_all(&shared).unwrap();
    Command::new("chmod")
        .args(["0777", s.0.to_str().unwrap(), shared.to_str().unwrap()])
        .status()
        .unwrap();
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_st"))
        .args(["-q", "lab", "--hosts", "3", "--size", "4M", "--out"])
        .arg(shared.join("out"))
        .current_dir(&shared);
    let Ok(o) = c.output() else {
        eprintln!("SKIPPED: the unprivileged run (no setpriv)");
        return;
    };
    let stderr = String::from_utf8_lossy(&o.stderr);
    if stderr.contains("Permission denied") && stderr.contains("st") && o.status.code() != Some(0) {
        eprintln!("SKIPPED: the unprivileged run (nobody cannot run the test binary): {stderr}");
        return;
    }
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("not root: running on loopback, unshaped"),
        "{stderr}"
    );
    check_results(&shared.join("out"), 3, false);
}

/// Interrupted (SIGINT, SIGTERM) while the fetchers run: exit 130/143 and nothing left; killed
/// (SIGKILL): its processes and namespaces die with it, and the next lab removes its files.
#[test]
fn a_lab_stopped_midway_leaves_nothing_behind() {
    let s = Scratch::new("labkill");
    for (sig, code) in [
        (libc::SIGINT, Some(130)),
        (libc::SIGTERM, Some(143)),
        (libc::SIGKILL, None),
    ] {
        let out = s.path(&format!("out{sig}"));
        // Slow enough to be caught midway: 64 MiB at 20 Mbit/s (loopback: unshaped, but the
        // fetchers' directories appear before any of them can finish).
        let mut child = lab(&out, &["--hosts", "3", "--size", "64M", "--rate", "20Mbit"])
            .current_dir(&s.0)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let work = work_dir(&out, pid);
        let start = Instant::now();
        while !work.join("h3").exists() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the fetchers never started"
            );
            if child.try_wait().unwrap().is_some() {
                let mut err = String::new();
                use std::io::Read;
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("the lab ended before it could be stopped: {err}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!processes_in(&work).is_empty(), "fetchers run in {work:?}");
        // SAFETY: our own child, not yet waited for.
        unsafe { libc::kill(pid as i32, sig) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), code, "signal {sig}");
        // Children die with the lab (PR_SET_PDEATHSIG): give the kernel a moment.
        let start = Instant::now();
        loop {
            let left: Vec<u32> = processes_in(&work)
                .into_iter()
                .chain(processes_in(&s.0))
                .collect();
            if left.is_empty() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "signal {sig}: processes left behind: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if sig == libc::SIGKILL {
            // Its files stay until the next lab, which removes them.
            let o = lab(&s.path("after"), &["--size", "1M", "--hosts", "1"])
                .current_dir(&s.0)
                .output()
                .unwrap();
            assert_eq!(
                o.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        if work.starts_with("/dev/shm") {
            assert!(!work.exists(), "signal {sig}: {work:?} left behind");
        }
    }
    // No namespace was ever named.
    if let Ok(o) = Command::new("ip").args(["netns", "list"]).output() {
        let names = String::from_utf8_lossy(&o.stdout);
        assert!(!names.contains("lab"), "{names}");
    }
}
