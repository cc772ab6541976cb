-- OAuth2: the refresh token a server rotated, written the moment it arrives
-- (the one it replaced is spent). `seed` is the SHA-256 of the configured
-- refresh_token it descends from: a new configured token wins over it.
CREATE TABLE IF NOT EXISTS ingest.tokens (
    pipeline   text        PRIMARY KEY,
    seed       text        NOT NULL,
    token      text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
