//! The fair opening in the line (API.md §11): an opening scheduled with a secret seed holds
//! admission back (everyone waiting is the pre-queue), and at `opensAt` the pre-queue is drawn
//! ([`super::draw`]) and moved, in the drawn order, to fresh positions at the back of the line,
//! ahead of everyone who joins after the opening (who stay FIFO behind it).
//!
//! Moving the drawn tokens to fresh positions, rather than permuting the positions they had,
//! keeps `position` unique at every step of the write that stores it (both stores index it
//! `UNIQUE`), and keeps the line's layout by position: each move is a vacancy and a push.

use super::draw::{draw_tokens, draw_with, Draw, DrawSeed};
use super::fenwick::Fenwick;
use super::slot::{Slot, Tag};
use super::snapshot::OpeningPhase;
use super::{TokenRecord, WaitingLine};
use crate::domain::ids::IdMap;
use crate::domain::{Timestamp, TokenId, UserId};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A scheduled (or drawn) opening as the line holds it.
#[derive(Debug, Clone)]
pub struct Opening {
    pub opens_at: Timestamp,
    pub seed: DrawSeed,
    pub drawn: Option<Drawn>,
}

/// The outcome of the draw: when, where the drawn pre-queue starts, and the published order.
#[derive(Debug, Clone)]
pub struct Drawn {
    pub at: Timestamp,
    /// Place 1 of the draw holds this position; place k holds `first_position + k - 1`.
    pub first_position: u64,
    pub draw: Arc<Draw>,
    /// Set once the draw is committed: until then it is not published (the seed, the digest
    /// and the order stay hidden), so nobody reads an order a crash could still undo.
    pub committed: Arc<AtomicBool>,
}

impl Drawn {
    fn is_published(&self) -> bool {
        self.committed.load(Ordering::Acquire)
    }
}

/// The opening as it is stored (one row): the seed, and the draw's outcome once drawn. The
/// drawn order itself is the positions of the drawn tokens, stored with the tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpeningRecord {
    pub opens_at: Timestamp,
    pub seed: DrawSeed,
    pub drawn: Option<DrawnRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrawnRecord {
    pub at: Timestamp,
    pub first_position: u64,
    pub participants: u64,
    pub participants_digest: String,
}

/// Why an opening cannot be scheduled or cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpeningRefusal {
    #[error("opening already drawn")]
    AlreadyDrawn,
    #[error("opensAt must be in the future")]
    NotInTheFuture,
}

/// Who takes part in a due draw: `(token, position)` of each live waiter, and the positions of
/// the waiters gone idle before the opening.
#[derive(Debug)]
pub struct Participants {
    seed: DrawSeed,
    participants: Vec<(TokenId, u64)>,
    gone: Vec<u64>,
}

impl Participants {
    /// The draw itself: pure, and the costly part (a second for a million).
    pub fn draw(self) -> ComputedDraw {
        let (drawn, order) = draw_with(&self.seed, &self.participants);
        ComputedDraw {
            drawn,
            order,
            gone: self.gone,
        }
    }
}

/// A draw computed, not yet applied to the line.
#[derive(Debug)]
pub struct ComputedDraw {
    drawn: Draw,
    order: Vec<(TokenId, u64)>,
    gone: Vec<u64>,
}

/// A draw ready to swap into the line ([`WaitingLine::prepare_draw`]).
#[derive(Debug)]
pub struct PreparedDraw {
    computed: ComputedDraw,
    first_position: u64,
    slots: Vec<Slot>,
    by_token: IdMap<TokenId, u64>,
    by_user: IdMap<UserId, u64>,
    idle_deadlines: BinaryHeap<Reverse<(Timestamp, u64)>>,
    ranks: Fenwick,
    moved: Vec<(TokenId, u64)>,
}

/// What the draw changed: the opening to store, and each drawn token's new position (plus the
/// waiters found abandoned at the opening, expired rather than drawn).
#[derive(Debug, Clone)]
pub struct DrawOutcome {
    pub record: OpeningRecord,
    pub moved: Vec<(TokenId, u64)>,
    pub expired: Vec<TokenRecord>,
    /// Set this once the outcome is committed: the draw is published from then on.
    pub committed: Arc<AtomicBool>,
}

