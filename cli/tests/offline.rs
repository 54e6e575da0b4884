//! End-to-end tests of the offline commands, run on the real `st` binary: `create`, `inspect`
//! and `verify` on real files, including hostile inputs and every exit code.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "a test driver outside the product: it waits on child processes with deadlines and speaks to them over its own sockets"
)]

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};

use common::{Scratch, data};

use sha2::{Digest, Sha256};
use st_proto::st_file::StFile;

fn st(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_st"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run st")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert_eq!(code(o), 0, "{}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("one JSON object")
}

/// Asserts a failure: the exit code, and exactly one line on stderr naming `needle`.
fn assert_fails(o: &Output, want: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(code(o), want, "stderr: {err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("st: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    assert!(lines[0].contains(needle), "{needle:?} not in {err}");
    assert!(
        !err.contains('\x1b'),
        "escape codes on a non-terminal: {err:?}"
    );
}

#[test]
fn single_file_create_inspect_verify() {
    let s = Scratch::new("single");
    let bytes = data(200_000, 7);
    fs::write(s.path("blob.bin"), &bytes).unwrap();
    let o = st(
        &[
            "create",
            "blob.bin",
            "--fragment-size",
            "64K",
            "-t",
            "udp://127.0.0.1:6969",
            "-t",
            "udp://[::1]:7000",
            "-t",
            "udp://Tracker.Example.org:80",
        ],
        &s.0,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Default output: NAME.st in the current directory.
    let st_bytes = fs::read(s.path("blob.bin.st")).unwrap();

    // The hashes in the file are the SHA-256 of each 64 KiB slice of the data.
    let file = StFile::decode(&st_bytes).unwrap();
    assert_eq!(file.info.hashes.len(), 4);
    for (i, chunk) in bytes.chunks(65536).enumerate() {
        assert_eq!(file.info.hashes[i], <[u8; 32]>::from(Sha256::digest(chunk)));
    }

    let j = json(&st(&["inspect", "--json", "blob.bin.st"], &s.0));
    assert_eq!(j["name"], "blob.bin");
    assert_eq!(j["length"], 200_000);
    assert_eq!(j["fragment_length"], 65536);
    assert_eq!(j["fragment_count"], 4);
    assert_eq!(j["files"], serde_json::Value::Null);
    assert_eq!(
        j["trackers"],
        serde_json::json!([
            "udp://127.0.0.1:6969",
            "udp://[::1]:7000",
            "udp://tracker.example.org:80"
        ])
    );
    assert_eq!(j["swarm_id"].as_str().unwrap().len(), 64);

    let text = st(&["inspect", "blob.bin.st"], &s.0);
    let out = String::from_utf8(text.stdout).unwrap();
    assert!(out.contains(j["swarm_id"].as_str().unwrap()));
    assert!(out.contains("200000 bytes (195.31 KiB)"), "{out}");

    let ok = st(&["verify", "blob.bin.st", "blob.bin"], &s.0);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    // PATH may be the directory holding the file under its name.
    assert_eq!(code(&st(&["verify", "blob.bin.st", "."], &s.0)), 0);

    // One flipped byte in fragment 2: exit 1, naming the fragment.
    let mut bad = bytes.clone();
    bad[2 * 65536 + 5] ^= 1;
    fs::write(s.path("blob.bin"), &bad).unwrap();
    let o = st(&["verify", "blob.bin.st", "blob.bin"], &s.0);
    assert_fails(&o, 1, "1 of 4 fragments do not verify (1 wrong): 2 (wrong)");

    // Cut short inside fragment 1: fragments 1..3 fail (1 short, 2 and 3 short too).
    fs::write(s.path("blob.bin"), &bytes[..100_000]).unwrap();
    let o = st(&["verify", "blob.bin.st", "blob.bin"], &s.0);
    assert_fails(
        &o,
        1,
        "3 of 4 fragments do not verify (3 short): 1 (short), 2 (short)",
    );

    // A missing PATH is a usage error.
    let o = st(&["verify", "blob.bin.st", "nope.bin"], &s.0);
    assert_fails(&o, 2, "cannot read nope.bin");
}

#[test]
fn directory_create_inspect_verify() {
    let s = Scratch::new("dir");
    let root = s.path("tree");
    fs::create_dir_all(root.join("b/deep")).unwrap();
    fs::create_dir_all(root.join("a")).unwrap();
    let files: [(&str, usize); 5] = [
        ("z.bin", 70_000),
        ("a/one.bin", 20_000),
        ("b/deep/two.bin", 50_000),
        ("b/empty", 0),
        ("B-upper", 3),
    ];
    for (i, (rel, len)) in files.iter().enumerate() {
        fs::write(root.join(rel), data(*len, i as u64 + 1)).unwrap();
    }
    symlink(root.join("z.bin"), root.join("link-to-z")).unwrap();
    let o = st(&["create", "tree", "--fragment-size", "16K"], &s.0);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("skipping symlink"), "{}", stderr(&o));

    let j = json(&st(&["inspect", "--json", "tree.st"], &s.0));
    let paths: Vec<&str> = j["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    // Sorted bytewise, depth first; the symlink is not there.
    assert_eq!(
        paths,
        ["B-upper", "a/one.bin", "b/deep/two.bin", "b/empty", "z.bin"]
    );
    assert_eq!(j["length"], 140_003);
    assert_eq!(j["kind"], "directory");

    // The fragments are cut from the files laid end to end in that order.
    let mut all = Vec::new();
    for p in &paths {
        all.extend(fs::read(root.join(p)).unwrap());
    }
    let file = StFile::decode(&fs::read(s.path("tree.st")).unwrap()).unwrap();
    let want: Vec<[u8; 32]> = all
        .chunks(16384)
        .map(|c| Sha256::digest(c).into())
        .collect();
    assert_eq!(file.info.hashes, want);

    assert_eq!(code(&st(&["verify", "tree.st", "tree"], &s.0)), 0);
    fs::remove_file(root.join("a/one.bin")).unwrap();
    let o = st(&["verify", "tree.st", "tree"], &s.0);
    assert_fails(&o, 1, "missing");
    assert!(stderr(&o).contains("a/one.bin"), "{}", stderr(&o));
}

#[test]
fn swarm_id_does_not_depend_on_trackers() {
    let s = Scratch::new("swarmid");
    fs::write(s.path("f"), data(100_000, 3)).unwrap();
    let id = |args: &[&str]| {
        let mut a = vec!["create", "f", "-o", "out.st", "--force"];
        a.extend_from_slice(args);
        assert_eq!(code(&st(&a, &s.0)), 0);
        json(&st(&["inspect", "--json", "out.st"], &s.0))["swarm_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let none = id(&[]);
    let one = id(&["-t", "udp://10.0.0.1:1"]);
    let two = id(&["-t", "udp://a.example:2", "-t", "udp://[2001:db8::1]:3"]);
    assert_eq!(none, one);
    assert_eq!(one, two);
    // Other data or another fragment length: another swarm.
    assert_ne!(none, id(&["--fragment-size", "16K"]));
    fs::write(s.path("f"), data(100_000, 4)).unwrap();
    assert_ne!(none, id(&[]));
}

#[test]
fn existing_output_needs_force() {
    let s = Scratch::new("force");
    fs::write(s.path("f"), b"some data").unwrap();
    assert_eq!(code(&st(&["create", "f"], &s.0)), 0);
    fs::write(s.path("f.st"), b"precious").unwrap();
    let o = st(&["create", "f"], &s.0);
    assert_fails(&o, 1, "already exists (use --force");
    assert_eq!(fs::read(s.path("f.st")).unwrap(), b"precious");
    assert_eq!(code(&st(&["create", "f", "--force"], &s.0)), 0);
    assert!(StFile::decode(&fs::read(s.path("f.st")).unwrap()).is_ok());
    // No temporary files left beside it.
    let names: Vec<_> = fs::read_dir(&s.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn usage_errors_exit_2() {
    let s = Scratch::new("usage");
    fs::write(s.path("f"), b"x").unwrap();
    fs::write(s.path("empty"), b"").unwrap();
    for (args, needle) in [
        (&["create", "f", "-t", "http://a.org:1"][..], "only udp://"),
        (&["create", "f", "-t", "udp://a.org"], "missing :PORT"),
        (&["create", "f", "-t", "udp://::1:80"], "host"),
        (&["create", "f", "-t", "udp://bad_host:80"], "host"),
        (&["create", "f", "-t", "udp://a.org:99999"], "port"),
        (&["create", "f", "--fragment-size", "100K"], "power of two"),
        (&["create", "f", "--fragment-size", "8K"], "power of two"),
        (&["create", "f", "--fragment-size", "lots"], "not a size"),
        (&["frobnicate"], "unrecognized subcommand"),
        (
            &["fetch"],
            "required arguments were not provided: <FILE.st>... (see 'st fetch --help')",
        ),
        (
            &["fetch", "--bogus", "x.st"],
            "unexpected argument '--bogus' found",
        ),
        (
            &["fetch", "--max-upload", "10Q", "x.st"],
            "(see 'st fetch --help')",
        ),
        (
            &["udp-tracker", "--port", "x"],
            "invalid value 'x' for '--port <PORT>'",
        ),
    ] {
        let o = st(args, &s.0);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        // One line, as the README promises (clap's own errors take five).
        assert_eq!(stderr(&o).lines().count(), 1, "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).starts_with("st: error: "),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    assert_fails(&st(&["create", "nope"], &s.0), 2, "cannot read nope");
    assert_fails(&st(&["create", "empty"], &s.0), 2, "nothing to share");
    assert_fails(&st(&["inspect", "nope.st"], &s.0), 2, "cannot read nope.st");
    assert_fails(
        &st(&["verify", "nope.st", "f"], &s.0),
        2,
        "cannot read nope.st",
    );
}

#[test]
fn hostile_st_files_are_rejected_with_one_line() {
    let s = Scratch::new("hostile");
    fs::write(s.path("f"), data(40_000, 9)).unwrap();
    assert_eq!(
        code(&st(
            &[
                "create",
                "f",
                "--fragment-size",
                "16K",
                "-t",
                "udp://1.2.3.4:5"
            ],
            &s.0
        )),
        0
    );
    let good = fs::read(s.path("f.st")).unwrap();
    // Layout of this file: header 12, kind 1, name 1+1, lengths 16, hashes 3×32, trackers.
    let name_at = 13;
    let hashes_at = 12 + 1 + 2 + 16;
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("magic", b"d8:announce4:spam".to_vec(), "bad magic"),
        ("empty", vec![], "truncated at byte 0 in the header"),
        (
            "truncated",
            good[..hashes_at + 40].to_vec(),
            "truncated at byte 31 in the fragment hashes",
        ),
        ("trailing", [&good[..], b"!"].concat(), "trailing byte"),
    ];
    let mut version = good.clone();
    version[9] = 9;
    cases.push(("version", version, "unsupported format version 9"));
    let mut name = good.clone();
    name[name_at + 1] = b'/';
    cases.push(("slash", name, "the name contains '/'"));
    let mut count = good.clone();
    count[hashes_at - 1] = 4;
    cases.push((
        "count",
        count,
        "fragment count 4 does not match the length (expected 3)",
    ));
    let mut flen = good.clone();
    flen[hashes_at - 6] = 0x50; // 16 KiB -> 20 KiB + …
    cases.push(("fraglen", flen, "fragment length"));
    let mut port = good.clone();
    let n = port.len();
    port[n - 2..].copy_from_slice(&[0, 0]);
    cases.push(("port", port, "tracker 1 has port 0"));
    // A (sparse) 300 MiB file is refused from its size, before anything is read.
    let huge = fs::File::create(s.path("huge.st")).unwrap();
    huge.set_len(300 << 20).unwrap();
    assert_fails(&st(&["inspect", "huge.st"], &s.0), 2, "larger than 256 MiB");
    for (tag, bytes, needle) in cases {
        let path = s.path(&format!("{tag}.st"));
        fs::write(&path, &bytes).unwrap();
        for cmd in [
            &["inspect", path.to_str().unwrap()][..],
            &["verify", path.to_str().unwrap(), "f"],
        ] {
            let o = st(cmd, &s.0);
            assert_fails(&o, 2, needle);
            assert!(
                stderr(&o).contains(&format!("{tag}.st")),
                "{tag}: names the file"
            );
        }
    }
}

#[test]
fn unsafe_names_on_disk_are_refused() {
    let s = Scratch::new("names");
    let root = s.path("d");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("ok"), b"1").unwrap();
    fs::write(root.join("bad\nname"), b"2").unwrap();
    let o = st(&["create", "d"], &s.0);
    assert_fails(&o, 2, "contains control character 0x0a");
}

#[test]
fn log_file_and_quiet() {
    let s = Scratch::new("log");
    fs::write(s.path("f"), b"hello").unwrap();
    let o = st(&["-q", "create", "f", "--log-file", "st.log"], &s.0);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).is_empty(),
        "-q prints nothing on stderr: {}",
        stderr(&o)
    );
    let log = fs::read_to_string(s.path("st.log")).unwrap();
    assert!(
        log.contains("hashing f"),
        "debug lines go to the log file: {log}"
    );
}

#[test]
fn a_private_swarm_needs_a_tracker_and_is_another_swarm() {
    let s = Scratch::new("private");
    fs::write(s.path("d.bin"), data(100_000, 3)).unwrap();
    let o = st(&["create", "d.bin", "--private", "-o", "p.st"], &s.0);
    assert_fails(&o, 2, "--private needs a tracker");
    assert!(!s.path("p.st").exists());
    let o = st(
        &[
            "create",
            "d.bin",
            "--private",
            "-t",
            "udp://10.0.0.1:6969",
            "-o",
            "p.st",
        ],
        &s.0,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(", private"));
    assert_eq!(code(&st(&["create", "d.bin", "-o", "pub.st"], &s.0)), 0);
    let private = json(&st(&["inspect", "--json", "p.st"], &s.0));
    let public = json(&st(&["inspect", "--json", "pub.st"], &s.0));
    assert_eq!(private["private"], true);
    assert_eq!(public["private"], false);
    assert_ne!(private["swarm_id"], public["swarm_id"]);
    // The header's flags say so: bit 0.
    let bytes = fs::read(s.path("p.st")).unwrap();
    assert_eq!(&bytes[10..12], &[0, 1]);
    let text = String::from_utf8_lossy(&st(&["inspect", "p.st"], &s.0).stdout).into_owned();
    assert!(text.contains("dht key:    none: private swarm"), "{text}");
    // A private swarm is never looked up in the DHT.
    assert_fails(
        &st(&["dht", "lookup", "p.st", "--dht-bootstrap", "none"], &s.0),
        2,
        "private swarm",
    );
}
