//! `st seed` and `st fetch`: the driver of a peer node.
//!
//! It parses nothing and decides nothing about the protocol: it opens the stores (files, the
//! disk thread, the start-up check of a seed), builds the engine's `PeerNode`, runs the
//! reactor, and renders the node's events (progress bar, log lines or JSON) until the node
//! says it stopped. Every rule of a peer process (routing, completion, resume syncs, the stop
//! sequence, crash recovery, rate limits) is the node's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use log::{debug, info, warn};
use serde_json::json;
use st_engine::dht::DhtConfig;
use st_engine::discovery::lan::LanConfig;
use st_engine::node::{NodeConfig, NodeEvent, PeerNode, SwarmPhase, SwarmSpec};
use st_engine::reactor::{Reactor, ReactorConfig, Wake};
use st_engine::storage::disk::DiskThread;
use st_engine::storage::{Storage, SwarmStore, seed_state};
use st_engine::time::Time;
use st_engine::transport;
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
        /// Fetch over other data under the final names, keeping what matches.
        force: bool,
    },
}

/// Arguments shared by `seed` and `fetch`.
pub struct SwarmArgs {
    /// The `.st` files (one for `seed FILE PATH`, none for `seed --dir`).
    pub sts: Vec<PathBuf>,
    /// Data path (seed), library directory (`seed --dir`) or output directory (fetch).
    pub path: PathBuf,
    /// `seed --dir`: serve every `.st` file in `path` whose data is there too.
    pub dir: bool,
    /// UDP port (0: any).
    pub port: u16,
    /// Address to bind.
    pub bind: Option<IpAddr>,
    /// Announce and look for peers on the local network.
    pub lan: bool,
    /// Use the DHT.
    pub dht: bool,
    /// DHT bootstrap nodes, `HOST:PORT` (empty: the public routers).
    pub dht_bootstrap: Vec<String>,
    /// Seed or fetch.
    pub mode: Mode,
    /// Upload limit, bytes per second.
    pub max_upload: Option<u64>,
    /// Download limit, bytes per second.
    pub max_download: Option<u64>,
    /// One JSON object per line on stdout.
    pub json: bool,
    /// Where a seed remembers what it verified.
    pub state_dir: Option<PathBuf>,
    /// Hash every seeded file again, whatever the state says.
    pub recheck: bool,
    /// Gap between progress reports.
    pub progress_every: Duration,
}

/// Longest sleep of the reactor (signals wake it at once through its signal pipe; this only
/// bounds the wait should a wake-up be lost).
const MAX_WAIT: Duration = Duration::from_secs(5);
/// Gap between two rescans of `seed --dir`.
const RESCAN_EVERY: Duration = Duration::from_secs(30);
/// Gap between two progress log lines when not on a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// The DHT's bootstrap routers when none is given (spec/dht.md §14).
const DEFAULT_ROUTERS: [&str; 2] = ["dht.transmissionbt.com:6881", "dht.libtorrent.org:25401"];
/// The DHT state file in the state directory (spec/dht.md §15).
const DHT_STATE: &str = "dht.dat";

/// The DHT state of a state directory, held by one process at a time: a second process on
/// the same directory runs with a fresh id and saves nothing (two nodes with one id would
/// confuse the DHT). The lock (`flock` on `dht.lock`) goes with the process.
pub struct DhtState {
    dir: Option<PathBuf>,
    _lock: Option<std::fs::File>,
}

impl DhtState {
    /// Takes the state directory's DHT state if no other process holds it.
    pub fn take(state_dir: Option<&Path>) -> DhtState {
        let Some(dir) = state_dir else {
            return DhtState {
                dir: None,
                _lock: None,
            };
        };
        let lock = std::fs::create_dir_all(dir)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(dir.join("dht.lock"))
            })
            .ok()
            .filter(|f| {
                use std::os::fd::AsRawFd;
                // SAFETY: flock on a descriptor this function owns; no memory is involved.
                unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
            });
        match lock {
            Some(f) => DhtState {
                dir: Some(dir.to_path_buf()),
                _lock: Some(f),
            },
            None => {
                info!(
                    "DHT: another st process holds the DHT state in {}; this one runs with a fresh id and saves none",
                    dir.display()
                );
                DhtState {
                    dir: None,
                    _lock: None,
                }
            }
        }
    }

    /// The directory whose state this process reads and writes, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

