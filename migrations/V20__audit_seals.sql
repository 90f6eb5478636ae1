-- Tamper evidence (DESIGN 3.11): every version of every audit row is hashed into an append-only
-- journal by statement-level triggers (one journal entry per statement and table, holding the
-- keys and SHA-256 hashes of the rows it wrote), and the journal is sealed into a hash chain at
-- an interval and per UTC day. `tradegate audit verify` recomputes the rows' hashes and the
-- chain and names the first row that differs from its newest journaled version.
--
-- Who wrote: the gateway's connections carry a writer key (the `tradegate.audit_writer`
-- setting, from TRADEGATE_AUDIT_KEY or [audit] writer_key_file); only its SHA-256 is stored
-- here. A journal entry written by a session without a registered key is marked
-- writer = false: a change made behind the gateway's back, reported by verify even when the
-- triggers were left on. A change made with the triggers off (session_replication_role =
-- replica) leaves a row whose hash no longer matches its journal, which verify reports too.
--
-- Row hash: SHA-256 of the row's text (row::text: NULLs and quoting unambiguous; a third of what
-- to_jsonb costs) with TimeZone UTC, DateStyle ISO, IntervalStyle postgres, bytea hex and
-- extra_float_digits 1; for the trade log, written a million rows at a time, of its stored
-- columns only (ROW(...)::text, the generated timestamps left out as they follow from
-- local_ts_us). The verify command computes both with its own
-- expressions, not with functions stored here. A migration that changes a covered table's
-- columns journals the new hashes of its rows (an 'U' entry) in the same transaction.

CREATE TABLE audit_writers (
    id            BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_sha256    BYTEA       NOT NULL UNIQUE CHECK (length(key_sha256) = 32),
    registered_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Whether this session presents a registered writer key.
CREATE FUNCTION audit_is_writer() RETURNS BOOLEAN
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM audit_writers
        WHERE key_sha256 = sha256(convert_to(
            coalesce(current_setting('tradegate.audit_writer', true), ''), 'UTF8'))
    )
$$;

-- The first key registers itself; later ones only from a session holding a registered key.
CREATE FUNCTION audit_writers_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM audit_writers) AND NOT audit_is_writer() THEN
        RAISE EXCEPTION 'audit_writers: a new writer key needs a session holding a registered one'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER audit_writers_guard BEFORE INSERT ON audit_writers
    FOR EACH ROW EXECUTE FUNCTION audit_writers_guard();
CREATE TRIGGER audit_writers_no_change BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_writers
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_change();

CREATE TABLE audit_seals (
    id         BIGINT      PRIMARY KEY CHECK (id >= 1),
    kind       TEXT        NOT NULL CHECK (kind IN ('interval', 'day', 'stop')),
    -- the UTC day a 'day' seal closes
    day        DATE        UNIQUE CHECK ((kind = 'day') = (day IS NOT NULL)),
    sealed_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    prev_root  BYTEA       CHECK (length(prev_root) = 32),
    -- sha256(prev_root || entry hash of each entry sealed here, in seq order)
    root       BYTEA       NOT NULL CHECK (length(root) = 32),
    entries    BIGINT      NOT NULL CHECK (entries >= 0),
    -- row versions those entries hold
    rows       BIGINT      NOT NULL CHECK (rows >= 0),
    first_seq  BIGINT,
    last_seq   BIGINT,
    first_at   TIMESTAMPTZ,
    last_at    TIMESTAMPTZ,
    CHECK ((id = 1) = (prev_root IS NULL))
);
CREATE TRIGGER audit_seals_no_change BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_seals
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_change();

CREATE TABLE audit_journal (
    seq        BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    table_name TEXT        NOT NULL,
    -- I insert, U update, D delete, R retired by retention (a dropped trade-log partition)
    op         CHAR(1)     NOT NULL CHECK (op IN ('I', 'U', 'D', 'R')),
    writer     BOOLEAN     NOT NULL,
    keys       TEXT[]      NOT NULL,
    -- the new versions' hashes, in keys' order (I and U); NULL for D and R
    hashes     BYTEA[],
    seal_id    BIGINT,
    CHECK ((op IN ('I', 'U')) = (hashes IS NOT NULL)),
    CHECK (hashes IS NULL OR cardinality(hashes) = cardinality(keys))
);
-- hashes do not compress: not tried
ALTER TABLE audit_journal ALTER COLUMN hashes SET STORAGE EXTERNAL;
CREATE INDEX audit_journal_unsealed ON audit_journal (seq) WHERE seal_id IS NULL;
CREATE INDEX audit_journal_seal ON audit_journal (seal_id, seq);
CREATE INDEX audit_journal_table ON audit_journal (table_name, seq);

-- The hash an entry is sealed with (verify recomputes it with the same expression, inline): its
-- fields as text, the keys as a JSON array, then the row hashes' 32 bytes each.
CREATE FUNCTION audit_entry_hash(j audit_journal) RETURNS BYTEA
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(convert_to(concat_ws('|', j.seq,
        (extract(epoch FROM j.at) * 1000000)::bigint, j.table_name, j.op, j.writer,
        to_jsonb(j.keys)::text), 'UTF8')
        || coalesce((SELECT string_agg(h, ''::bytea ORDER BY o)
                     FROM unnest(j.hashes) WITH ORDINALITY u(h, o)), ''::bytea))
