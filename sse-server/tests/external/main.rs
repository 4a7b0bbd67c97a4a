//! Tests that need programs from outside Rust: Redis, nginx, Chromium.
//!
//! Built only with the `external-tests` feature; `cargo xtask test`
//! installs what they need and runs them.

#[path = "../it/support.rs"]
mod support;

mod auth;
mod browser;
mod cli;
mod durable_disk_full;
mod interop;
mod nginx;
mod redis;
mod redis_durability;
