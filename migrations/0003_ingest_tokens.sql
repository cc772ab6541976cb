-- OAuth2: the refresh token a server rotated, written the moment it arrives
-- (the one it replaced is spent). `seed` is the SHA-256 of the configured
-- refresh_token it descends from: a new configured token wins over it.
CREATE TABLE IF NOT EXISTS _ingest_tokens (
    pipeline   TEXT NOT NULL PRIMARY KEY,
    seed       TEXT NOT NULL,
    token      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
