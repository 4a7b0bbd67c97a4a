//! Authorization: who may subscribe to and publish on which topic.
//!
//! Off by default. With `--jwt-secret` (HS256) or `--jwt-public-key` (RS256
//! or ES256) a request needs a JSON Web Token whose `sse` claim lists the
//! topic patterns it may use:
//!
//! ```json
//! {"sse": {"subscribe": ["news", "orders/*"], "publish": ["orders/*"]}, "exp": 1798000000}
//! ```
//!
//! The decisions live here, and only here:
//! - [`Auth::subscribe`]: may this request read these topics, and until when;
//! - [`Auth::publisher`] then [`Publisher::check`]: may this request publish
//!   (checked before the body is read), and on these topics (after);
//! - [`Auth::ask_hook`]: what `--auth-url` says;
//! - [`Origins`] and [`Hosts`]: which browser origins and `Host` names are
//!   served (CORS, cross-site publishing, DNS rebinding).
//!
//! The algorithm is pinned to the configured key: the token's header must
//! name exactly that algorithm, so `alg: none`, or an HS256 token signed
//! with an RSA public key as its secret, is refused. Tokens, secrets and
//! the hook's answers are never logged.

use std::{
    borrow::Cow,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::http::{header, HeaderValue};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use crate::{broker::Hub, config::Config, metrics::Metrics, subscribe::HeaderLookup};

/// Longest token we try to verify. Real tokens are a few hundred bytes; a
/// bound keeps a hostile one from costing more than a length check.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// How long `--auth-url` gets to answer before the request is refused with
/// 503: long enough for a slow application, short enough that a stuck one
/// does not hold clients for good.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often streams are checked for an expired token. A stream ends at
/// most this long after its token's `exp` (plus the leeway); one shared
/// timer for every stream, none per connection.
pub const EXPIRY_SWEEP: Duration = Duration::from_secs(1);
/// The cookie a browser's EventSource `withCredentials` sends the token in.
pub const TOKEN_COOKIE: &str = "sse_token";
/// The query parameter for clients that cannot set headers (EventSource).
pub const TOKEN_QUERY: &str = "access_token";

/// The error for a request whose `Host` is not served.
pub const HOST_REFUSED: &str = "this Host is not served here (see --allowed-hosts)";

/// Characters percent-encoded in `X-SSE-Topics`: everything but letters,
/// digits, `-._~` and `/`, so a topic holding `,` cannot split in two.
const TOPIC_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, or one that is malformed, badly signed, expired or not
    /// yet valid (401, `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A valid token that does not cover a topic (403).
    #[error("the token does not allow {action} topic {topic:?}")]
    Forbidden {
        /// `subscribe` or `publish`.
        action: Action,
        /// The first topic not covered.
        topic: String,
    },
    /// `--auth-url` answered 401.
    #[error("the authorization service refused the request (401)")]
    HookUnauthenticated,
    /// `--auth-url` answered 403.
    #[error("the authorization service refused the request (403)")]
    HookForbidden,
    /// `--auth-url` failed, answered something else, or timed out (503).
    #[error("the authorization service is unavailable; retry later")]
    HookUnavailable,
}

impl AuthError {
    /// The status the client gets.
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            Self::Unauthenticated(_) | Self::HookUnauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } | Self::HookForbidden => StatusCode::FORBIDDEN,
            Self::HookUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read topics (`GET /sse`).
    Subscribe,
    /// Write topics (`/publish`).
    Publish,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Publish => "publish",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Subscribe => "subscribing to",
            Self::Publish => "publishing to",
        })
    }
}

/// Topic patterns: `name`, `PREFIX*`, or `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patterns(Vec<String>);

impl Patterns {
    /// Patterns from a list (`--anonymous-topics`, a token's claim).
    pub fn new(patterns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self(patterns.into_iter().map(Into::into).collect())
    }

