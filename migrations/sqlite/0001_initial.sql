-- Times are Unix epoch milliseconds (INTEGER), so comparisons are exact.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE subscribers (
    id                        INTEGER PRIMARY KEY,
    email                     TEXT NOT NULL UNIQUE,
    name                      TEXT,
    status                    TEXT NOT NULL
        CHECK (status IN ('pending', 'confirmed', 'unsubscribed', 'bounced')),
    bounce_count              INTEGER NOT NULL DEFAULT 0,
    created_at                INTEGER NOT NULL,
    confirmed_at              INTEGER,
    unsubscribed_at           INTEGER,
    last_confirmation_sent_at INTEGER
);
CREATE INDEX subscribers_by_status ON subscribers (status, id);

CREATE TABLE confirmations (
    id            INTEGER PRIMARY KEY,
    subscriber_id INTEGER NOT NULL REFERENCES subscribers (id),
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER
);

-- Consent is evidence: rows are only ever added.
CREATE TABLE consent_events (
    id            INTEGER PRIMARY KEY,
    subscriber_id INTEGER NOT NULL REFERENCES subscribers (id),
    email         TEXT NOT NULL,
    kind          TEXT NOT NULL,
    occurred_at   INTEGER NOT NULL,
    ip            TEXT,
    user_agent    TEXT,
    detail        TEXT
);
CREATE INDEX consent_events_by_subscriber ON consent_events (subscriber_id, id);
CREATE TRIGGER consent_events_append_only_update BEFORE UPDATE ON consent_events
BEGIN
    SELECT RAISE(ABORT, 'consent_events is append-only');
END;
CREATE TRIGGER consent_events_append_only_delete BEFORE DELETE ON consent_events
BEGIN
    SELECT RAISE(ABORT, 'consent_events is append-only');
END;

CREATE TABLE posts (
    id            INTEGER PRIMARY KEY,
    subject       TEXT NOT NULL,
    body_markdown TEXT NOT NULL,
    position      INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('queued', 'sent')),
    created_at    INTEGER NOT NULL,
    sent_at       INTEGER
);
CREATE INDEX posts_by_position ON posts (position, id);

-- One row per slot: the unique slot_key is what makes a tick idempotent
-- across restarts, DST repeats and several instances.
CREATE TABLE issues (
    id         INTEGER PRIMARY KEY,
    slot_key   TEXT NOT NULL UNIQUE,
    slot_at    INTEGER,
    mode       TEXT NOT NULL CHECK (mode IN ('broadcast', 'sequence')),
    post_id    INTEGER REFERENCES posts (id),
    number     INTEGER NOT NULL,
    recipients INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

-- The outbox: confirmation emails and issue emails alike.
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('confirmation', 'issue')),
    -- 0 for confirmations, 1 for issues: a signup never waits behind a big send.
    priority        INTEGER NOT NULL,
    subscriber_id   INTEGER NOT NULL REFERENCES subscribers (id),
    issue_id        INTEGER REFERENCES issues (id),
    post_id         INTEGER REFERENCES posts (id),
    confirmation_id INTEGER REFERENCES confirmations (id),
    message_id      TEXT NOT NULL,
    status          TEXT NOT NULL
        CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'skipped')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    last_error      TEXT,
    smtp_reply      TEXT,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER
);
-- Nobody gets the same post twice, whatever the mode.
CREATE UNIQUE INDEX deliveries_one_per_subscriber_and_post
    ON deliveries (subscriber_id, post_id) WHERE post_id IS NOT NULL;
CREATE INDEX deliveries_due ON deliveries (priority, next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE status = 'sending';
CREATE INDEX deliveries_by_issue ON deliveries (issue_id, status);
