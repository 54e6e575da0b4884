//! `st seed` and `st fetch` as real processes on 127.0.0.1 with `st udp-tracker`: several
//! fetchers end with identical files, and a fetch killed with SIGKILL resumes without
//! downloading again what it had verified and synced.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Scratch, data};

struct Proc {
    child: Child,
    out: BufReader<ChildStdout>,
    /// The address from the "listening on" line.
    addr: String,
}

impl Proc {
    fn start(args: &[&str], cwd: &Path) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_st"))
            .args(args)
            .current_dir(cwd)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start st");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{args:?}: first line {line:?}"))
            .to_owned();
        Proc { child, out, addr }
    }

    fn port(&self) -> &str {
        self.addr.rsplit(':').next().unwrap()
    }

    /// Waits for exit (bounded) and returns the exit code and the rest of stdout.
    fn finish(mut self) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut rest = String::new();
                let mut line = String::new();
                while self.out.read_line(&mut line).unwrap_or(0) > 0 {
                    rest.push_str(&line);
                    line.clear();
                }
                return (status.code().unwrap_or(-1), rest);
            }
            assert!(Instant::now() < deadline, "process did not finish");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn create(dir: &Path, file: &str, tracker_port: &str) {
    let url = format!("udp://127.0.0.1:{tracker_port}");
    let o = Command::new(env!("CARGO_BIN_EXE_st"))
        .args([
            "-q",
            "create",
            file,
            "-t",
            &url,
            "--fragment-size",
            "64K",
            "-o",
            "data.st",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Bytes the summary line says were downloaded.
fn downloaded(summary: &str) -> u64 {
    let at = summary.find(" bytes) down").expect("summary line");
    let start = summary[..at].rfind('(').unwrap() + 1;
    summary[start..at].parse().unwrap()
}

#[test]
fn tracker_seed_and_three_fetchers_end_identical() {
    let s = Scratch::new("three");
    let bytes = data(6 << 20, 11);
    std::fs::create_dir_all(s.0.join("seed")).unwrap();
    std::fs::write(s.0.join("seed/blob.bin"), &bytes).unwrap();
    let tracker = Proc::start(&["udp-tracker", "--port", "0", "--bind", "127.0.0.1"], &s.0);
    create(&s.0.join("seed"), "blob.bin", tracker.port());
    std::fs::rename(s.0.join("seed/data.st"), s.0.join("data.st")).unwrap();
    let _seed = Proc::start(
        &[
            "-q",
            "seed",
            "data.st",
            "seed/blob.bin",
            "--bind",
            "127.0.0.1",
        ],
        &s.0,
    );
    let fetchers: Vec<Proc> = (0..3)
        .map(|i| {
            let out = format!("f{i}");
            Proc::start(
                &["-q", "fetch", "data.st", "-o", &out, "--bind", "127.0.0.1"],
                &s.0,
            )
        })
        .collect();
    for (i, f) in fetchers.into_iter().enumerate() {
        let (code, out) = f.finish();
        assert_eq!(code, 0, "fetcher {i}: {out}");
        assert!(out.starts_with("fetched"), "{out}");
        let got = std::fs::read(s.0.join(format!("f{i}/blob.bin"))).unwrap();
        assert!(got == bytes, "fetcher {i} has different bytes");
        assert!(!s.0.join(format!("f{i}/blob.bin.part")).exists());
        assert!(!s.0.join(format!("f{i}/.blob.bin.st-resume")).exists());
    }
}

#[test]
fn a_killed_fetch_resumes_without_fetching_synced_data_again() {
    let s = Scratch::new("resume");
    let frag = 64 * 1024;
    let bytes = data(64 * frag, 12);
    std::fs::create_dir_all(s.0.join("full")).unwrap();
    std::fs::create_dir_all(s.0.join("half")).unwrap();
    std::fs::write(s.0.join("full/blob.bin"), &bytes).unwrap();
    // A seed whose copy is right only in its first half: the fetcher can get 32 fragments.
    let mut half = bytes.clone();
    half[32 * frag..].iter_mut().for_each(|b| *b ^= 0xFF);
    std::fs::write(s.0.join("half/blob.bin"), &half).unwrap();
    let tracker = Proc::start(&["udp-tracker", "--port", "0", "--bind", "127.0.0.1"], &s.0);
    create(&s.0.join("full"), "blob.bin", tracker.port());
    std::fs::rename(s.0.join("full/data.st"), s.0.join("data.st")).unwrap();

    let half_seed = Proc::start(
        &[
            "-q",
            "seed",
            "data.st",
            "half/blob.bin",
            "--bind",
            "127.0.0.1",
        ],
        &s.0,
    );
    let mut fetch = Proc::start(
        &["-q", "fetch", "data.st", "-o", "out", "--bind", "127.0.0.1"],
        &s.0,
    );
    // Wait (bounded) until the resume file records data, then kill -9.
    let resume = s.0.join("out/.blob.bin.st-resume");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !resume.exists() {
        assert!(Instant::now() < deadline, "no resume file was written");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(fetch.child.id() as i32, libc::SIGKILL);
    }
    let _ = fetch.child.wait();
    drop(half_seed);
    assert!(
        !s.0.join("out/blob.bin").exists(),
        "never in place before it is complete"
    );

    let _full_seed = Proc::start(
        &[
            "-q",
            "seed",
            "data.st",
            "full/blob.bin",
            "--bind",
            "127.0.0.1",
        ],
        &s.0,
    );
    let again = Proc::start(
        &["-q", "fetch", "data.st", "-o", "out", "--bind", "127.0.0.1"],
        &s.0,
    );
    let (code, out) = again.finish();
    assert_eq!(code, 0, "{out}");
    assert!(std::fs::read(s.0.join("out/blob.bin")).unwrap() == bytes);
    let fetched = downloaded(&out);
    assert!(
        fetched <= 32 * frag as u64,
        "the restart fetched {fetched} bytes; at most the 32 fragments the first run lacked"
    );
    assert!(fetched > 0);
}
