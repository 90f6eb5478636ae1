-- The unified trade log (spec trade-logs.md), declaratively partitioned by UTC day on the local
-- timestamp. Departures from the spec's DDL, each for tradegate's brokers:
--   * cl_ord_id and account_id are TEXT: Alpaca client order ids are the decision UUIDs and
--     broker account ids are strings ("DU1234567");
--   * symbol is added so audit queries can filter on it without parsing body;
--   * event_id (UUID v7, set by the producer) deduplicates replays of spilled batches;
--   * the partition key is local_ts_us itself (PostgreSQL cannot partition on a generated
--     column), so each partition covers [day 00:00, next day 00:00) UTC in microseconds.

CREATE SEQUENCE tradelog_id_seq AS BIGINT CACHE 1000;

CREATE TABLE tradelog (
    id              BIGINT      NOT NULL DEFAULT nextval('tradelog_id_seq'),
    event_id        UUID        NOT NULL,

    local_ts_us     BIGINT      NOT NULL,
    exchange_ts_us  BIGINT,
    local_ts        TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(local_ts_us / 1e6)) STORED,
    exchange_ts     TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(exchange_ts_us / 1e6)) STORED,

    event_type      SMALLINT    NOT NULL CHECK (event_type IN (10, 11, 12, 13, 20, 30, 31, 32, 90)),

    req_id          BIGINT,
    cl_ord_id       TEXT,
    native_ord_id   TEXT,
    market_id       BIGINT,
    account_id      TEXT,
    symbol          TEXT,

    exec_type       SMALLINT,
    ord_status      SMALLINT,
    side            SMALLINT    CHECK (side IN (1, 2)),
    is_taker        BOOLEAN,

    last_px         NUMERIC(38, 18),
    last_qty        NUMERIC(38, 18) CHECK (last_qty >= 0),
    leaves_qty      NUMERIC(38, 18) CHECK (leaves_qty >= 0),
    ord_px          NUMERIC(38, 18),
    ord_qty         NUMERIC(38, 18) CHECK (ord_qty >= 0),
    fee             NUMERIC(38, 18),

    response_status SMALLINT,
    error_code      TEXT,
    error_message   TEXT,

    source          TEXT,

    body            JSONB       NOT NULL DEFAULT '{}'::jsonb,

    PRIMARY KEY (event_id, local_ts_us)
) PARTITION BY RANGE (local_ts_us);

CREATE INDEX tradelog_local_ts_idx ON tradelog (local_ts_us);
CREATE INDEX tradelog_cl_ord_id_idx ON tradelog (cl_ord_id, local_ts_us) WHERE cl_ord_id IS NOT NULL;

-- Microseconds since the epoch at 00:00 UTC of a day.
CREATE FUNCTION tradelog_day_start_us(day DATE) RETURNS BIGINT
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT (extract(epoch FROM day::timestamp) * 1000000)::bigint
$$;

-- The name of a day's partition: tradelog_pYYYYMMDD.
CREATE FUNCTION tradelog_partition_name(day DATE) RETURNS TEXT
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT 'tradelog_p' || to_char(day, 'YYYYMMDD')
$$;

-- Creates the daily partitions for [first_day, first_day + days) that do not exist yet and
-- returns how many it created. Safe to call concurrently.
CREATE FUNCTION tradelog_ensure_partitions(first_day DATE, days INTEGER) RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    created INTEGER := 0;
    day     DATE;
BEGIN
    IF days < 1 THEN
        RAISE EXCEPTION 'tradelog_ensure_partitions: days must be at least 1, got %', days;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('tradelog_ensure_partitions'));
    FOR i IN 0 .. days - 1 LOOP
        day := first_day + i;
        IF to_regclass(tradelog_partition_name(day)) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF tradelog FOR VALUES FROM (%s) TO (%s)',
                tradelog_partition_name(day),
                tradelog_day_start_us(day),
                tradelog_day_start_us(day + 1));
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;

SELECT tradelog_ensure_partitions((now() AT TIME ZONE 'UTC')::date - 1, 9);