/// Where the opening is, as `GET /v1/queue/opening` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpeningStatus {
    None,
    Scheduled,
    Drawn,
}

impl OpeningStatus {
    pub fn name(self) -> &'static str {
        match self {
            OpeningStatus::None => "NONE",
            OpeningStatus::Scheduled => "SCHEDULED",
            OpeningStatus::Drawn => "DRAWN",
        }
    }
}

/// What anyone may know of the opening: never the seed before the draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpeningSummary {
    pub status: OpeningStatus,
    pub opens_at: Option<Timestamp>,
    pub commitment: Option<String>,
    /// Scheduled: the pre-queue so far (everyone waiting); drawn: the participants.
    pub participants: u64,
    pub seed: Option<String>,
    pub participants_digest: Option<String>,
    pub drawn_at: Option<Timestamp>,
}

/// One page of the drawn order, with what it is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrawPage {
    pub commitment: String,
    pub seed: String,
    pub participants_digest: String,
    pub total: u64,
    pub order: Vec<String>,
}

impl Opening {
    pub fn record(&self) -> OpeningRecord {
        OpeningRecord {
            opens_at: self.opens_at,
            seed: self.seed,
            drawn: self.drawn.as_ref().map(|d| DrawnRecord {
                at: d.at,
                first_position: d.first_position,
                participants: d.draw.order.len() as u64,
                participants_digest: d.draw.participants_digest.clone(),
            }),
        }
    }
}

impl WaitingLine {
    /// The opening, if one is scheduled or drawn.
    pub fn opening(&self) -> Option<&Opening> {
        self.opening.as_ref()
    }

    /// The opening as the public sees it.
    pub fn opening_summary(&self) -> OpeningSummary {
        let Some(opening) = &self.opening else {
            return OpeningSummary {
                status: OpeningStatus::None,
                opens_at: None,
                commitment: None,
                participants: 0,
                seed: None,
                participants_digest: None,
                drawn_at: None,
            };
        };
        let drawn = opening.drawn.as_ref().filter(|d| d.is_published());
        OpeningSummary {
            status: match drawn {
                Some(_) => OpeningStatus::Drawn,
                None => OpeningStatus::Scheduled,
            },
            opens_at: Some(opening.opens_at),
            commitment: Some(opening.seed.commitment()),
            participants: match (drawn, &opening.drawn) {
                (Some(d), _) => d.draw.order.len() as u64,
                // Drawn, not yet committed: the pre-queue as drawn.
                (None, Some(d)) => d.draw.order.len() as u64,
                (None, None) => self.waiting as u64,
            },
            // Only once drawn: before, the seed would let anyone predict the order.
            seed: drawn.map(|_| opening.seed.to_hex()),
            participants_digest: drawn.map(|d| d.draw.participants_digest.clone()),
            drawn_at: drawn.map(|d| d.at),
        }
    }

    /// Places `offset + 1 ..= offset + limit` of the drawn order; `None` before the draw.
    pub fn draw_page(&self, offset: usize, limit: usize) -> Option<DrawPage> {
        let opening = self.opening.as_ref()?;
        let drawn = opening.drawn.as_ref().filter(|d| d.is_published())?;
        let order = &drawn.draw.order;
        let start = offset.min(order.len());
        let end = offset.saturating_add(limit).min(order.len());
        Some(DrawPage {
            commitment: drawn.draw.commitment.clone(),
            seed: opening.seed.to_hex(),
            participants_digest: drawn.draw.participants_digest.clone(),
            total: order.len() as u64,
            order: order[start..end].iter().map(|n| n.to_hex()).collect(),
        })
    }

    /// What a poll adds while an opening is under way: the pre-queue before the draw, the
    /// drawn range once the draw is committed (before that, nobody's drawn place is shown).
    pub fn opening_phase(&self) -> Option<OpeningPhase> {
        let opening = self.opening.as_ref()?;
        match &opening.drawn {
            None => Some(OpeningPhase::Prequeue {
                opens_at_ms: opening.opens_at.millis(),
                arrivals: self.waiting as u64,
            }),
            Some(drawn) if drawn.is_published() => Some(OpeningPhase::Drawn {
                first_position: drawn.first_position,
                participants: drawn.draw.order.len() as u64,
            }),
            Some(_) => None,
        }
    }

