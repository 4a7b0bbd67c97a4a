//! Our own accept loop: hyper's HTTP/1 server with small buffers, HTTP/2
//! and HTTP/1.1 over TLS (chosen by ALPN), a large listen backlog, and a
//! handle per connection to drop it.
//!
//! `axum::serve` would do, but costs about 8 KB more per idle SSE
//! connection (measured at 10,000 connections), and offers no way to close
//! one connection whose client stopped reading.

use std::{
    future::Future,
    net::SocketAddr,
    time::{Duration, Instant},
};

use axum::{extract::Request, Router};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::GracefulConnection,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpSocket, TcpStream},
};
use tokio_rustls::TlsAcceptor;
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
/// How long a client gets to finish its TLS handshake: a connection that
/// sends nothing must not hold a file descriptor for good.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent streams one HTTP/2 connection may open. A browser page opens
/// a handful; 256 lets a tool multiplex many subscriptions on one
/// connection while bounding what one connection can ask of us.
const MAX_H2_STREAMS: u32 = 256;
/// At most one `accept failed` warning this often: when file descriptors
/// run out, accept fails on every try, and the log must stay readable.
const ACCEPT_WARN_INTERVAL: Duration = Duration::from_secs(10);
/// Pause after a failed accept: the cause (no file descriptors, usually)
/// lasts until a connection closes, so retrying at once only spins.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

/// Given to each request; cancelling it drops the connection at once.
#[derive(Debug, Clone)]
pub struct ConnectionHandle(pub CancellationToken);

/// How connections are served, besides the routes.
#[derive(Clone)]
pub struct ServeOptions {
    /// TLS (`--tls-cert`, `--tls-key`), or plain HTTP when `None`.
    pub tls: Option<TlsAcceptor>,
    /// How long a connection may wait for a request head, on a new
    /// connection and between requests on a kept-alive one, before it is
    /// closed (nginx's `keepalive_timeout` and `client_header_timeout`).
    pub keepalive_timeout: Duration,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("tls", &self.tls.is_some())
            .field("keepalive_timeout", &self.keepalive_timeout)
            .finish()
    }
}

impl ServeOptions {
    /// The options `config` asks for, with its TLS acceptor (see
    /// [`crate::tls::acceptor`]).
    pub fn new(config: &crate::Config, tls: Option<TlsAcceptor>) -> Self {
        Self {
            tls,
            keepalive_timeout: config.keepalive_timeout,
        }
    }
}

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
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let stopping = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    accept_errors.failed(&err);
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tracker.spawn(connection(
            stream,
            peer,
            router.clone(),
            options.clone(),
            stopping.clone(),
        ));
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

/// Rate-limits the `accept failed` warning to one per
/// [`ACCEPT_WARN_INTERVAL`], counting the failures in between.
#[derive(Default)]
struct AcceptErrors {
    last_warning: Option<Instant>,
    since_warning: u64,
}

impl AcceptErrors {
    fn failed(&mut self, err: &std::io::Error) {
        self.since_warning += 1;
        if self
            .last_warning
            .is_some_and(|at| at.elapsed() < ACCEPT_WARN_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            cause = %err,
            failures = self.since_warning,
            "accept failed (out of file descriptors? see --max-clients and `ulimit -n`); \
             new connections wait in the listen queue"
        );
        self.last_warning = Some(Instant::now());
        self.since_warning = 0;
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    options: ServeOptions,
    stopping: CancellationToken,
) {
    let Some(acceptor) = options.tls.clone() else {
        crate::lean::serve_connection(stream, peer, router, options, stopping).await;
        return;
    };
    let handshake = Box::pin(tokio::time::timeout(
        TLS_HANDSHAKE_TIMEOUT,
        acceptor.accept(stream),
    ));
    let tls = tokio::select! {
        accepted = handshake => {
            match accepted {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, cause = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        }
        () = stopping.cancelled() => return,
    };
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        Box::pin(serve_http2(tls, peer, router, stopping)).await;
    } else {
        crate::lean::serve_connection(tls, peer, router, options, stopping).await;
    }
}

/// One HTTP/1 connection served by hyper (every request the lean path
/// does not take, from the first on); its handle closes it (a subscriber
/// that fell behind has only this one stream on it).
pub(crate) async fn serve_hyper_http1<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    options: &ServeOptions,
    handle: CancellationToken,
    stopping: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
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
        .timer(TokioTimer::new())
        .header_read_timeout(options.keepalive_timeout)
        .serve_connection(TokioIo::new(io), service);
    drive(conn, peer, handle, stopping).await;
}

/// One HTTP/2 connection. Its streams get no connection handle: closing
/// the connection would end every other stream on it. A subscriber that
/// fell behind ends its own stream instead.
async fn serve_http2<I>(io: I, peer: SocketAddr, router: Router, stopping: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        router.clone().oneshot(request.map(axum::body::Body::new))
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_H2_STREAMS)
        .serve_connection(TokioIo::new(io), service);
    drive(conn, peer, CancellationToken::new(), stopping).await;
}

/// Runs a connection until it ends, its handle is cancelled (dropped at
/// once) or the server stops (graceful: in-flight responses finish).
async fn drive<C>(conn: C, peer: SocketAddr, handle: CancellationToken, stopping: CancellationToken)
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
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
