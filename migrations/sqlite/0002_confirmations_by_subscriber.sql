-- A group of signups queues each new subscriber's confirmation email in the
-- statement list that commits the group, finding the confirmation just made
-- for that subscriber by this index instead of waiting for its id to come
-- back first: one round trip to SQLite's thread fewer per group.
CREATE INDEX confirmations_by_subscriber ON confirmations (subscriber_id);
