//! `st dht lookup` and `st dht node`: the DHT core alone, driven by the reactor (a lookup of
//! any BitTorrent info hash, and a bootstrap node for a closed network).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use log::{info, warn};
use serde_json::json;
use st_engine::dht::{DhtEvent, DhtNode};
use st_engine::reactor::{Reactor, ReactorConfig};

use crate::common::{hex, load_st};
use crate::error::{CliResult, invalid, runtime};
use crate::swarm_cmd::{DhtState, dht_config, resolve_routers, router_names, save_dht_state};

/// Options of both commands.
pub struct DhtArgs {
    /// UDP port (0: any).
    pub port: u16,
    /// Address to bind.
    pub bind: Option<IpAddr>,
    /// `--dht-bootstrap` values.
    pub bootstrap: Vec<String>,
    /// Where the DHT state is kept (`None`: nowhere).
    pub state_dir: Option<PathBuf>,
    /// One JSON object per line.
    pub json: bool,
}

/// The key to look up: 40 hex digits, or a `.st` file (its swarm id's first 20 bytes).
pub fn parse_key(s: &str) -> CliResult<[u8; 20]> {
    if s.len() == 40 && s.bytes().all(|c| c.is_ascii_hexdigit()) {
        let mut k = [0u8; 20];
        for (i, k) in k.iter_mut().enumerate() {
            *k = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        return Ok(k);
    }
    let p = Path::new(s);
    if p.exists() {
        let (st, id) = load_st(p)?;
        if st.info.private {
            return Err(invalid(format!(
                "{s}: a private swarm is never looked up in the DHT"
            )));
        }
        return Ok(st_engine::node::dht_key(&id));
    }
    Err(invalid(format!(
        "{s}: neither 40 hex digits (an info hash) nor a .st file"
    )))
}

struct Session {
    state: DhtState,
    reactor: Reactor,
    dht: DhtNode,
    boot_rx: std::sync::mpsc::Receiver<(Vec<SocketAddr>, Vec<String>)>,
    restored: bool,
    stop: Arc<AtomicBool>,
}

fn start(args: &DhtArgs, read_only: bool) -> CliResult<Session> {
    let mut reactor = Reactor::bind_any(
        ReactorConfig {
            gso: false,
            gro: false,
            ..ReactorConfig::default()
        },
        args.bind,
        args.port,
    )
    .map_err(|e| runtime(format!("cannot bind UDP port {}: {e}", args.port)))?;
    let waker = reactor
        .waker()
        .map_err(|e| runtime(format!("cannot set up the resolver: {e}")))?;
    let state = DhtState::take(args.state_dir.as_deref());
    let mut cfg = dht_config(state.dir(), reactor.local_addr());
    cfg.read_only = read_only;
    let restored = !cfg.restored.is_empty();
    let (tx, boot_rx) = std::sync::mpsc::channel();
    resolve_routers(router_names(&args.bootstrap), tx, waker);
    let mut seed = [0u8; 8];
    getrandom(&mut seed);
    let dht = DhtNode::new(cfg, reactor.now(), u64::from_ne_bytes(seed));
    let stop = Arc::new(AtomicBool::new(false));
    let wake = reactor
        .signal_pipe()
        .map_err(|e| runtime(format!("cannot install signal handler: {e}")))?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .and_then(|_| signal_hook::low_level::pipe::register(sig, wake.try_clone()?))
            .map_err(|e| runtime(format!("cannot install signal handler: {e}")))?;
    }
    let a = reactor.local_addr();
    if args.json {
        println!("{}", json!({"event": "listening", "addr": a.to_string()}));
    } else {
        println!("listening on {a}");
    }
    let _ = std::io::stdout().flush();
    Ok(Session {
        state,
        reactor,
        dht,
        boot_rx,
        restored,
        stop,
    })
}

fn getrandom(out: &mut [u8]) {
    use std::io::Read;
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(out))
        .is_err()
    {
        let t = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
        for (i, b) in out.iter_mut().enumerate() {
            *b = (t >> (i % 8 * 8)) as u8;
        }
    }
}

/// Takes the resolved routers, if they came.
fn take_routers(
    s_rx: &std::sync::mpsc::Receiver<(Vec<SocketAddr>, Vec<String>)>,
    restored: bool,
    dht: &mut DhtNode,
    now: st_engine::time::Time,
) {
    if let Ok((addrs, failed)) = s_rx.try_recv() {
        if addrs.is_empty() && !failed.is_empty() && !restored {
            warn!(
                "DHT: no bootstrap node could be resolved ({})",
                failed.join("; ")
            );
        }
        dht.add_bootstrap(now, &addrs);
    }
}

