-- Cluster mode (issue 17). Unused without `--cluster`: a single node never reads or writes
-- these tables, so the default service is unchanged.
--
-- Membership: one row per node, its lease renewed on the database clock (`now()`), never on a
-- node's own clock, so a node whose clock is wrong or which is paused cannot extend it.
CREATE TABLE cluster_node (
    node_id       TEXT        PRIMARY KEY CHECK (char_length(node_id) BETWEEN 1 AND 64),
    advertise_url TEXT        NOT NULL CHECK (char_length(advertise_url) BETWEEN 1 AND 256),
    joined_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ NOT NULL,
    -- Set by a graceful leave: the node's shards may be taken at once, not after its TTL.
    left_at       TIMESTAMPTZ
);

-- Shard ownership. `owner` NULL means released. `epoch` only ever grows: every takeover is a
-- compare-and-set that bumps it, and every fenced batch re-reads it `FOR SHARE` in its own
-- transaction, so a commit decided under an older epoch is refused by the database itself.
CREATE TABLE shard_lease (
    shard    TEXT        PRIMARY KEY CHECK (char_length(shard) BETWEEN 1 AND 64),
    owner    TEXT        REFERENCES cluster_node (node_id),
    epoch    BIGINT      NOT NULL CHECK (epoch >= 1),
    moved_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per (fenced batch, shard): the epoch and node each commit was made under, written in
-- the batch's own transaction. The fault tests check that per shard the epochs never go back
-- and that no row was written by a node after its epoch had been superseded.
CREATE TABLE fence_audit (
    id           BIGSERIAL   PRIMARY KEY,
    shard        TEXT        NOT NULL,
    epoch        BIGINT      NOT NULL,
    node_id      TEXT        NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX fence_audit_by_shard ON fence_audit (shard, id);

-- Id blocks: each node boot in cluster mode takes the next block, and allocates its
-- reservation, payment and ledger ids from `block × 2^40` on, so two nodes never pick the same
-- id (a single node keeps counting from the largest stored id). Block 1 starts at 2^40, above
-- every id a single node hands out in practice.
CREATE SEQUENCE id_block_seq START 1;
