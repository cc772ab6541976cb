-- A `--full-refresh` in progress: written when it starts, deleted by the
-- transaction that swaps the staging table in. While a row is here, every
-- run of the pipeline continues the refresh (into the staging table)
-- instead of writing into the live table.
CREATE TABLE IF NOT EXISTS _ingest_refresh (
    pipeline   TEXT NOT NULL PRIMARY KEY,
    run_id     INTEGER,
    started_at TEXT NOT NULL
);
