-- Run records arrive 10,000 at a time, so their per-row cost matters (`cargo bench --bench
-- ingestion`). The row-level foreign key to data_ingestion_runs costs a lookup per row (about a
-- quarter of a batch's time); the same guarantee is kept with one check per statement instead:
--   * every inserted record names an existing run (SQLSTATE 23503 otherwise, as a foreign key);
--   * runs are history and are never deleted, so no record can lose its run afterwards;
--   * a record's run never changes (records are history too).

ALTER TABLE data_ingestion_run_records
    DROP CONSTRAINT data_ingestion_run_records_data_ingestion_run_id_fkey;

-- The record is the key: (type, id, run) is unique as (run, type, id) was, and the same index
-- now also finds every run that touched a record; a narrow index on the run replaces the wide
-- (type, id) one, and the surrogate id (nothing refers to it) goes. One text index fewer per row.
ALTER TABLE data_ingestion_run_records DROP CONSTRAINT data_ingestion_run_records_unique;
DROP INDEX data_ingestion_run_records_record_idx;
ALTER TABLE data_ingestion_run_records DROP COLUMN id;
ALTER TABLE data_ingestion_run_records
    ADD CONSTRAINT data_ingestion_run_records_pkey
    PRIMARY KEY (record_type, record_id, data_ingestion_run_id);
CREATE INDEX data_ingestion_run_records_run_idx ON data_ingestion_run_records (data_ingestion_run_id);

CREATE FUNCTION data_ingestion_run_records_check_runs() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    missing BIGINT;
BEGIN
    SELECT n.data_ingestion_run_id INTO missing
    FROM (SELECT DISTINCT data_ingestion_run_id FROM inserted) n
    WHERE NOT EXISTS (SELECT 1 FROM data_ingestion_runs d WHERE d.id = n.data_ingestion_run_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'data_ingestion_run_records: run % does not exist', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER data_ingestion_run_records_check_runs
    AFTER INSERT ON data_ingestion_run_records
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION data_ingestion_run_records_check_runs();

CREATE FUNCTION refuse_history_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % refused: it is audit history', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'check_violation';
END;
$$;
CREATE TRIGGER data_ingestion_runs_no_delete
    BEFORE DELETE ON data_ingestion_runs
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_change();
CREATE TRIGGER data_ingestion_runs_no_truncate
    BEFORE TRUNCATE ON data_ingestion_runs
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_change();
CREATE TRIGGER data_ingestion_run_records_no_update
    BEFORE UPDATE ON data_ingestion_run_records
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_change();
