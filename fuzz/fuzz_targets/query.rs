//! Query-string parsing (`/sse?topic=...`, `/publish?topic=...`) and the
//! topic-name check applied to what it yields.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_server::wire::{check_name, parse_query};

fuzz_target!(|query: &str| {
    let Ok(pairs) = parse_query(query) else {
        return;
    };
    for (name, value) in pairs {
        // Decoding never grows text: every byte comes from the input.
        assert!(name.len() + value.len() <= query.len());
        if check_name("topic", &value).is_ok() {
            assert!(!value.is_empty() && !value.contains(['\r', '\n', '\0']));
        }
    }
});
