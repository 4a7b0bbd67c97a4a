//! The writer thread: the only code that writes segment files.

use std::{
    collections::VecDeque,
    fs::{self, File},
    io,
    os::unix::fs::FileExt,
    path::PathBuf,
    sync::{mpsc, Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::oneshot;

use super::{
    record,
    recover::{segment_name, Segment},
    AppendError, Fsync, LogOptions, Msg,
};
use crate::{broker::StoredEvent, wire::EventId};

/// Segments per `--history`: a segment is deleted whole once the newer
/// ones hold `--history` events, so the disk holds at most 1/8 more events
/// than retained, and a restart reads at most that much more.
const SEGMENTS_PER_HISTORY: usize = 8;
/// A segment is closed at this size even before it holds its share of
/// `--history` events, so large events do not make one huge file that is
/// deleted only after all of it is out of history.
const SEGMENT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Most bytes of events written in one batch (one `write`, one flush):
/// bounds the writer's buffer under a burst; a larger burst takes several
/// batches.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Most bytes of zeros a segment is extended by at once. Writes into
/// space the file already has are flushed by `fdatasync` without a
/// journal commit for the file's size (measured here: 0.6 ms instead of
/// 6 ms per flush), so the writer extends segments ahead of the records
/// with zeros, by about what the segment will still need, at most this.
const PREALLOCATE_MAX: u64 = 8 * 1024 * 1024;
/// Least bytes a segment is extended by at once.
const PREALLOCATE_MIN: u64 = 64 * 1024;
/// Zeros to extend segments with.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
/// `--fsync everysec`: how long written events may wait for a flush.
const EVERYSEC: Duration = Duration::from_secs(1);

type Reply = oneshot::Sender<Result<EventId, AppendError>>;

/// Who is answered once a group of events is stored.
enum Answer {
    One(Reply),
    Many(oneshot::Sender<Result<Vec<EventId>, AppendError>>),
}

/// The segment being appended to.
struct Active {
    file: File,
    path: PathBuf,
    /// Bytes of whole records (and the header) in it.
    len: u64,
    /// Encoded bytes of the events in it.
    payload: u64,
    /// Size of the file: zeros follow the records up to here.
    allocated: u64,
    events: u64,
    /// A failed write may have left bytes between `len` and this offset;
    /// they are zeroed before the next write, so that no stale record can
    /// show up behind newer ones.
    dirty_to: Option<u64>,
}

pub(super) struct Writer {
    options: LogOptions,
    /// Closed segments, oldest first.
    sealed: VecDeque<Segment>,
    active: Option<Active>,
    /// Events in `sealed` and `active`.
    total: u64,
    /// Their encoded bytes.
    total_payload: u64,
    /// A segment is closed at this many events ...
    segment_events: u64,
    /// ... or at this many encoded bytes of events.
    segment_payload: u64,
    sink: Box<dyn FnMut(StoredEvent) + Send>,
    problem: Arc<Mutex<Option<AppendError>>>,
    /// When events were first written without a flush (`--fsync everysec`).
    unflushed_since: Option<Instant>,
    buf: Vec<u8>,
}

impl Writer {
    pub(super) fn new(
        options: LogOptions,
        segments: Vec<Segment>,
        sink: Box<dyn FnMut(StoredEvent) + Send>,
        problem: Arc<Mutex<Option<AppendError>>>,
    ) -> Self {
        let total = segments.iter().map(|s| s.events).sum();
        let total_payload = segments.iter().map(|s| s.payload).sum();
        let segment_events = options.history.div_ceil(SEGMENTS_PER_HISTORY).max(1) as u64;
        let segment_payload = (options.history_bytes / SEGMENTS_PER_HISTORY).max(1) as u64;
        Self {
            options,
            sealed: segments.into(),
            active: None,
            total,
            total_payload,
            segment_events,
            segment_payload,
            sink,
            problem,
            unflushed_since: None,
            buf: Vec::new(),
        }
    }

    /// Serves appends until told to stop or every sender is gone.
    pub(super) fn run(mut self, rx: &mpsc::Receiver<Msg>) {
        // Trim what recovery found beyond retention.
        self.retain();
        loop {
            let Some(first) = self.next(rx) else {
                self.flush_at_exit();
                return;
            };
            let mut batch = Vec::new();
            let mut bytes = 0;
            let mut stop = None;
            let mut msg = first;
            // Group commit: everything that queued up while the previous
            // batch was flushed goes out in this one.
            loop {
                match msg {
                    Msg::Append(event, reply) => {
                        bytes += event.wire.len();
                        batch.push((vec![event], Answer::One(reply)));
                    }
                    Msg::AppendMany(events, reply) => {
                        bytes += events.iter().map(|e| e.wire.len()).sum::<usize>();
                        batch.push((events, Answer::Many(reply)));
                    }
                    Msg::Stop(done) => {
                        stop = Some(done);
                        break;
                    }
                }
                if bytes >= MAX_BATCH_BYTES {
                    break;
                }
                match rx.try_recv() {
                    Ok(next) => msg = next,
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.commit(batch);
            }
            if let Some(done) = stop {
                self.flush_at_exit();
                let _ = done.send(());
                return;
            }
        }
    }

    /// The next message; flushes on time under `--fsync everysec` while
    /// waiting. `None` once every sender is gone.
    fn next(&mut self, rx: &mpsc::Receiver<Msg>) -> Option<Msg> {
        loop {
            let Some(since) = self.unflushed_since else {
                return rx.recv().ok();
            };
            let wait = (since + EVERYSEC).saturating_duration_since(Instant::now());
            // Under a steady stream of events the wait below never times
            // out: flush on time regardless.
            if wait.is_zero() {
                self.flush("everysec");
                continue;
            }
            match rx.recv_timeout(wait) {
                Ok(msg) => return Some(msg),
                Err(mpsc::RecvTimeoutError::Timeout) => self.flush("everysec"),
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn flush(&mut self, why: &str) {
        self.unflushed_since = None;
        if let Some(active) = &self.active {
            if let Err(err) = active.file.sync_data() {
                tracing::error!(cause = %err, file = %active.path.display(), why, "cannot flush the event log");
            }
        }
    }

    fn flush_at_exit(&mut self) {
        if let Some(active) = &mut self.active {
            // The space set aside is not needed any more.
            if active.dirty_to.is_none() && active.file.set_len(active.len).is_ok() {
                active.allocated = active.len;
            }
        }
        self.flush("shutdown");
    }

    /// Stores a batch; hands each event to the sink and answers its
    /// publisher, or answers every publisher with the error.
    fn commit(&mut self, batch: Vec<(Vec<StoredEvent>, Answer)>) {
        self.buf.clear();
        let events = || batch.iter().flat_map(|(events, _)| events);
        for event in events() {
            record::encode(event, &mut self.buf);
        }
        let Some(first) = events().next().map(|event| event.id) else {
            return;
        };
        let count = events().count() as u64;
        let payload = events().map(|event| event.wire.len() as u64).sum();
        match self.write(first, count, payload) {
            Ok(()) => {
                let recovered = self
                    .problem
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                if recovered.is_some() {
                    tracing::info!("the event log is writable again; publishing resumes");
                }
                for (events, answer) in batch {
                    let ids: Vec<EventId> = events.iter().map(|event| event.id).collect();
                    for event in events {
                        (self.sink)(event);
                    }
                    match answer {
                        Answer::One(reply) => {
                            let _ = reply.send(Ok(ids[0]));
                        }
                        Answer::Many(reply) => {
                            let _ = reply.send(Ok(ids));
                        }
                    }
                }
            }
            Err(err) => {
                let error = AppendError::from(&err);
                let mut problem = self.problem.lock().unwrap_or_else(PoisonError::into_inner);
                if problem.is_none() {
                    tracing::error!(cause = %err, dir = %self.options.dir.display(), "cannot store events; publishes are refused until the log is writable");
                }
                *problem = Some(error.clone());
                drop(problem);
                for (_, answer) in batch {
                    match answer {
                        Answer::One(reply) => {
                            let _ = reply.send(Err(error.clone()));
                        }
                        Answer::Many(reply) => {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                }
            }
        }
    }

    /// Writes `self.buf` (`count` records, the first with id `first`) and
    /// flushes it as `--fsync` says. On error nothing of it stays in the
    /// log.
    fn write(&mut self, first: EventId, count: u64, payload: u64) -> io::Result<()> {
        if let Some(active) = &mut self.active {
            clean(active)?;
        }
        let full = self.active.as_ref().is_none_or(|active| {
            active.events >= self.segment_events
                || active.payload >= self.segment_payload
                || active.len >= SEGMENT_MAX_BYTES
        });
        if full {
            self.roll(first)?;
        }
        let fsync = self.options.fsync;
        let remaining = self
            .segment_events
            .saturating_sub(self.active.as_ref().map_or(0, |active| active.events));
        let Some(active) = &mut self.active else {
            return Err(io::Error::other("no open segment"));
        };
        let end = active.len + self.buf.len() as u64;
        if end > active.allocated {
            // About what the rest of the segment needs, at this batch's
            // record size.
            let wanted = (self.buf.len() as u64 / count.max(1)).saturating_mul(remaining);
            let target = end.max(active.len + wanted.clamp(PREALLOCATE_MIN, PREALLOCATE_MAX));
            // Near a full disk, what this batch needs may still fit.
            if extend(active, target).is_err() {
                extend(active, end)?;
            }
        }
        let result = active
            .file
            .write_all_at(&self.buf, active.len)
            .and_then(|()| {
                if fsync == Fsync::Always {
                    active.file.sync_data()
                } else {
                    Ok(())
                }
            });
        if let Err(err) = result {
            active.dirty_to = Some(end);
            // Clean now if we can; otherwise before the next write.
            let _ = clean(active);
            return Err(err);
        }
        active.len = end;
        active.events += count;
        active.payload += payload;
        self.total += count;
        self.total_payload += payload;
        if fsync == Fsync::Everysec && self.unflushed_since.is_none() {
            self.unflushed_since = Some(Instant::now());
        }
        self.retain();
        Ok(())
    }

    /// Closes the active segment and starts one whose first event is
    /// `first`.
    fn roll(&mut self, first: EventId) -> io::Result<()> {
        if let Some(old) = self.active.take() {
            // Drop the zeros set aside; recovery would skip them anyway.
            let _ = old.file.set_len(old.len);
            if self.options.fsync == Fsync::Everysec {
                old.file.sync_data()?;
            }
            self.sealed.push_back(Segment {
                path: old.path,
                events: old.events,
                bytes: old.len,
                payload: old.payload,
            });
        }
        let path = self.options.dir.join(segment_name(first));
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let fsync = self.options.fsync;
        let header = file.write_all_at(record::MAGIC, 0).and_then(|()| {
            if fsync == Fsync::No {
                return Ok(());
            }
            // The new file's name must survive a power loss too.
            file.sync_data()?;
            File::open(&self.options.dir)?.sync_all()
        });
        if let Err(err) = header {
            let _ = fs::remove_file(&path);
            return Err(err);
        }
        let len = record::MAGIC.len() as u64;
        self.active = Some(Active {
            file,
            path,
            len,
            payload: 0,
            allocated: len,
            events: 0,
            dirty_to: None,
        });
        Ok(())
    }

    /// Deletes the oldest segments while the newer ones hold `--history`
    /// events or `--history-bytes` of them.
    fn retain(&mut self) {
        let history = self.options.history as u64;
        let history_bytes = self.options.history_bytes as u64;
        while let Some(oldest) = self.sealed.front() {
            if self.total - oldest.events < history
                && self.total_payload - oldest.payload < history_bytes
            {
                break;
            }
            if let Err(err) = fs::remove_file(&oldest.path) {
                if err.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(cause = %err, file = %oldest.path.display(), "cannot delete an old segment; retrying later");
                    break;
                }
            }
            self.total -= oldest.events;
            self.total_payload -= oldest.payload;
            self.sealed.pop_front();
        }
    }
}

/// Zeroes what a failed write may have left past the last whole record.
fn clean(active: &mut Active) -> io::Result<()> {
    let Some(to) = active.dirty_to else {
        return Ok(());
    };
    let to = to.min(active.allocated);
    let mut at = active.len;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64) as usize;
        active.file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    active.dirty_to = None;
    Ok(())
}

/// Extends the active segment with zeros up to `target` bytes.
fn extend(active: &mut Active, target: u64) -> io::Result<()> {
    let mut at = active.allocated;
    while at < target {
        let n = (target - at).min(ZEROS.len() as u64) as usize;
        if let Err(err) = active.file.write_all_at(&ZEROS[..n], at) {
            // Give back what could be had (a full disk).
            let _ = active.file.set_len(active.allocated);
            return Err(err);
        }
        at += n as u64;
    }
    active.allocated = target;
    Ok(())
}
