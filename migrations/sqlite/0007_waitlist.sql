-- The waiting list and cancelled performances (issue 28, API.md §12).
--
-- One row per user waiting on a schedule, in join order (`seq`, never reused on a schedule).
-- `offer_reservation_id` is the hold offered to the entry; the row is removed once that offer is
-- settled (paid, expired, cancelled) or the user leaves. No foreign keys: like `holds`, the rows
-- are written by the hot path's group commit (see 0003).
CREATE TABLE waitlist_entries (
    schedule_id          INTEGER NOT NULL,
    user_id              INTEGER NOT NULL,
    seats                INTEGER NOT NULL CHECK (seats > 0),
    seq                  INTEGER NOT NULL,
    joined_at_ms         INTEGER NOT NULL,
    offer_reservation_id BIGINT,
    PRIMARY KEY (schedule_id, user_id),
    UNIQUE (schedule_id, seq)
);

-- A performance the operator cancelled: nothing more is sold on it.
CREATE TABLE schedule_cancellations (
    schedule_id     INTEGER PRIMARY KEY REFERENCES schedules (id),
    cancelled_at_ms INTEGER NOT NULL
);
