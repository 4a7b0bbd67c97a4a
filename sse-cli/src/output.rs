//! How `watch` prints events: one line per event, either readable (coloured
//! on a terminal) or the stable `--json` form.
//!
//! The JSON form is a contract for scripts: exactly
//! `{"event": TYPE, "data": DATA, "id": LAST_EVENT_ID}` with those keys in
//! that order, a space after each colon and comma, and one object per line.
//!
//! Human lines never pass control characters through: event data comes from
//! the network, and a raw ESC or CR could rewrite the user's terminal. Line
//! breaks and other control characters (and the bidirectional overrides that
//! can make text read differently from what it is) are shown escaped.

use std::{
    io::{self, IsTerminal, Write},
    time::SystemTime,
};

use serde::Serialize;

use crate::parse::Event;

/// SGR codes used for the parts of a human line.
mod sgr {
    pub const RESET: &str = "\x1b[0m";
    pub const DIM: &str = "\x1b[2m";
    pub const TYPE: &str = "\x1b[1;36m";
    pub const ID: &str = "\x1b[33m";
    pub const ERROR: &str = "\x1b[1;31m";
}

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `TIME  TYPE  id=ID  DATA`, coloured or not.
    Human {
        /// Use ANSI colours.
        color: bool,
    },
    /// One `{"event": .., "data": .., "id": ..}` object per line.
    Json,
}

/// Whether to colour output to this stream: only on a terminal, and not when
/// `NO_COLOR` is set to anything non-empty (<https://no-color.org>).
pub fn use_color(stream: &impl IsTerminal) -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && stream.is_terminal()
}

/// Writes events to `out` in a [`Format`], flushing after each so a reader
/// at the other end of a pipe sees every event as it arrives.
#[derive(Debug)]
pub struct Printer<W> {
    out: W,
    format: Format,
    line: Vec<u8>,
}

impl<W: Write> Printer<W> {
    /// A printer writing to `out`.
    pub fn new(out: W, format: Format) -> Self {
        Self {
            out,
            format,
            line: Vec::new(),
        }
    }

    /// Prints one event as one line.
    ///
    /// # Errors
    ///
    /// The error from writing to `out` (a closed pipe, for instance).
    pub fn print(&mut self, event: &Event) -> io::Result<()> {
        self.line.clear();
        match self.format {
            Format::Json => write_json(&mut self.line, event)?,
            Format::Human { color } => {
                let text = human_line(event, SystemTime::now(), color);
                self.line.extend_from_slice(text.as_bytes());
            }
        }
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        self.out.flush()
    }

    /// The writer, back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// The `--json` form of an event: keys in contract order.
#[derive(Serialize)]
struct JsonEvent<'a> {
    event: &'a str,
    data: &'a str,
    id: &'a str,
}

/// serde_json's compact output with the spacing the contract shows:
/// `{"event": "x", "data": "y", "id": ""}`.
struct ContractFormatter;

impl serde_json::ser::Formatter for ContractFormatter {
    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }
}

/// Writes the `--json` line of an event, without the newline.
///
/// # Errors
///
/// The error from writing to `out`.
pub fn write_json(out: &mut impl Write, event: &Event) -> io::Result<()> {
    let value = JsonEvent {
        event: &event.event,
        data: &event.data,
        id: &event.id,
    };
    let mut serializer = serde_json::Serializer::with_formatter(out, ContractFormatter);
    value.serialize(&mut serializer).map_err(io::Error::from)
}

/// The human line of an event received at `now`, without the newline:
/// `12:00:01.002Z  tick  id=17  the time is 12:00:01` (UTC time of receipt;
/// `id=` left out when the stream has set none).
pub fn human_line(event: &Event, now: SystemTime, color: bool) -> String {
    let mut line = String::with_capacity(event.data.len() + 48);
    let stamp = humantime::format_rfc3339_millis(now).to_string();
    // "2024-05-01T12:00:01.002Z": keep the time of day, always ASCII.
    let time = stamp.get(11..).unwrap_or(&stamp);
    paint(&mut line, color, sgr::DIM, |l| l.push_str(time));
    line.push_str("  ");
    paint(&mut line, color, sgr::TYPE, |l| {
        escape_into(l, &event.event, color)
    });
    if !event.id.is_empty() {
        line.push_str("  ");
        paint(&mut line, color, sgr::ID, |l| {
            l.push_str("id=");
            escape_into(l, &event.id, color);
        });
    }
    line.push_str("  ");
    escape_into(&mut line, &event.data, color);
    line
}

