//! `st create`: hash a file or directory and write its `.st` file.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use log::{debug, warn};
use st_proto::st_file::{
    FileEntry, Hash, Info, MAX_FILES, MAX_FRAGMENTS, MAX_PATH_DEPTH, StFile, Tracker,
    check_component, fragment_count,
};

use crate::common::{Ctx, hex};
use crate::error::{CliError, CliResult, invalid, runtime};
use crate::hashing::{self, Outcome};
use crate::units::format_size;

/// Arguments of `st create`, already parsed.
pub struct CreateArgs {
    /// File or directory to share.
    pub path: PathBuf,
    /// Tracker table, in order.
    pub trackers: Vec<Tracker>,
    /// Fragment length, or `None` for the default.
    pub fragment_size: Option<u32>,
    /// Output path, or `None` for `<name>.st` in the current directory.
    pub output: Option<PathBuf>,
    /// Overwrite an existing output.
    pub force: bool,
    /// A private swarm (header flag bit 0).
    pub private: bool,
}

/// Smallest default fragment length: 64 KiB.
const MIN_DEFAULT_FRAGMENT: u64 = 64 << 10;
/// Largest default fragment length: 16 MiB.
const MAX_DEFAULT_FRAGMENT: u64 = 16 << 20;
/// The default aims at no more than this many fragments.
const TARGET_FRAGMENTS: u64 = 2048;

/// The default fragment length for `total` bytes: the smallest power of two that keeps the
/// count at or under 2048, clamped to 64 KiB ..= 16 MiB.
pub fn default_fragment_length(total: u64) -> u32 {
    let want = total.div_ceil(TARGET_FRAGMENTS).max(1).next_power_of_two();
    want.clamp(MIN_DEFAULT_FRAGMENT, MAX_DEFAULT_FRAGMENT) as u32
}

/// One file found on disk.
struct Found {
    components: Vec<String>,
    path: PathBuf,
    length: u64,
}

/// Runs `st create`.
pub fn run(ctx: Ctx, args: CreateArgs) -> CliResult<()> {
    if args.private && args.trackers.is_empty() {
        return Err(invalid(
            "--private needs a tracker (-t): a private swarm finds peers only through its trackers"
                .to_owned(),
        ));
    }
    let shown = args.path.display().to_string();
    let meta = fs::metadata(&args.path)
        .with_context(|| format!("cannot read {shown}"))
        .map_err(CliError::Invalid)?;
    let name = share_name(&args.path)?;

    let output = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{name}.st")));
    if !args.force && fs::symlink_metadata(&output).is_ok() {
        return Err(runtime(format!(
            "{}: already exists (use --force to overwrite)",
            output.display()
        )));
    }

    let (files, found) = if meta.is_dir() {
        let mut found = Vec::new();
        walk(&args.path, &mut Vec::new(), &mut found)?;
        let entries = found
            .iter()
            .map(|f| FileEntry {
                path: f.components.clone(),
                length: f.length,
            })
            .collect();
        (Some(entries), found)
    } else if meta.is_file() {
        let single = Found {
            components: vec![name.clone()],
            path: args.path.clone(),
            length: meta.len(),
        };
        (None, vec![single])
    } else {
        return Err(invalid(format!("{shown}: not a regular file or directory")));
    };

    let total: u64 = found.iter().map(|f| f.length).sum();
    if total == 0 {
        return Err(invalid(format!("{shown}: nothing to share (0 bytes)")));
    }
    let fragment_length = args
        .fragment_size
        .unwrap_or_else(|| default_fragment_length(total));
    let count = fragment_count(total, fragment_length);
    if count > u64::from(MAX_FRAGMENTS) {
        let need = total.div_ceil(u64::from(MAX_FRAGMENTS)).next_power_of_two();
        return Err(invalid(format!(
            "{shown}: {count} fragments of {} is above the limit of {MAX_FRAGMENTS}; use --fragment-size {} or more",
            format_size(u64::from(fragment_length)),
            format_size(need)
        )));
    }
    debug!(
        "hashing {shown}: {} in {} file(s), {count} fragments of {}",
        format_size(total),
        found.len(),
        format_size(u64::from(fragment_length))
    );

    #[allow(
        clippy::disallowed_methods,
        reason = "times an offline command for its summary line; no network rule"
    )]
    let started = Instant::now();
    let paths: Vec<PathBuf> = found.iter().map(|f| f.path.clone()).collect();
    let lengths: Vec<u64> = found.iter().map(|f| f.length).collect();
    let mut hashes: Vec<Option<Hash>> = vec![None; count as usize];
    let mut changed = None;
    hashing::hash_all(
        ctx,
        &paths,
        &lengths,
        fragment_length,
        "hashing",
        |index, _, outcome| match outcome {
            Outcome::Hash(h) => hashes[index as usize] = Some(h),
            Outcome::Short | Outcome::Missing => {
                changed.get_or_insert(index);
            }
        },
    )
    .map_err(|e| runtime(e.message()))?;
    if let Some(index) = changed {
        return Err(runtime(format!(
            "{shown}: changed while it was being read (fragment {index} came up short); try again"
        )));
    }
    let elapsed = started.elapsed().as_secs_f64();
    debug!(
        "hashed {} in {elapsed:.3} s ({:.2} GB/s)",
        format_size(total),
        total as f64 / elapsed.max(1e-9) / 1e9
    );

    let st = StFile {
        trackers: args.trackers,
        info: Info {
            name: name.clone(),
            total_length: total,
            fragment_length,
            files,
            hashes: hashes.into_iter().map(|h| h.unwrap_or_default()).collect(),
            private: args.private,
        },
    };
    let bytes = st
        .encode()
        .with_context(|| format!("{shown}: cannot be described in a .st file"))
        .map_err(CliError::Invalid)?;
    // Belt and braces: what we write must read back to the same value.
    let (back, swarm_id) = StFile::decode_with_swarm_id(&bytes)
        .map_err(|e| runtime(format!("internal error: encoded file does not decode: {e}")))?;
    if back != st {
        return Err(runtime("internal error: encoded file does not round-trip"));
    }
    write_atomically(&output, &bytes, args.force)?;

    let what = match &st.info.files {
        None => "1 file".to_owned(),
        Some(f) => format!("{} files", f.len()),
    };
    println!(
        "created {}: swarm id {}, {what}, {} in {count} fragment{} of {}, {} tracker{}{}",
        output.display(),
        hex(&swarm_id),
        format_size(total),
        if count == 1 { "" } else { "s" },
        format_size(u64::from(fragment_length)),
        st.trackers.len(),
        if st.trackers.len() == 1 { "" } else { "s" },
        if args.private { ", private" } else { "" },
    );
    Ok(())
}

