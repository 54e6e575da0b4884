//! `st`: the SwarmTorrent command line.
//!
//! This file owns argument parsing (clap), logging set-up (log + simplelog) and the mapping of
//! failures to exit codes: 0 success, 1 runtime failure, 2 usage error or invalid input.
//! Each command lives in its own module.

mod common;
mod create;
mod error;
mod hashing;
mod inspect;
mod swarm_cmd;
mod tracker_cmd;
mod units;
mod verify;

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use log::LevelFilter;
use simplelog::{
    ColorChoice, CombinedLogger, ConfigBuilder, SharedLogger, TermLogger, TerminalMode, WriteLogger,
};
use st_proto::st_file::{MAX_FRAGMENT_LENGTH, MIN_FRAGMENT_LENGTH, Tracker};

use crate::common::Ctx;
use crate::error::CliError;

/// SwarmTorrent: move big files to many machines over UDP, verified end to end.
#[derive(Parser, Debug)]
#[command(
    name = "st",
    version,
    about,
    long_about = "SwarmTorrent moves big files to many machines: every host that has a fragment \
serves it, so N hosts finish in little more than the time one needs. Everything is verified \
with SHA-256 fragment by fragment.\n\n\
Exit status: 0 success; 1 runtime failure (verification failed, IO error); 2 usage error or \
invalid input (bad arguments, a missing, unreadable or malformed input file).",
    after_help = "Run 'st help COMMAND' for the details of a command."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Global {
    /// Log more: -v for debug, -vv for trace.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log only warnings and errors, and draw no progress bar.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Also append the log, with timestamps and at debug level at least, to FILE.
    #[arg(long, value_name = "FILE", global = true)]
    log_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Hash a file or directory and write a .st file describing it.
    #[command(
        long_about = "Hash a file or directory and write a .st file describing it: \
the advisory name, the total length, the fragment length, the SHA-256 of every fragment, the \
file list of a directory, and the tracker table.\n\n\
A directory is walked in sorted order; symbolic links and special files inside it are skipped \
(never followed). The input is read in fragment order on every core, with constant memory.\n\n\
Without -t the file has no trackers: peers find each other by LAN discovery only. The swarm id \
does not depend on the trackers, so the same data with another tracker list joins the same \
swarm."
    )]
    Create {
        /// The file or directory to share.
        path: PathBuf,
        /// A tracker, as udp://HOST:PORT (HOST: IPv4, [IPv6] or a DNS name). Repeatable; order
        /// is kept.
        #[arg(short, long = "tracker", value_name = "URL", value_parser = parse_tracker)]
        trackers: Vec<Tracker>,
        /// Fragment length: a power of two from 16K to 64M (binary units: 256K, 4M).
        /// Default: chosen from the total length to give at most about 2048 fragments, never
        /// below 64K or above 16M.
        #[arg(long, value_name = "SIZE", value_parser = parse_fragment_size)]
        fragment_size: Option<u32>,
        /// Where to write the .st file [default: NAME.st in the current directory].
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite the output if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Print what a .st file holds: swarm id, name, lengths, trackers, files.
    Inspect {
        /// The .st file.
        file: PathBuf,
        /// Print one JSON object instead of text (lengths as plain integers).
        #[arg(long)]
        json: bool,
    },
    /// Check a file or directory against a .st file, fragment by fragment.
    #[command(
        long_about = "Check a file or directory against a .st file, fragment by \
fragment. Exits 0 when every fragment matches and 1 when any is wrong, short or missing (the \
one-line summary says how many and which; -v lists them all). For a single-file .st, PATH may \
also be the directory that holds the file under its advisory name."
    )]
    Verify {
        /// The .st file.
        file: PathBuf,
        /// The data: the file itself, or the shared directory itself.
        path: PathBuf,
    },
    /// Serve a file or directory to a swarm until interrupted.
    #[command(
        long_about = "Serve a file or directory to a swarm until SIGINT or SIGTERM. PATH \
is checked against the .st file first (every core hashing, with progress); only fragments that \
match are served. The peer announces itself to every tracker of the .st file, announces the \
swarm on the local network (UDP multicast to 239.192.83.84 and ff12::5354:4c44, port 6776; \
--no-lan turns it off) and serves any peer that connects. Peers also tell each other of the \
peers they reached (peer exchange), so a swarm that learnt of one peer finds the rest.\n\n\
It prints 'listening on ADDR' on stdout once bound, and a summary (bytes sent) at exit."
    )]
    Seed {
        /// The .st file.
        file: PathBuf,
        /// The data: the file itself (or the directory holding it), or the shared directory.
        path: PathBuf,
        /// UDP port (0: any free port, printed at start).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Address to bind [default: all IPv4 and IPv6 addresses].
        #[arg(long, value_name = "ADDR")]
        bind: Option<std::net::IpAddr>,
        /// Do not announce or look for peers on the local network (multicast).
        #[arg(long)]
        no_lan: bool,
    },
    /// Download a swarm's data, verifying every fragment, while serving what it has.
    #[command(
        long_about = "Download the data a .st file describes into DIR/NAME, verifying every \
fragment's SHA-256, and serve verified fragments to other peers meanwhile. Data is written to \
NAME.part (each file.part for a directory) and moved into place, fsynced, only when every \
fragment is verified. A resume file (DIR/.NAME.st-resume) records verified fragments that are \
durably on disk, so an interrupted or killed fetch continues where it stopped.\n\n\
Peers are found through the trackers of the .st file, on the local network (UDP multicast, \
on by default; --no-lan turns it off) and by peer exchange. A .st file without trackers works \
on a LAN with no further setup.\n\n\
Exits 0 once complete (or on SIGINT/SIGTERM, after saving resume state), 1 on a runtime \
failure such as a full disk, 2 on invalid input. With --seed it keeps serving after completion \
until interrupted."
    )]
    Fetch {
        /// The .st file.
        file: PathBuf,
        /// Directory to write into.
        #[arg(short, long, value_name = "DIR", default_value = ".")]
        output: PathBuf,
        /// UDP port (0: any free port, printed at start).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Address to bind [default: all IPv4 and IPv6 addresses].
        #[arg(long, value_name = "ADDR")]
        bind: Option<std::net::IpAddr>,
        /// Keep serving after the download completes, until interrupted.
        #[arg(long)]
        seed: bool,
        /// Do not announce or look for peers on the local network (multicast).
        #[arg(long)]
        no_lan: bool,
    },
    /// Run a UDP tracker (SwarmTorrent's protocol and BEP 15 on one port) until interrupted.
    #[command(
        name = "udp-tracker",
        long_about = "Run a UDP tracker until SIGINT or SIGTERM. It tells the peers of each \
swarm about each other and speaks two protocols on one port: SwarmTorrent's own (spec/tracker.md) \
and BitTorrent's BEP 15, so standard BitTorrent clients can use it too (the info hash is the \
first 20 bytes of the swarm id).\n\n\
It keeps no state for a source until that source proves it can receive (a stateless \
connection id), and never sends an unproven source more bytes than it received, so it cannot \
be used to amplify traffic. Memory is bounded by the limits of --print-config.\n\n\
It prints 'listening on ADDR' on stdout for every bound socket, and logs a stats line every \
minute (requests per second by kind, swarms, peers, dropped datagrams)."
    )]
    UdpTracker {
        /// UDP port to serve (0: any free port, printed at start).
        #[arg(long, default_value_t = 6969)]
        port: u16,
        /// Address to bind [default: all IPv4 and IPv6 addresses].
        #[arg(long, value_name = "ADDR")]
        bind: Option<std::net::IpAddr>,
        /// Read settings from FILE (`key = value` lines, as --print-config shows).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the settings in force (defaults, or FILE's) and exit.
        #[arg(long)]
        print_config: bool,
        /// Write the counters to FILE in Prometheus text format every stats interval (for
        /// node_exporter's textfile collector).
        #[arg(long, value_name = "FILE")]
        stats_file: Option<PathBuf>,
    },
}

