//! `st seed` and `st fetch`: join a swarm, serve what we have, fetch what we lack.
//!
//! This is the driver: it opens the storage, binds the reactor, and on every turn of the
//! reactor feeds the transport's events to the swarm layer and the tracker client, pushes the
//! tracker requests out, syncs the resume file, and draws progress. All protocol decisions are
//! in `st_engine` (sans-IO); this module only wires them to the disk, the clock and signals.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use log::{debug, info, warn};
use st_engine::discovery::lan::{LanConfig, LanDiscovery};
use st_engine::discovery::tracker_client::{Progress as TrackerProgress, TrackerClient};
use st_engine::node::Node;
use st_engine::peer::swarm::{SwarmConfig, SwarmCore};
use st_engine::reactor::{Reactor, ReactorConfig};
use st_engine::storage::Storage;
use st_engine::storage::disk::{DiskThread, Done};
use st_engine::time::Time;
use st_engine::transport::{self, Endpoint, Event, RequestId};
use st_proto::st_file::{Host, StFile};

use crate::common::{Ctx, data_paths, hex, load_st};
use crate::error::{CliError, CliResult, invalid, runtime};
use crate::hashing::{self, Outcome};
use crate::units::format_size;

/// What to do once the data is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `st seed`: serve until interrupted.
    Seed,
    /// `st fetch`: exit once complete (or serve on with `--seed`).
    Fetch {
        /// Keep serving after completion.
        seed_after: bool,
    },
}

/// Arguments shared by `seed` and `fetch`.
pub struct SwarmArgs {
    /// The `.st` file.
    pub st: PathBuf,
    /// Data path (seed) or output directory (fetch).
    pub path: PathBuf,
    /// UDP port (0: any).
    pub port: u16,
    /// Address to bind.
    pub bind: Option<IpAddr>,
    /// Announce and look for peers on the local network.
    pub lan: bool,
    /// Seed or fetch.
    pub mode: Mode,
}

/// Seconds between resume-file syncs while downloading.
const SYNC_EVERY: Duration = Duration::from_secs(5);
/// Longest wait for trackers to hear `stopped` on the way out.
const STOP_GRACE: Duration = Duration::from_secs(3);

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8 ^ std::process::id() as u8;
        }
    }
    b
}

/// Resolves the tracker table; unresolvable hosts are skipped with a warning.
fn resolve_trackers(st: &StFile) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for t in &st.trackers {
        match &t.host {
            Host::V4(a) => out.push(SocketAddr::new(IpAddr::V4(*a), t.port)),
            Host::V6(a) => out.push(SocketAddr::new(IpAddr::V6(*a), t.port)),
            Host::Dns(name) => match (name.as_str(), t.port).to_socket_addrs() {
                Ok(mut addrs) => match addrs.next() {
                    Some(a) => out.push(a),
                    None => warn!("tracker {t}: no address"),
                },
                Err(e) => warn!("tracker {t}: cannot resolve ({e}); skipped"),
            },
        }
    }
    out
}

/// Checks existing data with every core and records the fragments that match.
fn check_existing(
    ctx: Ctx,
    st: &StFile,
    paths: &[PathBuf],
    storage: &mut Storage,
    verb: &str,
) -> CliResult<u32> {
    let info = &st.info;
    let mut good = 0u32;
    hashing::hash_all(
        ctx,
        paths,
        &info.file_lengths(),
        info.fragment_length,
        verb,
        |i, _, outcome| {
            if outcome == Outcome::Hash(info.hashes[i as usize]) {
                storage.mark_verified(i);
                good += 1;
            }
        },
    )
    .map_err(|e| runtime(e.message()))?;
    Ok(good)
}

