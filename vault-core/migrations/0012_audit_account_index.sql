-- The audit trail's indexes by user and by key, kept as tables of their own and brought up
-- to date by the audit writer every few thousand rows, sorted by account, rather than with
-- each commit: a commit of rows from many users changed a page of each index for every
-- user in it. `audit_indexed.through` is the last row whose entries are in; readers look
-- up older rows through these tables and newer ones in `audit_log` itself.
CREATE TABLE audit_rows_by_user (
    owner  TEXT NOT NULL,
    row_id INTEGER NOT NULL,
    PRIMARY KEY (owner, row_id)
) WITHOUT ROWID;
CREATE TABLE audit_rows_by_key (
    prefix TEXT NOT NULL,
    row_id INTEGER NOT NULL,
    PRIMARY KEY (prefix, row_id)
) WITHOUT ROWID;
CREATE TABLE audit_indexed (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    through  INTEGER NOT NULL
);
INSERT INTO audit_rows_by_user (owner, row_id)
    SELECT user_id, id FROM audit_log WHERE user_id IS NOT NULL ORDER BY user_id, id;
INSERT INTO audit_rows_by_key (prefix, row_id)
    SELECT key_prefix, id FROM audit_log WHERE key_prefix IS NOT NULL ORDER BY key_prefix, id;
INSERT INTO audit_indexed (only_row, through) VALUES (1, COALESCE((SELECT MAX(id) FROM audit_log), 0));
DROP INDEX audit_log_user_timestamp;
DROP INDEX audit_log_key_timestamp;
