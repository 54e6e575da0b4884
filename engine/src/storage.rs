//! Storage: the shared data on disk, for seeding and fetching (`spec/peer.md` §8).
//!
//! Owns the files of one swarm: where they go (always inside the output directory), the
//! `.part` names they carry until every fragment is verified, positioned reads and writes
//! across file boundaries (`pread`/`pwrite`, no whole-file buffers, no mmap), and the resume
//! file that records which fragments are verified **and durably written**.
//!
//! Durability rule: a fragment enters the resume file only after the data files were fsynced,
//! and the resume file is replaced atomically (write, fsync, rename, fsync the directory). So
//! after a crash at any moment the resume file names only fragments whose bytes are on disk;
//! everything else is checked again or fetched again. This module does blocking IO: callers
//! keep it off the network reactor (a disk thread).
//!
//! Disk full: the resume file is always written into a spare file whose blocks were allocated
//! beforehand (reserved before the data files, and again after each replacement, with the
//! blocks the old resume file gave back), so the resume state can still be saved when a data
//! write has just failed for lack of space. A data file that cannot be preallocated for lack
//! of space is opened sparse instead, and the caller is told (`spec/peer.md` §8).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use st_proto::st_file::{FileMap, Geometry, Hash, Info, Span};

/// Magic of the resume file.
const RESUME_MAGIC: [u8; 4] = *b"STRS";
/// Version of the resume file layout.
const RESUME_VERSION: u8 = 1;

/// One swarm's data on disk.
pub struct Storage {
    geometry: Geometry,
    hashes: Vec<Hash>,
    swarm_id: Hash,
    map: FileMap,
    lengths: Vec<u64>,
    /// Where each file ends up.
    finals: Vec<PathBuf>,
    /// Where each file is while incomplete (equal to `finals` when seeding).
    parts: Vec<PathBuf>,
    files: Vec<File>,
    /// Per file: it lives in memory (tmpfs, ramfs), so its pages need no look in the page
    /// cache ([`Storage::cached`]).
    in_memory: Vec<bool>,
    /// Per data file held in memory and written here: the state of each [`ALLOC_CHUNK`]
    /// chunk (see [`preallocate`]); empty for any other file.
    chunks: Vec<Vec<Chunk>>,
    /// Allocation of those chunks ahead of the writes, in the disk thread's idle moments.
    ahead: Ahead,
    /// Fragments verified in memory.
    verified: Vec<bool>,
    /// Fragments recorded in the resume file (a subset of `verified`).
    recorded: Vec<bool>,
    resume_path: Option<PathBuf>,
    /// The preallocated file the next resume state is written into (see the module doc).
    resume_spare: Option<File>,
    complete: bool,
    /// The in-order prefix hashes of the fragments being written here (see
    /// [`Storage::write`]; a disk thread with a hash thread keeps them there instead).
    prefixes: Prefixes,
}

/// What opening for a fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeState {
    /// Fragments trusted from the resume file.
    pub trusted: usize,
    /// Why the resume file was ignored, if it was there but unusable.
    pub ignored: Option<String>,
    /// Set when the data files could not be preallocated for lack of space (which file, and
    /// how much was asked): they are sparse, and a write fails once the disk is full.
    pub not_preallocated: Option<String>,
}

/// A storage failure, naming what was being done to which file. Its [`StorageError::kind`]
/// is the OS error's (a full disk stays `StorageFull`), and it becomes an `io::Error` of
/// that kind where the [`Store`] traits carry it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Opening, creating, sizing, reading, writing or syncing a file failed.
    #[error("cannot {what} {}: {source}", path.display())]
    File {
        /// What was being done ("read", "write", "sync", …).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Moving a finished file into place failed.
    #[error("cannot move {} into place: {source}", path.display())]
    Rename {
        /// The final path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A block that does not lie inside its fragment.
    #[error("block {fragment}:{offset}+{len} outside the fragment ({fragment_len} bytes)")]
    OutOfRange {
        /// Fragment.
        fragment: u32,
        /// Offset in the fragment.
        offset: u32,
        /// Length.
        len: usize,
        /// The fragment's length.
        fragment_len: u32,
    },
    /// A fragment index past the last fragment.
    #[error("fragment {0} out of range")]
    NoSuchFragment(u32),
    /// Finishing while a fragment is not verified.
    #[error("fragment {0} is not verified; refusing to finish")]
    NotVerified(u32),
    /// A path that would lead outside the output directory, or something in the way of it.
    #[error("{0}")]
    Unsafe(String),
    /// The `.st` file's fragment layout is impossible.
    #[error("impossible fragment layout")]
    Layout,
    /// Another IO error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl StorageError {
    /// The kind of the underlying OS error (`Other` for the storage's own refusals).
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            StorageError::File { source, .. } | StorageError::Rename { source, .. } => {
                source.kind()
            }
            StorageError::Io(e) => e.kind(),
            StorageError::OutOfRange { .. } | StorageError::NoSuchFragment(_) => {
                io::ErrorKind::InvalidInput
            }
            _ => io::ErrorKind::Other,
        }
    }
}

