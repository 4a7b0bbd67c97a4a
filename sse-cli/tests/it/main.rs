//! The one integration-test binary of `sse-cli` (one binary links faster
//! than one per file).

mod eventsource_stream;
mod fixtures;
mod parser;
mod support;
mod watch;
