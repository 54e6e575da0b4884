//! `st lab`: a test swarm in one command. One seed and N fetchers of generated data, real `st`
//! processes (this executable) on a namespace LAN whose links are shaped with `tc` (or, where
//! namespaces cannot be made, on loopback, unshaped), timed from their `--json` events; the
//! results go to `results.json`, `progress.svg` and `completion.svg`, and a table to stdout.
//!
//! The judging rules (the lower bound, the quantiles, each fetcher's timeline) live in
//! `st_engine::lab`; this module runs the processes and renders.
#![allow(
    clippy::disallowed_methods,
    reason = "`st lab` times its child processes (the run's timeout) and timestamps the lines they print: wall-clock observation from outside the swarm, no peer or tracker rule"
)]

pub mod net;
mod plot;

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use st_engine::lab::{Spread, Timeline, bound_secs};

use crate::common::Ctx;
use crate::error::{CliError, CliResult, invalid, runtime};
use crate::units::format_size;

/// How the fetchers find the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Discovery {
    /// LAN multicast discovery only (no tracker in the `.st` file).
    Lan,
    /// An `st udp-tracker` on the seed's host, LAN discovery off.
    Tracker,
}

/// Arguments of `st lab`.
#[derive(Debug, Clone)]
pub struct LabArgs {
    /// Fetchers.
    pub hosts: usize,
    /// Bytes of generated data.
    pub size: u64,
    /// Each host's link rate in bytes per second, both ways (`None`: unshaped).
    pub rate: Option<u64>,
    /// Fragment length for `st create` (`None`: its default).
    pub fragment_size: Option<u32>,
    /// Tracker or LAN discovery.
    pub discovery: Discovery,
    /// Where the results go.
    pub out: PathBuf,
    /// Keep the generated data, the fetched copies and the logs (in `OUT/work`).
    pub keep: bool,
    /// Longest run of the fetchers (`None`: from the bound, else 120 s).
    pub timeout: Option<Duration>,
}

/// Most fetchers (the subnet has room for more; two cores do not).
pub const MAX_HOSTS: usize = 500;

/// Runs `st lab`.
pub fn run(ctx: Ctx, args: LabArgs) -> CliResult<()> {
    if args.hosts == 0 || args.hosts > MAX_HOSTS {
        return Err(invalid(format!(
            "--hosts {}: must be 1 to {MAX_HOSTS}",
            args.hosts
        )));
    }
    if args.size == 0 {
        return Err(invalid("--size 0: nothing to share".to_owned()));
    }
    let int = Arc::new(AtomicBool::new(false));
    let term = Arc::new(AtomicBool::new(false));
    for (sig, flag) in [
        (signal_hook::consts::SIGINT, &int),
        (signal_hook::consts::SIGTERM, &term),
    ] {
        signal_hook::flag::register(sig, Arc::clone(flag))
            .map_err(|e| runtime(format!("cannot install signal handler: {e}")))?;
    }
    let signals = Signals { int, term };
    std::fs::create_dir_all(&args.out)
        .map_err(|e| runtime(format!("cannot create {}: {e}", args.out.display())))?;
    let exe = std::env::current_exe()
        .map_err(|e| runtime(format!("cannot find the st executable: {e}")))?;

    // The network: namespaces if this process may make them, else loopback.
    let mut args = args;
    let lan = match net::available() {
        Ok(()) => Some(
            net::Lan::up(args.hosts + 1, args.rate.map(|r| r * 8))
                .map_err(|e| runtime(format!("cannot build the lab network: {e}")))?,
        ),
        Err(why) => {
            eprintln!("st lab: {why}: running on loopback, unshaped, with a tracker");
            args.rate = None;
            args.discovery = Discovery::Tracker;
            None
        }
    };
    let mut lab = Lab {
        procs: Vec::new(),
        work: Work::new(&args)?,
        lan,
    };
    let result = lab.run(ctx, &args, &exe, &signals);
    // Processes first, then the namespaces (field order), then the files.
    drop(lab);
    result
}

/// SIGINT and SIGTERM, as flags.
struct Signals {
    int: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
}

impl Signals {
    fn exit_code(&self) -> Option<u8> {
        if self.int.load(Ordering::Relaxed) {
            Some(130)
        } else if self.term.load(Ordering::Relaxed) {
            Some(143)
        } else {
            None
        }
    }
}

/// The scratch directory: generated data, fetched copies, logs. Removed on drop unless kept.
struct Work {
    dir: PathBuf,
    keep: bool,
}

