-- ingest's own tables in a PostgreSQL database, in the schema `ingest`:
-- the same ledger as SQLite's (migrations/0001, 0002) plus the tables of
-- shared runs. Run by the sink when `ingest.partitions` is missing, under an
-- advisory lock, so processes that start together create them once.
CREATE SCHEMA IF NOT EXISTS ingest;

-- Where each partition's walk continues, written in every batch's transaction.
CREATE TABLE IF NOT EXISTS ingest.state (
    pipeline   text        NOT NULL,
    partition  text        NOT NULL DEFAULT '',
    resume     text,                         -- JSON resume point; NULL once the walk is done
    done       boolean     NOT NULL DEFAULT false,
    run_id     bigint,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, partition)
);

-- Incremental marks: `value` of the last completed run, `pending` of the one in progress.
CREATE TABLE IF NOT EXISTS ingest.marks (
    pipeline     text        PRIMARY KEY,
    cursor_field text        NOT NULL,
    value        text,
    pending      text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- One row per process's run. `backend_pid` is the writer's server process:
-- a run marked running whose backend is gone was killed.
CREATE TABLE IF NOT EXISTS ingest.runs (
    id          bigserial   PRIMARY KEY,
    pipeline    text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz,
    status      text        NOT NULL,        -- running | done | failed | interrupted | killed
    pages       bigint      NOT NULL DEFAULT 0,
    records     bigint      NOT NULL DEFAULT 0,
    retries     bigint      NOT NULL DEFAULT 0,
    rejects     bigint      NOT NULL DEFAULT 0,
    error       text,
    pid         bigint,
    host        text,
    backend_pid integer,
    shared_run  bigint
);
CREATE INDEX IF NOT EXISTS runs_by_pipeline ON ingest.runs (pipeline, id);

-- What was skipped and why.
CREATE TABLE IF NOT EXISTS ingest.rejects (
    id         bigserial   PRIMARY KEY,
    run_id     bigint,
    pipeline   text        NOT NULL,
    partition  text        NOT NULL DEFAULT '',
    url        text,
    status     integer,
    reason     text        NOT NULL,
    record     text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS rejects_by_pipeline ON ingest.rejects (pipeline, id);

-- A `--full-refresh` in progress (see migrations/0002_ingest_refresh.sql).
CREATE TABLE IF NOT EXISTS ingest.refresh (
    pipeline   text        PRIMARY KEY,
    run_id     bigint,
    started_at timestamptz NOT NULL DEFAULT now()
);

-- A shared run in progress: every process of the pipeline joins it.
CREATE TABLE IF NOT EXISTS ingest.shared_runs (
    pipeline   text        PRIMARY KEY,
    id         bigserial,
    staged     boolean     NOT NULL,         -- loading a staging table (replace, --full-refresh)
    started_at timestamptz NOT NULL DEFAULT now()
);

-- The partitions of a shared run, claimed with FOR UPDATE SKIP LOCKED under
-- a lease (`owner`, `token`, `lease_until`) that the owner's heartbeat
-- renews; every batch commit checks its token (fencing).
CREATE TABLE IF NOT EXISTS ingest.partitions (
    pipeline    text        NOT NULL,
    partition   text        NOT NULL,
    seq         bigint      NOT NULL,
    owner       text,
    token       bigint,
    lease_until timestamptz,
    claims      integer     NOT NULL DEFAULT 0,
    done        boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (pipeline, partition)
);
CREATE INDEX IF NOT EXISTS partitions_to_claim ON ingest.partitions (pipeline, seq) WHERE NOT done;
