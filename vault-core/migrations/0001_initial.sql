-- Vault schema, version 1: every table of the data model.
-- Timestamps are RFC 3339 UTC text with milliseconds ('2026-01-31T12:00:00.000Z'):
-- readable in exports, and ordered the same as text and as time.

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    email       TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    is_active   INTEGER NOT NULL DEFAULT 1,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    key_hash     TEXT NOT NULL UNIQUE,
    key_prefix   TEXT NOT NULL,
    label        TEXT NOT NULL,
    scope        TEXT NOT NULL CHECK (scope IN ('user', 'admin')),
    user_id      TEXT REFERENCES users(id),
    is_active    INTEGER NOT NULL DEFAULT 1,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);
CREATE INDEX api_keys_prefix ON api_keys(key_prefix);
CREATE INDEX api_keys_user ON api_keys(user_id);

CREATE TABLE conversations (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    title       TEXT NOT NULL,
    model_id    TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX conversations_owner_updated ON conversations(owner, updated_at DESC);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role            TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content         TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX messages_conversation ON messages(conversation_id, created_at);

CREATE TABLE training_jobs (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('queued', 'running', 'paused', 'completed', 'failed', 'cancelled')),
    model        TEXT NOT NULL,
    dataset      TEXT NOT NULL,
    config       TEXT NOT NULL DEFAULT '{}',
    metrics      TEXT NOT NULL DEFAULT '{}',
    progress     REAL NOT NULL DEFAULT 0,
    error        TEXT,
    created_by   TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    started_at   TEXT,
    completed_at TEXT
);
CREATE INDEX training_jobs_created ON training_jobs(created_at DESC);

-- Plain INTEGER PRIMARY KEY (no AUTOINCREMENT): one page less to write per insert.
CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY,
    timestamp     TEXT NOT NULL,
    request_id    TEXT NOT NULL,
    method        TEXT NOT NULL,
    path          TEXT NOT NULL,
    key_prefix    TEXT,
    user_id       TEXT,
    model         TEXT,
    status        INTEGER NOT NULL,
    latency_ms    INTEGER NOT NULL,
    tokens_input  INTEGER,
    tokens_output INTEGER,
    completed     INTEGER NOT NULL DEFAULT 1,
    error_code    TEXT
);
CREATE INDEX audit_log_timestamp ON audit_log(timestamp);
CREATE INDEX audit_log_user_timestamp ON audit_log(user_id, timestamp);
CREATE INDEX audit_log_key_timestamp ON audit_log(key_prefix, timestamp);

CREATE TABLE system_config (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- A counter that moves whenever something that decides authentication changes, in any
-- process. Gateways cache keys in memory and re-read them only when it moved.
CREATE TABLE auth_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL
);
INSERT INTO auth_epoch (id, epoch) VALUES (1, 0);

CREATE TRIGGER api_keys_insert_epoch AFTER INSERT ON api_keys
BEGIN UPDATE auth_epoch SET epoch = epoch + 1 WHERE id = 1; END;
CREATE TRIGGER api_keys_delete_epoch AFTER DELETE ON api_keys
BEGIN UPDATE auth_epoch SET epoch = epoch + 1 WHERE id = 1; END;
-- last_used_at is left out on purpose: it changes all the time and decides nothing.
CREATE TRIGGER api_keys_update_epoch AFTER UPDATE OF key_hash, scope, user_id, is_active, revoked_at ON api_keys
BEGIN UPDATE auth_epoch SET epoch = epoch + 1 WHERE id = 1; END;
CREATE TRIGGER users_update_epoch AFTER UPDATE OF role, is_active ON users
BEGIN UPDATE auth_epoch SET epoch = epoch + 1 WHERE id = 1; END;
CREATE TRIGGER users_delete_epoch AFTER DELETE ON users
BEGIN UPDATE auth_epoch SET epoch = epoch + 1 WHERE id = 1; END;
