-- The audit chain of the trade-outbox spec: API payloads, data ingestion runs and their records,
-- API call logs, alerts, trade decisions (the outbox) and trade executions.
-- Money and quantities are NUMERIC; every status column is checked here, not only in Rust.

CREATE TABLE api_payloads (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- single-table inheritance discriminator
    type        TEXT        NOT NULL CHECK (type IN ('ApiRequest', 'ApiResponse')),
    payload     JSONB       NOT NULL,
    source      TEXT        NOT NULL CHECK (source <> ''),
    captured_at TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX api_payloads_payload_gin ON api_payloads USING GIN (payload jsonb_path_ops);
CREATE INDEX api_payloads_source_captured_idx ON api_payloads (source, captured_at);
CREATE INDEX api_payloads_captured_idx ON api_payloads (captured_at);

CREATE TABLE data_ingestion_runs (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id          UUID        NOT NULL UNIQUE,
    task_name       TEXT        NOT NULL CHECK (task_name <> ''),
    data_source     TEXT        NOT NULL CHECK (data_source <> ''),
    status          TEXT        NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'completed', 'failed')),
    records_fetched INTEGER     NOT NULL DEFAULT 0 CHECK (records_fetched >= 0),
    records_created INTEGER     NOT NULL DEFAULT 0 CHECK (records_created >= 0),
    records_updated INTEGER     NOT NULL DEFAULT 0 CHECK (records_updated >= 0),
    records_skipped INTEGER     NOT NULL DEFAULT 0 CHECK (records_skipped >= 0),
    started_at      TIMESTAMPTZ NOT NULL,
    completed_at    TIMESTAMPTZ,
    failed_at       TIMESTAMPTZ,
    error_message   TEXT,
    error_details   JSONB,
    metadata        JSONB       NOT NULL DEFAULT '{}'::jsonb,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- the terminal timestamps agree with the status
    CONSTRAINT data_ingestion_runs_status_times CHECK (
        (status = 'running'   AND completed_at IS NULL     AND failed_at IS NULL) OR
        (status = 'completed' AND completed_at IS NOT NULL AND failed_at IS NULL) OR
        (status = 'failed'    AND failed_at IS NOT NULL    AND completed_at IS NULL)
    )
);
CREATE INDEX data_ingestion_runs_task_started_idx ON data_ingestion_runs (task_name, started_at);
CREATE INDEX data_ingestion_runs_source_started_idx ON data_ingestion_runs (data_source, started_at);
CREATE INDEX data_ingestion_runs_completed_idx ON data_ingestion_runs (completed_at)
    WHERE status = 'completed';

-- running -> completed | failed, and nothing else: a finished run is history.
CREATE FUNCTION data_ingestion_runs_guard_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'running' THEN
        RAISE EXCEPTION 'data_ingestion_run % is % and cannot change (attempted status %)',
            OLD.run_id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.status NOT IN ('running', 'completed', 'failed') THEN
        RAISE EXCEPTION 'data_ingestion_run %: illegal transition % -> %',
            OLD.run_id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
CREATE TRIGGER data_ingestion_runs_guard_transition
    BEFORE UPDATE ON data_ingestion_runs
    FOR EACH ROW EXECUTE FUNCTION data_ingestion_runs_guard_transition();

CREATE TABLE data_ingestion_run_records (
    id                    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    data_ingestion_run_id BIGINT      NOT NULL REFERENCES data_ingestion_runs (id),
    -- polymorphic reference to the ingested record
    record_type           TEXT        NOT NULL CHECK (record_type <> ''),
    record_id             TEXT        NOT NULL CHECK (record_id <> ''),
    operation             TEXT        NOT NULL CHECK (operation IN ('created', 'updated', 'skipped')),
    -- optional, so symbol reports can find a symbol's data and when it happened
    symbol                TEXT,
    occurred_at           TIMESTAMPTZ,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT data_ingestion_run_records_unique UNIQUE (data_ingestion_run_id, record_type, record_id)
);
CREATE INDEX data_ingestion_run_records_record_idx ON data_ingestion_run_records (record_type, record_id);
CREATE INDEX data_ingestion_run_records_symbol_idx ON data_ingestion_run_records (symbol, created_at)
    WHERE symbol IS NOT NULL;

