//! The lean HTTP/1.1 path: subscriptions answered on the socket itself.
//!
//! hyper keeps two 8 KiB buffers for the whole life of a response, which
//! for an idle SSE stream is almost all of its memory. Here the accept loop
//! reads the request head into a small buffer and parses it with
//! `httparse`. A plain `GET /sse` goes through the same axum router as any
//! request (so the shared subscribe function, its rules and every layer
//! apply), and its response is written here: the head once, then each body
//! frame as one chunk, with nothing kept between writes but the response
//! body itself. Every other request, and anything this parser does not
//! fully understand, goes to hyper with the bytes already read.
//!
//! Bounds: a head must fit in [`MAX_HEAD_BYTES`] with at most
//! [`MAX_HEADERS`] headers (else hyper answers it, with its own limits),
//! and arrive within `--keepalive-timeout` (else the connection closes).

use std::{
    future::Future,
    io::IoSlice,
    net::SocketAddr,
    pin::Pin,
    task::{ready, Context, Poll},
    time::SystemTime,
};

use axum::{
    body::Body,
    http::{self, HeaderName, HeaderValue, Method, Request, Response, Version},
    Router,
};
use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::serve::{ConnectionHandle, ServeOptions};

/// Largest request head the lean path reads: hyper's limit too (its
/// buffer is 8 KiB), so a head over it gets hyper's `431`.
pub const MAX_HEAD_BYTES: usize = 8192;
/// Most headers the lean path parses; a request with more goes to hyper.
/// Browsers send about 15 with an `EventSource`.
pub const MAX_HEADERS: usize = 48;
/// First read size for a head: a typical `EventSource` request is 300-600
/// bytes, and the buffer is freed as soon as the head is parsed.
const HEAD_READ_CHUNK: usize = 1024;

/// What a request head is, as far as the lean path is concerned.
#[derive(Debug)]
pub enum Head {
    /// More bytes are needed.
    Partial,
    /// A `GET /sse` the lean path answers itself.
    Lean(Box<Request<()>>),
    /// Anything else: hyper answers it.
    Other,
}

/// Parses the start of a connection's bytes.
///
/// Only a complete HTTP/1.1 `GET` of `/sse` (with any query) without a
/// body, `Expect`, `Upgrade` or a `Connection` header other than
/// `keep-alive`, and with no bytes after the head, is [`Head::Lean`].
pub fn parse_head(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => return Head::Partial,
        _ => return Head::Other,
    };
    if len != buf.len() || len > MAX_HEAD_BYTES {
        return Head::Other;
    }
    let (Some("GET"), Some(path), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Head::Other;
    };
    let route = path.split_once('?').map_or(path, |(route, _)| route);
    if route != "/sse" {
        return Head::Other;
    }
    let mut request = Request::new(());
    *request.method_mut() = Method::GET;
    *request.version_mut() = Version::HTTP_11;
    let Ok(uri) = path.parse::<http::Uri>() else {
        return Head::Other;
    };
    *request.uri_mut() = uri;
    let map = request.headers_mut();
    for header in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_bytes(header.value),
        ) else {
            return Head::Other;
        };
        let plain = match name.as_str() {
            "content-length" => value.as_bytes() == b"0",
            "connection" => value.as_bytes().eq_ignore_ascii_case(b"keep-alive"),
            "transfer-encoding" | "expect" | "upgrade" | "te" => false,
            _ => true,
        };
        if !plain {
            return Head::Other;
        }
        map.append(name, value);
    }
    Head::Lean(Box::new(request))
}

/// How a lean exchange ended.
enum Next {
    /// Read the next request on this connection.
    KeepAlive,
    /// Close the connection.
    Close,
}