impl Work {
    fn new(args: &LabArgs) -> CliResult<Work> {
        // On tmpfs when there is one and nothing is kept: the disk is not what is measured.
        let shm = Path::new("/dev/shm");
        sweep_stale(shm);
        let dir = if !args.keep && shm.is_dir() {
            shm.join(format!("st-lab-{}", std::process::id()))
        } else {
            args.out.join("work")
        };
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs"))
            .map_err(|e| runtime(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Work {
            dir,
            keep: args.keep,
        })
    }
}

/// Removes the scratch directories of labs that were killed (SIGKILL leaves no chance to
/// clean up; their processes died with them, their files stay until the next run).
fn sweep_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("st-lab-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A child process, killed and reaped on drop if still running.
struct Proc {
    name: String,
    child: Child,
    /// Exit code (128 + signal when killed) and CPU seconds, once reaped.
    done: Option<(i32, f64)>,
}

impl Proc {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Reaps it if it has exited (or waits, with `block`), keeping its CPU time.
    fn reap(&mut self, block: bool) -> Option<(i32, f64)> {
        if self.done.is_none() {
            let mut status = 0;
            // SAFETY: rusage is plain data that wait4 fills in.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            let flags = if block { 0 } else { libc::WNOHANG };
            // SAFETY: our own child's PID, valid pointers to locals.
            let r = unsafe { libc::wait4(self.pid(), &mut status, flags, &mut ru) };
            if r == self.pid() {
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                };
                let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
                self.done = Some((code, secs(ru.ru_utime) + secs(ru.ru_stime)));
            }
        }
        self.done
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    fn stop(&mut self, grace: Duration) -> Option<(i32, f64)> {
        if self.reap(false).is_none() {
            // SAFETY: our own child, not yet reaped, so the PID is still ours.
            unsafe { libc::kill(self.pid(), libc::SIGTERM) };
            // Up to `grace`, in 10 ms naps (counted: no clock read needed).
            let naps = grace.as_millis().div_ceil(10);
            for _ in 0..naps {
                if self.reap(false).is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            self.reap(false);
            if self.done.is_none() {
                // SAFETY: as above.
                unsafe { libc::kill(self.pid(), libc::SIGKILL) };
                self.reap(true);
            }
        }
        self.done
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

/// A line of a process's stdout, timed when it was read; `None` at its end.
type Line = (usize, Instant, Option<String>);

/// Everything that must go when the lab ends, in the order it must go.
struct Lab {
    procs: Vec<Proc>,
    lan: Option<net::Lan>,
    work: Work,
}

/// A fetcher as the lab sees it.
struct Fetcher {
    host: String,
    address: String,
    proc: usize,
    timeline: Timeline,
    ended: bool,
}

impl Lab {
    /// Starts `st ARGS` on host `host` (namespaces) or here, stdout piped, stderr to a log.
    fn spawn(&mut self, exe: &Path, host: usize, name: &str, args: &[String]) -> CliResult<usize> {
        let mut cmd = match &self.lan {
            Some(lan) => lan.hosts[host].command(&exe.to_string_lossy()),
            None => {
                let mut c = Command::new(exe);
                // SAFETY: only async-signal-safe prctl between fork and exec.
                unsafe {
                    std::os::unix::process::CommandExt::pre_exec(&mut c, || {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                c
            }
        };
        let log = self.work.dir.join("logs").join(format!("{name}.log"));
        let err = std::fs::File::create(&log)
            .map_err(|e| runtime(format!("cannot create {}: {e}", log.display())))?;
        let child = cmd
            .args(args)
            .current_dir(&self.work.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .map_err(|e| runtime(format!("cannot start {name}: {e}")))?;
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
            done: None,
        });
        Ok(self.procs.len() - 1)
    }

    /// The first line of process `k`'s stdout (its "listening" line), within 10 s.
    fn first_line(&mut self, k: usize) -> CliResult<String> {
        let out = self.procs[k].child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send((line, r));
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok((line, rest)) if !line.is_empty() => {
                // Keep draining its stdout so it never blocks on a full pipe.
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut rest.into_inner(), &mut std::io::sink());
                });
                Ok(line.trim().to_owned())
            }
            _ => Err(runtime(format!(
                "{} did not start (see {})",
                self.procs[k].name,
                self.work
                    .dir
                    .join("logs")
                    .join(format!("{}.log", self.procs[k].name))
                    .display()
            ))),
        }
    }

    fn run(&mut self, ctx: Ctx, args: &LabArgs, exe: &Path, signals: &Signals) -> CliResult<()> {
        let namespaces = self.lan.is_some();
        let seed_ip = if namespaces {
            net::Lan::addr(0).to_string()
        } else {
            "127.0.0.1".to_owned()
        };
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<String>>();

        // The data, generated.
        let data = self.work.dir.join("seed").join("lab.bin");
        generate(&data, args.size).map_err(|e| runtime(format!("cannot write the data: {e}")))?;

        // The tracker first: its address goes into the .st file.
        let mut create = s(&["-q", "create", "seed/lab.bin", "-o", "lab.st"]);
        if args.discovery == Discovery::Tracker {
            let mut t = s(&["udp-tracker", "--bind", &seed_ip]);
            t.extend(s(&["--port", if namespaces { "6969" } else { "0" }]));
            let k = self.spawn(exe, 0, "tracker", &t)?;
            let line = self.first_line(k)?;
            let addr = line
                .strip_prefix("listening on ")
                .unwrap_or(&line)
                .to_owned();
            create.extend(s(&["-t", &format!("udp://{addr}")]));
        }
        if let Some(f) = args.fragment_size {
            create.extend(s(&["--fragment-size", &f.to_string()]));
        }
        let o = Command::new(exe)
            .args(&create)
            .current_dir(&self.work.dir)
            .output()
            .map_err(|e| runtime(format!("cannot run st create: {e}")))?;
        if !o.status.success() {
            return Err(runtime(format!(
                "st create failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )));
        }
        let st_bytes = std::fs::read(self.work.dir.join("lab.st"))
            .map_err(|e| runtime(format!("cannot read lab.st: {e}")))?;
        let st = st_proto::st_file::StFile::decode(&st_bytes)
            .map_err(|e| runtime(format!("lab.st: {e}")))?;
        let fragments = st.info.fragment_count();
        let rate_bps = args.rate.map(|r| r * 8);
        let bound = rate_bps.and_then(|r| bound_secs(args.hosts as u32, args.size, fragments, r));
        let timeout = args.timeout.unwrap_or_else(|| match bound {
            Some(b) => Duration::from_secs_f64(30.0 + 5.0 * b),
            None => Duration::from_secs(120),
        });

        // The seed.
        let mut net_flags = s(&["--json", "--no-dht", "--progress-interval", "0.1"]);
        if args.discovery == Discovery::Tracker {
            net_flags.push("--no-lan".into());
        }
        if !namespaces {
            net_flags.extend(s(&["--bind", "127.0.0.1"]));
        }
        let mut seed = s(&[
            "seed",
            "lab.st",
            "seed/lab.bin",
            "--state-dir",
            "state/seed",
        ]);
        seed.extend(net_flags.clone());
        let k = self.spawn(exe, 0, "seed", &seed)?;
        let line = self.first_line(k)?;
        let seed_port = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v["addr"].as_str().map(str::to_owned))
            .and_then(|a| a.rsplit(':').next().map(str::to_owned))
            .unwrap_or_default();
        let seed_addr = format!("{seed_ip}:{seed_port}");
        let seed_proc = k;

        // The fetchers, all at once.
        let rate_text = rate_bps.map_or("unshaped".to_owned(), |r| {
            format!("{} Mbit/s links", r as f64 / 1e6)
        });
        let where_ = if namespaces {
            "network namespaces"
        } else {
            "loopback"
        };
        let how = match args.discovery {
            Discovery::Lan => "LAN discovery",
            Discovery::Tracker => "a tracker",
        };
        println!(
            "st lab: 1 seed → {} fetchers, {} in {fragments} fragments, {rate_text}, {how}, on {where_}",
            args.hosts,
            format_size(args.size),
        );
        let (tx, rx) = mpsc::channel::<Line>();
        let t0 = Instant::now();
        let mut fetchers = Vec::with_capacity(args.hosts);
        for h in 1..=args.hosts {
            let host = format!("h{h}");
            let mut f = s(&["fetch", "lab.st", "-o", &host, "--state-dir"]);
            f.push(format!("state/{host}"));
            f.extend(net_flags.clone());
            let start = t0.elapsed().as_secs_f64();
            let k = self.spawn(exe, h, &host, &f)?;
            let out = self.procs[k].child.stdout.take().expect("piped");
            let tx = tx.clone();
            let idx = fetchers.len();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((idx, Instant::now(), Some(line))).is_err() {
                        return;
                    }
                }
                let _ = tx.send((idx, Instant::now(), None));
            });
            fetchers.push(Fetcher {
                address: if namespaces {
                    net::Lan::addr(h).to_string()
                } else {
                    "127.0.0.1".to_owned()
                },
                host,
                proc: k,
                timeline: Timeline::new(start),
                ended: false,
            });
        }
        drop(tx);

        // Follow them.
        let bar = !ctx.quiet && std::io::stderr().is_terminal();
        let mut next_line = Instant::now();
        let mut timed_out = false;
        let total_bytes = args.size * args.hosts as u64;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok((i, at, Some(line))) => {
                    let t = at.saturating_duration_since(t0).as_secs_f64();
                    take_event(&mut fetchers[i].timeline, t, &line, args.size);
                }
                Ok((i, _, None)) => fetchers[i].ended = true,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            for f in &fetchers {
                self.procs[f.proc].reap(false);
            }
            if let Some(code) = signals.exit_code() {
                if bar {
                    eprintln!();
                }
                eprintln!("st lab: interrupted; stopping every process and cleaning up");
                return Err(CliError::Interrupted(code));
            }
            if !timed_out && t0.elapsed() > timeout {
                timed_out = true;
                for f in &fetchers {
                    self.procs[f.proc].stop(Duration::from_secs(2));
                }
            }
            if Instant::now() >= next_line {
                let done = fetchers
                    .iter()
                    .filter(|f| f.timeline.complete_s.is_some())
                    .count();
                let have: u64 = fetchers
                    .iter()
                    .map(|f| f.timeline.samples.last().map_or(0, |s| s.1))
                    .sum();
                let msg = format!(
                    "{done}/{} complete, {:.0} % of {} in all, {:.1} s",
                    args.hosts,
                    100.0 * have as f64 / total_bytes.max(1) as f64,
                    format_size(total_bytes),
                    t0.elapsed().as_secs_f64()
                );
                if bar {
                    eprint!("\r\x1b[2K{msg}");
                    let _ = std::io::stderr().flush();
                    next_line = Instant::now() + Duration::from_millis(200);
                } else if !ctx.quiet {
                    eprintln!("st lab: {msg}");
                    next_line = Instant::now() + Duration::from_secs(5);
                } else {
                    next_line = Instant::now() + Duration::from_secs(3600);
                }
            }
            if fetchers.iter().all(|f| f.ended) {
                break;
            }
        }
        if bar {
            eprintln!();
        }
        for f in &fetchers {
            self.procs[f.proc].stop(Duration::from_secs(5));
        }
        let seed_cpu = self.procs[seed_proc]
            .stop(Duration::from_secs(5))
            .map(|d| d.1);

        // Results.
        let rows: Vec<Value> = fetchers
            .iter()
            .map(|f| {
                let (code, cpu) = self.procs[f.proc].done.unwrap_or((-1, 0.0));
                json!({
                    "host": f.host,
                    "address": f.address,
                    "start_s": f.timeline.start_s,
                    "first_byte_s": f.timeline.first_byte_s,
                    "complete_s": f.timeline.complete_s,
                    "cpu_s": cpu,
                    "exit_code": code,
                    "bytes_from": f.timeline.bytes_from,
                    "progress": f.timeline.samples,
                })
            })
            .collect();
        let times: Vec<f64> = fetchers
            .iter()
            .filter_map(|f| f.timeline.complete_s)
            .collect();
        let spread = Spread::of(&times);
        let ok = fetchers.iter().all(|f| {
            f.timeline.complete_s.is_some() && self.procs[f.proc].done.is_some_and(|d| d.0 == 0)
        });
        let results = json!({
            "hosts": args.hosts,
            "size": args.size,
            "fragment_length": st.info.fragment_length,
            "fragments": fragments,
            "rate_bps": rate_bps,
            "bound_s": bound,
            "network": if namespaces { "namespaces" } else { "loopback" },
            "discovery": match args.discovery { Discovery::Lan => "lan", Discovery::Tracker => "tracker" },
            "timeout_s": timeout.as_secs_f64(),
            "seed": { "address": seed_addr, "cpu_s": seed_cpu },
            "p50_s": spread.map(|s| s.p50),
            "p90_s": spread.map(|s| s.p90),
            "max_s": spread.map(|s| s.max),
            "max_over_bound": spread.zip(bound).map(|(s, b)| s.max / b),
            "all_complete": ok,
            "fetchers": rows,
        });
        let out = &args.out;
        let write = |name: &str, text: String| {
            std::fs::write(out.join(name), text)
                .map_err(|e| runtime(format!("cannot write {}: {e}", out.join(name).display())))
        };
        write(
            "results.json",
            serde_json::to_string_pretty(&results).unwrap_or_default() + "\n",
        )?;
        let title = format!(
            "{} fetchers, {}, {rate_text}, {how}",
            args.hosts,
            format_size(args.size)
        );
        let named: Vec<(String, Timeline)> = fetchers
            .iter()
            .map(|f| (f.host.clone(), f.timeline.clone()))
            .collect();
        plot::progress(&out.join("progress.svg"), &title, &named).map_err(runtime)?;
        plot::completion(
            &out.join("completion.svg"),
            &title,
            args.hosts,
            &times,
            bound,
        )
        .map_err(runtime)?;

        // The table.
        let secs = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.2} s"));
        println!(
            "{:<6} {:<15} {:>10} {:>10} {:>8} {:>11}",
            "host", "address", "first byte", "complete", "cpu", "from seed"
        );
        for f in &fetchers {
            let cpu = self.procs[f.proc].done.map_or(0.0, |d| d.1);
            let from_seed: u64 = f
                .timeline
                .bytes_from
                .iter()
                .filter(|(a, _)| same_addr(a, &seed_addr))
                .map(|(_, b)| *b)
                .sum();
            println!(
                "{:<6} {:<15} {:>10} {:>10} {:>8} {:>11}",
                f.host,
                f.address,
                secs(f.timeline.first_byte_s),
                secs(f.timeline.complete_s),
                format!("{cpu:.2} s"),
                format_size(from_seed)
            );
        }
        match spread {
            Some(sp) => {
                let ratio = bound.map_or(String::new(), |b| {
                    format!("   bound {b:.2} s   max/bound {:.2}", sp.max / b)
                });
                println!(
                    "p50 {:.2} s   p90 {:.2} s   max {:.2} s{ratio}",
                    sp.p50, sp.p90, sp.max
                );
            }
            None => println!("no fetcher completed"),
        }
        println!(
            "results: {}, {}, {}",
            out.join("results.json").display(),
            out.join("progress.svg").display(),
            out.join("completion.svg").display()
        );
        if ok {
            Ok(())
        } else {
            let failed: Vec<&str> = fetchers
                .iter()
                .filter(|f| f.timeline.complete_s.is_none())
                .map(|f| f.host.as_str())
                .collect();
            let why = if timed_out {
                format!(" within the {:.0} s timeout", timeout.as_secs_f64())
            } else {
                String::new()
            };
            Err(runtime(format!(
                "{} of {} fetchers did not complete{why} ({}); their logs: {}",
                failed.len().max(1),
                args.hosts,
                failed.join(", "),
                if args.keep {
                    self.work.dir.join("logs").display().to_string()
                } else {
                    "run with --keep to keep them".to_owned()
                }
            )))
        }
    }
}

/// Whether `a` (as a fetcher's summary names a peer) is the seed's `ip:port`; a dual-stack
/// socket may name an IPv4 peer `[::ffff:a.b.c.d]:port`.
fn same_addr(a: &str, seed: &str) -> bool {
    a == seed || a.replace("[::ffff:", "").replace("]:", ":") == seed
}

/// Takes one `--json` line of a fetcher into its timeline.
fn take_event(t: &mut Timeline, at: f64, line: &str, size: u64) {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return;
    };
    match v["event"].as_str() {
        Some("progress") => {
            if let (Some(have), Some(total)) = (v["have"].as_u64(), v["total"].as_u64()) {
                t.progress(at, have, total);
            }
        }
        Some("complete") => t.complete(at, size),
        Some("summary") => {
            for s in v["swarms"].as_array().into_iter().flatten() {
                for (addr, bytes) in s["from"].as_object().into_iter().flatten() {
                    *t.bytes_from.entry(addr.clone()).or_insert(0) += bytes.as_u64().unwrap_or(0);
                }
            }
        }
        _ => {}
    }
}

/// Writes `size` pseudo-random bytes (xorshift: fast, and incompressible enough for a
/// transfer test) to `path`.
fn generate(path: &Path, size: u64) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for c in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()
}
