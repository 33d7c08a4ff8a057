-- apixo-watcher store, schema version 4: result mirroring (contract section 9).
--
-- mirror_holds: a task.succeeded event held back until its result files are copied. A row
-- here is the task's "awaiting mirror" flag; releasing it writes the final event and its
-- deliveries and deletes the row in one transaction, so the webhook is sent once.
-- mirror_files: each result file's durable progress, so that after a crash a file is resumed
-- or restarted and a completed one is never fetched again.

CREATE TABLE mirror_holds (
    task_id    TEXT PRIMARY KEY NOT NULL REFERENCES tasks (task_id),
    event_id   TEXT NOT NULL,
    type       TEXT NOT NULL,         -- EventType
    created_at REAL NOT NULL,
    body       BLOB NOT NULL          -- the event as built at success, without data.mirrored
);

CREATE TABLE mirror_files (
    task_id      TEXT NOT NULL REFERENCES tasks (task_id),
    position     INTEGER NOT NULL,    -- index in result_urls
    source_url   TEXT NOT NULL,
    key          TEXT NOT NULL,
    status       TEXT NOT NULL,       -- MirrorStatus
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    sha256       TEXT,
    bytes        INTEGER,
    content_type TEXT,
    error        TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, position)
);