    /// Whether any pattern matches `topic`.
    pub fn covers(&self, topic: &str) -> bool {
        self.0
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => topic.starts_with(prefix),
                None => pattern == topic,
            })
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The claims we read. Unknown claims are ignored; a known one of the
/// wrong type makes the token invalid.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sse: SseClaim,
    /// NumericDate: seconds, possibly fractional (RFC 7519 section 2).
    exp: Option<f64>,
    nbf: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct SseClaim {
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

/// What a valid token allows.
#[derive(Debug)]
struct Grant {
    claim: SseClaim,
    /// Unix seconds after which the token (with the leeway) is expired.
    ends_at: Option<u64>,
}

/// The key tokens are verified with, and the one algorithm it allows.
#[derive(Clone)]
pub struct JwtKey {
    key: DecodingKey,
    algorithm: Algorithm,
}

impl std::fmt::Debug for JwtKey {
    /// Shows the algorithm, never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtKey({:?})", self.algorithm)
    }
}

impl JwtKey {
    /// An HS256 key from a shared secret.
    pub fn secret(secret: &[u8]) -> Self {
        Self {
            key: DecodingKey::from_secret(secret),
            algorithm: Algorithm::HS256,
        }
    }

    /// An RS256 (RSA) or ES256 (EC P-256) key from a PEM public key.
    ///
    /// # Errors
    /// When the PEM holds neither an RSA nor an EC public key.
    pub fn public_pem(pem: &[u8]) -> Result<Self, String> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self {
                key,
                algorithm: Algorithm::RS256,
            });
        }
        match DecodingKey::from_ec_pem(pem) {
            Ok(key) => Ok(Self {
                key,
                algorithm: Algorithm::ES256,
            }),
            Err(_) => Err("not a PEM RSA or EC public key".to_owned()),
        }
    }

    /// The algorithm tokens must be signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

/// The server's authorization policy, built once from the configuration.
#[derive(Debug)]
pub struct Auth {
    jwt: Option<(JwtKey, Validation)>,
    leeway: u64,
    anonymous: Patterns,
    publish_token: Option<String>,
    hook: Option<Hook>,
}

