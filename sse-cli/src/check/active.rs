//! The active checks (`--publish-url`): `check` publishes its own events,
//! each marked with a random nonce so other traffic on the stream is
//! ignored, and checks that they arrive promptly, exactly, and again after
//! a `Last-Event-ID` resume.

use reqwest::{header::CONTENT_TYPE, Client, Url};
use tokio::time::Instant;

use super::{
    human,
    passive::{self, Seen},
    stream::{self, Stream},
    Check, CheckConfig, Level, Report, DELIVERY_DEADLINE,
};
use crate::{http, output::escaped, parse::Event};

/// The active checks, in report order.
pub(super) const CHECKS: [&str; 3] = ["delivery", "round-trip", "resume"];

/// The body of the round-trip event after its marker line: several lines,
/// an empty one, leading spaces, a colon, and text from outside ASCII
/// (accents, symbols, CJK, right-to-left, an emoji outside the BMP).
const ROUND_TRIP_TAIL: &str = "\nsecond line\n\n   indented: with a colon\nünïcödé ✓ 中文 עברית 😀";

/// State shared by the active checks: the open stream and the marker.
struct Probe<'a> {
    client: &'a Client,
    config: &'a CheckConfig,
    publish_url: &'a Url,
    nonce: String,
    seen: Seen,
}

impl Probe<'_> {
    fn data(&self, what: &str) -> String {
        format!("sse-cli check {} {what}", self.nonce)
    }

    /// Publishes `data` through the `--publish-body` template.
    async fn publish(&self, data: &str) -> Result<(), String> {
        let json = serde_json::to_string(data).unwrap_or_default();
        let body = self
            .config
            .publish_body
            .replace("{{data}}", &json)
            .replace("{{text}}", data);
        let content_type = if serde_json::from_str::<serde_json::Value>(&body).is_ok() {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        let response = self
            .client
            .post(self.publish_url.clone())
            .headers(self.config.extra_headers())
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .timeout(self.config.timeout)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "publishing to {} failed: {}",
                    self.publish_url,
                    http::describe(&e)
                )
            })?;
        if !response.status().is_success() {
            return Err(format!(
                "{} answered {}",
                self.publish_url,
                http::describe_status(response).await
            ));
        }
        Ok(())
    }

    /// Opens a stream (resuming after `last_event_id`), bounded by
    /// `--timeout`.
    async fn open(&self, last_event_id: Option<&str>) -> Result<Stream, String> {
        let send = stream::request(self.client, self.config, last_event_id).send();
        match tokio::time::timeout(self.config.timeout, send).await {
            Ok(Ok(response)) if response.status().is_success() => Ok(Stream::new(response)),
            Ok(Ok(response)) => Err(format!("the stream answered {}", response.status())),
            Ok(Err(err)) => Err(format!("cannot connect: {}", http::describe(&err))),
            Err(_) => Err("no response headers in time".into()),
        }
    }

    /// Waits on `stream` for our event with exactly `data` as its first line.
    async fn expect(
        &mut self,
        stream: &mut Stream,
        marker: &str,
    ) -> Result<(Event, Instant), String> {
        let deadline = Instant::now() + self.config.timeout;
        let seen = &mut self.seen;
        let marker = marker.to_string();
        stream
            .wait_for(
                deadline,
                |e| seen.add(e),
                |e| e.data.lines().next() == Some(marker.as_str()),
            )
            .await
    }
}

/// Runs the active checks into `report`, then the `ids` verdict over
/// every event seen.
pub(super) async fn run(
    client: &Client,
    config: &CheckConfig,
    publish_url: &Url,
    seen: Seen,
    report: &mut Report,
) {
    let mut probe = Probe {
        client,
        config,
        publish_url,
        nonce: format!("{:016x}", fastrand::u64(..)),
        seen,
    };
    let results = match probe.open(None).await {
        Ok(mut stream) => {
            let delivery = delivery(&mut probe, &mut stream).await;
            let (round_trip, last_id) = round_trip(&mut probe, &mut stream).await;
            drop(stream);
            let resume = resume(&mut probe, last_id).await;
            [delivery, round_trip, resume]
        }
        Err(cause) => CHECKS.map(|name| Check::new(name, Level::Fail, cause.clone())),
    };
    report.checks.push(passive::ids_check(&probe.seen, config));
    report.checks.extend(results);
}