impl From<StorageError> for io::Error {
    fn from(e: StorageError) -> io::Error {
        match e {
            StorageError::Io(e) => e,
            other => io::Error::new(other.kind(), other),
        }
    }
}

/// What a failed step on `path` becomes.
fn file_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::File {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The fragment layout of `info` (a decoded `.st` file always has one).
fn geometry(info: &Info) -> Result<Geometry, StorageError> {
    info.geometry().ok_or(StorageError::Layout)
}

impl Storage {
    /// Opens (creating as needed) the `.part` files of a fetch into `out_dir`, preallocated,
    /// and loads the resume file if one matches this swarm. The data's final place is
    /// `out_dir/NAME` (a file, or a directory holding the file list).
    pub fn open_for_fetch(
        info: &Info,
        swarm_id: Hash,
        out_dir: &Path,
    ) -> Result<(Storage, ResumeState), StorageError> {
        let finals = final_paths(info, out_dir);
        let parts: Vec<PathBuf> = finals.iter().map(|p| part_name(p)).collect();
        let lengths = info.file_lengths();
        let n = info.hashes.len();
        let resume_path = resume_name(out_dir, &info.name);
        // The resume file's room is taken first, before the data can fill the disk.
        let resume_spare = open_spare(&part_name(&resume_path), resume_len(n))?;
        let mut not_preallocated = None;
        let mut files = Vec::with_capacity(parts.len());
        let mut in_memory = Vec::with_capacity(parts.len());
        for (p, &len) in parts.iter().zip(&lengths) {
            ensure_parent_inside(out_dir, p)?;
            let f = open_rw_nofollow(p)?;
            // A `.part` longer than its file (left by another swarm of the same name) would
            // keep its tail past the end: it is cut to the length.
            if f.metadata()?.len() > len {
                f.set_len(len).map_err(file_err("size", p))?;
            }
            let held = page_cache::in_memory(&f);
            in_memory.push(held);
            match preallocate(&f, len, held) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    // Fetch what fits: verified fragments are kept and a re-run continues.
                    f.set_len(len).map_err(file_err("size", p))?;
                    not_preallocated.get_or_insert_with(|| {
                        format!("cannot preallocate {} ({len} bytes): {e}", p.display())
                    });
                }
                Err(e) => return Err(file_err("allocate", p)(e)),
            }
            files.push(f);
        }
        // One state per chunk of each file held in memory (see `Storage::allocate`).
        let chunks: Vec<Vec<Chunk>> = in_memory
            .iter()
            .zip(&lengths)
            .map(|(&held, &len)| {
                vec![
                    Chunk::Free;
                    if held {
                        len.div_ceil(ALLOC_CHUNK) as usize
                    } else {
                        0
                    }
                ]
            })
            .collect();
        // Ahead of the writes only where every file held in memory fitted the room: in a
        // file system too small for the fetch, what room there is goes to data.
        let ahead = Ahead {
            on: not_preallocated.is_none() && chunks.iter().any(|c| !c.is_empty()),
            ..Ahead::default()
        };
        let mut s = Storage {
            geometry: geometry(info)?,
            hashes: info.hashes.clone(),
            swarm_id,
            map: FileMap::new(&lengths),
            lengths,
            finals,
            parts,
            in_memory,
            chunks,
            ahead,
            files,
            verified: vec![false; n],
            recorded: vec![false; n],
            resume_path: Some(resume_path),
            resume_spare: Some(resume_spare),
            complete: false,
            prefixes: Prefixes::default(),
        };
        let mut state = s.load_resume();
        state.not_preallocated = not_preallocated;
        Ok((s, state))
    }

    /// Opens existing, complete data at `path` (the file itself, or the shared directory) for
    /// seeding, read-only. The caller verifies it ([`Storage::verify`]) before serving.
    pub fn open_for_seed(
        info: &Info,
        swarm_id: Hash,
        path: &Path,
    ) -> Result<Storage, StorageError> {
        let finals: Vec<PathBuf> = match &info.files {
            None => vec![path.to_path_buf()],
            Some(files) => files
                .iter()
                .map(|f| f.path.iter().fold(path.to_path_buf(), |p, c| p.join(c)))
                .collect(),
        };
        let mut files = Vec::with_capacity(finals.len());
        for p in &finals {
            files.push(File::open(p).map_err(file_err("read", p))?);
        }
        let n = info.hashes.len();
        let lengths = info.file_lengths();
        Ok(Storage {
            geometry: geometry(info)?,
            hashes: info.hashes.clone(),
            swarm_id,
            map: FileMap::new(&lengths),
            lengths,
            parts: finals.clone(),
            finals,
            in_memory: files.iter().map(page_cache::in_memory).collect(),
            chunks: Vec::new(),
            ahead: Ahead::default(),
            files,
            verified: vec![false; n],
            recorded: vec![false; n],
            resume_path: None,
            resume_spare: None,
            complete: false,
            prefixes: Prefixes::default(),
        })
    }

    /// Number of fragments.
    pub fn fragment_count(&self) -> u32 {
        self.hashes.len() as u32
    }

    /// Length of fragment `i` (the last may be short).
    pub fn fragment_len(&self, i: u32) -> u32 {
        self.geometry.len(i)
    }

    /// True if fragment `i` is verified.
    pub fn has(&self, i: u32) -> bool {
        self.verified.get(i as usize).copied().unwrap_or(false)
    }

    /// Verified fragments.
    pub fn verified_count(&self) -> usize {
        self.verified.iter().filter(|&&v| v).count()
    }

    /// Bytes in verified fragments.
    pub fn verified_bytes(&self) -> u64 {
        (0..self.fragment_count())
            .filter(|&i| self.has(i))
            .map(|i| u64::from(self.fragment_len(i)))
            .sum()
    }

    fn spans(&self, fragment: u32, offset: u32, len: usize) -> Result<Vec<Span>, StorageError> {
        let flen = self.fragment_len(fragment);
        let end = u64::from(offset) + len as u64;
        if fragment >= self.fragment_count() || end > u64::from(flen) {
            return Err(StorageError::OutOfRange {
                fragment,
                offset,
                len,
                fragment_len: flen,
            });
        }
        let start = self.geometry.start(fragment) + u64::from(offset);
        Ok(self.map.spans(start, len as u64))
    }

    /// Writes `data` at `offset` of `fragment`, across file boundaries. A write that continues
    /// the fragment's in-order prefix is hashed on the way (the buffer is hot), so that
    /// [`Storage::verify`] reads back only what came out of order; a write over the hashed
    /// prefix voids it (the bytes on disk are what counts; module `hashing`).
    pub fn write(&mut self, fragment: u32, offset: u32, data: &[u8]) -> Result<(), StorageError> {
        self.write_unhashed(fragment, offset, data)?;
        self.prefixes.written(fragment, offset, data);
        Ok(())
    }

    /// Writes as [`Storage::write`] does, without hashing: the caller hashes the block
    /// elsewhere (the disk thread's hash thread), or checks the fragment whole.
    pub(crate) fn write_unhashed(
        &mut self,
        fragment: u32,
        offset: u32,
        data: &[u8],
    ) -> Result<(), StorageError> {
        let mut at = 0usize;
        for s in self.spans(fragment, offset, data.len())? {
            self.allocate(s.file, s.offset, s.len);
            let chunk = &data[at..at + s.len as usize];
            // The kind is kept: a driver tells a full disk (`StorageFull`) from other errors.
            self.files[s.file]
                .write_all_at(chunk, s.offset)
                .map_err(file_err("write", &self.parts[s.file]))?;
            at += s.len as usize;
        }
        Ok(())
    }

    /// Allocates the next chunk of a file held in memory that no write has reached yet, in
    /// file order, if the budget allows (spec peer.md §8.1): for the disk thread's idle
    /// moments. The chunks allocated so and not reached by a write yet are at most
    /// [`AHEAD_MIN`] or as many as the writes have reached, whichever is more, so that a
    /// slow fetch's memory grows with its data. Returns false when there is nothing to do
    /// now: the budget is spent, every chunk is allocated, or an allocation failed (which
    /// ends allocating ahead: the room left is the data's).
    pub(crate) fn allocate_ahead(&mut self) -> bool {
        let a = &mut self.ahead;
        if !a.on || a.unreached >= AHEAD_MIN.max(a.reached) {
            return false;
        }
        while let Some(c) = self.chunks.get(a.file) {
            match c.get(a.chunk) {
                None => {
                    a.file += 1;
                    a.chunk = 0;
                }
                Some(Chunk::Free) => {
                    let (file, k) = (a.file, a.chunk);
                    a.chunk += 1;
                    if fallocate_chunk(&self.files[file], self.lengths[file], k).is_err() {
                        a.on = false;
                        return false;
                    }
                    self.chunks[file][k] = Chunk::Ahead;
                    a.unreached += 1;
                    return true;
                }
                Some(_) => a.chunk += 1,
            }
        }
        a.on = false;
        false
    }

    /// Allocates the [`ALLOC_CHUNK`] chunks of a file held in memory that `len` bytes at
    /// `offset` fall in, if not done yet (see [`preallocate`]). A failure is the write's to
    /// meet and report (a full file system, say).
    fn allocate(&mut self, file: usize, offset: u64, len: u64) {
        let Some(chunks) = self.chunks.get_mut(file).filter(|c| !c.is_empty()) else {
            return;
        };
        let last = (offset + len.max(1) - 1) / ALLOC_CHUNK;
        for c in offset / ALLOC_CHUNK..=last {
            let Some(state) = chunks.get_mut(c as usize) else {
                continue;
            };
            match *state {
                Chunk::Reached => continue,
                Chunk::Ahead => self.ahead.unreached -= 1,
                Chunk::Free => {
                    if fallocate_chunk(&self.files[file], self.lengths[file], c as usize).is_err() {
                        self.ahead.on = false;
                    }
                }
            }
            *state = Chunk::Reached;
            self.ahead.reached += 1;
        }
    }

    /// Reads `buf.len()` bytes at `offset` of `fragment`.
    pub fn read(&self, fragment: u32, offset: u32, buf: &mut [u8]) -> Result<(), StorageError> {
        let mut at = 0usize;
        for s in self.spans(fragment, offset, buf.len())? {
            self.files[s.file]
                .read_exact_at(&mut buf[at..at + s.len as usize], s.offset)
                .map_err(file_err("read", &self.parts[s.file]))?;
            at += s.len as usize;
        }
        Ok(())
    }

    /// True if the page cache holds every byte of `len` bytes at `offset` of `fragment` now,
    /// so that [`Storage::read`] copies them without waiting for a disk; false if not, or if
    /// the kernel cannot say (`cachestat(2)`, Linux 6.5 and later). A file on tmpfs or ramfs
    /// is held without asking: its pages are the page cache (a swapped-out tmpfs page is the
    /// one exception, and then the read waits for the swap).
    pub fn cached(&self, fragment: u32, offset: u32, len: u32) -> bool {
        self.spans(fragment, offset, len as usize)
            .is_ok_and(|spans| {
                spans.iter().all(|s| {
                    self.in_memory[s.file]
                        || page_cache::holds(&self.files[s.file], s.offset, s.len)
                })
            })
    }

    /// Checks fragment `i`'s SHA-256 over its bytes on disk; marks it verified if it matches.
    /// The prefix hashed as it was written is not read again, the rest is read back.
    pub fn verify(&mut self, i: u32) -> Result<bool, StorageError> {
        let mut prefixes = std::mem::take(&mut self.prefixes);
        let ok = prefixes.check(self, i);
        self.prefixes = prefixes;
        if ok.as_ref().is_ok_and(|ok| *ok) {
            self.verified[i as usize] = true;
        }
        ok
    }

    /// Records fragment `i` as verified after the caller checked its hash itself (the
    /// parallel start-up check of `st seed`).
    pub fn mark_verified(&mut self, i: u32) {
        if let Some(v) = self.verified.get_mut(i as usize) {
            *v = true;
        }
    }

    /// Checks a fragment already assembled in memory; on a match writes it and marks it
    /// verified. Returns whether it matched (a mismatch writes nothing).
    pub fn store_fragment(&mut self, i: u32, data: &[u8]) -> Result<bool, StorageError> {
        if data.len() != self.fragment_len(i) as usize
            || <[u8; 32]>::from(Sha256::digest(data)) != self.hashes[i as usize]
        {
            return Ok(false);
        }
        self.prefixes.forget(i);
        self.write_unhashed(i, 0, data)?;
        self.verified[i as usize] = true;
        Ok(true)
    }

    /// Makes every verified fragment durable and records it in the resume file: fsync the
    /// data first, then replace the resume file atomically. Returns how many are recorded.
    pub fn sync_resume(&mut self) -> Result<usize, StorageError> {
        let Some(path) = self.resume_path.clone() else {
            return Ok(0);
        };
        if self.verified == self.recorded {
            return Ok(self.recorded.iter().filter(|&&r| r).count());
        }
        for (f, p) in self.files.iter().zip(&self.parts) {
            f.sync_data().map_err(file_err("sync", p))?;
        }
        let snapshot = self.verified.clone();
        let bytes = encode_resume(&self.swarm_id, &snapshot);
        let tmp = part_name(&path);
        let spare = match self.resume_spare.take() {
            Some(f) => f,
            None => open_spare(&tmp, bytes.len() as u64)?,
        };
        replace_with(&spare, &tmp, &path, &bytes).map_err(file_err("write", &path))?;
        // Reserve the room for the next write now: the old resume file's blocks were just
        // given back. Failing here is not an error yet (the next write tries again).
        self.resume_spare = open_spare(&tmp, bytes.len() as u64).ok();
        self.recorded = snapshot;
        Ok(self.recorded.iter().filter(|&&r| r).count())
    }

    fn load_resume(&mut self) -> ResumeState {
        let Some(path) = &self.resume_path else {
            return ResumeState {
                trusted: 0,
                ignored: None,
                not_preallocated: None,
            };
        };
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return ResumeState {
                    trusted: 0,
                    ignored: None,
                    not_preallocated: None,
                };
            }
            Err(e) => {
                return ResumeState {
                    trusted: 0,
                    ignored: Some(e.to_string()),
                    not_preallocated: None,
                };
            }
        };
        match decode_resume(&bytes, &self.swarm_id, self.hashes.len()) {
            Ok(bits) => {
                self.verified.clone_from(&bits);
                self.recorded = bits;
                ResumeState {
                    trusted: self.verified_count(),
                    ignored: None,
                    not_preallocated: None,
                }
            }
            Err(why) => ResumeState {
                trusted: 0,
                ignored: Some(why),
                not_preallocated: None,
            },
        }
    }

    /// Fragments not yet verified.
    pub fn missing(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.fragment_count()).filter(|&i| !self.has(i))
    }

    /// Once every fragment is verified: fsync, move every `.part` file to its final name,
    /// fsync the directories, remove the resume file. Refuses if anything is unverified.
    pub fn finish(&mut self) -> Result<(), StorageError> {
        if self.complete {
            return Ok(());
        }
        if let Some(i) = self.missing().next() {
            return Err(StorageError::NotVerified(i));
        }
        for (f, p) in self.files.iter().zip(&self.parts) {
            f.sync_all().map_err(file_err("sync", p))?;
        }
        for (part, fin) in self.parts.iter().zip(&self.finals) {
            if part != fin {
                fs::rename(part, fin).map_err(|source| StorageError::Rename {
                    path: fin.clone(),
                    source,
                })?;
                if let Some(dir) = fin.parent() {
                    File::open(dir).and_then(|d| d.sync_all())?;
                }
            }
        }
        self.parts.clone_from(&self.finals);
        if let Some(r) = &self.resume_path {
            self.resume_spare = None;
            for p in [r.clone(), part_name(r)] {
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(file_err("remove", &p)(e)),
                }
            }
        }
        self.complete = true;
        Ok(())
    }

    /// A second handle on the same files for reading only (duplicated descriptors), with the
    /// same layout and a copy of the verified set; it cannot write, sync or finish. The
    /// reactor thread serves from it while the [`disk::DiskThread`] owns this one.
    pub fn reader(&self) -> Result<Storage, StorageError> {
        let files = self
            .files
            .iter()
            .map(File::try_clone)
            .collect::<io::Result<Vec<File>>>()?;
        Ok(Storage {
            geometry: self.geometry,
            hashes: self.hashes.clone(),
            swarm_id: self.swarm_id,
            map: self.map.clone(),
            lengths: self.lengths.clone(),
            finals: self.finals.clone(),
            parts: self.parts.clone(),
            in_memory: self.in_memory.clone(),
            chunks: Vec::new(),
            ahead: Ahead::default(),
            files,
            verified: self.verified.clone(),
            recorded: self.recorded.clone(),
            resume_path: None,
            resume_spare: None,
            complete: self.complete,
            prefixes: Prefixes::default(),
        })
    }

    /// Final paths of the files.
    pub fn final_paths(&self) -> &[PathBuf] {
        &self.finals
    }

    /// Lengths of the files.
    pub fn file_lengths(&self) -> &[u64] {
        &self.lengths
    }
}

