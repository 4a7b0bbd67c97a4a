//! Command-line and environment configuration of the server.
//!
//! Every flag has an `SSE_<FLAG>` environment variable, so the same binary is
//! configured the same way from a shell, a systemd unit or a container.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

/// Address the server listens on by default: loopback only, the seed's port.
pub const DEFAULT_ADDR: &str = "127.0.0.1:3000";
/// The seed's clock interval.
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

/// Server-Sent Events pub/sub server.
///
/// Serves a web page at `/`, the event stream at `/sse` and accepts events at
/// `/publish`. See the README for the wire format and the endpoints.
#[derive(Debug, Clone, Parser)]
#[command(name = "sse-server", version, about, long_about = None, args_override_self = true)]
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
    pub publish_token: Option<String>,

    /// Maximum concurrent subscribers; further ones get 503 with Retry-After.
    /// Default: the open-file limit minus a reserve (5%, 32 to 1,000), so
    /// publishing and health checks stay reachable when it is reached.
    #[arg(long, env = "SSE_MAX_CLIENTS")]
    pub max_clients: Option<usize>,

    /// Events a subscriber may have waiting before it is disconnected as too
    /// slow (it can resume with Last-Event-ID).
    #[arg(long, env = "SSE_QUEUE", default_value_t = DEFAULT_QUEUE, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub queue: usize,

    /// Event broker: `memory` (embedded) or `redis://[:PASSWORD@]HOST:PORT[/DB]`
    /// (Redis Streams, shared by several server instances).
    #[arg(
        long,
        env = "SSE_BROKER",
        default_value = "memory",
        hide_env_values = true
    )]
    pub broker: BrokerUrl,

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
    /// The configuration with every flag at its default, as tests want it.
    pub fn defaults() -> Self {
        Self::parse_from(["sse-server"])
    }
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
            Err(format!(
                "expected `memory` or `redis://HOST:PORT[/DB]`, got `{s}`"
            ))
        }
    }
}

/// `redis://user:secret@host` becomes `redis://user:***@host`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Parses `2s`, `500ms`, `1m`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (examples: 2s, 500ms, 1m)"))
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be greater than zero".to_owned()),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Config::command().debug_assert();
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