/// The DHT's settings: the id and nodes of the last run (from the state directory), and the
/// address families the socket reaches. The routers are resolved later, off this thread.
pub fn dht_config(state_dir: Option<&Path>, local: SocketAddr) -> DhtConfig {
    let mut cfg = DhtConfig::default();
    match local.ip() {
        IpAddr::V4(_) => cfg.ipv6 = false,
        IpAddr::V6(ip) if !ip.is_unspecified() => cfg.ipv4 = false,
        IpAddr::V6(_) => {}
    }
    if let Some(path) = state_dir.map(|d| d.join(DHT_STATE)) {
        match std::fs::read(&path) {
            Ok(bytes) => match st_proto::krpc::State::decode(&bytes) {
                Ok(state) => {
                    debug!(
                        "DHT: {} nodes remembered in {}",
                        state.nodes.len(),
                        path.display()
                    );
                    cfg.id = Some(state.id);
                    cfg.restored = state.nodes;
                }
                Err(e) => warn!("DHT state {} ignored: {e}", path.display()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!("DHT state {} ignored: {e}", path.display()),
        }
    }
    cfg
}

/// The routers to resolve: the public ones when none is given, none for `none`.
pub fn router_names(given: &[String]) -> Vec<String> {
    if given.is_empty() {
        DEFAULT_ROUTERS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        given.iter().filter(|s| *s != "none").cloned().collect()
    }
}

/// Writes the DHT state atomically (a temporary file renamed over the old one, then the
/// directory synced so the rename itself survives a crash).
pub fn save_dht_state(state_dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let tmp = state_dir.join(format!("{DHT_STATE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, state_dir.join(DHT_STATE))?;
    std::fs::File::open(state_dir)?.sync_all()
}

/// Resolves the bootstrap routers on a thread of their own (a DNS lookup may take seconds
/// where there is no network); the result comes back through `tx`, and `waker` wakes the
/// reactor for it.
pub fn resolve_routers(
    names: Vec<String>,
    tx: std::sync::mpsc::Sender<(Vec<SocketAddr>, Vec<String>)>,
    waker: Arc<dyn Wake>,
) {
    let spawned = std::thread::Builder::new()
        .name("st-resolve".into())
        .spawn(move || {
            let mut addrs = Vec::new();
            let mut failed = Vec::new();
            for n in names {
                match n.to_socket_addrs() {
                    Ok(a) => addrs.extend(a),
                    Err(e) => failed.push(format!("{n}: {e}")),
                }
            }
            let _ = tx.send((addrs, failed));
            waker.wake();
        });
    if let Err(e) = spawned {
        warn!("DHT: cannot start the resolver thread ({e}); no bootstrap routers");
    }
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

/// The default state directory: `$XDG_STATE_HOME/swarmtorrent`, else
/// `~/.local/state/swarmtorrent`.
pub fn default_state_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("swarmtorrent"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".local/state/swarmtorrent"))
}

/// A seed's swarm, checked (on any thread), before its store is made.
struct SeedReady {
    spec: SwarmSpec,
    storage: Storage,
    st_path: PathBuf,
}

impl SeedReady {
    /// The swarm to add: its data is read on a disk thread, started when a peer first asks
    /// for a block (spec peer.md §8.2), which wakes the reactor through `waker`.
    fn prepared(self, waker: &Arc<dyn Wake>) -> Prepared {
        Prepared {
            spec: self.spec,
            store: Box::new(DiskThread::on_demand(self.storage, Arc::clone(waker))),
            st_path: self.st_path,
        }
    }
}

/// A swarm ready to be added to the node.
struct Prepared {
    spec: SwarmSpec,
    store: Box<dyn SwarmStore>,
    st_path: PathBuf,
}

/// What the node needs to know of the swarm of `st`.
fn spec(st: &StFile, id: [u8; 32], fetch: bool, unrecorded_data: bool) -> SwarmSpec {
    SwarmSpec {
        id,
        name: st.info.name.clone(),
        total_length: st.info.total_length,
        fragment_length: st.info.fragment_length,
        trackers: resolve_trackers(st),
        fetch,
        unrecorded_data,
        private: st.info.private,
    }
}

/// Opens a seed's data and finds which fragments match: from the state file when every file
/// is unchanged since it was written, else by hashing with every core (and then records it).
fn prepare_seed(
    ctx: Ctx,
    state_dir: Option<&Path>,
    recheck: bool,
    st_path: &Path,
    st: &StFile,
    swarm_id: [u8; 32],
    data: &Path,
) -> CliResult<SeedReady> {
    let info = &st.info;
    std::fs::metadata(data).map_err(|e| invalid(format!("cannot read {}: {e}", data.display())))?;
    let paths = data_paths(st, data);
    let root = match &info.files {
        None if data.is_dir() => data.join(&info.name),
        _ => data.to_path_buf(),
    };
    let mut storage =
        Storage::open_for_seed(info, swarm_id, &root).map_err(|e| invalid(format!("{e}")))?;
    let count = info.fragment_count();
    let state = state_dir.map(|d| seed_state::path(&d.join("seed"), &hex(&swarm_id)));
    let remembered = match &state {
        Some(s) if !recheck => seed_state::load(s, &paths, count),
        _ => None,
    };
    let good = if let Some(bits) = remembered {
        debug!("{}: verified state remembered, not hashing", data.display());
        for (i, _) in bits.iter().enumerate().filter(|(_, v)| **v) {
            storage.mark_verified(i as u32);
        }
        bits.iter().filter(|v| **v).count() as u32
    } else {
        // Identities before hashing: a file that changes meanwhile is hashed again next time.
        let ids = seed_state::snapshot(&paths);
        let mut good = 0u32;
        let mut bits = vec![false; count as usize];
        hashing::hash_all(
            ctx,
            &paths,
            &info.file_lengths(),
            info.fragment_length,
            "checking",
            |i, _, outcome| {
                if outcome == Outcome::Hash(info.hashes[i as usize]) {
                    storage.mark_verified(i);
                    bits[i as usize] = true;
                    good += 1;
                }
            },
        )
        .map_err(|e| runtime(e.message()))?;
        if let Some(s) = &state
            && let Err(e) = ids.and_then(|ids| seed_state::save(s, &ids, &bits))
        {
            warn!("cannot record what was verified in {}: {e}", s.display());
        }
        good
    };
    if good == 0 {
        return Err(runtime(format!(
            "{}: no fragment matches {}; nothing to seed",
            data.display(),
            st_path.display()
        )));
    }
    if good < count {
        warn!(
            "{}: only {good} of {count} fragments match; serving those",
            data.display()
        );
    }
    Ok(SeedReady {
        spec: spec(st, swarm_id, false, false),
        storage,
        st_path: st_path.to_path_buf(),
    })
}

/// A fetch, ready to start, or its data already there in full.
enum FetchReady {
    /// Fragments to download.
    Fetch(Prepared),
    /// Every fragment is already under the final names (spec peer.md §8.1, *Existing data*).
    Adopted(Box<SeedReady>),
}

/// Opens a fetch's files in `out` (resume state, preallocation) behind a disk thread. Data
/// already under the final names is checked first (spec peer.md §8.1, *Existing data*): all
/// of it matching, it is adopted; otherwise it is replaced only with `force`.
fn prepare_fetch(
    ctx: Ctx,
    st_path: &Path,
    st: &StFile,
    swarm_id: [u8; 32],
    out: &Path,
    force: bool,
    waker: &Arc<dyn Wake>,
) -> CliResult<FetchReady> {
    let info = &st.info;
    std::fs::create_dir_all(out)
        .map_err(|e| runtime(format!("cannot create {}: {e}", out.display())))?;
    let existing = st_engine::storage::existing(info, out).map_err(|e| runtime(format!("{e}")))?;
    let mut checked: Option<Vec<bool>> = None;
    if let Some(ex) = existing {
        let count = info.fragment_count();
        let mut good = vec![false; count as usize];
        hashing::hash_all(
            ctx,
            &ex.read,
            &info.file_lengths(),
            info.fragment_length,
            "checking existing data",
            |i, _, outcome| {
                good[i as usize] = outcome == Outcome::Hash(info.hashes[i as usize]);
            },
        )
        .map_err(|e| runtime(e.message()))?;
        let matching = good.iter().filter(|g| **g).count();
        let shown = match ex.finals.as_slice() {
            [one] => one.display().to_string(),
            many => format!(
                "{} ({} of its files)",
                out.join(&info.name).display(),
                many.len()
            ),
        };
        if matching == count as usize && ex.lengths_match {
            st_engine::storage::adopt(info, out).map_err(|e| runtime(format!("{e}")))?;
            let root = out.join(&info.name);
            let mut storage = Storage::open_for_seed(info, swarm_id, &root)
                .map_err(|e| runtime(format!("{e}")))?;
            for i in 0..count {
                storage.mark_verified(i);
            }
            return Ok(FetchReady::Adopted(Box::new(SeedReady {
                spec: spec(st, swarm_id, false, false),
                storage,
                st_path: st_path.to_path_buf(),
            })));
        }
        let why = if matching == count as usize {
            "every fragment matches, but there are bytes past the end".to_owned()
        } else {
            format!("{matching} of {count} fragments match")
        };
        if !force {
            return Err(runtime(format!(
                "{shown} already exists and is not the data of {} ({why}); not overwriting it: \
                 move it away, or fetch with --force to replace it, keeping what matches",
                st_path.display()
            )));
        }
        st_engine::storage::take_over(info, out).map_err(|e| runtime(format!("{e}")))?;
        if matching == 0 {
            warn!("{shown}: replacing it (no fragment matches)");
        } else {
            warn!("{shown}: replacing it ({why}; those are kept)");
        }
        checked = Some(good);
    }
    let part_existed = checked.is_none()
        && st_engine::storage::final_paths(info, out)
            .iter()
            .any(|p| st_engine::storage::part_name(p).exists());
    let (mut storage, resume) =
        Storage::open_for_fetch(info, swarm_id, out).map_err(|e| runtime(format!("{e}")))?;
    // Taken over with --force: what was just checked is trusted (the same files, renamed).
    for (i, _) in checked.iter().flatten().enumerate().filter(|(_, g)| **g) {
        storage.mark_verified(i as u32);
    }
    if let Some(why) = &resume.ignored {
        warn!(
            "{}: resume state ignored: {why}; checking what is on disk",
            info.name
        );
    }
    if let Some(why) = &resume.not_preallocated {
        warn!("{why}; fetching what fits (a full disk stops the fetch, keeping it)");
    }
    if resume.trusted > 0 {
        info!(
            "{}: resuming: {} of {} fragments already verified and on disk",
            info.name,
            resume.trusted,
            info.fragment_count()
        );
    }
    // A .part file at start: data may be there that the resume file does not record (the
    // node checks it rather than trust it: spec peer.md §8.3).
    let disk = DiskThread::spawn(storage, Arc::clone(waker))
        .map_err(|e| runtime(format!("cannot start the disk thread: {e}")))?;
    Ok(FetchReady::Fetch(Prepared {
        spec: spec(st, swarm_id, true, part_existed),
        store: Box::new(disk),
        st_path: st_path.to_path_buf(),
    }))
}

/// The LAN discovery groups this process could join (only the IPv4 one when bound to an IPv4
/// address, and the reverse). None: one warning, and the rest works without it.
fn join_lan(reactor: &mut Reactor, bind: Option<IpAddr>) -> Option<LanConfig> {
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
                debug!("LAN discovery: joined {g} on {n} interfaces");
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
        debug!("LAN discovery: {e}");
    }
    Some(cfg)
}

/// The `.st` files of a `seed --dir` library whose data is there too, with their ids.
fn scan_library(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "st") && p.is_file())
        .collect();
    v.sort();
    v
}