impl Auth {
    /// The policy `config` describes; `metrics` counts the hook's answers.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        let key = match (&config.jwt_secret, &config.jwt_public_key) {
            (Some(secret), _) => Some(JwtKey::secret(secret.expose().as_bytes())),
            (None, Some(key)) => Some(key.key.clone()),
            (None, None) => None,
        };
        let jwt = key.map(|key| {
            let mut validation = Validation::new(key.algorithm);
            // exp and nbf are checked in `verify`, which also refuses them
            // when they are not numbers (the library would ignore those).
            validation.validate_exp = false;
            validation.validate_nbf = false;
            validation.validate_aud = false;
            validation.required_spec_claims.clear();
            (key, validation)
        });
        Self {
            jwt,
            leeway: config.jwt_leeway.as_secs(),
            anonymous: Patterns::new(config.anonymous_topics.iter().cloned()),
            publish_token: config
                .publish_token
                .as_ref()
                .map(|token| token.expose().to_owned()),
            hook: config
                .auth_url
                .as_ref()
                .map(|url| Hook::new(url.clone(), metrics)),
        }
    }

    /// Whether tokens are verified (`--jwt-secret` or `--jwt-public-key`).
    pub fn uses_jwt(&self) -> bool {
        self.jwt.is_some()
    }

    /// Decides a subscribe to `topics` by token and `--anonymous-topics`.
    /// Returns the Unix second at which the stream must end, if the token
    /// expires. `--auth-url` is asked separately ([`Auth::ask_hook`]) when
    /// [`SubscribeGrant::ask_hook`] says so.
    ///
    /// # Errors
    /// 401 for a missing or invalid token, 403 for a topic it does not cover.
    pub fn subscribe(
        &self,
        token: Option<&str>,
        topics: &[Arc<str>],
    ) -> Result<SubscribeGrant, AuthError> {
        if !self.anonymous.is_empty() && topics.iter().all(|t| self.anonymous.covers(t)) {
            return Ok(SubscribeGrant {
                ends_at: None,
                ask_hook: false,
            });
        }
        let ask_hook = self.hook.is_some();
        let Some((key, validation)) = &self.jwt else {
            return Ok(SubscribeGrant {
                ends_at: None,
                ask_hook,
            });
        };
        let token = token.ok_or(AuthError::Unauthenticated(
            "a token is required: send Authorization: Bearer TOKEN, ?access_token=TOKEN or the sse_token cookie",
        ))?;
        let grant = self.verify(token, key, validation)?;
        let allowed = Patterns(grant.claim.subscribe);
        if let Some(topic) = topics
            .iter()
            .find(|t| !allowed.covers(t) && !self.anonymous.covers(t))
        {
            return Err(AuthError::Forbidden {
                action: Action::Subscribe,
                topic: topic.to_string(),
            });
        }
        Ok(SubscribeGrant {
            ends_at: grant.ends_at,
            ask_hook,
        })
    }

    /// Decides whether the request may publish at all, before its body is
    /// read: `--publish-token`'s bearer token allows every topic, a valid
    /// JWT its `publish` patterns.
    ///
    /// # Errors
    /// 401 when a token is needed and missing, wrong or invalid.
    pub fn publisher(&self, token: Option<&str>) -> Result<Publisher, AuthError> {
        let hook = self.hook.is_some();
        if let (Some(expected), Some(given)) = (&self.publish_token, token) {
            if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
                return Ok(Publisher {
                    allowed: None,
                    hook,
                });
            }
        }
        match &self.jwt {
            Some((key, validation)) => {
                let token = token.ok_or(AuthError::Unauthenticated(
                    "a token is required: send Authorization: Bearer TOKEN",
                ))?;
                let grant = self.verify(token, key, validation)?;
                Ok(Publisher {
                    allowed: Some(Patterns(grant.claim.publish)),
                    hook,
                })
            }
            None if self.publish_token.is_some() => Err(AuthError::Unauthenticated(
                "missing or wrong publish token (send Authorization: Bearer TOKEN)",
            )),
            None => Ok(Publisher {
                allowed: None,
                hook,
            }),
        }
    }

    /// Checks a token's signature, algorithm and times, and reads its claims.
    fn verify(
        &self,
        token: &str,
        key: &JwtKey,
        validation: &Validation,
    ) -> Result<Grant, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Unauthenticated("the token is too long"));
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, validation)
            .map_err(|err| {
                use jsonwebtoken::errors::ErrorKind;
                AuthError::Unauthenticated(match err.kind() {
                    ErrorKind::InvalidSignature => "the token's signature is not valid",
                    ErrorKind::InvalidAlgorithm => {
                        "the token is signed with another algorithm than the server's key"
                    }
                    ErrorKind::Json(_) => "the token's claims are malformed",
                    _ => "the token is malformed",
                })
            })?
            .claims;
        let now = unix_now() as f64;
        let leeway = self.leeway as f64;
        if let Some(exp) = claims.exp {
            if exp + leeway <= now {
                return Err(AuthError::Unauthenticated("the token has expired"));
            }
        }
        if let Some(nbf) = claims.nbf {
            if nbf - leeway > now {
                return Err(AuthError::Unauthenticated("the token is not valid yet"));
            }
        }
        Ok(Grant {
            ends_at: claims
                .exp
                .map(|exp| (exp + leeway).ceil().clamp(0.0, u64::MAX as f64) as u64),
            claim: claims.sse,
        })
    }

    /// Asks `--auth-url` (when set) whether the request may do `action` on
    /// `topics`, forwarding its `Cookie` and `Authorization` headers.
    ///
    /// # Errors
    /// The hook's 401 or 403, or 503 when it fails or does not answer in
    /// [`HOOK_TIMEOUT`].
    pub async fn ask_hook(
        &self,
        action: Action,
        topics: &[&str],
        headers: &(impl HeaderLookup + ?Sized),
    ) -> Result<(), AuthError> {
        match &self.hook {
            Some(hook) => hook.ask(action, topics, headers).await,
            None => Ok(()),
        }
    }
}

