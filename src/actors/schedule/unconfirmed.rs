//! Which holds' creating writes may not be committed yet. A refusal because a seat is taken
//! can go out at once only when the hold taking it is durable (a failed commit would free the
//! seat again), and the seat map shows a seat held by an in-flight hold as free (as the
//! database has it). Bounded by the writes in flight: committed entries are forgotten.

use crate::domain::ids::IdMap;
use crate::domain::ReservationId;
use std::collections::VecDeque;

/// Holds submitted and not yet known to be committed, with their submissions' sequence numbers.
#[derive(Debug, Default)]
pub struct Unconfirmed {
    seqs: IdMap<ReservationId, u64>,
    /// The same entries in submission order, to forget them front first once committed.
    order: VecDeque<(u64, ReservationId)>,
}

impl Unconfirmed {
    /// Remembers that `hold` was written by submission `seq` (sequence numbers only grow).
    pub fn record(&mut self, hold: ReservationId, seq: u64) {
        self.seqs.insert(hold, seq);
        self.order.push_back((seq, hold));
    }

    /// Forgets every hold whose submission is at or below `committed`.
    pub fn forget_through(&mut self, committed: u64) {
        while let Some(&(seq, hold)) = self.order.front() {
            if seq > committed {
                break;
            }
            self.order.pop_front();
            self.seqs.remove(&hold);
        }
    }

    /// The submission that wrote `hold`, if it may still be in flight.
    pub fn seq_of(&self, hold: ReservationId) -> Option<u64> {
        self.seqs.get(&hold).copied()
    }

    /// Whether `hold`'s write comes after `committed` (so the database does not have it yet).
    pub fn in_flight(&self, hold: ReservationId, committed: u64) -> bool {
        self.seq_of(hold).is_some_and(|seq| seq > committed)
    }

    /// Forgets everything (the state these writes belonged to was thrown away).
    pub fn clear(&mut self) {
        self.seqs.clear();
        self.order.clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.seqs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(id: i64) -> ReservationId {
        ReservationId::new(id).expect("a positive id")
    }

    #[test]
    fn a_hold_is_in_flight_until_its_submission_commits() {
        let mut unconfirmed = Unconfirmed::default();
        unconfirmed.record(hold(1), 5);
        assert_eq!(unconfirmed.seq_of(hold(1)), Some(5));
        assert!(unconfirmed.in_flight(hold(1), 4));
        assert!(
            !unconfirmed.in_flight(hold(1), 5),
            "committed through its own seq"
        );
        assert!(!unconfirmed.in_flight(hold(2), 0), "never recorded");
    }

    #[test]
    fn forgetting_stops_at_the_first_uncommitted_submission() {
        let mut unconfirmed = Unconfirmed::default();
        for (id, seq) in [(1, 1), (2, 3), (3, 3), (4, 7)] {
            unconfirmed.record(hold(id), seq);
        }
        unconfirmed.forget_through(3);
        assert_eq!(unconfirmed.len(), 1);
        assert_eq!(unconfirmed.seq_of(hold(2)), None);
        assert_eq!(unconfirmed.seq_of(hold(3)), None);
        assert_eq!(unconfirmed.seq_of(hold(4)), Some(7));
        unconfirmed.forget_through(6);
        assert_eq!(unconfirmed.len(), 1, "seq 7 is not committed through 6");
        unconfirmed.forget_through(7);
        assert_eq!(unconfirmed.len(), 0);
    }

    #[test]
    fn clearing_forgets_every_hold() {
        let mut unconfirmed = Unconfirmed::default();
        unconfirmed.record(hold(1), 1);
        unconfirmed.record(hold(2), 2);
        unconfirmed.clear();
        assert_eq!(unconfirmed.len(), 0);
        assert!(!unconfirmed.in_flight(hold(2), 0));
        unconfirmed.forget_through(10);
        assert_eq!(unconfirmed.len(), 0, "the order queue was cleared too");
    }
}
