//! The command line: `sse-cli watch` and `sse-cli publish`, their flags and
//! the parsing of flag values. Doc comments here are the `--help` text.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use reqwest::{
    header::{HeaderName, HeaderValue},
    Url,
};

pub use crate::duration::parse_duration;
use crate::duration::parse_positive_duration;
use crate::parse::DEFAULT_MAX_EVENT_SIZE;

/// The stream `watch` follows when given no URL: our server on its default port.
pub const DEFAULT_WATCH_URL: &str = "http://localhost:3000/sse";

/// The server `publish` posts to when given no `--url`: our server's default.
pub const DEFAULT_SERVER_URL: &str = "http://localhost:3000";

/// `--connect-timeout`'s default: long enough for a slow network and a busy
/// server, short enough that a server which accepts and never answers is
/// noticed while the user still waits.
pub const DEFAULT_CONNECT_TIMEOUT: &str = "10s";

/// Terminal client for Server-Sent Events: follow any event stream, or
/// publish to an sse-server.
#[derive(Debug, Parser)]
#[command(name = "sse-cli", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Follow an event stream and print its events, reconnecting as a
    /// browser's EventSource does.
    Watch(WatchArgs),
    /// Publish an event to an sse-server (or one event per line of stdin).
    Publish(PublishArgs),
    /// Check an SSE endpoint (and every proxy, CDN and compressor in front
    /// of it) for what breaks browsers: one PASS/WARN/FAIL line per check.
    /// Exit 0 when nothing failed, 1 when something did, 2 when it could not
    /// connect.
    Check(CheckArgs),
    /// Print a shell completion script, e.g.
    /// `sse-cli completions bash > ~/.local/share/bash-completion/completions/sse-cli`.
    Completions(CompletionsArgs),
}

/// `check --timeout`'s default: long enough to see a heartbeat sent every
/// 15 s (our server's default) twice over.
pub const DEFAULT_CHECK_TIMEOUT: &str = "30s";

/// Flags of `sse-cli check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// URL of the event stream to check (ours or anyone's).
    pub url: Url,

    /// Also publish test events here and check delivery time, a multi-line
    /// and unicode round trip, and a Last-Event-ID resume (e.g.
    /// http://localhost:3000/publish).
    #[arg(long, value_name = "URL")]
    pub publish_url: Option<Url>,

    /// The publish request's body, for servers other than ours: `{{data}}`
    /// stands for the data as a JSON string, `{{text}}` for the raw text
    /// (sent as application/json when the result is JSON, else text/plain).
    /// Default: our server's {"data": {{data}}}, with "topic" set to the
    /// URL's first ?topic= if it has one.
    #[arg(long, value_name = "TEMPLATE", requires = "publish_url",
          value_parser = parse_publish_body)]
    pub publish_body: Option<String>,

    /// Extra request header on every request, as 'Name: value'; repeat for
    /// several.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<Header>,

    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Longest wait for anything: the response, a heartbeat, each event.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_CHECK_TIMEOUT,
          value_parser = parse_positive_duration)]
    pub timeout: Duration,
}

/// Checks that a publish body template has a place for the data.
fn parse_publish_body(s: &str) -> Result<String, String> {
    if s.contains("{{data}}") || s.contains("{{text}}") {
        Ok(s.to_string())
    } else {
        Err("the template needs {{data}} (a JSON string) or {{text}} (raw text)".into())
    }
}

