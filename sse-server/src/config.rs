//! Command-line and environment configuration of the server.
//!
//! Every flag has an `SSE_<FLAG>` environment variable, so the same binary is
//! configured the same way from a shell, a systemd unit or a container.

use std::{
    ffi::{OsStr, OsString},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::durable::Fsync;

/// Address the server listens on by default: loopback only, port 3000 (the
/// port of the Fiber example the project grew from).
pub const DEFAULT_ADDR: &str = "127.0.0.1:3000";
/// The clock interval of the Fiber example the project grew from.
pub const DEFAULT_TICK: &str = "2s";
/// Events kept for replay. 10,000 small events is a few MB, and covers a
/// client that was away for minutes at the rates the clock and a chat produce.
pub const DEFAULT_HISTORY: usize = 10_000;
/// Encoded bytes of history kept for replay. 64 MiB holds the default
/// 10,000 events at up to ~6 KB each, yet stops 10,000 large events (a
/// 64 KiB body of newlines encodes to ~458 KB) from pinning gigabytes.
pub const DEFAULT_HISTORY_BYTES: usize = 64 * 1024 * 1024;
/// Proxies commonly cut idle connections after 30-60 s; a comment every 15 s
/// keeps the stream open through them.
pub const DEFAULT_HEARTBEAT: &str = "15s";
/// The EventSource default; we send it explicitly so every client agrees.
pub const DEFAULT_RETRY: &str = "3s";
/// How long a request body may take to arrive, start to end. A 64 KiB
/// body needs only 6.4 KB/s to make it; a client slower than that is more
/// likely a trickle holding a connection open (nginx's
/// `client_body_timeout` is 60 s, but between reads, which a trickle meets).
pub const DEFAULT_BODY_TIMEOUT: &str = "10s";
/// Events a subscriber may have pending before it is dropped as too slow.
/// At 1,000 events a subscriber can be a few seconds behind a busy topic
/// without being dropped, while a stalled one is found quickly.
pub const DEFAULT_QUEUE: usize = 1_000;
/// How long a connection may wait for its next request head. Long enough
/// for a browser's pause between requests (nginx waits 75 s for the next
/// request and 60 s for a head), short enough that idle connections do not
/// pile up and hold file descriptors.
pub const DEFAULT_KEEPALIVE_TIMEOUT: &str = "30s";

/// What `--help` says after the flags: the endpoints and the value syntax.
const AFTER_HELP: &str = "\
Endpoints:
  GET  /              the web page
  GET  /sse           the event stream: ?topic=NAME (repeat; default `default`),
                      Last-Event-ID header or ?lastEventId=ID to resume
  POST /publish       publish (PUT too): JSON {\"topic\", \"event\", \"data\"},
                      JSON {\"message\": ...} (data on topic `default`), or text/plain
                      data with ?topic= and ?event=; answers 202 {\"id\": ...}
  GET  /healthz       200 while serving, 503 when the broker is down
  GET  /metrics       Prometheus text format
  GET  /stats         counters as JSON (for the page's chart)
  GET  /openapi.json  OpenAPI 3.1 description of the HTTP API

Durations: a bare number is seconds (`2`); or with a unit: `500ms`, `2s`, `1m`, `1h`.
Broker: `memory`, or `redis://[[USER]:PASSWORD@]HOST:PORT[/DB]` (`rediss://` for TLS).
Every flag can also come from the environment variable shown, e.g. SSE_ADDR.
Secrets: prefer --publish-token-file, --jwt-secret-file and --broker-file (or the SSE_* variables)
to flags, which other users can read with `ps`.";

/// Server-Sent Events pub/sub server.
///
/// Serves a web page at `/`, the event stream at `/sse` and accepts events at
/// `/publish`. See the README for the wire format and the endpoints.
#[derive(Debug, Clone, Parser)]
#[command(name = "sse-server", version, about, long_about = None, args_override_self = true,
          after_help = AFTER_HELP)]
pub struct Config {
    /// Address (IP:PORT) to listen on.
    #[arg(long, env = "SSE_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: SocketAddr,

    /// Interval of the built-in clock, which publishes a `tick` event on topic
    /// `default`; `0` turns it off.
    #[arg(long, env = "SSE_TICK", default_value = DEFAULT_TICK, value_parser = parse_duration)]
    pub tick: Duration,

    /// Number of recent events kept for replay to clients that resume with
    /// `Last-Event-ID`.
    #[arg(long, env = "SSE_HISTORY", default_value_t = DEFAULT_HISTORY, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub history: usize,

    /// Most bytes of encoded events kept for replay: the oldest events are
    /// dropped from history when either this or `--history` is exceeded.
    #[arg(long, env = "SSE_HISTORY_BYTES", default_value_t = DEFAULT_HISTORY_BYTES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub history_bytes: usize,

    /// Interval between keep-alive comments on idle streams.
    #[arg(long, env = "SSE_HEARTBEAT", default_value = DEFAULT_HEARTBEAT, value_parser = parse_positive_duration)]
    pub heartbeat: Duration,

    /// Reconnection delay sent to clients in the stream's `retry:` field.
    #[arg(long, env = "SSE_RETRY", default_value = DEFAULT_RETRY, value_parser = parse_duration)]
    pub retry: Duration,

    /// Require `Authorization: Bearer TOKEN` on /publish.
    #[arg(long, env = "SSE_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<Secret>,

    /// Read the publish token from this file (its first line), so it stays
    /// out of `ps`. Read by [`Config::load_secret_files`].
    #[arg(
        long,
        env = "SSE_PUBLISH_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "publish_token"
    )]
    pub publish_token_file: Option<PathBuf>,

    /// Maximum concurrent subscribers; further ones get 503 with Retry-After.
    /// Default: the open-file limit minus a reserve (5%, 32 to 1,000), so
    /// publishing and health checks stay reachable when it is reached.
    #[arg(long, env = "SSE_MAX_CLIENTS")]
    pub max_clients: Option<usize>,

    /// Events a subscriber may have waiting before it is disconnected as too
    /// slow (it can resume with Last-Event-ID).
    #[arg(long, env = "SSE_QUEUE", default_value_t = DEFAULT_QUEUE, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub queue: usize,

    /// Event broker: `memory` (embedded) or
    /// `redis://[[USER]:PASSWORD@]HOST:PORT[/DB]` (Redis Streams, shared by
    /// several server instances).
    #[arg(
        long,
        env = "SSE_BROKER",
        default_value = "memory",
        hide_env_values = true,
        value_parser = BrokerUrlParser,
    )]
    pub broker: BrokerUrl,

    /// Read the broker URL from this file (its first line), so a Redis
    /// password stays out of `ps`. Read by [`Config::load_secret_files`].
    #[arg(
        long,
        env = "SSE_BROKER_FILE",
        value_name = "FILE",
        conflicts_with = "broker"
    )]
    pub broker_file: Option<PathBuf>,

    /// Time a publish body may take to arrive; a slower one gets 408.
    #[arg(long, env = "SSE_BODY_TIMEOUT", default_value = DEFAULT_BODY_TIMEOUT, value_parser = parse_positive_duration)]
    pub body_timeout: Duration,

    /// Prefix of the Redis keys this server uses (Redis broker only).
    #[arg(long, env = "SSE_REDIS_PREFIX", default_value = "sse")]
    pub redis_prefix: String,

    /// Serve the web page from this folder instead of the embedded copy
    /// (for editing the page live).
    #[arg(long, env = "SSE_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Close a connection that sends no (complete) request head for this
    /// long: an idle keep-alive connection, or a client sending its head
    /// too slowly.
    #[arg(long, env = "SSE_KEEPALIVE_TIMEOUT", default_value = DEFAULT_KEEPALIVE_TIMEOUT, value_parser = parse_positive_duration)]
    pub keepalive_timeout: Duration,

    /// PEM certificate chain: serve HTTPS on `--addr` (HTTP/2 and HTTP/1.1,
    /// chosen by ALPN). Needs `--tls-key`.
    #[arg(long, env = "SSE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "SSE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require a JSON Web Token signed with this HS256 secret to subscribe
    /// and publish (see the README's "Authorization").
    #[arg(
        long,
        env = "SSE_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_public_key"
    )]
    pub jwt_secret: Option<Secret>,

    /// Read the HS256 secret from this file (its first line), so it stays
    /// out of `ps`. Read by [`Config::load_secret_files`].
    #[arg(
        long,
        env = "SSE_JWT_SECRET_FILE",
        value_name = "FILE",
        conflicts_with_all = ["jwt_secret", "jwt_public_key"]
    )]
    pub jwt_secret_file: Option<PathBuf>,

    /// Require a JSON Web Token signed with the private half of this PEM
    /// public key: RSA (RS256) or EC P-256 (ES256).
    #[arg(long, env = "SSE_JWT_PUBLIC_KEY", value_parser = parse_public_key)]
    pub jwt_public_key: Option<PublicKeyFile>,

    /// Clock skew allowed when checking a token's `exp` and `nbf`.
    #[arg(long, env = "SSE_JWT_LEEWAY", default_value = DEFAULT_JWT_LEEWAY, value_parser = parse_duration)]
    pub jwt_leeway: Duration,

    /// Topic patterns anyone may subscribe to without a token
    /// (comma-separated: `name`, `PREFIX*`, `*`).
    #[arg(long, env = "SSE_ANONYMOUS_TOPICS", value_delimiter = ',')]
    pub anonymous_topics: Vec<String>,

    /// Ask this URL whether each subscribe and publish is allowed
    /// (`GET` with the client's Cookie and Authorization headers,
    /// `X-SSE-Action` and `X-SSE-Topics`; 2xx allows).
    #[arg(long, env = "SSE_AUTH_URL", value_parser = parse_auth_url, hide_env_values = true)]
    pub auth_url: Option<reqwest::Url>,

    /// Browser origin allowed to subscribe and publish across sites
    /// (repeat, or comma-separated in the variable; `*` for any origin,
    /// without credentials).
    #[arg(long, env = "SSE_CORS_ORIGIN", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origin: Vec<String>,

    /// `Host` names the server answers to (comma-separated; `*` for any).
    /// Default: loopback names when listening on loopback, else any.
    #[arg(long, env = "SSE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// Keep the embedded broker's history (the last --history events) on
    /// disk in this directory, and restore it at start.
    #[arg(long, env = "SSE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// With --data-dir, when a publish counts as durable, as Redis's
    /// `appendfsync`: `always` (202 only once the event is on disk),
    /// `everysec` (flushed every second), `no` (the OS flushes).
    #[arg(long, env = "SSE_FSYNC", value_enum, default_value_t = Fsync::Always)]
    pub fsync: Fsync,
}

