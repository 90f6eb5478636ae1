-- What an IBKR sync could not store is kept with the sync, never dropped: each refused
-- execution (an unknown zone name, a zone-less time without a known login zone, an unknown
-- side, ...) with its code and the record TWS sent, and the counts of what the sync noticed.
ALTER TABLE sync_runs
    ADD COLUMN rejected_count              INTEGER NOT NULL DEFAULT 0 CHECK (rejected_count >= 0),
    ADD COLUMN rejected_executions         JSONB   NOT NULL DEFAULT '[]'::jsonb
        CHECK (jsonb_typeof(rejected_executions) = 'array'),
    ADD COLUMN unrecognised_exec_ids_count INTEGER NOT NULL DEFAULT 0
        CHECK (unrecognised_exec_ids_count >= 0),
    ADD COLUMN late_commissions_count      INTEGER NOT NULL DEFAULT 0
        CHECK (late_commissions_count >= 0),
    ADD COLUMN warnings                    TEXT[]  NOT NULL DEFAULT '{}';
