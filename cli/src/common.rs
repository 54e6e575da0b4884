//! Pieces shared by the commands: reading a `.st` file, progress display, path resolution,
//! random bytes.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use st_proto::st_file::{Hash, StFile};

use crate::error::{CliError, CliResult};
use crate::hashing::join_components;

/// What every command knows of the global flags.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    /// `-q`: no progress bar, warnings and errors only.
    pub quiet: bool,
}

/// Largest `.st` file read: the header, 4 Mi fragment hashes (128 MiB) and room for a large
/// file list. Anything bigger cannot be valid and is refused before it is read.
const MAX_ST_FILE: u64 = 256 << 20;

/// Reads and decodes a `.st` file. Any failure is invalid input (exit 2), naming the file.
pub fn load_st(path: &Path) -> CliResult<(StFile, Hash)> {
    let shown = path.display();
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read {shown}"))
        .map_err(CliError::Invalid)?;
    let too_big = || {
        crate::error::invalid(format!(
            "{shown}: not a valid .st file: larger than {} MiB",
            MAX_ST_FILE >> 20
        ))
    };
    if file.metadata().is_ok_and(|m| m.len() > MAX_ST_FILE) {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(MAX_ST_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {shown}"))
        .map_err(CliError::Invalid)?;
    if bytes.len() as u64 > MAX_ST_FILE {
        return Err(too_big());
    }
    StFile::decode_with_swarm_id(&bytes)
        .with_context(|| format!("{shown}: not a valid .st file"))
        .map_err(CliError::Invalid)
}

/// Hex of a hash, lower case.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The on-disk path of every file of `st`'s data, given PATH as the user wrote it: the file
/// itself for a single file (or `PATH/NAME` when PATH is a directory), the directory for a
/// directory.
pub fn data_paths(st: &StFile, path: &Path) -> Vec<PathBuf> {
    match &st.info.files {
        None => {
            if path.is_dir() {
                vec![path.join(&st.info.name)]
            } else {
                vec![path.to_path_buf()]
            }
        }
        Some(files) => files
            .iter()
            .map(|f| join_components(path, &f.path))
            .collect(),
    }
}

/// A progress bar on stderr when it is a terminal and `-q` is not given; otherwise nothing.
pub struct Progress {
    bar: Option<ProgressBar>,
}

/// Inputs smaller than this finish too fast for a bar to help.
const PROGRESS_THRESHOLD: u64 = 32 << 20;

impl Progress {
    /// A byte-counting bar with a verb such as "hashing".
    pub fn bytes(ctx: Ctx, total: u64, verb: &str) -> Progress {
        let show = !ctx.quiet && total >= PROGRESS_THRESHOLD && std::io::stderr().is_terminal();
        let bar = show.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:9} {percent:>3}% [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            bar.set_message(verb.to_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress { bar }
    }

    /// Counts `n` more bytes done.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `N` bytes from the OS's random source (peer ids, DHT secrets, the tracker's connection-id
/// keys, the node's RNG seed). If /dev/urandom cannot be read (never on Linux), std's hasher
/// keys stand in: the standard library seeds them from the OS per process, with no clock read.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use std::hash::BuildHasher;
    let mut b = [0u8; N];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let keys = std::hash::RandomState::new();
        for (i, chunk) in b.chunks_mut(8).enumerate() {
            let v = keys.hash_one(i).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    b
}