/// Flags of `sse-cli completions`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Flags of `sse-cli watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// URL of the event stream (any SSE endpoint, not only sse-server's).
    #[arg(env = "SSE_WATCH_URL", default_value = DEFAULT_WATCH_URL)]
    pub url: Url,

    /// Subscribe to this topic; repeat for several. Added to the URL as
    /// `?topic=NAME`.
    #[arg(long = "topic", value_name = "NAME")]
    pub topics: Vec<String>,

    /// Print one JSON object per line: {"event": TYPE, "data": DATA, "id":
    /// LAST_EVENT_ID}.
    #[arg(long)]
    pub json: bool,

    /// Exit (with status 0) after printing N events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Exit (with status 0) when the server ends the stream, instead of
    /// reconnecting.
    #[arg(long)]
    pub no_reconnect: bool,

    /// Resume after this event id: sent as `Last-Event-ID` on the first
    /// connection.
    #[arg(long, value_name = "ID", value_parser = parse_last_event_id)]
    pub last_event_id: Option<String>,

    /// Extra request header, as 'Name: value'; repeat for several.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<Header>,

    /// Wait this long before reconnecting (e.g. 500ms, 10s, 2 = 2s),
    /// whatever the server's `retry:` field says. Repeated failures back off
    /// from it.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retry: Option<Duration>,

    /// Send `Authorization: Bearer TOKEN` (an `-H Authorization` replaces
    /// it).
    #[arg(long, value_name = "TOKEN", env = "SSE_TOKEN", hide_env_values = true,
          value_parser = parse_token)]
    pub token: Option<String>,

    /// Give up on a connection attempt when no response headers arrived
    /// within this time (the first attempt then fails; later ones are
    /// retried).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_CONNECT_TIMEOUT,
          value_parser = parse_positive_duration)]
    pub connect_timeout: Duration,

    /// Reconnect when nothing at all, not even a heartbeat comment, arrived
    /// for this long (off by default: some streams are legitimately silent).
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub idle_timeout: Option<Duration>,

    /// Largest line or event, in bytes, accepted from the server; a bigger
    /// one ends the watch with an error instead of filling memory.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_EVENT_SIZE,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_event_size: usize,
}

/// Flags of `sse-cli publish`.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// Base URL of the sse-server; events are posted to URL/publish.
    #[arg(long, env = "SSE_URL", default_value = DEFAULT_SERVER_URL)]
    pub url: Url,

    /// Topic to publish to (the server's default: `default`).
    #[arg(long)]
    pub topic: Option<String>,

    /// Event type (the server's default: `message`).
    #[arg(long)]
    pub event: Option<String>,

    /// Bearer token, for a server started with --publish-token.
    #[arg(long, env = "SSE_PUBLISH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// The event's data. `-` or nothing: read stdin and publish each line as
    /// an event, as it arrives (e.g. `tail -f app.log | sse-cli publish -`).
    #[arg(value_name = "DATA | -")]
    pub data: Option<String>,
}

/// A request header given with `-H 'Name: value'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header's name.
    pub name: HeaderName,
    /// The header's value.
    pub value: HeaderValue,
}

/// Parses `Name: value` (spaces around the value are dropped, as curl does).
///
/// # Errors
///
/// A message for clap when there is no colon or the name or value is not
/// valid in an HTTP header.
pub fn parse_header(s: &str) -> Result<Header, String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("expected 'Name: value', got {s:?}"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("{:?} is not a valid header name", name.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("{:?} is not a valid header value", value.trim()))?;
    Ok(Header { name, value })
}

/// Checks that a bearer token can be sent in an `Authorization` header.
fn parse_token(s: &str) -> Result<String, String> {
    if s.is_empty() || HeaderValue::from_str(&format!("Bearer {s}")).is_err() {
        // The token itself is not echoed: it is a secret.
        return Err("the token is empty or holds characters a header cannot carry".into());
    }
    Ok(s.to_string())
}