/// Runs `st seed` or `st fetch`.
pub fn run(ctx: Ctx, args: SwarmArgs) -> CliResult<()> {
    let (st, swarm_id) = load_st(&args.st)?;
    let info = &st.info;
    let count = info.fragment_count();
    let (mut storage, label) = match args.mode {
        Mode::Seed => {
            std::fs::metadata(&args.path)
                .map_err(|e| invalid(format!("cannot read {}: {e}", args.path.display())))?;
            let paths = data_paths(&st, &args.path);
            let mut storage =
                Storage::open_for_seed(info, swarm_id, data_root(&st, &args.path).as_path())
                    .map_err(|e| invalid(format!("{e}")))?;
            let good = check_existing(ctx, &st, &paths, &mut storage, "checking")?;
            if good == 0 {
                return Err(runtime(format!(
                    "{}: no fragment matches {}; nothing to seed",
                    args.path.display(),
                    args.st.display()
                )));
            }
            if good < count {
                warn!(
                    "{}: only {good} of {count} fragments match; serving those",
                    args.path.display()
                );
            }
            (storage, "seeding")
        }
        Mode::Fetch { .. } => {
            std::fs::create_dir_all(&args.path)
                .map_err(|e| runtime(format!("cannot create {}: {e}", args.path.display())))?;
            let part_existed = st_engine::storage::final_paths(info, &args.path)
                .iter()
                .any(|p| part_of(p).exists());
            let (mut storage, resume) = Storage::open_for_fetch(info, swarm_id, &args.path)
                .map_err(|e| runtime(format!("{e}")))?;
            if let Some(why) = &resume.ignored {
                warn!("resume state ignored: {why}; checking what is on disk");
            }
            if let Some(why) = &resume.not_preallocated {
                warn!("{why}; fetching what fits (a full disk stops the fetch, keeping it)");
            }
            if resume.trusted > 0 {
                info!(
                    "resuming: {} of {count} fragments already verified and on disk",
                    resume.trusted
                );
            }
            if part_existed {
                // Data written before a crash but not yet recorded: check it rather than
                // trust it, so nothing unverified is ever counted (spec peer.md §8).
                let missing: Vec<u32> = storage.missing().collect();
                let mut recovered = 0;
                for i in missing {
                    if storage.verify(i).map_err(|e| runtime(format!("{e}")))? {
                        recovered += 1;
                    }
                }
                if recovered > 0 {
                    info!("{recovered} more fragments found intact on disk");
                }
            }
            (storage, "fetching")
        }
    };

    let bind_ip = args.bind.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    let mut reactor = Reactor::bind(ReactorConfig {
        bind: SocketAddr::new(bind_ip, args.port),
        ..ReactorConfig::default()
    })
    .or_else(|e| {
        if args.bind.is_none() {
            warn!("cannot bind [::]:{} ({e}); IPv4 only", args.port);
            Reactor::bind(ReactorConfig {
                bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), args.port),
                ..ReactorConfig::default()
            })
        } else {
            Err(e)
        }
    })
    .map_err(|e| runtime(format!("cannot bind UDP port {}: {e}", args.port)))?;
    let port = reactor.local_addr().port();
    let seed = u64::from_ne_bytes(random_bytes::<8>());
    let ep = Endpoint::new(
        transport::Config {
            accept: true,
            secret: Some(random_bytes::<32>()),
            // Larger datagrams only with the don't-fragment bit (spec transport §8.4).
            max_mtu: if reactor.dont_fragment() {
                transport::Config::default().max_mtu
            } else {
                1472
            },
            ..transport::Config::default()
        },
        seed,
    );
    let peer_id = random_bytes::<16>();
    let lan = if args.lan {
        join_lan(&mut reactor, args.bind, peer_id, port, swarm_id)
    } else {
        None
    };
    let lan_on = lan.is_some();
    let mut node = Node { ep, lan };
    let mut swarm = SwarmCore::new(
        SwarmConfig::default(),
        swarm_id,
        peer_id,
        port,
        info.total_length,
        info.fragment_length,
        |i| storage.has(i),
        seed ^ 1,
    );
    let trackers = resolve_trackers(&st);
    if trackers.is_empty() && !lan_on {
        warn!(
            "no usable tracker in {} and no LAN discovery: waiting for peers to connect",
            args.st.display()
        );
    }
    let mut tc = TrackerClient::new(&trackers, swarm_id, peer_id, port, reactor.now());
    info!(
        "{label} {} ({}, swarm {}) on UDP port {port}",
        info.name,
        format_size(info.total_length),
        &hex(&swarm_id)[..16]
    );
    println!("listening on {}", reactor.local_addr());

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| runtime(format!("cannot install signal handler: {e}")))?;
    }

    let start_have = storage.verified_bytes();
    let bar = progress_bar(ctx, info.total_length, start_have);
    let started = Instant::now();
    let mut pending: HashMap<RequestId, usize> = HashMap::new();
    let mut next_sync = Instant::now() + SYNC_EVERY;
    let mut next_log = Instant::now() + Duration::from_secs(10);
    // The bar's message is formatted at most this often: the closure below runs every
    // 256 KiB received (`ReactorConfig::app_every`), and the bar redraws every 200 ms anyway.
    let mut next_bar_message = Instant::now();
    let mut finished = storage.missing().next().is_none();
    let mut failure: Option<CliError> = None;
    let mut stopping_since: Option<Time> = None;
    if finished && matches!(args.mode, Mode::Fetch { .. }) {
        storage.finish().map_err(|e| runtime(format!("{e}")))?;
        tc.set_complete(reactor.now());
    }
    let keep_serving = match args.mode {
        Mode::Seed => true,
        Mode::Fetch { seed_after } => seed_after,
    };
    if finished && !keep_serving {
        println!("{}: already complete", info.name);
        return Ok(());
    }
    // From here on writes, verification and resume syncs run on the disk thread; the reactor
    // serves reads through the thread's view (spec peer.md §8).
    let waker = reactor
        .waker()
        .map_err(|e| runtime(format!("cannot set up the disk thread: {e}")))?;
    let mut disk = DiskThread::spawn(storage, waker)
        .map_err(|e| runtime(format!("cannot start the disk thread: {e}")))?;
    // The final fsync and renames are queued, not done yet.
    let mut finishing = false;
    // A resume sync is queued and has not answered yet.
    let mut syncing = false;

    let result = reactor.run(&mut node, Duration::from_millis(50), |node, now| {
        while let Some(done) = disk.poll() {
            match done {
                Done::Verified(i, ok) => swarm.fragment_verified(now, &mut node.ep, i, ok),
                Done::Synced(r) => {
                    syncing = false;
                    if let Err(e) = r {
                        failure.get_or_insert(runtime(disk_error(&e, disk.view())));
                    }
                }
                Done::Finished(Ok(())) => {
                    finishing = false;
                    finished = true;
                    tc.set_complete(now);
                    info!("{}: complete, every fragment verified", info.name);
                }
                Done::Finished(Err(e)) => {
                    finishing = false;
                    failure.get_or_insert(runtime(format!("{e}")));
                }
                Done::Failed(e) => {
                    failure.get_or_insert(runtime(disk_error(&e, disk.view())));
                }
            }
        }
        if let Some(lan) = &mut node.lan {
            while let Some((id, addr)) = lan.poll_peer() {
                if id == swarm_id {
                    log::debug!("LAN: peer at {addr}");
                    swarm.add_peers(&[addr]);
                }
            }
        }
        let ep = &mut node.ep;
        while let Some(ev) = ep.poll_event() {
            match ev {
                Event::Response(id, payload) => {
                    if let Some(t) = pending.remove(&id) {
                        let learned = tc.handle_response(now, t, &payload);
                        swarm.add_peers(&learned.peers);
                    }
                }
                Event::RequestFailed(id) => {
                    if let Some(t) = pending.remove(&id) {
                        tc.handle_failure(now, t);
                    }
                }
                Event::Request(_) => {}
                other => swarm.handle_event(now, ep, &mut disk, &other),
            }
        }
        swarm.tick(now, ep);
        if let Some(e) = swarm.take_io_error() {
            failure.get_or_insert(runtime(disk_error(&e, disk.view())));
        }
        let left = swarm.left();
        let (uploaded, downloaded) = (swarm.stats().uploaded, swarm.stats().downloaded);
        while let Some(out) = tc.poll_request(
            now,
            TrackerProgress {
                left,
                uploaded,
                downloaded,
            },
        ) {
            let id = ep.request(now, out.to, &out.payload);
            pending.insert(id, out.tracker);
        }
        if let Some(b) = &bar {
            b.set_position(info.total_length - left);
            if Instant::now() >= next_bar_message {
                next_bar_message = Instant::now() + Duration::from_millis(200);
                b.set_message(format!(
                    "{} peers, ↑ {}",
                    swarm.peer_count(),
                    format_size(uploaded)
                ));
            }
        } else if Instant::now() >= next_log {
            next_log = Instant::now() + Duration::from_secs(10);
            info!(
                "{:.1} % of {}, {} peers, {} down, {} up",
                100.0 * (info.total_length - left) as f64 / info.total_length.max(1) as f64,
                format_size(info.total_length),
                swarm.peer_count(),
                format_size(downloaded),
                format_size(uploaded)
            );
        }
        if !finished && !finishing && failure.is_none() && swarm.complete() {
            // Every fragment verified: the thread fsyncs and moves the files into place, and
            // says so (`Done::Finished`) before the fetch counts as complete.
            finishing = true;
            if let Err(e) = disk.finish() {
                failure.get_or_insert(runtime(format!("{e}")));
            }
        } else if !finished && !finishing && !syncing && Instant::now() >= next_sync {
            next_sync = Instant::now() + SYNC_EVERY;
            syncing = true;
            if let Err(e) = disk.sync() {
                failure.get_or_insert(runtime(format!("{e}")));
            }
        }
        let want_stop =
            stop.load(Ordering::Relaxed) || failure.is_some() || (finished && !keep_serving);
        if want_stop && stopping_since.is_none() {
            stopping_since = Some(now);
            tc.stop(now);
            swarm.close_all(now, ep);
            if !finished && !finishing {
                let (synced, failed) = disk.sync_and_wait();
                if let Some(e) = failed {
                    // A write that failed while the queue drained (a full disk): an error,
                    // even though what was verified is recorded.
                    failure.get_or_insert(runtime(disk_error(&e, disk.view())));
                }
                if let Err(e) = synced {
                    warn!("resume state not saved ({e}); a re-run checks the data on disk");
                }
            }
        }
        if let Some(since) = stopping_since
            && (tc.stopped() || now.saturating_since(since) > STOP_GRACE)
        {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    result.map_err(|e| runtime(format!("network error: {e}")))?;
    if finishing {
        // Stopped while the files were being moved into place: wait for that to end.
        match disk.wait_finished() {
            Ok(()) => finished = true,
            Err(e) => {
                failure.get_or_insert(runtime(format!("{e}")));
            }
        }
    }
    debug!(
        "reactor: {:?}; gso {} gro {}",
        reactor.stats(),
        reactor.gso(),
        reactor.gro()
    );
    if let Some(f) = failure {
        return Err(f);
    }
    summary(
        &swarm,
        started.elapsed(),
        disk.view().verified_bytes().saturating_sub(start_have),
        disk.view(),
        finished,
        args.mode,
    );
    Ok(())
}

/// Joins the LAN discovery groups (only the IPv4 one when bound to an IPv4 address, and the
/// reverse). No group at all: one warning, and the rest works without it.
fn join_lan(
    reactor: &mut Reactor,
    bind: Option<IpAddr>,
    peer_id: [u8; 16],
    port: u16,
    swarm_id: [u8; 32],
) -> Option<LanDiscovery> {
    let mut cfg = LanConfig::default();
    let mut errors = Vec::new();
    cfg.groups.retain(|g| {
        let family_ok = match bind {
            Some(b) if !b.is_unspecified() => b.is_ipv4() == g.is_ipv4(),
            _ => true,
        };
        if !family_ok {
            return false;
        }
        match reactor.join_multicast(*g, bind) {
            Ok(n) => {
                log::debug!("LAN discovery: joined {g} on {n} interfaces");
                true
            }
            Err(e) => {
                errors.push(format!("{g}: {e}"));
                false
            }
        }
    });
    if cfg.groups.is_empty() {
        warn!(
            "LAN discovery unavailable ({}); using trackers and peer exchange only",
            errors.join("; ")
        );
        return None;
    }
    for e in errors {
        log::debug!("LAN discovery: {e}");
    }
    Some(LanDiscovery::new(
        cfg,
        peer_id,
        port,
        &[swarm_id],
        reactor.now(),
    ))
}

/// The one-line message for a disk error met while fetching; a full disk says what is kept.
fn disk_error(e: &std::io::Error, storage: &Storage) -> String {
    if e.kind() == std::io::ErrorKind::StorageFull {
        format!(
            "{e}; the {} of {} fragments verified so far are kept: run the fetch again once there is room",
            storage.verified_count(),
            storage.fragment_count()
        )
    } else {
        e.to_string()
    }
}

/// The file or directory whose bytes a seed serves (see `data_paths`).
fn data_root(st: &StFile, path: &Path) -> PathBuf {
    match &st.info.files {
        None if path.is_dir() => path.join(&st.info.name),
        _ => path.to_path_buf(),
    }
}

fn part_of(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

fn progress_bar(ctx: Ctx, total: u64, have: u64) -> Option<ProgressBar> {
    if ctx.quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{percent:>3}% [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_position(have);
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

/// The deepest directory holding all of `paths` (the top folder of a directory fetch).
fn common_dir(paths: &[std::path::PathBuf]) -> std::path::PathBuf {
    let mut common = paths
        .first()
        .and_then(|p| p.parent())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    for p in paths {
        while !p.starts_with(&common) {
            if !common.pop() {
                break;
            }
        }
    }
    common
}

fn summary(
    swarm: &SwarmCore,
    elapsed: Duration,
    fetched: u64,
    storage: &Storage,
    finished: bool,
    mode: Mode,
) {
    let s = swarm.stats();
    let secs = elapsed.as_secs_f64().max(1e-3);
    let what = match (mode, finished) {
        (Mode::Fetch { .. }, true) => match storage.final_paths() {
            [one] => format!("fetched {}", one.display()),
            many => format!(
                "fetched {} ({} files)",
                common_dir(many).display(),
                many.len()
            ),
        },
        (Mode::Fetch { .. }, false) => "stopped before completion (resume state saved)".to_owned(),
        (Mode::Seed, _) => "seeded".to_owned(),
    };
    println!(
        "{what}: {} ({fetched} bytes) down in {:.1} s ({}/s), {} up, {} wasted, {} hash failures",
        format_size(fetched),
        secs,
        format_size((fetched as f64 / secs) as u64),
        format_size(s.uploaded),
        format_size(s.wasted),
        s.hash_failures
    );
    let mut peers: Vec<(&SocketAddr, &u64)> = s.from_peer.iter().collect();
    peers.sort_by(|a, b| b.1.cmp(a.1));
    for (addr, bytes) in peers {
        println!("  {:>12}  from {addr}", format_size(*bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::common_dir;
    use std::path::PathBuf;

    #[test]
    fn a_directory_fetch_is_named_by_its_top_folder() {
        let p = |s: &str| PathBuf::from(s);
        let files = [p("/o/dir/a.bin"), p("/o/dir/sub/b.bin"), p("/o/dir/empty")];
        assert_eq!(common_dir(&files), p("/o/dir"));
        assert_eq!(
            common_dir(&[p("/o/dir/sub/x"), p("/o/dir/sub/y")]),
            p("/o/dir/sub")
        );
        assert_eq!(common_dir(&[]), p(""));
    }
}
