//! A streaming `text/event-stream` parser that follows the WHATWG HTML
//! standard, section 9.2.6 "Interpreting an event stream", step by step.
//!
//! Feed it the bytes of one connection in whatever chunks the network
//! delivers; it calls back once per dispatched event. It is the one place in
//! the workspace where the event-stream format is parsed: `sse-cli watch`
//! uses it, and `sse-bench` reuses it for thousands of connections, so it is
//! built to be cheap:
//!
//! - no allocation per event once its buffers have grown to the size of the
//!   largest event seen (the callback borrows a reused [`Event`]);
//! - a line that arrives whole in one chunk is parsed in place, without being
//!   copied;
//! - no async runtime: it is plain synchronous code over byte slices.
//!
//! How it maps onto the standard:
//!
//! - The stream is UTF-8 decoded as a whole, with U+FFFD for invalid bytes.
//!   Line terminators and `:` are ASCII bytes, which never occur inside a
//!   multi-byte UTF-8 sequence and always end an invalid one, so splitting
//!   lines and fields on bytes and then decoding each piece with
//!   [`String::from_utf8_lossy`] (which replaces maximal invalid subparts,
//!   as the WHATWG UTF-8 decoder does) gives exactly the same text as
//!   decoding the whole stream first. A character split across two chunks
//!   is therefore completed, not replaced: a line is only decoded once it
//!   is whole.
//! - One UTF-8 byte order mark is skipped at the very start of the stream
//!   (also when it is split across chunks), and nowhere else.
//! - Lines end in CRLF, LF or a lone CR. A CR is acted on at once (no
//!   waiting for the next chunk to see whether an LF follows); an LF that
//!   starts the next chunk is then recognised as the second half of a CRLF.
//! - A line that is never terminated is never interpreted, so an event the
//!   connection cut short is not dispatched.
//!
//! Input is untrusted: nothing here panics, and memory is bounded by a
//! per-parser limit on line and event size ([`ParseError`] when exceeded).
//! Comment lines are skipped as they stream in and count against no limit,
//! since they are never stored.

use std::{borrow::Cow, time::Duration};

/// Default limit, in bytes, on one line and on one event's data.
///
/// 1 MiB is far above what any real event stream sends per event (our own
/// server refuses publishes over 64 KiB) yet bounds what a broken or hostile
/// server can make one connection hold. Callers running many connections
/// (the bench) can lower it with [`Parser::with_max_event_size`].
pub const DEFAULT_MAX_EVENT_SIZE: usize = 1024 * 1024;

/// The UTF-8 encoding of U+FEFF, skipped once at the start of a stream.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// The event type dispatched when the stream gave none.
const DEFAULT_EVENT_TYPE: &str = "message";

/// One dispatched event, as a browser's `MessageEvent` would carry it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The event type: the last `event:` field of the event, or `"message"`.
    pub event: String,
    /// The `data:` lines of the event joined with LF.
    pub data: String,
    /// The last event ID at dispatch (it persists across events until an
    /// `id:` field changes it); `""` if the stream never set one.
    pub id: String,
}

/// The stream broke a limit that keeps a parser's memory bounded.
///
/// After an error the rest of the chunk is not parsed and the partial line
/// and event are discarded; the connection should be dropped. Call
/// [`Parser::reset_for_reconnect`] before feeding a new connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A line (other than a comment) grew past the limit before its end.
    #[error("event stream line longer than the limit of {limit} bytes")]
    LineTooLong {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// An event's data grew past the limit before it was dispatched.
    #[error("event data larger than the limit of {limit} bytes")]
    EventTooLarge {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
}

/// Where the parser is in looking for a byte order mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bom {
    /// At the start of the stream, having matched this many bytes of it.
    Matching(usize),
    /// Past the point where a byte order mark may appear.
    Done,
}