    /// Whether admission is held back: an opening is scheduled and not yet drawn.
    pub(super) fn held_for_opening(&self) -> bool {
        self.opening.as_ref().is_some_and(|o| o.drawn.is_none())
    }

    /// Schedules the opening at `opens_at` with `seed`, replacing a scheduled one (its seed is
    /// discarded, never shown). Refused once drawn, or for a time not after `now`.
    pub fn schedule_opening(
        &mut self,
        opens_at: Timestamp,
        seed: DrawSeed,
        now: Timestamp,
    ) -> Result<OpeningRecord, OpeningRefusal> {
        if self.opening.as_ref().is_some_and(|o| o.drawn.is_some()) {
            return Err(OpeningRefusal::AlreadyDrawn);
        }
        if opens_at <= now {
            return Err(OpeningRefusal::NotInTheFuture);
        }
        let opening = Opening {
            opens_at,
            seed,
            drawn: None,
        };
        let record = opening.record();
        self.opening = Some(opening);
        Ok(record)
    }

    /// Cancels a scheduled opening (the pre-queue then moves in arrival order); `false` when
    /// there was none. Refused once drawn.
    pub fn cancel_opening(&mut self) -> Result<bool, OpeningRefusal> {
        match &self.opening {
            Some(o) if o.drawn.is_some() => Err(OpeningRefusal::AlreadyDrawn),
            Some(_) => {
                self.opening = None;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Whether [`WaitingLine::draw_if_due`] would draw at `now`.
    pub fn draw_due(&self, now: Timestamp) -> bool {
        self.opening
            .as_ref()
            .is_some_and(|o| o.drawn.is_none() && now >= o.opens_at)
    }

    /// At or after `opensAt`, draws the pre-queue (every token still WAITING) and moves it in
    /// the drawn order to fresh positions at the back; `None` when no draw is due. Waiters past
    /// their idle deadline left before the opening: they are expired, not drawn.
    pub fn draw_if_due(&mut self, now: Timestamp) -> Option<DrawOutcome> {
        let computed = self.participants_at(now)?.draw();
        Some(self.apply_draw(computed, now))
    }

    /// The first step of [`WaitingLine::draw_if_due`], on a shared borrow: who takes part,
    /// when a draw is due. The line's one writer computes the draw from it without holding the
    /// line ([`Participants::draw`], the costly part), then applies it
    /// ([`WaitingLine::apply_draw`]) before it changes anything else: polls go on meanwhile
    /// (they only refresh idle clocks, and never revive a waiter past its deadline).
    pub fn participants_at(&self, now: Timestamp) -> Option<Participants> {
        let opening = self.opening.as_ref()?;
        if opening.drawn.is_some() || now < opening.opens_at {
            return None;
        }
        let idle: Duration = self.policy().idle_timeout;
        let mut participants = Vec::with_capacity(self.waiting);
        let mut gone = Vec::new();
        for offset in self.head.saturating_sub(self.base)..self.slots.len() as u64 {
            let position = self.base + offset;
            let slot = &self.slots[offset as usize];
            if slot.tag() != Tag::Waiting {
                continue;
            }
            if slot.idle_deadline(idle) <= now {
                gone.push(position);
            } else {
                participants.push((slot.id(), position));
            }
        }
        Some(Participants {
            seed: opening.seed,
            participants,
            gone,
        })
    }

    /// Applies a draw computed from [`WaitingLine::participants_at`] of this same line (its
    /// one writer changed nothing in between).
    pub fn apply_draw(&mut self, computed: ComputedDraw, now: Timestamp) -> DrawOutcome {
        let prepared = self.prepare_draw(computed);
        self.apply_prepared(prepared, now)
    }

    /// The costly half of applying a draw, on a shared borrow so polls go on meanwhile: every
    /// drawn waiter's slot at its fresh position at the back, both indexes, the idle deadlines
    /// and the rank tree, built beside the line. Only the line's one writer calls it, and it
    /// changes nothing before [`WaitingLine::apply_prepared`] swaps these in.
    pub fn prepare_draw(&self, computed: ComputedDraw) -> PreparedDraw {
        let idle: Duration = self.policy().idle_timeout;
        let idle_ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
        let first_position = self.next_position;
        let drawn_count = computed.order.len();
        let mut by_token = self.by_token.clone();
        let mut by_user = self.by_user.clone();
        let mut slots = Vec::with_capacity(drawn_count);
        let mut deadlines = Vec::with_capacity(drawn_count);
        let mut moved = Vec::with_capacity(drawn_count);
        for (&(token, old), position) in computed.order.iter().zip(first_position..) {
            let slot = &self.slots[(old - self.base) as usize];
            let deadline = slot.idle_deadline(idle);
            let record = slot.record(old).expect("a waiting slot has a record");
            let seen = Timestamp::from_millis(deadline.millis().saturating_sub(idle_ms));
            // A slot keeps no position (its index is its position): the record's old one is
            // not carried into the fresh slot.
            slots.push(Slot::new(&record, seen));
            by_token.insert(token, position);
            by_user.insert(record.user, position);
            deadlines.push(Reverse((deadline, position)));
            moved.push((token, position));
        }
        // Everyone waiting is drawn or gone: after the draw only the moved slots wait.
        let ranks = Fenwick::build(
            self.base,
            std::iter::repeat_n(false, self.slots.len())
                .chain(std::iter::repeat_n(true, drawn_count)),
        );
        PreparedDraw {
            computed,
            first_position,
            slots,
            by_token,
            by_user,
            idle_deadlines: BinaryHeap::from(deadlines),
            ranks,
            moved,
        }
    }

    /// The cheap half, under the writer's lock: expires the waiters gone before the opening,
    /// vacates the drawn ones' old positions, and swaps in what [`WaitingLine::prepare_draw`]
    /// built. Nothing else changed the line in between (its one writer prepared it).
    pub fn apply_prepared(&mut self, prepared: PreparedDraw, now: Timestamp) -> DrawOutcome {
        let PreparedDraw {
            computed,
            first_position,
            mut slots,
            by_token,
            by_user,
            idle_deadlines,
            ranks,
            moved,
        } = prepared;
        debug_assert_eq!(first_position, self.next_position);
        let idle: Duration = self.policy().idle_timeout;
        let mut expired = Vec::with_capacity(computed.gone.len());
        for position in computed.gone {
            let slot = &mut self.slots[(position - self.base) as usize];
            let deadline = slot.idle_deadline(idle);
            slot.expire(deadline);
            expired.extend(slot.record(position));
            self.waiting -= 1;
        }
        for (fresh, &(_, old)) in slots.iter_mut().zip(&computed.order) {
            let slot = &mut self.slots[(old - self.base) as usize];
            // A poll while the draw was prepared refreshed the old slot: the move keeps it.
            fresh.take_clock_of(slot);
            // Its waiter moves: the count of waiters is unchanged, one out and one in.
            slot.set_tag(Tag::Vacant);
        }
        self.next_position += slots.len() as u64;
        self.slots.extend(slots);
        self.by_token = by_token;
        self.by_user = by_user;
        self.idle_deadlines = idle_deadlines;
        self.ranks = ranks;
        // Nobody waits before the drawn pre-queue any more: admission starts at place 1.
        self.head = self.head.max(first_position);
        self.superseded.slide(self.next_position);
        let opening = self
            .opening
            .as_mut()
            .expect("a draw is computed from a scheduled opening");
        let committed = Arc::new(AtomicBool::new(false));
        opening.drawn = Some(Drawn {
            at: now,
            first_position,
            draw: Arc::new(computed.drawn),
            committed: committed.clone(),
        });
        DrawOutcome {
            record: opening.record(),
            moved,
            expired,
            committed,
        }
    }

    /// Puts back the opening read from the store; `drawn_tokens` are the tokens at the drawn
    /// positions, in position order (empty when not drawn). The order is recomputed from the
    /// seed and checked against the stored one and its digest.
    pub fn restore_opening(
        &mut self,
        record: OpeningRecord,
        drawn_tokens: &[TokenId],
    ) -> Result<(), String> {
        let drawn = match &record.drawn {
            None => None,
            Some(stored) => {
                let (drawn, order) = draw_tokens(&record.seed, drawn_tokens);
                if order != drawn_tokens || drawn.participants_digest != stored.participants_digest
                {
                    return Err(format!(
                        "the stored draw ({} participants from position {}) is not the seed's order",
                        stored.participants, stored.first_position
                    ));
                }
                Some(Drawn {
                    at: stored.at,
                    first_position: stored.first_position,
                    draw: Arc::new(drawn),
                    committed: Arc::new(AtomicBool::new(true)),
                })
            }
        };
        self.opening = Some(Opening {
            opens_at: record.opens_at,
            seed: record.seed,
            drawn,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::queue::test_support::{created, ids, policy, t, user};
    use crate::domain::queue::{OpeningPhase, PublicName, TokenState};

    fn seed() -> DrawSeed {
        DrawSeed::from_bytes([5; 32])
    }

    #[test]
    fn the_opening_statuses_are_named_as_the_api_names_them() {
        let names = [
            OpeningStatus::None,
            OpeningStatus::Scheduled,
            OpeningStatus::Drawn,
        ]
        .map(OpeningStatus::name);
        assert_eq!(names, ["NONE", "SCHEDULED", "DRAWN"]);
    }

    #[test]
    fn nobody_is_admitted_before_the_opening_and_the_drawn_pre_queue_goes_first() {
        let mut line = WaitingLine::new(policy(2), 1);
        let mut next = ids();
        assert_eq!(line.opening_phase(), None, "no opening");
        assert!(!line.draw_due(t(10_000)), "nothing to draw");
        line.schedule_opening(t(10_000), seed(), t(0)).unwrap();
        let early: Vec<TokenRecord> = (1..=6)
            .map(|u| created(line.join(user(u), &mut next, t(u * 100))))
            .collect();
        assert!(line.advance(t(9_999)).is_empty(), "nobody admitted before");
        assert!(!line.draw_due(t(9_999)));
        assert!(line.draw_if_due(t(9_999)).is_none());
        assert!(line.draw_due(t(10_000)), "due at opensAt exactly");
        assert_eq!(
            line.opening_phase(),
            Some(OpeningPhase::Prequeue {
                opens_at_ms: 10_000,
                arrivals: 6
            })
        );

        let outcome = line.draw_if_due(t(10_000)).expect("due");
        assert_eq!(outcome.moved.len(), 6);
        assert!(
            line.draw_page(0, 10).is_none(),
            "published only once committed"
        );
        assert_eq!(line.opening_summary().seed, None);
        assert_eq!(line.opening_phase(), None, "drawn, not yet committed");
        assert!(!line.draw_due(t(10_001)), "drawn once");
        assert_eq!(line.cancel_opening(), Err(OpeningRefusal::AlreadyDrawn));
        outcome.committed.store(true, Ordering::Release);
        let drawn = line.opening().unwrap().drawn.clone().unwrap();
        assert_eq!(
            line.opening_phase(),
            Some(OpeningPhase::Drawn {
                first_position: drawn.first_position,
                participants: 6
            })
        );
        let late = created(line.join(user(7), &mut next, t(10_001)));
        // The drawn order is the seed's, over the early tokens.
        let ids: Vec<TokenId> = early.iter().map(|r| r.id).collect();
        assert_eq!(*drawn.draw, crate::domain::queue::draw(&seed(), &ids));
        for (place, (token, position)) in outcome.moved.iter().enumerate() {
            assert_eq!(drawn.draw.order[place], PublicName::of(*token));
            assert_eq!(*position, drawn.first_position + place as u64);
            let status = line.status(*token, t(10_001)).unwrap();
            assert_eq!(status.record.position, *position);
            assert_eq!(status.ahead, place as u64);
        }
        assert!(late.position > drawn.first_position + 5);

        // Admission follows the drawn order, then the late joiner.
        let admitted = line.advance(t(10_002));
        let admitted: Vec<TokenId> = admitted.iter().map(|r| r.id).collect();
        assert_eq!(admitted, vec![outcome.moved[0].0, outcome.moved[1].0]);
        assert_eq!(line.status(late.id, t(10_002)).unwrap().ahead, 4);
        assert!(line.schedule_opening(t(20_000), seed(), t(10_002)).is_err());
        let summary = line.opening_summary();
        assert_eq!(summary.status, OpeningStatus::Drawn);
        assert_eq!(summary.seed, Some(seed().to_hex()));
        let page = line.draw_page(4, 10).unwrap();
        assert_eq!((page.total, page.order.len()), (6, 2));
        assert_eq!(page.order[0], drawn.draw.order[4].to_hex());
    }

    #[test]
    fn the_seed_stays_secret_until_the_draw() {
        let mut line = WaitingLine::new(policy(2), 1);
        assert_eq!(line.opening_summary().status, OpeningStatus::None);
        let record = line.schedule_opening(t(10), seed(), t(0)).unwrap();
        let summary = line.opening_summary();
        assert_eq!(summary.status, OpeningStatus::Scheduled);
        assert_eq!(summary.seed, None);
        assert_eq!(summary.commitment, Some(record.seed.commitment()));
        assert!(line.draw_page(0, 10).is_none());
    }

    #[test]
    fn a_waiter_who_left_before_the_opening_is_not_drawn() {
        let mut line = WaitingLine::new(policy(10), 1);
        let mut next = ids();
        line.schedule_opening(t(200_000), seed(), t(0)).unwrap();
        let gone = created(line.join(user(1), &mut next, t(0)));
        let stays = created(line.join(user(2), &mut next, t(150_000)));
        let outcome = line.draw_if_due(t(200_000)).unwrap();
        assert_eq!(outcome.moved.len(), 1);
        assert_eq!(outcome.moved[0].0, stays.id);
        assert_eq!(outcome.expired.len(), 1);
        assert_eq!(outcome.expired[0].id, gone.id);
        assert!(matches!(
            line.status(gone.id, t(200_000)).unwrap().record.state,
            TokenState::Expired { .. }
        ));
        assert_eq!(line.waiting_count(), 1);
    }

    #[test]
    fn a_cancelled_opening_lets_the_line_move_in_arrival_order() {
        let mut line = WaitingLine::new(policy(10), 1);
        let mut next = ids();
        line.schedule_opening(t(10_000), seed(), t(0)).unwrap();
        let first = created(line.join(user(1), &mut next, t(0)));
        assert!(line.advance(t(1)).is_empty());
        assert_eq!(line.cancel_opening(), Ok(true));
        assert_eq!(line.advance(t(2))[0].id, first.id);
        assert_eq!(line.cancel_opening(), Ok(false));
    }

    #[test]
    fn a_restored_draw_is_checked_against_its_seed() {
        let mut line = WaitingLine::new(policy(10), 1);
        let mut next = ids();
        line.schedule_opening(t(10), seed(), t(0)).unwrap();
        for u in 1..=5 {
            line.join(user(u), &mut next, t(1));
        }
        let outcome = line.draw_if_due(t(10)).unwrap();
        let tokens: Vec<TokenId> = outcome.moved.iter().map(|m| m.0).collect();
        let mut restored = WaitingLine::new(policy(10), 1);
        restored
            .restore_opening(outcome.record.clone(), &tokens)
            .expect("the same order");
        let mut swapped = tokens.clone();
        swapped.swap(0, 1);
        let mut other = WaitingLine::new(policy(10), 1);
        assert!(other.restore_opening(outcome.record, &swapped).is_err());
    }

    /// The draw in the line at ticket-drop size: 1,000,000 waiters drawn and moved. Run with
    /// `cargo test --release --lib a_million -- --ignored --nocapture` (target: ≤ 2 s).
    #[test]
    #[ignore = "a measurement of a million waiters: run alone, in release"]
    fn a_million_waiters_are_drawn_and_moved() {
        let mut line = WaitingLine::new(policy(1000), 1);
        let mut next = ids();
        line.schedule_opening(t(100_000), seed(), t(0)).unwrap();
        for u in 1..=1_000_000 {
            line.join(user(u), &mut next, t(1));
        }
        let started = std::time::Instant::now();
        let computed = line.participants_at(t(100_000)).unwrap().draw();
        let drew = started.elapsed();
        let started = std::time::Instant::now();
        let prepared = line.prepare_draw(computed);
        let prepare = started.elapsed();
        let started = std::time::Instant::now();
        let outcome = line.apply_prepared(prepared, t(100_000));
        println!(
            "prepared on a shared borrow: {prepare:?}; applied under the writer's lock: {:?}",
            started.elapsed()
        );
        let started = std::time::Instant::now();
        let admitted = line.advance(t(100_000));
        println!(
            "draw of {} in the line: {drew:?}; the first advance after it: {:?} ({} admitted)",
            outcome.moved.len(),
            started.elapsed(),
            admitted.len()
        );
    }
}