/// What the driver shows: a bar on a terminal, log lines otherwise, or JSON.
struct View {
    json: bool,
    bar: Option<ProgressBar>,
    names: HashMap<[u8; 32], String>,
    /// Swarms of a fetch whose data was already there in full.
    adopted: HashSet<[u8; 32]>,
    latest: BTreeMap<[u8; 32], st_engine::node::Progress>,
    next_log: Time,
    next_bar_message: Time,
}

impl View {
    fn json_line(v: &serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    }

    fn name(&self, id: &[u8; 32]) -> String {
        self.names
            .get(id)
            .cloned()
            .unwrap_or_else(|| hex(id)[..16].to_owned())
    }

    fn totals(&self) -> (u64, u64, u64, u64, usize, u64) {
        self.latest.values().fold((0, 0, 0, 0, 0, 0), |a, p| {
            (
                a.0 + p.have,
                a.1 + p.total,
                a.2 + p.down_rate,
                a.3 + p.up_rate,
                a.4 + p.peers,
                a.5 + p.uploaded,
            )
        })
    }

    fn event(&mut self, now: Time, ev: &NodeEvent, failures: &mut Vec<String>) {
        match ev {
            NodeEvent::Progress(p) => {
                if self.json {
                    Self::json_line(&json!({
                        "event": "progress",
                        "swarm": hex(&p.id),
                        "have": p.have,
                        "total": p.total,
                        "down_rate": p.down_rate,
                        "up_rate": p.up_rate,
                        "peers": p.peers,
                        "found": {
                            "trackers": p.found.trackers,
                            "lan": p.found.lan,
                            "dht": p.found.dht,
                            "pex": p.found.pex,
                        },
                    }));
                }
                self.latest.insert(p.id, p.clone());
                let (have, total, down, up, peers, uploaded) = self.totals();
                if let Some(b) = &self.bar {
                    b.set_length(total);
                    b.set_position(have);
                    if now >= self.next_bar_message {
                        self.next_bar_message = now + Duration::from_millis(200);
                        b.set_message(format!("{peers} peers, ↑ {}", format_size(uploaded)));
                    }
                } else if !self.json && now >= self.next_log {
                    self.next_log = now + LOG_EVERY;
                    info!(
                        "{:.1} % of {}, {peers} peers, down {}/s, up {}/s",
                        100.0 * have as f64 / total.max(1) as f64,
                        format_size(total),
                        format_size(down),
                        format_size(up)
                    );
                }
            }
            NodeEvent::Checked { id, recovered } => {
                info!(
                    "{}: {recovered} more fragments found intact on disk",
                    self.name(id)
                );
            }
            NodeEvent::Complete {
                id,
                paths,
                bytes,
                elapsed,
            } => {
                let path = match paths.as_slice() {
                    [one] => one.clone(),
                    many => common_dir(many),
                };
                if self.json {
                    Self::json_line(&json!({
                        "event": "complete",
                        "swarm": hex(id),
                        "path": path.display().to_string(),
                        "bytes": bytes,
                        "seconds": elapsed.as_secs_f64(),
                    }));
                }
                info!(
                    "{}: complete, every fragment verified ({})",
                    self.name(id),
                    path.display()
                );
            }
            NodeEvent::Failed { id, message } => {
                let line = format!("{}: {message}", self.name(id));
                if self.json {
                    Self::json_line(&json!({"event": "error", "swarm": hex(id), "message": line}));
                }
                warn!("{line}");
                failures.push(message.clone());
            }
            NodeEvent::Warning { id, message } => warn!("{}: {message}", self.name(id)),
            NodeEvent::TrackerSilent {
                id,
                tracker,
                tries,
                next_in,
            } => warn!(
                "{}: tracker {tracker} has not answered ({tries} tries); next try in {} s",
                self.name(id),
                next_in.as_secs()
            ),
            NodeEvent::NoPeers { id, sources } => {
                warn!("{}: no peer found yet: {sources}", self.name(id));
            }
            NodeEvent::Notice { message } => {
                if self.json {
                    Self::json_line(&json!({"event": "warning", "message": message}));
                }
                warn!("{message}");
            }
            NodeEvent::DhtState(_) | NodeEvent::Stopped => {}
        }
    }
}

