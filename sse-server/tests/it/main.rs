//! Integration tests: the real server on a socket, driven over HTTP.

mod api;
mod auth;
mod concurrency;
mod connections;
mod durable;
mod hostile;
mod operations;
mod publish;
mod replay;
mod secrets;
mod shutdown;
mod slow;
mod stream;
mod support;
mod tls;