/// What [`Auth::subscribe`] allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeGrant {
    /// The Unix second the stream must end at (the token's `exp` plus the
    /// leeway).
    pub ends_at: Option<u64>,
    /// Whether `--auth-url` must allow it too.
    pub ask_hook: bool,
}

/// What [`Auth::publisher`] allowed: topics are checked once the body is read.
#[derive(Debug)]
pub struct Publisher {
    /// `None`: every topic.
    allowed: Option<Patterns>,
    hook: bool,
}

impl Publisher {
    /// Checks that every topic is allowed.
    ///
    /// # Errors
    /// 403 naming the first topic the token does not cover.
    pub fn check<'a>(&self, topics: impl IntoIterator<Item = &'a str>) -> Result<(), AuthError> {
        let Some(allowed) = &self.allowed else {
            return Ok(());
        };
        match topics.into_iter().find(|topic| !allowed.covers(topic)) {
            Some(topic) => Err(AuthError::Forbidden {
                action: Action::Publish,
                topic: topic.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// Whether `--auth-url` must allow the publish too.
    pub fn ask_hook(&self) -> bool {
        self.hook
    }
}

/// The token a request carries, from the first of: `Authorization: Bearer`,
/// `?access_token=` (already decoded by the caller), the `sse_token` cookie.
pub fn request_token<'a>(
    headers: &'a (impl HeaderLookup + ?Sized),
    query_token: Option<&'a str>,
) -> Option<&'a str> {
    let bearer = headers
        .header("authorization")
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        });
    bearer.or(query_token).or_else(|| {
        let mut found = None;
        headers.each_header("cookie", &mut |value| {
            if found.is_some() {
                return;
            }
            found = std::str::from_utf8(value)
                .ok()
                .into_iter()
                .flat_map(|value| value.split(';'))
                .find_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    (name.trim() == TOKEN_COOKIE).then(|| value.trim().trim_matches('"'))
                });
        });
        found
    })
}

/// `--auth-url`: the application's own yes or no.
struct Hook {
    url: reqwest::Url,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry credentials of its own.
        f.write_str("Hook")
    }
}

impl Hook {
    fn new(url: reqwest::Url, metrics: Arc<Metrics>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(HOOK_TIMEOUT)
            // A redirect is "anything else": the application answers here.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            // Building fails only when the TLS backend cannot start; the
            // default client then still works, and `ask` times it out.
            .unwrap_or_default();
        Self {
            url,
            client,
            metrics,
        }
    }

    async fn ask(
        &self,
        action: Action,
        topics: &[&str],
        headers: &(impl HeaderLookup + ?Sized),
    ) -> Result<(), AuthError> {
        let topics = topics
            .iter()
            .map(|t| percent_encoding::utf8_percent_encode(t, TOPIC_ENCODE).to_string())
            .collect::<Vec<_>>()
            .join(",");
        let mut request = self
            .client
            .get(self.url.clone())
            .header("x-sse-action", action.as_str())
            .header("x-sse-topics", topics);
        for name in [header::COOKIE, header::AUTHORIZATION] {
            let mut values = Vec::new();
            headers.each_header(name.as_str(), &mut |value| {
                if let Ok(value) = HeaderValue::from_bytes(value) {
                    values.push(value);
                }
            });
            for value in values {
                request = request.header(&name, value);
            }
        }
        // The client's own timeout too, in case it could not be built with one.
        let answer = tokio::time::timeout(HOOK_TIMEOUT, request.send()).await;
        let result = match answer {
            Err(_elapsed) => {
                tracing::warn!("the authorization service did not answer in time");
                Err(AuthError::HookUnavailable)
            }
            Ok(Ok(response)) if response.status().is_success() => Ok(()),
            Ok(Ok(response)) if response.status() == 401 => Err(AuthError::HookUnauthenticated),
            Ok(Ok(response)) if response.status() == 403 => Err(AuthError::HookForbidden),
            Ok(Ok(response)) => {
                tracing::warn!(status = %response.status(), "the authorization service answered an unexpected status");
                Err(AuthError::HookUnavailable)
            }
            Ok(Err(err)) => {
                // Without the URL, which may hold credentials.
                tracing::warn!(cause = %err.without_url(), "the authorization service did not answer");
                Err(AuthError::HookUnavailable)
            }
        };
        match &result {
            Ok(()) => self.metrics.auth_hook_allowed.inc(),
            Err(AuthError::HookUnavailable) => self.metrics.auth_hook_errors.inc(),
            Err(_) => self.metrics.auth_hook_denied.inc(),
        };
        result
    }
}

