//! What exists: users, concerts and their schedules, as this process knows them. Requests are
//! checked against it before any actor is asked, so a request for something that does not
//! exist never reaches a mailbox. Grows only through the admin routes and boot.

use super::env::IdDashMap;
use super::schedule::ScheduleEntry;
use crate::domain::schedule::ScheduleInfo;
use crate::domain::{ConcertId, ScheduleId, Timestamp, UserId};
use dashmap::mapref::one::Ref;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Debug, Default)]
struct ConcertEntry {
    /// By date, then id.
    schedules: Vec<Arc<ScheduleEntry>>,
}

/// The users, concerts and schedules that exist.
#[derive(Debug, Default)]
pub struct Catalog {
    users: IdDashMap<UserId, ()>,
    concerts: IdDashMap<ConcertId, ConcertEntry>,
    schedules: IdDashMap<ScheduleId, Arc<ScheduleEntry>>,
}

impl Catalog {
    pub fn add_user(&self, user: UserId) {
        self.users.insert(user, ());
    }

    pub fn user_exists(&self, user: UserId) -> bool {
        self.users.contains_key(&user)
    }

    /// Records a concert (with no schedules yet, if it is new).
    pub fn add_concert(&self, concert: ConcertId) {
        self.concerts.entry(concert).or_default();
    }

    pub fn concert_exists(&self, concert: ConcertId) -> bool {
        self.concerts.contains_key(&concert)
    }

    /// Adds a schedule under its concert, keeping the concert's schedules by date.
    pub fn add_schedule(&self, info: ScheduleInfo) -> Arc<ScheduleEntry> {
        let entry = Arc::new(ScheduleEntry::new(info));
        self.schedules.insert(entry.info.id, entry.clone());
        let mut concert = self.concerts.entry(entry.info.concert_id).or_default();
        concert.schedules.push(entry.clone());
        concert
            .schedules
            .sort_by_key(|s| (s.info.concert_at, s.info.id));
        entry
    }

    /// The schedule's entry, borrowed from the map (no reference count touched: the hold path
    /// looks one up per request). Drop it before anything else looks into the catalog.
    pub fn schedule(&self, id: ScheduleId) -> Option<Ref<'_, ScheduleId, Arc<ScheduleEntry>>> {
        self.schedules.get(&id)
    }

    /// The schedule's entry, to keep.
    pub fn schedule_entry(&self, id: ScheduleId) -> Option<Arc<ScheduleEntry>> {
        self.schedules.get(&id).map(|e| e.clone())
    }

    /// Schedules of a concert after `now`, by date, with their free seats; `None` if the
    /// concert does not exist.
    pub fn upcoming(
        &self,
        concert: ConcertId,
        now: Timestamp,
    ) -> Option<Vec<(ScheduleInfo, usize)>> {
        let entry = self.concerts.get(&concert)?;
        Some(
            entry
                .schedules
                .iter()
                .filter(|s| s.info.concert_at > now)
                .map(|s| (s.info.clone(), s.available.load(Ordering::Relaxed)))
                .collect(),
        )
    }

    /// Every schedule's id (cluster mode: each is a shard).
    pub fn schedule_ids(&self) -> Vec<ScheduleId> {
        self.schedules.iter().map(|e| *e.key()).collect()
    }

    /// No users and no concerts: a fresh store.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.concerts.is_empty()
    }
}
