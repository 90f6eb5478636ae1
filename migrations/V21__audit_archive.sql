-- Day archives read back (`tradegate audit import DIR`): the `archive` schema holds one table
-- per archived audit table with the same columns (a migration that adds a column to a covered
-- table adds it here too), the journal entries and seals that cover them, and one row per
-- imported day with its manifest. The tables are read-only: only the import, in a session
-- holding the writer key, writes them (statement triggers refuse everyone else, the owner
-- included), and nothing ever updates or deletes an archived row.

CREATE SCHEMA archive;

CREATE TABLE archive.days (
    day         DATE        PRIMARY KEY,
    imported_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- where the archive was read from
    source      TEXT        NOT NULL,
    manifest    JSONB       NOT NULL
);

-- LIKE copies the columns, their types and NOT NULL, not defaults, identities or generated
-- expressions: an archived row is stored exactly as it was exported
DO $$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['audit_writers', 'operator_actions', 'data_ingestion_runs',
        'data_ingestion_run_records', 'api_payloads', 'api_call_logs', 'trade_decisions',
        'trade_executions', 'order_state_corrections', 'broker_order_events', 'order_rejects',
        'broker_trades', 'broker_fills', 'tradelog', 'audit_journal', 'audit_seals'] LOOP
        EXECUTE format('CREATE TABLE archive.%I (LIKE %I.%I)', t, current_schema(), t);
    END LOOP;
END;
$$;

-- what the reports look archived rows up by
CREATE UNIQUE INDEX archive_audit_journal_seq ON archive.audit_journal (seq);
CREATE UNIQUE INDEX archive_audit_seals_id ON archive.audit_seals (id);
CREATE INDEX archive_trade_decisions_decision_id ON archive.trade_decisions (decision_id);
CREATE INDEX archive_trade_decisions_symbol ON archive.trade_decisions (symbol, created_at);
CREATE INDEX archive_trade_executions_decision ON archive.trade_executions (trade_decision_id);
CREATE INDEX archive_api_payloads_id ON archive.api_payloads (id);
CREATE INDEX archive_api_call_logs_run ON archive.api_call_logs (data_ingestion_run_id);
CREATE INDEX archive_data_ingestion_runs_id ON archive.data_ingestion_runs (id);
CREATE INDEX archive_broker_order_events_decision ON archive.broker_order_events (trade_decision_id);
CREATE INDEX archive_tradelog_order ON archive.tradelog (cl_ord_id, local_ts_us);
CREATE INDEX archive_tradelog_symbol ON archive.tradelog (symbol, local_ts_us);

CREATE FUNCTION archive_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND audit_is_writer()
       AND current_setting('tradegate.archive_import', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'archive.%: archived rows are read-only (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION archive_guard() SET search_path = pg_catalog, %I, pg_temp',
        current_schema());
END;
$$;

DO $$
DECLARE
    t TEXT;
BEGIN
    FOR t IN SELECT c.relname FROM pg_class c
             WHERE c.relnamespace = 'archive'::regnamespace AND c.relkind = 'r' LOOP
        EXECUTE format('CREATE TRIGGER archive_read_only BEFORE INSERT OR UPDATE OR DELETE OR '
            'TRUNCATE ON archive.%I FOR EACH STATEMENT EXECUTE FUNCTION %I.archive_guard()',
            t, current_schema());
    END LOOP;
END;
$$;
