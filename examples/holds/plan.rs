//! Who holds what: the same plan for every system. Seats are numbered per schedule; each user
//! holds pairs of one schedule (so a per-user seat limit of 100 per schedule is never hit),
//! and each connection works through its own users, so no two connections want one seat.

/// Seats per schedule (boxoffice's admin route takes at most 20,000).
pub const SEATS_PER_SCHEDULE: usize = 20_000;
/// Two-seat holds one user makes, all in one schedule: 100 seats.
pub const HOLDS_PER_USER: usize = 50;
pub const SEATS_PER_HOLD: usize = 2;

pub struct Plan {
    pub schedules: usize,
    pub users: usize,
    pub connections: usize,
}

/// One hold: a user (index from 0), its schedule (index from 0) and two seat indexes (from 0)
/// within that schedule.
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    pub user: usize,
    pub schedule: usize,
    pub seats: [usize; SEATS_PER_HOLD],
}

impl Plan {
    pub fn new(seats: usize, connections: usize) -> Result<Plan, String> {
        if connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        let schedules = seats.div_ceil(SEATS_PER_SCHEDULE).max(1);
        let users = schedules * SEATS_PER_SCHEDULE / (SEATS_PER_HOLD * HOLDS_PER_USER);
        if users < connections {
            return Err(format!(
                "{seats} seats give {users} users: fewer than the connections"
            ));
        }
        Ok(Plan {
            schedules,
            users,
            connections,
        })
    }

    /// The users of schedule `s` are s, s + S, s + 2S, …: consecutive users are spread over
    /// the schedules, so every schedule's actor is busy.
    fn hold(&self, user: usize, n: usize) -> Hold {
        let schedule = user % self.schedules;
        let slot = user / self.schedules;
        let first = (slot * HOLDS_PER_USER + n) * SEATS_PER_HOLD;
        Hold {
            user,
            schedule,
            seats: [first, first + 1],
        }
    }

    /// Connection `c`'s holds in order: users c, c + C, c + 2C, … fifty holds each.
    pub fn holds_of(&self, c: usize) -> impl Iterator<Item = Hold> + '_ {
        (c..self.users)
            .step_by(self.connections)
            .flat_map(move |user| (0..HOLDS_PER_USER).map(move |n| self.hold(user, n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn no_seat_is_planned_twice_and_no_user_exceeds_100_seats_of_a_schedule() {
        let plan = Plan::new(100_000, 7).expect("a valid plan");
        let mut seats = HashSet::new();
        let mut per_user = std::collections::HashMap::new();
        for c in 0..7 {
            for h in plan.holds_of(c) {
                for s in h.seats {
                    assert!(s < SEATS_PER_SCHEDULE);
                    assert!(seats.insert((h.schedule, s)), "seat planned twice");
                }
                *per_user.entry((h.user, h.schedule)).or_insert(0) += SEATS_PER_HOLD;
            }
        }
        assert_eq!(seats.len(), plan.schedules * SEATS_PER_SCHEDULE);
        assert!(per_user.values().all(|n| *n <= 100));
    }
}
