//! [`Writes`]: the rows one decision (or, merged, a whole batch) writes, as the persister hands
//! them to [`super::Store::commit`].

use super::{IdempotencyRecord, LedgerEntry, PaymentRecord, WalletRecord};
use crate::domain::queue::{OpeningRecord, TokenRecord, TokenState};
use crate::domain::schedule::Reservation;
use crate::domain::ticket::Ticket;
use crate::domain::waitlist::WaitlistEntry;
use crate::domain::{ReservationId, ScheduleId, TicketId, Timestamp, TokenId, UserId};
use std::collections::{BTreeMap, BTreeSet};

/// Row writes of one decision (or, merged, of a whole batch). Rows with an id are full final
/// states: writing the last one wins, so merging coalesces by id and order never matters
/// between different rows.
#[derive(Debug, Clone, Default)]
pub struct Writes {
    pub reservations: BTreeMap<ReservationId, Reservation>,
    pub tokens: BTreeMap<TokenId, TokenRecord>,
    /// When each token in `tokens` was admitted and until when, kept apart because coalescing
    /// an admission with a later expiry leaves only the EXPIRED state in `tokens`.
    pub admissions: BTreeMap<TokenId, (Timestamp, Timestamp)>,
    pub wallets: BTreeMap<UserId, WalletRecord>,
    pub payments: Vec<PaymentRecord>,
    pub ledger: Vec<LedgerEntry>,
    pub idempotency: Vec<IdempotencyRecord>,
    /// The fair opening's row (API.md §11), when this batch schedules, cancels or draws it.
    pub opening: Option<OpeningWrite>,
    /// Tokens the opening's draw moved to a fresh position (token → new position).
    pub moved: BTreeMap<TokenId, u64>,
    /// Waiting-list entries (API.md §12): stored as given, or (`None`) removed.
    pub waitlist: BTreeMap<(ScheduleId, UserId), Option<WaitlistEntry>>,
    /// Performances the operator cancelled, and when.
    pub cancelled: BTreeMap<ScheduleId, Timestamp>,
    /// Tickets issued, checked in, transferred or voided (API.md §12): full final states.
    pub tickets: BTreeMap<TicketId, Ticket>,
    /// The reservations of `reservations` this batch creates: their rows (and their holds')
    /// are inserted, every other one's status is updated in place. Only the actor that made a
    /// reservation knows it is new; a row is never both (the stores refuse either mistake).
    pub created_reservations: BTreeSet<ReservationId>,
    /// The tokens of `tokens` this batch creates (a join), likewise.
    pub created_tokens: BTreeSet<TokenId>,
    /// The batch's marker row (PostgreSQL), set by the persister once the batch is formed:
    /// written in the batch's own transaction, it is how an uncertain commit is resolved.
    pub marker: Option<BatchMarker>,
}

/// A batch's marker: one `batch_markers` row committed with the batch, so that after a
/// connection lost during `COMMIT` the persister can ask whether the batch committed
/// ([`super::Store::batch_committed`]). Not a row of the service's state: `is_empty` and `len`
/// ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMarker {
    /// Unique across batches, restarts and nodes (a random base per process, then a counter).
    pub id: i64,
    pub at: Timestamp,
    /// Markers written before this are deleted in the same batch: they have answered every
    /// question they could be asked (set on one batch in many).
    pub trim_before: Option<Timestamp>,
}

