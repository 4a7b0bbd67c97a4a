//! The HTTP/1.1 side of a subscription, written by hand because it is the
//! bench's hot path: the subscribe URL split once, the response head read
//! with `httparse` (bounded by [`MAX_HEAD_BYTES`] and [`MAX_HEADERS`]), and
//! the body's framing (`Content-Length`, chunked, or until close) undone in
//! place, with no copy, before the bytes reach the event-stream parser.

use anyhow::{bail, Context as _};

/// Largest response head accepted; a server sending more is misbehaving.
pub const MAX_HEAD_BYTES: usize = 4096;

/// Most header lines accepted in a response head (a real SSE response has
/// about ten).
pub const MAX_HEADERS: usize = 32;

/// Splits a plain `http://host[:port]/path?query` URL into host, port and
/// path.
///
/// # Errors
/// On any other scheme or a URL without a host.
pub fn split_http_url(url: &str) -> anyhow::Result<(String, u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url:?}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        bail!("{url:?}: no host");
    }
    let (host, port_text) = if authority.starts_with('[') {
        // IPv6 literal: [addr] or [addr]:port
        let end = authority
            .find(']')
            .with_context(|| format!("{url:?}: unclosed ["))?;
        let after = &authority[end + 1..];
        (&authority[..=end], after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port_text {
        Some(p) => p
            .parse()
            .with_context(|| format!("{url:?}: bad port {p:?}"))?,
        None => 80,
    };
    Ok((host.to_string(), port, path.to_string()))
}

/// What a complete response head says.
#[derive(Debug)]
pub enum Head {
    /// `200` with an event-stream content type: the body is the stream.
    Stream {
        /// How the body is framed.
        framing: Framing,
        /// Bytes of the buffer taken by the head.
        len: usize,
    },
    /// Any other answer; `kind` is the report key (`http 503`,
    /// `not text/event-stream`), `retry_after` the server's `Retry-After`
    /// in seconds, if it gave one.
    Refused {
        /// Report key.
        kind: String,
        /// `Retry-After` seconds.
        retry_after: Option<u64>,
    },
}

/// Reads a response head from the start of `buf`: `Ok(None)` while it is
/// incomplete.
///
/// # Errors
/// A report key for a head that is malformed or has too many headers.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err("response head too large".into()),
        Err(_) => return Err("malformed response".into()),
        Ok(httparse::Status::Complete(n)) => n,
    };
    let code = resp.code.unwrap_or(0);
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| std::str::from_utf8(h.value).unwrap_or("").trim())
    };
    if code != 200 {
        let retry_after = header("retry-after").and_then(|v| v.parse().ok());
        return Ok(Some(Head::Refused {
            kind: format!("http {code}"),
            retry_after,
        }));
    }
    if !header("content-type").is_some_and(sse_cli::http::is_event_stream) {
        return Ok(Some(Head::Refused {
            kind: "not text/event-stream".into(),
            retry_after: None,
        }));
    }
    let chunked =
        header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().ends_with("chunked"));
    let framing = match header("content-length") {
        _ if chunked => Framing::chunked(),
        Some(v) => Framing::Length(v.parse().map_err(|_| "bad content-length".to_string())?),
        None => Framing::Close,
    };
    Ok(Some(Head::Stream { framing, len }))
}

/// HTTP/1.1 body framing of the stream.
#[derive(Debug)]
pub enum Framing {
    /// Read until the server closes.
    Close,
    /// `Content-Length` bytes left.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunked),
}

/// Where a chunked decoder is.
#[derive(Debug, Clone, Copy)]
pub enum Chunked {
    /// Reading the hex size line.
    Size {
        /// Size so far.
        value: u64,
        /// Hex digits read.
        digits: u8,
        /// Inside a chunk extension (ignored).
        ext: bool,
    },
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// After a chunk, skipping its CRLF.
    DataEnd,
    /// The last chunk arrived.
    Done,
}

impl Framing {
    /// A chunked decoder at the start of the body.
    pub fn chunked() -> Self {
        Framing::Chunked(Chunked::Size {
            value: 0,
            digits: 0,
            ext: false,
        })
    }

