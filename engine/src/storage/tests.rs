//! Storage tests on real files in a scratch directory.

use std::path::PathBuf;

use st_proto::st_file::{FileEntry, Info};

use super::*;

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("st-storage-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn info_for(name: &str, all: &[u8], files: Option<Vec<FileEntry>>) -> Info {
    let fragment_length = 16384;
    Info {
        name: name.into(),
        total_length: all.len() as u64,
        fragment_length,
        files,
        hashes: all
            .chunks(fragment_length as usize)
            .map(|c| Sha256::digest(c).into())
            .collect(),
        private: false,
    }
}

fn fragment(all: &[u8], i: u32) -> &[u8] {
    let s = i as usize * 16384;
    &all[s..(s + 16384).min(all.len())]
}

#[test]
fn single_file_fetch_ends_in_place_with_no_leftovers() {
    let d = Scratch::new("single");
    let all = data(50_000, 1);
    let info = info_for("blob.bin", &all, None);
    let (mut s, state) = Storage::open_for_fetch(&info, [7; 32], &d.0).unwrap();
    assert_eq!(
        state,
        ResumeState {
            trusted: 0,
            ignored: None,
            not_preallocated: None,
        }
    );
    assert!(d.0.join("blob.bin.part").exists());
    assert!(
        !d.0.join("blob.bin").exists(),
        "never under the final name before the end"
    );
    // Out of order, and one bad fragment that must not be stored.
    assert!(!s.store_fragment(2, &data(all.len() - 32768, 9)).unwrap());
    for i in [3u32, 0, 2, 1] {
        assert!(
            s.store_fragment(i, fragment(&all, i)).unwrap(),
            "fragment {i}"
        );
    }
    assert!(s.finish().is_ok());
    assert_eq!(fs::read(d.0.join("blob.bin")).unwrap(), all);
    assert!(!d.0.join("blob.bin.part").exists());
    assert!(!resume_name(&d.0, "blob.bin").exists());
}

/// Blocks are hashed as they are written in order, and only what came out of order is read
/// back (spec peer.md §8); either way the hash is of the bytes on disk: bad bytes written over
/// a hashed prefix fail the check, and good bytes written over bad ones pass it.
#[test]
fn verify_hashes_in_order_writes_and_reads_back_the_rest() {
    let d = Scratch::new("hashing");
    let all = data(4 * 16384 + 100, 3);
    let info = info_for("h.bin", &all, None);
    let (mut s, _) = Storage::open_for_fetch(&info, [7; 32], &d.0).unwrap();
    let f = |i: u32| fragment(&all, i);
    let q = 4096usize;
    // 0: in order.
    for k in 0..4 {
        s.write(0, (k * q) as u32, &f(0)[k * q..(k + 1) * q])
            .unwrap();
    }
    // 1: out of order (the last quarter first, then the rest).
    s.write(1, (3 * q) as u32, &f(1)[3 * q..]).unwrap();
    for k in 0..3 {
        s.write(1, (k * q) as u32, &f(1)[k * q..(k + 1) * q])
            .unwrap();
    }
    // 2: in order, then its first block again with bad bytes: the disk holds bad bytes.
    s.write(2, 0, f(2)).unwrap();
    s.write(2, 0, &vec![0u8; q]).unwrap();
    // 3: bad bytes first, then the good ones over them.
    s.write(3, 0, &vec![1u8; 16384]).unwrap();
    s.write(3, 0, &f(3)[..q]).unwrap();
    s.write(3, q as u32, &f(3)[q..]).unwrap();
    // 4: the short last fragment.
    s.write(4, 0, f(4)).unwrap();
    // What was hashed on the way: all of 0; the first three quarters of 1 (its last quarter
    // came first, out of order, and is read back); 2 and 3 from their last write at offset 0
    // on; all of 4.
    let hashed = |i: u32| s.prefixes.hashed(i);
    assert_eq!(hashed(0), Some(16384));
    assert_eq!(hashed(1), Some(3 * q as u32), "the in-order prefix only");
    assert_eq!(hashed(2), Some(q as u32));
    assert_eq!(hashed(3), Some(16384));
    assert_eq!(hashed(4), Some(100));
    assert!(s.verify(0).unwrap());
    assert!(s.verify(1).unwrap());
    assert!(!s.verify(2).unwrap(), "the bytes on disk are bad");
    assert!(s.verify(3).unwrap());
    assert!(s.verify(4).unwrap());
    // 2 again, right this time; a second check of a verified fragment reads it all back.
    s.write(2, 0, &f(2)[..q]).unwrap();
    assert!(s.verify(2).unwrap());
    assert!(s.verify(2).unwrap());
    s.finish().unwrap();
    assert_eq!(fs::read(d.0.join("h.bin")).unwrap(), all);
}

#[test]
fn finish_refuses_unverified_data() {
    let d = Scratch::new("refuse");
    let all = data(40_000, 2);
    let info = info_for("x", &all, None);
    let (mut s, _) = Storage::open_for_fetch(&info, [7; 32], &d.0).unwrap();
    s.store_fragment(0, fragment(&all, 0)).unwrap();
    assert!(s.finish().is_err());
    assert!(!d.0.join("x").exists());
}

