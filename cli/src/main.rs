//! `st`: the SwarmTorrent command line.
//!
//! This file owns argument parsing (clap), logging set-up (log + simplelog) and the mapping of
//! failures to exit codes: 0 success, 1 runtime failure, 2 usage error or invalid input.
//! Each command lives in its own module.

mod common;
mod create;
mod dht_cmd;
mod error;
mod hashing;
mod inspect;
mod lab;
mod swarm_cmd;
mod tracker_cmd;
mod units;
mod verify;

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
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
invalid input (bad arguments, a missing, unreadable or malformed input file); 130 or 143 \
when a fetch is interrupted by SIGINT or SIGTERM before it completes (its state is saved).",
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
        /// Make a private swarm: it is never announced to or looked up in the DHT nor
        /// announced on the LAN; peers come only from the trackers and peer exchange. The
        /// flag is part of the swarm id: the same data with and without it are two swarms.
        #[arg(long)]
        private: bool,
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
    /// Serve a file or directory to a swarm (or a whole library of them) until interrupted.
    #[command(
        long_about = "Serve a file or directory to a swarm until SIGINT or SIGTERM (exit 0). \
PATH is checked against the .st file first (every core hashing, with progress); only fragments \
that match are served. What was verified is remembered in the state directory with each file's \
identity (device, inode, size, times), so a restart hashes only files that changed; --recheck \
hashes everything again.\n\n\
With --dir DIR instead of FILE.st PATH, one process serves every .st file in DIR whose data \
(the file or directory named by the .st file) is in DIR too, on one UDP port, and picks up .st \
files added or removed later (every 30 s, and at once on SIGHUP).\n\n\
The peer announces itself to every tracker of each .st file, announces its swarms on the local \
network (UDP multicast to 239.192.83.84 and ff12::5354:4c44, port 6776; --no-lan turns it off) \
and in the mainline BitTorrent DHT (on the same UDP port, under the first 20 bytes of the swarm \
id; --no-dht turns it off; private swarms never), and serves any peer that connects. Peers also tell each other of the peers they reached (peer \
exchange), so a swarm that learnt of one peer finds the rest.\n\n\
It prints 'listening on ADDR' on stdout once bound (or, with --json, one JSON object per line: \
listening, progress, complete, error, summary), and a summary at exit."
    )]
    Seed {
        /// The .st file (not with --dir).
        #[arg(required_unless_present = "dir", conflicts_with = "dir")]
        file: Option<PathBuf>,
        /// The data: the file itself (or the directory holding it), or the shared directory.
        #[arg(required_unless_present = "dir", conflicts_with = "dir")]
        path: Option<PathBuf>,
        /// Serve every .st file in DIR whose data is in DIR too.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        net: NetArgs,
        /// Hash every file again, ignoring what the state directory remembers.
        #[arg(long)]
        recheck: bool,
    },
    /// Download swarms' data, verifying every fragment, while serving what it has.
    #[command(
        long_about = "Download the data each .st file describes into DIR/NAME, verifying \
every fragment's SHA-256, and serve verified fragments to other peers meanwhile. Several .st \
files are fetched at once, over one UDP port. Data is written to NAME.part (each file.part for \
a directory) and moved into place, fsynced, only when every fragment is verified. A resume file \
(DIR/.NAME.st-resume) records verified fragments that are durably on disk, so an interrupted or \
killed fetch continues where it stopped.\n\n\
Peers are found through the trackers of the .st files, on the local network (UDP multicast, \
on by default; --no-lan turns it off), through the mainline BitTorrent DHT (on by default for \
swarms that are not private; --no-dht turns it off) and by peer exchange. A .st file without \
trackers works on a LAN with no further setup, and across networks through the DHT.\n\n\
Exits 0 once every swarm is complete; 130 after SIGINT and 143 after SIGTERM before that \
(resume state saved); 1 on a runtime failure such as a full disk; 2 on invalid input. With \
--seed it keeps serving after completion until interrupted.\n\n\
Data already under DIR/NAME is checked first. If every fragment matches, it is taken as is \
(nothing is downloaded; with --seed it is served). If it holds anything else, the fetch \
refuses to overwrite it (exit 1) unless --force is given; then the fragments that match are \
kept and only the rest is fetched."
    )]
    Fetch {
        /// The .st files.
        #[arg(required = true, value_name = "FILE.st")]
        files: Vec<PathBuf>,
        /// Directory to write into.
        #[arg(short, long, value_name = "DIR", default_value = ".")]
        output: PathBuf,
        /// Keep serving after the download completes, until interrupted.
        #[arg(long)]
        seed: bool,
        /// Fetch over files already under DIR/NAME that hold other data: they are replaced,
        /// keeping every fragment of them that matches (without it, such a fetch exits 1).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Use the mainline DHT directly: look up an info hash, or run a DHT node.
    #[command(subcommand)]
    Dht(DhtCommand),
    /// Run a UDP tracker (SwarmTorrent's protocol and BEP 15 on one port) until interrupted.
    #[command(
        name = "udp-tracker",
        long_about = "Run a UDP tracker until SIGINT or SIGTERM. It tells the peers of each \
swarm about each other and speaks two protocols on one port: SwarmTorrent's own (spec/tracker.md) \
and BitTorrent's BEP 15, so standard BitTorrent clients can use it too (the info hash is the \
first 20 bytes of the swarm id).\n\n\
It keeps no state for a source until that source proves it can receive (a stateless \
connection id), and never sends an unproven source more bytes than it received, so it cannot \
be used to amplify traffic; a native reply is at most 3 times its request. An address that \
keeps sending bad connection ids is ignored for a while (the offender_* settings). Memory is \
bounded by the limits of --print-config.\n\n\
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
        /// Read settings from FILE (TOML, as --print-config shows; unknown keys are errors).
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
    /// Launch a test swarm: one seed and N fetchers on a shaped network, timed and plotted.
    #[command(
        long_about = "Launch a test swarm in one command and measure it: one seed and N fetchers \
of generated data, each a real st process (this executable), with LAN discovery or a tracker. \
It answers the question 'how long does it take to get this file to N machines at this link \
speed?'.\n\n\
As root (Linux, with iproute2), every host is a network namespace of its own on a bridge, on \
the private subnet 10.77.0.0/16 that exists only inside them, and each host's link is shaped \
to RATE in both directions with tc (a token bucket). The namespaces are held by child \
processes that die with st lab, so nothing is left behind whatever ends it, Ctrl-C and kill -9 \
included. Otherwise everything runs on loopback, unshaped, with a tracker, and st lab says \
so.\n\n\
While it runs, one progress line. Then a table (per host: first byte, completion, CPU time, \
bytes from the seed; p50, p90 and max, the lower bound (1 + floor(log2 N)/M) * F/u and \
max/bound, where F is the size, M the fragment count and u the link rate) and, in OUT: \
results.json (every figure, and each fetcher's progress samples), progress.svg (bytes over \
time per host) and completion.svg (the completion CDF with the bound).\n\n\
Exits 0 when every fetch completed verified, 1 otherwise (a fetcher failed or the timeout \
passed), 2 on invalid arguments, 130/143 when interrupted (after cleaning up). The defaults \
finish in well under 30 s on two cores."
    )]
    Lab {
        /// Number of fetchers (besides the seed).
        #[arg(long, default_value_t = 8, value_name = "N")]
        hosts: usize,
        /// Bytes of generated data, with binary suffixes (64M = 64 MiB).
        #[arg(long, default_value = "64M", value_name = "SIZE", value_parser = units::parse_size)]
        size: u64,
        /// Each host's link rate, both ways: bits per second with an SI prefix (100Mbit), or
        /// bytes per second with binary units (10M); `none` for unshaped links.
        #[arg(long, default_value = "100Mbit", value_name = "RATE", value_parser = parse_lab_rate)]
        rate: LabRate,
        /// Fragment length of the generated .st file [default: st create's].
        #[arg(long, value_name = "SIZE", value_parser = parse_fragment_size)]
        fragment_size: Option<u32>,
        /// How the fetchers find the seed.
        #[arg(long, value_enum, default_value = "lan")]
        discovery: lab::Discovery,
        /// Directory for results.json and the plots.
        #[arg(long, default_value = "st-lab", value_name = "DIR")]
        out: PathBuf,
        /// Keep the generated data, the fetched copies and every process's log in OUT/work.
        #[arg(long)]
        keep: bool,
        /// Stop the fetchers after this many seconds [default: 30 + 5 × the bound, or 120].
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
}

