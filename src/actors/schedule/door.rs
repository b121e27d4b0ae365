//! The door and transfers (API.md §12): the schedule's actor is the one writer of its tickets,
//! so two gates scanning one code, or a scan racing a transfer, are decided one after the
//! other. Every answer — an admission and the refusals behind it — goes out only once the
//! actor's writes so far are committed: "already checked in" never names a check-in that a
//! failed commit could still undo.

use super::ScheduleActor;
use crate::actors::mailbox::{received, refuse_unavailable, Reply};
use crate::domain::ticket::{CodeClaims, DoorRefusal, Ticket, TransferRefusal};
use crate::domain::{ScheduleId, SeatId, TicketId, Timestamp, UserId};
use crate::store::Writes;
use actix::prelude::*;

/// One verified scan: the code's claims, where and when it was scanned.
#[derive(Debug, Clone)]
pub struct Scan {
    pub claims: CodeClaims,
    pub gate: String,
    pub at: Timestamp,
    /// Reported by a scanner that admitted it offline (the earliest such scan wins).
    pub offline: bool,
}

/// A ticket let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub ticket: TicketId,
    pub schedule: ScheduleId,
    pub seat: SeatId,
    pub seat_number: i32,
    pub row: Option<String>,
    pub checked_in_at: Timestamp,
}

/// What one scan came to.
pub type ScanOutcome = Result<Admitted, DoorRefusal>;

/// Check in scans of this schedule's tickets, in the order given.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CheckInScans {
    pub scans: Vec<Scan>,
    pub reply: Reply<Vec<ScanOutcome>, DoorRefusal>,
}

impl Handler<CheckInScans> for ScheduleActor {
    type Result = ();

    #[tracing::instrument(level = "debug", skip_all, fields(scans = msg.scans.len()))]
    fn handle(&mut self, msg: CheckInScans, _: &mut Context<Self>) {
        received::<Self>();
        let Some((permit, reply)) = self.durability.reserve_or_refuse(msg.reply) else {
            return;
        };
        let book = match self.state.ready_mut(&self.durability) {
            Ok(book) => book,
            Err(why) => return refuse_unavailable(reply, why),
        };
        let mut writes = Writes::default();
        let mut outcomes = Vec::with_capacity(msg.scans.len());
        for scan in &msg.scans {
            let outcome = book
                .tickets
                .check_in(&scan.claims, &scan.gate, scan.at, scan.offline)
                .cloned();
            outcomes.push(outcome.map(|ticket| {
                writes = std::mem::take(&mut writes).ticket(&ticket);
                Admitted {
                    ticket: ticket.id,
                    schedule: ticket.schedule,
                    seat: ticket.seat,
                    seat_number: book.seat(ticket.seat).map_or(0, |s| s.number),
                    row: book.seat_row(ticket.seat).map(str::to_string),
                    checked_in_at: ticket.check_in.map_or(scan.at, |c| c.at),
                }
            }));
        }
        self.durability
            .answer_after_commit(permit, writes, reply, Ok(outcomes));
    }
}

/// Hand a ticket to another user: a new version, a new code.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TransferTicket {
    pub ticket: TicketId,
    pub from: UserId,
    pub to: UserId,
    pub reply: Reply<Ticket, TransferRefusal>,
}

impl Handler<TransferTicket> for ScheduleActor {
    type Result = ();

    #[tracing::instrument(level = "debug", skip_all, fields(ticket_id = %msg.ticket))]
    fn handle(&mut self, msg: TransferTicket, _: &mut Context<Self>) {
        received::<Self>();
        let Some((permit, reply)) = self.durability.reserve_or_refuse(msg.reply) else {
            return;
        };
        let limit = self.env.settings.max_seats_per_user;
        let now = self.env.clock.now();
        let book = match self.state.ready_mut(&self.durability) {
            Ok(book) => book,
            Err(why) => return refuse_unavailable(reply, why),
        };
        let allowed = book
            .tickets
            .check_transfer(msg.ticket, msg.from, msg.to)
            .map(|_| ());
        let answer = match allowed {
            // The per-user limit counts the recipient's tickets too.
            Ok(_) if !book.move_seat_count(msg.from, msg.to, limit) => {
                Err(TransferRefusal::NotAllowed)
            }
            Ok(_) => book
                .tickets
                .transfer(msg.ticket, msg.from, msg.to, now)
                .cloned(),
            Err(refusal) => Err(refusal),
        };
        let writes = match &answer {
            Ok(ticket) => Writes::default().ticket(ticket),
            Err(_) => Writes::default(),
        };
        self.durability
            .answer_after_commit(permit, writes, reply, answer);
    }
}
