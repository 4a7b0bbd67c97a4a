//! The lean path's request-head parser: any bytes give a verdict without
//! panicking, and a head taken by the lean path is a bounded, complete,
//! plain `GET /sse`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_server::lean::{parse_head, Head, MAX_HEAD_BYTES, MAX_HEADERS};

fuzz_target!(|data: &[u8]| {
    match parse_head(data) {
        Head::Partial => assert!(data.len() < MAX_HEAD_BYTES, "partial past the limit"),
        Head::Lean(request) => {
            assert!(data.len() <= MAX_HEAD_BYTES);
            assert_eq!(request.method().as_str(), "GET");
            assert_eq!(request.uri().path(), "/sse");
            assert!(request.headers().len() <= MAX_HEADERS);
            for name in ["transfer-encoding", "expect", "upgrade", "te"] {
                assert!(!request.headers().contains_key(name), "{name}");
            }
        }
        Head::Other => {}
    }
});
