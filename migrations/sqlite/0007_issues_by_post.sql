-- The admin's list of sent posts links each to the issue it went out in:
-- the issue that names it (broadcast), or else the sequence issue made at
-- the instant it was first sent (its sent_at is that issue's created_at).
-- Both are one look-up here instead of a scan of every issue per post.
CREATE INDEX issues_by_post ON issues (post_id, created_at, id);
