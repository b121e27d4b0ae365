//! Tickets, the door and transfers (API.md §12). A holder's list and a QR code are read from
//! the database (every ticket change is answered only after its commit, so it is as fresh as
//! any answer given), so any node answers them. A scan's signature is checked here, before any
//! actor is asked; the check-in itself and a transfer go to the schedule's actor, the one
//! writer of its tickets.

use super::Engine;
use crate::actors::error::{DoorError, TicketError};
use crate::actors::mailbox::ask;
use crate::actors::persister::{ActorKey, Unavailable};
use crate::actors::schedule::{Admitted, CheckInScans, Scan, ScanOutcome, TransferTicket};
use crate::domain::ticket::{self, DoorRefusal, TicketKeys};
use crate::domain::{ConcertId, ScheduleId, TicketId, Timestamp, UserId};
use crate::store::StoredTicket;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A ticket as its holder sees it: the stored ticket, its concert, and its current code.
#[derive(Debug, Clone)]
pub struct TicketView {
    pub stored: StoredTicket,
    pub concert: ConcertId,
    pub concert_at: Timestamp,
    pub code: String,
}

/// One scan as the door route hands it over, before its signature is checked.
#[derive(Debug, Clone)]
pub struct RawScan {
    pub code: String,
    pub at: Timestamp,
}

impl Engine {
    /// Installs the tickets' signing key (once, at startup).
    pub fn set_ticket_keys(&self, keys: Arc<TicketKeys>) {
        // A second install would be a startup bug; the first stays.
        let _ = self.inner.ticket_keys.set(keys);
    }

    /// The tickets' signing key; `None` only before startup installed it.
    pub fn ticket_keys(&self) -> Option<&Arc<TicketKeys>> {
        self.inner.ticket_keys.get()
    }

    fn keys_or_unavailable(&self) -> Result<&Arc<TicketKeys>, Unavailable> {
        self.ticket_keys().ok_or(Unavailable::Busy)
    }

    fn view(&self, stored: StoredTicket, keys: &TicketKeys) -> Option<TicketView> {
        let entry = self.catalog().schedule_entry(stored.ticket.schedule)?;
        Some(TicketView {
            code: keys.sign(&stored.ticket.claims()),
            concert: entry.info.concert_id,
            concert_at: entry.info.concert_at,
            stored,
        })
    }

    /// Every ticket `user` holds, on every schedule.
    pub async fn tickets_of(&self, user: UserId) -> Result<Vec<TicketView>, TicketError> {
        if !self.user_exists(user) {
            return Err(TicketError::UserNotFound);
        }
        let keys = self.keys_or_unavailable()?.clone();
        let stored = self
            .store_handle()
            .run(move |s| async move { s.tickets_of_holder(user).await })
            .await
            .map_err(|error| {
                tracing::warn!(%error, "reading a holder's tickets failed");
                Unavailable::CommitFailed
            })?;
        Ok(stored
            .into_iter()
            .filter_map(|t| self.view(t, &keys))
            .collect())
    }

    /// One ticket `user` holds.
    pub async fn ticket_of(&self, user: UserId, id: TicketId) -> Result<TicketView, TicketError> {
        if !self.user_exists(user) {
            return Err(TicketError::UserNotFound);
        }
        let keys = self.keys_or_unavailable()?.clone();
        let stored = self.stored_ticket(id).await?;
        if stored.ticket.holder != user {
            return Err(TicketError::TicketNotFound);
        }
        self.view(stored, &keys).ok_or(TicketError::TicketNotFound)
    }

    async fn stored_ticket(&self, id: TicketId) -> Result<StoredTicket, TicketError> {
        self.store_handle()
            .run(move |s| async move { s.load_ticket(id).await })
            .await
            .map_err(|error| {
                tracing::warn!(%error, "reading a ticket failed");
                TicketError::Unavailable(Unavailable::CommitFailed)
            })?
            .ok_or(TicketError::TicketNotFound)
    }

    /// The schedule ticket `id` is of (a ticket never changes schedule), from the database:
    /// where cluster mode sends a transfer. `None` for a ticket there is not, or a failed read
    /// (answered where it landed: its route says which).
    pub async fn schedule_of_ticket(&self, id: TicketId) -> Option<ScheduleId> {
        let found = self
            .store_handle()
            .run(move |s| async move { s.load_ticket(id).await })
            .await;
        found.ok().flatten().map(|stored| stored.ticket.schedule)
    }

