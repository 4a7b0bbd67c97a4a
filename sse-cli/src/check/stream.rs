//! One event-stream connection as `check` reads it: requests made as a
//! browser's `EventSource` makes them, and chunks parsed into events with
//! the time each arrived.

use reqwest::{
    header::{HeaderMap, HeaderValue, ACCEPT, ACCEPT_ENCODING, CACHE_CONTROL},
    Client, RequestBuilder, Response,
};
use tokio::time::Instant;

use super::CheckConfig;
use crate::parse::{Event, Parser};

/// What browsers send as `Accept-Encoding`: a proxy that compresses
/// streams does it for them, so `check` asks the same way.
const BROWSER_ACCEPT_ENCODING: &str = "gzip, deflate, br";

/// A `GET` of the stream with EventSource's headers, a browser's
/// `Accept-Encoding`, the user's `-H` headers and an optional
/// `Last-Event-ID`.
pub(super) fn request(
    client: &Client,
    config: &CheckConfig,
    last_event_id: Option<&str>,
) -> RequestBuilder {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        ACCEPT_ENCODING,
        HeaderValue::from_static(BROWSER_ACCEPT_ENCODING),
    );
    for (name, _) in config.extra_headers().iter() {
        headers.remove(name);
    }
    headers.extend(config.extra_headers());
    if let Some(Ok(id)) = last_event_id.map(HeaderValue::from_str) {
        headers.insert("last-event-id", id);
    }
    client.get(config.url.clone()).headers(headers)
}

/// What one read of the stream gave.
pub(super) enum Read {
    /// Bytes arrived at `at` (possibly only a comment: `events` empty).
    Chunk { at: Instant, events: Vec<Event> },
    /// The server ended the stream.
    Ended,
    /// The connection broke, or the stream broke a parser limit.
    Broke(String),
    /// Nothing arrived before the deadline.
    TimedOut,
}

/// An open stream.
pub(super) struct Stream {
    response: Response,
    parser: Parser,
}

impl Stream {
    pub(super) fn new(response: Response) -> Self {
        Self {
            response,
            parser: Parser::new(),
        }
    }

    /// The server's `retry:`, once it sent one.
    pub(super) fn retry(&self) -> Option<std::time::Duration> {
        self.parser.retry()
    }

    /// The next chunk, or why there is none before `deadline`.
    pub(super) async fn read(&mut self, deadline: Instant) -> Read {
        let chunk = match tokio::time::timeout_at(deadline, self.response.chunk()).await {
            Err(_) => return Read::TimedOut,
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => return Read::Ended,
            Ok(Err(err)) => return Read::Broke(crate::http::describe(&err)),
        };
        let at = Instant::now();
        let mut events = Vec::new();
        if let Err(err) = self.parser.feed(&chunk, |event| events.push(event.clone())) {
            return Read::Broke(err.to_string());
        }
        Read::Chunk { at, events }
    }

    /// Reads until an event satisfies `wanted`, handing every event to
    /// `seen` on the way. `Err` says why none came before `deadline`.
    pub(super) async fn wait_for(
        &mut self,
        deadline: Instant,
        mut seen: impl FnMut(&Event),
        wanted: impl Fn(&Event) -> bool,
    ) -> Result<(Event, Instant), String> {
        loop {
            match self.read(deadline).await {
                Read::Chunk { at, events } => {
                    for event in events {
                        seen(&event);
                        if wanted(&event) {
                            return Ok((event, at));
                        }
                    }
                }
                Read::Ended => return Err("the server ended the stream".into()),
                Read::Broke(cause) => return Err(format!("the stream broke: {cause}")),
                Read::TimedOut => return Err("it never arrived".into()),
            }
        }
    }
}
