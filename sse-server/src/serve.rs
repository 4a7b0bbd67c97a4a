//! Our own accept loop: hyper's HTTP/1 server with small buffers, a large
//! listen backlog, and a handle per connection to drop it.
//!
//! `axum::serve` would do, but costs about 8 KB more per idle SSE
//! connection (measured at 10,000 connections), and offers no way to close
//! one connection whose client stopped reading.

use std::{future::Future, net::SocketAddr, time::Duration};

use axum::{extract::Request, Router};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

/// Pending connections the kernel queues for us. 128 (the usual default)
/// overflows when thousands of clients connect at once.
pub const LISTEN_BACKLOG: u32 = 4096;
/// hyper's smallest allowed read buffer: requests here are small, and the
/// buffers dominate the memory of an idle connection.
const MAX_BUF_SIZE: usize = 8192;
/// How long connections get to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Given to each request; cancelling it drops the connection at once.
#[derive(Debug, Clone)]
pub struct ConnectionHandle(pub CancellationToken);

/// Binds `addr` with a listen backlog of [`LISTEN_BACKLOG`].
///
/// # Errors
/// When the address cannot be bound.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open
/// connections finish for up to [`SHUTDOWN_GRACE`].
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) {
    let stopping = CancellationToken::new();
    let tracker = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors, usually: wait instead of spinning.
                    tracing::warn!(cause = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tracker.spawn(connection(stream, peer, router.clone(), stopping.clone()));
    }
    drop(listener);
    stopping.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "connections still open after the grace period; closing them"
        );
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    stopping: CancellationToken,
) {
    let handle = CancellationToken::new();
    let service = {
        let handle = handle.clone();
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectionHandle(handle.clone()));
            router.clone().oneshot(request.map(axum::body::Body::new))
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(MAX_BUF_SIZE)
        .writev(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = handle.cancelled() => {
            tracing::debug!(%peer, "closing the connection of a subscriber that fell behind");
            return;
        }
        () = stopping.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                result = conn.as_mut() => result,
                () = handle.cancelled() => return,
            }
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, cause = %err, "connection ended with an error");
    }
}
