//! The `text/event-stream` wire format, encoded once per event.
//!
//! Every event is turned into its bytes exactly once, when it is published;
//! all subscribers share those bytes (`Bytes` is reference counted).

use std::{borrow::Cow, fmt, str::FromStr};

use bytes::{BufMut, Bytes, BytesMut};

/// The event type a stream gives when it names none.
pub const DEFAULT_EVENT: &str = "message";
/// Type of the notice sent before a replay that cannot start where the
/// client asked (its id is older than history, or unknown to this server).
pub const TOO_OLD_EVENT: &str = "too-old";
/// The comment sent on idle streams.
///
/// Like the `retry:` field, it ends with one line break and no blank line:
/// a blank line would end a block with no data, which the standard skips but
/// some clients (Python's httpx-sse 0.4) report as an empty event. Whatever
/// follows (an event, another comment) is still parsed the same.
pub const HEARTBEAT: &[u8] = b": keep-alive\n";

/// An event id: `MS-SEQ`, the shape of a Redis stream entry id.
///
/// Ordered first by `ms`, then by `seq`. The memory broker uses its start
/// time in milliseconds as `ms` and a counter as `seq`, so ids of different
/// runs never collide; the Redis broker uses the stream entry id itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    /// Milliseconds part (Redis) or epoch of the server run (memory).
    pub ms: u64,
    /// Sequence within `ms`.
    pub seq: u64,
}

impl EventId {
    /// Builds an id from its two parts.
    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The text was not an id this server hands out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an event id")]
pub struct BadEventId;

impl FromStr for EventId {
    type Err = BadEventId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s.split_once('-').ok_or(BadEventId)?;
        let digits = |p: &str| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadEventId);
            }
            p.parse::<u64>().map_err(|_| BadEventId)
        };
        Ok(Self::new(digits(ms)?, digits(seq)?))
    }
}

/// Encodes one event: `id`, `event` (omitted for `message`), one `data` line
/// per line of `data`, and the blank line that dispatches it.
///
/// `data` is split at CRLF, LF and lone CR, the three line endings the
/// standard recognises, so a parser rebuilds the same lines joined with LF.
/// The caller has checked that `event` holds no CR, LF or NUL.
pub fn encode_event(id: &str, event: &str, data: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(id.len() + event.len() + data.len() + 32);
    buf.put_slice(b"id: ");
    buf.put_slice(id.as_bytes());
    buf.put_u8(b'\n');
    if event != DEFAULT_EVENT {
        buf.put_slice(b"event: ");
        buf.put_slice(event.as_bytes());
        buf.put_u8(b'\n');
    }
    for line in lines(data) {
        buf.put_slice(b"data: ");
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

/// The `retry:` field that opens every stream, without a blank line of
/// its own (see [`HEARTBEAT`]): the field takes effect when its line ends.
pub fn encode_retry(retry: std::time::Duration) -> Bytes {
    Bytes::from(format!("retry: {}\n", retry.as_millis()))
}

/// Splits at CRLF, LF or lone CR; always yields at least one (maybe empty) line.
fn lines(data: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.find(['\r', '\n']) {
            Some(at) => {
                let skip = if text[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&text[at + skip..]);
                Some(&text[..at])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

/// Why a topic or event name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name was empty.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// The name was longer than [`MAX_NAME_LEN`].
    #[error("{0} is longer than {MAX_NAME_LEN} bytes")]
    TooLong(&'static str),
    /// The name held a character the wire format cannot carry.
    #[error("{0} must not contain CR, LF or NUL")]
    BadChar(&'static str),
}

/// Longest topic or event name: long enough for any sensible name, short
/// enough that names never dominate an event's size.
pub const MAX_NAME_LEN: usize = 256;

/// Checks a topic or event-type name; `what` names it in the error.
///
/// # Errors
/// When the name is empty, over [`MAX_NAME_LEN`] bytes, or holds CR, LF or NUL.
pub fn check_name(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        Err(NameError::Empty(what))
    } else if name.len() > MAX_NAME_LEN {
        Err(NameError::TooLong(what))
    } else if name.contains(['\r', '\n', '\0']) {
        Err(NameError::BadChar(what))
    } else {
        Ok(())
    }
}

/// A query parameter that is not text once percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter `{name}` is not valid UTF-8 once percent-decoded")]
pub struct QueryError {
    /// The parameter's name (lossily decoded when the name itself is bad).
    pub name: String,
}

/// One decoded `name=value` pair of a query string.
pub type QueryPair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// Splits a query string into decoded `(name, value)` pairs, as HTML forms
/// encode them (`+` is a space, `%XX` a byte), refusing any name or value
/// whose bytes are not UTF-8.
///
/// `form_urlencoded::parse` would replace bad bytes with U+FFFD, so that
/// `?topic=x%FEy` and `?topic=x%FFy` named the same topic; topics are text,
/// so such a query is an error instead.
///
/// # Errors
/// When a decoded name or value is not valid UTF-8.
pub fn parse_query(query: &str) -> Result<Vec<QueryPair<'_>>, QueryError> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = || QueryError {
                name: decode_lossy(name),
            };
            Ok((
                decode_component(name).ok_or_else(bad)?,
                decode_component(value).ok_or_else(bad)?,
            ))
        })
        .collect()
}

fn decode_component(raw: &str) -> Option<Cow<'_, str>> {
    if raw.contains('+') {
        let spaced = raw.replace('+', " ");
        let decoded = percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .ok()?;
        Some(Cow::Owned(decoded.into_owned()))
    } else {
        percent_encoding::percent_decode_str(raw).decode_utf8().ok()
    }
}

