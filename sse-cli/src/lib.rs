//! `sse-cli`: a terminal client for Server-Sent Events.
//!
//! The binary is a thin shell over this library: [`cli`] holds the flags,
//! [`watch`] follows a stream the way a browser's `EventSource` does,
//! [`publish`] sends events to our server, [`output`] prints them, and
//! [`parse`] is the `text/event-stream` parser that `sse-bench` reuses.

pub mod parse;