#[test]
fn directory_with_empty_and_nested_files() {
    let d = Scratch::new("dir");
    let parts = [data(20_000, 3), vec![], data(30_000, 4)];
    let all: Vec<u8> = parts.concat();
    let files = vec![
        FileEntry {
            path: vec!["a.bin".into()],
            length: 20_000,
        },
        FileEntry {
            path: vec!["b".into(), "empty".into()],
            length: 0,
        },
        FileEntry {
            path: vec!["b".into(), "c".into(), "d.bin".into()],
            length: 30_000,
        },
    ];
    let info = info_for("tree", &all, Some(files));
    let (mut s, _) = Storage::open_for_fetch(&info, [1; 32], &d.0).unwrap();
    for i in 0..s.fragment_count() {
        // Fragment 1 spans a.bin, the empty file and d.bin.
        assert!(s.store_fragment(i, fragment(&all, i)).unwrap());
    }
    s.finish().unwrap();
    assert_eq!(fs::read(d.0.join("tree/a.bin")).unwrap(), parts[0]);
    assert_eq!(fs::read(d.0.join("tree/b/empty")).unwrap(), b"");
    assert_eq!(fs::read(d.0.join("tree/b/c/d.bin")).unwrap(), parts[2]);
    // And it reads back for seeding.
    let mut seed = Storage::open_for_seed(&info, [1; 32], &d.0.join("tree")).unwrap();
    for i in 0..seed.fragment_count() {
        assert!(seed.verify(i).unwrap());
    }
    let mut buf = vec![0u8; 100];
    seed.read(1, 16384 - 20_000 % 16384 - 50, &mut buf).unwrap();
}

#[test]
fn resume_trusts_exactly_what_was_recorded() {
    let d = Scratch::new("resume");
    let all = data(100_000, 5);
    let info = info_for("big", &all, None);
    let id = [3; 32];
    {
        let (mut s, _) = Storage::open_for_fetch(&info, id, &d.0).unwrap();
        for i in [0u32, 2, 5] {
            s.store_fragment(i, fragment(&all, i)).unwrap();
        }
        assert_eq!(s.sync_resume().unwrap(), 3);
        // Written and verified in memory after the last sync: lost on a crash (not recorded).
        s.store_fragment(4, fragment(&all, 4)).unwrap();
        // "Crash": dropped without finish.
    }
    let (mut s, state) = Storage::open_for_fetch(&info, id, &d.0).unwrap();
    assert_eq!(state.trusted, 3);
    assert_eq!(s.missing().collect::<Vec<_>>(), vec![1, 3, 4, 6]);
    // The unrecorded fragment 4 is on disk and passes a check; 1 does not (zeros).
    assert!(s.verify(4).unwrap());
    assert!(!s.verify(1).unwrap());
    for i in [1u32, 3, 6] {
        s.store_fragment(i, fragment(&all, i)).unwrap();
    }
    s.finish().unwrap();
    assert_eq!(fs::read(d.0.join("big")).unwrap(), all);
}

#[test]
fn bad_resume_files_are_ignored() {
    let d = Scratch::new("badresume");
    let all = data(40_000, 6);
    let info = info_for("f", &all, None);
    {
        let (mut s, _) = Storage::open_for_fetch(&info, [1; 32], &d.0).unwrap();
        s.store_fragment(0, fragment(&all, 0)).unwrap();
        s.sync_resume().unwrap();
    }
    // Another swarm id: nothing trusted.
    let (_, state) = Storage::open_for_fetch(&info, [2; 32], &d.0).unwrap();
    assert_eq!(state.trusted, 0);
    assert!(state.ignored.unwrap().contains("another swarm"));
    // A flipped bit: nothing trusted.
    let r = resume_name(&d.0, "f");
    let mut b = fs::read(&r).unwrap();
    b[41] ^= 0x40;
    fs::write(&r, &b).unwrap();
    let (_, state) = Storage::open_for_fetch(&info, [1; 32], &d.0).unwrap();
    assert_eq!(state.trusted, 0);
    assert!(state.ignored.unwrap().contains("corrupt"));
}

#[test]
fn symlinks_cannot_lead_outside_the_output_directory() {
    let d = Scratch::new("symlink");
    let outside = Scratch::new("symlink-outside");
    let out = d.0.join("out");
    fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink(&outside.0, out.join("tree")).unwrap();
    let all = data(20_000, 7);
    let files = vec![FileEntry {
        path: vec!["evil".into()],
        length: 20_000,
    }];
    let info = info_for("tree", &all, Some(files));
    let err = Storage::open_for_fetch(&info, [1; 32], &out)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("not a directory"), "{err}");
    assert_eq!(
        fs::read_dir(&outside.0).unwrap().count(),
        0,
        "nothing written outside"
    );
    // A symlink planted at the .part name of a single file is not followed either.
    let info = info_for("f", &all, None);
    std::os::unix::fs::symlink(outside.0.join("victim"), out.join("f.part")).unwrap();
    assert!(Storage::open_for_fetch(&info, [1; 32], &out).is_err());
    assert!(!outside.0.join("victim").exists());
}

#[test]
fn out_of_range_blocks_are_errors() {
    let d = Scratch::new("range");
    let all = data(20_000, 8);
    let info = info_for("f", &all, None);
    let (mut s, _) = Storage::open_for_fetch(&info, [1; 32], &d.0).unwrap();
    assert!(
        s.write(1, 3616, b"x").is_err(),
        "past the short last fragment"
    );
    assert!(s.write(2, 0, b"x").is_err(), "no such fragment");
    let mut b = [0u8; 10];
    assert!(s.read(0, 16380, &mut b).is_err());
}

