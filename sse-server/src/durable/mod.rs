//! Durable history: the embedded broker's events in an append-only log on
//! disk (`--data-dir`), restored at start.
//!
//! The log is a directory of segment files (see [`record`] for the format),
//! named by the id of their first event, plus a `LOCK` file that one
//! running server holds. One writer thread owns the files: publishers hand
//! it events in id order over a channel and await its answer, so the async
//! runtime's workers never wait on the disk. The writer takes every event
//! waiting when it wakes, writes them with one `write` and, under
//! `--fsync always`, makes them durable with one `fdatasync` (group
//! commit): 64 concurrent publishers cost one disk flush, not 64. Only then
//! does it hand them to the fan-out (the `sink`) and answer the publishers,
//! so no subscriber ever sees an event a crash could take back.
//!
//! Retention follows `--history` and `--history-bytes`: a segment is
//! deleted once the newer ones hold `--history` events or
//! `--history-bytes` of them, so the disk holds what the history retains
//! plus at most about one eighth more (one segment).

pub mod record;
pub mod recover;
mod writer;

use std::{
    fmt,
    fs::{self, File},
    future::Future,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex, PoisonError},
    thread,
};

use tokio::sync::oneshot;

use crate::{broker::StoredEvent, wire::EventId};

/// When a publish counts as durable, as Redis's `appendfsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Fsync {
    /// `202` only once the event is on disk (`fdatasync`); concurrent
    /// publishes share one flush.
    #[default]
    Always,
    /// `202` once the event is written to the OS; flushed every second, so
    /// a power loss (not a process crash) may lose the last second.
    Everysec,
    /// `202` once the event is written to the OS; the OS flushes when it
    /// likes.
    No,
}

/// Name of the file a running server holds locked in its data directory.
pub const LOCK_FILE: &str = "LOCK";

/// Why the log cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The directory cannot be created, read or written.
    #[error("data dir {}: {cause}", dir.display())]
    Dir {
        /// The data directory.
        dir: PathBuf,
        /// What the OS said.
        cause: io::Error,
    },
    /// A file in it cannot be read or written.
    #[error("{}: {cause}", file.display())]
    File {
        /// The file.
        file: PathBuf,
        /// What the OS said.
        cause: io::Error,
    },
    /// Another running server uses the directory.
    #[error("data dir {} is in use by another running sse-server{holder}; stop it or choose another --data-dir", dir.display())]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// ` (pid N)` when the holder wrote its pid.
        holder: String,
    },
    /// A segment is damaged where a crash cannot have damaged it.
    #[error("{}: damaged event log at byte {offset} ({what}), and {why}: refusing to start rather than lose or replay events; move the file away, or truncate it to {offset} bytes to keep the events before the damage", file.display())]
    Corrupt {
        /// The damaged segment.
        file: PathBuf,
        /// Where the damage starts.
        offset: usize,
        /// What is wrong there.
        what: String,
        /// Why this is not a torn tail.
        why: String,
    },
}

impl LogError {
    fn dir(dir: &Path, cause: io::Error) -> Self {
        Self::Dir {
            dir: dir.to_owned(),
            cause,
        }
    }

    fn file(file: &Path, cause: io::Error) -> Self {
        Self::File {
            file: file.to_owned(),
            cause,
        }
    }

    fn corrupt(file: &Path, offset: usize, what: &str, why: &str) -> Self {
        Self::Corrupt {
            file: file.to_owned(),
            offset,
            what: what.to_owned(),
            why: why.to_owned(),
        }
    }
}

/// Why an event could not be made durable; nothing was published.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// The disk is full.
    #[error("the data dir's disk is full; events cannot be stored")]
    DiskFull,
    /// Any other write or flush error.
    #[error("events cannot be stored: {0}")]
    Io(String),
    /// The log is shut down.
    #[error("the event log is closed")]
    Closed,
}

impl From<&io::Error> for AppendError {
    fn from(err: &io::Error) -> Self {
        if err.kind() == io::ErrorKind::StorageFull {
            Self::DiskFull
        } else {
            Self::Io(err.to_string())
        }
    }
}

/// How the log is kept.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The data directory.
    pub dir: PathBuf,
    /// When an event counts as durable.
    pub fsync: Fsync,
    /// Events to keep (`--history`).
    pub history: usize,
    /// Encoded bytes of events to keep (`--history-bytes`).
    pub history_bytes: usize,
}

/// The log, recovered and locked, before its writer starts.
#[derive(Debug)]
pub struct Opened {
    options: LogOptions,
    lock: File,
    recovered: recover::Recovered,
}

impl Opened {
    /// The events the log holds, oldest first (at most `history`): restore
    /// them into the hub before publishing anything.
    pub fn take_events(&mut self) -> Vec<StoredEvent> {
        std::mem::take(&mut self.recovered.events).into()
    }

    /// Id of the newest event on disk: new ids must sort after it.
    pub fn last_id(&self) -> Option<EventId> {
        self.recovered.last_id
    }

    /// Starts the writer thread. `sink` gets every event once it is
    /// durable, in id order, before its publisher is answered.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(self, sink: impl FnMut(StoredEvent) + Send + 'static) -> io::Result<DiskLog> {
        let (tx, rx) = mpsc::channel();
        let problem = Arc::new(Mutex::new(None));
        let writer = writer::Writer::new(
            self.options.clone(),
            self.recovered.segments,
            Box::new(sink),
            Arc::clone(&problem),
        );
        let thread = thread::Builder::new()
            .name("sse-log-writer".to_owned())
            .spawn(move || writer.run(&rx))?;
        Ok(DiskLog {
            sequencer: Mutex::new(Sequencer {
                last: self.recovered.last_id,
                tx: Some(tx),
            }),
            problem,
            thread: Mutex::new(Some(thread)),
            _lock: self.lock,
        })
    }
}

