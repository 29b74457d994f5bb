-- Outcomes and released claims are fenced on lease_owner alone (see
-- `record_outcomes` in the PostgreSQL store), which relies on this rule:
-- a delivery has a lease owner exactly while it is being sent. The store
-- has always kept to it; here the table enforces it.
ALTER TABLE deliveries ADD CONSTRAINT deliveries_owned_only_while_sending
    CHECK ((status = 'sending') = (lease_owner IS NOT NULL));