/// Clock skew tolerated on `exp` and `nbf`: a few seconds covers machines
/// kept in step by NTP without keeping an expired token useful for long.
pub const DEFAULT_JWT_LEEWAY: &str = "5s";

/// A secret given on the command line or in the environment: its `Debug`
/// never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("must not be empty".to_owned());
        }
        Ok(Self(s.to_owned()))
    }
}

/// `--jwt-public-key`: the file, read and checked at start.
#[derive(Debug, Clone)]
pub struct PublicKeyFile {
    /// Where the key was read from.
    pub path: PathBuf,
    /// The key and its algorithm.
    pub key: crate::auth::JwtKey,
}

fn parse_public_key(s: &str) -> Result<PublicKeyFile, String> {
    let pem = std::fs::read(s).map_err(|e| format!("cannot read `{s}`: {e}"))?;
    let key = crate::auth::JwtKey::public_pem(&pem).map_err(|e| format!("`{s}`: {e}"))?;
    Ok(PublicKeyFile {
        path: PathBuf::from(s),
        key,
    })
}

fn parse_auth_url(s: &str) -> Result<reqwest::Url, String> {
    match reqwest::Url::parse(s) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(url),
        // Never echo the value: it may hold credentials.
        _ => Err("expected an http:// or https:// URL".to_owned()),
    }
}

