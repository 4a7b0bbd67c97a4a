//! `Last-Event-ID` parsing: an id the server accepts prints back as the
//! same text, and ids order as their (ms, seq) pairs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_server::wire::EventId;

fuzz_target!(|input: &[u8]| {
    // The header arrives as bytes; the server reads it lossily as text.
    let text = String::from_utf8_lossy(input);
    let Ok(id) = text.parse::<EventId>() else {
        return;
    };
    let printed = id.to_string();
    assert_eq!(printed.parse::<EventId>(), Ok(id));
    // Leading zeros are the only way two texts name one id.
    let canonical = |s: &str| {
        s.split('-')
            .map(|p| p.trim_start_matches('0').to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(canonical(&printed), canonical(&text));
});