#[test]
fn the_resume_file_has_its_room_reserved_and_finish_removes_it() {
    use std::os::unix::fs::MetadataExt;
    let d = Scratch::new("spare");
    let all = data(100_000, 9);
    let info = info_for("s", &all, None);
    let spare = part_name(&resume_name(&d.0, "s"));
    let reserved = |what: &str| {
        let m = fs::metadata(&spare).unwrap_or_else(|e| panic!("{what}: no spare file: {e}"));
        assert_eq!(m.len(), resume_len(7), "{what}: spare size");
        assert!(m.blocks() * 512 >= m.len(), "{what}: spare not allocated");
    };
    // A stale spare of another size (another swarm of the same name) is resized.
    fs::write(&spare, vec![1u8; 5000]).unwrap();
    let (mut s, _) = Storage::open_for_fetch(&info, [4; 32], &d.0).unwrap();
    reserved("after open");
    s.store_fragment(3, fragment(&all, 3)).unwrap();
    assert_eq!(s.sync_resume().unwrap(), 1);
    reserved("after a sync");
    let r = fs::read(resume_name(&d.0, "s")).unwrap();
    assert!(decode_resume(&r, &[4; 32], 7).unwrap()[3]);
    for i in (0..7).filter(|&i| i != 3) {
        s.store_fragment(i, fragment(&all, i)).unwrap();
    }
    assert_eq!(s.sync_resume().unwrap(), 7);
    reserved("after a second sync");
    s.finish().unwrap();
    assert!(!spare.exists(), "finish removes the spare");
    assert!(!resume_name(&d.0, "s").exists());
    assert_eq!(fs::read(d.0.join("s")).unwrap(), all);
}

/// Waits (polling, as the reactor would after a wake-up) for the disk thread's next result.
fn next_result(d: &mut disk::DiskThread) -> Done {
    loop {
        if let Some(r) = d.poll() {
            return r;
        }
        std::thread::yield_now();
    }
}

#[test]
fn the_disk_thread_writes_verifies_syncs_and_finishes_off_the_caller() {
    use crate::driver::NoWake;
    use crate::storage::Store;
    use disk::DiskThread;
    let d = Scratch::new("disk-thread");
    let all = data(50_000, 5);
    let info = info_for("blob.bin", &all, None);
    let (s, _) = Storage::open_for_fetch(&info, [9; 32], &d.0).unwrap();
    let mut t = DiskThread::spawn(s, std::sync::Arc::new(NoWake)).unwrap();
    // Fragment 0 right, fragment 1 with one byte wrong.
    t.write(0, 0, fragment(&all, 0)).unwrap();
    let mut bad = fragment(&all, 1).to_vec();
    bad[100] ^= 1;
    t.write(1, 0, &bad).unwrap();
    // The check is queued, not done by the caller: it answers "pending".
    assert_eq!(t.verify(0).unwrap(), None);
    assert_eq!(t.verify(1).unwrap(), None);
    assert_eq!(t.pending(), 2);
    assert!(matches!(next_result(&mut t), Done::Verified(0, true)));
    assert!(matches!(next_result(&mut t), Done::Verified(1, false)));
    assert_eq!(t.pending(), 0);
    // The view the reactor serves from follows the thread's results.
    assert!(t.view().has(0) && !t.view().has(1));
    let mut buf = vec![0u8; 1000];
    t.read(0, 2000, &mut buf).unwrap();
    assert_eq!(buf, fragment(&all, 0)[2000..3000]);
    // A sync records exactly the verified fragment.
    let (synced, failed) = t.sync_and_wait();
    assert_eq!(synced.unwrap(), 1);
    assert!(failed.is_none());
    // Finishing before everything is verified is refused, and says why.
    t.finish().unwrap();
    match next_result(&mut t) {
        Done::Finished(Err(e)) => assert!(e.to_string().contains("not verified"), "{e}"),
        other => panic!("unexpected {other:?}"),
    }
    for i in 1..info.hashes.len() as u32 {
        t.write(i, 0, fragment(&all, i)).unwrap();
        assert_eq!(t.verify(i).unwrap(), None);
    }
    for _ in 1..info.hashes.len() {
        assert!(matches!(next_result(&mut t), Done::Verified(_, true)));
    }
    t.finish().unwrap();
    assert!(matches!(next_result(&mut t), Done::Finished(Ok(()))));
    let s = t.shut_down().expect("the thread returns the storage");
    assert!(s.missing().next().is_none());
    assert_eq!(fs::read(d.0.join("blob.bin")).unwrap(), all);
    assert!(!d.0.join("blob.bin.part").exists());
    assert!(!resume_name(&d.0, "blob.bin").exists());
}

