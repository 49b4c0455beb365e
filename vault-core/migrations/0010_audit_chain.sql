-- The audit trail's hash chain: each row's SHA-256 over the previous row's hash and its own
-- content (NULL for rows written before the chain began), and checkpoints signed with the
-- server secret, every thousand rows and for the last row of each pruned range.
ALTER TABLE audit_log ADD COLUMN hash TEXT;
CREATE TABLE audit_checkpoints (
    row_id     INTEGER PRIMARY KEY,
    hash       TEXT NOT NULL,
    mac        TEXT NOT NULL,
    created_at TEXT NOT NULL
);
