-- The audit trail's indexes by user and by key as tables of their own, brought up to date
-- by the audit writers every few thousand rows (SQLite's 0012 says why). Types and
-- collation as in 0001.
CREATE TABLE audit_rows_by_user (
    owner  TEXT COLLATE "C" NOT NULL,
    row_id BIGINT NOT NULL,
    PRIMARY KEY (owner, row_id)
);
CREATE TABLE audit_rows_by_key (
    prefix TEXT COLLATE "C" NOT NULL,
    row_id BIGINT NOT NULL,
    PRIMARY KEY (prefix, row_id)
);
CREATE TABLE audit_indexed (
    only_row BIGINT PRIMARY KEY CHECK (only_row = 1),
    through  BIGINT NOT NULL
);
INSERT INTO audit_rows_by_user (owner, row_id)
    SELECT user_id, id FROM audit_log WHERE user_id IS NOT NULL ORDER BY user_id, id;
INSERT INTO audit_rows_by_key (prefix, row_id)
    SELECT key_prefix, id FROM audit_log WHERE key_prefix IS NOT NULL ORDER BY key_prefix, id;
INSERT INTO audit_indexed (only_row, through) VALUES (1, COALESCE((SELECT MAX(id) FROM audit_log), 0));
DROP INDEX audit_log_user_timestamp;
DROP INDEX audit_log_key_timestamp;
