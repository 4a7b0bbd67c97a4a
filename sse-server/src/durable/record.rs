//! One record of the disk log, and the header of a segment file.
//!
//! A segment file is [`MAGIC`] followed by records, each:
//!
//! ```text
//! len   u32 LE   length of the body
//! crc   u32 LE   CRC-32 of the four `len` bytes and the body
//! body  ms u64 LE, seq u64 LE, topic_len u16 LE, topic (UTF-8),
//!       the event's encoded text/event-stream bytes
//! ```
//!
//! The CRC covers the length too, so a flipped bit in a length is caught
//! instead of sending the reader off to a wrong offset. The body keeps the
//! encoded event as subscribers receive it: recovery hands out slices of
//! the file's bytes without encoding anything again.

use std::{collections::HashSet, sync::Arc};

use bytes::Bytes;

use crate::{broker::StoredEvent, wire::EventId};

/// First bytes of every segment file: names the format and its version.
pub const MAGIC: &[u8; 8] = b"SSELOG1\n";
/// `len` and `crc`.
pub const HEADER: usize = 8;
/// `ms`, `seq` and `topic_len`.
const FIXED: usize = 8 + 8 + 2;
/// Largest body a record may have. A publish body is at most 64 KiB, which
/// encodes to at most ~400 KiB (every line gains a `data: ` prefix); 1 MiB
/// leaves room and lets recovery reject a garbage length without reading
/// far.
pub const MAX_BODY: usize = 1 << 20;

/// Appends the record of `event` to `out`; returns its size in bytes.
pub fn encode(event: &StoredEvent, out: &mut Vec<u8>) -> usize {
    let topic = event.topic.as_bytes();
    // Topic names are at most 256 bytes (checked at publish).
    let topic_len = u16::try_from(topic.len()).unwrap_or(u16::MAX);
    let topic = &topic[..usize::from(topic_len)];
    let body_len = FIXED + topic.len() + event.wire.len();
    let start = out.len();
    out.reserve(HEADER + body_len);
    // Bodies are bounded far below 4 GiB by the publish size limit.
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&event.id.ms.to_le_bytes());
    out.extend_from_slice(&event.id.seq.to_le_bytes());
    out.extend_from_slice(&topic_len.to_le_bytes());
    out.extend_from_slice(topic);
    out.extend_from_slice(&event.wire);
    let crc = checksum(&out[start..start + 4], &out[start + HEADER..]);
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    HEADER + body_len
}

fn checksum(len: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len);
    hasher.update(body);
    hasher.finalize()
}

/// What is at an offset of a segment.
#[derive(Debug)]
pub enum Decoded {
    /// A whole record with a good checksum; the next one starts at `next`.
    Record {
        /// The event it holds.
        event: StoredEvent,
        /// Offset just past it.
        next: usize,
    },
    /// The file ends inside a record (or right at its start: `len == 0`
    /// bytes left is reported as [`Decoded::End`]).
    Torn,
    /// Bytes that are not a record.
    Bad(&'static str),
    /// Nothing left.
    End,
}

/// Shares one `Arc<str>` between all records of a topic.
#[derive(Debug, Default)]
pub struct Topics(HashSet<Arc<str>>);

impl Topics {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(topic) = self.0.get(name) {
            return Arc::clone(topic);
        }
        let topic: Arc<str> = Arc::from(name);
        self.0.insert(Arc::clone(&topic));
        topic
    }
}

/// Reads the record at `offset` of `buf` (a whole segment file).
pub fn decode(buf: &Bytes, offset: usize, topics: &mut Topics) -> Decoded {
    let rest = &buf[offset.min(buf.len())..];
    if rest.is_empty() {
        return Decoded::End;
    }
    if rest.len() < HEADER {
        return Decoded::Torn;
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    if !(FIXED..=MAX_BODY).contains(&len) {
        return Decoded::Bad("impossible record length");
    }
    if rest.len() < HEADER + len {
        return Decoded::Torn;
    }
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    let body = &rest[HEADER..HEADER + len];
    if checksum(&rest[..4], body) != crc {
        return Decoded::Bad("checksum mismatch");
    }
    let word = |at: usize| {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&body[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    let id = EventId::new(word(0), word(8));
    let topic_len = usize::from(u16::from_le_bytes([body[16], body[17]]));
    if FIXED + topic_len > len {
        return Decoded::Bad("topic longer than its record");
    }
    let Ok(topic) = std::str::from_utf8(&body[FIXED..FIXED + topic_len]) else {
        return Decoded::Bad("topic is not UTF-8");
    };
    let wire_start = offset + HEADER + FIXED + topic_len;
    let next = offset + HEADER + len;
    Decoded::Record {
        event: StoredEvent {
            id,
            topic: topics.get(topic),
            wire: buf.slice(wire_start..next),
        },
        next,
    }
}

/// Whether any whole, checksummed record starts after `from`: tells a torn
/// tail (nothing good follows the damage) from damage in the middle.
pub fn any_record_after(buf: &Bytes, from: usize) -> Option<usize> {
    let mut topics = Topics::default();
    (from + 1..buf.len().saturating_sub(HEADER + FIXED - 1))
        .find(|&offset| matches!(decode(buf, offset, &mut topics), Decoded::Record { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, topic: &str, data: &str) -> StoredEvent {
        let id = EventId::new(7, seq);
        StoredEvent {
            id,
            topic: Arc::from(topic),
            wire: crate::wire::encode_event(&id.to_string(), "message", data),
        }
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        let first = encode(&event(1, "news", "hello\nworld"), &mut buf);
        encode(&event(2, "ünï", ""), &mut buf);
        let buf = Bytes::from(buf);
        let mut topics = Topics::default();
        let Decoded::Record { event: one, next } = decode(&buf, 0, &mut topics) else {
            panic!("first record not read");
        };
        assert_eq!(next, first);
        assert_eq!(one.id, EventId::new(7, 1));
        assert_eq!(&*one.topic, "news");
        assert_eq!(&one.wire[..], b"id: 7-1\ndata: hello\ndata: world\n\n");
        let Decoded::Record { event: two, next } = decode(&buf, next, &mut topics) else {
            panic!("second record not read");
        };
        assert_eq!(&*two.topic, "ünï");
        assert!(matches!(decode(&buf, next, &mut topics), Decoded::End));
    }

    #[test]
    fn every_truncation_is_torn_and_every_flipped_bit_is_caught() {
        let mut buf = Vec::new();
        let len = encode(&event(1, "t", "some data"), &mut buf);
        let mut topics = Topics::default();
        for cut in 1..len {
            let part = Bytes::copy_from_slice(&buf[..cut]);
            assert!(
                matches!(
                    decode(&part, 0, &mut topics),
                    Decoded::Torn | Decoded::Bad(_)
                ),
                "cut at {cut}"
            );
        }
        for bit in 0..len * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let bad = Bytes::from(bad);
            assert!(
                !matches!(decode(&bad, 0, &mut topics), Decoded::Record { .. }),
                "bit {bit} flipped went unnoticed"
            );
        }
    }

    #[test]
    fn a_record_after_damage_is_found() {
        let mut buf = Vec::new();
        encode(&event(1, "t", "a"), &mut buf);
        let damage = buf.len();
        buf.extend_from_slice(b"garbage!");
        let mut clean = buf.clone();
        let second = buf.len();
        encode(&event(2, "t", "b"), &mut buf);
        assert_eq!(any_record_after(&Bytes::from(buf), damage), Some(second));
        clean.extend_from_slice(&[0xff; 64]);
        assert_eq!(any_record_after(&Bytes::from(clean), damage), None);
    }
}