fn parse_origin(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    let valid = s == "*"
        || s.split_once("://").is_some_and(|(scheme, host)| {
            matches!(scheme, "http" | "https")
                && !host.is_empty()
                && !host.contains(['/', '?', '#', ' ', ','])
        });
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}`: expected an origin like https://app.example.com (scheme, host, optional port) or *"
        ))
    }
}

impl Config {
    /// Parses command-line arguments (the first is the program name) with
    /// every flag's default, ignoring the `SSE_*` environment: what tests
    /// and embedding applications want, so that a developer's exported
    /// `SSE_PUBLISH_TOKEN` does not change their server.
    ///
    /// # Errors
    /// When an argument is unknown or its value invalid.
    pub fn try_from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let command = Self::command().mut_args(|arg| arg.env(None));
        Self::from_arg_matches(&command.try_get_matches_from(args)?)
    }

    /// Replaces `--publish-token-file`, `--jwt-secret-file` and
    /// `--broker-file` by what those
    /// files hold (their first line), so the secrets never appear in a
    /// command line.
    ///
    /// # Errors
    /// When a file cannot be read, is empty, or (for the broker) does not
    /// hold a broker URL. The message names the file, never its content.
    pub fn load_secret_files(&mut self) -> Result<(), SecretFileError> {
        if let Some(path) = self.publish_token_file.take() {
            self.publish_token = Some(Secret(read_secret(&path)?));
        }
        if let Some(path) = self.jwt_secret_file.take() {
            self.jwt_secret = Some(Secret(read_secret(&path)?));
        }
        if let Some(path) = self.broker_file.take() {
            self.broker = read_secret(&path)?
                .parse()
                .map_err(|_| SecretFileError::NotABroker(path))?;
        }
        Ok(())
    }
}

impl Default for Config {
    /// Every flag at its default, whatever the environment holds.
    fn default() -> Self {
        // Every flag has a default or is optional, so no arguments parse.
        Self::try_from_args(["sse-server"]).expect("the defaults parse")
    }
}

/// A secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be read.
    #[error("cannot read {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file held no secret.
    #[error("{} is empty", .0.display())]
    Empty(PathBuf),
    /// The broker file did not hold a broker URL.
    #[error("{} does not hold `memory` or a `redis://` URL", .0.display())]
    NotABroker(PathBuf),
}

