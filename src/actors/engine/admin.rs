//! The administrator's operations: users and concerts, created in the store first and then
//! added to the catalog (a concert's schedules start their actors with the book just made).

use super::Engine;
use crate::actors::error::AdminError;
use crate::domain::catalog::{CreatedConcert, NewConcert};
use crate::domain::schedule::ScheduleBook;
use crate::domain::{Money, UserId};
use std::sync::atomic::Ordering;

impl Engine {
    pub async fn create_user(&self, name: String, balance: Money) -> Result<UserId, AdminError> {
        let now = self.now();
        let user = self
            .inner
            .env
            .store
            .run(move |s| async move { s.create_user(&name, balance, now).await })
            .await?;
        self.inner.catalog.add_user(user);
        Ok(user)
    }

    pub async fn create_concert(&self, concert: NewConcert) -> Result<CreatedConcert, AdminError> {
        let created = self
            .inner
            .env
            .store
            .run(move |s| async move { s.create_concert(&concert).await })
            .await?;
        self.inner.catalog.add_concert(created.id);
        for schedule in &created.schedules {
            let entry = self.inner.catalog.add_schedule(schedule.info.clone());
            entry
                .available
                .store(schedule.seats.len(), Ordering::Relaxed);
            let book = ScheduleBook::planned(
                schedule.info.clone(),
                schedule.seats.clone(),
                schedule.plan.clone(),
            );
            self.inner.registry.start_schedule(entry, Some(book));
        }
        Ok(created)
    }
}
