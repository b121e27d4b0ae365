-- Issue 30: one row per batch, written in the batch's own transaction. New rows are now plain
-- INSERTs, so a batch must never be sent again once it may have committed; after a connection
-- is lost during COMMIT, the persister asks this table whether the batch committed (it inserts
-- the same id: the insert waits for the batch's transaction if it is still in flight, and
-- conflicts only if it committed). Rows are trimmed by the batches themselves once they are
-- old enough to have answered every question; no index but the primary key.
CREATE TABLE batch_markers (
    id    BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL
);
