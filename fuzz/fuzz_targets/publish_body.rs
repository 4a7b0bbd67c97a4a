//! `/publish` body decoding, all three forms: JSON event objects, the
//! `{"message": ...}` form, and text/plain with `?topic=`/`?event=`.
//!
//! Input: one byte picks the content type, then the query string up to the
//! first `\n`, then the body. Decoding must never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_server::routes::publish::{decode, BodyKind};

fuzz_target!(|input: &[u8]| {
    let Some((&selector, rest)) = input.split_first() else {
        return;
    };
    let kind = if selector % 2 == 0 {
        BodyKind::Json
    } else {
        BodyKind::Text
    };
    let (query, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&b""[..], rest),
    };
    // hyper hands the router a query that is a `str`.
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    // Accepted or refused, never a panic; `decode` checks the names itself.
    let _ = decode(kind, query, body);
});
