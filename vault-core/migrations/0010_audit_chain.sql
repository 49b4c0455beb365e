-- The audit trail's hash chain: each row's SHA-256 over the previous row's hash and its own
-- content (NULL for rows written before the chain began), and records signed with the
-- server secret: a `checkpoint` at every thousandth row, and a `start` where the chain of
-- the rows kept begins (before its first row, and at the last row of each pruned range).
ALTER TABLE audit_log ADD COLUMN hash TEXT;
CREATE TABLE audit_checkpoints (
    row_id     INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    hash       TEXT NOT NULL,
    mac        TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (row_id, kind)
);