/// Where the data of `info` ends up under `out_dir`. Names were checked by the `.st` decoder
/// (no separators, no `..`), so every path stays inside `out_dir`.
pub fn final_paths(info: &Info, out_dir: &Path) -> Vec<PathBuf> {
    let top = out_dir.join(&info.name);
    match &info.files {
        None => vec![top],
        Some(files) => files
            .iter()
            .map(|f| f.path.iter().fold(top.clone(), |p, c| p.join(c)))
            .collect(),
    }
}

/// What a fetch finds under its final names before it starts (spec `peer.md` §8.1,
/// *Existing data*).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// Per file: where its data is read for the check (the final name if a file is there,
    /// else the `.part`, which may not exist either).
    pub read: Vec<PathBuf>,
    /// The final names where a file exists.
    pub finals: Vec<PathBuf>,
    /// Every file is there (under its final name or as a `.part`) with exactly its length.
    pub lengths_match: bool,
}

/// Looks for data already under the final names of `info` in `out_dir`: `None` when there
/// is none (the usual fetch). A final name taken by something that is not a regular file (a
/// directory, a symlink) is an error: a fetch never replaces it.
pub fn existing(info: &Info, out_dir: &Path) -> Result<Option<Existing>, StorageError> {
    let finals = final_paths(info, out_dir);
    let lengths = info.file_lengths();
    let mut read = Vec::with_capacity(finals.len());
    let mut found = Vec::new();
    let mut lengths_match = true;
    for (f, &len) in finals.iter().zip(&lengths) {
        match fs::symlink_metadata(f) {
            Ok(m) if m.is_file() => {
                lengths_match &= m.len() == len;
                read.push(f.clone());
                found.push(f.clone());
            }
            Ok(_) => {
                return Err(StorageError::Unsafe(format!(
                    "{} exists and is not a regular file; not replacing it",
                    f.display()
                )));
            }
            Err(_) => {
                let p = part_name(f);
                lengths_match &=
                    fs::symlink_metadata(&p).is_ok_and(|m| m.is_file() && m.len() == len);
                read.push(p);
            }
        }
    }
    Ok((!found.is_empty()).then_some(Existing {
        read,
        finals: found,
        lengths_match,
    }))
}