/// `--rate` of `st lab`: bytes per second, or `None` for unshaped links.
#[derive(Debug, Clone, Copy)]
struct LabRate(Option<u64>);

fn parse_lab_rate(s: &str) -> Result<LabRate, String> {
    if s == "none" {
        return Ok(LabRate(None));
    }
    match units::parse_rate(s)? {
        0 => Err("a rate of 0 moves nothing (use `none` for unshaped links)".into()),
        r => Ok(LabRate(Some(r))),
    }
}

/// `st dht …`.
#[derive(Subcommand, Debug)]
enum DhtCommand {
    /// Look up the peers of an info hash (or of a .st file's swarm) in the DHT and print them.
    #[command(
        long_about = "Look up the peers of KEY in the mainline DHT (BEP 5) and print one \
'peer ADDR' line for each. KEY is a BitTorrent info hash (40 hex digits) or a .st file (its \
swarm's DHT key, the first 20 bytes of the swarm id). The node runs read-only (BEP 43): it \
asks, and answers nobody. Exits 0 as soon as a search found peers, 1 if none were found \
within --timeout."
    )]
    Lookup {
        /// An info hash (40 hex digits) or a .st file.
        key: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        timeout: u64,
        #[command(flatten)]
        net: DhtNetArgs,
    },
    /// Run a DHT node that serves no swarm (a bootstrap node for others) until interrupted.
    #[command(
        long_about = "Run a mainline DHT node (BEP 5) that serves no swarm until SIGINT or \
SIGTERM: a bootstrap node for a closed network (give its address to the others with \
--dht-bootstrap), which stores announces and answers lookups within the limits of \
spec/dht.md. It logs its figures every minute and keeps its id and nodes in the state \
directory."
    )]
    Node {
        #[command(flatten)]
        net: DhtNetArgs,
    },
}