fn decode_lossy(raw: &str) -> String {
    percent_encoding::percent_decode_str(&raw.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(event: &str, data: &str) -> String {
        String::from_utf8(encode_event("1-2", event, data).to_vec()).unwrap()
    }

    #[test]
    fn one_data_line_per_line_whatever_the_ending() {
        assert_eq!(
            encoded("message", "a\nb\r\nc\rd"),
            "id: 1-2\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(encoded("message", ""), "id: 1-2\ndata: \n\n");
        assert_eq!(encoded("message", "x\n"), "id: 1-2\ndata: x\ndata: \n\n");
        assert_eq!(
            encoded("message", "\r\n\r"),
            "id: 1-2\ndata: \ndata: \ndata: \n\n"
        );
        assert_eq!(encoded("tick", "t"), "id: 1-2\nevent: tick\ndata: t\n\n");
    }

    #[test]
    fn retry_and_heartbeat_end_no_block_of_their_own() {
        let retry = encode_retry(std::time::Duration::from_millis(1500));
        assert_eq!(&retry[..], b"retry: 1500\n");
        assert_eq!(HEARTBEAT, b": keep-alive\n");
        // In a stream, the only blank line is the one that ends the event.
        let stream = [
            &retry[..],
            HEARTBEAT,
            &encode_event("1-2", "message", "x"),
            HEARTBEAT,
        ]
        .concat();
        assert_eq!(
            String::from_utf8(stream).unwrap(),
            "retry: 1500\n: keep-alive\nid: 1-2\ndata: x\n\n: keep-alive\n"
        );
    }

    #[test]
    fn ids_round_trip_and_order() {
        let id: EventId = "1700000000000-42".parse().unwrap();
        assert_eq!(id, EventId::new(1_700_000_000_000, 42));
        assert_eq!(id.to_string(), "1700000000000-42");
        assert!(EventId::new(1, 9) < EventId::new(2, 0));
        for bad in [
            "",
            "5",
            "-1",
            "1-",
            "a-1",
            "1-2-3",
            "+1-2",
            "1 -2",
            "99999999999999999999-1",
        ] {
            assert_eq!(bad.parse::<EventId>(), Err(BadEventId), "{bad:?}");
        }
    }

    #[test]
    fn queries_decode_as_forms_and_refuse_bad_utf8() {
        let pairs = parse_query("topic=a+b&topic=%C3%A9t%C3%A9&&flag&x=%zz").unwrap();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(
            pairs,
            [
                ("topic", "a b"),
                ("topic", "été"),
                ("flag", ""),
                ("x", "%zz")
            ]
        );
        assert!(parse_query("").unwrap().is_empty());
        for bad in ["topic=x%FEy", "topic=x%FFy", "t%FF=1", "a=1&topic=%C3"] {
            assert!(parse_query(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_query("a=1&topic=x%FEy").unwrap_err().name,
            "topic".to_owned()
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("topic", "news").is_ok());
        assert_eq!(check_name("topic", ""), Err(NameError::Empty("topic")));
        assert_eq!(
            check_name("event", &"x".repeat(257)),
            Err(NameError::TooLong("event"))
        );
        assert!(check_name("event", &"x".repeat(256)).is_ok());
        for bad in ["a\nb", "a\rb", "a\0b"] {
            assert_eq!(check_name("topic", bad), Err(NameError::BadChar("topic")));
        }
    }
}
