-- The people who may log in to the admin web UI (`tidings admin add`), and
-- their sessions. A session is kept here, not in the daemon's memory, so
-- that every instance honours it. Only the SHA-256 of a session token is
-- stored: a copy of the database does not let anyone log in. Times are
-- epoch milliseconds.
CREATE TABLE admin_users (
    id            INTEGER PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    -- An argon2id PHC string: algorithm, parameters, salt and hash.
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE admin_sessions (
    token_hash   BLOB PRIMARY KEY,
    admin_id     INTEGER NOT NULL REFERENCES admin_users (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    -- The absolute end; inactivity ends a session earlier (see
    -- `domain::admin::session_state`).
    expires_at   INTEGER NOT NULL
);

CREATE INDEX admin_sessions_by_admin ON admin_sessions (admin_id);
