-- Notable events for the activity feed: who did what to what, and when.
CREATE TABLE activity (
    id          INTEGER PRIMARY KEY,
    timestamp   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT,
    subject     TEXT,
    summary     TEXT NOT NULL
);
CREATE INDEX activity_timestamp ON activity(timestamp DESC);
