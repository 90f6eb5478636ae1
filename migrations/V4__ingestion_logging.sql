-- Data ingestion logging: a run is born running (its state machine starts there), alerts can be
-- raised at most once per subject, and the run queries of the IngestionLogger are index-backed.

-- running -> completed | failed is the only path, so a run cannot be inserted as finished.
CREATE FUNCTION data_ingestion_runs_guard_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'running' THEN
        RAISE EXCEPTION 'data_ingestion_run % must start as running, not %', NEW.run_id, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER data_ingestion_runs_guard_insert
    BEFORE INSERT ON data_ingestion_runs
    FOR EACH ROW EXECUTE FUNCTION data_ingestion_runs_guard_insert();

CREATE INDEX data_ingestion_runs_started_idx ON data_ingestion_runs (started_at);
CREATE INDEX data_ingestion_runs_status_started_idx ON data_ingestion_runs (status, started_at);

-- An alert that must fire once per subject (e.g. the zero-records alert of one run) carries a
-- dedupe key; a second insert with the same kind and key is refused.
ALTER TABLE alerts ADD COLUMN dedupe_key TEXT;
CREATE UNIQUE INDEX alerts_kind_dedupe_key ON alerts (kind, dedupe_key) WHERE dedupe_key IS NOT NULL;