/// `sse-cli: error: MESSAGE`, the error in red on a colour terminal.
pub fn error_line(message: &str, color: bool) -> String {
    let mut line = String::from("sse-cli: ");
    paint(&mut line, color, sgr::ERROR, |l| l.push_str("error:"));
    line.push(' ');
    line.push_str(message);
    line
}

/// `text` with control and bidirectional formatting characters escaped,
/// for showing text from the network (a server's error message) on stderr.
pub fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text, false);
    out
}

/// Appends what `body` writes, wrapped in `code` and a reset when `color`.
fn paint(line: &mut String, color: bool, code: &str, body: impl FnOnce(&mut String)) {
    if color {
        line.push_str(code);
    }
    body(line);
    if color {
        line.push_str(sgr::RESET);
    }
}

/// Appends `text` with line breaks, control characters and bidirectional
/// formatting characters escaped (`\n`, `\r`, `\t`, `\u{1b}`); escapes are
/// dimmed on a colour terminal so they stand apart from the text.
fn escape_into(line: &mut String, text: &str, color: bool) {
    for c in text.chars() {
        let escaped = match c {
            '\n' => "\\n".to_string(),
            '\r' => "\\r".to_string(),
            '\t' => "\\t".to_string(),
            c if c.is_control() || is_bidi_control(c) => format!("\\u{{{:x}}}", u32::from(c)),
            c => {
                line.push(c);
                continue;
            }
        };
        paint(line, color, sgr::DIM, |l| l.push_str(&escaped));
    }
}

/// Characters that reorder the text around them (the "Trojan Source" set).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn event(event: &str, data: &str, id: &str) -> Event {
        Event {
            event: event.into(),
            data: data.into(),
            id: id.into(),
        }
    }

    fn json(e: &Event) -> String {
        let mut out = Vec::new();
        write_json(&mut out, e).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_has_contract_keys_order_and_spacing() {
        assert_eq!(
            json(&event("message", "hi", "")),
            r#"{"event": "message", "data": "hi", "id": ""}"#
        );
    }

    #[test]
    fn json_escapes_what_json_must() {
        assert_eq!(
            json(&event("t", "a\nb\r\"c\"\\\u{0}\u{1b}é", "7")),
            r#"{"event": "t", "data": "a\nb\r\"c\"\\\u0000\u001bé", "id": "7"}"#
        );
    }

    #[test]
    fn human_line_plain() {
        let at = UNIX_EPOCH + Duration::from_millis(3_723_004);
        assert_eq!(
            human_line(&event("tick", "the time", "17"), at, false),
            "01:02:03.004Z  tick  id=17  the time"
        );
        assert_eq!(
            human_line(&event("message", "x", ""), at, false),
            "01:02:03.004Z  message  x"
        );
    }

    #[test]
    fn human_line_escapes_control_characters() {
        let line = human_line(
            &event("a\u{1b}[2J", "one\ntwo\r\tthree\u{7}\u{202E}", "i\u{1b}d"),
            UNIX_EPOCH,
            false,
        );
        assert_eq!(
            line,
            "00:00:00.000Z  a\\u{1b}[2J  id=i\\u{1b}d  one\\ntwo\\r\\tthree\\u{7}\\u{202e}"
        );
        assert!(!line.contains(['\n', '\r', '\u{1b}', '\u{7}', '\u{202E}']));
    }

    #[test]
    fn human_line_colours_only_when_asked() {
        let e = event("tick", "x\ny", "1");
        assert!(!human_line(&e, UNIX_EPOCH, false).contains('\u{1b}'));
        let coloured = human_line(&e, UNIX_EPOCH, true);
        assert!(coloured.contains(sgr::TYPE) && coloured.contains(sgr::RESET));
        assert!(coloured.contains(&format!("{}\\n{}", sgr::DIM, sgr::RESET)));
    }

    #[test]
    fn printer_writes_one_line_per_event() {
        let mut printer = Printer::new(Vec::new(), Format::Json);
        printer.print(&event("a", "1\n2", "")).unwrap();
        printer.print(&event("b", "3", "x")).unwrap();
        let out = String::from_utf8(printer.into_inner()).unwrap();
        assert_eq!(
            out,
            "{\"event\": \"a\", \"data\": \"1\\n2\", \"id\": \"\"}\n{\"event\": \"b\", \"data\": \"3\", \"id\": \"x\"}\n"
        );
    }
}
