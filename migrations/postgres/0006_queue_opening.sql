-- The fair opening (issue 27, API.md §11). At most one row (id = 1): no row is no opening, and
-- the waiting room is the seed's FIFO line, unchanged.
--
-- `seed` is the 32-byte secret the draw is seeded with, as 64 hex characters. It is written
-- (and committed) before the commitment SHA-256(seed) is answered, so a crash after the answer
-- never draws with a seed nobody committed to; it is shown only once `drawn_at_ms` is set.
-- The drawn order is not stored twice: the draw moves the pre-queue's tokens to the fresh
-- positions `first_position .. first_position + participants` in the drawn order, in the same
-- transaction as this row's draw columns (queue_tokens.position is the order).
CREATE TABLE queue_opening (
    id                  BIGINT PRIMARY KEY CHECK (id = 1),
    opens_at_ms         BIGINT NOT NULL,
    seed                TEXT   NOT NULL CHECK (seed ~ '^[0-9a-f]{64}$'),
    drawn_at_ms         BIGINT,
    first_position      BIGINT,
    participants        BIGINT CHECK (participants >= 0),
    participants_digest TEXT   CHECK (participants_digest ~ '^[0-9a-f]{64}$'),
    -- Drawn: all four draw columns; scheduled: none.
    CHECK ((drawn_at_ms IS NULL) = (first_position IS NULL)
       AND (drawn_at_ms IS NULL) = (participants IS NULL)
       AND (drawn_at_ms IS NULL) = (participants_digest IS NULL))
);