#[test]
fn a_sync_records_every_fragment_whose_check_was_queued_before_it() {
    use crate::driver::NoWake;
    use crate::storage::Store;
    use disk::DiskThread;
    let d = Scratch::new("disk-thread-hash");
    let all = data(200_000, 6);
    let info = info_for("blob.bin", &all, None);
    let n = info.hashes.len() as u32;
    let (s, _) = Storage::open_for_fetch(&info, [9; 32], &d.0).unwrap();
    let mut t = DiskThread::spawn(s, std::sync::Arc::new(NoWake)).unwrap();
    // Blocks of 4 KiB; odd fragments' blocks in reverse, so that the hash thread reads them
    // back, even ones in order, hashed on the way.
    for i in 0..n {
        let f = fragment(&all, i);
        let mut blocks: Vec<(usize, &[u8])> = f
            .chunks(4096)
            .enumerate()
            .map(|(k, b)| (k * 4096, b))
            .collect();
        if i % 2 == 1 {
            blocks.reverse();
        }
        for (at, b) in blocks {
            t.write(i, at as u32, b).unwrap();
        }
        assert_eq!(t.verify(i).unwrap(), None);
    }
    // No result taken yet: the sync still records every fragment, as it waits for the checks
    // queued before it.
    let (synced, failed) = t.sync_and_wait();
    assert!(failed.is_none());
    assert_eq!(synced.unwrap(), n as usize);
    // The waiting applied the checks' results (every one a match) to the view.
    assert_eq!(t.pending(), 0);
    assert!((0..n).all(|i| t.view().has(i)));
    // Shut down with more checks in flight: the storage comes back with them recorded.
    let (s, _) = Storage::open_for_fetch(&info, [9; 32], &d.0).unwrap();
    assert!(s.missing().next().is_none(), "the resume file trusted all");
    let d2 = Scratch::new("disk-thread-hash-2");
    let (s, _) = Storage::open_for_fetch(&info, [9; 32], &d2.0).unwrap();
    let mut t = DiskThread::spawn(s, std::sync::Arc::new(NoWake)).unwrap();
    for i in 0..n {
        t.write(i, 0, fragment(&all, i)).unwrap();
        t.verify(i).unwrap();
    }
    let s = t.shut_down().expect("the thread returns the storage");
    assert!(s.missing().next().is_none());
}

#[test]
fn a_failed_write_on_the_disk_thread_is_reported_and_stops_later_work() {
    use crate::driver::NoWake;
    use crate::storage::Store;
    use disk::DiskThread;
    let d = Scratch::new("disk-thread-fail");
    let all = data(50_000, 6);
    let info = info_for("blob.bin", &all, None);
    let (s, _) = Storage::open_for_fetch(&info, [9; 32], &d.0).unwrap();
    let mut t = DiskThread::spawn(s, std::sync::Arc::new(NoWake)).unwrap();
    // A block past the end of its fragment cannot be written.
    t.write(0, 16_000, &[0u8; 1000]).unwrap();
    assert!(matches!(next_result(&mut t), Done::Failed(_)));
    // After a failure nothing more is written or verified (the fetch stops), but a sync
    // still answers, so the resume state can be saved.
    t.write(0, 0, fragment(&all, 0)).unwrap();
    assert_eq!(t.verify(0).unwrap(), None);
    let (synced, failed) = t.sync_and_wait();
    assert_eq!(synced.unwrap(), 0);
    assert!(failed.is_none(), "reported already");
    assert!(!t.view().has(0));
    // A failure met while a shutdown sync waits is handed to the caller with the sync's
    // result, and an earlier sync still out is waited for too.
    let (s2, _) = Storage::open_for_fetch(&info, [9; 32], &d.0).unwrap();
    let mut t2 = DiskThread::spawn(s2, std::sync::Arc::new(NoWake)).unwrap();
    t2.sync().unwrap();
    t2.write(0, 16_000, &[0u8; 1000]).unwrap();
    let (synced, failed) = t2.sync_and_wait();
    assert!(synced.is_ok());
    assert!(failed.is_some(), "the write failure reached the caller");
    assert!(
        t2.poll().is_none(),
        "both syncs were answered inside the wait"
    );
}

#[test]
fn the_disk_thread_takes_message_buffers_and_hands_them_back_for_reuse() {
    use crate::driver::NoWake;
    use crate::storage::Store;
    use disk::DiskThread;
    let d = Scratch::new("disk-thread-owned");
    let all = data(50_000, 7);
    let info = info_for("blob.bin", &all, None);
    let (s, _) = Storage::open_for_fetch(&info, [9; 32], &d.0).unwrap();
    let mut t = DiskThread::spawn(s, std::sync::Arc::new(NoWake)).unwrap();
    // A DATA message: 9 header bytes, then the block.
    let mut msg = vec![0xEE; 9];
    msg.extend_from_slice(fragment(&all, 0));
    let first = msg.as_ptr();
    let next = t.write_owned(0, 0, msg, 9).unwrap();
    assert_ne!(
        next.as_ptr(),
        first,
        "the written buffer went to the thread"
    );
    assert_eq!(t.verify(0).unwrap(), None);
    assert!(matches!(next_result(&mut t), Done::Verified(0, true)));
    // The thread is done with the first buffer: the next write gets it back (no new one).
    let mut msg = next;
    msg.clear();
    msg.extend_from_slice(&[0xEE; 9]);
    msg.extend_from_slice(fragment(&all, 1));
    let reused = t.write_owned(1, 0, msg, 9).unwrap();
    assert_eq!(reused.as_ptr(), first);
    assert_eq!(t.verify(1).unwrap(), None);
    assert!(matches!(next_result(&mut t), Done::Verified(1, true)));
}

