//! `sse-cli check URL`: tells an operator whether an SSE endpoint, and
//! everything between it and the user (proxies, CDNs, compression), will
//! work for browsers.
//!
//! Two phases, each in its own module:
//! - `passive`: one connection, as a browser makes it (with
//!   `Accept-Encoding: gzip, deflate, br`, so a compressing proxy shows
//!   itself): status, headers, how soon the headers came, then watching the
//!   stream for `retry:`, a heartbeat and ids;
//! - `active` (with `--publish-url`): publishes its own events and checks
//!   delivery time, an exact multi-line and unicode round trip, and a
//!   `Last-Event-ID` resume.
//!
//! [`report`] prints the result as a table or as JSON. Every wait is
//! bounded by `--timeout`; nothing here retries.

mod active;
mod passive;
pub mod report;
mod stream;

use std::time::Duration;

use reqwest::{header::HeaderMap, Url};
use serde::Serialize;

use crate::{
    cli::{CheckArgs, Header},
    http,
};

/// How soon the response headers must arrive. An event-stream server
/// answers at once; a proxy or framework that holds the headers back until
/// the first event leaves `EventSource` in "connecting" meanwhile.
pub const HEADERS_DEADLINE: Duration = Duration::from_secs(1);

/// How soon a published event must reach a subscriber. Our server takes
/// milliseconds; a buffering proxy holds events until a buffer fills,
/// which at low rates is seconds to forever.
pub const DELIVERY_DEADLINE: Duration = Duration::from_secs(1);

/// Something arriving at least this long after the headers shows that the
/// stream speaks while it runs (a heartbeat comment or events), not only
/// at connect.
pub const HEARTBEAT_MIN_AGE: Duration = Duration::from_secs(1);

/// `--publish-body`'s default: our server's JSON.
pub const DEFAULT_PUBLISH_BODY: &str = r#"{"data": {{data}}}"#;

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Works as browsers need.
    Pass,
    /// Works, but something will bite in production.
    Warn,
    /// Broken for browsers.
    Fail,
    /// Could not be checked (an earlier check failed, or no `--publish-url`).
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable name, e.g. `content-encoding`.
    pub name: &'static str,
    /// The verdict.
    pub status: Level,
    /// Why, in words an operator can act on.
    pub reason: String,
}

impl Check {
    fn new(name: &'static str, status: Level, reason: impl Into<String>) -> Self {
        Self {
            name,
            status,
            reason: reason.into(),
        }
    }
}

/// Everything `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The endpoint checked.
    pub url: String,
    /// Whether a connection (and a response) was had at all.
    pub connected: bool,
    /// One entry per check, in the order run.
    pub checks: Vec<Check>,
}

impl Report {
    /// How many checks ended at `level`.
    pub fn count(&self, level: Level) -> usize {
        self.checks.iter().filter(|c| c.status == level).count()
    }

    /// The check named `name`, if it was reported.
    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The exit status: 2 when no connection could be made, 1 when a check
    /// failed, else 0 (warnings do not fail).
    pub fn exit_code(&self) -> u8 {
        if !self.connected {
            2
        } else if self.count(Level::Fail) > 0 {
            1
        } else {
            0
        }
    }
}

/// What to check and how.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// The event stream.
    pub url: Url,
    /// Where to publish test events, if anywhere.
    pub publish_url: Option<Url>,
    /// The publish body, with `{{data}}` (a JSON string) or `{{text}}`
    /// (the raw text) standing for the data.
    pub publish_body: String,
    /// Extra request headers, sent on every request.
    pub headers: Vec<Header>,
    /// Bound on every wait.
    pub timeout: Duration,
}

impl CheckConfig {
    /// The configuration the flags ask for.
    pub fn from_args(args: &CheckArgs) -> Self {
        Self {
            url: args.url.clone(),
            publish_url: args.publish_url.clone(),
            publish_body: args
                .publish_body
                .clone()
                .unwrap_or_else(|| default_publish_body(&args.url)),
            headers: args.headers.clone(),
            timeout: args.timeout,
        }
    }

    fn extra_headers(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for header in &self.headers {
            map.append(header.name.clone(), header.value.clone());
        }
        map
    }
}

/// Our server's publish JSON for the stream at `url`: to the URL's first
/// `?topic=` if it names one (so the events reach the stream checked),
/// else [`DEFAULT_PUBLISH_BODY`] (topic `default`).
pub fn default_publish_body(url: &Url) -> String {
    match url.query_pairs().find(|(name, _)| name == "topic") {
        Some((_, topic)) => {
            let topic = serde_json::to_string(&topic).unwrap_or_default();
            format!(r#"{{"topic": {topic}, "data": {{{{data}}}}}}"#)
        }
        None => DEFAULT_PUBLISH_BODY.to_string(),
    }
}

/// Runs every check against the endpoint.
///
/// # Errors
///
/// Only when the HTTP client cannot be set up; everything the endpoint
/// does wrong is in the [`Report`].
pub async fn check(config: &CheckConfig) -> Result<Report, reqwest::Error> {
    let client = http::client_builder()
        .connect_timeout(config.timeout.min(http::CONNECT_TIMEOUT))
        .build()?;
    let mut report = Report {
        url: config.url.to_string(),
        connected: false,
        checks: Vec::new(),
    };
    let passive = passive::run(&client, config, &mut report).await;
    match (&config.publish_url, passive) {
        (Some(publish_url), Some(seen)) => {
            active::run(&client, config, publish_url, seen, &mut report).await;
        }
        (Some(_), None) => {
            for name in active::CHECKS {
                report.checks.push(Check::new(
                    name,
                    Level::Skip,
                    "not run: the stream itself is not usable (see above)",
                ));
            }
        }
        (None, seen) => {
            if let Some(seen) = seen {
                report.checks.push(passive::ids_check(&seen, config));
            }
            for name in active::CHECKS {
                report.checks.push(Check::new(
                    name,
                    Level::Skip,
                    "not run: give --publish-url to test delivery, round trip and resume",
                ));
            }
        }
    }
    Ok(report)
}

/// `sse-cli check`: prints the report (a table, or JSON with `--json`) and
/// returns the exit status.
///
/// # Errors
///
/// The HTTP client could not be set up, or printing failed.
pub async fn run(args: CheckArgs) -> Result<u8, Box<dyn std::error::Error>> {
    let config = CheckConfig::from_args(&args);
    let report = check(&config).await?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        report::write_json(&mut stdout, &report)?;
    } else {
        let color = crate::output::use_color(&std::io::stdout());
        report::write_table(&mut stdout, &report, color)?;
    }
    Ok(report.exit_code())
}

/// A duration as people read it in a report: `4 ms`, `1.52 s`.
fn human(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{:.2} s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_publish_body_follows_the_streams_topic() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            default_publish_body(&url("http://h/sse")),
            DEFAULT_PUBLISH_BODY
        );
        assert_eq!(
            default_publish_body(&url("http://h/sse?x=1&topic=a%20%22b&topic=c")),
            r#"{"topic": "a \"b", "data": {{data}}}"#
        );
    }
}
