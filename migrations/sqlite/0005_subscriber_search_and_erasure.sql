-- The admin's subscriber pages (issue 20): searching a large list, a
-- subscriber's emails, and erasing a subscriber's personal data.

-- When the operator erased the record (see `domain::erasure`): its address
-- is then `erased:<id>`, its name NULL, and it is left out of every list.
ALTER TABLE subscribers ADD COLUMN erased_at INTEGER;

-- A search is a prefix of a lowercased address, name or domain, read as a
-- range per status (`domain::subscriber_search`): with the status first,
-- a filtered page reads a page of entries even when that status is rare.
-- The rowid ends every entry, so a range comes in (key, id) order.
CREATE INDEX subscribers_search_email ON subscribers (status, lower(email));
CREATE INDEX subscribers_search_domain
    ON subscribers (status, substr(lower(email), instr(email, '@')));
CREATE INDEX subscribers_search_name ON subscribers (status, lower(name))
    WHERE name IS NOT NULL;

-- A subscriber's emails: issue deliveries are found by
-- deliveries_one_per_subscriber_and_post (post_id set), confirmations by
-- this one. It holds the few rows without a post only, so an issue's
-- fan-out writes nothing more.
CREATE INDEX deliveries_unposted_by_subscriber ON deliveries (subscriber_id)
    WHERE post_id IS NULL;

-- The consent log stays append-only, but for one change: an erasure may
-- blank an event's personal data (address, IP, user agent, and a detail
-- that may quote the address), leaving its kind and time.
DROP TRIGGER consent_events_append_only_update;
CREATE TRIGGER consent_events_append_only_update BEFORE UPDATE ON consent_events
WHEN NOT (
    NEW.id = OLD.id
    AND NEW.subscriber_id = OLD.subscriber_id
    AND NEW.kind = OLD.kind
    AND NEW.occurred_at = OLD.occurred_at
    AND NEW.email = 'erased:' || OLD.subscriber_id
    AND NEW.ip IS NULL
    AND NEW.user_agent IS NULL
    AND (NEW.detail IS NULL OR NEW.detail IS OLD.detail)
)
BEGIN
    SELECT RAISE(ABORT, 'consent_events is append-only (an erasure may only blank personal data)');
END;
