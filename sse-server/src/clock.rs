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

#[cfg(test)]
mod tests {
    //! On tokio's paused clock: time moves only when every task waits, and
    //! then straight to the next timer, so these tests see exact instants
    //! and take no wall-clock time.

    use std::time::Duration;

    use axum::{body::Body, http::Request};
    use futures::StreamExt;
    use tokio::time::Instant;
    use tower::ServiceExt;

    use super::*;
    use crate::{config::Config, metrics::Metrics, routes};

    /// A stream from the real routes, with `background` running beside it;
    /// returns each frame with the paused clock's time since the start.
    async fn frames(
        background: impl FnOnce(Arc<Broker>) -> tokio::task::JoinHandle<()>,
        count: usize,
    ) -> Vec<(Duration, String)> {
        let config = Config::default();
        let broker = Arc::new(
            Broker::start(&config, Arc::new(Metrics::new()))
                .await
                .expect("memory broker"),
        );
        let task = background(Arc::clone(&broker));
        let start = Instant::now();
        let response = routes::app(routes::AppState::new(Arc::clone(&broker), config))
            .oneshot(Request::get("/sse").body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let mut body = response.into_body().into_data_stream();
        let mut frames = Vec::new();
        while frames.len() < count {
            let frame = body.next().await.expect("open").expect("frame");
            frames.push((
                start.elapsed(),
                String::from_utf8(frame.to_vec()).expect("utf-8"),
            ));
        }
        task.abort();
        frames
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_publishes_a_tick_at_every_interval_and_not_before() {
        let frames = frames(
            |broker| tokio::spawn(run(broker, Duration::from_secs(2))),
            4,
        )
        .await;
        let retry = crate::wire::encode_retry(Duration::from_secs(3));
        assert_eq!(frames[0].0, Duration::ZERO);
        assert_eq!(frames[0].1.as_bytes(), &retry[..]);
        for (n, (at, frame)) in frames[1..].iter().enumerate() {
            assert_eq!(*at, Duration::from_secs(2 * (n as u64 + 1)), "{frame}");
            assert!(frame.contains("event: tick\n"), "{frame}");
            assert!(frame.contains("data: the time is "), "{frame}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_gets_a_heartbeat_every_interval() {
        let frames = frames(
            |broker| tokio::spawn(heartbeat(broker, Duration::from_secs(15))),
            3,
        )
        .await;
        let beat = String::from_utf8(crate::wire::HEARTBEAT.to_vec()).expect("utf-8");
        assert_eq!(
            frames[1..],
            [
                (Duration::from_secs(15), beat.clone()),
                (Duration::from_secs(30), beat),
            ]
        );
    }
}
