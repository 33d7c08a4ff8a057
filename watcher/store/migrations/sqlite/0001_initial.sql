-- apixo-watcher store, schema version 1.
--
-- Applied by watcher/sqlite_store.py inside one transaction, which then sets
-- PRAGMA user_version = 1. Never edit a released migration: add 0002_....sql instead.
--
-- Conventions: enums are stored as their string values, timestamps as REAL Unix seconds,
-- metadata and endpoint lists as JSON text. Keyset pagination walks the composite indexes
-- below newest first, so no listing ever needs OFFSET or a sort of the whole table.

CREATE TABLE tasks (
    task_id        TEXT PRIMARY KEY NOT NULL,
    model          TEXT NOT NULL,
    endpoints      TEXT,              -- JSON array of endpoint names; NULL: every matching one
    callback_url   TEXT,
    metadata       TEXT NOT NULL,     -- JSON object
    deadline_s     REAL,
    source         TEXT NOT NULL,     -- TaskSource
    state          TEXT NOT NULL,     -- TaskState
    registered_at  REAL NOT NULL,
    updated_at     REAL NOT NULL,
    upstream_state TEXT,
    polls          INTEGER NOT NULL DEFAULT 0,
    finished_at    REAL,
    last_error     TEXT
);

-- Resuming after a restart walks only the active tasks, in task_id order (keyset batches).
CREATE INDEX tasks_active ON tasks (task_id) WHERE state IN ('pending', 'processing');
-- `list` newest first, with and without a state filter; the second also serves counts per state.
CREATE INDEX tasks_by_registration ON tasks (registered_at, task_id);
CREATE INDEX tasks_by_state ON tasks (state, registered_at, task_id);

CREATE TABLE state_changes (
    id             INTEGER PRIMARY KEY,
    task_id        TEXT NOT NULL REFERENCES tasks (task_id),
    from_state     TEXT NOT NULL,
    to_state       TEXT NOT NULL,
    at             REAL NOT NULL,
    reason         TEXT NOT NULL,
    upstream_state TEXT
);

CREATE INDEX state_changes_by_task ON state_changes (task_id, id);

CREATE TABLE events (
    event_id   TEXT PRIMARY KEY NOT NULL,
    task_id    TEXT NOT NULL REFERENCES tasks (task_id),
    type       TEXT NOT NULL,         -- EventType
    created_at REAL NOT NULL,
    body       BLOB NOT NULL          -- the exact bytes sent on every attempt
);

CREATE INDEX events_by_task ON events (task_id, created_at);

CREATE TABLE deliveries (
    delivery_id      TEXT PRIMARY KEY NOT NULL,
    event_id         TEXT NOT NULL REFERENCES events (event_id),
    task_id          TEXT NOT NULL REFERENCES tasks (task_id),
    event_type       TEXT NOT NULL,   -- EventType
    endpoint         TEXT NOT NULL,
    webhook_id       TEXT NOT NULL,
    status           TEXT NOT NULL,   -- DeliveryStatus
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    next_attempt_at  REAL,
    url              TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    schedule_pos     INTEGER NOT NULL DEFAULT 0,
    last_status_code INTEGER,
    last_error       TEXT
);

-- Resuming after a restart walks only the pending deliveries, in delivery_id order.
CREATE INDEX deliveries_pending ON deliveries (delivery_id) WHERE status = 'pending';
CREATE INDEX deliveries_by_creation ON deliveries (created_at, delivery_id);
CREATE INDEX deliveries_by_status ON deliveries (status, created_at, delivery_id);
CREATE INDEX deliveries_by_task ON deliveries (task_id, created_at, delivery_id);

CREATE TABLE attempts (
    id                INTEGER PRIMARY KEY,
    delivery_id       TEXT NOT NULL REFERENCES deliveries (delivery_id),
    number            INTEGER NOT NULL,
    started_at        REAL NOT NULL,
    duration_ms       REAL NOT NULL,
    outcome           TEXT NOT NULL,  -- AttemptOutcome
    status_code       INTEGER,
    error             TEXT,
    webhook_timestamp INTEGER
);

CREATE INDEX attempts_by_delivery ON attempts (delivery_id, id);

-- One row that `check_writable` bumps: a real committed write that proves the disk takes it.
CREATE TABLE heartbeat (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    beats INTEGER NOT NULL
);