/// `st dht lookup KEY`: prints the peers the DHT gives for KEY; exit 0 when some were found
/// before `timeout`, 1 otherwise.
pub fn lookup(args: DhtArgs, key: [u8; 20], timeout: Duration) -> CliResult<()> {
    let mut s = start(&args, true)?;
    let deadline = s.reactor.now() + timeout;
    let mut registered = false;
    let mut found: Vec<SocketAddr> = Vec::new();
    let mut searches = 0u32;
    let json = args.json;
    let (boot_rx, restored, stop) = (&s.boot_rx, s.restored, Arc::clone(&s.stop));
    let result = s
        .reactor
        .run(&mut s.dht, Duration::from_millis(500), |dht, now| {
            take_routers(boot_rx, restored, dht, now);
            if !registered {
                registered = true;
                dht.register(now, key, None, true);
            }
            while let Some(ev) = dht.poll_event() {
                match ev {
                    DhtEvent::Peers { peers, .. } => {
                        for p in peers {
                            if !found.contains(&p) {
                                found.push(p);
                                if json {
                                    println!("{}", json!({"event": "peer", "addr": p.to_string()}));
                                } else {
                                    println!("peer {p}");
                                }
                            }
                        }
                        let _ = std::io::stdout().flush();
                    }
                    DhtEvent::SearchDone { stats, .. } => {
                        searches += 1;
                        info!(
                            "search {searches}: {} queries, {} replies, {} peers in {:.2} s",
                            stats.queries,
                            stats.replies,
                            stats.peers,
                            stats.elapsed.as_secs_f64()
                        );
                        if !found.is_empty() {
                            return ControlFlow::Break(());
                        }
                    }
                    DhtEvent::NoBootstrap { tried, .. } => {
                        let t: Vec<String> = tried.iter().map(ToString::to_string).collect();
                        warn!("DHT: no bootstrap node answered ({})", t.join(", "));
                    }
                    DhtEvent::Bootstrapped { nodes } => info!("DHT: {nodes} nodes"),
                    DhtEvent::State(_) => {}
                }
            }
            if now >= deadline || stop.load(Ordering::Relaxed) {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
    result.map_err(|e| runtime(format!("network error: {e}")))?;
    if let Some(dir) = s.state.dir()
        && s.dht.nodes() > 0
        && let Err(e) = save_dht_state(dir, &s.dht.state())
    {
        warn!("DHT state not saved in {}: {e}", dir.display());
    }
    if found.is_empty() {
        return Err(runtime(format!(
            "no peer found for {} in {} s ({} nodes in the routing table)",
            hex(&key),
            timeout.as_secs(),
            s.dht.nodes()
        )));
    }
    Ok(())
}

/// `st dht node`: a DHT node (no swarm) until interrupted: a bootstrap node for others.
pub fn node(args: DhtArgs) -> CliResult<()> {
    let mut s = start(&args, false)?;
    info!("DHT node {} ", hex(&s.dht.id()));
    let (boot_rx, restored, stop) = (&s.boot_rx, s.restored, Arc::clone(&s.stop));
    let state_dir = s.state.dir().map(Path::to_path_buf);
    let mut next_log = s.reactor.now() + Duration::from_secs(60);
    let result = s.reactor.run(&mut s.dht, Duration::from_secs(5), |dht, now| {
        take_routers(boot_rx, restored, dht, now);
        while let Some(ev) = dht.poll_event() {
            match ev {
                DhtEvent::State(bytes) => {
                    if let Some(dir) = &state_dir
                        && let Err(e) = save_dht_state(dir, &bytes)
                    {
                        warn!("DHT state not saved in {}: {e}", dir.display());
                    }
                }
                DhtEvent::NoBootstrap { tried, .. } => {
                    let t: Vec<String> = tried.iter().map(ToString::to_string).collect();
                    warn!("DHT: no bootstrap node answered ({})", t.join(", "));
                }
                DhtEvent::Bootstrapped { nodes } => info!("DHT: bootstrapped, {nodes} nodes"),
                _ => {}
            }
        }
        if now >= next_log {
            next_log = now + Duration::from_secs(60);
            let st = dht.stats();
            let (keys, peers) = dht.stored();
            info!(
                "DHT: {} nodes, {keys} keys / {peers} peers stored, {} queries in, {} replies out, {} dropped (limits)",
                dht.nodes(),
                st.queries_received,
                st.replies_sent,
                st.limited + st.replies_over_budget
            );
        }
        if stop.load(Ordering::Relaxed) {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    result.map_err(|e| runtime(format!("network error: {e}")))?;
    if let Some(dir) = s.state.dir()
        && s.dht.nodes() > 0
        && let Err(e) = save_dht_state(dir, &s.dht.state())
    {
        warn!("DHT state not saved in {}: {e}", dir.display());
    }
    Ok(())
}