/// The first line of `path`, without its line ending.
fn read_secret(path: &Path) -> Result<String, SecretFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(SecretFileError::Empty(path.to_owned()));
    }
    Ok(line.to_owned())
}

/// Which broker keeps the event log.
#[derive(Clone, PartialEq, Eq)]
pub enum BrokerUrl {
    /// The embedded in-memory broker.
    Memory,
    /// A Redis server, by URL.
    Redis(String),
}

impl std::fmt::Debug for BrokerUrl {
    /// Never shows a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::Redis(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::str::FromStr for BrokerUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "memory" {
            Ok(Self::Memory)
        } else if s.starts_with("redis://") || s.starts_with("rediss://") {
            Ok(Self::Redis(s.to_owned()))
        } else {
            // The value is not repeated: it may hold a password.
            Err("expected `memory` or `redis://[[USER]:PASSWORD@]HOST:PORT[/DB]`".to_owned())
        }
    }
}

/// Parses `--broker` without ever echoing the value in an error (clap's
/// own message would, and the value may hold a password).
#[derive(Debug, Clone, Copy)]
struct BrokerUrlParser;

impl clap::builder::TypedValueParser for BrokerUrlParser {
    type Value = BrokerUrl;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<BrokerUrl, clap::Error> {
        value
            .to_str()
            .ok_or_else(|| "is not valid UTF-8".to_owned())
            .and_then(str::parse)
            .map_err(|why| {
                let flag = arg.map_or_else(|| "--broker".to_owned(), ToString::to_string);
                let mut cmd = cmd.clone();
                cmd.error(
                    clap::error::ErrorKind::ValueValidation,
                    format!("invalid value for {flag} (not shown: it may hold a password): {why}"),
                )
            })
    }
}

/// `redis://user:secret@host` becomes `redis://user:***@host`.
///
/// The user information ends at the *last* `@`, so a password holding `/`,
/// `@` or `?` is hidden whole; without a `:` the whole user information is
/// hidden, as some clients read it as a password.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://***@{host}"),
        },
        None => url.to_owned(),
    }
}

/// Parses a duration in the one syntax of the workspace's command lines:
/// `2` (a bare number is seconds), `500ms`, `2s`, `1m`, `1h 30m`. It reads
/// exactly what `sse_cli::duration::parse_duration` reads (a test checks
/// they agree); it is repeated here because the server does not depend on
/// the client crate.
///
/// # Errors
/// A message naming the text and giving examples, for clap to show.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("`{s}`: too many seconds"));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("`{s}`: {e} (examples: 2 (seconds), 500ms, 2s, 1m)"))
}