    /// Calls `body` with each body slice of `input`; returns false when the
    /// body is complete.
    ///
    /// # Errors
    /// On bad chunk framing, or what `body` returns.
    pub fn decode(
        &mut self,
        input: &[u8],
        mut body: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<bool> {
        match self {
            Framing::Close => {
                body(input)?;
                Ok(true)
            }
            Framing::Length(left) => {
                let n = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                body(&input[..n])?;
                *left -= n as u64;
                Ok(*left > 0)
            }
            Framing::Chunked(state) => state.decode(input, body),
        }
    }
}

impl Chunked {
    fn decode(
        &mut self,
        mut input: &[u8],
        mut body: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<bool> {
        while !input.is_empty() {
            match self {
                Chunked::Size { .. } | Chunked::DataEnd => {
                    self.framing_byte(input[0])?;
                    input = &input[1..];
                }
                Chunked::Data(left) => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    body(&input[..n])?;
                    input = &input[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        *self = Chunked::DataEnd;
                    }
                }
                Chunked::Done => return Ok(false),
            }
        }
        Ok(!matches!(self, Chunked::Done))
    }

    /// One byte of a size line or of the CRLF after a chunk.
    fn framing_byte(&mut self, b: u8) -> anyhow::Result<()> {
        match self {
            Chunked::Size { value, digits, ext } => match b {
                b'\n' => {
                    if *digits == 0 {
                        bail!("bad chunk size line");
                    }
                    *self = if *value == 0 {
                        Chunked::Done
                    } else {
                        Chunked::Data(*value)
                    };
                }
                b'\r' => {}
                _ if *ext => {}
                b';' | b' ' | b'\t' => *ext = true,
                _ => {
                    let d = char::from(b).to_digit(16).context("bad chunk size")?;
                    *digits = digits.saturating_add(1);
                    if *digits > 15 {
                        bail!("chunk size too large");
                    }
                    *value = *value * 16 + u64::from(d);
                }
            },
            Chunked::DataEnd => {
                if b == b'\n' {
                    *self = Chunked::Size {
                        value: 0,
                        digits: 0,
                        ext: false,
                    };
                } else if b != b'\r' {
                    bail!("missing CRLF after chunk");
                }
            }
            Chunked::Data(_) | Chunked::Done => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_decoded_across_reads() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut f = Framing::chunked();
            let mut out = Vec::new();
            let more = f.decode(&wire[..split], |b| {
                out.extend_from_slice(b);
                Ok(())
            });
            // The body is complete once the last-chunk line is in.
            assert_eq!(more.unwrap(), split < wire.len() - 2, "split at {split}");
            let more = f.decode(&wire[split..], |b| {
                out.extend_from_slice(b);
                Ok(())
            });
            assert!(!more.unwrap(), "split at {split}");
            assert_eq!(out, b"hello world");
        }
        let mut f = Framing::chunked();
        assert!(f.decode(b"zz\r\n", |_| Ok(())).is_err());
    }

    #[test]
    fn heads_are_read_with_their_framing_and_refusals() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap().is_none());
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream; charset=utf-8\r\n\
                   Transfer-Encoding: chunked\r\n\r\nxyz";
        match parse_head(ok).unwrap() {
            Some(Head::Stream {
                framing: Framing::Chunked(_),
                len,
            }) => assert_eq!(len, ok.len() - 3),
            other => panic!("{other:?}"),
        }
        match parse_head(b"HTTP/1.1 503 No\r\nRetry-After: 7\r\n\r\n").unwrap() {
            Some(Head::Refused { kind, retry_after }) => {
                assert_eq!(kind, "http 503");
                assert_eq!(retry_after, Some(7));
            }
            other => panic!("{other:?}"),
        }
        match parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n").unwrap() {
            Some(Head::Refused { kind, .. }) => assert_eq!(kind, "not text/event-stream"),
            other => panic!("{other:?}"),
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(
            parse_head(many.as_bytes()).unwrap_err(),
            "response head too large"
        );
    }

    #[test]
    fn urls_split() {
        assert_eq!(
            split_http_url("http://127.0.0.1:3000/sse?topic=a").unwrap(),
            ("127.0.0.1".to_string(), 3000, "/sse?topic=a".to_string())
        );
        assert_eq!(
            split_http_url("http://localhost").unwrap(),
            ("localhost".to_string(), 80, "/".to_string())
        );
        assert_eq!(
            split_http_url("http://[::1]:8080/s").unwrap(),
            ("[::1]".to_string(), 8080, "/s".to_string())
        );
        assert_eq!(split_http_url("http://[::1]").unwrap().1, 80);
        assert!(split_http_url("https://x/").is_err());
        assert!(split_http_url("http://h:notaport/").is_err());
    }
}
