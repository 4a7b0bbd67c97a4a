//! Every fixture through `sse_cli::parse::Parser`, whole, split in two at
//! every offset, one byte at a time and in pseudo-random chunks, so that
//! every rule is also checked across a chunk boundary (a CR in one chunk and
//! its LF in the next, a character split in the middle, a split BOM).

use std::time::Duration;

use sse_cli::parse::{Event, Parser};

use crate::{
    fixtures::{Fixture, FIXTURES},
    support::XorShift,
};

fn parse(chunks: &[&[u8]]) -> (Vec<Event>, Option<Duration>) {
    let mut parser = Parser::new();
    let mut events = Vec::new();
    for chunk in chunks {
        parser
            .feed(chunk, |e| events.push(e.clone()))
            .expect("fixtures are within the limits");
    }
    (events, parser.retry())
}

fn check(fixture: &Fixture, chunks: &[&[u8]], how: &str) {
    let (events, retry) = parse(chunks);
    let got: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| (e.event.as_str(), e.data.as_str(), e.id.as_str()))
        .collect();
    assert_eq!(got, fixture.events, "fixture {:?} fed {how}", fixture.name);
    assert_eq!(
        retry,
        fixture.retry.map(Duration::from_millis),
        "retry of fixture {:?} fed {how}",
        fixture.name
    );
}

#[test]
fn every_fixture_fed_whole() {
    for fixture in FIXTURES {
        check(fixture, &[fixture.input], "whole");
    }
}

#[test]
fn every_fixture_split_in_two_at_every_offset() {
    for fixture in FIXTURES {
        for at in 0..=fixture.input.len() {
            let (a, b) = fixture.input.split_at(at);
            check(fixture, &[a, b], &format!("split at {at}"));
        }
    }
}

#[test]
fn every_fixture_one_byte_at_a_time() {
    for fixture in FIXTURES {
        let chunks: Vec<&[u8]> = fixture.input.chunks(1).collect();
        check(fixture, &chunks, "one byte at a time");
    }
}

#[test]
fn every_fixture_in_pseudo_random_chunks() {
    for seed in 1..=40 {
        let mut rng = XorShift::new(seed);
        for fixture in FIXTURES {
            let chunks = rng.chunks(fixture.input, 7);
            let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
            check(fixture, &chunks, &format!("in chunks {sizes:?}"));
        }
    }
}

#[test]
fn all_fixtures_as_one_stream_in_chunks() {
    // Many events through one parser: buffers are reused between events, so
    // state leaking from one event into the next would show here. Fixtures
    // that end in a blank line and set no id can simply be concatenated;
    // those starting with a BOM are left out (a BOM only counts first).
    let ends_in_blank_line = |f: &&Fixture| {
        [&b"\n\n"[..], b"\r\r", b"\n\r\n", b"\r\n\r\n"]
            .iter()
            .any(|end| f.input.ends_with(end))
    };
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for fixture in FIXTURES
        .iter()
        .filter(ends_in_blank_line)
        .filter(|f| f.events.iter().all(|e| e.2.is_empty()))
        .filter(|f| !f.input.starts_with(b"\xEF\xBB"))
    {
        stream.extend_from_slice(fixture.input);
        expected.extend(
            fixture
                .events
                .iter()
                .map(|&(t, d, i)| (t.to_string(), d.to_string(), i.to_string())),
        );
    }
    for seed in 1..=5 {
        let mut rng = XorShift::new(seed);
        let (events, _) = parse(&rng.chunks(&stream, 13));
        let got: Vec<(String, String, String)> = events
            .into_iter()
            .map(|e| (e.event, e.data, e.id))
            .collect();
        assert_eq!(got, expected, "seed {seed}");
    }
}
