-- apixo-watcher store, schema version 5: learned task durations.
--
-- The adaptive polling strategy learns how long each model's tasks take from the ones that
-- finished (completeTime - createTime, or costTime, from the upstream's answers). The most
-- recent `polling.adaptive.window` per model are kept, so a restart keeps what was learned;
-- older rows are trimmed. `id` is the recording order.

CREATE TABLE task_durations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    model       TEXT NOT NULL,
    duration_s  REAL NOT NULL,
    finished_at REAL NOT NULL
);

CREATE INDEX task_durations_by_model ON task_durations (model, id);
