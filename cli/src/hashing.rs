//! Parallel fragment hashing for the offline commands (`create`, `verify`, and the start-up
//! check of `seed`).
//!
//! Every worker thread claims the next fragment from a shared counter, reads it with
//! positioned reads (`pread`) in cache-sized chunks and feeds them to SHA-256, so memory is a
//! constant `threads × CHUNK` whatever the input size, and both cores hash. The `sha2` crate
//! picks the SHA-NI instructions at run time when the CPU has them. Results are sent to the
//! calling thread, which owns progress reporting and bookkeeping. This module may use threads:
//! it is never called from the network reactor.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;

use sha2::{Digest, Sha256};
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
                    while !stop.load(Ordering::Relaxed) {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= count {
                            break;
                        }
                        let result = worker.fragment(index);
                        let failed = result.is_err();
                        if tx.send(result).is_err() || failed {
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

/// One thread's state: its read buffer and the file it has open.
struct Worker<'j, 'a> {
    job: &'j Job<'a>,
    buf: Vec<u8>,
    open: Option<(usize, Option<File>)>,
}

impl<'j, 'a> Worker<'j, 'a> {
    fn new(job: &'j Job<'a>) -> Self {
        let len = CHUNK.min(job.fragment_length as usize);
        Worker {
            job,
            buf: vec![0; len],
            open: None,
        }
    }

    fn fragment(&mut self, index: u32) -> Result<(u32, u32, Outcome), HashError> {
        let job = self.job;
        let start = u64::from(index) * u64::from(job.fragment_length);
        let len = (job.total_length - start).min(u64::from(job.fragment_length));
        let mut hasher = Sha256::new();
        for span in job.map.spans(start, len) {
            let Some(file) = open_cached(&mut self.open, job.files, span.file)? else {
                return Ok((index, len as u32, Outcome::Missing));
            };
            let mut done = 0u64;
            while done < span.len {
                let n = (span.len - done).min(self.buf.len() as u64) as usize;
                match read_full_at(file, &mut self.buf[..n], span.offset + done) {
                    Ok(true) => {}
                    Ok(false) => return Ok((index, len as u32, Outcome::Short)),
                    Err(error) => {
                        return Err(HashError {
                            path: job.files[span.file].clone(),
                            error,
                        });
                    }
                }
                hasher.update(&self.buf[..n]);
                done += n as u64;
            }
        }
        Ok((index, len as u32, Outcome::Hash(hasher.finalize().into())))
    }
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
