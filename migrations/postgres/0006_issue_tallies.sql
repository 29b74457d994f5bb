-- Each issue's deliveries by outcome, kept in the transaction that writes
-- each outcome (and each retry), so that the admin's issue pages read one
-- row per issue instead of counting up to a million deliveries at every
-- look. Pending (queued or in flight) is the rest: recipients - sent -
-- failed - skipped. finished_at is when the last recipient's delivery
-- ended; a retry clears it. A table of its own rather than columns on
-- issues: making an issue locks `issues` (SHARE ROW EXCLUSIVE) for its
-- whole fan-out, and an outcome write that updated `issues` would wait for
-- that, holding up every send, confirmation emails included.
CREATE TABLE issue_tallies (
    issue_id    BIGINT PRIMARY KEY REFERENCES issues (id),
    sent        BIGINT NOT NULL DEFAULT 0,
    failed      BIGINT NOT NULL DEFAULT 0,
    skipped     BIGINT NOT NULL DEFAULT 0,
    finished_at TIMESTAMPTZ
);

-- Issues already sent: counted once, here. Their failures have no time,
-- so an issue that ended is taken to have ended at its last send.
INSERT INTO issue_tallies (issue_id, sent, failed, skipped, finished_at)
SELECT i.id,
    COUNT(d.id) FILTER (WHERE d.status = 'sent'),
    COUNT(d.id) FILTER (WHERE d.status = 'failed'),
    COUNT(d.id) FILTER (WHERE d.status = 'skipped'),
    CASE WHEN COUNT(d.id) FILTER (WHERE d.status IN ('pending', 'sending')) = 0
        THEN COALESCE(MAX(d.sent_at), i.created_at)
    END
FROM issues i LEFT JOIN deliveries d ON d.issue_id = i.id
GROUP BY i.id;

-- When a delivery was failed or skipped (a send's time is sent_at);
-- unknown for those that ended before this column.
ALTER TABLE deliveries ADD COLUMN closed_at TIMESTAMPTZ;

-- The issue page lists an issue's failed and skipped deliveries by
-- (issue_id, status, id), and a retry reads its failures the same way.
-- Partial: a fan-out writes pending rows, which stay out of it, so it
-- costs the fan-out nothing (a full B-tree on issue_id nearly doubled a
-- 1M fan-out, see 0002), and it holds only the few deliveries that ended
-- unsent.
CREATE INDEX deliveries_unsent_by_issue ON deliveries (issue_id, status, id)
    WHERE status IN ('failed', 'skipped');

-- (Stop every older instance before starting this version: they would
-- write outcomes without counting them.)