/// Network options of `st dht`.
#[derive(clap::Args, Debug)]
struct DhtNetArgs {
    /// UDP port (0: any free port, printed at start).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to bind [default: all IPv4 and IPv6 addresses].
    #[arg(long, value_name = "ADDR")]
    bind: Option<std::net::IpAddr>,
    /// A DHT node to bootstrap from, as HOST:PORT; repeatable; `none` for no router [default:
    /// dht.transmissionbt.com:6881 and dht.libtorrent.org:25401].
    #[arg(long = "dht-bootstrap", value_name = "HOST:PORT", value_parser = parse_host_port)]
    dht_bootstrap: Vec<String>,
    /// Where the DHT keeps its id and nodes [default: $XDG_STATE_HOME/swarmtorrent, else
    /// ~/.local/state/swarmtorrent].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// One JSON object per line on stdout.
    #[arg(long)]
    json: bool,
}

impl DhtNetArgs {
    fn into_args(self) -> dht_cmd::DhtArgs {
        dht_cmd::DhtArgs {
            port: self.port,
            bind: self.bind,
            bootstrap: self.dht_bootstrap,
            state_dir: self.state_dir.or_else(swarm_cmd::default_state_dir),
            json: self.json,
        }
    }
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

/// Network, rate, output and state options shared by `seed` and `fetch`.
#[derive(clap::Args, Debug)]
struct NetArgs {
    /// UDP port (0: any free port, printed at start).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to bind [default: all IPv4 and IPv6 addresses].
    #[arg(long, value_name = "ADDR")]
    bind: Option<std::net::IpAddr>,
    /// Do not announce or look for peers on the local network (multicast).
    #[arg(long)]
    no_lan: bool,
    /// Do not use the DHT (the mainline BitTorrent DHT, BEP 5, on the same UDP port) to
    /// announce and find peers. Private swarms never use it.
    #[arg(long)]
    no_dht: bool,
    /// A DHT node to bootstrap from, as HOST:PORT (any st seed or `st dht node` is one).
    /// Repeatable; `none` for no router (the first node of a closed network). Asked together
    /// with the nodes remembered in the state directory [default:
    /// dht.transmissionbt.com:6881 and dht.libtorrent.org:25401].
    #[arg(long = "dht-bootstrap", value_name = "HOST:PORT", value_parser = parse_host_port)]
    dht_bootstrap: Vec<String>,
    /// Upload limit over all swarms: bytes per second with binary units (10M = 10 MiB/s), or
    /// bits per second with an SI prefix (100Mbit = 12.5 MB/s).
    #[arg(long, value_name = "RATE", value_parser = units::parse_rate)]
    max_upload: Option<u64>,
    /// Download limit over all swarms, in the same units as --max-upload.
    #[arg(long, value_name = "RATE", value_parser = units::parse_rate)]
    max_download: Option<u64>,
    /// One JSON object per line on stdout (events: listening, progress, complete, error,
    /// summary), nothing else on stdout.
    #[arg(long)]
    json: bool,
    /// Where a seed remembers what it verified, and the DHT its id and nodes [default:
    /// $XDG_STATE_HOME/swarmtorrent, else ~/.local/state/swarmtorrent].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Seconds between progress reports (JSON progress events, log lines), 0.05 to 3600.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = parse_interval)]
    progress_interval: f64,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.05..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s} is not a number of seconds from 0.05 to 3600")),
    }
}

/// `HOST:PORT` with a non-zero port (the host is resolved later, off the network thread).
fn parse_host_port(s: &str) -> Result<String, String> {
    if s == "none" {
        return Ok(s.to_owned());
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s}: expected HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{s}: no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(s.to_owned()),
        _ => Err(format!("{s}: the port must be 1-65535")),
    }
}

