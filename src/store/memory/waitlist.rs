//! The memory store's waiting-list rows, cancelled performances and audit: the same answers
//! as `store/waitlist.rs` and `store/audit.rs` give from SQL, counted from the tables.

use super::tables::Tables;
use super::MemoryStore;
use crate::domain::schedule::ReservationStatus;
use crate::domain::{ReservationId, ScheduleId};
use crate::store::{
    AuditCounts, LedgerKind, PaidReservation, StoreError, WaitlistSnapshot, Writes,
};
use std::collections::HashMap;

impl Tables {
    pub(super) fn apply_waitlist(&mut self, batch: &Writes) {
        for (key, entry) in &batch.waitlist {
            match entry {
                Some(e) => {
                    self.waitlist.insert(*key, e.clone());
                }
                None => {
                    self.waitlist.remove(key);
                }
            }
        }
        for (schedule, at) in &batch.cancelled {
            self.cancelled.entry(*schedule).or_insert(*at);
        }
    }

    fn refunded_without_one_refund(&self, of_schedule: &[ReservationId]) -> i64 {
        let mut refunds: HashMap<ReservationId, i64> = HashMap::new();
        for l in self
            .ledger
            .values()
            .filter(|l| l.kind == LedgerKind::Refund)
        {
            if let Some(p) = l.payment.and_then(|p| self.payments.get(&p)) {
                *refunds.entry(p.reservation).or_default() += 1;
            }
        }
        of_schedule
            .iter()
            .filter_map(|id| self.reservations.get(id))
            .filter(|r| r.status == ReservationStatus::Refunded)
            .filter(|r| refunds.get(&r.id).copied().unwrap_or(0) != 1)
            .count() as i64
    }

    fn wallets_off_ledger(&self) -> i64 {
        let mut last = HashMap::new();
        let mut broken = std::collections::HashSet::new();
        for l in self.ledger.values() {
            let delta = match l.kind {
                LedgerKind::Payment => -l.amount.won(),
                _ => l.amount.won(),
            };
            if let Some(before) = last.insert(l.user, l.balance_after.won()) {
                if l.balance_after.won() != before + delta {
                    broken.insert(l.user);
                }
            }
        }
        for w in self.wallets.values() {
            if last.get(&w.user).is_some_and(|&b| b != w.balance.won()) {
                broken.insert(w.user);
            }
        }
        broken.len() as i64
    }
}

impl MemoryStore {
    pub async fn load_waitlist(&self, id: ScheduleId) -> Result<WaitlistSnapshot, StoreError> {
        let t = self.lock();
        let mut entries: Vec<_> = t
            .waitlist
            .values()
            .filter(|e| e.schedule == id)
            .cloned()
            .collect();
        entries.sort_by_key(|e| e.seq);
        Ok(WaitlistSnapshot {
            entries,
            cancelled: t.cancelled.contains_key(&id),
        })
    }

    pub async fn paid_of_schedule(
        &self,
        id: ScheduleId,
    ) -> Result<Vec<PaidReservation>, StoreError> {
        let t = self.lock();
        let mut paid: Vec<PaidReservation> = t
            .payments
            .values()
            .filter(|p| {
                t.reservations
                    .get(&p.reservation)
                    .is_some_and(|r| r.schedule == id && r.status == ReservationStatus::Paid)
            })
            .map(|p| PaidReservation {
                reservation: p.reservation,
                payment: p.id,
                amount: p.amount,
            })
            .collect();
        paid.sort_by_key(|p| p.reservation);
        Ok(paid)
    }

    pub async fn audit(&self, id: ScheduleId) -> Result<AuditCounts, StoreError> {
        let t = self.lock();
        let of_schedule = t.by_schedule.get(&id).map_or(&[][..], Vec::as_slice);
        let paid: Vec<_> = of_schedule
            .iter()
            .filter_map(|r| t.reservations.get(r))
            .filter(|r| r.status == ReservationStatus::Paid)
            .collect();
        let mut per_seat: HashMap<_, i64> = HashMap::new();
        for seat in paid.iter().flat_map(|r| r.seats.iter()) {
            *per_seat.entry(*seat).or_default() += 1;
        }
        let mut payments: HashMap<_, i64> = HashMap::new();
        for p in t.payments.values() {
            *payments.entry(p.reservation).or_default() += 1;
        }
        Ok(AuditCounts {
            seats_sold_twice: per_seat.values().filter(|&&n| n > 1).count() as i64,
            sold: per_seat.values().sum(),
            capacity: t.seats.get(&id).map_or(0, Vec::len) as i64,
            paid_without_one_payment: paid
                .iter()
                .filter(|r| payments.get(&r.id).copied().unwrap_or(0) != 1)
                .count() as i64,
            refunded_without_one_refund: t.refunded_without_one_refund(of_schedule),
            wallets_off_ledger: t.wallets_off_ledger(),
            tickets: super::audit::ticket_counts(&t, id, of_schedule),
        })
    }
}