/// Opens (creating it if need be) and locks the data directory, and reads
/// the log back.
///
/// # Errors
/// When the directory cannot be created or written, another running
/// server holds it, or a segment is damaged beyond a torn tail.
pub fn open(options: LogOptions) -> Result<Opened, LogError> {
    let dir = &options.dir;
    fs::create_dir_all(dir).map_err(|cause| LogError::dir(dir, cause))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|cause| LogError::dir(dir, cause))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let pid = fs::read_to_string(&lock_path).unwrap_or_default();
            let pid = pid.trim();
            return Err(LogError::Locked {
                dir: dir.clone(),
                holder: if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
            });
        }
        Err(fs::TryLockError::Error(cause)) => return Err(LogError::file(&lock_path, cause)),
    }
    let write_pid = || -> io::Result<()> {
        lock.set_len(0)?;
        (&lock).write_all(std::process::id().to_string().as_bytes())
    };
    write_pid().map_err(|cause| LogError::dir(dir, cause))?;
    let recovered = recover::recover(dir, options.history, options.history_bytes)?;
    tracing::info!(
        dir = %dir.display(),
        events = recovered.events.len(),
        segments = recovered.segments.len(),
        last_id = ?recovered.last_id.map(|id| id.to_string()),
        "event log recovered"
    );
    Ok(Opened {
        options,
        lock,
        recovered,
    })
}

/// A message to the writer thread.
enum Msg {
    Append(StoredEvent, oneshot::Sender<Result<EventId, AppendError>>),
    /// Several events written together: all stored, or none.
    AppendMany(
        Vec<StoredEvent>,
        oneshot::Sender<Result<Vec<EventId>, AppendError>>,
    ),
    Stop(oneshot::Sender<()>),
}

/// Hands out ids and queues events in one step, so the writer receives
/// them in id order.
struct Sequencer {
    last: Option<EventId>,
    tx: Option<mpsc::Sender<Msg>>,
}

/// The running log.
pub struct DiskLog {
    sequencer: Mutex<Sequencer>,
    problem: Arc<Mutex<Option<AppendError>>>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
    /// Held (and locked) while the log runs.
    _lock: File,
}

impl fmt::Debug for DiskLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskLog")
            .field("problem", &self.problem())
            .finish_non_exhaustive()
    }
}

impl DiskLog {
    /// Appends the event `make` builds from the id of the newest event
    /// (on disk or on its way there); resolves once the event is durable
    /// and the sink has it. The writer gets events in the order their ids
    /// were made.
    pub fn append(
        &self,
        make: impl FnOnce(Option<EventId>) -> StoredEvent,
    ) -> impl Future<Output = Result<EventId, AppendError>> + Send + 'static {
        let queued = {
            let mut sequencer = self
                .sequencer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let event = make(sequencer.last);
            let id = event.id;
            let (tx, rx) = oneshot::channel();
            match &sequencer.tx {
                Some(writer) if writer.send(Msg::Append(event, tx)).is_ok() => {
                    sequencer.last = Some(id);
                    Ok(rx)
                }
                _ => Err(AppendError::Closed),
            }
        };
        async move { queued?.await.unwrap_or(Err(AppendError::Closed)) }
    }

    /// Appends the events `make` builds, in order, from the id of the
    /// newest event, as one write: all are stored, or none. Resolves once
    /// they are durable and the sink has them.
    pub fn append_many(
        &self,
        make: impl FnOnce(Option<EventId>) -> Vec<StoredEvent>,
    ) -> impl Future<Output = Result<Vec<EventId>, AppendError>> + Send + 'static {
        let queued = {
            let mut sequencer = self
                .sequencer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let events = make(sequencer.last);
            let last = events.last().map(|event| event.id);
            let (tx, rx) = oneshot::channel();
            match (&sequencer.tx, last) {
                (_, None) => Err(AppendError::Closed),
                (Some(writer), Some(last)) if writer.send(Msg::AppendMany(events, tx)).is_ok() => {
                    sequencer.last = Some(last);
                    Ok(rx)
                }
                _ => Err(AppendError::Closed),
            }
        };
        async move { queued?.await.unwrap_or(Err(AppendError::Closed)) }
    }

    /// What keeps events from being stored, if anything (a full disk).
    pub fn problem(&self) -> Option<AppendError> {
        self.problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stores what is queued, flushes, and stops the writer. Later appends
    /// fail with [`AppendError::Closed`].
    pub async fn shutdown(&self) {
        let tx = self
            .sequencer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tx
            .take();
        if let Some(tx) = tx {
            let (done, stopped) = oneshot::channel();
            if tx.send(Msg::Stop(done)).is_ok() {
                let _ = stopped.await;
            }
        }
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            // The writer has stopped (or died): joining does not wait long.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for DiskLog {
    fn drop(&mut self) {
        // Dropping the sender ends the writer after it stores what is
        // queued; wait for it so the lock is released after the last write.
        self.sequencer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .tx
            .take();
        if let Some(thread) = self
            .thread
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
