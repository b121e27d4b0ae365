-- Tickets (issue 28, API.md §12): one row per seat of a PAID reservation, written in the
-- payment's own transaction, then updated in place (check-in, transfer, void): each write is the
-- ticket's full final state, so the group commit's "last write per row wins" holds.
--
-- No foreign keys, like `reservations` and `holds` (migration 0003): the rows ride in the
-- payment's batch, and the one unique (reservation, seat) pair is what keeps a seat of one
-- reservation from being ticketed twice.
CREATE TABLE tickets (
    id                BIGINT PRIMARY KEY,
    reservation_id    BIGINT NOT NULL,
    schedule_id       BIGINT NOT NULL,
    seat_id           BIGINT NOT NULL,
    holder_id         BIGINT NOT NULL,
    version           INTEGER NOT NULL CHECK (version >= 1),
    status            TEXT   NOT NULL CHECK (status IN ('VALID', 'CHECKED_IN', 'VOID')),
    issued_at_ms      BIGINT NOT NULL,
    checked_in_at_ms  BIGINT,
    gate              TEXT,
    updated_at_ms     BIGINT NOT NULL,
    UNIQUE (reservation_id, seat_id),
    CHECK ((checked_in_at_ms IS NULL) = (gate IS NULL))
);
CREATE INDEX tickets_by_schedule ON tickets (schedule_id);
CREATE INDEX tickets_by_holder ON tickets (holder_id);

-- The service's Ed25519 signing key when `--ticket-signing-key` is not given: generated once,
-- kept here (its 32-byte secret seed as hex), so every restart and every node signs alike.
CREATE TABLE ticket_signing_key (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    seed          TEXT   NOT NULL CHECK (length(seed) = 64),
    created_at_ms BIGINT NOT NULL
);
