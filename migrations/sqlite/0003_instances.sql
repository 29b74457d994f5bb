-- Every process that sends (a `serve`, or a `send-now` while it sends)
-- has a row here under its lease owner name, and writes heartbeat_at every
-- two seconds. The claims of an owner with no heartbeat in the last ten
-- seconds, or with no row at all, go back to `pending` at once, instead of
-- waiting for their lease to expire. Times are epoch milliseconds.
CREATE TABLE instances (
    owner        TEXT PRIMARY KEY,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);

-- From now on an attempt is charged when its outcome is written, not when
-- the row is claimed, so a claim taken back unsent costs nothing. The rows
-- leased as this runs were charged when they were claimed: refund them.
-- (Stop every older instance before starting this version.)
UPDATE deliveries SET attempts = attempts - 1 WHERE status = 'sending' AND attempts > 0;
