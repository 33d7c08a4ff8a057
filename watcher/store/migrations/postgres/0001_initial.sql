-- apixo-watcher store on PostgreSQL, schema version 1.
--
-- Applied by watcher/store/postgres_schema.py in one transaction, under an advisory lock, which
-- then records version 1 in watcher_schema. Never edit a released migration: add 0002_....sql.
--
-- Conventions, the same as the SQLite schema so both stores keep identical records: enums are
-- their string values, times are Unix seconds in double precision (the store never reads a clock;
-- callers pass `now`), metadata and endpoint lists are `json` (kept as written, key order
-- included, which jsonb would not). Identifiers sort by code point (COLLATE "C"), as in SQLite
-- and Python, whatever the database's collation. Keyset pagination walks the composite indexes
-- newest first.
--
-- Several instances share one database (contract section 10). Work is handed out with
-- `SELECT ... FOR UPDATE SKIP LOCKED`: `claimed_by` names the instance holding a task or a
-- delivery, and that instance's lease lives on its row in `instances` (renewed by one write per
-- heartbeat, not one per claimed row). The claim columns and the instances table are in place
-- now and unused until the daemon runs on PostgreSQL.

CREATE TABLE instances (
    instance_id   text COLLATE "C" PRIMARY KEY,
    hostname      text NOT NULL,
    pid           integer NOT NULL,
    version       text NOT NULL,
    started_at    double precision NOT NULL,
    heartbeat_at  double precision NOT NULL,
    lease_until   double precision NOT NULL   -- its claims are void after this
);

-- Finding instances whose lease ran out, to take their work over.
CREATE INDEX instances_by_lease ON instances (lease_until);

CREATE TABLE tasks (
    task_id        text COLLATE "C" PRIMARY KEY,
    model          text NOT NULL,
    endpoints      json,                      -- array of endpoint names; NULL: every matching one
    callback_url   text,
    metadata       json NOT NULL,             -- object
    deadline_s     double precision,
    source         text NOT NULL,             -- TaskSource
    state          text NOT NULL,             -- TaskState
    registered_at  double precision NOT NULL,
    updated_at     double precision NOT NULL,
    upstream_state text,
    polls          integer NOT NULL DEFAULT 0,
    finished_at    double precision,
    last_error     text,
    claimed_by     text COLLATE "C"           -- instance polling it; NULL: free to claim
);

-- Resuming (and claiming) walks only the active tasks, in task_id order (keyset batches).
CREATE INDEX tasks_active ON tasks (task_id) WHERE state IN ('pending', 'processing');
-- Active tasks nobody holds: what an instance claims in batches (SKIP LOCKED).
CREATE INDEX tasks_unclaimed ON tasks (registered_at, task_id)
    WHERE state IN ('pending', 'processing') AND claimed_by IS NULL;
-- The tasks one instance holds: released or taken over when its lease runs out.
CREATE INDEX tasks_claimed ON tasks (claimed_by) WHERE claimed_by IS NOT NULL;
-- `list` newest first, with and without a state filter; the second also serves counts per state.
CREATE INDEX tasks_by_registration ON tasks (registered_at, task_id);
CREATE INDEX tasks_by_state ON tasks (state, registered_at, task_id);
-- Retention purges finished tasks oldest first.
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE state_changes (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id        text COLLATE "C" NOT NULL REFERENCES tasks (task_id),
    from_state     text NOT NULL,
    to_state       text NOT NULL,
    at             double precision NOT NULL,
    reason         text NOT NULL,
    upstream_state text
);

CREATE INDEX state_changes_by_task ON state_changes (task_id, id);

CREATE TABLE events (
    seq        bigint GENERATED ALWAYS AS IDENTITY,   -- insertion order: ties of created_at
    event_id   text COLLATE "C" PRIMARY KEY,
    task_id    text COLLATE "C" NOT NULL REFERENCES tasks (task_id),
    type       text NOT NULL,                         -- EventType
    created_at double precision NOT NULL,
    body       bytea NOT NULL                         -- the exact bytes sent on every attempt
);

CREATE INDEX events_by_task ON events (task_id, created_at, seq);

CREATE TABLE deliveries (
    delivery_id      text COLLATE "C" PRIMARY KEY,
    event_id         text COLLATE "C" NOT NULL REFERENCES events (event_id),
    task_id          text COLLATE "C" NOT NULL REFERENCES tasks (task_id),
    event_type       text NOT NULL,           -- EventType
    endpoint         text NOT NULL,
    webhook_id       text NOT NULL,
    status           text NOT NULL,           -- DeliveryStatus
    created_at       double precision NOT NULL,
    updated_at       double precision NOT NULL,
    next_attempt_at  double precision,
    url              text,
    attempts         integer NOT NULL DEFAULT 0,
    schedule_pos     integer NOT NULL DEFAULT 0,
    last_status_code integer,
    last_error       text,
    claimed_by       text COLLATE "C"   -- instance making its next attempt; NULL: free
);

-- Resuming walks only the pending deliveries, in delivery_id order.
CREATE INDEX deliveries_pending ON deliveries (delivery_id) WHERE status = 'pending';
-- Due deliveries, soonest first: what an instance claims in batches (SKIP LOCKED).
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_claimed ON deliveries (claimed_by) WHERE claimed_by IS NOT NULL;
CREATE INDEX deliveries_by_creation ON deliveries (created_at, delivery_id);
CREATE INDEX deliveries_by_status ON deliveries (status, created_at, delivery_id);
CREATE INDEX deliveries_by_task ON deliveries (task_id, created_at, delivery_id);
-- Deleting an event (retention) checks that no delivery still names it.
CREATE INDEX deliveries_by_event ON deliveries (event_id);

CREATE TABLE attempts (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id       text COLLATE "C" NOT NULL REFERENCES deliveries (delivery_id),
    number            integer NOT NULL,
    started_at        double precision NOT NULL,
    duration_ms       double precision NOT NULL,
    outcome           text NOT NULL,          -- AttemptOutcome
    status_code       integer,
    error             text,
    webhook_timestamp bigint
);

CREATE INDEX attempts_by_delivery ON attempts (delivery_id, id);

-- One row that `check_writable` bumps: a real committed write proves the database takes it.
CREATE TABLE heartbeat (
    id    integer PRIMARY KEY CHECK (id = 1),
    beats bigint NOT NULL
);
