//! Sequence tracking per client: every bench payload carries its sequence
//! number, and a fixed-size window tells first deliveries from duplicates
//! and late arrivals without memory per event.

use crate::aggregate::ClientSummary;

/// Width of the per-client window used to tell duplicates from late
/// arrivals (in events behind the newest one seen).
const SEQ_WINDOW: u64 = 128;

/// Counts distinct, duplicated and out-of-order sequence numbers with a
/// fixed-size window (no per-event memory).
#[derive(Debug, Default)]
pub struct SeqTracker {
    newest: Option<u64>,
    /// Bit `i` set: event `newest - i` was received.
    window: u128,
    /// Totals so far.
    pub summary: ClientSummary,
}

impl SeqTracker {
    /// The highest sequence number seen so far.
    pub fn newest(&self) -> Option<u64> {
        self.newest
    }

    /// Records `seq`; true when it is a first delivery.
    pub fn observe(&mut self, seq: u64) -> bool {
        let s = &mut self.summary;
        match self.newest {
            None => {
                self.newest = Some(seq);
                self.window = 1;
            }
            Some(newest) if seq > newest => {
                let shift = seq - newest;
                self.window = if shift >= SEQ_WINDOW {
                    0
                } else {
                    self.window << shift
                };
                self.window |= 1;
                self.newest = Some(seq);
            }
            Some(newest) => {
                let behind = newest - seq;
                if behind < SEQ_WINDOW {
                    let bit = 1u128 << behind;
                    if self.window & bit != 0 {
                        s.duplicated += 1;
                        return false;
                    }
                    self.window |= bit;
                }
                // Older than the window: cannot tell a duplicate from a
                // late arrival, and with 128 events of slack neither happens
                // in practice; counted as out of order.
                s.out_of_order += 1;
            }
        }
        s.distinct += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_counts_duplicates_and_late_events() {
        let mut t = SeqTracker::default();
        for seq in [0, 1, 3, 2, 3, 5, 5, 4] {
            t.observe(seq);
        }
        assert_eq!(t.summary.distinct, 6);
        assert_eq!(t.summary.duplicated, 2);
        assert_eq!(t.summary.out_of_order, 2);
    }

    #[test]
    fn tracker_handles_big_gaps() {
        let mut t = SeqTracker::default();
        t.observe(0);
        t.observe(1000);
        t.observe(1000);
        t.observe(999);
        assert_eq!(t.summary.distinct, 3);
        assert_eq!(t.summary.duplicated, 1);
        assert_eq!(t.summary.out_of_order, 1);
        assert_eq!(t.newest(), Some(1000));
    }
}