/// Serves one HTTP/1.1 connection: lean requests here, the rest by hyper.
pub(crate) async fn serve_connection<I>(
    mut io: I,
    peer: SocketAddr,
    router: Router,
    options: ServeOptions,
    stopping: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handle = CancellationToken::new();
    loop {
        let read = tokio::select! {
            read = tokio::time::timeout(options.keepalive_timeout, read_head(&mut io)) => read,
            () = stopping.cancelled() => return,
        };
        let (head, bytes) = match read {
            Ok(Ok(read)) => read,
            // Idle, too slow, closed or broken: nothing to answer.
            Ok(Err(_)) | Err(_) => return,
        };
        let Head::Lean(request) = head else {
            // hyper's connection is large; boxed, it costs lean connections
            // nothing.
            let io = Rewind::new(io, bytes.freeze());
            Box::pin(crate::serve::serve_hyper_http1(
                io, peer, router, &options, handle, stopping,
            ))
            .await;
            return;
        };
        drop(bytes);
        let response = route(*request, &router, &handle).await;
        let next = tokio::select! {
            next = write_response(&mut io, response) => next,
            () = handle.cancelled() => {
                tracing::debug!(%peer, "closing the connection of a subscriber that fell behind");
                return;
            }
        };
        match next {
            Ok(Next::KeepAlive) if !stopping.is_cancelled() => {}
            Ok(_) => return,
            Err(err) => {
                tracing::debug!(%peer, cause = %err, "connection ended with an error");
                return;
            }
        }
    }
}

/// Reads until a head is complete or known not to be lean. Returns the
/// bytes read so far with the verdict.
async fn read_head<I: AsyncRead + Unpin>(io: &mut I) -> std::io::Result<(Head, BytesMut)> {
    let mut buf = BytesMut::with_capacity(HEAD_READ_CHUNK);
    loop {
        if buf.capacity() == buf.len() {
            buf.reserve(HEAD_READ_CHUNK.min(MAX_HEAD_BYTES - buf.len()).max(1));
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        match parse_head(&buf) {
            Head::Partial => {}
            head => return Ok((head, buf)),
        }
    }
}

/// Runs `request` through the router: the same layers and the same
/// handler as hyper's requests get.
async fn route(
    mut request: Request<()>,
    router: &Router,
    handle: &CancellationToken,
) -> Response<Body> {
    request
        .extensions_mut()
        .insert(ConnectionHandle(handle.clone()));
    let request = request.map(|()| Body::empty());
    // Boxed: the router's future is only alive until the response head,
    // and must not stay in the connection's state for the stream's life.
    let Ok(response) = Box::pin(router.clone().oneshot(request)).await;
    response
}

/// Writes a response: head and body at once when its size is known, else
/// the head and then the body as chunks.
async fn write_response<I>(io: &mut I, response: Response<Body>) -> std::io::Result<Next>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let (parts, body) = response.into_parts();
    if let Some(len) = body.size_hint().exact() {
        // A small answer (an error): head and body in one write.
        let bytes = body
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        let mut out = response_head(&parts, Some(len));
        out.extend_from_slice(&bytes);
        io.write_all(&out).await?;
        io.flush().await?;
        return Ok(Next::KeepAlive);
    }
    let head = response_head(&parts, None);
    // Nothing of the request or the response head outlives this write:
    // only the body stays for the stream's life.
    drop(parts);
    io.write_all(&head).await?;
    drop(head);
    Streaming {
        io,
        body,
        chunk: None,
        finished: false,
    }
    .await
}

/// The status line and headers of `parts`, in the order and spelling
/// hyper writes them: the response's headers, then the framing, then
/// `date`.
fn response_head(parts: &http::response::Parts, len: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("<none>")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let framed = parts.headers.contains_key(http::header::CONTENT_LENGTH)
        || parts.headers.contains_key(http::header::TRANSFER_ENCODING);
    if !framed {
        match len {
            Some(len) => out.extend_from_slice(format!("content-length: {len}\r\n").as_bytes()),
            None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
    }
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// One chunk of a chunked body on its way out: size line, data, CRLF.
struct Chunk {
    size_line: [u8; 18],
    size_len: u8,
    data: Bytes,
    /// Bytes of size line + data + CRLF already written.
    written: usize,
}

impl Chunk {
    fn new(data: Bytes) -> Self {
        let mut size_line = [0u8; 18];
        let text = format!("{:X}\r\n", data.len());
        size_line[..text.len()].copy_from_slice(text.as_bytes());
        Self {
            size_line,
            size_len: text.len() as u8,
            data,
            written: 0,
        }
    }

    fn total(&self) -> usize {
        usize::from(self.size_len) + self.data.len() + 2
    }

    /// The parts not yet written.
    fn slices(&self) -> [IoSlice<'_>; 3] {
        let head = usize::from(self.size_len);
        let mut skip = self.written;
        let a = unwritten(&self.size_line[..head], &mut skip);
        let b = unwritten(&self.data, &mut skip);
        let c = unwritten(b"\r\n", &mut skip);
        [a, b, c]
    }
}

/// The part of `bytes` past the first `skip` bytes, taking them off `skip`.
fn unwritten<'a>(bytes: &'a [u8], skip: &mut usize) -> IoSlice<'a> {
    let from = (*skip).min(bytes.len());
    *skip -= from;
    IoSlice::new(&bytes[from..])
}