$$;

-- An entry says who wrote it and when, whoever inserts it; it can only ever be sealed.
CREATE FUNCTION audit_journal_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.writer := audit_is_writer();
        NEW.at := clock_timestamp();
        NEW.seal_id := NULL;
        RETURN NEW;
    END IF;
    IF OLD.seal_id IS NULL AND NEW.seal_id IS NOT NULL
       AND (NEW.seq, NEW.at, NEW.table_name, NEW.op, NEW.writer, NEW.keys, NEW.hashes)
           IS NOT DISTINCT FROM
           (OLD.seq, OLD.at, OLD.table_name, OLD.op, OLD.writer, OLD.keys, OLD.hashes)
       AND audit_is_writer() THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_journal: % refused: the journal is append-only', TG_OP
        USING ERRCODE = 'check_violation';
END;
$$;

-- The journal trigger: one entry per statement and table. Keyed by id on every covered table but
-- the ingestion run records, keyed by run/type/id. (PL/pgSQL plans a trigger function's
-- statements per table, so the static `n.id` below is planned only where it exists.)
CREATE FUNCTION audit_journal_rows() RETURNS trigger
LANGUAGE plpgsql
SET TimeZone = 'UTC' SET DateStyle = 'ISO, MDY' SET IntervalStyle = 'postgres'
SET bytea_output = 'hex' SET extra_float_digits = 1 AS $$
BEGIN
    IF TG_TABLE_NAME = 'data_ingestion_run_records' THEN
        IF TG_OP = 'DELETE' THEN
            INSERT INTO audit_journal (table_name, op, writer, keys)
            SELECT TG_TABLE_NAME, 'D', false,
                   array_agg(to_jsonb(ARRAY[o.data_ingestion_run_id::text, o.record_type, o.record_id])::text)
            FROM old_rows o HAVING count(*) > 0;
        ELSE
            INSERT INTO audit_journal (table_name, op, writer, keys, hashes)
            SELECT TG_TABLE_NAME, left(TG_OP, 1), false,
                   array_agg(to_jsonb(ARRAY[n.data_ingestion_run_id::text, n.record_type, n.record_id])::text),
                   array_agg(sha256(textsend(n::text)))
            FROM new_rows n HAVING count(*) > 0;
        END IF;
    ELSIF TG_TABLE_NAME = 'tradelog' AND TG_OP <> 'DELETE' THEN
        INSERT INTO audit_journal (table_name, op, writer, keys, hashes)
        SELECT TG_TABLE_NAME, left(TG_OP, 1), false, array_agg(n.id::text),
               array_agg(sha256(textsend((ROW(n.id, n.event_id, n.local_ts_us, n.exchange_ts_us, n.event_type, n.req_id,
                   n.cl_ord_id, n.native_ord_id, n.market_id, n.account_id, n.symbol, n.exec_type,
                   n.ord_status, n.side, n.is_taker, n.last_px, n.last_qty, n.leaves_qty, n.ord_px,
                   n.ord_qty, n.fee, n.response_status, n.error_code, n.error_message, n.source,
                   n.body, n.response_meta))::text)))
        FROM new_rows n HAVING count(*) > 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO audit_journal (table_name, op, writer, keys)
        SELECT TG_TABLE_NAME, 'D', false, array_agg(o.id::text)
        FROM old_rows o HAVING count(*) > 0;
    ELSE
        INSERT INTO audit_journal (table_name, op, writer, keys, hashes)
        SELECT TG_TABLE_NAME, left(TG_OP, 1), false, array_agg(n.id::text),
               array_agg(sha256(textsend(n::text)))
        FROM new_rows n HAVING count(*) > 0;
    END IF;
    RETURN NULL;
END;
$$;

