use std::sync::{Arc, Mutex};

use super::*;
use crate::wire::encode_event;

fn options(dir: &Path, history: usize, fsync: Fsync) -> LogOptions {
    LogOptions {
        dir: dir.to_owned(),
        fsync,
        history,
        history_bytes: usize::MAX,
    }
}

/// Starts a log whose sink collects the ids it gets.
fn start(options: LogOptions) -> (DiskLog, Vec<StoredEvent>, Arc<Mutex<Vec<EventId>>>) {
    let mut opened = open(options).expect("log opens");
    let events = opened.take_events();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let log = opened
        .start(move |event| sink.lock().unwrap().push(event.id))
        .expect("writer starts");
    (log, events, seen)
}

fn next_event(epoch: u64, data: String) -> impl FnOnce(Option<EventId>) -> StoredEvent {
    move |last| {
        let seq = last.filter(|id| id.ms == epoch).map_or(1, |id| id.seq + 1);
        let id = EventId::new(epoch, seq);
        StoredEvent {
            id,
            topic: Arc::from("t"),
            wire: encode_event(&id.to_string(), "message", &data),
        }
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_stored_once_in_id_order_and_restored() {
    let dir = tempfile::tempdir().unwrap();
    let (log, restored, seen) = start(options(dir.path(), 1000, Fsync::Always));
    assert!(restored.is_empty());
    let log = Arc::new(log);
    let mut tasks = tokio::task::JoinSet::new();
    for publisher in 0..8 {
        let log = Arc::clone(&log);
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for n in 0..25 {
                ids.push(log.append(next_event(5, format!("{publisher}/{n}"))).await);
            }
            ids
        });
    }
    let mut acked: Vec<EventId> = tasks
        .join_all()
        .await
        .into_iter()
        .flatten()
        .map(|r| r.expect("append succeeds"))
        .collect();
    acked.sort();
    assert_eq!(acked.len(), 200);
    assert_eq!(
        *seen.lock().unwrap(),
        acked,
        "sink got each event once, in id order"
    );
    log.shutdown().await;
    drop(log);

    let (log, restored, _) = start(options(dir.path(), 1000, Fsync::Always));
    let ids: Vec<_> = restored.iter().map(|e| e.id).collect();
    assert_eq!(ids, acked);
    assert!(restored
        .iter()
        .all(|e| e.wire.starts_with(format!("id: {}\n", e.id).as_bytes())));
    let next = log.append(next_event(6, "after".into())).await.unwrap();
    assert!(next > *acked.last().unwrap());
}

#[tokio::test]
async fn every_fsync_mode_stores_events() {
    for fsync in [Fsync::Always, Fsync::Everysec, Fsync::No] {
        let dir = tempfile::tempdir().unwrap();
        let (log, _, _) = start(options(dir.path(), 100, fsync));
        for n in 0..10 {
            log.append(next_event(1, n.to_string())).await.unwrap();
        }
        log.shutdown().await;
        assert!(log.append(next_event(1, "late".into())).await.is_err());
        drop(log);
        let (_, restored, _) = start(options(dir.path(), 100, fsync));
        assert_eq!(restored.len(), 10, "{fsync:?}");
    }
}

#[tokio::test]
async fn old_segments_are_deleted_once_history_is_held_by_newer_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = start(options(dir.path(), 16, Fsync::No));
    for n in 0..200 {
        log.append(next_event(1, n.to_string())).await.unwrap();
    }
    drop(log);
    // 16 events in segments of 2: at most 8 full ones plus the active one.
    let files = segments(dir.path());
    assert!(files.len() <= 9, "{} segments kept", files.len());
    let (_, restored, _) = start(options(dir.path(), 16, Fsync::No));
    let seqs: Vec<_> = restored.iter().map(|e| e.id.seq).collect();
    assert_eq!(seqs, (185..=200).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_restart_with_a_smaller_history_trims_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = start(options(dir.path(), 1000, Fsync::No));
    for n in 0..300 {
        log.append(next_event(1, n.to_string())).await.unwrap();
    }
    drop(log);
    let (log, restored, _) = start(options(dir.path(), 10, Fsync::No));
    assert_eq!(restored.len(), 10);
    log.append(next_event(2, "x".into())).await.unwrap();
    drop(log);
    assert!(segments(dir.path()).len() <= 2);
}