/// Adds a prepared swarm to the node, saying so; false if the node refused it.
fn add_swarm(
    node: &mut PeerNode,
    now: Time,
    p: Prepared,
    view: &mut View,
    lan_on: bool,
    dht_on: bool,
) -> bool {
    let id = p.spec.id;
    view.names.insert(id, p.spec.name.clone());
    let label = if p.spec.fetch { "fetching" } else { "seeding" };
    info!(
        "{label} {} ({}, swarm {}) from {}",
        p.spec.name,
        format_size(p.spec.total_length),
        &hex(&id)[..16],
        p.st_path.display()
    );
    if p.spec.private {
        info!(
            "{}: private swarm: not in the DHT, not announced on the LAN",
            p.spec.name
        );
    }
    let dht_used = dht_on && !p.spec.private;
    if p.spec.trackers.is_empty() && !dht_used && (!lan_on || p.spec.private) {
        warn!(
            "{}: no usable tracker, no LAN discovery and no DHT: waiting for peers to connect",
            p.st_path.display()
        );
    }
    match node.add_swarm(now, p.spec, p.store) {
        Ok(()) => true,
        Err(e) => {
            warn!("{}: {e}", p.st_path.display());
            false
        }
    }
}

/// A `.st` file to check, and what came of it.
struct Checked {
    path: PathBuf,
    mtime: Option<std::time::SystemTime>,
    data_missing: bool,
    result: CliResult<SeedReady>,
}