fn parse_tracker(s: &str) -> Result<Tracker, String> {
    Tracker::parse_url(s).map_err(|e| format!("{e} (expected udp://HOST:PORT)"))
}

fn parse_fragment_size(s: &str) -> Result<u32, String> {
    let n = units::parse_size(s)?;
    let ok = n.is_power_of_two()
        && (u64::from(MIN_FRAGMENT_LENGTH)..=u64::from(MAX_FRAGMENT_LENGTH)).contains(&n);
    if !ok {
        return Err(format!("{s} is not a power of two between 16K and 64M"));
    }
    Ok(n as u32)
}

fn init_logging(g: &Global) -> Result<(), CliError> {
    let level = if g.quiet {
        LevelFilter::Warn
    } else {
        match g.verbose {
            0 => LevelFilter::Info,
            1 => LevelFilter::Debug,
            _ => LevelFilter::Trace,
        }
    };
    let term_config = ConfigBuilder::new()
        .set_time_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .build();
    let mut loggers: Vec<Box<dyn SharedLogger>> = vec![TermLogger::new(
        level,
        term_config,
        TerminalMode::Stderr,
        if std::io::stderr().is_terminal() {
            ColorChoice::Auto
        } else {
            ColorChoice::Never
        },
    )];
    if let Some(path) = &g.log_file {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| error::invalid(format!("cannot open log file {}: {e}", path.display())))?;
        let file_config = ConfigBuilder::new()
            .set_time_format_rfc3339()
            .set_target_level(LevelFilter::Error)
            .set_thread_level(LevelFilter::Off)
            .build();
        loggers.push(WriteLogger::new(
            level.max(LevelFilter::Debug),
            file_config,
            file,
        ));
    }
    // A logger already installed (only possible in tests) is not an error worth failing for.
    let _ = CombinedLogger::init(loggers);
    Ok(())
}

