//! Why we do not ship `eventsource-stream` 0.2.3: this runs it over the same
//! fixtures and pins down exactly where it departs from the standard (which
//! our parser follows; see the `parser` tests). If a new version fixes these,
//! this test fails and the choice can be revisited.

use std::{collections::BTreeMap, convert::Infallible, panic::AssertUnwindSafe};

use eventsource_stream::Eventsource;
use futures::{executor::block_on, StreamExt};

use crate::fixtures::FIXTURES;

/// What eventsource-stream made of a fixture.
#[derive(Debug, PartialEq)]
enum Outcome {
    Panicked,
    Failed(String),
    Events(Vec<(String, String, String)>),
}

fn run(input: &'static [u8]) -> Outcome {
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        block_on(async {
            let stream = futures::stream::iter([Ok::<_, Infallible>(input)]).eventsource();
            let mut events = Vec::new();
            futures::pin_mut!(stream);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(e) => events.push((e.event, e.data, e.id)),
                    Err(err) => return Outcome::Failed(err.to_string()),
                }
            }
            Outcome::Events(events)
        })
    }));
    result.unwrap_or(Outcome::Panicked)
}

#[test]
fn eventsource_stream_departs_from_the_standard_where_documented() {
    // Keep the expected panic's message out of the test output.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut differences = BTreeMap::new();
    for fixture in FIXTURES {
        let expected: Vec<(String, String, String)> = fixture
            .events
            .iter()
            .map(|&(t, d, i)| (t.into(), d.into(), i.into()))
            .collect();
        let outcome = run(fixture.input);
        if outcome != Outcome::Events(expected) {
            differences.insert(fixture.name, outcome);
        }
    }
    std::panic::set_hook(hook);

    // The four faults the issue names, each on a fixture our parser passes.
    assert_eq!(
        differences.get("bom at start is skipped"),
        Some(&Outcome::Panicked)
    );
    assert_eq!(
        differences.get("lone cr ends the final event"),
        Some(&Outcome::Events(vec![])),
        "drops a final event ended by lone CR"
    );
    assert!(
        matches!(
            differences.get("invalid utf-8 is replaced"),
            Some(Outcome::Failed(_))
        ),
        "fails on invalid UTF-8: {:?}",
        differences.get("invalid utf-8 is replaced")
    );
    // And nowhere else among the fixtures: the complete list.
    let names: Vec<&str> = differences.keys().copied().collect();
    assert_eq!(
        names,
        [
            "bom at start is skipped",
            "bom prefix is not a bom",
            "invalid sequence replaced per maximal subpart",
            "invalid utf-8 in field name",
            "invalid utf-8 is replaced",
            "lone cr ends the final event",
            "lone cr line endings",
            "only one bom is skipped",
            "truncated sequence is one replacement",
        ],
        "{differences:#?}"
    );
}

#[test]
fn eventsource_stream_accepts_a_retry_that_is_not_all_digits() {
    let stream =
        futures::stream::iter([Ok::<_, Infallible>(&b"retry: +5\ndata: a\n\n"[..])]).eventsource();
    let events: Vec<_> = block_on(stream.collect::<Vec<_>>());
    let retry = events
        .first()
        .and_then(|e| e.as_ref().ok())
        .and_then(|e| e.retry);
    assert_eq!(
        retry,
        Some(std::time::Duration::from_millis(5)),
        "it takes `+5` as 5 ms"
    );

    let mut ours = sse_cli::parse::Parser::new();
    ours.feed(b"retry: +5\ndata: a\n\n", |_| {}).expect("parse");
    assert_eq!(ours.retry(), None, "the standard ignores `retry: +5`");
}
