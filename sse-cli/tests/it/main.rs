//! The one integration-test binary of `sse-cli` (one binary links faster
//! than one per file).

mod check;
mod completions;
mod e2e;
mod eventsource_stream;
mod fixtures;
mod parser;
mod publish;
mod reconnect;
mod support;
mod terminal;
mod watch;
