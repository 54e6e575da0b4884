//! Helpers shared by the CLI's end-to-end tests.
#![allow(dead_code)]

use std::fs;
use std::path::PathBuf;

/// A scratch directory, unique to the test process and tag, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// Creates (empty) the scratch directory for `tag`.
    pub fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("st-test-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    /// A path inside the scratch directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A running `st` (optionally inside a network namespace), with its stdout.
pub struct Proc {
    /// The process.
    pub child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    /// The address from the "listening on" line.
    pub addr: String,
}

impl Proc {
    /// Starts `st ARGS` in `cwd`, stderr discarded, and reads its first line, which must be
    /// "listening on ADDR".
    pub fn start(args: &[&str], cwd: &std::path::Path) -> Proc {
        Proc::start_with(None, args, cwd, std::process::Stdio::null())
    }

    /// Like [`Proc::start`], inside network namespace `netns` if given.
    pub fn start_in(netns: Option<&str>, args: &[&str], cwd: &std::path::Path) -> Proc {
        Proc::start_with(netns, args, cwd, std::process::Stdio::null())
    }

    /// Like [`Proc::start_in`], with stderr going to `stderr`.
    pub fn start_with(
        netns: Option<&str>,
        args: &[&str],
        cwd: &std::path::Path,
        stderr: std::process::Stdio,
    ) -> Proc {
        use std::io::BufRead;
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_st")]);
                c
            }
            None => std::process::Command::new(env!("CARGO_BIN_EXE_st")),
        };
        let mut child = cmd
            .args(args)
            .current_dir(cwd)
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start st");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{args:?}: first line {line:?}"))
            .to_owned();
        Proc { child, out, addr }
    }

    /// The port of the "listening on" address.
    pub fn port(&self) -> &str {
        self.addr.rsplit(':').next().unwrap()
    }

    /// Waits for exit (at most 120 s) and returns the exit code and the rest of stdout.
    pub fn finish(self) -> (i32, String) {
        self.finish_within(std::time::Duration::from_secs(120))
    }

    /// Waits for exit (at most `limit`) and returns the exit code and the rest of stdout.
    pub fn finish_within(mut self, limit: std::time::Duration) -> (i32, String) {
        use std::io::BufRead;
        let deadline = std::time::Instant::now() + limit;
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
            assert!(
                std::time::Instant::now() < deadline,
                "process did not finish"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
