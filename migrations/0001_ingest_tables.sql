-- ingest's own tables, in the same database as the data they describe.

-- Where each partition's walk continues. A row is written in the same
-- transaction as the rows of every batch; a completed run deletes its rows.
CREATE TABLE IF NOT EXISTS _ingest_state (
    pipeline   TEXT    NOT NULL,
    partition  TEXT    NOT NULL DEFAULT '',
    resume     TEXT,                        -- JSON resume point; NULL once the walk is done
    done       INTEGER NOT NULL DEFAULT 0,
    run_id     INTEGER,
    updated_at TEXT    NOT NULL,
    PRIMARY KEY (pipeline, partition)
);

-- Incremental marks. `value` is the largest cursor of the last completed
-- run (what the next run asks from); `pending` is the largest cursor committed
-- by the run in progress, promoted to `value` when that run completes.
CREATE TABLE IF NOT EXISTS _ingest_marks (
    pipeline     TEXT NOT NULL PRIMARY KEY,
    cursor_field TEXT NOT NULL,
    value        TEXT,
    pending      TEXT,
    updated_at   TEXT NOT NULL
);

-- One row per run.
CREATE TABLE IF NOT EXISTS _ingest_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline    TEXT    NOT NULL,
    started_at  TEXT    NOT NULL,
    ended_at    TEXT,
    status      TEXT    NOT NULL,           -- running | done | failed | interrupted | killed
    pages       INTEGER NOT NULL DEFAULT 0,
    records     INTEGER NOT NULL DEFAULT 0,
    retries     INTEGER NOT NULL DEFAULT 0,
    rejects     INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    pid         INTEGER
);
CREATE INDEX IF NOT EXISTS _ingest_runs_by_pipeline ON _ingest_runs (pipeline, id);

-- What was skipped and why.
CREATE TABLE IF NOT EXISTS _ingest_rejects (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     INTEGER,
    pipeline   TEXT NOT NULL,
    partition  TEXT NOT NULL DEFAULT '',
    url        TEXT,
    status     INTEGER,
    reason     TEXT NOT NULL,
    record     TEXT,
    created_at TEXT NOT NULL
);
