//! `st seed` and `st fetch` as real processes on 127.0.0.1 with `st udp-tracker`: several
//! fetchers end with identical files, and a fetch killed with SIGKILL resumes without
//! downloading again what it had verified and synced, and a fetch that fills its disk stops
//! with one error line, keeps what it verified and continues once there is room; data already
//! under the final name is adopted when it matches and never overwritten without `--force`.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "a test driver outside the product: it waits on child processes with deadlines and speaks to them over its own sockets"
)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Proc, Scratch, data};

fn create(dir: &Path, file: &str, tracker_port: &str) {
    let url = format!("udp://127.0.0.1:{tracker_port}");
    let o = Command::new(env!("CARGO_BIN_EXE_st"))
        .args([
            "-q",
            "create",
            file,
            "-t",
            &url,
            "--fragment-size",
            "64K",
            "-o",
            "data.st",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Bytes the summary line says were downloaded.
fn downloaded(summary: &str) -> u64 {
    let at = summary.find(" bytes) down").expect("summary line");
    let start = summary[..at].rfind('(').unwrap() + 1;
    summary[start..at].parse().unwrap()
}

/// Starts a tracker on 127.0.0.1 and makes `data.st` (in the scratch root) for
/// `DIR/blob.bin`, announcing to it.
fn tracker_and_st(s: &Scratch, dir: &str) -> Proc {
    let tracker = Proc::start(&["udp-tracker", "--port", "0", "--bind", "127.0.0.1"], &s.0);
    create(&s.0.join(dir), "blob.bin", tracker.port());
    std::fs::rename(s.0.join(dir).join("data.st"), s.0.join("data.st")).unwrap();
    tracker
}

/// Starts `st seed data.st PATH` on 127.0.0.1.
fn seed(s: &Scratch, path: &str) -> Proc {
    Proc::start(
        &[
            "-q",
            "seed",
            "--no-dht",
            "data.st",
            path,
            "--bind",
            "127.0.0.1",
        ],
        &s.0,
    )
}

#[test]
fn tracker_seed_and_three_fetchers_end_identical() {
    let s = Scratch::new("three");
    let bytes = data(6 << 20, 11);
    std::fs::create_dir_all(s.0.join("seed")).unwrap();
    std::fs::write(s.0.join("seed/blob.bin"), &bytes).unwrap();
    let _tracker = tracker_and_st(&s, "seed");
    let _seed = seed(&s, "seed/blob.bin");
    let fetchers: Vec<Proc> = (0..3)
        .map(|i| {
            let out = format!("f{i}");
            Proc::start(
                &[
                    "-q",
                    "fetch",
                    "--no-dht",
                    "data.st",
                    "-o",
                    &out,
                    "--bind",
                    "127.0.0.1",
                ],
                &s.0,
            )
        })
        .collect();
    for (i, f) in fetchers.into_iter().enumerate() {
        let (code, out) = f.finish();
        assert_eq!(code, 0, "fetcher {i}: {out}");
        assert!(out.starts_with("fetched"), "{out}");
        let got = std::fs::read(s.0.join(format!("f{i}/blob.bin"))).unwrap();
        assert!(got == bytes, "fetcher {i} has different bytes");
        assert!(!s.0.join(format!("f{i}/blob.bin.part")).exists());
        assert!(!s.0.join(format!("f{i}/.blob.bin.st-resume")).exists());
    }
}

#[test]
fn a_killed_fetch_resumes_without_fetching_synced_data_again() {
    let s = Scratch::new("resume");
    let frag = 64 * 1024;
    let bytes = data(64 * frag, 12);
    std::fs::create_dir_all(s.0.join("full")).unwrap();
    std::fs::create_dir_all(s.0.join("half")).unwrap();
    std::fs::write(s.0.join("full/blob.bin"), &bytes).unwrap();
    // A seed whose copy is right only in its first half: the fetcher can get 32 fragments.
    let mut half = bytes.clone();
    half[32 * frag..].iter_mut().for_each(|b| *b ^= 0xFF);
    std::fs::write(s.0.join("half/blob.bin"), &half).unwrap();
    let _tracker = tracker_and_st(&s, "full");

    let half_seed = seed(&s, "half/blob.bin");
    let mut fetch = Proc::start(
        &[
            "-q",
            "fetch",
            "--no-dht",
            "data.st",
            "-o",
            "out",
            "--bind",
            "127.0.0.1",
        ],
        &s.0,
    );
    // Wait (bounded) until the resume file records data, then kill -9.
    let resume = s.0.join("out/.blob.bin.st-resume");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !resume.exists() {
        assert!(Instant::now() < deadline, "no resume file was written");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(fetch.child.id() as i32, libc::SIGKILL);
    }
    let _ = fetch.child.wait();
    drop(half_seed);
    assert!(
        !s.0.join("out/blob.bin").exists(),
        "never in place before it is complete"
    );

    let _full_seed = seed(&s, "full/blob.bin");
    let again = Proc::start(
        &[
            "-q",
            "fetch",
            "--no-dht",
            "data.st",
            "-o",
            "out",
            "--bind",
            "127.0.0.1",
        ],
        &s.0,
    );
    let (code, out) = again.finish();
    assert_eq!(code, 0, "{out}");
    assert!(std::fs::read(s.0.join("out/blob.bin")).unwrap() == bytes);
    let fetched = downloaded(&out);
    assert!(
        fetched <= 32 * frag as u64,
        "the restart fetched {fetched} bytes; at most the 32 fragments the first run lacked"
    );
    assert!(fetched > 0);
}

/// A tmpfs mounted on a directory for the test's lifetime (unmounted on drop).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (a `mount -o size=` value) on `dir`; `None` where mounting is
    /// not permitted (not root, no CAP_SYS_ADMIN).
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        if !o.status.success() {
            eprintln!(
                "cannot mount a tmpfs ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The fragments a resume file records (`spec/peer.md` §8: bitmap after 41 header bytes).
fn recorded(resume: &[u8], n: usize) -> Vec<usize> {
    assert_eq!(resume.len(), 41 + n.div_ceil(8) + 32, "resume file size");
    assert_eq!(&resume[..4], b"STRS");
    (0..n)
        .filter(|&i| resume[41 + i / 8] & (0x80 >> (i % 8)) != 0)
        .collect()
}

#[test]
fn a_full_disk_stops_the_fetch_with_one_error_and_a_rerun_continues() {
    let s = Scratch::new("diskfull");
    let frag = 64 * 1024;
    let n = 64;
    let bytes = data(n * frag, 13);
    std::fs::create_dir_all(s.0.join("seed")).unwrap();
    std::fs::write(s.0.join("seed/blob.bin"), &bytes).unwrap();
    // 4 MiB of data into 2 MiB of room: roughly half fits.
    let Some(disk) = Tmpfs::mount(&s.0.join("out"), "2m") else {
        eprintln!("SKIPPED: the disk-full test needs root to mount a tmpfs");
        return;
    };
    let _tracker = tracker_and_st(&s, "seed");
    let _seed = seed(&s, "seed/blob.bin");
    let fetch_args = [
        "-q",
        "fetch",
        "--no-dht",
        "data.st",
        "-o",
        "out",
        "--bind",
        "127.0.0.1",
    ];

    let err_path = s.0.join("fetch1.err");
    let err_file = std::fs::File::create(&err_path).unwrap();
    let (code, out) = Proc::start_with(None, &fetch_args, &s.0, err_file.into()).finish();
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert_eq!(
        code, 1,
        "a full disk is a runtime failure; stdout {out:?}, stderr {err:?}"
    );
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("st: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {err:?}");
    assert!(
        errors[0].contains("No space left on device"),
        "the error names the cause: {err:?}"
    );
    assert!(
        err.lines().all(|l| !l.contains("panicked")),
        "no panic: {err:?}"
    );
    assert!(
        !s.0.join("out/blob.bin").exists(),
        "not in place: it is incomplete"
    );
    // The resume file survived the full disk and names verified fragments whose bytes are in
    // the .part file.
    let resume = std::fs::read(s.0.join("out/.blob.bin.st-resume"))
        .expect("the resume file is kept on a full disk");
    let kept = recorded(&resume, n);
    assert!(
        !kept.is_empty(),
        "some fragments were verified before the disk filled"
    );
    assert!(kept.len() < n, "the disk cannot hold them all");
    let part = std::fs::read(s.0.join("out/blob.bin.part")).unwrap();
    assert_eq!(part.len(), bytes.len());
    for &i in &kept {
        assert!(
            part[i * frag..(i + 1) * frag] == bytes[i * frag..(i + 1) * frag],
            "recorded fragment {i} is on disk"
        );
    }

    // Room again: the re-run trusts the resume file and fetches only what was not kept.
    disk.resize("16m");
    let err_path = s.0.join("fetch2.err");
    let err_file = std::fs::File::create(&err_path).unwrap();
    let (code, out) = Proc::start_with(None, &fetch_args[1..], &s.0, err_file.into()).finish();
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert_eq!(code, 0, "stdout {out:?}, stderr {err:?}");
    assert!(
        err.contains(&format!("resuming: {} of {n} fragments", kept.len())),
        "the re-run starts from the resume file: {err:?}"
    );
    assert!(std::fs::read(s.0.join("out/blob.bin")).unwrap() == bytes);
    assert!(!s.0.join("out/blob.bin.part").exists());
    assert!(!s.0.join("out/.blob.bin.st-resume").exists());
    assert!(!s.0.join("out/.blob.bin.st-resume.part").exists());
    let fetched = downloaded(&out) as usize;
    assert!(
        fetched <= (n - kept.len()) * frag,
        "the re-run fetched {fetched} bytes; {} fragments were kept, so at most {}",
        kept.len(),
        (n - kept.len()) * frag
    );
    assert!(fetched > 0);
}

/// `st fetch` into a directory that already holds `blob.bin` (spec peer.md §8.1, *Existing
/// data*): the right file is adopted with nothing downloaded and no seed needed; other data
/// is refused with exit 1 and left untouched; `--force` replaces it, downloading only the
/// fragments that differ.
#[test]
fn existing_data_is_adopted_refused_or_replaced_with_force() {
    let s = Scratch::new("existing");
    let bytes = data(3 << 20, 21);
    std::fs::create_dir_all(s.0.join("seed")).unwrap();
    std::fs::create_dir_all(s.0.join("out")).unwrap();
    std::fs::write(s.0.join("seed/blob.bin"), &bytes).unwrap();
    let _tracker = tracker_and_st(&s, "seed");
    let fetch = |extra: &[&str]| {
        let mut args = vec![
            "fetch",
            "--no-dht",
            "--no-lan",
            "data.st",
            "-o",
            "out",
            "--bind",
            "127.0.0.1",
        ];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_st"))
            .args(&args)
            .current_dir(&s.0)
            .output()
            .unwrap()
    };

    // The right bytes, no seed running: adopted at once, exit 0, nothing fetched.
    std::fs::write(s.0.join("out/blob.bin"), &bytes).unwrap();
    let o = fetch(&[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.starts_with("already complete out/blob.bin"), "{out}");
    assert!(!s.0.join("out/blob.bin.part").exists());

    // Other bytes in fragments 16..32 (of 48): refused, one error line, file untouched.
    let mut other = bytes.clone();
    for b in &mut other[(1 << 20)..(2 << 20)] {
        *b ^= 0x5a;
    }
    std::fs::write(s.0.join("out/blob.bin"), &other).unwrap();
    let o = fetch(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("st: error: out/blob.bin already exists")
            && last.contains("32 of 48 fragments match")
            && last.contains("--force"),
        "{err}"
    );
    assert!(std::fs::read(s.0.join("out/blob.bin")).unwrap() == other);
    assert!(!s.0.join("out/blob.bin.part").exists());

    // --force with a seed: only the 16 fragments that differ are downloaded.
    let _seed = seed(&s, "seed/blob.bin");
    let o = fetch(&["--force"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("fetched"))
        .expect("summary");
    assert_eq!(downloaded(line), 1 << 20, "{line}");
    assert!(std::fs::read(s.0.join("out/blob.bin")).unwrap() == bytes);
    assert!(!s.0.join("out/blob.bin.part").exists());
    assert!(!s.0.join("out/.blob.bin.st-resume").exists());

    // A directory in the way is never replaced, even with --force.
    std::fs::remove_file(s.0.join("out/blob.bin")).unwrap();
    std::fs::create_dir(s.0.join("out/blob.bin")).unwrap();
    let o = fetch(&["--force"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("is not a regular file"), "{err}");
}

/// A name of 255 bytes (the most a file name holds) is valid in a `.st` file, and fetching it
/// works: the temporary names are fitted (spec peer.md §8.1, *Long names*).
#[test]
fn a_file_with_a_255_byte_name_is_fetched() {
    let s = Scratch::new("longname");
    // 2-byte characters, so that the cut must respect a character boundary.
    let name: String = "é".repeat(127) + "x";
    assert_eq!(name.len(), 255);
    let bytes = data(300_000, 31);
    std::fs::create_dir_all(s.0.join("seed")).unwrap();
    std::fs::write(s.0.join("seed").join(&name), &bytes).unwrap();
    let tracker = Proc::start(&["udp-tracker", "--port", "0", "--bind", "127.0.0.1"], &s.0);
    create(&s.0.join("seed"), &name, tracker.port());
    std::fs::rename(s.0.join("seed/data.st"), s.0.join("data.st")).unwrap();
    let seed_path = format!("seed/{name}");
    let _seed = seed(&s, &seed_path);
    let o = Command::new(env!("CARGO_BIN_EXE_st"))
        .args([
            "fetch",
            "--no-dht",
            "--no-lan",
            "data.st",
            "-o",
            "out",
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(&s.0)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(std::fs::read(s.0.join("out").join(&name)).unwrap() == bytes);
    let left: Vec<_> = std::fs::read_dir(s.0.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
}