/// Like [`parse_duration`], but zero is refused.
///
/// # Errors
/// As [`parse_duration`], and when the duration is zero.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("`{s}`: must be greater than zero")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Config::command().debug_assert();
    }

    #[test]
    fn durations_read_as_the_cli_reads_them() {
        for text in [
            "0",
            "2",
            " 7 ",
            "500ms",
            "2s",
            "1m",
            "1h 30m",
            "",
            "soon",
            "-1",
            "1.5",
            "2 parsecs",
            "99999999999999999999999",
        ] {
            assert_eq!(
                parse_duration(text),
                sse_cli::duration::parse_duration(text),
                "{text:?}"
            );
            assert_eq!(
                parse_positive_duration(text).is_ok(),
                sse_cli::duration::parse_positive_duration(text).is_ok(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn parsing_without_env_ignores_sse_variables() {
        // A variable no other test reads, so setting it races with nothing.
        std::env::set_var("SSE_REDIS_PREFIX", "from-the-environment");
        let with_env = Config::try_parse_from(["sse-server"]).unwrap();
        assert_eq!(with_env.redis_prefix, "from-the-environment");
        let hermetic = Config::try_from_args(["sse-server"]).unwrap();
        assert_eq!(hermetic.redis_prefix, "sse");
        assert_eq!(Config::default().redis_prefix, "sse");
        let flagged = Config::try_from_args(["sse-server", "--redis-prefix", "x"]).unwrap();
        assert_eq!(flagged.redis_prefix, "x");
        std::env::remove_var("SSE_REDIS_PREFIX");
    }

    #[test]
    fn secret_files_give_their_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let broker = dir.path().join("broker");
        std::fs::write(&broker, "redis://:pa/ss@db:6379/2\r\n").unwrap();
        let jwt = dir.path().join("jwt");
        std::fs::write(&jwt, "hmac-key\n").unwrap();
        let mut config = Config::try_from_args([
            "sse-server".as_ref(),
            "--publish-token-file".as_ref(),
            token.as_os_str(),
            "--jwt-secret-file".as_ref(),
            jwt.as_os_str(),
            "--broker-file".as_ref(),
            broker.as_os_str(),
        ])
        .unwrap();
        config.load_secret_files().unwrap();
        assert_eq!(
            config.publish_token.as_ref().map(Secret::expose),
            Some("s3cret")
        );
        assert!(
            !format!("{config:?}").contains("s3cret"),
            "Debug shows no secret: {config:?}"
        );
        assert_eq!(
            config.jwt_secret.as_ref().map(Secret::expose),
            Some("hmac-key")
        );
        assert_eq!(
            config.broker,
            BrokerUrl::Redis("redis://:pa/ss@db:6379/2".to_owned())
        );
        assert_eq!(config.broker.to_string(), "redis://:***@db:6379/2");
        std::fs::write(&broker, "postgres://u:hunter2@db\n").unwrap();
        let mut config = Config::try_from_args([
            "sse-server".as_ref(),
            "--broker-file".as_ref(),
            broker.as_os_str(),
        ])
        .unwrap();
        let err = config.load_secret_files().unwrap_err().to_string();
        assert!(!err.contains("hunter2") && err.contains("broker"), "{err}");
        std::fs::write(&token, "\n").unwrap();
        let mut config = Config::try_from_args([
            "sse-server".as_ref(),
            "--publish-token-file".as_ref(),
            token.as_os_str(),
        ])
        .unwrap();
        assert!(matches!(
            config.load_secret_files(),
            Err(SecretFileError::Empty(_))
        ));
        assert!(Config::try_from_args([
            "sse-server",
            "--publish-token",
            "a",
            "--publish-token-file",
            "b"
        ])
        .is_err());
    }

    #[test]
    fn a_bad_broker_is_refused_without_echoing_it() {
        let err = Config::try_from_args(["sse-server", "--broker", "postgres://u:hunter2@db"])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("--broker"), "{err}");
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_positive_duration("0s").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://:hunter2@db:6379/1"),
            "redis://:***@db:6379/1"
        );
        assert_eq!(redact_url("redis://u:p@db"), "redis://u:***@db");
        assert_eq!(redact_url("redis://db:6379"), "redis://db:6379");
        assert_eq!(
            redact_url("redis://:pa/ss@db:6379/1"),
            "redis://:***@db:6379/1"
        );
        assert_eq!(
            redact_url("rediss://user:p@ss/w?rd@db/0"),
            "rediss://user:***@db/0"
        );
        assert_eq!(redact_url("redis://onlysecret@db"), "redis://***@db");
        assert_eq!(
            format!("{:?}", "redis://:pw@h".parse::<BrokerUrl>().unwrap()),
            "redis://:***@h"
        );
    }

    #[test]
    fn broker_rejects_unknown_schemes() {
        assert!("postgres://x".parse::<BrokerUrl>().is_err());
        assert_eq!("memory".parse::<BrokerUrl>(), Ok(BrokerUrl::Memory));
    }
}