impl Chunk {}

/// Writes a streaming body as chunks, while watching the read side for
/// the client going away (a closed stream must free its subscription at
/// once, not at the next heartbeat).
struct Streaming<'a, I> {
    io: &'a mut I,
    body: Body,
    chunk: Option<Chunk>,
    finished: bool,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Future for Streaming<'_, I> {
    type Output = std::io::Result<Next>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            if let Poll::Ready(gone) = poll_client_gone(this.io, cx) {
                return Poll::Ready(gone.map(|()| Next::Close));
            }
            if let Some(chunk) = &mut this.chunk {
                while chunk.written < chunk.total() {
                    let slices = chunk.slices();
                    let n = ready!(Pin::new(&mut *this.io).poll_write_vectored(cx, &slices))?;
                    if n == 0 {
                        return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                    }
                    chunk.written += n;
                }
                ready!(Pin::new(&mut *this.io).poll_flush(cx))?;
                this.chunk = None;
            }
            if this.finished {
                return Poll::Ready(Ok(Next::KeepAlive));
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            this.chunk = Some(Chunk::new(data));
                        }
                    }
                }
                None => {
                    // The last chunk: `0\r\n\r\n`.
                    this.finished = true;
                    this.chunk = Some(Chunk::new(Bytes::new()));
                }
                // As hyper does: a body that fails ends the connection
                // without the last chunk, so the client sees the break.
                Some(Err(err)) => return Poll::Ready(Err(std::io::Error::other(err))),
            }
        }
    }
}

/// Ready when the client closed the connection or it broke; anything it
/// sends meanwhile is discarded (nothing is expected during a stream).
fn poll_client_gone<I: AsyncRead + Unpin>(
    io: &mut I,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<()>> {
    let mut scratch = [0u8; 64];
    loop {
        let mut buf = ReadBuf::new(&mut scratch);
        match Pin::new(&mut *io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// An IO that first yields bytes already read from it, so hyper sees the
/// connection from its start.
pub(crate) struct Rewind<I> {
    prefix: Bytes,
    inner: I,
}

impl<I> Rewind<I> {
    fn new(inner: I, prefix: Bytes) -> Self {
        Self { prefix, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lean(head: &[u8]) -> bool {
        matches!(parse_head(head), Head::Lean(_))
    }

    #[test]
    fn a_plain_subscription_is_lean() {
        assert!(lean(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(lean(
            b"GET /sse?topic=a&topic=b HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1-2\r\nConnection: keep-alive\r\n\r\n"
        ));
        let Head::Lean(request) = parse_head(
            b"GET /sse?topic=a HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
        ) else {
            panic!("lean");
        };
        assert_eq!(request.uri().query(), Some("topic=a"));
        assert_eq!(request.headers()["accept"], "text/event-stream");
    }

    #[test]
    fn anything_else_goes_to_hyper() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /ssex HTTP/1.1\r\n\r\n",
            b"GET /sse/ HTTP/1.1\r\n\r\n",
            b"HEAD /sse HTTP/1.1\r\n\r\n",
            b"POST /sse HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
            b"GET /sse HTTP/1.0\r\n\r\n",
            b"GET /sse HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"GET /sse HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            b"GET /sse HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET /sse HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            // Pipelined bytes after the head.
            b"GET /sse HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(
                matches!(parse_head(head), Head::Other),
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn heads_are_bounded() {
        assert!(matches!(
            parse_head(b"GET /sse HTTP/1.1\r\nHo"),
            Head::Partial
        ));
        let mut many = b"GET /sse HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(parse_head(&many), Head::Other), "too many headers");
        let mut long = b"GET /sse HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD_BYTES + 1, b'a');
        assert!(matches!(parse_head(&long), Head::Other), "too long");
    }

    #[test]
    fn chunks_are_framed_like_hyper() {
        let chunk = Chunk::new(Bytes::from_static(b"retry: 3000\n"));
        let bytes: Vec<u8> = chunk.slices().iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(bytes, b"C\r\nretry: 3000\n\r\n");
        let mut partial = Chunk::new(Bytes::from_static(b"abc"));
        partial.written = 4;
        let bytes: Vec<u8> = partial.slices().iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(bytes, b"bc\r\n");
    }
}