/// Takes the data of `info` in `out_dir` as complete, once the caller has checked every
/// fragment of [`Existing::read`]: a file still under its `.part` name (a fetch that
/// stopped while moving its files into place) is moved to its final name, the directories
/// are synced and the resume file removed (spec `peer.md` §8.1).
pub fn adopt(info: &Info, out_dir: &Path) -> Result<(), StorageError> {
    for f in final_paths(info, out_dir) {
        if fs::symlink_metadata(&f).is_err() {
            let part = part_name(&f);
            fs::rename(&part, &f).map_err(|source| StorageError::Rename {
                path: f.clone(),
                source,
            })?;
            if let Some(dir) = f.parent() {
                File::open(dir).and_then(|d| d.sync_all())?;
            }
        }
    }
    remove_resume(out_dir, &info.name)
}

/// `st fetch --force` over other data (spec `peer.md` §8.1): each existing final file is
/// moved over its `.part` name and cut to its length, so the fetch writes into it and keeps
/// what matches; the resume file, which described the old `.part` files, is removed.
/// Returns how many files were taken over.
pub fn take_over(info: &Info, out_dir: &Path) -> Result<usize, StorageError> {
    let mut n = 0;
    for (f, len) in final_paths(info, out_dir).iter().zip(info.file_lengths()) {
        if !fs::symlink_metadata(f).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let part = part_name(f);
        fs::rename(f, &part).map_err(|source| StorageError::Rename {
            path: part.clone(),
            source,
        })?;
        let file = open_rw_nofollow(&part)?;
        if file.metadata()?.len() > len {
            file.set_len(len).map_err(file_err("size", &part))?;
        }
        if let Some(dir) = f.parent() {
            File::open(dir).and_then(|d| d.sync_all())?;
        }
        n += 1;
    }
    if n > 0 {
        remove_resume(out_dir, &info.name)?;
    }
    Ok(n)
}

