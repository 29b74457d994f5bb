-- Each issue's deliveries by outcome, kept in the transaction that writes
-- each outcome (and each retry), so that the admin's issue pages read one
-- row per issue instead of counting up to a million deliveries at every
-- look. Pending (queued or in flight) is the rest: recipients - sent -
-- failed - skipped. finished_at is when the last recipient's delivery
-- ended; a retry clears it. A table of its own rather than columns on
-- issues, as on PostgreSQL, where making an issue locks `issues` for its
-- whole fan-out and outcome writes must not wait for that.
CREATE TABLE issue_tallies (
    issue_id    INTEGER PRIMARY KEY REFERENCES issues (id),
    sent        INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    skipped     INTEGER NOT NULL DEFAULT 0,
    finished_at INTEGER
);

-- Issues already sent: counted once, here. Their failures have no time,
-- so an issue that ended is taken to have ended at its last send.
INSERT INTO issue_tallies (issue_id, sent, failed, skipped, finished_at)
SELECT i.id,
    (SELECT COUNT(*) FROM deliveries d WHERE d.issue_id = i.id AND d.status = 'sent'),
    (SELECT COUNT(*) FROM deliveries d WHERE d.issue_id = i.id AND d.status = 'failed'),
    (SELECT COUNT(*) FROM deliveries d WHERE d.issue_id = i.id AND d.status = 'skipped'),
    CASE WHEN NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.issue_id = i.id
                              AND d.status IN ('pending', 'sending'))
        THEN COALESCE((SELECT MAX(d.sent_at) FROM deliveries d WHERE d.issue_id = i.id),
                      i.created_at)
    END
FROM issues i;

-- When a delivery was failed or skipped (a send's time is sent_at);
-- unknown for those that ended before this column.
ALTER TABLE deliveries ADD COLUMN closed_at INTEGER;

-- The issue page lists an issue's failed and skipped deliveries by
-- (issue_id, status, id): deliveries_by_issue (issue_id, status) ends in
-- the rowid, which is id, so on SQLite it already is that index.

-- (Stop every older instance before starting this version: they would
-- write outcomes without counting them.)