/// A waker that holds the disk thread (it wakes the driver after each result) until the test
/// opens it: the thread's operation queue can then be filled.
#[derive(Default)]
struct Gate {
    open: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Gate {
    fn set(&self, open: bool) {
        *self.open.lock().unwrap() = open;
        self.cv.notify_all();
    }
}

impl crate::driver::Wake for Gate {
    fn wake(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }
}

#[test]
fn the_disk_thread_reads_ahead_for_the_caller_without_making_it_wait() {
    use crate::storage::Store;
    use disk::{DiskThread, QUEUE};
    use std::sync::Arc;
    let d = Scratch::new("disk-thread-prefetch");
    let all = data(50_000, 8);
    let info = info_for("blob.bin", &all, None);
    let (s, _) = Storage::open_for_fetch(&info, [9; 32], &d.0).unwrap();
    let gate = Arc::new(Gate::default());
    gate.set(true);
    let mut t = DiskThread::spawn(s, gate.clone()).unwrap();
    // What is just written is in the page cache: the thread would not be asked.
    t.always_prefetch();
    for i in 0..info.hashes.len() as u32 {
        t.write(i, 0, fragment(&all, i)).unwrap();
        assert_eq!(t.verify(i).unwrap(), None);
        assert!(matches!(next_result(&mut t), Done::Verified(_, true)));
    }
    // A prefetch is the thread's work: "not yet", then its result.
    assert!(!t.prefetch(1, 100, 5000));
    match next_result(&mut t) {
        Done::Prefetched {
            fragment: 1,
            offset: 100,
            len: 5000,
        } => {}
        other => panic!("unexpected {other:?}"),
    }
    let mut buf = vec![0u8; 5000];
    t.read(1, 100, &mut buf).unwrap();
    assert_eq!(buf, fragment(&all, 1)[100..5100]);
    // One that fails (past the end of the fragment) is reported as done all the same: the
    // read that follows fails the usual way, and nothing else stops.
    assert!(!t.prefetch(3, 0, 16384));
    assert!(matches!(
        next_result(&mut t),
        Done::Prefetched { fragment: 3, .. }
    ));
    assert!(t.read(3, 0, &mut vec![0u8; 16384]).is_err());
    // With the thread held and its operation queue full, a prefetch still answers at once.
    gate.set(false);
    assert_eq!(t.verify(0).unwrap(), None);
    for _ in 0..QUEUE {
        assert_eq!(t.verify(0).unwrap(), None);
    }
    // (Should a prefetch block, the watchdog opens the gate, and the test fails below.)
    let late = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let (gate, late) = (gate.clone(), late.clone());
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(10));
            late.store(true, std::sync::atomic::Ordering::SeqCst);
            gate.set(true);
        })
    };
    for k in 0..100 {
        assert!(!t.prefetch(k % 3, 0, 16384));
    }
    assert!(
        !late.load(std::sync::atomic::Ordering::SeqCst),
        "a prefetch waited for the disk thread"
    );
    gate.set(true);
    let (mut verified, mut prefetched) = (0, 0);
    while verified + prefetched < QUEUE + 1 + 100 {
        match next_result(&mut t) {
            Done::Verified(0, true) => verified += 1,
            Done::Prefetched { len: 16384, .. } => prefetched += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((verified, prefetched), (QUEUE + 1, 100));
    drop(t);
    // The watchdog's sleep is not waited for: it only opens a gate nobody uses any more.
    drop(watchdog);
}

#[test]
fn a_seeds_disk_thread_starts_with_the_first_prefetch() {
    use crate::driver::NoWake;
    use crate::storage::{Store, SwarmStore};
    use disk::DiskThread;
    let d = Scratch::new("disk-thread-seed");
    let all = data(50_000, 9);
    let info = info_for("blob.bin", &all, None);
    fs::write(d.0.join("blob.bin"), &all).unwrap();
    let mut s = Storage::open_for_seed(&info, [9; 32], &d.0.join("blob.bin")).unwrap();
    for i in 0..info.hashes.len() as u32 {
        assert!(s.verify(i).unwrap());
    }
    let mut t = DiskThread::on_demand(s, std::sync::Arc::new(NoWake));
    t.always_prefetch();
    // Before: reads and the verified set work, and nothing is reported.
    assert!(t.is_verified(2));
    let mut buf = vec![0u8; 1000];
    t.read(2, 10, &mut buf).unwrap();
    assert_eq!(buf, fragment(&all, 2)[10..1010]);
    assert!(t.poll().is_none(), "no thread, no result, no failure");
    assert!(
        !t.has_channels(),
        "no thread, no channels: a library's idle swarms cost none"
    );
    // The first prefetch starts the thread, which answers.
    assert!(!t.prefetch(0, 0, 16384));
    assert!(t.has_channels());
    assert!(matches!(
        next_result(&mut t),
        Done::Prefetched {
            fragment: 0,
            offset: 0,
            len: 16384
        }
    ));
    t.read(0, 0, &mut buf).unwrap();
    assert_eq!(buf, fragment(&all, 0)[..1000]);
    let s = t.shut_down().expect("the thread returns its storage");
    assert!(s.has(3));
}

#[test]
fn a_block_in_the_page_cache_is_ready_at_once_and_one_on_disk_is_read_by_the_thread() {
    use crate::driver::NoWake;
    use crate::storage::Store;
    use disk::DiskThread;
    use std::os::fd::AsRawFd;
    let d = Scratch::new("disk-thread-cache");
    let all = data(50_000, 10);
    let info = info_for("blob.bin", &all, None);
    let path = d.0.join("blob.bin");
    fs::write(&path, &all).unwrap();
    let mut s = Storage::open_for_seed(&info, [9; 32], &path).unwrap();
    for i in 0..info.hashes.len() as u32 {
        assert!(s.verify(i).unwrap());
    }
    if !s.cached(1, 0, 16384) {
        eprintln!("cachestat(2) unavailable (Linux < 6.5?): every prefetch goes to the thread");
        return;
    }
    let mut t = DiskThread::on_demand(s, std::sync::Arc::new(NoWake));
    assert!(
        t.prefetch(1, 0, 16384),
        "held by the page cache: ready at once"
    );
    assert!(t.poll().is_none());
    // Out of the page cache (where the file system lets it go: not tmpfs), the block is the
    // thread's, which brings it back in.
    let f = fs::File::open(&path).unwrap();
    f.sync_all().unwrap();
    // SAFETY: posix_fadvise on a descriptor we own.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if t.view().cached(2, 0, 16384) {
        eprintln!("the page cache kept the file (tmpfs?): the cold case is not tested here");
        return;
    }
    assert!(!t.prefetch(2, 0, 16384));
    assert!(matches!(
        next_result(&mut t),
        Done::Prefetched { fragment: 2, .. }
    ));
    assert!(
        t.view().cached(2, 0, 16384),
        "the thread's read left it cached"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn a_file_in_memory_is_cached_without_asking_the_page_cache() {
    // procfs is not held in memory as tmpfs is: its files are asked about.
    let proc = fs::File::open("/proc/self/stat").unwrap();
    assert!(!super::page_cache::in_memory(&proc));
    let shm = Path::new("/dev/shm");
    let Ok(f) = fs::File::open(shm) else {
        eprintln!("no /dev/shm: the tmpfs case is not tested here");
        return;
    };
    if !super::page_cache::in_memory(&f) {
        eprintln!("/dev/shm is not tmpfs here: the tmpfs case is not tested here");
        return;
    }
    let dir = shm.join(format!("st-storage-in-memory-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let all = data(50_000, 10);
    let info = info_for("blob.bin", &all, None);
    let path = dir.join("blob.bin");
    fs::write(&path, &all).unwrap();
    let s = Storage::open_for_seed(&info, [9; 32], &path).unwrap();
    // Every fragment, and the reader's view too, without a cachestat(2) (which kernels
    // before 6.5 lack: there this is what makes a tmpfs seed serve without its disk thread).
    assert!((0..info.hashes.len() as u32).all(|i| s.cached(i, 0, s.fragment_len(i))));
    assert!(s.reader().unwrap().cached(1, 0, 16384));
    // A fetch there is not preallocated page by page: the file is extended (sparse), after
    // a check of the room, and a file larger than the room is refused as a disk would.
    let out = dir.join("out");
    fs::create_dir_all(&out).unwrap();
    let (mut f, state) = Storage::open_for_fetch(&info, [9; 32], &out).unwrap();
    assert_eq!(state.not_preallocated, None);
    let part = fs::metadata(out.join("blob.bin.part")).unwrap();
    assert_eq!(part.len(), all.len() as u64);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(part.blocks(), 0, "nothing allocated ahead");
    f.write(0, 0, fragment(&all, 0)).unwrap();
    assert!(f.verify(0).unwrap());
    // The first write allocated its chunk (here the whole file) in one go.
    let part = fs::metadata(out.join("blob.bin.part")).unwrap();
    assert!(
        part.blocks() * 512 >= all.len() as u64,
        "{} blocks",
        part.blocks()
    );
    let big = fs::File::create(dir.join("big")).unwrap();
    let e = super::preallocate(&big, 1 << 60, true).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_storage_error_keeps_its_kind_and_names_the_file() {
    let e = StorageError::File {
        what: "write",
        path: PathBuf::from("/out/x.part"),
        source: io::Error::from(io::ErrorKind::StorageFull),
    };
    assert_eq!(e.kind(), io::ErrorKind::StorageFull);
    let carried: io::Error = e.into();
    assert_eq!(
        carried.kind(),
        io::ErrorKind::StorageFull,
        "a full disk stays one"
    );
    assert!(
        carried
            .to_string()
            .starts_with("cannot write /out/x.part: "),
        "{carried}"
    );
    let refused: io::Error = StorageError::NotVerified(3).into();
    assert_eq!(
        refused.to_string(),
        "fragment 3 is not verified; refusing to finish"
    );
}

/// Spec peer.md §8.1: a name of up to 255 bytes is valid in a `.st` file, so the temporary
/// names (`NAME.part`, `.NAME.st-resume` and its spare) must fit too.
#[test]
fn names_of_255_bytes_fetch_with_fitted_temporary_names() {
    let d = Scratch::new("longname");
    let all = data(40_000, 2);
    // 253 ASCII bytes and a 2-byte character: 255 bytes.
    let name = format!("{}é", "n".repeat(253));
    assert_eq!(name.len(), 255);
    let info = info_for(&name, &all, None);
    let (mut s, _) = Storage::open_for_fetch(&info, [7; 32], &d.0).unwrap();
    let part = part_name(&d.0.join(&name));
    assert!(part.exists());
    let len = |p: &std::path::Path| p.file_name().unwrap().len();
    assert!(len(&part) <= 255 && len(&resume_name(&d.0, &name)) <= 255);
    for i in 0..3 {
        assert!(s.store_fragment(i, fragment(&all, i)).unwrap());
    }
    s.sync_resume().unwrap();
    assert!(resume_name(&d.0, &name).exists());
    drop(s);
    // A re-run finds the same temporary files (it resumes).
    let (mut s, state) = Storage::open_for_fetch(&info, [7; 32], &d.0).unwrap();
    assert_eq!(state.trusted, 3);
    assert!(s.finish().is_ok());
    assert_eq!(fs::read(d.0.join(&name)).unwrap(), all);
    assert!(!part.exists() && !resume_name(&d.0, &name).exists());
    // Two long names that share their first bytes get different temporary names.
    let other = format!("{}x", "n".repeat(254));
    assert_ne!(fit_name("", &name, ".part"), fit_name("", &other, ".part"));
    assert_eq!(fit_name(".", "short", ".st-resume"), ".short.st-resume");
}

/// A directory swarm of two files, `a` (20 000 bytes) and `sub/b` (the rest).
fn two_files(name: &str, all: &[u8]) -> Info {
    info_for(
        name,
        all,
        Some(vec![
            FileEntry {
                path: vec!["a".into()],
                length: 20_000,
            },
            FileEntry {
                path: vec!["sub".into(), "b".into()],
                length: all.len() as u64 - 20_000,
            },
        ]),
    )
}

/// Nothing under the final names: no existing data; a final name that is a directory or a
/// symlink is refused, never replaced.
#[test]
fn existing_data_is_found_under_final_names_only() {
    let d = Scratch::new("existing");
    let all = data(50_000, 4);
    let info = info_for("blob.bin", &all, None);
    fs::write(d.0.join("blob.bin.part"), &all).unwrap();
    assert_eq!(
        existing(&info, &d.0).unwrap(),
        None,
        "a .part alone is a resume"
    );
    fs::write(d.0.join("blob.bin"), &all[..1000]).unwrap();
    let e = existing(&info, &d.0).unwrap().unwrap();
    assert_eq!(e.read, vec![d.0.join("blob.bin")]);
    assert!(!e.lengths_match, "1000 bytes of 50 000");
    fs::remove_file(d.0.join("blob.bin")).unwrap();
    fs::create_dir(d.0.join("blob.bin")).unwrap();
    let err = existing(&info, &d.0).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
    fs::remove_dir(d.0.join("blob.bin")).unwrap();
    std::os::unix::fs::symlink(d.0.join("blob.bin.part"), d.0.join("blob.bin")).unwrap();
    assert!(existing(&info, &d.0).is_err(), "a symlink is not followed");
}

/// A fetch stopped while moving its files into place: one final, one `.part`, the resume
/// file. Both are read for the check, and adopting moves the `.part` into place and removes
/// the resume state.
#[test]
fn adopting_finishes_a_fetch_stopped_between_renames() {
    let d = Scratch::new("adopt");
    let all = data(50_000, 5);
    let info = two_files("set", &all);
    let (mut s, _) = Storage::open_for_fetch(&info, [7; 32], &d.0).unwrap();
    for i in 0..4 {
        assert!(s.store_fragment(i, fragment(&all, i)).unwrap());
    }
    s.sync_resume().unwrap();
    drop(s);
    // The first rename of finish() happened, then the crash.
    fs::rename(d.0.join("set/a.part"), d.0.join("set/a")).unwrap();
    let e = existing(&info, &d.0).unwrap().unwrap();
    assert_eq!(e.read, vec![d.0.join("set/a"), d.0.join("set/sub/b.part")]);
    assert_eq!(e.finals, vec![d.0.join("set/a")]);
    assert!(e.lengths_match);
    adopt(&info, &d.0).unwrap();
    assert_eq!(fs::read(d.0.join("set/a")).unwrap(), &all[..20_000]);
    assert_eq!(fs::read(d.0.join("set/sub/b")).unwrap(), &all[20_000..]);
    assert!(!d.0.join("set/sub/b.part").exists());
    assert!(!resume_name(&d.0, "set").exists());
    assert!(!part_name(&resume_name(&d.0, "set")).exists());
}

/// `--force`: the existing final file becomes the `.part`, cut to length, and the old resume
/// state goes; a fetch opened afterwards trusts nothing it did not check.
#[test]
fn taking_over_moves_finals_to_part_names_and_drops_the_resume_state() {
    let d = Scratch::new("takeover");
    let all = data(50_000, 6);
    let info = info_for("blob.bin", &all, None);
    // An old resume state that trusts every fragment of an old .part.
    let (mut s, _) = Storage::open_for_fetch(&info, [7; 32], &d.0).unwrap();
    for i in 0..4 {
        assert!(s.store_fragment(i, fragment(&all, i)).unwrap());
    }
    s.sync_resume().unwrap();
    drop(s);
    // Someone else's longer file under the final name.
    let mut other = data(60_000, 99);
    other[..16384].copy_from_slice(fragment(&all, 0));
    fs::write(d.0.join("blob.bin"), &other).unwrap();
    assert_eq!(take_over(&info, &d.0).unwrap(), 1);
    assert!(!d.0.join("blob.bin").exists());
    assert_eq!(
        fs::read(d.0.join("blob.bin.part")).unwrap(),
        &other[..50_000],
        "moved and cut to the swarm's length"
    );
    let (s, state) = Storage::open_for_fetch(&info, [7; 32], &d.0).unwrap();
    assert_eq!(
        state.trusted, 0,
        "the old resume state described other bytes"
    );
    assert_eq!(s.verified_count(), 0);
    assert_eq!(
        take_over(&info, &d.0).unwrap(),
        0,
        "nothing left to take over"
    );
}

/// A `.part` longer than its file (another swarm of the same name) is cut to length.
#[test]
fn a_long_part_file_is_cut_to_length() {
    let d = Scratch::new("longpart");
    let all = data(50_000, 7);
    let info = info_for("blob.bin", &all, None);
    fs::write(d.0.join("blob.bin.part"), data(70_000, 1)).unwrap();
    let (mut s, _) = Storage::open_for_fetch(&info, [7; 32], &d.0).unwrap();
    for i in 0..4 {
        assert!(s.store_fragment(i, fragment(&all, i)).unwrap());
    }
    s.finish().unwrap();
    assert_eq!(fs::read(d.0.join("blob.bin")).unwrap(), all);
}

/// A scratch directory on /dev/shm if that is tmpfs (else `None`, and the test says it skips).
#[cfg(target_os = "linux")]
fn shm_scratch(tag: &str) -> Option<Scratch> {
    let shm = Path::new("/dev/shm");
    match fs::File::open(shm) {
        Ok(f) if super::page_cache::in_memory(&f) => {}
        _ => {
            eprintln!("/dev/shm is not tmpfs here: the tmpfs case is not tested here");
            return None;
        }
    }
    let dir = shm.join(format!("st-storage-{tag}-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    Some(Scratch(dir))
}

/// On tmpfs the disk thread allocates a fetch's data file while it has nothing else to do
/// (spec peer.md §8.1), 2 MiB at a time, so that writes find their pages there; the writes and
/// checks that come meanwhile are served as before.
#[cfg(target_os = "linux")]
#[test]
fn an_idle_disk_thread_allocates_a_file_held_in_memory() {
    use crate::driver::NoWake;
    use crate::storage::Store;
    use disk::DiskThread;
    use std::os::unix::fs::MetadataExt;
    let Some(d) = shm_scratch("idle-alloc") else {
        return;
    };
    // 5 MiB and a bit: three chunks, the last one short.
    let all = data((5 << 20) + 1000, 3);
    let info = info_for("blob.bin", &all, None);
    let (s, _) = Storage::open_for_fetch(&info, [9; 32], &d.0).unwrap();
    let part = d.0.join("blob.bin.part");
    assert_eq!(
        fs::metadata(&part).unwrap().blocks(),
        0,
        "allocated at open"
    );
    let mut t = DiskThread::spawn(s, std::sync::Arc::new(NoWake)).unwrap();
    // A write of the last fragment and its check, while the thread allocates.
    let last = info.hashes.len() as u32 - 1;
    t.write(last, 0, fragment(&all, last)).unwrap();
    assert_eq!(t.verify(last).unwrap(), None);
    assert!(matches!(next_result(&mut t), Done::Verified(i, true) if i == last));
    // Nothing else is asked of it: it allocates the whole file (waited for, not timed: the
    // loop ends as soon as the blocks are there).
    let whole = |p: &Path| fs::metadata(p).unwrap().blocks() * 512 >= all.len() as u64;
    for _ in 0..6000 {
        if whole(&part) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        whole(&part),
        "{} blocks",
        fs::metadata(&part).unwrap().blocks()
    );
    // The data written before is intact.
    let mut buf = vec![0u8; 1000];
    t.read(last, 0, &mut buf).unwrap();
    assert_eq!(buf, fragment(&all, last)[..1000]);
}

/// Allocation ahead of the writes on tmpfs is bounded (spec peer.md §8.1): at most 16 chunks
/// (32 MiB) or as many as the writes reached are allocated and not yet written, so a slow
/// fetch's memory grows with its data.
#[cfg(target_os = "linux")]
#[test]
fn allocation_ahead_of_the_writes_is_bounded_by_what_they_reached() {
    use std::os::unix::fs::MetadataExt;
    let Some(d) = shm_scratch("ahead-bound") else {
        return;
    };
    const MIB: usize = 1 << 20;
    // 20 chunks of 2 MiB.
    let all = data(40 * MIB, 7);
    let info = info_for("blob.bin", &all, None);
    let (mut s, state) = Storage::open_for_fetch(&info, [9; 32], &d.0).unwrap();
    assert_eq!(state.not_preallocated, None);
    let part = d.0.join("blob.bin.part");
    let allocated = || fs::metadata(&part).unwrap().blocks() * 512;
    let mut n = 0;
    while s.allocate_ahead() {
        n += 1;
    }
    assert_eq!(n, 16, "the first budget is 16 chunks");
    assert_eq!(allocated(), 32 << 20);
    // Writes reach chunks 0..18 (16 allocated ahead, 2 not): the budget is now what they
    // reached, and the last 2 chunks may be allocated ahead.
    let per_chunk = (2 * MIB / 16384) as u32;
    for c in 0..18u32 {
        let i = c * per_chunk;
        s.write(i, 0, fragment(&all, i)).unwrap();
    }
    assert_eq!(allocated(), 36 << 20);
    let mut more = 0;
    while s.allocate_ahead() {
        more += 1;
    }
    assert_eq!(more, 2);
    assert_eq!(allocated(), 40 << 20);
}
