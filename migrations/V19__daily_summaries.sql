-- The daily summary as the Reporter delivers it: built once per trading day at
-- [reporter] daily_summary_at (in daily_summary_timezone), stored, and sent to the webhook.
-- One row per day, so a restart neither builds a day twice nor skips it; a delivery is claimed
-- (claimed_until) so that two gateways on one database do not both send it, and a failed one
-- is retried later (next_attempt_at, backing off; attempts, last_error) until it succeeds or
-- gives up.
CREATE TABLE daily_summaries (
    day          DATE        PRIMARY KEY,
    summary      JSONB       NOT NULL,
    text         TEXT        NOT NULL,
    built_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at TIMESTAMPTZ,
    attempts     INTEGER     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error   TEXT,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    claimed_until   TIMESTAMPTZ
);
