-- The dashboard's 90-day growth chart counts confirmations and
-- unsubscribes per day: each from an index range, not the whole list.
CREATE INDEX subscribers_by_confirmed_at ON subscribers (confirmed_at)
    WHERE confirmed_at IS NOT NULL;
CREATE INDEX subscribers_by_unsubscribed_at ON subscribers (unsubscribed_at)
    WHERE unsubscribed_at IS NOT NULL;
