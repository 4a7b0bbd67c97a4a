//! Integration tests for `sse-bench`: the built binary is run against small
//! test servers whose misbehaviour is known exactly (a fixed delay, chosen
//! events dropped, duplicated or held back, refused connections), and
//! against the real `sse-server`; assertions read its `--json` report.

mod completions;
mod e2e;
mod report;
mod scenarios;
mod support;
mod validation;
