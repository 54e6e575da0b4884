//! Parallel fragment hashing for the offline commands (`create`, `verify`, and the start-up
//! check of `seed`).
//!
//! Every worker thread claims the next two fragments from a shared counter, reads them with
//! positioned reads (`pread`) in cache-sized chunks and feeds them to SHA-256, so memory is a
//! constant `threads × 2 × CHUNK` whatever the input size, and both cores hash. A thread
//! hashes its two fragments side by side (`st_proto::sha256`: with the CPU's SHA extensions,
//! two messages interleaved take about the time of one). Results are sent to the calling
//! thread, which owns progress reporting and bookkeeping. This module may use threads: it is
//! never called from the network reactor.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;

use st_proto::sha256::Sha256;
use st_proto::st_file::{FileMap, Hash};

/// Bytes read per `pread`. Small enough that the chunk is still in the L1/L2 cache when
/// SHA-256 reads it, large enough that the syscall cost is negligible. Measured with
/// `bench/create.sh` on the 2-core EPYC VM: 64–128 KiB take 0.42 s per GiB, 256 KiB–1 MiB
/// 0.58 s (the copy out of the page cache then misses the cache).
const CHUNK: usize = 64 * 1024;

/// What reading one fragment gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The fragment was read in full; its SHA-256.
    Hash(Hash),
    /// A file holding part of the fragment ended early.
    Short,
    /// A file holding part of the fragment does not exist.
    Missing,
}

/// The data to hash: files laid end to end and cut into fragments.
pub struct Job<'a> {
    /// Path of each file, in file-list order.
    pub files: &'a [PathBuf],
    /// Where each file's bytes lie in the concatenation.
    pub map: &'a FileMap,
    /// Fragment length in bytes.
    pub fragment_length: u32,
    /// Total length of the data.
    pub total_length: u64,
}

/// An IO error other than a missing file or a short read, with the file it happened on.
#[derive(Debug)]
pub struct HashError {
    /// The file.
    pub path: PathBuf,
    /// The error.
    pub error: io::Error,
}

impl Job<'_> {
    fn fragment_count(&self) -> u32 {
        st_proto::st_file::Geometry::new(self.total_length, self.fragment_length)
            .map_or(0, |g| g.count())
    }

    /// Hashes every fragment on `threads` worker threads and calls `sink(index, len, outcome)`
    /// on the calling thread as results arrive (in no particular order). Stops early, with
    /// the error, on an IO error other than "not found" or a short read.
    pub fn run(
        &self,
        threads: usize,
        mut sink: impl FnMut(u32, u32, Outcome),
    ) -> Result<(), HashError> {
        let count = self.fragment_count();
        let threads = threads.clamp(1, count.max(1) as usize);
        let next = AtomicU32::new(0);
        let stop = AtomicBool::new(false);
        let (tx, rx) = mpsc::sync_channel::<Result<(u32, u32, Outcome), HashError>>(threads * 8);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                let tx = tx.clone();
                let (next, stop) = (&next, &stop);
                scope.spawn(move || {
                    let mut worker = Worker::new(self);
                    // Two fragments at a time, hashed side by side (`st_proto::sha256`).
                    while !stop.load(Ordering::Relaxed) {
                        let index = next.fetch_add(2, Ordering::Relaxed);
                        if index >= count {
                            break;
                        }
                        let second = (index + 1 < count).then_some(index + 1);
                        let results = worker.fragments(index, second);
                        let mut failed = false;
                        for result in results.into_iter().flatten() {
                            failed |= result.is_err();
                            if tx.send(result).is_err() {
                                failed = true;
                            }
                        }
                        if failed {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            let mut first_error = None;
            for result in rx {
                match result {
                    Ok((index, len, outcome)) => sink(index, len, outcome),
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        first_error.get_or_insert(e);
                    }
                }
            }
            first_error.map_or(Ok(()), Err)
        })
    }
}

/// One thread's state: a read buffer and an open file for each of the two fragments it hashes
/// at a time.
struct Worker<'j, 'a> {
    job: &'j Job<'a>,
    bufs: [Vec<u8>; 2],
    open: [Option<(usize, Option<File>)>; 2],
}

/// One fragment being read and hashed.
struct Reading {
    index: u32,
    len: u64,
    spans: Vec<st_proto::st_file::Span>,
    /// The span being read, and how far into it.
    span: usize,
    at: u64,
    hasher: Sha256,
    /// Set once the fragment ended early (a missing file or a short read).
    ended: Option<Outcome>,
}