fn main() -> ExitCode {
    // Like any Unix filter: when the reader of stdout goes away (`st inspect x.st | head -1`),
    // end quietly instead of panicking on the failed write (Rust ignores SIGPIPE by default).
    // SAFETY: restoring a signal's default disposition at start, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let ctx = Ctx {
        quiet: cli.global.quiet,
    };
    let result = init_logging(&cli.global).and_then(|()| match cli.command {
        Command::Create {
            path,
            trackers,
            fragment_size,
            output,
            force,
        } => create::run(
            ctx,
            create::CreateArgs {
                path,
                trackers,
                fragment_size,
                output,
                force,
            },
        ),
        Command::Inspect { file, json } => inspect::run(&file, json),
        Command::Verify { file, path } => verify::run(ctx, &file, &path),
        Command::Seed {
            file,
            path,
            port,
            bind,
            no_lan,
        } => swarm_cmd::run(
            ctx,
            swarm_cmd::SwarmArgs {
                st: file,
                path,
                port,
                bind,
                lan: !no_lan,
                mode: swarm_cmd::Mode::Seed,
            },
        ),
        Command::Fetch {
            file,
            output,
            port,
            bind,
            seed,
            no_lan,
        } => swarm_cmd::run(
            ctx,
            swarm_cmd::SwarmArgs {
                st: file,
                path: output,
                port,
                bind,
                lan: !no_lan,
                mode: swarm_cmd::Mode::Fetch { seed_after: seed },
            },
        ),
        Command::UdpTracker {
            port,
            bind,
            config,
            print_config,
            stats_file,
        } => tracker_cmd::run(tracker_cmd::TrackerArgs {
            port,
            bind,
            config,
            print_config,
            stats_file,
        }),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::debug!("failure: {e:?}");
            eprintln!("st: error: {e}");
            e.exit_code()
        }
    }
}
