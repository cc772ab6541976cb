-- A file sink's committed length (kind = "jsonl"), written in every batch's
-- transaction with the resume state: a resumed run cuts the file back to it,
-- so what a killed run wrote past its last commit is never kept twice.
-- `staged`: the length is of the staging file (replace, --full-refresh).
CREATE TABLE IF NOT EXISTS _ingest_files (
    pipeline   TEXT NOT NULL PRIMARY KEY,
    length     INTEGER NOT NULL,
    staged     INTEGER NOT NULL DEFAULT 0,
    run_id     INTEGER,
    updated_at TEXT NOT NULL
);