/// A streaming parser for one event stream (one connection at a time).
#[derive(Debug)]
pub struct Parser {
    /// The start of a line whose end has not arrived yet.
    line: Vec<u8>,
    /// The current line is a comment: its bytes are dropped as they arrive.
    in_comment: bool,
    /// The last byte seen was a CR, so an LF next is the rest of a CRLF.
    after_cr: bool,
    bom: Bom,
    fields: Fields,
}

/// The buffers that the standard's field-processing steps act on.
#[derive(Debug)]
struct Fields {
    max_event_size: usize,
    data: String,
    event_type: String,
    /// The standard's "last event ID buffer": set by `id:` fields.
    id_buffer: String,
    /// The event source's "last event ID string": the buffer as of the last
    /// dispatch, sent as `Last-Event-ID` on reconnect.
    last_event_id: String,
    retry: Option<Duration>,
    /// Reused for every dispatch, so dispatching does not allocate.
    event: Event,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// A parser with the [`DEFAULT_MAX_EVENT_SIZE`] limit.
    pub fn new() -> Self {
        Self::with_max_event_size(DEFAULT_MAX_EVENT_SIZE)
    }

    /// A parser that refuses lines and event data longer than `bytes`.
    pub fn with_max_event_size(bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            in_comment: false,
            after_cr: false,
            bom: Bom::Matching(0),
            fields: Fields {
                max_event_size: bytes,
                data: String::new(),
                event_type: String::new(),
                id_buffer: String::new(),
                last_event_id: String::new(),
                retry: None,
                event: Event::default(),
            },
        }
    }

    /// Feeds one network chunk; calls `on_event` for each dispatched event.
    ///
    /// Chunks may split the stream anywhere, including inside a CRLF or a
    /// multi-byte character.
    ///
    /// # Errors
    ///
    /// [`ParseError`] when a line or an event's data exceeds the limit; the
    /// events dispatched before that point have been passed to `on_event`.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut on_event: impl FnMut(&Event),
    ) -> Result<(), ParseError> {
        let result = self.feed_inner(chunk, &mut on_event);
        if result.is_err() {
            self.line.clear();
            self.in_comment = false;
            self.fields.data.clear();
            self.fields.event_type.clear();
        }
        result
    }

    /// The reconnection time from the last valid `retry:` field, if any.
    pub fn retry(&self) -> Option<Duration> {
        self.fields.retry
    }

    /// The last event ID as of the last dispatch: what a reconnect sends as
    /// `Last-Event-ID` (`""` for none).
    pub fn last_event_id(&self) -> &str {
        &self.fields.last_event_id
    }

    /// Sets the last event ID as if a dispatched event had carried it, for a
    /// client that resumes from an ID it saved earlier.
    pub fn set_last_event_id(&mut self, id: &str) {
        self.fields.last_event_id.clear();
        self.fields.last_event_id.push_str(id);
        self.fields.id_buffer.clear();
        self.fields.id_buffer.push_str(id);
    }

    /// Prepares for a new connection: drops the partial line and event of
    /// the old one and looks for a byte order mark again, but keeps the last
    /// event ID and the reconnection time, as an `EventSource` does.
    pub fn reset_for_reconnect(&mut self) {
        self.line.clear();
        self.in_comment = false;
        self.after_cr = false;
        self.bom = Bom::Matching(0);
        let f = &mut self.fields;
        f.data.clear();
        f.event_type.clear();
        // An `id:` of an event the old connection cut short was never
        // dispatched, so it does not count.
        f.id_buffer.clone_from(&f.last_event_id);
    }

    fn feed_inner(
        &mut self,
        chunk: &[u8],
        on_event: &mut impl FnMut(&Event),
    ) -> Result<(), ParseError> {
        let mut rest = chunk;
        if let Bom::Matching(matched) = self.bom {
            let mut matched = matched;
            let mut used = 0;
            while matched < BOM.len() && used < rest.len() && rest[used] == BOM[matched] {
                matched += 1;
                used += 1;
            }
            if matched == BOM.len() {
                self.bom = Bom::Done;
                rest = &rest[used..];
            } else if used == rest.len() {
                // The chunk ended inside what may still be a byte order mark.
                self.bom = Bom::Matching(matched);
                return Ok(());
            } else {
                // Not a byte order mark: the bytes matched so far are the
                // start of the first line (and can be neither a line end
                // nor a colon, so they are simply its first bytes).
                self.bom = Bom::Done;
                self.line.extend_from_slice(&BOM[..matched]);
                rest = &rest[used..];
            }
        }

        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }

        while !rest.is_empty() {
            let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.keep_partial(rest)?;
                break;
            };
            let segment = &rest[..end];
            let terminator = rest[end];
            rest = &rest[end + 1..];
            if terminator == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }

            if self.in_comment {
                self.in_comment = false;
            } else if self.line.is_empty() {
                if segment.len() > self.fields.max_event_size && segment.first() != Some(&b':') {
                    return Err(ParseError::LineTooLong {
                        limit: self.fields.max_event_size,
                    });
                }
                self.fields.process_line(segment, on_event)?;
            } else {
                self.keep_partial(segment)?;
                let result = self.fields.process_line(&self.line, on_event);
                self.line.clear();
                result?;
            }
        }
        Ok(())
    }

    /// Stores the start of a line whose end is in a later chunk.
    fn keep_partial(&mut self, bytes: &[u8]) -> Result<(), ParseError> {
        if self.in_comment {
            return Ok(());
        }
        if self.line.is_empty() && bytes.first() == Some(&b':') {
            self.in_comment = true;
            return Ok(());
        }
        if self.line.len() + bytes.len() > self.fields.max_event_size {
            return Err(ParseError::LineTooLong {
                limit: self.fields.max_event_size,
            });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }
}