    /// Hands `id` from `user` to `to`: a new version and code; the old code stops at once.
    pub async fn transfer(
        &self,
        user: UserId,
        id: TicketId,
        to: UserId,
    ) -> Result<TicketView, TicketError> {
        if !self.user_exists(user) || !self.user_exists(to) {
            return Err(TicketError::UserNotFound);
        }
        let keys = self.keys_or_unavailable()?.clone();
        let stored = self.stored_ticket(id).await?;
        let schedule = stored.ticket.schedule;
        if !self.is_here(ActorKey::Schedule(schedule)) {
            return Err(Unavailable::PeerUnreachable.into());
        }
        let addr = self
            .schedule(schedule)
            .map_err(|_| TicketError::TicketNotFound)?;
        let moved = ask(&addr, |reply| TransferTicket {
            ticket: id,
            from: user,
            to,
            reply,
        })
        .await?;
        let stored = StoredTicket {
            ticket: moved,
            ..stored
        };
        self.view(stored, &keys).ok_or(TicketError::TicketNotFound)
    }

    /// Checks scans of `gate` in: each code's signature first (a bad one is refused without
    /// asking any actor), then each schedule's scans at its actor, earliest scan first. The
    /// outcomes come back in the order of `scans`.
    pub async fn check_in(
        &self,
        gate: &str,
        scans: Vec<RawScan>,
        offline: bool,
    ) -> Result<Vec<Result<Admitted, DoorError>>, DoorError> {
        let keys = self.keys_or_unavailable()?.clone();
        let key = keys.verifying_key();
        let mut outcomes: Vec<Option<Result<Admitted, DoorError>>> = vec![None; scans.len()];
        let mut by_schedule: BTreeMap<ScheduleId, Vec<(usize, Scan)>> = BTreeMap::new();
        for (i, raw) in scans.into_iter().enumerate() {
            let schedule = ticket::verify(&key, &raw.code)
                .ok()
                .and_then(|claims| Some((ScheduleId::new(claims.s).ok()?, claims)))
                .filter(|(s, _)| self.schedule_exists(*s));
            let Some((schedule, claims)) = schedule else {
                outcomes[i] = Some(Err(DoorRefusal::Invalid.into()));
                continue;
            };
            let scan = Scan {
                claims,
                gate: gate.to_string(),
                at: raw.at,
                offline,
            };
            by_schedule.entry(schedule).or_default().push((i, scan));
        }
        let asks = by_schedule
            .into_iter()
            .map(|(schedule, scans)| self.check_in_at(schedule, scans));
        for answered in futures_util::future::join_all(asks).await {
            for (i, outcome) in answered {
                outcomes[i] = Some(outcome);
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Err(Unavailable::Busy.into())))
            .collect())
    }

    /// One schedule's scans at its actor, earliest first; each with its index in the request.
    async fn check_in_at(
        &self,
        schedule: ScheduleId,
        mut scans: Vec<(usize, Scan)>,
    ) -> Vec<(usize, Result<Admitted, DoorError>)> {
        scans.sort_by_key(|(i, scan)| (scan.at, *i));
        let order: Vec<usize> = scans.iter().map(|(i, _)| *i).collect();
        let answer: Result<Vec<ScanOutcome>, DoorError> =
            if !self.is_here(ActorKey::Schedule(schedule)) {
                Err(Unavailable::PeerUnreachable.into())
            } else {
                match self.schedule(schedule) {
                    Ok(addr) => {
                        let scans = scans.into_iter().map(|(_, s)| s).collect();
                        ask(&addr, |reply| CheckInScans { scans, reply })
                            .await
                            .map_err(|e| match e {
                                crate::actors::error::ActorError::Rejected(r) => r.into(),
                                crate::actors::error::ActorError::Unavailable(u) => u.into(),
                            })
                    }
                    Err(_) => Err(DoorRefusal::Invalid.into()),
                }
            };
        match answer {
            Ok(outcomes) => order
                .into_iter()
                .zip(outcomes)
                .map(|(i, o)| (i, o.map_err(DoorError::from)))
                .collect(),
            Err(error) => order.into_iter().map(|i| (i, Err(error.clone()))).collect(),
        }
    }
}
