-- Retention that bounds storage: a day's API payloads are deleted once the day is archived
-- (`tradegate audit export`, or the trade log's retention), referenced or not, when they are
-- past `payload_retention_days`. The rows that referenced them keep the payload's id and
-- everything extracted from it; `audit_archives` says which day archive holds each id range.

CREATE TABLE audit_archives (
    day               DATE        PRIMARY KEY,
    -- the archive directory as the exporter wrote it
    dir               TEXT        NOT NULL,
    manifest_sha256   TEXT        NOT NULL,
    -- the day's payloads in the archive, and their ids
    payloads          BIGINT      NOT NULL,
    payload_first_id  BIGINT,
    payload_last_id   BIGINT,
    exported_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- when retention deleted the day's payloads from api_payloads
    payloads_purged_at TIMESTAMPTZ
);

-- A reference to a payload may now name one that lives in a day archive only: the foreign
-- keys to api_payloads go (the gateway still writes each payload before what refers to it).
-- Dropping a constraint changes no row, so no journaled hash changes.
DO $$
DECLARE
    c RECORD;
BEGIN
    FOR c IN SELECT conname, conrelid::regclass AS tab FROM pg_constraint
             WHERE contype = 'f' AND confrelid = 'api_payloads'::regclass LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', c.tab, c.conname);
    END LOOP;
END;
$$;

-- the day's payloads found by time (export, retention): a BRIN costs next to nothing per insert
CREATE INDEX api_payloads_created_brin ON api_payloads USING BRIN (created_at);
