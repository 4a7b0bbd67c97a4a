//! Reading the log back at start: every segment in id order, checked
//! record by record.
//!
//! Damage at the end of the newest segment is what a crash in the middle
//! of a write leaves: it is cut off (the file is truncated at the last good
//! record) and logged. Damage anywhere else, or damage with good records
//! after it, is not a crash's doing; the server refuses to start and names
//! the file, so an operator decides, instead of events silently vanishing.

use std::{
    collections::VecDeque,
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use bytes::Bytes;

use super::{
    record::{self, Decoded, Topics},
    LogError,
};
use crate::{broker::StoredEvent, wire::EventId};

/// Extension of segment files.
const SEGMENT_EXT: &str = "log";

/// A segment file the log keeps.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Its path.
    pub path: PathBuf,
    /// Records in it.
    pub events: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// Encoded bytes of the events in it (what `--history-bytes` counts).
    pub payload: u64,
}

/// What the log held at start.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The newest `history` events, oldest first.
    pub events: VecDeque<StoredEvent>,
    /// Every segment, oldest first.
    pub segments: Vec<Segment>,
    /// Id of the newest event on disk.
    pub last_id: Option<EventId>,
}

/// The file name of the segment whose first record is `first`: names sort
/// in id order.
pub fn segment_name(first: EventId) -> String {
    format!("{:020}-{:020}.{SEGMENT_EXT}", first.ms, first.seq)
}

fn parse_segment_name(name: &str) -> Option<EventId> {
    let stem = name.strip_suffix(&format!(".{SEGMENT_EXT}"))?;
    let (ms, seq) = stem.split_once('-')?;
    let digits = |s: &str| {
        (s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    Some(EventId::new(digits(ms)?, digits(seq)?))
}

/// The segment files in `dir`, oldest first.
fn list_segments(dir: &Path) -> Result<Vec<PathBuf>, LogError> {
    let entries = fs::read_dir(dir).map_err(|cause| LogError::dir(dir, cause))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|cause| LogError::dir(dir, cause))?;
        let name = entry.file_name();
        if let Some(id) = name.to_str().and_then(parse_segment_name) {
            segments.push((id, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|(id, _)| *id);
    Ok(segments.into_iter().map(|(_, path)| path).collect())
}

/// Reads every segment in `dir`, cutting a torn tail off the newest one and
/// deleting a newest segment that holds no record; keeps the newest
/// `history` events, within `history_bytes` (the newest one whatever its
/// size).
///
/// # Errors
/// When a file cannot be read, or is damaged where a crash cannot have
/// damaged it.
pub fn recover(dir: &Path, history: usize, history_bytes: usize) -> Result<Recovered, LogError> {
    let paths = list_segments(dir)?;
    let mut recovered = Recovered::default();
    let mut topics = Topics::default();
    let mut kept_bytes = 0;
    for (index, path) in paths.iter().enumerate() {
        let newest = index + 1 == paths.len();
        let buf = Bytes::from(fs::read(path).map_err(|cause| LogError::file(path, cause))?);
        let mut segment = Segment {
            path: path.clone(),
            events: 0,
            bytes: buf.len() as u64,
            payload: 0,
        };
        let damage = read_records(
            &buf,
            path,
            &mut segment,
            &mut recovered,
            &mut topics,
            &mut kept_bytes,
            (history, history_bytes),
        )?;
        if let Some((at, what)) = damage {
            if !newest {
                return Err(LogError::corrupt(
                    path,
                    at,
                    what,
                    "it is not the newest segment",
                ));
            }
            if let Some(good) = record::any_record_after(&buf, at) {
                return Err(LogError::corrupt(
                    path,
                    at,
                    what,
                    &format!("an intact record follows at byte {good}"),
                ));
            }
            cut(path, at, buf.len(), what)?;
            segment.bytes = at as u64;
        }
        if segment.events == 0 && newest {
            fs::remove_file(path).map_err(|cause| LogError::file(path, cause))?;
            tracing::info!(file = %path.display(), "removed a segment holding no event");
        } else {
            recovered.segments.push(segment);
        }
    }
    Ok(recovered)
}

/// Reads one segment's records into `recovered`, keeping the newest
/// `history` events within `history_bytes`. Returns where and why the
/// segment is damaged, if it is; zeros the writer set aside are trimmed.
fn read_records(
    buf: &Bytes,
    path: &Path,
    segment: &mut Segment,
    recovered: &mut Recovered,
    topics: &mut Topics,
    kept_bytes: &mut usize,
    (history, history_bytes): (usize, usize),
) -> Result<Option<(usize, &'static str)>, LogError> {
    if buf.len() < record::MAGIC.len() || &buf[..record::MAGIC.len()] != record::MAGIC {
        return Ok(Some((0, "not a segment header")));
    }
    let mut offset = record::MAGIC.len();
    loop {
        match record::decode(buf, offset, topics) {
            Decoded::Record { event, next } => {
                if recovered.last_id.is_some_and(|last| event.id <= last) {
                    return Ok(Some((offset, "event id not after the previous one")));
                }
                recovered.last_id = Some(event.id);
                segment.payload += event.wire.len() as u64;
                *kept_bytes += event.wire.len();
                recovered.events.push_back(event);
                while recovered.events.len() > history
                    || (*kept_bytes > history_bytes && recovered.events.len() > 1)
                {
                    if let Some(oldest) = recovered.events.pop_front() {
                        *kept_bytes -= oldest.wire.len();
                    }
                }
                segment.events += 1;
                offset = next;
            }
            Decoded::End => return Ok(None),
            // Space the writer set aside for records (zeros are never a
            // record: a length of 0 is impossible).
            _ if buf[offset..].iter().all(|&b| b == 0) => {
                trim_zeros(path, offset)?;
                segment.bytes = offset as u64;
                return Ok(None);
            }
            Decoded::Torn => return Ok(Some((offset, "file ends inside a record"))),
            Decoded::Bad(what) => return Ok(Some((offset, what))),
        }
    }
}

/// Drops the zeros the writer set aside past the last record.
fn trim_zeros(path: &Path, at: usize) -> Result<(), LogError> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| file.set_len(at as u64))
        .map_err(|cause| LogError::file(path, cause))
}

/// Truncates `path` to its first `at` bytes (or rewrites its header when
/// even that was damaged), durably.
fn cut(path: &Path, at: usize, len: usize, what: &str) -> Result<(), LogError> {
    tracing::warn!(
        file = %path.display(),
        offset = at,
        bytes_cut = len - at,
        reason = what,
        "cut a torn or corrupt tail off the event log (a crash during a write leaves one); \
         every record before it is kept"
    );
    let file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|cause| LogError::file(path, cause))?;
    let result = (|| -> io::Result<()> {
        file.set_len(at as u64)?;
        if at == 0 {
            (&file).write_all(record::MAGIC)?;
        }
        file.sync_all()
    })();
    result.map_err(|cause| LogError::file(path, cause))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_by_id_and_parse_back() {
        let a = segment_name(EventId::new(9, 100));
        let b = segment_name(EventId::new(10, 1));
        assert!(a < b);
        assert_eq!(parse_segment_name(&a), Some(EventId::new(9, 100)));
        assert_eq!(parse_segment_name("LOCK"), None);
        assert_eq!(parse_segment_name("1-2.log"), None);
    }
}
