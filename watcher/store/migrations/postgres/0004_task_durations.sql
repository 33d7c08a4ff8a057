-- apixo-watcher store (PostgreSQL), schema version 4: learned task durations.
--
-- The adaptive polling strategy learns how long each model's tasks take from the ones that
-- finished (completeTime - createTime, or costTime, from the upstream's answers). The most
-- recent `polling.adaptive.window` per model are kept, so a restart keeps what was learned;
-- older rows are trimmed. `id` is the recording order.

CREATE TABLE task_durations (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model       text COLLATE "C" NOT NULL,
    duration_s  double precision NOT NULL,
    finished_at double precision NOT NULL
);

CREATE INDEX task_durations_by_model ON task_durations (model, id);
