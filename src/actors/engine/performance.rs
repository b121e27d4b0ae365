//! Cancelling a whole performance (API.md §12), as the admin route calls it: the schedule's
//! actor stops the sale and voids the holds (asked again until no payment pins one), then
//! each paid reservation the database holds is refunded: claimed at the schedule, credited by
//! the buyer's wallet in one transaction (reservation `REFUNDED`, balance, `REFUND` ledger
//! row), released at the schedule once committed.

use super::Engine;
use crate::actors::error::{ActorError, BookingError, WalletError};
use crate::actors::mailbox::ask;
use crate::actors::persister::{ActorKey, Unavailable};
use crate::actors::schedule::{BeginRefund, CancelPerformance, FinishRefund, ScheduleActor};
use crate::actors::wallet::CreditRefund;
use crate::domain::schedule::{Reservation, ReservationStatus};
use crate::domain::ticket::TicketStatus;
use crate::domain::ScheduleId;
use crate::store::PaidReservation;
use actix::Addr;
use std::time::Duration;

/// What a cancellation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CancellationReport {
    /// Holds voided by this call.
    pub voided: usize,
    /// Paid reservations refunded by this call (a repeated call refunds nothing twice).
    pub refunded: usize,
}

/// How long a cancellation waits for payments in flight to settle (each takes milliseconds).
const PINNED_WAIT: Duration = Duration::from_secs(10);
const PINNED_POLL: Duration = Duration::from_millis(50);

impl Engine {
    pub async fn cancel_performance(
        &self,
        schedule: ScheduleId,
    ) -> Result<CancellationReport, BookingError> {
        if self.inner.catalog.schedule(schedule).is_none() {
            return Err(BookingError::ScheduleNotFound);
        }
        let addr = self.schedule(schedule)?;
        let mut report = CancellationReport::default();
        let deadline = tokio::time::Instant::now() + PINNED_WAIT;
        loop {
            let done = ask(&addr, |reply| CancelPerformance { reply }).await?;
            report.voided += done.voided;
            if done.pinned == 0 {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Unavailable::Busy.into());
            }
            tokio::time::sleep(PINNED_POLL).await;
        }
        let paid = self
            .inner
            .env
            .store
            .run(move |s| async move { s.paid_of_schedule(schedule).await })
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "paid reservations unreadable");
                BookingError::Unavailable(Unavailable::Busy)
            })?;
        for p in paid {
            if self.refund_one(schedule, &addr, p).await? {
                report.refunded += 1;
            }
        }
        Ok(report)
    }

    /// Refunds one paid reservation; `false` when another call refunds (or refunded) it.
    async fn refund_one(
        &self,
        schedule: ScheduleId,
        addr: &Addr<ScheduleActor>,
        paid: PaidReservation,
    ) -> Result<bool, BookingError> {
        let id = paid.reservation;
        let stored = self
            .inner
            .env
            .store
            .run(move |s| async move { s.load_reservation(id).await })
            .await
            .ok()
            .flatten()
            .ok_or(BookingError::Unavailable(Unavailable::Busy))?;
        let reservation = stored.reservation;
        let (generation, tickets) = match ask(addr, |reply| BeginRefund {
            reservation: reservation.clone(),
            reply,
        })
        .await
        {
            Ok(claimed) => claimed,
            Err(ActorError::Rejected(_)) => return Ok(false),
            Err(ActorError::Unavailable(u)) => return Err(u.into()),
        };
        let now = self.now();
        let refunded = Reservation {
            status: ReservationStatus::Refunded,
            updated_at: now,
            ..reservation.clone()
        };
        let tickets = tickets
            .into_iter()
            .map(|mut t| {
                t.status = TicketStatus::Void;
                t.updated_at = now;
                t
            })
            .collect();
        let on_commit: Box<dyn FnOnce() + Send> = {
            let (addr, reservation) = (addr.clone(), reservation.clone());
            Box::new(move || {
                addr.do_send(FinishRefund {
                    reservation,
                    committed: true,
                })
            })
        };
        let wallet = self.wallet(reservation.user);
        let outcome = ask(&wallet, |reply| CreditRefund {
            refunded,
            tickets,
            payment: paid.payment,
            amount: paid.amount,
            depends_on: vec![(ActorKey::Schedule(schedule), generation)],
            on_commit,
            reply,
        })
        .await;
        match outcome {
            Ok(_) => Ok(true),
            Err(e) => {
                addr.do_send(FinishRefund {
                    reservation,
                    committed: false,
                });
                Err(match WalletError::from(e) {
                    WalletError::Unavailable(u) => u.into(),
                    _ => Unavailable::Busy.into(),
                })
            }
        }
    }
}
