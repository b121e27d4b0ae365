-- Tickets (issue 28, API.md §12): one row per seat of a PAID reservation, written in the
-- payment's own transaction, then updated in place (check-in, transfer, void): each write is the
-- ticket's full final state. See migrations/postgres/0007_tickets.sql.
CREATE TABLE tickets (
    id                INTEGER PRIMARY KEY,
    reservation_id    INTEGER NOT NULL REFERENCES reservations (id),
    schedule_id       INTEGER NOT NULL REFERENCES schedules (id),
    seat_id           INTEGER NOT NULL REFERENCES seats (id),
    holder_id         INTEGER NOT NULL REFERENCES users (id),
    version           INTEGER NOT NULL CHECK (version >= 1),
    status            TEXT    NOT NULL CHECK (status IN ('VALID', 'CHECKED_IN', 'VOID')),
    issued_at_ms      INTEGER NOT NULL,
    checked_in_at_ms  INTEGER,
    gate              TEXT,
    updated_at_ms     INTEGER NOT NULL,
    UNIQUE (reservation_id, seat_id),
    CHECK ((checked_in_at_ms IS NULL) = (gate IS NULL))
) STRICT;
CREATE INDEX tickets_by_schedule ON tickets (schedule_id);
CREATE INDEX tickets_by_holder ON tickets (holder_id);

-- The generated signing key (its 32-byte seed as hex), when no --ticket-signing-key is given.
CREATE TABLE ticket_signing_key (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    seed          TEXT    NOT NULL CHECK (length(seed) = 64),
    created_at_ms INTEGER NOT NULL
) STRICT;