impl<'j, 'a> Worker<'j, 'a> {
    fn new(job: &'j Job<'a>) -> Self {
        let len = CHUNK.min(job.fragment_length as usize);
        Worker {
            job,
            bufs: [vec![0; len], vec![0; len]],
            open: [None, None],
        }
    }

    fn reading(&self, index: u32) -> Reading {
        let job = self.job;
        let start = u64::from(index) * u64::from(job.fragment_length);
        let len = (job.total_length - start).min(u64::from(job.fragment_length));
        Reading {
            index,
            len,
            spans: job.map.spans(start, len),
            span: 0,
            at: 0,
            hasher: Sha256::new(),
            ended: None,
        }
    }

    /// Hashes fragment `a` and, if given, fragment `b`, a chunk of each at a time through
    /// [`Sha256::update_pair`]: on CPUs with the SHA extensions, two for about the time of one.
    fn fragments(&mut self, a: u32, b: Option<u32>) -> [Option<FragmentResult>; 2] {
        let mut r = [Some(self.reading(a)), b.map(|b| self.reading(b))];
        let job = self.job;
        loop {
            let [buf_a, buf_b] = &mut self.bufs;
            let [open_a, open_b] = &mut self.open;
            let na = match r[0].as_mut().map(|x| read_chunk(job, x, open_a, buf_a)) {
                Some(Err(e)) => return [Some(Err(e)), None],
                Some(Ok(n)) => n,
                None => 0,
            };
            let nb = match r[1].as_mut().map(|x| read_chunk(job, x, open_b, buf_b)) {
                Some(Err(e)) => return [Some(Err(e)), None],
                Some(Ok(n)) => n,
                None => 0,
            };
            if na == 0 && nb == 0 {
                break;
            }
            match &mut r {
                [Some(x), Some(y)] => {
                    Sha256::update_pair(&mut x.hasher, &buf_a[..na], &mut y.hasher, &buf_b[..nb]);
                }
                [Some(x), None] => x.hasher.update(&buf_a[..na]),
                _ => {}
            }
        }
        r.map(|x| {
            x.map(|x| {
                let outcome = x
                    .ended
                    .unwrap_or_else(|| Outcome::Hash(x.hasher.finalize()));
                Ok((x.index, x.len as u32, outcome))
            })
        })
    }
}

/// What hashing one fragment gave, or the IO error that stops the run.
type FragmentResult = Result<(u32, u32, Outcome), HashError>;

/// Reads the next chunk of `r` into `buf` (through `open`, the file cache of `r`'s side);
/// returns its length, 0 once the fragment is read or ended early (`r.ended`).
fn read_chunk(
    job: &Job<'_>,
    r: &mut Reading,
    open: &mut Option<(usize, Option<File>)>,
    buf: &mut [u8],
) -> Result<usize, HashError> {
    while r.ended.is_none() {
        let Some(span) = r.spans.get(r.span) else {
            return Ok(0);
        };
        if r.at == span.len {
            r.span += 1;
            r.at = 0;
            continue;
        }
        let Some(file) = open_cached(open, job.files, span.file)? else {
            r.ended = Some(Outcome::Missing);
            break;
        };
        let n = (span.len - r.at).min(buf.len() as u64) as usize;
        match read_full_at(file, &mut buf[..n], span.offset + r.at) {
            Ok(true) => {
                r.at += n as u64;
                return Ok(n);
            }
            Ok(false) => r.ended = Some(Outcome::Short),
            Err(error) => {
                return Err(HashError {
                    path: job.files[span.file].clone(),
                    error,
                });
            }
        }
    }
    Ok(0)
}

/// The open handle of file `index` (cached in `open`), or `None` if it does not exist.
fn open_cached<'o>(
    open: &'o mut Option<(usize, Option<File>)>,
    files: &[PathBuf],
    index: usize,
) -> Result<Option<&'o File>, HashError> {
    if open.as_ref().map(|(i, _)| *i) != Some(index) {
        let path = &files[index];
        let file = match File::open(path) {
            Ok(f) => {
                advise_sequential(&f);
                Some(f)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(error) => {
                return Err(HashError {
                    path: path.clone(),
                    error,
                });
            }
        };
        *open = Some((index, file));
    }
    Ok(open.as_ref().and_then(|(_, f)| f.as_ref()))
}

/// Reads exactly `buf.len()` bytes at `offset`; `Ok(false)` if the file ends first.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<bool> {
    match file.read_exact_at(buf, offset) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Tells the kernel we read front to back, so it reads ahead generously.