/// Removes the resume file of swarm `name` and its spare, if there.
fn remove_resume(out_dir: &Path, name: &str) -> Result<(), StorageError> {
    let r = resume_name(out_dir, name);
    for p in [part_name(&r), r] {
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_err("remove", &p)(e)),
        }
    }
    Ok(())
}

/// Longest file name (one path component) Linux file systems take, in bytes.
pub const NAME_MAX: usize = 255;

/// `prefix NAME suffix`, made to fit in [`NAME_MAX`] bytes (`spec/peer.md` §8.1): when it
/// would not, NAME is cut (at a character boundary) and followed by `~` and 16 hex digits of
/// its SHA-256, so two long names still differ and a re-run finds the same temporary files.
pub fn fit_name(prefix: &str, name: &str, suffix: &str) -> String {
    if prefix.len() + name.len() + suffix.len() <= NAME_MAX {
        return format!("{prefix}{name}{suffix}");
    }
    let keep = NAME_MAX.saturating_sub(prefix.len() + suffix.len() + 17);
    let mut cut = keep.min(name.len());
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let h = Sha256::digest(name.as_bytes());
    let hex: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{}~{hex}{suffix}", &name[..cut])
}

/// The temporary name of a data file (or of the resume file's spare): `NAME.part`, fitted.
pub fn part_name(p: &Path) -> PathBuf {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    p.with_file_name(fit_name("", &name, ".part"))
}

