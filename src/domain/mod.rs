//! The pure rules of a ticket drop: ids, money, time, seats and holds, seat plans, wallets, the
//! waiting line.
//!
//! Nothing in here knows about actix, sqlx or the wall clock: every function that depends on
//! time takes `now` as an argument, so every rule can be tested exhaustively and replayed.

pub mod catalog;
pub mod cluster;
pub mod ids;
pub mod money;
pub mod queue;
pub mod reservation;
pub mod schedule;
pub mod seat_plan;
pub mod ticket;
pub mod time;
pub mod waitlist;
pub mod wallet;

pub use ids::{
    ConcertId, IdError, PaymentId, ReservationId, ScheduleId, SeatId, TicketId, TokenId, UserId,
};
pub use money::Money;
pub use time::Timestamp;