impl Fields {
    /// The standard's steps for one complete line (without its terminator).
    fn process_line(
        &mut self,
        line: &[u8],
        on_event: &mut impl FnMut(&Event),
    ) -> Result<(), ParseError> {
        if line.is_empty() {
            self.dispatch(on_event);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        // Comparing bytes is comparing decoded text here: a field name that
        // is not valid UTF-8 decodes to something with U+FFFD in it, which
        // matches none of these.
        match name {
            b"event" => {
                self.event_type.clear();
                self.event_type.push_str(&decode(value));
            }
            b"data" => {
                self.data.push_str(&decode(value));
                self.data.push('\n');
                if self.data.len() > self.max_event_size {
                    return Err(ParseError::EventTooLarge {
                        limit: self.max_event_size,
                    });
                }
            }
            // An id containing NUL is ignored, as the standard says.
            b"id" if !value.contains(&0) => {
                self.id_buffer.clear();
                self.id_buffer.push_str(&decode(value));
            }
            b"retry" => {
                if let Some(retry) = parse_retry(value) {
                    self.retry = Some(retry);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The standard's "dispatch the event" steps.
    fn dispatch(&mut self, on_event: &mut impl FnMut(&Event)) {
        self.last_event_id.clone_from(&self.id_buffer);
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        if self.data.ends_with('\n') {
            self.data.pop();
        }
        let event = &mut self.event;
        event.event.clear();
        event.event.push_str(if self.event_type.is_empty() {
            DEFAULT_EVENT_TYPE
        } else {
            &self.event_type
        });
        std::mem::swap(&mut event.data, &mut self.data);
        event.id.clone_from(&self.last_event_id);
        on_event(event);
        // Swap back so both buffers keep their capacity for the next event.
        std::mem::swap(&mut event.data, &mut self.data);
        self.data.clear();
        self.event_type.clear();
    }
}

/// A `retry:` value: only ASCII digits (at least one), in milliseconds.
///
/// A number too large for a u64 is ignored too: no meaningful reconnection
/// time is that long.
fn parse_retry(value: &[u8]) -> Option<Duration> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut ms: u64 = 0;
    for digit in value {
        ms = ms.checked_mul(10)?.checked_add(u64::from(digit - b'0'))?;
    }
    Some(Duration::from_millis(ms))
}

/// UTF-8 decodes with U+FFFD replacement; borrows when the bytes are valid.
fn decode(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(parser: &mut Parser, chunks: &[&[u8]]) -> Result<Vec<Event>, ParseError> {
        let mut events = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, |e| events.push(e.clone()))?;
        }
        Ok(events)
    }

    fn event(event: &str, data: &str, id: &str) -> Event {
        Event {
            event: event.into(),
            data: data.into(),
            id: id.into(),
        }
    }

    #[test]
    fn line_longer_than_limit_is_an_error_whole_or_split() {
        let mut p = Parser::with_max_event_size(8);
        assert_eq!(
            parse_chunks(&mut p, &[b"event: too-long-a-name\n"]),
            Err(ParseError::LineTooLong { limit: 8 })
        );
        let mut p = Parser::with_max_event_size(8);
        assert_eq!(
            parse_chunks(&mut p, &[b"event", b": too", b"-long"]),
            Err(ParseError::LineTooLong { limit: 8 })
        );
    }

    #[test]
    fn unterminated_line_cannot_grow_past_limit() {
        let mut p = Parser::with_max_event_size(16);
        let mut result = Ok(());
        for _ in 0..100 {
            result = p.feed(b"xxxx", |_| {});
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ParseError::LineTooLong { limit: 16 }));
        assert!(p.line.len() <= 16, "buffered {} bytes", p.line.len());
    }

    #[test]
    fn event_data_larger_than_limit_is_an_error() {
        let mut p = Parser::with_max_event_size(16);
        let err = parse_chunks(&mut p, &[b"data: 0123456\ndata: 0123456\ndata: 0\n\n"]);
        assert_eq!(err, Err(ParseError::EventTooLarge { limit: 16 }));
    }

    #[test]
    fn data_at_the_limit_is_accepted() {
        // Two 7-byte lines, each with its LF, make 16 bytes of data, and
        // the 16-byte line `data:0123456789a` is at the line limit.
        let mut p = Parser::with_max_event_size(16);
        let events = parse_chunks(
            &mut p,
            &[b"data:0123456\ndata:0123456\n\ndata:0123456789a\n\n"],
        )
        .unwrap();
        assert_eq!(
            events,
            vec![
                event("message", "0123456\n0123456", ""),
                event("message", "0123456789a", "")
            ]
        );
    }

    #[test]
    fn comments_are_not_stored_and_not_limited() {
        let mut p = Parser::with_max_event_size(8);
        let mut chunks: Vec<&[u8]> = vec![b":"];
        chunks.extend(std::iter::repeat_n(&b"a long comment line "[..], 50));
        chunks.push(b"\ndata: ok\n\n");
        let events = parse_chunks(&mut p, &chunks).unwrap();
        assert_eq!(events, vec![event("message", "ok", "")]);
        assert!(p.line.capacity() <= 8);
    }

    #[test]
    fn parser_recovers_after_an_error_and_reset() {
        let mut p = Parser::with_max_event_size(8);
        assert!(p
            .feed(b"id: 1\ndata: x\n\ndata: far too long\n", |_| {})
            .is_err());
        p.reset_for_reconnect();
        let events = parse_chunks(&mut p, &[b"data: y\n\n"]).unwrap();
        assert_eq!(events, vec![event("message", "y", "1")]);
    }

    #[test]
    fn reset_keeps_last_event_id_and_retry_but_drops_partial_event() {
        let mut p = Parser::new();
        let events = parse_chunks(
            &mut p,
            &[b"retry: 1500\nid: 7\ndata: seven\n\nid: 8\nevent: cut\ndata: half"],
        )
        .unwrap();
        assert_eq!(events, vec![event("message", "seven", "7")]);
        p.reset_for_reconnect();
        assert_eq!(p.last_event_id(), "7");
        assert_eq!(p.retry(), Some(Duration::from_millis(1500)));
        // The new connection may start with a BOM again, and the old
        // connection's partial `id: 8`, `event: cut` and data are gone.
        let events = parse_chunks(&mut p, &[b"\xEF\xBB\xBFdata: next\n\n"]).unwrap();
        assert_eq!(events, vec![event("message", "next", "7")]);
    }

    #[test]
    fn reset_forgets_a_pending_cr() {
        let mut p = Parser::new();
        parse_chunks(&mut p, &[b"data: a\r"]).unwrap();
        p.reset_for_reconnect();
        // A stray LF at the start of the new connection is an empty line,
        // not the end of the old connection's CRLF.
        let events = parse_chunks(&mut p, &[b"\ndata: b\n\n"]).unwrap();
        assert_eq!(events, vec![event("message", "b", "")]);
    }

    #[test]
    fn set_last_event_id_is_reported_until_the_stream_sets_another() {
        let mut p = Parser::new();
        p.set_last_event_id("41");
        let events = parse_chunks(&mut p, &[b"data: a\n\nid: 42\ndata: b\n\n"]).unwrap();
        assert_eq!(
            events,
            vec![event("message", "a", "41"), event("message", "b", "42")]
        );
        assert_eq!(p.last_event_id(), "42");
    }

    #[test]
    fn last_event_id_changes_only_at_dispatch() {
        let mut p = Parser::new();
        parse_chunks(&mut p, &[b"id: 1\ndata: a\n\nid: 2\n"]).unwrap();
        assert_eq!(p.last_event_id(), "1");
        // An event with no data still dispatches its id.
        parse_chunks(&mut p, &[b"\n"]).unwrap();
        assert_eq!(p.last_event_id(), "2");
    }

    #[test]
    fn retry_too_large_for_u64_is_ignored() {
        let mut p = Parser::new();
        parse_chunks(&mut p, &[b"retry: 10\nretry: 99999999999999999999999\n"]).unwrap();
        assert_eq!(p.retry(), Some(Duration::from_millis(10)));
    }

    #[test]
    fn steady_state_does_not_grow_buffers() {
        let mut p = Parser::new();
        let input = b"id: 12345\nevent: tick\ndata: the time is 12:00:00\n\n";
        let mut n = 0;
        p.feed(input, |_| n += 1).unwrap();
        let caps = (
            p.fields.data.capacity(),
            p.fields.event.data.capacity(),
            p.fields.event.event.capacity(),
            p.fields.event.id.capacity(),
            p.fields.last_event_id.capacity(),
        );
        for _ in 0..1000 {
            p.feed(input, |_| n += 1).unwrap();
        }
        assert_eq!(n, 1001);
        let after = (
            p.fields.data.capacity(),
            p.fields.event.data.capacity(),
            p.fields.event.event.capacity(),
            p.fields.event.id.capacity(),
            p.fields.last_event_id.capacity(),
        );
        assert_eq!(caps, after);
    }

    #[test]
    fn hostile_bytes_never_panic() {
        // A deterministic pseudo-random byte soup weighted towards the
        // characters the parser cares about, fed in pseudo-random chunks.
        let alphabet: &[u8] = b"\r\n: dataeventidretry0123456789\x00\xEF\xBB\xBF\xC3\xA9\xFF\x80";
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200 {
            let len = (next() % 300) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let mut p = Parser::with_max_event_size(64);
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let take = 1 + (next() % 17) as usize;
                let (chunk, tail) = rest.split_at(take.min(rest.len()));
                let result = p.feed(chunk, |e| {
                    assert!(!e.event.is_empty());
                    assert!(!e.event.contains(['\r', '\n']));
                    assert!(!e.id.contains(['\r', '\n', '\0']));
                    assert!(e.data.len() <= 64);
                });
                assert!(p.line.len() <= 64);
                if result.is_err() {
                    p.reset_for_reconnect();
                }
                rest = tail;
            }
        }
    }
}