/// The advisory name: PATH's last component (resolved for `.` and the like), checked.
fn share_name(path: &Path) -> CliResult<String> {
    let canonical;
    let last = match path.file_name() {
        Some(n)
            if path
                .components()
                .next_back()
                .is_some_and(|c| matches!(c, std::path::Component::Normal(_))) =>
        {
            n
        }
        _ => {
            canonical = fs::canonicalize(path)
                .with_context(|| format!("cannot read {}", path.display()))
                .map_err(CliError::Invalid)?;
            canonical.file_name().ok_or_else(|| {
                invalid(format!(
                    "{}: cannot share the root directory",
                    path.display()
                ))
            })?
        }
    };
    component_of(last, path)
}

fn component_of(name: &OsStr, full: &Path) -> CliResult<String> {
    check_component(name.as_bytes())
        .map(str::to_owned)
        .map_err(|why| {
            invalid(format!(
                "{}: the name {:?} {why}; it cannot be shared under that name",
                full.display(),
                name
            ))
        })
}

/// Walks a directory depth first, entries sorted by name bytes: the canonical order of spec
/// §4.3. Symlinks and special files are skipped with a warning, never followed.
fn walk(dir: &Path, prefix: &mut Vec<String>, out: &mut Vec<Found>) -> CliResult<()> {
    let read = fs::read_dir(dir)
        .with_context(|| format!("cannot read directory {}", dir.display()))
        .map_err(CliError::Invalid)?;
    let mut entries = Vec::new();
    for entry in read {
        let entry = entry
            .with_context(|| format!("cannot read directory {}", dir.display()))
            .map_err(CliError::Invalid)?;
        entries.push(entry);
    }
    entries.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    for entry in entries {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path)
            .with_context(|| format!("cannot read {}", path.display()))
            .map_err(CliError::Invalid)?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            warn!(
                "skipping symlink {} (links are not followed)",
                path.display()
            );
            continue;
        }
        if !ft.is_dir() && !ft.is_file() {
            warn!("skipping {}: not a regular file", path.display());
            continue;
        }
        let name = component_of(&entry.file_name(), &path)?;
        prefix.push(name);
        if prefix.len() > MAX_PATH_DEPTH {
            return Err(invalid(format!(
                "{}: nested deeper than {MAX_PATH_DEPTH} directories",
                path.display()
            )));
        }
        if ft.is_dir() {
            walk(&path, prefix, out)?;
        } else {
            if out.len() >= MAX_FILES as usize {
                return Err(invalid(format!(
                    "{}: more than {MAX_FILES} files",
                    dir.display()
                )));
            }
            out.push(Found {
                components: prefix.clone(),
                path,
                length: meta.len(),
            });
        }
        prefix.pop();
    }
    Ok(())
}

/// Writes `bytes` to a temporary file beside `out`, fsyncs it, and moves it into place:
/// with a hard link when `out` must not be overwritten (fails if it appeared meanwhile),
/// with a rename otherwise. A crash never leaves a half-written `out`.
fn write_atomically(out: &Path, bytes: &[u8], force: bool) -> CliResult<()> {
    let shown = out.display();
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        out.file_name().map_or("st".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if force {
            fs::rename(&tmp, out)?;
        } else {
            fs::hard_link(&tmp, out)?;
            fs::remove_file(&tmp)?;
        }
        fs::File::open(&dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            return Err(runtime(format!(
                "{shown}: already exists (use --force to overwrite)"
            )));
        }
        return Err(runtime(format!("cannot write {shown}: {e}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_fragment_lengths() {
        assert_eq!(default_fragment_length(1), 64 << 10);
        assert_eq!(default_fragment_length(128 << 20), 64 << 10);
        assert_eq!(default_fragment_length((128 << 20) + 1), 128 << 10);
        assert_eq!(default_fragment_length(1 << 30), 512 << 10);
        assert_eq!(default_fragment_length(1 << 40), 16 << 20);
        for total in [1u64, 1000, 1 << 20, 5 << 30, 100 << 30, 1 << 44] {
            let f = default_fragment_length(total);
            assert!(f.is_power_of_two());
            assert!((64 << 10..=16 << 20).contains(&f));
            assert!(fragment_count(total, f) <= TARGET_FRAGMENTS || f == 16 << 20);
        }
    }
}