-- The trail as it stands is its own first journal entries, table by table, at most about
-- 100,000 rows each (written by this migration, before the journal's guard exists, as the
-- gateway's own).
DO $$
DECLARE
    t TEXT;
BEGIN
    -- hashed as the trigger and verify hash them, whatever this server's defaults
    PERFORM set_config('TimeZone', 'UTC', true);
    PERFORM set_config('DateStyle', 'ISO, MDY', true);
    PERFORM set_config('IntervalStyle', 'postgres', true);
    PERFORM set_config('bytea_output', 'hex', true);
    PERFORM set_config('extra_float_digits', '1', true);
    FOREACH t IN ARRAY ARRAY['api_payloads', 'trade_decisions', 'trade_executions',
        'order_state_corrections', 'broker_order_events', 'order_rejects', 'data_ingestion_runs',
        'api_call_logs', 'broker_trades', 'broker_fills', 'operator_actions'] LOOP
        EXECUTE format('INSERT INTO audit_journal (table_name, op, writer, keys, hashes)
            SELECT %L, ''I'', true, array_agg(n.id::text ORDER BY n.id),
                   array_agg(sha256(textsend(n::text))
                             ORDER BY n.id)
            FROM %I n GROUP BY n.id / 100000', t, t);
    END LOOP;
    INSERT INTO audit_journal (table_name, op, writer, keys, hashes)
    SELECT 'tradelog', 'I', true, array_agg(n.id::text),
           array_agg(sha256(textsend((ROW(n.id, n.event_id, n.local_ts_us, n.exchange_ts_us, n.event_type, n.req_id,
                   n.cl_ord_id, n.native_ord_id, n.market_id, n.account_id, n.symbol, n.exec_type,
                   n.ord_status, n.side, n.is_taker, n.last_px, n.last_qty, n.leaves_qty, n.ord_px,
                   n.ord_qty, n.fee, n.response_status, n.error_code, n.error_message, n.source,
                   n.body, n.response_meta))::text)))
    FROM tradelog n GROUP BY n.id / 100000;
    INSERT INTO audit_journal (table_name, op, writer, keys, hashes)
    SELECT 'data_ingestion_run_records', 'I', true,
           array_agg(to_jsonb(ARRAY[n.data_ingestion_run_id::text, n.record_type, n.record_id])::text),
           array_agg(sha256(textsend(n::text)))
    FROM data_ingestion_run_records n GROUP BY n.data_ingestion_run_id / 100;
END;
$$;

CREATE TRIGGER audit_journal_guard BEFORE INSERT OR UPDATE ON audit_journal
    FOR EACH ROW EXECUTE FUNCTION audit_journal_guard();
CREATE TRIGGER audit_journal_no_delete BEFORE DELETE OR TRUNCATE ON audit_journal
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_change();

DO $$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['api_payloads', 'trade_decisions', 'trade_executions',
        'order_state_corrections', 'broker_order_events', 'order_rejects', 'data_ingestion_runs',
        'data_ingestion_run_records', 'api_call_logs', 'broker_trades', 'broker_fills', 'tradelog',
        'operator_actions', 'audit_writers'] LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION audit_journal_rows()', t || '_journal_insert', t);
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %I REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION audit_journal_rows()', t || '_journal_update', t);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION audit_journal_rows()', t || '_journal_delete', t);
    END LOOP;
END;
$$;

-- Seals every committed entry not sealed yet, chained to the newest seal; returns the new seal's
-- id, or NULL when there was nothing to seal (a 'day' or 'stop' seal is written even then).
-- Serialised by an advisory lock, so two gateways on one database chain one sequence of seals.
CREATE FUNCTION audit_seal(seal_kind TEXT, seal_day DATE) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    last      audit_seals;
    new_id    BIGINT;
    covered   RECORD;
BEGIN
    IF NOT audit_is_writer() THEN
        RAISE EXCEPTION 'audit_seal: only a session holding a registered writer key seals'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('tradegate.audit_seal'));
    IF seal_kind = 'day' AND EXISTS (SELECT 1 FROM audit_seals WHERE day = seal_day) THEN
        RETURN NULL;
    END IF;
    SELECT * INTO last FROM audit_seals ORDER BY id DESC LIMIT 1;
    new_id := coalesce(last.id, 0) + 1;
    WITH sealed AS (
        UPDATE audit_journal j SET seal_id = new_id WHERE j.seal_id IS NULL
        RETURNING j.*
    )
    SELECT count(*) AS entries, coalesce(sum(cardinality(s.keys)), 0) AS rows,
           min(s.seq) AS first_seq, max(s.seq) AS last_seq,
           min(s.at) AS first_at, max(s.at) AS last_at,
           string_agg(audit_entry_hash(s::audit_journal), ''::bytea ORDER BY s.seq) AS hashes
    INTO covered FROM sealed s;
    IF covered.entries = 0 AND seal_kind = 'interval' THEN
        RETURN NULL;
    END IF;
    INSERT INTO audit_seals (id, kind, day, prev_root, root, entries, rows, first_seq, last_seq,
                             first_at, last_at)
    VALUES (new_id, seal_kind, seal_day, last.root,
            sha256(coalesce(last.root, ''::bytea) || coalesce(covered.hashes, ''::bytea)),
            covered.entries, covered.rows, covered.first_seq, covered.last_seq,
            covered.first_at, covered.last_at);
    RETURN new_id;
END;
$$;

-- Every function above resolves names in this schema and the catalog only: a session's own
-- temporary table named audit_writers or audit_journal must not stand in for ours. The
-- journal is written, and sealed, with its owner's rights (SECURITY DEFINER): a writer role
-- needs no privilege on the journal, and a role without one cannot forge an entry.
ALTER FUNCTION audit_is_writer() SECURITY DEFINER;
ALTER FUNCTION audit_journal_rows() SECURITY DEFINER;
ALTER FUNCTION audit_seal(text, date) SECURITY DEFINER;
DO $$
DECLARE
    f TEXT;
BEGIN
    FOREACH f IN ARRAY ARRAY['audit_is_writer()', 'audit_writers_guard()',
        'audit_entry_hash(audit_journal)', 'audit_journal_guard()', 'audit_journal_rows()',
        'audit_seal(text, date)'] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp',
            f, current_schema());
    END LOOP;
END;
$$;
