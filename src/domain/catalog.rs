//! What the catalog is made of: a concert to create with its schedules and seats, and what
//! creating it produced. Shared by the admin route, the engine and the store.

use super::schedule::{ScheduleInfo, Seat};
use super::seat_plan::SeatPlan;
use super::{ConcertId, Money, Timestamp};

/// A concert to create, from the admin route.
#[derive(Debug, Clone)]
pub struct NewConcert {
    pub name: String,
    pub schedules: Vec<NewSchedule>,
}

#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub concert_at: Timestamp,
    pub reservation_at: Timestamp,
    /// (seat number, price), in the order given.
    pub seats: Vec<(i32, Money)>,
    /// The seats' plan labels in the same order, one per seat; empty when none has any.
    pub plan: Vec<SeatPlan>,
}

/// A created concert: its schedules with their seats, ids in the order the seats were given.
#[derive(Debug, Clone)]
pub struct CreatedConcert {
    pub id: ConcertId,
    pub schedules: Vec<CreatedSchedule>,
}

/// A created schedule: its seats in the order given, and their plan labels in the same order
/// (empty when no seat has any).
#[derive(Debug, Clone)]
pub struct CreatedSchedule {
    pub info: ScheduleInfo,
    pub seats: Vec<Seat>,
    pub plan: Vec<SeatPlan>,
}