fn advise_sequential(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads its integer arguments; an error is harmless advice lost.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

/// Hashes the data of `files` (laid end to end with `lengths`) in fragments of
/// `fragment_length`, on every core, with a progress bar labelled `verb` (on a terminal, for
/// large inputs), calling `sink(index, len, outcome)` for each fragment. The one entry point of
/// `create`, `verify` and the start-up check of `seed`.
pub fn hash_all(
    ctx: crate::common::Ctx,
    files: &[PathBuf],
    lengths: &[u64],
    fragment_length: u32,
    verb: &str,
    mut sink: impl FnMut(u32, u32, Outcome),
) -> Result<(), HashError> {
    let map = FileMap::new(lengths);
    let total_length = lengths.iter().sum();
    let job = Job {
        files,
        map: &map,
        fragment_length,
        total_length,
    };
    let progress = crate::common::Progress::bytes(ctx, total_length, verb);
    let result = job.run(default_threads(), |i, len, outcome| {
        progress.inc(u64::from(len));
        sink(i, len, outcome);
    });
    progress.finish();
    result
}

impl HashError {
    /// The one-line message: "cannot read PATH: CAUSE".
    pub fn message(&self) -> String {
        format!("cannot read {}: {}", self.path.display(), self.error)
    }
}

/// Number of hashing threads: one per core, or `ST_HASH_THREADS` when set (for benchmarks).
pub fn default_threads() -> usize {
    std::env::var("ST_HASH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// Joins a relative path of components onto a base directory.
pub fn join_components(base: &Path, components: &[String]) -> PathBuf {
    let mut p = base.to_path_buf();
    for c in components {
        p.push(c);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    /// Fragments hashed two at a time, across files, give each fragment's own SHA-256, and a
    /// fragment whose file is missing or short says so without spoiling the one beside it.
    #[test]
    fn fragments_hashed_in_pairs_across_files_match_their_own_hashes() {
        let dir = std::env::temp_dir().join(format!("st-hashing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bytes = |n: usize, k: u8| -> Vec<u8> {
            (0..n)
                .map(|i| (i as u8).wrapping_mul(k).wrapping_add(k))
                .collect()
        };
        // Three files laid end to end: 150 000, 0 and 90 001 bytes, in fragments of 64 KiB
        // (so fragments cross files, and the last is short).
        let contents = [bytes(150_000, 3), Vec::new(), bytes(90_001, 7)];
        let files: Vec<PathBuf> = (0..3).map(|i| dir.join(format!("f{i}"))).collect();
        for (p, c) in files.iter().zip(&contents) {
            std::fs::write(p, c).unwrap();
        }
        let lengths: Vec<u64> = contents.iter().map(|c| c.len() as u64).collect();
        let all = contents.concat();
        let map = FileMap::new(&lengths);
        let job = Job {
            files: &files,
            map: &map,
            fragment_length: 65_536,
            total_length: all.len() as u64,
        };
        let run = |threads| {
            let mut got = std::collections::BTreeMap::new();
            job.run(threads, |i, len, o| {
                got.insert(i, (len, o));
            })
            .unwrap();
            got
        };
        let want: Vec<(u32, Outcome)> = all
            .chunks(65_536)
            .map(|c| {
                (
                    c.len() as u32,
                    Outcome::Hash(sha2::Sha256::digest(c).into()),
                )
            })
            .collect();
        for threads in [1, 2] {
            let got = run(threads);
            assert_eq!(
                got.values().copied().collect::<Vec<_>>(),
                want,
                "{threads} threads"
            );
        }
        // The last file loses a byte (short), then the first goes missing.
        std::fs::write(&files[2], &contents[2][..90_000]).unwrap();
        let got = run(1);
        assert_eq!(got[&3].1, Outcome::Short);
        assert_eq!(
            got[&0], want[0],
            "fragment 0 is paired with 1 and untouched"
        );
        assert_eq!(got[&2], want[2], "fragment 2 is paired with the short 3");
        std::fs::remove_file(&files[0]).unwrap();
        let got = run(1);
        assert_eq!(got[&0].1, Outcome::Missing);
        assert_eq!(
            got[&1].1,
            Outcome::Missing,
            "fragment 1 starts in the first file"
        );
        assert_eq!(
            got[&2].1,
            Outcome::Missing,
            "fragment 2 starts in the first file too"
        );
        assert_eq!(got[&3].1, Outcome::Short);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