/// The resume file of swarm NAME: `out_dir/.NAME.st-resume`, fitted.
pub fn resume_name(out_dir: &Path, name: &str) -> PathBuf {
    out_dir.join(fit_name(".", name, ".st-resume"))
}

/// Creates the directories between `out_dir` and `path`, refusing to go through anything that
/// is not a real directory (a symlink planted there could lead outside `out_dir`).
fn ensure_parent_inside(out_dir: &Path, path: &Path) -> Result<(), StorageError> {
    let rel = path
        .parent()
        .and_then(|p| p.strip_prefix(out_dir).ok())
        .ok_or_else(|| {
            StorageError::Unsafe(format!(
                "{} is outside {}",
                path.display(),
                out_dir.display()
            ))
        })?;
    let mut at = out_dir.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(StorageError::Unsafe(format!(
                    "{} exists and is not a directory (symlinks are not followed)",
                    at.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&at).map_err(file_err("create", &at))?;
            }
            Err(e) => return Err(file_err("inspect", &at)(e)),
        }
    }
    Ok(())
}

/// Allocates chunk `k` of `f`, a file of `len` bytes held in memory ([`ALLOC_CHUNK`]).
fn fallocate_chunk(f: &File, len: u64, k: usize) -> io::Result<()> {
    let start = k as u64 * ALLOC_CHUNK;
    fallocate(f, start, ALLOC_CHUNK.min(len.saturating_sub(start)))
}

