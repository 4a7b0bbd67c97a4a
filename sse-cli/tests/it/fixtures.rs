//! Byte-level event streams, one or more per rule of the WHATWG standard's
//! "Interpreting an event stream", with the events a browser dispatches for
//! them. The parser tests feed them in many chunkings; the watch tests serve
//! them over HTTP.

/// One event as a browser's `MessageEvent` sees it: (type, data, lastEventId).
pub type Expected = (&'static str, &'static str, &'static str);

/// A stream and what the standard says it produces.
pub struct Fixture {
    pub name: &'static str,
    pub input: &'static [u8],
    pub events: &'static [Expected],
    /// The reconnection time in ms after the stream, if it set one.
    pub retry: Option<u64>,
}

const fn fixture(name: &'static str, input: &'static [u8], events: &'static [Expected]) -> Fixture {
    Fixture {
        name,
        input,
        events,
        retry: None,
    }
}

const fn with_retry(
    name: &'static str,
    input: &'static [u8],
    events: &'static [Expected],
    retry: u64,
) -> Fixture {
    Fixture {
        name,
        input,
        events,
        retry: Some(retry),
    }
}

pub const FIXTURES: &[Fixture] = &[
    // Line endings.
    fixture("lf line endings", b"data: a\n\n", &[("message", "a", "")]),
    fixture(
        "crlf line endings",
        b"data: a\r\ndata: b\r\n\r\n",
        &[("message", "a\nb", "")],
    ),
    fixture(
        "lone cr line endings",
        b"data: a\rdata: b\r\r",
        &[("message", "a\nb", "")],
    ),
    fixture(
        "lone cr ends the final event",
        b"event: x\rdata: last\r\r",
        &[("x", "last", "")],
    ),
    fixture(
        "mixed line endings",
        b"data: a\r\ndata: b\rdata: c\n\r\n",
        &[("message", "a\nb\nc", "")],
    ),
    fixture(
        "cr cr lf is two line ends",
        b"data: a\r\r\ndata: b\n\n",
        &[("message", "a", ""), ("message", "b", "")],
    ),
    fixture(
        "lf cr is two line ends",
        b"data: a\n\rdata: b\n\n",
        &[("message", "a", ""), ("message", "b", "")],
    ),
    // Byte order mark.
    fixture(
        "bom at start is skipped",
        b"\xEF\xBB\xBFdata: a\n\n",
        &[("message", "a", "")],
    ),
    fixture(
        "bom later is part of the line",
        b"data: a\n\n\xEF\xBB\xBFdata: b\n\ndata: c\n\n",
        &[("message", "a", ""), ("message", "c", "")],
    ),
    fixture(
        "only one bom is skipped",
        b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n",
        &[("message", "b", "")],
    ),
    fixture(
        "bom prefix is not a bom",
        b"\xEF\xBBdata: a\n\ndata: b\n\n",
        &[("message", "b", "")],
    ),
    fixture(
        "bom in data is kept",
        b"data: \xEF\xBB\xBFa\n\n",
        &[("message", "\u{FEFF}a", "")],
    ),
    // UTF-8.
    fixture(
        "multibyte characters",
        "event: caf\u{e9}\ndata: \u{e9}\u{20ac}\u{1F600}\nid: \u{263A}\n\n".as_bytes(),
        &[("caf\u{e9}", "\u{e9}\u{20ac}\u{1F600}", "\u{263A}")],
    ),
    fixture(
        "invalid utf-8 is replaced",
        b"data: a\xFFb\n\n",
        &[("message", "a\u{FFFD}b", "")],
    ),
    fixture(
        "truncated sequence is one replacement",
        b"data: \xE2\x82\n\ndata: \xE2\x82z\n\n",
        &[("message", "\u{FFFD}", ""), ("message", "\u{FFFD}z", "")],
    ),
    fixture(
        "invalid sequence replaced per maximal subpart",
        b"data: \xF0\x80\x80!\n\n",
        &[("message", "\u{FFFD}\u{FFFD}\u{FFFD}!", "")],
    ),
    fixture(
        "invalid utf-8 in field name",
        b"d\xFFata: x\n\ndata: y\n\n",
        &[("message", "y", "")],
    ),
    // Comments.
    fixture(
        "comments are ignored",
        b": hello\ndata: a\n:\n: another\n\n",
        &[("message", "a", "")],
    ),
    fixture(
        "comment only block dispatches nothing",
        b": keep-alive\n\n: again\r\n\r\n",
        &[],
    ),
    fixture(
        "colon not at start is not a comment",
        b" : x\ndata: a\n\n",
        &[("message", "a", "")],
    ),
    // Field and value.
    fixture(
        "field without colon has empty value",
        b"data\n\ndata\ndata\n\n",
        &[("message", "", ""), ("message", "\n", "")],
    ),
    fixture(
        "event without colon resets type",
        b"event: x\nevent\ndata: a\n\n",
        &[("message", "a", "")],
    ),
    fixture(
        "one leading space is removed",
        b"data:  two\n\ndata:none\n\ndata:\tab\n\n",
        &[
            ("message", " two", ""),
            ("message", "none", ""),
            ("message", "\tab", ""),
        ],
    ),
    fixture(
        "value keeps later colons",
        b"data: a: b:c\n\n",
        &[("message", "a: b:c", "")],
    ),
    fixture(
        "field names are case sensitive",
        b"Data: a\nDATA: b\nEvent: e\ndata: c\n\n",
        &[("message", "c", "")],
    ),
    fixture(
        "unknown fields are ignored",
        b"foo: bar\ndata: a\nbaz\ndata : b\n\n",
        &[("message", "a", "")],
    ),
    // Data.
    fixture(
        "data lines joined with lf",
        b"data: a\ndata:\ndata: b\n\n",
        &[("message", "a\n\nb", "")],
    ),
    fixture(
        "only the final lf is removed",
        b"data: a\ndata:\n\n",
        &[("message", "a\n", "")],
    ),
    fixture(
        "empty data line dispatches empty data",
        b"data:\n\n",
        &[("message", "", "")],
    ),
    fixture(
        "nul in data is kept",
        b"data: a\x00b\n\n",
        &[("message", "a\u{0}b", "")],
    ),
    // Dispatch.
    fixture(
        "dispatch only on blank line",
        b"data: a\ndata: b\n",
        &[],
    ),
    fixture(
        "unterminated final event is dropped",
        b"data: a\n\ndata: b",
        &[("message", "a", "")],
    ),
    fixture(
        "final event ended by one line end is dropped",
        b"data: a\n\ndata: b\r\n",
        &[("message", "a", "")],
    ),
    fixture(
        "final event cut after cr is dropped",
        b"data: a\r\rdata: b\r",
        &[("message", "a", "")],
    ),
    fixture(
        "empty data buffer dispatches nothing and resets type",
        b"event: x\n\ndata: a\n\n",
        &[("message", "a", "")],
    ),
    fixture(
        "several blank lines dispatch once",
        b"data: a\n\n\n\n\r\n\rdata: b\n\n",
        &[("message", "a", ""), ("message", "b", "")],
    ),
    // Event type.
    fixture(
        "event type resets after dispatch",
        b"event: x\ndata: 1\n\ndata: 2\n\n",
        &[("x", "1", ""), ("message", "2", "")],
    ),
    fixture(
        "empty event type is message",
        b"event:\ndata: a\n\n",
        &[("message", "a", "")],
    ),
    fixture(
        "last event field wins",
        b"event: a\nevent: b\ndata: x\n\n",
        &[("b", "x", "")],
    ),
    // Id.
    fixture(
        "id persists across events",
        b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n",
        &[("message", "a", "1"), ("message", "b", "1"), ("message", "c", "2")],
    ),
    fixture(
        "empty id resets last event id",
        b"id: 1\ndata: a\n\nid\ndata: b\n\nid: 3\ndata: c\n\nid:\ndata: d\n\n",
        &[
            ("message", "a", "1"),
            ("message", "b", ""),
            ("message", "c", "3"),
            ("message", "d", ""),
        ],
    ),
    fixture(
        "id with nul is ignored",
        b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
        &[("message", "a", "1"), ("message", "b", "1")],
    ),
    fixture(
        "id without data still sets last event id",
        b"id: 5\n\ndata: a\n\n",
        &[("message", "a", "5")],
    ),
    fixture(
        "id applies to its own event",
        b"data: a\nid: 9\n\n",
        &[("message", "a", "9")],
    ),
    // Retry.
    with_retry(
        "retry sets reconnection time",
        b"retry: 5000\ndata: a\n\n",
        &[("message", "a", "")],
        5000,
    ),
    with_retry(
        "retry only when all ascii digits",
        b"retry: 1234\nretry: +5\nretry: -5\nretry: 5s\nretry: 1.5\nretry:  7\nretry:\nretry: \xEF\xBC\x95\ndata: a\n\n",
        &[("message", "a", "")],
        1234,
    ),
    with_retry(
        "retry without event",
        b"retry: 10\n\n",
        &[],
        10,
    ),
    with_retry(
        "retry zero",
        b"retry: 10\nretry: 0\n",
        &[],
        0,
    ),
    // Whole streams.
    fixture("empty stream", b"", &[]),
    with_retry(
        "our server's stream",
        b"retry: 3000\n\n: heartbeat\n\nid: 17\nevent: tick\ndata: the time is 12:00:00\n\nid: 18\ndata: line1\ndata: line2\n\n",
        &[
            ("tick", "the time is 12:00:00", "17"),
            ("message", "line1\nline2", "18"),
        ],
        3000,
    ),
];