/// A write of the `queue_opening` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpeningWrite {
    /// Scheduled (a new seed) or drawn: the row becomes this.
    Store(OpeningRecord),
    /// Cancelled: no opening.
    Remove,
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        self.reservations.is_empty()
            && self.tokens.is_empty()
            && self.wallets.is_empty()
            && self.payments.is_empty()
            && self.ledger.is_empty()
            && self.idempotency.is_empty()
            && self.opening.is_none()
            && self.moved.is_empty()
            && self.waitlist.is_empty()
            && self.cancelled.is_empty()
            && self.tickets.is_empty()
    }

    /// A reservation stored before (or created earlier in this batch): its new status.
    pub fn reservation(mut self, r: &Reservation) -> Writes {
        self.reservations.insert(r.id, r.clone());
        self
    }

    /// A reservation this write creates, with its holds.
    pub fn created_reservation(mut self, r: &Reservation) -> Writes {
        self.created_reservations.insert(r.id);
        self.reservation(r)
    }

    /// Whether `id`'s row is inserted by this batch (else updated).
    pub fn creates_reservation(&self, id: ReservationId) -> bool {
        self.created_reservations.contains(&id)
    }

    /// A token this write creates (a join).
    pub fn created_token(mut self, t: TokenRecord) -> Writes {
        self.created_tokens.insert(t.id);
        self.token(t)
    }

    /// Whether `id`'s row is inserted by this batch (else updated).
    pub fn creates_token(&self, id: TokenId) -> bool {
        self.created_tokens.contains(&id)
    }

    /// Whether this batch updates a row that `ahead` creates: such a batch must not be staged
    /// behind `ahead` while `ahead` is uncommitted, because an `UPDATE` does not wait for a row
    /// another transaction is inserting; it finds nothing and changes nothing.
    pub fn updates_a_row_created_by(&self, ahead: &Writes) -> bool {
        let reservations = self
            .reservations
            .keys()
            .any(|id| !self.creates_reservation(*id) && ahead.creates_reservation(*id));
        // The draw's moves are updates of stored tokens too.
        let mut tokens = self.tokens.keys().chain(self.moved.keys());
        reservations || tokens.any(|id| !self.creates_token(*id) && ahead.creates_token(*id))
    }

    pub fn token(mut self, t: TokenRecord) -> Writes {
        if let TokenState::Active {
            admitted_at,
            expires_at,
        } = t.state
        {
            self.admissions.insert(t.id, (admitted_at, expires_at));
        }
        self.tokens.insert(t.id, t);
        self
    }

    pub fn wallet(mut self, w: WalletRecord) -> Writes {
        self.wallets.insert(w.user, w);
        self
    }

    pub fn payment(mut self, p: PaymentRecord) -> Writes {
        self.payments.push(p);
        self
    }

    pub fn opening(mut self, write: OpeningWrite) -> Writes {
        self.opening = Some(write);
        self
    }

    pub fn moved(mut self, token: TokenId, position: u64) -> Writes {
        self.moved.insert(token, position);
        self
    }

    /// Stores `entry` as it now is.
    pub fn waitlist_entry(mut self, entry: &WaitlistEntry) -> Writes {
        self.waitlist
            .insert((entry.schedule, entry.user), Some(entry.clone()));
        self
    }

    /// Removes the entry of `user` on `schedule`.
    pub fn waitlist_removed(mut self, schedule: ScheduleId, user: UserId) -> Writes {
        self.waitlist.insert((schedule, user), None);
        self
    }

    /// Stores a ticket's full final state.
    pub fn ticket(mut self, t: &Ticket) -> Writes {
        self.tickets.insert(t.id, t.clone());
        self
    }

    pub fn ledger(mut self, l: LedgerEntry) -> Writes {
        self.ledger.push(l);
        self
    }

    /// Appends `later`: for the same row, `later` wins.
    pub fn merge(&mut self, later: Writes) {
        self.reservations.extend(later.reservations);
        self.tokens.extend(later.tokens);
        self.admissions.extend(later.admissions);
        self.wallets.extend(later.wallets);
        self.payments.extend(later.payments);
        self.ledger.extend(later.ledger);
        self.idempotency.extend(later.idempotency);
        if later.opening.is_some() {
            self.opening = later.opening;
        }
        self.moved.extend(later.moved);
        self.waitlist.extend(later.waitlist);
        self.cancelled.extend(later.cancelled);
        self.tickets.extend(later.tickets);
        self.created_reservations.extend(later.created_reservations);
        self.created_tokens.extend(later.created_tokens);
    }

    /// Whether any balance, payment or ledger row is written.
    pub fn moves_money(&self) -> bool {
        !(self.wallets.is_empty() && self.payments.is_empty() && self.ledger.is_empty())
    }

    /// Number of rows, for metrics and logs.
    pub fn len(&self) -> usize {
        self.reservations.len()
            + self.tokens.len()
            + self.wallets.len()
            + self.payments.len()
            + self.ledger.len()
            + self.idempotency.len()
            + usize::from(self.opening.is_some())
            + self.moved.len()
            + self.waitlist.len()
            + self.cancelled.len()
            + self.tickets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescing_an_admission_with_its_expiry_keeps_the_admission() {
        let t = |ms| Timestamp::from_millis(ms);
        let token = TokenRecord {
            id: TokenId::new(7).unwrap(),
            user: UserId::new(1).unwrap(),
            position: 1,
            created_at: t(0),
            state: TokenState::Active {
                admitted_at: t(10),
                expires_at: t(20),
            },
        };
        let mut batch = Writes::default().token(token);
        batch.merge(Writes::default().token(TokenRecord {
            state: TokenState::Expired { at: t(20) },
            ..token
        }));
        assert_eq!(
            batch.tokens[&token.id].state,
            TokenState::Expired { at: t(20) }
        );
        assert_eq!(batch.admissions[&token.id], (t(10), t(20)));
    }
}
