//! `st inspect`: print what a `.st` file holds, for people or (`--json`) for programs.

use std::path::Path;

use serde_json::json;
use st_proto::st_file::StFile;

use crate::common::{hex, load_st};
use crate::error::CliResult;
use crate::units::format_size;

/// Runs `st inspect`.
pub fn run(path: &Path, as_json: bool) -> CliResult<()> {
    let (st, swarm_id) = load_st(path)?;
    if as_json {
        println!("{}", to_json(&st, &hex(&swarm_id)));
        return Ok(());
    }
    let info = &st.info;
    let kind = match &info.files {
        None => "file".to_owned(),
        Some(f) => format!("directory, {} file(s)", f.len()),
    };
    println!("swarm id:   {}", hex(&swarm_id));
    println!("name:       {} ({kind})", info.name);
    println!(
        "length:     {} bytes ({})",
        info.total_length,
        format_size(info.total_length)
    );
    println!(
        "fragments:  {} of {} ({} bytes)",
        info.fragment_count(),
        format_size(u64::from(info.fragment_length)),
        info.fragment_length
    );
    println!(
        "dht key:    {}",
        if info.private {
            "none: private swarm (trackers and peer exchange only)".to_owned()
        } else {
            hex(&swarm_id[..20])
        }
    );
    if st.trackers.is_empty() {
        println!("trackers:   none (LAN discovery and the DHT)");
    }
    for (i, t) in st.trackers.iter().enumerate() {
        println!(
            "{}{t}",
            if i == 0 {
                "trackers:   "
            } else {
                "            "
            }
        );
    }
    if let Some(files) = &info.files {
        println!("files:");
        let width = files
            .iter()
            .map(|f| f.length.to_string().len())
            .max()
            .unwrap_or(1);
        for f in files {
            println!("  {:>width$}  {}", f.length, f.path.join("/"));
        }
    }
    Ok(())
}

/// The JSON object printed by `--json`: the same facts, lengths as plain integers.
fn to_json(st: &StFile, swarm_id: &str) -> serde_json::Value {
    let info = &st.info;
    let files = info.files.as_ref().map(|files| {
        files
            .iter()
            .map(|f| json!({ "path": f.path.join("/"), "components": f.path, "length": f.length }))
            .collect::<Vec<_>>()
    });
    json!({
        "swarm_id": swarm_id,
        "name": info.name,
        "kind": if info.files.is_some() { "directory" } else { "file" },
        "length": info.total_length,
        "fragment_length": info.fragment_length,
        "fragment_count": info.fragment_count(),
        "trackers": st.trackers.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "private": info.private,
        "files": files,
    })
}
