//! Rough throughput of `sse_cli::parse::Parser` on small events, the load
//! `sse-bench` puts on it: `cargo run --release -p sse-cli --example parse_throughput`.

use std::{hint::black_box, time::Instant};

use sse_cli::parse::Parser;

/// Events per measurement: enough for the run to take a good fraction of a
/// second, so timer resolution does not matter.
const EVENTS: usize = 2_000_000;

fn main() {
    let event = b"id: 1700000000000-123456\nevent: bench\ndata: {\"seq\":123456,\"ts\":1700000000000123,\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}\n\n";
    let stream: Vec<u8> = event
        .iter()
        .copied()
        .cycle()
        .take(event.len() * EVENTS)
        .collect();

    for (label, chunk_size) in [
        ("one event per chunk", event.len()),
        ("16 KiB chunks", 16 * 1024),
        ("1 KiB chunks", 1024),
    ] {
        let mut parser = Parser::new();
        let mut seen = 0usize;
        let started = Instant::now();
        for chunk in stream.chunks(chunk_size) {
            if parser
                .feed(chunk, |e| seen += black_box(e).data.len())
                .is_err()
            {
                eprintln!("parse error");
                return;
            }
        }
        let elapsed = started.elapsed();
        let per_event = elapsed.as_nanos() as f64 / EVENTS as f64;
        let mib_s = stream.len() as f64 / elapsed.as_secs_f64() / (1024.0 * 1024.0);
        println!(
            "{label:>20}: {per_event:6.0} ns/event, {mib_s:7.0} MiB/s ({} byte events, {seen} data bytes)",
            event.len()
        );
    }
}