/// Checks that an id can be sent in a `Last-Event-ID` header and could have
/// come from a stream (which cannot carry NUL, CR or LF in an id).
fn parse_last_event_id(s: &str) -> Result<String, String> {
    if s.contains(['\0', '\r', '\n']) || HeaderValue::from_bytes(s.as_bytes()).is_err() {
        return Err(format!("{s:?} cannot be sent as a Last-Event-ID header"));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    /// Parses as the binary does, but ignoring the developer's `SSE_*`
    /// environment (`SSE_TOKEN` would otherwise change what is parsed).
    fn parse<T>(args: impl IntoIterator<Item = T>) -> Result<Cli, clap::Error>
    where
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut command = Cli::command();
        for name in ["watch", "publish", "check"] {
            command = command.mut_subcommand(name, |sub| sub.mut_args(|arg| arg.env(None)));
        }
        Cli::from_arg_matches(&command.try_get_matches_from(args)?)
    }

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn watch_defaults() {
        let cli = parse(["sse-cli", "watch"]).unwrap();
        let Command::Watch(args) = cli.command else {
            panic!("not watch")
        };
        assert_eq!(args.url.as_str(), DEFAULT_WATCH_URL);
        assert!(!args.json && !args.no_reconnect);
        assert_eq!(args.count, None);
        assert_eq!(args.max_event_size, DEFAULT_MAX_EVENT_SIZE);
        assert_eq!(args.connect_timeout, Duration::from_secs(10));
        assert_eq!((args.idle_timeout, args.token), (None, None));
    }

    #[test]
    fn watch_flags_parse() {
        let cli = parse([
            "sse-cli",
            "watch",
            "https://example.com/events",
            "--topic",
            "a",
            "--topic",
            "b c",
            "--json",
            "--count",
            "3",
            "--no-reconnect",
            "--last-event-id",
            "42",
            "-H",
            "Authorization: Bearer x",
            "--header",
            "X-Foo:bar",
            "--retry",
            "250ms",
            "--token",
            "s3cret",
            "--connect-timeout",
            "2",
            "--idle-timeout",
            "1m",
        ])
        .unwrap();
        let Command::Watch(args) = cli.command else {
            panic!("not watch")
        };
        assert_eq!(args.topics, ["a", "b c"]);
        assert_eq!(args.count, Some(3));
        assert_eq!(args.last_event_id.as_deref(), Some("42"));
        assert_eq!(args.retry, Some(Duration::from_millis(250)));
        let cli = parse(["sse-cli", "watch", "--retry", "2"]).unwrap();
        let Command::Watch(bare) = cli.command else {
            panic!("not watch")
        };
        assert_eq!(bare.retry, Some(Duration::from_secs(2)), "bare = seconds");
        assert_eq!(args.headers.len(), 2);
        assert_eq!(args.headers[0].name, "authorization");
        assert_eq!(args.headers[0].value, "Bearer x");
        assert_eq!(args.headers[1].value, "bar");
        assert_eq!(args.token.as_deref(), Some("s3cret"));
        assert_eq!(args.connect_timeout, Duration::from_secs(2));
        assert_eq!(args.idle_timeout, Some(Duration::from_secs(60)));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["sse-cli", "watch", "--count", "0"][..],
            &["sse-cli", "watch", "-H", "no colon"],
            &["sse-cli", "watch", "-H", "bad name: x"],
            &["sse-cli", "watch", "--retry", "soon"],
            &["sse-cli", "watch", "not a url"],
            &["sse-cli", "watch", "--last-event-id", "a\nb"],
            &["sse-cli", "watch", "--token", ""],
            &["sse-cli", "watch", "--token", "a\nb"],
            &["sse-cli", "watch", "--connect-timeout", "0"],
            &["sse-cli", "watch", "--idle-timeout", "0s"],
            &["sse-cli", "publish", "--url", "::"],
        ] {
            assert!(parse(args).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn check_flags_parse() {
        let cli = parse([
            "sse-cli",
            "check",
            "http://h/sse",
            "--publish-url",
            "http://h/publish",
            "--publish-body",
            r#"{"message": {{data}}}"#,
            "--json",
            "--timeout",
            "5",
        ])
        .unwrap();
        let Command::Check(args) = cli.command else {
            panic!("not check")
        };
        assert_eq!(args.timeout, Duration::from_secs(5));
        assert!(args.json);
        assert_eq!(args.publish_url.unwrap().as_str(), "http://h/publish");
        for bad in [
            &["sse-cli", "check"][..],
            &[
                "sse-cli",
                "check",
                "http://h/",
                "--publish-body",
                "{{data}}",
            ],
            &[
                "sse-cli",
                "check",
                "http://h/",
                "--publish-url",
                "http://h/p",
                "--publish-body",
                "x",
            ],
            &["sse-cli", "check", "http://h/", "--timeout", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn publish_flags_parse() {
        let cli = parse([
            "sse-cli", "publish", "--topic", "logs", "--event", "line", "--token", "t", "-",
        ])
        .unwrap();
        let Command::Publish(args) = cli.command else {
            panic!("not publish")
        };
        assert_eq!(args.topic.as_deref(), Some("logs"));
        assert_eq!(args.event.as_deref(), Some("line"));
        assert_eq!(args.token.as_deref(), Some("t"));
        assert_eq!(args.data.as_deref(), Some("-"));
    }
}
