-- Issue 30: every index on a hot table earns its place with a read that needs it (boot load per
-- schedule, load_reservation, the ledger audit, the queue's loads) or a guarantee (one live
-- hold per seat, one live token per user, one payment per reservation, the primary keys).
-- `idempotency_keys_by_age` served only the trim at boot (`DELETE … WHERE created_at_ms < $1`),
-- which runs once, just before the whole table is read anyway (`load_idempotency`): a
-- sequential scan serves it, and no idempotent request pays for the index entry any more.
DROP INDEX IF EXISTS idempotency_keys_by_age;