/// Writes `n` events to one fresh log and returns the newest segment and
/// the end offset of each record in it.
async fn one_segment(dir: &Path, n: usize) -> (PathBuf, Vec<u64>) {
    let (log, _, _) = start(options(dir, 1000, Fsync::Always));
    for i in 0..n {
        log.append(next_event(1, "x".repeat(i))).await.unwrap();
    }
    drop(log);
    let file = segments(dir).pop().unwrap();
    let buf = Bytes::from(fs::read(&file).unwrap());
    let mut ends = Vec::new();
    let mut offset = record::MAGIC.len();
    let mut topics = record::Topics::default();
    while let record::Decoded::Record { next, .. } = record::decode(&buf, offset, &mut topics) {
        ends.push(next as u64);
        offset = next;
    }
    assert_eq!(ends.len(), n);
    (file, ends)
}

use bytes::Bytes;

#[tokio::test]
async fn a_torn_tail_is_cut_at_every_offset_keeping_every_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    let (file, ends) = one_segment(dir.path(), 6).await;
    let whole = fs::read(&file).unwrap();
    for cut in 0..whole.len() {
        for garbage in [
            &b""[..],
            b"\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            b"garbage after a torn write",
        ] {
            let mut damaged = whole[..cut].to_vec();
            damaged.extend_from_slice(garbage);
            fs::write(&file, &damaged).unwrap();
            let (_, restored, _) = start(options(dir.path(), 1000, Fsync::Always));
            let complete = ends.iter().filter(|&&end| end <= cut as u64).count();
            assert_eq!(
                restored.len(),
                complete,
                "cut at {cut}, garbage {garbage:?}"
            );
            // Put the segment back (recovery may have cut or removed it).
            fs::write(&file, &whole).unwrap();
        }
    }
}

#[tokio::test]
async fn damage_with_whole_records_after_it_refuses_to_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (file, ends) = one_segment(dir.path(), 5).await;
    let mut bytes = fs::read(&file).unwrap();
    bytes[ends[1] as usize + 10] ^= 0x40;
    fs::write(&file, &bytes).unwrap();
    let err = open(options(dir.path(), 1000, Fsync::Always)).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains(&format!("byte {}", ends[1])), "{message}");
    assert_eq!(
        fs::read(&file).unwrap(),
        bytes,
        "the file is left as it was"
    );
}

#[tokio::test]
async fn damage_in_an_older_segment_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = start(options(dir.path(), 16, Fsync::No));
    for n in 0..10 {
        log.append(next_event(1, n.to_string())).await.unwrap();
    }
    drop(log);
    let first = segments(dir.path()).remove(0);
    let len = fs::metadata(&first).unwrap().len();
    // A torn tail in a segment that is not the newest is damage too.
    fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let err = open(options(dir.path(), 16, Fsync::No)).unwrap_err();
    assert!(
        err.to_string().contains(&first.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_second_server_on_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let held = open(options(dir.path(), 10, Fsync::Always)).unwrap();
    let err = open(options(dir.path(), 10, Fsync::Always)).unwrap_err();
    assert!(matches!(err, LogError::Locked { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    drop(held);
    open(options(dir.path(), 10, Fsync::Always)).expect("free again once released");
}

#[test]
fn a_data_dir_that_is_a_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, "x").unwrap();
    let err = open(options(&file, 10, Fsync::Always)).unwrap_err();
    assert!(matches!(err, LogError::Dir { .. }), "{err}");
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn history_bytes_bounds_the_disk_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path(), 100_000, Fsync::No);
    options.history_bytes = 8 * 1024;
    let (log, _, _) = start(options.clone());
    for n in 0..400 {
        log.append(next_event(1, format!("{n:0>100}")))
            .await
            .unwrap();
    }
    drop(log);
    let on_disk: u64 = segments(dir.path())
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum();
    // 8 KiB of events plus one segment of 1 KiB, and record overheads.
    assert!(on_disk < 16 * 1024, "{on_disk} bytes on disk");
    let (_, restored, _) = start(options);
    let kept: usize = restored.iter().map(|e| e.wire.len()).sum();
    assert!(kept <= 8 * 1024 && kept > 7 * 1024, "{kept} bytes restored");
    assert_eq!(restored.last().unwrap().id.seq, 400);
}