/// Which browser origins may use the server (`--cors-origin`).
#[derive(Debug, Clone, Default)]
pub struct Origins {
    any: bool,
    listed: Vec<String>,
}

impl Origins {
    /// From `--cors-origin` values: origins, or `*` for any.
    pub fn new(origins: &[String]) -> Self {
        Self {
            any: origins.iter().any(|o| o == "*"),
            listed: origins
                .iter()
                .filter(|o| *o != "*")
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether CORS is on at all.
    pub fn is_empty(&self) -> bool {
        !self.any && self.listed.is_empty()
    }

    /// Whether `origin` was named (and so may send credentials).
    pub fn lists(&self, origin: &HeaderValue) -> bool {
        let origin = String::from_utf8_lossy(origin.as_bytes()).to_ascii_lowercase();
        self.listed.contains(&origin)
    }

    /// Whether `origin` may use the server from a browser.
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        (self.any && origin.as_bytes() != b"null") || self.lists(origin)
    }

    /// The CORS layer: the origin is echoed back for allowed origins,
    /// credentials only for listed ones (never for `*`).
    pub fn layer(&self) -> tower_http::cors::CorsLayer {
        use axum::http::Method;
        use tower_http::cors::{AllowCredentials, AllowOrigin, CorsLayer};
        let for_origin = self.clone();
        let for_credentials = self.clone();
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin, _| {
                for_origin.allows(origin)
            }))
            .allow_credentials(AllowCredentials::predicate(move |origin, _| {
                for_credentials.lists(origin)
            }))
            .allow_methods([Method::GET, Method::POST, Method::PUT])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static("last-event-id"),
                header::HeaderName::from_static("idempotency-key"),
            ])
            .max_age(Duration::from_secs(600))
    }
}

/// Whether `origin` is the server's own: the same host and port as the
/// `Host` the request was sent to.
pub fn is_same_origin(origin: &HeaderValue, host: Option<&HeaderValue>) -> bool {
    let (Ok(origin), Some(Ok(host))) = (origin.to_str(), host.map(HeaderValue::to_str)) else {
        return false;
    };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let strip = |a: &str| -> String {
        let a = a.to_ascii_lowercase();
        a.strip_suffix(default_port).map(str::to_owned).unwrap_or(a)
    };
    strip(authority) == strip(host)
}

/// Which `Host` names the server answers to (`--allowed-hosts`): a
/// browser tricked by DNS rebinding sends the attacker's name.
#[derive(Debug, Clone)]
pub enum Hosts {
    /// Every name.
    Any,
    /// These names (lower case, no port).
    Listed(Vec<String>),
}

impl Hosts {
    /// `--allowed-hosts` when given; otherwise what the address implies: a
    /// loopback address answers to loopback names only, any other address
    /// to every name.
    pub fn new(allowed: &[String], addr: std::net::SocketAddr) -> Self {
        if allowed.iter().any(|h| h == "*") {
            return Self::Any;
        }
        if !allowed.is_empty() {
            return Self::Listed(allowed.iter().map(|h| host_name(h)).collect());
        }
        if addr.ip().is_loopback() {
            let mut names = vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "[::1]".to_owned(),
            ];
            let own = host_name(&addr.ip().to_string());
            if !names.contains(&own) && addr.is_ipv4() {
                names.push(own);
            }
            Self::Listed(names)
        } else {
            Self::Any
        }
    }

    /// Whether a request with this `Host` is served. A request without one
    /// (HTTP/1.0) is: browsers always send it.
    pub fn allows(&self, host: Option<&HeaderValue>) -> bool {
        self.allows_name(host.map(HeaderValue::as_bytes))
    }

    /// [`Hosts::allows`] for a raw header value.
    pub fn allows_name(&self, host: Option<&[u8]>) -> bool {
        match (self, host) {
            (Self::Any, _) | (_, None) => true,
            (Self::Listed(names), Some(host)) => {
                let host = String::from_utf8_lossy(host);
                names.contains(&host_name(&host))
            }
        }
    }
}

