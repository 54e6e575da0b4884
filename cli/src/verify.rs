//! `st verify`: check data on disk against a `.st` file, fragment by fragment.

use std::fs;
use std::path::{Path, PathBuf};

use log::warn;

use crate::common::{Ctx, data_paths, load_st};
use crate::error::{CliResult, runtime};
use crate::hashing::{self, Outcome};
use crate::units::format_size;

/// How one fragment failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Bad {
    Wrong,
    Short,
    Missing,
}

/// How many bad fragments are named in the one-line summary.
const NAMED: usize = 10;

/// Runs `st verify`: `Ok(())` when every fragment matches, a runtime error (exit 1) otherwise.
pub fn run(ctx: Ctx, st_path: &Path, data: &Path) -> CliResult<()> {
    let (st, _) = load_st(st_path)?;
    // PATH itself must exist: a typo is a usage error, not "every fragment missing".
    fs::metadata(data)
        .map_err(|e| crate::error::invalid(format!("cannot read {}: {e}", data.display())))?;
    let info = &st.info;
    let paths = data_paths(&st, data);
    let lengths = info.file_lengths();

    // Files that are absent, or longer than the .st says (extra bytes are not covered by any
    // fragment, so the hashes alone would not notice them).
    let mut missing_files = Vec::new();
    let mut long_files = Vec::new();
    for (p, &want) in paths.iter().zip(&lengths) {
        match fs::metadata(p) {
            Ok(m) if m.is_file() && m.len() > want => long_files.push(p.clone()),
            Ok(m) if !m.is_file() => missing_files.push(p.clone()),
            Ok(_) => {}
            Err(_) => missing_files.push(p.clone()),
        }
    }
    for p in &missing_files {
        warn!("{}: missing", p.display());
    }
    for p in &long_files {
        warn!("{}: longer than the .st file says", p.display());
    }

    let mut bad: Vec<(u32, Bad)> = Vec::new();
    hashing::hash_all(
        ctx,
        &paths,
        &lengths,
        info.fragment_length,
        "verifying",
        |index, _, outcome| {
            let verdict = match outcome {
                Outcome::Hash(h) if h == info.hashes[index as usize] => None,
                Outcome::Hash(_) => Some(Bad::Wrong),
                Outcome::Short => Some(Bad::Short),
                Outcome::Missing => Some(Bad::Missing),
            };
            if let Some(v) = verdict {
                bad.push((index, v));
            }
        },
    )
    .map_err(|e| crate::error::invalid(e.message()))?;
    bad.sort_unstable();

    let count = info.fragment_count();
    if bad.is_empty() && long_files.is_empty() {
        println!(
            "OK: {} matches {}: all {count} fragments verified ({})",
            data.display(),
            st_path.display(),
            format_size(info.total_length)
        );
        return Ok(());
    }
    for (index, why) in &bad {
        log::debug!("fragment {index}: {}", label(*why));
    }
    Err(runtime(summary(
        data,
        count,
        &bad,
        &missing_files,
        &long_files,
    )))
}

fn label(b: Bad) -> &'static str {
    match b {
        Bad::Wrong => "wrong",
        Bad::Short => "short",
        Bad::Missing => "missing",
    }
}

/// The one-line failure summary: how many fragments failed, how, and which.
fn summary(
    data: &Path,
    count: u32,
    bad: &[(u32, Bad)],
    missing_files: &[PathBuf],
    long_files: &[PathBuf],
) -> String {
    let mut parts = Vec::new();
    if !bad.is_empty() {
        let n = |k| bad.iter().filter(|(_, b)| *b == k).count();
        let kinds: Vec<String> = [Bad::Wrong, Bad::Short, Bad::Missing]
            .into_iter()
            .filter(|&k| n(k) > 0)
            .map(|k| format!("{} {}", n(k), label(k)))
            .collect();
        let mut named: Vec<String> = bad
            .iter()
            .take(NAMED)
            .map(|(i, b)| format!("{i} ({})", label(*b)))
            .collect();
        if bad.len() > NAMED {
            named.push(format!("and {} more", bad.len() - NAMED));
        }
        parts.push(format!(
            "{} of {count} fragments do not verify ({}): {}",
            bad.len(),
            kinds.join(", "),
            named.join(", ")
        ));
    }
    if !missing_files.is_empty() {
        parts.push(format!(
            "{} file(s) missing, first {}",
            missing_files.len(),
            missing_files[0].display()
        ));
    }
    if !long_files.is_empty() {
        parts.push(format!(
            "{} file(s) longer than expected, first {}",
            long_files.len(),
            long_files[0].display()
        ));
    }
    format!(
        "verification failed for {}: {}",
        data.display(),
        parts.join("; ")
    )
}
