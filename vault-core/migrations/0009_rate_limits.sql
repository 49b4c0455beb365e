-- Limits of a key (`key:<id>`) or of a user (`user:<id>`); NULL: none of its own (a key then
-- has the configured default). They travel with the cached principal, so a change moves
-- the auth epoch like any change to keys and users.
CREATE TABLE rate_limits (
    subject     TEXT PRIMARY KEY,
    rpm         INTEGER,
    tpm         INTEGER,
    concurrency INTEGER,
    updated_at  TEXT NOT NULL
);
CREATE TRIGGER rate_limits_insert_epoch AFTER INSERT ON rate_limits
BEGIN UPDATE auth_epoch SET epoch = epoch + 1 WHERE id = 1; END;
CREATE TRIGGER rate_limits_update_epoch AFTER UPDATE ON rate_limits
BEGIN UPDATE auth_epoch SET epoch = epoch + 1 WHERE id = 1; END;
CREATE TRIGGER rate_limits_delete_epoch AFTER DELETE ON rate_limits
BEGIN UPDATE auth_epoch SET epoch = epoch + 1 WHERE id = 1; END;
