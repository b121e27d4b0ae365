//! Cluster mode: the seat map of a schedule another node owns, answered here from a copy of
//! what the database has, at most [`SEAT_COPY_MAX_AGE`] old (API.md §10: seat maps are
//! advisory, the hold decides). A node asked for the map of a hot schedule it does not own
//! reads the database about four times a second for it, however many clients ask, instead
//! of forwarding every read to the owner.

use crate::actors::engine::Engine;
use crate::actors::persister::Unavailable;
use crate::actors::schedule::{restore_book, SeatMap};
use crate::actors::BookingError;
use crate::domain::schedule::ScheduleInfo;
use crate::domain::ScheduleId;
use dashmap::DashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The oldest copy a read may be answered from.
pub const SEAT_COPY_MAX_AGE: Duration = Duration::from_millis(250);

/// One copy per schedule, each behind its own lock so that concurrent readers of a stale copy
/// wait for one load instead of each making their own.
type Slot = Arc<tokio::sync::Mutex<Option<(Instant, SeatMap)>>>;

#[derive(Default)]
pub struct SeatCopies {
    copies: DashMap<ScheduleId, Slot>,
}

impl SeatCopies {
    /// The seat map of `info`'s schedule from a copy at most [`SEAT_COPY_MAX_AGE`] old.
    pub(super) async fn copy(
        &self,
        engine: &Engine,
        info: ScheduleInfo,
    ) -> Result<SeatMap, BookingError> {
        let id = info.id;
        let slot = self.copies.entry(id).or_default().value().clone();
        let mut copy = slot.lock().await;
        if let Some((at, map)) = copy.as_ref() {
            if at.elapsed() <= SEAT_COPY_MAX_AGE {
                return Ok(map.clone());
            }
        }
        let loaded_at = Instant::now();
        let book = engine
            .store_handle()
            .run(move |s| async move { restore_book(info, &s).await })
            .await
            .map_err(|error| {
                tracing::warn!(%error, schedule_id = %id, "a seat map copy could not be loaded");
                BookingError::Unavailable(Unavailable::CommitFailed)
            })?;
        // The schedule list's free count here follows the copy too.
        if let Some(entry) = engine.catalog().schedule_entry(id) {
            entry
                .available
                .store(book.on_sale_count(), Ordering::Relaxed);
        }
        let map = SeatMap::of_stored(&book);
        *copy = Some((loaded_at, map.clone()));
        metrics::counter!("boxoffice_seat_copies_loaded_total").increment(1);
        Ok(map)
    }
}
