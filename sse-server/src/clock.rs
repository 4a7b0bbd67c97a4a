//! The built-in clock (a `tick` event on topic `default` every `--tick`)
//! and the shared heartbeat timer.

use std::{future::Future, sync::Arc, time::Duration};

use crate::broker::{Broker, BrokerError};

/// Event type of the clock's events.
pub const TICK_EVENT: &str = "tick";

/// Publishes the time every `interval` until the task is dropped.
pub async fn run(broker: Arc<Broker>, interval: Duration) {
    every(interval, || async {
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        match broker
            .publish("default", TICK_EVENT, &format!("the time is {now}"))
            .await
        {
            Ok(_) | Err(BrokerError::ShuttingDown) => {}
            Err(err) => tracing::warn!(cause = %err, "the clock could not publish"),
        }
    })
    .await;
}

/// Asks the hub to send heartbeat comments on idle streams every `interval`.
pub async fn heartbeat(broker: Arc<Broker>, interval: Duration) {
    every(interval, || async { broker.hub().heartbeat() }).await;
}

/// Runs `action` every `interval`, first after one interval; a late run
/// delays the next rather than bunching runs up.
async fn every<F: Future<Output = ()>>(interval: Duration, mut action: impl FnMut() -> F) {
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer.tick().await;
    loop {
        timer.tick().await;
        action().await;
    }
}
