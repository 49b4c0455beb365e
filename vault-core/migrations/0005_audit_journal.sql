-- How far the audit journal (the file rows are appended to before their answer leaves)
-- is committed to audit_log: moved in the same transaction as the rows, so recovery
-- after a crash commits exactly the journal rows past it.
CREATE TABLE audit_journal (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    committed_seq INTEGER NOT NULL
);
INSERT INTO audit_journal (id, committed_seq) VALUES (1, 0);