fn swarm_args(
    sts: Vec<PathBuf>,
    path: PathBuf,
    dir: bool,
    net: NetArgs,
    mode: swarm_cmd::Mode,
    recheck: bool,
) -> swarm_cmd::SwarmArgs {
    swarm_cmd::SwarmArgs {
        sts,
        path,
        dir,
        port: net.port,
        bind: net.bind,
        lan: !net.no_lan,
        dht: !net.no_dht,
        dht_bootstrap: net.dht_bootstrap,
        mode,
        max_upload: net.max_upload,
        max_download: net.max_download,
        json: net.json,
        state_dir: net.state_dir.or_else(swarm_cmd::default_state_dir),
        progress_every: std::time::Duration::from_secs_f64(net.progress_interval),
        recheck,
    }
}

/// Reports a command-line error in one line (`st: error: …`, with where to find help) and
/// returns exit status 2; `--help` and `--version` print as clap renders them.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.use_stderr() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    eprintln!(
        "st: error: {}",
        one_line_usage_error(&e.render().to_string())
    );
    ExitCode::from(2)
}

/// clap's multi-line error text as one line: the message (its continuation lines joined,
/// tips dropped), then the command whose `--help` to read, taken from the usage line.
fn one_line_usage_error(text: &str) -> String {
    let (message, rest) = text.split_once("\n\nUsage: ").unwrap_or((text, ""));
    let message = message.strip_prefix("error: ").unwrap_or(message);
    let mut words: Vec<&str> = Vec::new();
    for line in message.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("tip:") || line.starts_with("For more information") {
            continue;
        }
        words.push(line.trim_end_matches(':'));
    }
    let mut out = words.join(": ");
    let command: Vec<&str> = rest
        .split_whitespace()
        .take_while(|w| !w.starts_with('[') && !w.starts_with('<'))
        .collect();
    let command = if command.is_empty() {
        // No usage line (a bad value): the subcommand given on the command line, if any.
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        let given = std::env::args()
            .skip(1)
            .find(|a| names.iter().any(|n| n == a));
        given.map_or_else(|| "st".to_owned(), |c| format!("st {c}"))
    } else {
        command.join(" ")
    };
    out.push_str(&format!(" (see '{command} --help')"));
    out
}

fn main() -> ExitCode {
    // Like any Unix filter: when the reader of stdout goes away (`st inspect x.st | head -1`),
    // end quietly instead of panicking on the failed write (Rust ignores SIGPIPE by default).
    // SAFETY: restoring a signal's default disposition at start, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
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
            private,
        } => create::run(
            ctx,
            create::CreateArgs {
                path,
                trackers,
                fragment_size,
                output,
                force,
                private,
            },
        ),
        Command::Inspect { file, json } => inspect::run(&file, json),
        Command::Verify { file, path } => verify::run(ctx, &file, &path),
        Command::Seed {
            file,
            path,
            dir,
            net,
            recheck,
        } => {
            let args = match dir {
                Some(d) => swarm_args(Vec::new(), d, true, net, swarm_cmd::Mode::Seed, recheck),
                None => swarm_args(
                    file.into_iter().collect(),
                    path.unwrap_or_default(),
                    false,
                    net,
                    swarm_cmd::Mode::Seed,
                    recheck,
                ),
            };
            swarm_cmd::run(ctx, args)
        }
        Command::Fetch {
            files,
            output,
            seed,
            force,
            net,
        } => swarm_cmd::run(
            ctx,
            swarm_args(
                files,
                output,
                false,
                net,
                swarm_cmd::Mode::Fetch {
                    seed_after: seed,
                    force,
                },
                false,
            ),
        ),
        Command::Dht(DhtCommand::Lookup { key, timeout, net }) => dht_cmd::parse_key(&key)
            .and_then(|k| {
                dht_cmd::lookup(net.into_args(), k, std::time::Duration::from_secs(timeout))
            }),
        Command::Dht(DhtCommand::Node { net }) => dht_cmd::node(net.into_args()),
        Command::Lab {
            hosts,
            size,
            rate,
            fragment_size,
            discovery,
            out,
            keep,
            timeout,
        } => lab::run(
            ctx,
            lab::LabArgs {
                hosts,
                size,
                rate: rate.0,
                fragment_size,
                discovery,
                out,
                keep,
                timeout: timeout.map(std::time::Duration::from_secs),
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
            if !matches!(e, error::CliError::Interrupted(_)) {
                eprintln!("st: error: {e}");
            }
            e.exit_code()
        }
    }
}
