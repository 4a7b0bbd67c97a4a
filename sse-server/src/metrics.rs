//! Counters the server keeps, exposed at `/metrics` (Prometheus text) and
//! `/stats` (JSON for the web page).
//!
//! Each server owns its registry, so several servers in one process (tests)
//! never mix their numbers.

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};
use serde::Serialize;

/// The server's counters. Cloning a metric shares it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Subscribers connected now.
    pub clients: Gauge,
    /// Events accepted by the broker.
    pub published: Counter,
    /// Events written to subscribers (one per subscriber per event).
    pub delivered: Counter,
    /// Subscribers disconnected because they could not keep up.
    pub dropped_slow: Counter,
    /// Subscribers refused because `--max-clients` was reached.
    pub rejected: Counter,
    /// Bytes of event stream handed to connections.
    pub bytes_sent: Counter,
    /// Whether the broker is reachable (1) or not (0).
    pub broker_up: Gauge,
    /// Encoded bytes of the events held for replay.
    pub history_bytes: Gauge,
    /// Events held for replay.
    pub history_events: Gauge,
    /// Requests `--auth-url` allowed.
    pub auth_hook_allowed: Counter,
    /// Requests `--auth-url` refused (401 or 403).
    pub auth_hook_denied: Counter,
    /// `--auth-url` calls that failed, answered another status or timed out.
    pub auth_hook_errors: Counter,
    started: std::time::Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sse");
        let r = &mut registry;
        // Registered in the order `/metrics` lists them.
        let auth_hook_allowed = counter(
            r,
            "auth_hook_allowed",
            "Requests the --auth-url service allowed",
        );
        let auth_hook_denied = counter(
            r,
            "auth_hook_denied",
            "Requests the --auth-url service refused with 401 or 403",
        );
        let auth_hook_errors = counter(
            r,
            "auth_hook_errors",
            "--auth-url calls that failed, timed out or answered another status",
        );
        let clients = gauge(r, "clients", "Subscribers connected now");
        let published = counter(r, "events_published", "Events accepted by the broker");
        let delivered = counter(
            r,
            "events_delivered",
            "Events written to subscribers, one per subscriber per event",
        );
        let dropped_slow = counter(
            r,
            "clients_dropped_slow",
            "Subscribers disconnected because their queue was full",
        );
        let rejected = counter(
            r,
            "clients_rejected",
            "Subscribers refused because --max-clients was reached",
        );
        let bytes_sent = counter(r, "bytes_sent", "Bytes of event stream sent to subscribers");
        let broker_up = gauge(r, "broker_up", "1 when the broker is reachable");
        broker_up.set(1);
        let history_bytes = gauge(
            r,
            "history_bytes",
            "Encoded bytes of the events held for replay (at most --history-bytes)",
        );
        let history_events = gauge(
            r,
            "history_events",
            "Events held for replay (at most --history)",
        );
        Self {
            registry,
            clients,
            published,
            delivered,
            dropped_slow,
            rejected,
            bytes_sent,
            broker_up,
            history_bytes,
            history_events,
            auth_hook_allowed,
            auth_hook_denied,
            auth_hook_errors,
            started: std::time::Instant::now(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// A snapshot for the web page.
    pub fn stats(&self) -> Stats {
        let published = self.published.get();
        Stats {
            clients: self.clients.get().max(0) as u64,
            published,
            delivered: self.delivered.get(),
            dropped_slow: self.dropped_slow.get(),
            bytes_sent: self.bytes_sent.get(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            broker_up: self.broker_up.get() == 1,
        }
    }
}

/// What `/stats` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Subscribers connected now.
    pub clients: u64,
    /// Events accepted since start.
    pub published: u64,
    /// Events delivered since start.
    pub delivered: u64,
    /// Subscribers dropped as too slow since start.
    pub dropped_slow: u64,
    /// Bytes sent since start.
    pub bytes_sent: u64,
    /// Milliseconds since start; rates are differences over this.
    pub uptime_ms: u64,
    /// Whether the broker is reachable.
    pub broker_up: bool,
}

/// A counter registered under `name`.
fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let metric = Counter::default();
    registry.register(name, help, metric.clone());
    metric
}

/// A gauge registered under `name`.
fn gauge(registry: &mut Registry, name: &str, help: &str) -> Gauge {
    let metric = Gauge::default();
    registry.register(name, help, metric.clone());
    metric
}