/// `posix_fallocate(2)` of `len` bytes at `start` of `f`.
fn fallocate(f: &File, start: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on a descriptor we own, with in-range arguments.
    let r =
        unsafe { libc::posix_fallocate(f.as_raw_fd(), start as libc::off_t, len as libc::off_t) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// Where a chunk of a data file held in memory stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Not allocated.
    Free,
    /// Allocated ahead of the writes; none has reached it yet.
    Ahead,
    /// A write reached it (and allocated it, if it was free).
    Reached,
}

/// Allocation ahead of the writes ([`Storage::allocate_ahead`]): on while every file held in
/// memory fitted the room and no allocation failed; the next chunk to look at; the chunks
/// allocated ahead that no write reached yet, and the chunks writes reached.
#[derive(Debug, Default)]
struct Ahead {
    on: bool,
    file: usize,
    chunk: usize,
    unreached: usize,
    reached: usize,
}

/// Chunks allocated ahead of the writes and not reached by one, at least (32 MiB): see
/// [`Storage::allocate_ahead`].
const AHEAD_MIN: usize = 16;

/// What a data file held in memory is allocated by, at a time, as writes reach it or while the
/// disk thread is idle (2 MiB): enough to spare page-by-page allocation, small enough that a
/// fetch whose first fragments lie all over the file does not allocate most of it before its
/// first writes, and that a write waits little behind an idle-time allocation (spec peer.md
/// §8.1).
const ALLOC_CHUNK: u64 = 2 << 20;

/// Allocates the blocks of `f` up to `len` (extending it to `len`). A file whose blocks
/// already cover `len` is left alone; a sparse one (a fetch that started short of space) gets
/// its holes filled. A file `in_memory` (tmpfs, ramfs) is only extended, once the file system
/// has the room (`spec/peer.md` §8.1).
fn preallocate(f: &File, len: u64, in_memory: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata()?;
    let held = m.blocks().saturating_mul(512);
    if len == 0 || (m.len() >= len && held >= len) {
        return Ok(());
    }
    if in_memory {
        // tmpfs or ramfs: allocating ahead gains no layout and would take every page of the
        // file at once (0.11 s per GiB, before the first block is asked for); the room is
        // checked instead, the file is made sparse, and the disk thread allocates it a chunk
        // at a time as writes reach it and, within a budget, ahead of them while idle
        // (`Storage::allocate`, `Storage::allocate_ahead`: page by page, as plain writes
        // would, costs more CPU: 8 % of a 16-host `st lab`'s).
        // SAFETY: an all-zero statvfs is a valid value of the plain C struct.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: fstatvfs on a descriptor we own, writing into a statvfs we own.
        let rc = unsafe { libc::fstatvfs(f.as_raw_fd(), &mut st) };
        // ramfs has no limit and says 0 blocks.
        #[allow(clippy::unnecessary_cast)] // the field types differ between targets
        let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
        #[allow(clippy::unnecessary_cast)]
        let limited = st.f_blocks as u64 > 0;
        if rc == 0 && limited && free < len - held.min(len) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        return f.set_len(len);
    }
    match fallocate(f, 0, len) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => Err(e),
        // Filesystems without fallocate: a sparse file of the right size.
        Err(_) => f.set_len(len),
    }
}

/// What the page cache holds of a file, by `cachestat(2)` (Linux 6.5; its number is 451 in the
/// table these architectures share). Elsewhere, and on a kernel without it, nothing is known
/// to be held.
mod page_cache {
    use std::fs::File;

