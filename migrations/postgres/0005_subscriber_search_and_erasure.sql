-- The PostgreSQL twin of migrations/sqlite/0005_subscriber_search_and_erasure.sql:
-- searching a large list, a subscriber's emails, and erasing a
-- subscriber's personal data.

-- When the operator erased the record (see `domain::erasure`): its address
-- is then `erased:<id>`, its name NULL, and it is left out of every list.
ALTER TABLE subscribers ADD COLUMN erased_at TIMESTAMPTZ;

-- A search is a prefix of a lowercased address, name or domain, read as a
-- range per status (`domain::subscriber_search`). COLLATE "C" makes the
-- keys compare bytewise, as SQLite's do, so a prefix is one contiguous
-- range (a language's collation may sort `a.b` between `ab` and `ac`), and
-- makes lower() fold ASCII only, as SQLite's does.
CREATE INDEX subscribers_search_email
    ON subscribers (status, lower(email COLLATE "C"), id);
CREATE INDEX subscribers_search_domain
    ON subscribers (status, substr(lower(email COLLATE "C"), strpos(email, '@')), id);
CREATE INDEX subscribers_search_name
    ON subscribers (status, lower(name COLLATE "C"), id) WHERE name IS NOT NULL;

-- A subscriber's emails: issue deliveries are found by
-- deliveries_one_per_subscriber_and_post (post_id set), confirmations by
-- this one. It holds the few rows without a post only, so an issue's
-- fan-out writes nothing more.
CREATE INDEX deliveries_unposted_by_subscriber ON deliveries (subscriber_id)
    WHERE post_id IS NULL;

-- The consent log stays append-only, but for one change: an erasure may
-- blank an event's personal data (address, IP, user agent, and a detail
-- that may quote the address), leaving its kind and time.
CREATE FUNCTION consent_events_erasure_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id = OLD.id
        AND NEW.subscriber_id = OLD.subscriber_id
        AND NEW.kind = OLD.kind
        AND NEW.occurred_at = OLD.occurred_at
        AND NEW.email = 'erased:' || OLD.subscriber_id
        AND NEW.ip IS NULL
        AND NEW.user_agent IS NULL
        AND (NEW.detail IS NULL OR NEW.detail IS NOT DISTINCT FROM OLD.detail)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'consent_events is append-only (an erasure may only blank personal data)';
END;
$$;
DROP TRIGGER consent_events_append_only_update ON consent_events;
CREATE TRIGGER consent_events_append_only_update BEFORE UPDATE ON consent_events
    FOR EACH ROW EXECUTE FUNCTION consent_events_erasure_only();