async fn delivery(probe: &mut Probe<'_>, stream: &mut Stream) -> Check {
    let data = probe.data("delivery");
    let sent = Instant::now();
    if let Err(cause) = probe.publish(&data).await {
        return Check::new("delivery", Level::Fail, cause);
    }
    match probe.expect(stream, &data).await {
        Ok((_, at)) if at - sent <= DELIVERY_DEADLINE => Check::new(
            "delivery",
            Level::Pass,
            format!("a published event arrived after {}", human(at - sent)),
        ),
        Ok((_, at)) => Check::new(
            "delivery",
            Level::Fail,
            format!(
                "a published event took {}: something holds events back (a buffering \
                 proxy: nginx proxy_buffering, or compression)",
                human(at - sent)
            ),
        ),
        Err(cause) => Check::new(
            "delivery",
            Level::Fail,
            format!(
                "published, but {cause} within {}: buffered or lost",
                human(probe.config.timeout)
            ),
        ),
    }
}

/// The round-trip check and the id of the last event of ours seen.
async fn round_trip(probe: &mut Probe<'_>, stream: &mut Stream) -> (Check, Option<String>) {
    let marker = probe.data("round-trip");
    let data = format!("{marker}{ROUND_TRIP_TAIL}");
    if let Err(cause) = probe.publish(&data).await {
        return (Check::new("round-trip", Level::Fail, cause), None);
    }
    match probe.expect(stream, &marker).await {
        Ok((event, _)) if event.data == data => (
            Check::new(
                "round-trip",
                Level::Pass,
                "5 lines (one empty, one indented) and non-ASCII text came back exactly",
            ),
            Some(event.id),
        ),
        Ok((event, _)) => (
            Check::new(
                "round-trip",
                Level::Fail,
                format!(
                    "sent \"{}\", received \"{}\"",
                    escaped(ROUND_TRIP_TAIL),
                    escaped(event.data.strip_prefix(&marker).unwrap_or(&event.data))
                ),
            ),
            Some(event.id),
        ),
        Err(cause) => (
            Check::new("round-trip", Level::Fail, format!("published, but {cause}")),
            None,
        ),
    }
}

/// Disconnected after `last_id`, two events are published; a reconnect
/// with `Last-Event-ID` must give exactly those two, then a live one.
async fn resume(probe: &mut Probe<'_>, last_id: Option<String>) -> Check {
    let Some(last_id) = last_id.filter(|id| !id.is_empty()) else {
        return Check::new(
            "resume",
            Level::Fail,
            "no id on our events, so a client has nothing to resume from",
        );
    };
    let missed = [probe.data("missed 1"), probe.data("missed 2")];
    for data in &missed {
        if let Err(cause) = probe.publish(data).await {
            return Check::new("resume", Level::Fail, cause);
        }
    }
    let mut stream = match probe.open(Some(&last_id)).await {
        Ok(stream) => stream,
        Err(cause) => return Check::new("resume", Level::Fail, format!("reconnecting: {cause}")),
    };
    let live = probe.data("live");
    if let Err(cause) = probe.publish(&live).await {
        return Check::new("resume", Level::Fail, cause);
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + probe.config.timeout;
    let wait = {
        let nonce_prefix = probe.data("");
        let seen = &mut probe.seen;
        stream
            .wait_for(
                deadline,
                |e| {
                    seen.add(e);
                    if e.data.starts_with(&nonce_prefix) {
                        got.push(e.data.lines().next().unwrap_or_default().to_string());
                    }
                },
                |e| e.data == live,
            )
            .await
    };
    let expected = [missed[0].clone(), missed[1].clone(), live.clone()];
    let short = |list: &[String]| {
        list.iter()
            .map(|d| {
                d.rsplit_once(&probe.nonce)
                    .map_or(d.as_str(), |(_, w)| w.trim())
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wait {
        Ok(_) if got == expected => Check::new(
            "resume",
            Level::Pass,
            format!("Last-Event-ID {last_id} gave exactly the 2 missed events, then live"),
        ),
        Ok(_) => Check::new(
            "resume",
            Level::Fail,
            format!(
                "Last-Event-ID {last_id}: expected [{}], got [{}]",
                short(&expected),
                short(&got)
            ),
        ),
        Err(cause) => Check::new(
            "resume",
            Level::Fail,
            format!(
                "Last-Event-ID {last_id}: got [{}], then {cause}",
                short(&got)
            ),
        ),
    }
}