    /// True if `f` lives on a file system held in memory (tmpfs, ramfs), by `fstatfs(2)`;
    /// false where that is not known.
    #[cfg(target_os = "linux")]
    pub(super) fn in_memory(f: &File) -> bool {
        use std::os::fd::AsRawFd;
        /// `f_type` of tmpfs and ramfs (linux/magic.h).
        const TMPFS_MAGIC: u32 = 0x0102_1994;
        const RAMFS_MAGIC: u32 = 0x8584_58f6;
        // SAFETY: an all-zero statfs is a valid value of the plain C struct.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: fstatfs on a descriptor we own, writing into a statfs we own.
        let rc = unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) };
        // f_type is signed, of 32 or 64 bits by target: its low 32 bits are the magic.
        let kind = st.f_type as u32;
        rc == 0 && (kind == TMPFS_MAGIC || kind == RAMFS_MAGIC)
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn in_memory(_: &File) -> bool {
        false
    }

    /// True if every page of `len` bytes at `offset` of `f` is in the page cache.
    #[cfg(all(
        target_os = "linux",
        any(
            all(target_arch = "x86_64", target_pointer_width = "64"),
            target_arch = "aarch64",
            target_arch = "riscv64",
            target_arch = "loongarch64"
        )
    ))]
    pub(super) fn holds(f: &File, offset: u64, len: u64) -> bool {
        use std::os::fd::AsRawFd;
        use std::sync::atomic::{AtomicBool, Ordering};
        const SYS_CACHESTAT: libc::c_long = 451;
        /// The kernel has no cachestat: not asked again.
        static MISSING: AtomicBool = AtomicBool::new(false);
        #[repr(C)]
        struct Range {
            off: u64,
            len: u64,
        }
        #[repr(C)]
        #[derive(Default)]
        struct Stat {
            nr_cache: u64,
            nr_dirty: u64,
            nr_writeback: u64,
            nr_evicted: u64,
            nr_recently_evicted: u64,
        }
        if len == 0 {
            return true;
        }
        if MISSING.load(Ordering::Relaxed) {
            return false;
        }
        let range = Range { off: offset, len };
        let mut stat = Stat::default();
        // SAFETY: cachestat(fd, *const range, *mut stat, flags 0) on a descriptor we own, with
        // both structures laid out as the kernel's (struct cachestat_range, struct cachestat).
        let rc = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                f.as_raw_fd(),
                &range as *const Range,
                &mut stat as *mut Stat,
                0 as libc::c_uint,
            )
        };
        if rc != 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
                MISSING.store(true, Ordering::Relaxed);
            }
            return false;
        }
        // SAFETY: sysconf has no preconditions.
        let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|&p| p > 0)
            .unwrap_or(4096);
        let pages = (offset + len).div_ceil(page) - offset / page;
        stat.nr_cache >= pages
    }

    #[cfg(not(all(
        target_os = "linux",
        any(
            all(target_arch = "x86_64", target_pointer_width = "64"),
            target_arch = "aarch64",
            target_arch = "riscv64",
            target_arch = "loongarch64"
        )
    )))]
    pub(super) fn holds(_: &File, _: u64, _: u64) -> bool {
        false
    }
}

/// Size of the resume file of a swarm of `n` fragments (§8).
fn resume_len(n: usize) -> u64 {
    (4 + 1 + 32 + 4 + n.div_ceil(8) + 32) as u64
}

/// Opens `path` for reading and writing, creating it, never through a symlink (`O_NOFOLLOW`);
/// the error names the path and keeps its kind.
fn open_rw_nofollow(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(file_err("open", path))
}

/// Opens (creating) the spare resume file at `path` with exactly `len` bytes allocated.
fn open_spare(path: &Path, len: u64) -> Result<File, StorageError> {
    let f = open_rw_nofollow(path)?;
    if f.metadata()?.len() != len {
        f.set_len(len).map_err(file_err("size", path))?;
    }
    // Allocated even on tmpfs: this room is what saves the resume state on a full disk.
    preallocate(&f, len, false).map_err(file_err("reserve room for", path))?;
    Ok(f)
}

/// Writes `bytes` into the spare file `f` (at `tmp`, already `bytes.len()` long and
/// allocated), fsyncs it, renames it over `path` and fsyncs the directory.
fn replace_with(f: &File, tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    f.write_all_at(bytes, 0)?;
    f.sync_all()?;
    fs::rename(tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn encode_resume(swarm_id: &Hash, bits: &[bool]) -> Vec<u8> {
    let mut out = Vec::with_capacity(resume_len(bits.len()) as usize);
    out.extend_from_slice(&RESUME_MAGIC);
    out.push(RESUME_VERSION);
    out.extend_from_slice(swarm_id);
    out.extend_from_slice(&(bits.len() as u32).to_be_bytes());
    for chunk in bits.chunks(8) {
        let mut b = 0u8;
        for (k, &v) in chunk.iter().enumerate() {
            if v {
                b |= 0x80 >> k;
            }
        }
        out.push(b);
    }
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

fn decode_resume(bytes: &[u8], swarm_id: &Hash, n: usize) -> Result<Vec<bool>, String> {
    if bytes.len() as u64 != resume_len(n) {
        return Err("resume file has the wrong size".into());
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err("resume file is corrupt (checksum mismatch)".into());
    }
    if body[..4] != RESUME_MAGIC || body[4] != RESUME_VERSION {
        return Err("not a resume file of this version".into());
    }
    if &body[5..37] != swarm_id {
        return Err("resume file belongs to another swarm".into());
    }
    if u32::from_be_bytes([body[37], body[38], body[39], body[40]]) as usize != n {
        return Err("resume file has another fragment count".into());
    }
    let bits = &body[41..];
    Ok((0..n)
        .map(|i| bits[i / 8] & (0x80 >> (i % 8)) != 0)
        .collect())
}

pub mod disk;
mod hashing;
#[cfg(any(test, feature = "sim"))]
pub mod mem;
pub mod seed_state;
pub mod store;

use hashing::Prefixes;
pub use store::{Done, Inline, Store, SwarmStore};

#[cfg(test)]
mod tests;