CREATE TABLE api_call_logs (
    id                      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    data_ingestion_run_id   BIGINT      NOT NULL REFERENCES data_ingestion_runs (id),
    api_request_payload_id  BIGINT      REFERENCES api_payloads (id),
    api_response_payload_id BIGINT      REFERENCES api_payloads (id),
    endpoint                TEXT        NOT NULL CHECK (endpoint <> ''),
    http_method             TEXT,
    http_status_code        INTEGER     CHECK (http_status_code BETWEEN 100 AND 599),
    duration_ms             INTEGER     CHECK (duration_ms >= 0),
    error_message           TEXT,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX api_call_logs_run_idx ON api_call_logs (data_ingestion_run_id);
CREATE INDEX api_call_logs_endpoint_idx ON api_call_logs (endpoint, created_at);
CREATE INDEX api_call_logs_request_idx ON api_call_logs (api_request_payload_id);
CREATE INDEX api_call_logs_response_idx ON api_call_logs (api_response_payload_id);

CREATE TABLE alerts (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            TEXT        NOT NULL CHECK (kind <> ''),
    severity        TEXT        NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    message         TEXT        NOT NULL,
    details         JSONB       NOT NULL DEFAULT '{}'::jsonb,
    raised_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    acknowledged_at TIMESTAMPTZ
);
CREATE INDEX alerts_kind_raised_idx ON alerts (kind, raised_at);

-- The outbox: a decision is committed here before any order for it leaves the gateway.
-- decision_id is the broker client_order_id.
CREATE TABLE trade_decisions (
    id                       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    decision_id              UUID        NOT NULL UNIQUE,
    strategy_name            TEXT        NOT NULL CHECK (strategy_name <> ''),
    strategy_version         TEXT        NOT NULL,
    account                  TEXT        NOT NULL CHECK (account <> ''),
    symbol                   TEXT        NOT NULL CHECK (symbol <> ''),
    side                     TEXT        NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity                 NUMERIC     NOT NULL CHECK (quantity > 0),
    order_type               TEXT        NOT NULL
                             CHECK (order_type IN ('market', 'limit', 'stop', 'stop_limit', 'trailing_stop')),
    limit_price              NUMERIC     CHECK (limit_price > 0),
    stop_price               NUMERIC     CHECK (stop_price > 0),
    time_in_force            TEXT        NOT NULL
                             CHECK (time_in_force IN ('day', 'gtc', 'opg', 'cls', 'ioc', 'fok')),
    primary_signal_type      TEXT,
    primary_signal_id        TEXT,
    primary_ingestion_run_id BIGINT      REFERENCES data_ingestion_runs (id),
    decision_rationale       JSONB       NOT NULL DEFAULT '{}'::jsonb,
    signal_strength          NUMERIC,
    status                   TEXT        NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'executed', 'failed', 'cancelled')),
    failure_reason           TEXT,
    created_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    executed_at              TIMESTAMPTZ,
    failed_at                TIMESTAMPTZ,
    cancelled_at             TIMESTAMPTZ,
    updated_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT trade_decisions_limit_price_required
        CHECK (order_type NOT IN ('limit', 'stop_limit') OR limit_price IS NOT NULL),
    CONSTRAINT trade_decisions_stop_price_required
        CHECK (order_type NOT IN ('stop', 'stop_limit') OR stop_price IS NOT NULL),
    CONSTRAINT trade_decisions_signal_pair
        CHECK ((primary_signal_type IS NULL) = (primary_signal_id IS NULL))
);
CREATE INDEX trade_decisions_symbol_created_idx ON trade_decisions (symbol, created_at);
CREATE INDEX trade_decisions_strategy_idx ON trade_decisions (strategy_name, strategy_version, created_at);
CREATE INDEX trade_decisions_status_created_idx ON trade_decisions (status, created_at);
CREATE INDEX trade_decisions_created_idx ON trade_decisions (created_at);
CREATE INDEX trade_decisions_ingestion_run_idx ON trade_decisions (primary_ingestion_run_id);
CREATE INDEX trade_decisions_rationale_gin ON trade_decisions USING GIN (decision_rationale jsonb_path_ops);

-- One row per broker submission of a decision. There is no retry, so attempt_number is 1 and a
-- decision has at most one execution: the database refuses a second submission.
CREATE TABLE trade_executions (
    id                      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trade_decision_id       BIGINT      NOT NULL REFERENCES trade_decisions (id),
    execution_id            UUID        NOT NULL UNIQUE,
    attempt_number          INTEGER     NOT NULL DEFAULT 1 CHECK (attempt_number = 1),
    broker                  TEXT        NOT NULL DEFAULT 'alpaca' CHECK (broker <> ''),
    status                  TEXT        NOT NULL
                            CHECK (status IN ('submitted', 'accepted', 'filled', 'partial_fill',
                                              'rejected', 'cancelled')),
    api_request_payload_id  BIGINT      REFERENCES api_payloads (id),
    api_response_payload_id BIGINT      REFERENCES api_payloads (id),
    broker_order_id         TEXT,
    http_status_code        INTEGER     CHECK (http_status_code BETWEEN 100 AND 599),
    error_code              TEXT,
    error_message           TEXT,
    error_details           JSONB,
    filled_quantity         NUMERIC     NOT NULL DEFAULT 0 CHECK (filled_quantity >= 0),
    filled_avg_price        NUMERIC     CHECK (filled_avg_price >= 0),
    commission              NUMERIC,
    submitted_at            TIMESTAMPTZ,
    filled_at               TIMESTAMPTZ,
    rejected_at             TIMESTAMPTZ,
    cancelled_at            TIMESTAMPTZ,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT trade_executions_one_attempt UNIQUE (trade_decision_id, attempt_number)
);
CREATE INDEX trade_executions_status_created_idx ON trade_executions (status, created_at);
CREATE INDEX trade_executions_broker_order_idx ON trade_executions (broker_order_id);
CREATE INDEX trade_executions_http_status_idx ON trade_executions (http_status_code);
CREATE INDEX trade_executions_request_idx ON trade_executions (api_request_payload_id);
CREATE INDEX trade_executions_response_idx ON trade_executions (api_response_payload_id);
