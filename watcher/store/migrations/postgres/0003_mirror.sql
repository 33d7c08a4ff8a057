-- apixo-watcher store (PostgreSQL), schema version 3: result mirroring (contract section 9).
--
-- mirror_holds: a task.succeeded event held back until its result files are copied. A row
-- here is the task's "awaiting mirror" flag; releasing it writes the final event and its
-- deliveries and deletes the row in one transaction, so the webhook is sent once.
-- mirror_files: each result file's durable progress, so that after a crash a file is resumed
-- or restarted and a completed one is never fetched again.

CREATE TABLE mirror_holds (
    task_id    text COLLATE "C" PRIMARY KEY REFERENCES tasks (task_id),
    event_id   text COLLATE "C" NOT NULL,
    type       text NOT NULL,                 -- EventType
    created_at double precision NOT NULL,
    body       bytea NOT NULL                 -- the event as built at success, without mirrored
);

CREATE TABLE mirror_files (
    task_id      text COLLATE "C" NOT NULL REFERENCES tasks (task_id),
    position     integer NOT NULL,            -- index in result_urls
    source_url   text NOT NULL,
    key          text NOT NULL,
    status       text NOT NULL,               -- MirrorStatus
    created_at   double precision NOT NULL,
    updated_at   double precision NOT NULL,
    sha256       text,
    bytes        bigint,
    content_type text,
    error        text,
    attempts     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, position)
);
