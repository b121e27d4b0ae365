-- Idempotency keys: the first successful answer to a request, stored in the same transaction
-- as its effect, so a retry with the same key replays it instead of acting twice.
CREATE TABLE idempotency_keys (
    user_id       BIGINT  NOT NULL REFERENCES users (id),
    key           TEXT    NOT NULL,
    -- The request it answered (method, path and canonical body): the same key with another
    -- request is refused, never replayed.
    fingerprint   TEXT    NOT NULL,
    status        INTEGER NOT NULL,
    body          TEXT    NOT NULL,
    created_at_ms BIGINT  NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at_ms);
