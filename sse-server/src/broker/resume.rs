//! The resume policy, in one place: where a new stream starts, and whether
//! its client is told that it missed events.
//!
//! Both brokers ask [`plan`] with what their log retains, read at one
//! instant: the memory broker with its ring (under the ring lock, in
//! [`Hub::subscribe`](super::Hub::subscribe)), the Redis broker with its
//! local ring first and with the stream's `XINFO` when the ring cannot
//! answer. Nothing else decides "replay" or "too old".

use crate::wire::EventId;

/// Where a client asked its stream to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start<'a> {
    /// Live events only.
    Live,
    /// After this `Last-Event-ID`, exactly as the client sent it.
    After(&'a str),
    /// The newest this many retained events of the requested topics, then
    /// live (`?last=N`).
    Newest(usize),
}

impl<'a> Start<'a> {
    /// The start a request asks for: `Last-Event-ID` (header or query,
    /// non-empty) wins over `?last=N`.
    pub fn from_request(last_event_id: Option<&'a str>, last: Option<usize>) -> Self {
        match (last_event_id.filter(|id| !id.is_empty()), last) {
            (Some(id), _) => Self::After(id),
            (None, Some(n)) => Self::Newest(n),
            (None, None) => Self::Live,
        }
    }
}

/// What a log retains, read at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retained {
    /// The oldest id a resume may start after without missing anything:
    /// every event of the log newer than it is retained.
    pub floor: EventId,
    /// The newest id the log handed out (`floor` when none).
    pub last: EventId,
}

/// Where a subscription starts, as decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// At the newest event: live only.
    Live,
    /// Right after this id, which the log covers: nothing is missed.
    After(EventId),
    /// The id is older than what is retained, or one this log never handed
    /// out (an earlier run's, another stream's, unparsable, invented): the
    /// client is told, then gets everything retained, starting after
    /// `resume` (the id its notice carries).
    TooOld {
        /// Where the replay of everything retained starts.
        resume: EventId,
    },
    /// The newest this many retained events of the requested topics.
    Newest(usize),
}

/// The policy. An id is resumed from exactly when the log covers it
/// (`floor <= id <= last`); any other id is too old, never "newer than
/// everything", so a client holding an id from an earlier run or another
/// log gets what was published since, with a notice, not a silent hole.
pub fn plan(start: Start<'_>, retained: Retained) -> Plan {
    match start {
        Start::Live => Plan::Live,
        Start::Newest(n) => Plan::Newest(n),
        Start::After(text) => match text.parse::<EventId>() {
            Ok(id) if retained.floor <= id && id <= retained.last => Plan::After(id),
            _ => Plan::TooOld {
                resume: retained.floor,
            },
        },
    }
}

/// The greatest id smaller than `id` (`0-0` stays `0-0`): the floor of a
/// log whose oldest retained event is `id`.
pub fn predecessor(id: EventId) -> EventId {
    match (id.ms, id.seq) {
        (ms, 0) if ms > 0 => EventId::new(ms - 1, u64::MAX),
        (ms, seq) => EventId::new(ms, seq.saturating_sub(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64, seq: u64) -> EventId {
        EventId::new(ms, seq)
    }

    #[test]
    fn ids_the_log_covers_resume_and_all_others_are_too_old() {
        let retained = Retained {
            floor: id(7, 4),
            last: id(7, 9),
        };
        let at = |text: &str| plan(Start::After(text), retained);
        assert_eq!(at("7-4"), Plan::After(id(7, 4)), "the floor loses nothing");
        assert_eq!(at("7-6"), Plan::After(id(7, 6)));
        assert_eq!(at("7-9"), Plan::After(id(7, 9)));
        let too_old = Plan::TooOld { resume: id(7, 4) };
        assert_eq!(at("7-3"), too_old, "trimmed");
        assert_eq!(at("7-10"), too_old, "never handed out");
        assert_eq!(at("6-99"), too_old, "an earlier run's");
        assert_eq!(at("junk"), too_old);
        assert_eq!(plan(Start::Live, retained), Plan::Live);
        assert_eq!(plan(Start::Newest(3), retained), Plan::Newest(3));
    }

    #[test]
    fn an_empty_log_covers_only_its_floor() {
        let retained = Retained {
            floor: id(7, 0),
            last: id(7, 0),
        };
        assert_eq!(plan(Start::After("7-0"), retained), Plan::After(id(7, 0)));
        assert_eq!(
            plan(Start::After("7-1"), retained),
            Plan::TooOld { resume: id(7, 0) }
        );
    }

    #[test]
    fn last_event_id_wins_over_last() {
        assert_eq!(
            Start::from_request(Some("1-1"), Some(5)),
            Start::After("1-1")
        );
        assert_eq!(Start::from_request(Some(""), Some(5)), Start::Newest(5));
        assert_eq!(Start::from_request(None, None), Start::Live);
    }

    #[test]
    fn predecessor_is_the_greatest_smaller_id() {
        assert_eq!(predecessor(id(5, 3)), id(5, 2));
        assert_eq!(predecessor(id(5, 0)), id(4, u64::MAX));
        assert_eq!(predecessor(id(0, 0)), id(0, 0));
        assert!(predecessor(id(5, 0)) < id(5, 0));
    }
}
