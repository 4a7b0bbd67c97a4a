//! A minimal GRIP origin for Pushpin (`--grip-origin ADDR`, used by
//! `cargo xtask bench --compare`): every request is answered with an empty
//! `text/event-stream` response holding the stream open on the channel named
//! by `?topic=`, so Pushpin keeps the client and delivers what is published
//! to that channel. Only what Pushpin's origin requests need is handled.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head read from Pushpin.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Serves until SIGINT or SIGTERM.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            r = listener.accept() => {
                if let Ok((stream, _)) = r {
                    tokio::spawn(handle(stream));
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
        }
    }
}

/// The channel a request asks for: `topic=` in the query, else `default`.
pub fn channel_of(target: &str) -> String {
    target
        .split_once('?')
        .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("topic=")))
        .filter(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .unwrap_or("default")
        .to_string()
}

async fn handle(mut stream: TcpStream) {
    let mut buf = vec![0u8; MAX_REQUEST_HEAD];
    let mut filled = 0;
    // Keep-alive: Pushpin may reuse the connection for several requests.
    loop {
        let head_len = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf[..filled]) {
                Ok(httparse::Status::Complete(n)) => {
                    let channel = channel_of(req.path.unwrap_or("/"));
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
                         Grip-Hold: stream\r\nGrip-Channel: {channel}\r\nContent-Length: 0\r\n\r\n"
                    );
                    if stream.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    break n;
                }
                Ok(httparse::Status::Partial) if filled < buf.len() => {}
                _ => return,
            }
            match stream.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => filled += n,
            }
        };
        // Requests carry no body here (GET); drop the consumed head.
        buf.copy_within(head_len..filled, 0);
        filled -= head_len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_comes_from_the_topic_parameter() {
        assert_eq!(channel_of("/sse?x=1&topic=bench-1"), "bench-1");
        assert_eq!(channel_of("/sse"), "default");
        assert_eq!(channel_of("/sse?topic=a%0d%0aX:y"), "default");
    }
}