/// `Example.com:3000` → `example.com`, `[::1]:80` → `[::1]`, `::1` → `[::1]`.
fn host_name(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if host.starts_with('[') {
        return host
            .split(']')
            .next()
            .map_or(host.clone(), |h| format!("{h}]"));
    }
    if host.matches(':').count() > 1 {
        return format!("[{host}]");
    }
    host.split(':').next().unwrap_or("").to_owned()
}

/// Ends streams whose token has expired, every [`EXPIRY_SWEEP`]: one timer
/// for the whole server.
pub async fn sweep_expired(hub: Arc<Hub>) {
    let mut timer = tokio::time::interval(EXPIRY_SWEEP);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        hub.expire(unix_now());
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Compares without stopping at the first difference, so response time
/// does not reveal how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A query value, percent-decoded, if present.
pub fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "unit-test-secret";
    /// `{"alg":"none"}` with a claim allowing everything, unsigned.
    const ALG_NONE: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzc2UiOnsic3Vic2NyaWJlIjpbIioiXSwicHVibGlzaCI6WyIqIl19fQ.";

    fn auth(args: &[&str]) -> Auth {
        let mut argv = vec!["sse-server"];
        argv.extend_from_slice(args);
        Auth::new(
            // Without the environment: a developer's SSE_PUBLISH_TOKEN
            // must not change what these tests see.
            &Config::try_from_args(argv).unwrap(),
            Arc::new(Metrics::new()),
        )
    }

    fn hs256(claims: serde_json::Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn topics(names: &[&str]) -> Vec<Arc<str>> {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    fn unauthenticated<T: std::fmt::Debug>(result: Result<T, AuthError>) -> bool {
        matches!(result, Err(AuthError::Unauthenticated(_)))
    }

    #[test]
    fn patterns_match_names_prefixes_and_everything() {
        let p = Patterns::new(["news", "orders/*"]);
        assert!(p.covers("news"));
        assert!(!p.covers("news2"));
        assert!(p.covers("orders/1"));
        assert!(p.covers("orders/"));
        assert!(!p.covers("orders"));
        assert!(Patterns::new(["*"]).covers("anything"));
        assert!(!Patterns::default().covers("news"));
    }

    #[test]
    fn the_token_comes_from_the_header_then_the_query_then_the_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; sse_token=from-cookie; b=2".parse().unwrap(),
        );
        assert_eq!(request_token(&headers, None), Some("from-cookie"));
        assert_eq!(
            request_token(&headers, Some("from-query")),
            Some("from-query")
        );
        headers.insert(header::AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
        assert_eq!(
            request_token(&headers, None),
            Some("from-cookie"),
            "not a bearer token"
        );
        headers.insert(header::AUTHORIZATION, "bearer from-header".parse().unwrap());
        assert_eq!(
            request_token(&headers, Some("from-query")),
            Some("from-header")
        );
        assert_eq!(request_token(&HeaderMap::new(), None), None);
    }

    #[test]
    fn subscribing_needs_a_token_covering_every_topic() {
        let auth = auth(&[
            "--jwt-secret",
            SECRET,
            "--anonymous-topics",
            "public,lobby/*",
        ]);
        let token = hs256(json!({"sse": {"subscribe": ["news", "orders/*"]}}));
        let grant = auth
            .subscribe(Some(&token), &topics(&["news", "orders/7"]))
            .unwrap();
        assert_eq!(grant.ends_at, None, "no exp, no end");
        assert_eq!(
            auth.subscribe(Some(&token), &topics(&["news", "secret"])),
            Err(AuthError::Forbidden {
                action: Action::Subscribe,
                topic: "secret".to_owned()
            })
        );
        assert!(
            auth.subscribe(Some(&token), &topics(&["news", "public"]))
                .is_ok(),
            "anonymous topics mix with the token's"
        );
        assert!(unauthenticated(auth.subscribe(None, &topics(&["news"]))));
        assert!(auth
            .subscribe(None, &topics(&["public", "lobby/1"]))
            .is_ok());
        assert!(unauthenticated(
            auth.subscribe(None, &topics(&["public", "news"]))
        ));
    }

    #[test]
    fn expiry_and_not_before_are_honoured_with_the_leeway() {
        let auth = auth(&["--jwt-secret", SECRET, "--jwt-leeway", "5s"]);
        let now = unix_now();
        let all = json!({"subscribe": ["*"]});
        let at = |exp: u64| hs256(json!({"sse": all, "exp": exp}));
        let t = topics(&["a"]);
        assert_eq!(
            auth.subscribe(Some(&at(now + 60)), &t).unwrap().ends_at,
            Some(now + 65)
        );
        assert!(
            auth.subscribe(Some(&at(now - 2)), &t).is_ok(),
            "within the leeway"
        );
        assert!(unauthenticated(auth.subscribe(Some(&at(now - 10)), &t)));
        let nbf = |nbf: u64| hs256(json!({"sse": all, "nbf": nbf}));
        assert!(
            auth.subscribe(Some(&nbf(now + 2)), &t).is_ok(),
            "within the leeway"
        );
        assert!(unauthenticated(auth.subscribe(Some(&nbf(now + 60)), &t)));
        let fractional = hs256(json!({"sse": all, "exp": now as f64 + 60.5}));
        assert!(auth.subscribe(Some(&fractional), &t).is_ok());
    }

    #[test]
    fn bad_tokens_are_unauthenticated() {
        let auth = auth(&["--jwt-secret", SECRET]);
        let t = topics(&["a"]);
        let good = hs256(json!({"sse": {"subscribe": ["*"]}}));
        let other_secret = encode(
            &Header::default(),
            &json!({"sse": {"subscribe": ["*"]}}),
            &EncodingKey::from_secret(b"another secret"),
        )
        .unwrap();
        let long = format!("{good}{}", "A".repeat(100 * 1024));
        for bad in [
            "",
            "garbage",
            "a.b.c",
            &good[..good.len() - 5],
            &other_secret,
            ALG_NONE,
            "eyJhbGciOiJYWTUxMiIsInR5cCI6IkpXVCJ9.e30.AAAA",
            &long,
            &hs256(json!({"sse": {"subscribe": "news"}})),
            &hs256(json!({"sse": ["news"]})),
            &hs256(json!({"sse": {"subscribe": ["*"]}, "exp": "tomorrow"})),
            &hs256(json!({"sse": {"subscribe": ["*"]}, "nbf": true})),
        ] {
            assert!(unauthenticated(auth.subscribe(Some(bad), &t)), "{bad:.60}");
        }
    }

    #[test]
    fn the_algorithm_is_pinned_to_the_key() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let public = std::fs::read(format!("{dir}/jwt-rsa-public.pem")).unwrap();
        let private = std::fs::read(format!("{dir}/jwt-rsa-private.pem")).unwrap();
        let key = JwtKey::public_pem(&public).unwrap();
        assert_eq!(key.algorithm(), Algorithm::RS256);
        let path = format!("{dir}/jwt-rsa-public.pem");
        let auth = auth(&["--jwt-public-key", &path]);
        let claims = json!({"sse": {"subscribe": ["*"]}});
        let rs256 = encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(&private).unwrap(),
        )
        .unwrap();
        let t = topics(&["a"]);
        assert!(auth.subscribe(Some(&rs256), &t).is_ok());
        // The classic confusion: HS256 with the public key as the secret.
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&public),
        )
        .unwrap();
        assert!(unauthenticated(auth.subscribe(Some(&confused), &t)));
        assert!(unauthenticated(auth.subscribe(Some(ALG_NONE), &t)));
        let ec = std::fs::read(format!("{dir}/jwt-ec-public.pem")).unwrap();
        assert_eq!(
            JwtKey::public_pem(&ec).unwrap().algorithm(),
            Algorithm::ES256
        );
        assert!(JwtKey::public_pem(b"not a key").is_err());
    }

    #[test]
    fn publishing_takes_the_publish_token_or_a_jwt() {
        let auth = auth(&["--jwt-secret", SECRET, "--publish-token", "static"]);
        assert!(auth
            .publisher(Some("static"))
            .unwrap()
            .check(["any"])
            .is_ok());
        let token = hs256(json!({"sse": {"subscribe": ["*"], "publish": ["orders/*"]}}));
        let publisher = auth.publisher(Some(&token)).unwrap();
        assert!(publisher.check(["orders/1"]).is_ok());
        assert_eq!(
            publisher.check(["news"]),
            Err(AuthError::Forbidden {
                action: Action::Publish,
                topic: "news".to_owned()
            })
        );
        assert!(unauthenticated(auth.publisher(None)));
        assert!(unauthenticated(auth.publisher(Some("wrong"))));
        let open = self::auth(&[]);
        assert!(open.publisher(None).unwrap().check(["x"]).is_ok());
        let static_only = self::auth(&["--publish-token", "static"]);
        assert!(unauthenticated(static_only.publisher(Some("wrong"))));
        assert!(unauthenticated(static_only.publisher(None)));
    }

    #[test]
    fn hosts_default_to_what_the_address_implies() {
        let value = |s: &str| HeaderValue::from_str(s).unwrap();
        let loopback = Hosts::new(&[], "127.0.0.1:3000".parse().unwrap());
        for ok in [
            "localhost:3000",
            "127.0.0.1:3000",
            "LOCALHOST",
            "[::1]:3000",
        ] {
            assert!(loopback.allows(Some(&value(ok))), "{ok}");
        }
        assert!(!loopback.allows(Some(&value("evil.example:3000"))));
        assert!(loopback.allows(None));
        let any = Hosts::new(&[], "0.0.0.0:3000".parse().unwrap());
        assert!(any.allows(Some(&value("evil.example"))));
        let listed = Hosts::new(
            &["sse.example.com".to_owned()],
            "0.0.0.0:3000".parse().unwrap(),
        );
        assert!(listed.allows(Some(&value("sse.example.com:443"))));
        assert!(!listed.allows(Some(&value("localhost"))));
    }

    #[test]
    fn same_origin_compares_host_and_port() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(is_same_origin(
            &v("http://127.0.0.1:3000"),
            Some(&v("127.0.0.1:3000"))
        ));
        assert!(is_same_origin(
            &v("https://Example.com"),
            Some(&v("example.com:443"))
        ));
        assert!(!is_same_origin(
            &v("http://127.0.0.1:3001"),
            Some(&v("127.0.0.1:3000"))
        ));
        assert!(!is_same_origin(&v("null"), Some(&v("127.0.0.1:3000"))));
        assert!(!is_same_origin(&v("http://a"), None));
    }

    #[test]
    fn origins_allow_listed_ones_and_credentials_only_for_them() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        let origins = Origins::new(&["https://app.example".to_owned()]);
        assert!(origins.allows(&v("https://app.example")));
        assert!(!origins.allows(&v("https://evil.example")));
        let any = Origins::new(&["*".to_owned(), "https://app.example".to_owned()]);
        assert!(any.allows(&v("https://evil.example")));
        assert!(!any.lists(&v("https://evil.example")));
        assert!(any.lists(&v("https://app.example")));
        assert!(!any.allows(&v("null")));
    }
}