/// `seed --dir`: which `.st` file serves which swarm, the files that would not load, and the
/// thread that checks new data, so that hashing a file added to a running library does not
/// stall the network.
struct Library {
    dir: PathBuf,
    lan_on: bool,
    dht_on: bool,
    served: HashMap<PathBuf, [u8; 32]>,
    /// Refused `.st` files, with their mtime and whether only their data was missing (retried
    /// at every rescan: the data may be copied in after the `.st` file); SIGHUP retries all.
    refused: HashMap<PathBuf, (Option<std::time::SystemTime>, bool)>,
    /// Files being checked on the thread.
    checking: std::collections::HashSet<PathBuf>,
    jobs: std::sync::mpsc::Sender<(PathBuf, Option<std::time::SystemTime>)>,
    results: std::sync::mpsc::Receiver<Checked>,
    check: CheckFn,
    /// Wakes the reactor (for the disk threads of the swarms served).
    waker: Arc<dyn Wake>,
}

/// Checks one `.st` file of a library (of the given modification time) and its data.
type CheckFn = Arc<dyn Fn(&Path, Option<std::time::SystemTime>) -> Checked + Send + Sync>;

impl Library {
    fn new(
        ctx: Ctx,
        args: &SwarmArgs,
        lan_on: bool,
        dht_on: bool,
        waker: Arc<dyn Wake>,
    ) -> Library {
        let dir = args.path.clone();
        let (state_dir, recheck) = (args.state_dir.clone(), args.recheck);
        let d = dir.clone();
        let check: CheckFn = Arc::new(move |p: &Path, mtime| {
            let mut data_missing = false;
            let result = load_st(p).and_then(|(st, id)| {
                let data = d.join(&st.info.name);
                if !data.exists() {
                    data_missing = true;
                    return Err(invalid(format!(
                        "its data {} is not in the directory",
                        data.display()
                    )));
                }
                prepare_seed(ctx, state_dir.as_deref(), recheck, p, &st, id, &data)
            });
            Checked {
                path: p.to_path_buf(),
                mtime,
                data_missing,
                result,
            }
        });
        let (jobs, rx) = std::sync::mpsc::channel::<(PathBuf, Option<std::time::SystemTime>)>();
        let (tx, results) = std::sync::mpsc::channel();
        let worker = Arc::clone(&check);
        let wake_reactor = Arc::clone(&waker);
        // The checking thread ends when the library (its job sender) goes.
        let spawned = std::thread::Builder::new()
            .name("st-check".into())
            .spawn(move || {
                while let Ok((p, mtime)) = rx.recv() {
                    if tx.send(worker(&p, mtime)).is_err() {
                        break;
                    }
                    waker.wake();
                }
            });
        if let Err(e) = spawned {
            warn!("cannot start the checking thread ({e}); new files are checked in line");
        }
        Library {
            dir,
            lan_on,
            dht_on,
            served: HashMap::new(),
            refused: HashMap::new(),
            checking: std::collections::HashSet::new(),
            jobs,
            results,
            check,
            waker: wake_reactor,
        }
    }

