//! `st udp-tracker`: run a tracker until interrupted.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use log::{info, warn};
use st_engine::reactor::{Reactor, ReactorConfig};
use st_engine::tracker::server::{Report, TrackerCore};
use st_engine::tracker::{Config, Tracker};

use crate::error::{CliError, CliResult, invalid, runtime};

/// Arguments of `st udp-tracker`.
pub struct TrackerArgs {
    /// UDP port.
    pub port: u16,
    /// Address to bind, or `None` for all IPv4 and IPv6 addresses.
    pub bind: Option<IpAddr>,
    /// Configuration file.
    pub config: Option<PathBuf>,
    /// Print the configuration and exit.
    pub print_config: bool,
    /// Prometheus text file to write the counters to.
    pub stats_file: Option<PathBuf>,
}

/// Runs `st udp-tracker`.
pub fn run(args: TrackerArgs) -> CliResult<()> {
    let config = match &args.config {
        Some(path) => {
            let text = fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))
                .map_err(CliError::Invalid)?;
            Config::parse(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))?
        }
        None => Config::default(),
    };
    if args.print_config {
        print!("{config}");
        return Ok(());
    }
    let stats_every = Duration::from_secs(u64::from(config.stats_interval_secs));
    let tracker = Tracker::new(
        config,
        u64::from_ne_bytes(crate::common::random_bytes::<8>()),
    );
    let mut reactor = Reactor::bind_any(
        ReactorConfig {
            // Replies are single small datagrams: no segmentation offloads to negotiate.
            gso: false,
            gro: false,
            batch: 64,
            send_queue: 256,
            ..ReactorConfig::default()
        },
        args.bind,
        args.port,
    )
    .map_err(|e| runtime(format!("cannot bind UDP port {}: {e}", args.port)))?;
    let mut core = TrackerCore::new(tracker, reactor.now(), stats_every);

    let stop = Arc::new(AtomicBool::new(false));
    // A signal sets the flag and wakes the reactor through its signal pipe.
    let wake = reactor
        .signal_pipe()
        .map_err(|e| runtime(format!("cannot install signal handler: {e}")))?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .and_then(|_| signal_hook::low_level::pipe::register(sig, wake.try_clone()?))
            .map_err(|e| runtime(format!("cannot install signal handler: {e}")))?;
    }
    let a = reactor.local_addr();
    info!("udp-tracker listening on {a}");
    // One machine-readable line on stdout, for scripts started with --port 0.
    println!("listening on {a}");
    let _ = std::io::stdout().flush();

    let mut last: Option<Report> = None;
    let stats_file = args.stats_file.clone();
    let mut emit = |r: Report| {
        info!("{}", stats_line(&r, last.as_ref()));
        if let Some(path) = &stats_file
            && let Err(e) = write_prometheus(path, &r)
        {
            warn!("cannot write stats file {}: {e}", path.display());
        }
        last = Some(r);
    };
    // Signals wake the reactor at once; the bound only covers a lost wake-up.
    reactor
        .run(&mut core, Duration::from_secs(5), |core, now| {
            if let Some(r) = core.poll_report(now) {
                emit(r);
            }
            if stop.load(Ordering::Relaxed) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .map_err(|e| runtime(format!("tracker stopped on an IO error: {e}")))?;
    info!("tracker stopping");
    if core.dropped_replies > 0 {
        info!(
            "{} replies dropped on a full send ring",
            core.dropped_replies
        );
    }
    // A last report, so the final counters are never lost with the process.
    emit(core.report(reactor.now()));
    Ok(())
}

/// The per-minute log line: request rates by kind, table sizes, drops.
fn stats_line(r: &Report, last: Option<&Report>) -> String {
    let (dt, base) = match last {
        Some(l) => (
            (r.uptime - l.uptime).as_secs_f64().max(1e-3),
            l.stats.clone(),
        ),
        None => (r.uptime.as_secs_f64().max(1e-3), Default::default()),
    };
    let rate = |now: u64, then: u64| (now.saturating_sub(then)) as f64 / dt;
    let s = &r.stats;
    format!(
        "stats: {} connects ({:.1}/s), {} announces ({:.1}/s), {} scrapes ({:.1}/s); {} swarms, {} peers; dropped {} malformed, {} bad connection ids, {} from ignored sources ({} offenders so far, {} in the table); {} expired, {} evicted, {} refused by limits",
        s.connects,
        rate(s.connects, base.connects),
        s.announces,
        rate(s.announces, base.announces),
        s.scrapes,
        rate(s.scrapes, base.scrapes),
        r.swarms,
        r.peers,
        s.malformed,
        s.bad_connection_ids,
        s.ignored,
        s.offenders,
        r.offender_entries,
        s.expired,
        s.evicted,
        s.refused_by_limits
    )
}

/// Writes the counters in Prometheus text format, atomically (node_exporter textfile style).
fn write_prometheus(path: &Path, r: &Report) -> std::io::Result<()> {
    let s = &r.stats;
    let text = format!(
        "# HELP st_tracker_requests_total Requests answered, by kind.\n\
# TYPE st_tracker_requests_total counter\n\
st_tracker_requests_total{{kind=\"connect\"}} {}\n\
st_tracker_requests_total{{kind=\"announce\"}} {}\n\
st_tracker_requests_total{{kind=\"scrape\"}} {}\n\
# HELP st_tracker_dropped_total Datagrams dropped without a reply, by reason.\n\
# TYPE st_tracker_dropped_total counter\n\
st_tracker_dropped_total{{reason=\"malformed\"}} {}\n\
st_tracker_dropped_total{{reason=\"bad_connection_id\"}} {}\n\
st_tracker_dropped_total{{reason=\"ignored_source\"}} {}\n\
# HELP st_tracker_offenders_total Sources ignored for repeated bad connection ids.\n\
# TYPE st_tracker_offenders_total counter\n\
st_tracker_offenders_total {}\n\
# HELP st_tracker_offender_entries Addresses in the offender table.\n\
# TYPE st_tracker_offender_entries gauge\n\
st_tracker_offender_entries {}\n\
# HELP st_tracker_peers_removed_total Peers removed, by reason.\n\
# TYPE st_tracker_peers_removed_total counter\n\
st_tracker_peers_removed_total{{reason=\"expired\"}} {}\n\
st_tracker_peers_removed_total{{reason=\"evicted\"}} {}\n\
# HELP st_tracker_swarms Swarms in the table.\n\
# TYPE st_tracker_swarms gauge\n\
st_tracker_swarms {}\n\
# HELP st_tracker_peers Peers in the table.\n\
# TYPE st_tracker_peers gauge\n\
st_tracker_peers {}\n\
# HELP st_tracker_uptime_seconds Seconds since start.\n\
# TYPE st_tracker_uptime_seconds gauge\n\
st_tracker_uptime_seconds {}\n",
        s.connects,
        s.announces,
        s.scrapes,
        s.malformed,
        s.bad_connection_ids,
        s.ignored,
        s.offenders,
        r.offender_entries,
        s.expired,
        s.evicted,
        r.swarms,
        r.peers,
        r.uptime.as_secs()
    );
    let tmp = path.with_extension("prom.tmp");
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}
