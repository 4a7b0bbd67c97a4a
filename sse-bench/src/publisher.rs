//! The publisher: one keep-alive HTTP connection, events on a fixed
//! schedule. Each payload carries its sequence number and its *intended*
//! send time, and clients measure latency from that time, so if the
//! publisher (or the server answering it) falls behind, the delay is counted
//! rather than hidden (no coordinated omission).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use sse_cli::cli::Header;

use crate::payload;

/// Deadline for one publish request: a publish that takes longer is counted
/// as an error, and its event is expected nowhere.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// How far past the end of its schedule the publisher keeps going before
/// it gives up on the remaining events (counted as publish errors): long
/// enough for a slow server to catch up, short enough to bound the run.
pub const MAX_BEHIND: Duration = Duration::from_secs(30);

/// A body template split around `{payload}`, with `{topic}` already filled in.
#[derive(Debug, Clone)]
pub struct BodyTemplate {
    parts: Vec<String>,
}

impl BodyTemplate {
    /// Prepares `template` for `topic`.
    pub fn new(template: &str, topic: &str) -> Self {
        let filled = template.replace("{topic}", topic);
        Self {
            parts: filled.split("{payload}").map(str::to_string).collect(),
        }
    }

    /// The body for one payload.
    pub fn render(&self, payload: &str) -> String {
        self.parts.join(payload)
    }
}

/// How to publish.
#[derive(Debug, Clone)]
pub struct PublishSpec {
    /// Publish URL (templates already filled in).
    pub url: String,
    /// Body template.
    pub body: BodyTemplate,
    /// Content-Type and any extra headers.
    pub headers: HeaderMap,
    /// Events per second.
    pub rate: f64,
    /// How long to publish.
    pub duration: Duration,
    /// Payload bytes.
    pub payload: usize,
}

/// The publish headers: the content type, the `--token` and the
/// `--pub-header`s (parsed by `sse-cli`'s `-H` parser, so both tools read
/// `Name: value` alike).
///
/// # Errors
/// When the content type or token is not a valid header value.
pub fn headers(
    content_type: &str,
    extra: &[Header],
    token: Option<&str>,
) -> anyhow::Result<HeaderMap> {
    let mut map = HeaderMap::new();
    map.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .with_context(|| format!("bad content type {content_type:?}"))?,
    );
    if let Some(t) = token {
        let value = HeaderValue::from_str(&format!("Bearer {t}"))
            .context("--token holds characters a header cannot carry")?;
        map.insert(AUTHORIZATION, value);
    }
    for h in extra {
        map.append(h.name.clone(), h.value.clone());
    }
    Ok(map)
}

/// What the publisher did.
#[derive(Debug, Default, Clone)]
pub struct PublishStats {
    /// Events the schedule called for.
    pub scheduled: u64,
    /// Events the server accepted (2xx).
    pub published: u64,
    /// Failed publishes by kind.
    pub errors: BTreeMap<String, u64>,
    /// Largest delay between an event's intended and actual send start, µs.
    pub max_lag_us: u64,
    /// Wall-clock seconds the publishing took.
    pub elapsed_s: f64,
}

/// Number of events a run of `duration` at `rate` publishes.
pub fn scheduled_events(rate: f64, duration: Duration) -> u64 {
    // Saturating float-to-int conversion; inputs are validated positive.
    (rate * duration.as_secs_f64()).floor() as u64
}

/// Publishes on schedule; `sent` counts accepted events as they happen.
///
/// # Errors
/// Only when the HTTP client cannot be built; publish failures are counted.
pub async fn run(spec: PublishSpec, sent: Arc<AtomicU64>) -> anyhow::Result<PublishStats> {
    let client = reqwest::Client::builder()
        .default_headers(spec.headers.clone())
        .timeout(PUBLISH_TIMEOUT)
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;
    let total = scheduled_events(spec.rate, spec.duration);
    let mut stats = PublishStats {
        scheduled: total,
        ..Default::default()
    };
    let start = tokio::time::Instant::now();
    let start_ns = payload::now_ns();
    let interval_ns = 1e9 / spec.rate;
    // A server that stalls publishes must not stall the run for ever.
    let give_up = start + spec.duration + MAX_BEHIND;
    for seq in 0..total {
        // Float offsets keep non-integer rates exact over long runs.
        let offset = Duration::from_nanos((seq as f64 * interval_ns) as u64);
        tokio::time::sleep_until(start + offset).await;
        if tokio::time::Instant::now() > give_up {
            *stats
                .errors
                .entry("not sent: publisher too far behind schedule".into())
                .or_default() += total - seq;
            break;
        }
        let lag = start.elapsed().saturating_sub(offset);
        stats.max_lag_us = stats
            .max_lag_us
            .max(u64::try_from(lag.as_micros()).unwrap_or(u64::MAX));
        let intended_ns = start_ns + u64::try_from(offset.as_nanos()).unwrap_or(u64::MAX);
        let body = spec
            .body
            .render(&payload::encode(seq, intended_ns, spec.payload));
        match client.post(&spec.url).body(body).send().await {
            Ok(resp) if resp.status().is_success() => {
                // Drain the (small) body so the connection is reused.
                let _ = resp.bytes().await;
                stats.published += 1;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(resp) => {
                *stats
                    .errors
                    .entry(format!("http {}", resp.status().as_u16()))
                    .or_default() += 1;
            }
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout".to_string()
                } else if e.is_connect() {
                    "connect".to_string()
                } else {
                    "request".to_string()
                };
                *stats.errors.entry(kind).or_default() += 1;
            }
        }
    }
    stats.elapsed_s = start.elapsed().as_secs_f64();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_topic_and_payload() {
        let t = BodyTemplate::new(crate::cli::DEFAULT_PUB_BODY, "t1");
        assert_eq!(
            t.render("1 2 x"),
            r#"{"topic":"t1","event":"message","data":"1 2 x"}"#
        );
        assert_eq!(BodyTemplate::new("{payload}", "t").render("p"), "p");
    }

    #[test]
    fn header_args_parse() {
        let auth = sse_cli::cli::parse_header("Authorization: Bearer x").unwrap();
        let h = headers("text/plain", &[auth], None).unwrap();
        assert_eq!(h.get("authorization").unwrap(), "Bearer x");
        assert_eq!(h.get("content-type").unwrap(), "text/plain");
        assert!(headers("text/plain\n", &[], None).is_err());
        let h = headers("text/plain", &[], Some("t0k")).unwrap();
        assert_eq!(h.get("authorization").unwrap(), "Bearer t0k");
        assert!(headers("text/plain", &[], Some("a\r\nX: y")).is_err());
    }

    #[test]
    fn schedule_counts() {
        assert_eq!(scheduled_events(20.0, Duration::from_secs(30)), 600);
        assert_eq!(scheduled_events(0.5, Duration::from_secs(3)), 1);
    }
}