    /// Looks at the directory: removed `.st` files stop being served, new ones are checked (on
    /// the checking thread, or here with `inline`).
    fn rescan(
        &mut self,
        node: &mut PeerNode,
        now: Time,
        view: &mut View,
        retry_all: bool,
        inline: bool,
    ) {
        if retry_all {
            self.refused.clear();
        }
        let found = scan_library(&self.dir);
        let gone: Vec<PathBuf> = self
            .served
            .keys()
            .filter(|p| !found.contains(p))
            .cloned()
            .collect();
        for p in gone {
            if let Some(id) = self.served.remove(&p) {
                info!("{}: removed; no longer serving it", p.display());
                node.remove_swarm(now, &id);
                view.latest.remove(&id);
            }
        }
        for p in found {
            if self.served.contains_key(&p) || self.checking.contains(&p) {
                continue;
            }
            let mtime = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
            if self
                .refused
                .get(&p)
                .is_some_and(|(t, data_missing)| *t == mtime && !data_missing)
            {
                continue;
            }
            if !inline && self.jobs.send((p.clone(), mtime)).is_ok() {
                self.checking.insert(p);
            } else {
                let c = (self.check)(&p, mtime);
                self.take(node, now, view, c);
            }
        }
    }

    /// Takes the checking thread's results.
    fn take_checked(&mut self, node: &mut PeerNode, now: Time, view: &mut View) {
        while let Ok(c) = self.results.try_recv() {
            self.checking.remove(&c.path);
            self.take(node, now, view, c);
        }
    }

    fn take(&mut self, node: &mut PeerNode, now: Time, view: &mut View, c: Checked) {
        match c.result {
            Ok(ready) => {
                self.refused.remove(&c.path);
                let id = ready.spec.id;
                if add_swarm(
                    node,
                    now,
                    ready.prepared(&self.waker),
                    view,
                    self.lan_on,
                    self.dht_on,
                ) {
                    self.served.insert(c.path, id);
                } else {
                    self.refused.insert(c.path, (c.mtime, false));
                }
            }
            Err(e) => {
                // Said once per file (and again after it changes).
                if !self.refused.contains_key(&c.path) {
                    warn!("{}: not served: {e}", c.path.display());
                }
                self.refused.insert(c.path, (c.mtime, c.data_missing));
            }
        }
    }
}

/// Runs `st seed` or `st fetch`.
pub fn run(ctx: Ctx, args: SwarmArgs) -> CliResult<()> {
    // Every input is read and checked before anything starts (invalid input: exit 2).
    let mut loaded: Vec<(PathBuf, StFile, [u8; 32])> = Vec::new();
    for p in &args.sts {
        let (st, id) = load_st(p)?;
        if loaded.iter().any(|(_, _, x)| *x == id) {
            return Err(invalid(format!(
                "{}: the same swarm is given twice",
                p.display()
            )));
        }
        loaded.push((p.clone(), st, id));
    }
    if args.dir && !args.path.is_dir() {
        return Err(invalid(format!("{}: not a directory", args.path.display())));
    }

    let mut reactor = Reactor::bind_any(ReactorConfig::default(), args.bind, args.port)
        .map_err(|e| runtime(format!("cannot bind UDP port {}: {e}", args.port)))?;
    let waker = reactor
        .waker()
        .map_err(|e| runtime(format!("cannot set up the disk thread: {e}")))?;
    let port = reactor.local_addr().port();
    let lan = if args.lan {
        join_lan(&mut reactor, args.bind)
    } else {
        None
    };
    let lan_on = lan.is_some();
    let dht_state = DhtState::take(args.state_dir.as_deref().filter(|_| args.dht));
    let dht = args
        .dht
        .then(|| dht_config(dht_state.dir(), reactor.local_addr()));
    let dht_restored = dht.as_ref().is_some_and(|d| !d.restored.is_empty());
    let (boot_tx, boot_rx) = std::sync::mpsc::channel();
    if args.dht {
        resolve_routers(
            router_names(&args.dht_bootstrap),
            boot_tx,
            Arc::clone(&waker),
        );
    }
    let keep_serving = match args.mode {
        Mode::Seed => true,
        Mode::Fetch { seed_after, .. } => seed_after,
    };
    let fetching = matches!(args.mode, Mode::Fetch { .. });
    let mut node = PeerNode::new(
        NodeConfig {
            peer_id: crate::common::random_bytes::<16>(),
            port,
            transport: transport::Config {
                secret: Some(crate::common::random_bytes::<32>()),
                // Larger datagrams only with the don't-fragment bit (spec transport §8.4).
                max_mtu: if reactor.dont_fragment() {
                    transport::Config::default().max_mtu
                } else {
                    1472
                },
                ..transport::Config::default()
            },
            lan,
            dht,
            max_upload: args.max_upload,
            max_download: args.max_download,
            stop_when_complete: fetching && !keep_serving,
            stop_on_failure: fetching,
            progress_every: args.progress_every,
            seed: u64::from_ne_bytes(crate::common::random_bytes::<8>()),
            ..NodeConfig::default()
        },
        reactor.now(),
    );

    let mut view = View {
        json: args.json,
        bar: None,
        names: HashMap::new(),
        adopted: HashSet::new(),
        latest: BTreeMap::new(),
        next_log: reactor.now() + LOG_EVERY,
        next_bar_message: reactor.now(),
    };
    let dht_on = args.dht;
    let add = |node: &mut PeerNode, now: Time, p: Prepared, view: &mut View| {
        add_swarm(node, now, p, view, lan_on, dht_on)
    };
    match args.mode {
        Mode::Fetch { force, .. } => {
            let mut adopted = Vec::new();
            for (p, st, id) in &loaded {
                match prepare_fetch(ctx, p, st, *id, &args.path, force, &waker)? {
                    FetchReady::Fetch(prep) => {
                        add(&mut node, reactor.now(), prep, &mut view);
                    }
                    FetchReady::Adopted(ready) => {
                        let path = args.path.join(&st.info.name);
                        if args.json {
                            View::json_line(&json!({
                                "event": "complete",
                                "swarm": hex(id),
                                "path": path.display().to_string(),
                                "bytes": 0,
                                "seconds": 0.0,
                                "existing": true,
                            }));
                        } else {
                            println!(
                                "already complete {}: every fragment verified on disk, nothing to fetch",
                                path.display()
                            );
                        }
                        view.adopted.insert(*id);
                        adopted.push(ready);
                    }
                }
            }
            if !keep_serving && node.swarm_count() == 0 {
                if args.json {
                    let list: Vec<serde_json::Value> = loaded
                        .iter()
                        .map(|(_, st, id)| {
                            json!({
                                "id": hex(id), "name": st.info.name, "complete": true,
                                "down": 0, "up": 0, "wasted": 0, "hash_failures": 0,
                                "from": {}, "existing": true,
                            })
                        })
                        .collect();
                    View::json_line(&json!({"event": "summary", "seconds": 0.0, "swarms": list}));
                }
                return Ok(());
            }
            // Served while the others are fetched (and after, with --seed).
            for ready in adopted {
                add(&mut node, reactor.now(), ready.prepared(&waker), &mut view);
            }
        }
        Mode::Seed if !args.dir => {
            for (p, st, id) in &loaded {
                let ready = prepare_seed(
                    ctx,
                    args.state_dir.as_deref(),
                    args.recheck,
                    p,
                    st,
                    *id,
                    &args.path,
                )?;
                add(&mut node, reactor.now(), ready.prepared(&waker), &mut view);
            }
        }
        Mode::Seed => {}
    }
    let mut library = args
        .dir
        .then(|| Library::new(ctx, &args, lan_on, dht_on, Arc::clone(&waker)));
    if let Some(library) = &mut library {
        // The first scan checks the data before the seed says it listens.
        library.rescan(&mut node, reactor.now(), &mut view, false, true);
        if node.swarm_count() == 0 {
            warn!(
                "{}: no .st file with its data here yet; watching for them (every {} s and on SIGHUP)",
                args.path.display(),
                RESCAN_EVERY.as_secs()
            );
        }
    }

    let int = Arc::new(AtomicBool::new(false));
    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    // Each signal sets its flag and wakes the reactor at once (one pipe for all of them), so
    // that the driver needs no periodic wake-up to see it.
    let wake = reactor
        .signal_pipe()
        .map_err(|e| runtime(format!("cannot install signal handler: {e}")))?;
    for (sig, flag) in [
        (signal_hook::consts::SIGINT, &int),
        (signal_hook::consts::SIGTERM, &term),
        (signal_hook::consts::SIGHUP, &hup),
    ] {
        signal_hook::flag::register(sig, Arc::clone(flag))
            .and_then(|_| signal_hook::low_level::pipe::register(sig, wake.try_clone()?))
            .map_err(|e| runtime(format!("cannot install signal handler: {e}")))?;
    }
    let addr = reactor.local_addr();
    if args.json {
        View::json_line(&json!({"event": "listening", "addr": addr.to_string()}));
    } else {
        println!("listening on {addr}");
        let _ = std::io::stdout().flush();
    }
    if !args.json && !ctx.quiet && std::io::stderr().is_terminal() && fetching {
        view.bar = Some(progress_bar());
    }

    let started = reactor.now();
    let mut next_rescan = started + RESCAN_EVERY;
    let mut failures: Vec<String> = Vec::new();
    let mut signalled: Option<u8> = None;
    let state_dir = dht_state.dir().map(Path::to_path_buf);
    let mut state_warned = false;
    let result = reactor.run(&mut node, MAX_WAIT, |node, now| {
        if let Ok((addrs, failed)) = boot_rx.try_recv() {
            for f in &failed {
                debug!("DHT bootstrap {f}");
            }
            if addrs.is_empty() && !failed.is_empty() && !dht_restored {
                warn!(
                    "DHT: no bootstrap node could be resolved ({}); the DHT waits for nodes to contact it",
                    failed.join("; ")
                );
            }
            node.add_dht_bootstrap(now, &addrs);
        }
        while let Some(ev) = node.poll_event() {
            if let NodeEvent::DhtState(bytes) = &ev {
                if let Some(dir) = &state_dir
                    && let Err(e) = save_dht_state(dir, bytes)
                    && !std::mem::replace(&mut state_warned, true)
                {
                    warn!("DHT state not saved in {}: {e}", dir.display());
                }
                continue;
            }
            view.event(now, &ev, &mut failures);
        }
        if node.is_stopped() {
            return ControlFlow::Break(());
        }
        if signalled.is_none() && !node.is_stopping() {
            if int.load(Ordering::Relaxed) {
                signalled = Some(130);
            } else if term.load(Ordering::Relaxed) {
                signalled = Some(143);
            }
            if signalled.is_some() {
                if fetching {
                    info!("stopping: telling trackers and saving resume state");
                } else {
                    info!("stopping: telling trackers");
                }
                node.stop(now);
            }
        }
        let hupped = hup.swap(false, Ordering::Relaxed);
        if let Some(library) = &mut library
            && !node.is_stopping()
        {
            library.take_checked(node, now, &mut view);
            if hupped || now >= next_rescan {
                next_rescan = now + RESCAN_EVERY;
                library.rescan(node, now, &mut view, hupped, false);
            }
        }
        ControlFlow::Continue(())
    });
    if let Some(b) = &view.bar {
        b.finish_and_clear();
    }
    result.map_err(|e| runtime(format!("network error: {e}")))?;
    debug!(
        "reactor: {:?}; gso {} gro {}",
        reactor.stats(),
        reactor.gso(),
        reactor.gro()
    );
    let elapsed = reactor.now().saturating_since(started);
    summary(&node, &view, elapsed, args.mode);
    if let Some(f) = failures.into_iter().next() {
        return Err(runtime(f));
    }
    let all_complete = node
        .summary()
        .iter()
        .all(|s| s.phase == SwarmPhase::Complete);
    match args.mode {
        Mode::Fetch { .. } if !all_complete => Err(CliError::Interrupted(signalled.unwrap_or(1))),
        _ => Ok(()),
    }
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{percent:>3}% [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The deepest directory holding all of `paths` (the top folder of a directory fetch).
fn common_dir(paths: &[PathBuf]) -> PathBuf {
    let mut common = paths
        .first()
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
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

fn summary(node: &PeerNode, view: &View, elapsed: Duration, mode: Mode) {
    let swarms = node.summary();
    if view.json {
        let list: Vec<serde_json::Value> = swarms
            .iter()
            .map(|s| {
                let from: serde_json::Map<String, serde_json::Value> = s
                    .stats
                    .from_peer
                    .iter()
                    .map(|(a, b)| (a.to_string(), json!(b)))
                    .collect();
                json!({
                    "id": hex(&s.id),
                    "name": s.name,
                    "complete": s.phase == SwarmPhase::Complete,
                    "down": s.stats.downloaded,
                    "up": s.stats.uploaded,
                    "wasted": s.stats.wasted,
                    "hash_failures": s.stats.hash_failures,
                    "from": from,
                })
            })
            .collect();
        View::json_line(&json!({
            "event": "summary",
            "seconds": elapsed.as_secs_f64(),
            "swarms": list,
        }));
        return;
    }
    let secs = elapsed.as_secs_f64().max(1e-3);
    for s in &swarms {
        let st = &s.stats;
        if view.adopted.contains(&s.id) {
            // Said at start ("already complete"); only what it served since.
            println!("served {}: {} up", s.name, format_size(st.uploaded));
            continue;
        }
        let what = match (mode, s.phase) {
            (Mode::Fetch { .. }, SwarmPhase::Complete) => match s.paths.as_slice() {
                [one] => format!("fetched {}", one.display()),
                many => format!(
                    "fetched {} ({} files)",
                    common_dir(many).display(),
                    many.len()
                ),
            },
            (Mode::Fetch { .. }, _) => {
                format!("{}: stopped before completion (resume state saved)", s.name)
            }
            (Mode::Seed, _) => format!("seeded {}", s.name),
        };
        let fetched = st.downloaded;
        println!(
            "{what}: {} ({fetched} bytes) down in {:.1} s ({}/s), {} up, {} wasted, {} hash failures",
            format_size(fetched),
            secs,
            format_size((fetched as f64 / secs) as u64),
            format_size(st.uploaded),
            format_size(st.wasted),
            st.hash_failures
        );
        let mut peers: Vec<(&SocketAddr, &u64)> = st.from_peer.iter().collect();
        peers.sort_by(|a, b| b.1.cmp(a.1));
        for (addr, bytes) in peers {
            println!("  {:>12}  from {addr}", format_size(*bytes));
        }
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
