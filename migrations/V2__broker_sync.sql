-- The IBKR "trades and executions sync" model. The spec calls these tables `trades` and
-- `trade_executions`; here they are broker_trades and broker_fills so they stay apart from the
-- outbox's trade_executions. Fills are the source of truth; trades aggregate canonical fills.

CREATE TABLE broker_trades (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id        TEXT        NOT NULL CHECK (account_id <> ''),
    ib_perm_id        BIGINT,
    order_ref         TEXT,
    ib_order_id       BIGINT,
    client_id         BIGINT,
    symbol            TEXT,
    sec_type          TEXT,
    side              TEXT        CHECK (side IN ('buy', 'sell')),
    exchange          TEXT,
    currency          TEXT,
    -- UTC date of the first execution; part of the composite fallback identity
    trade_date        DATE,
    status            TEXT        NOT NULL DEFAULT 'unknown'
                      CHECK (status IN ('partial', 'filled', 'cancelled', 'unknown')),
    total_quantity    NUMERIC     NOT NULL DEFAULT 0 CHECK (total_quantity >= 0),
    avg_price         NUMERIC     CHECK (avg_price >= 0),
    total_commission  NUMERIC,
    first_executed_at TIMESTAMPTZ,
    last_executed_at  TIMESTAMPTZ,
    fetched_at        TIMESTAMPTZ NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- parent identity, in the spec's resolution order: perm id, then order ref, then composite
CREATE UNIQUE INDEX broker_trades_perm_id_uidx ON broker_trades (account_id, ib_perm_id)
    WHERE ib_perm_id > 0;
CREATE UNIQUE INDEX broker_trades_order_ref_uidx ON broker_trades (account_id, order_ref)
    WHERE order_ref IS NOT NULL AND (ib_perm_id IS NULL OR ib_perm_id <= 0);
CREATE UNIQUE INDEX broker_trades_composite_uidx
    ON broker_trades (account_id, client_id, ib_order_id, symbol, side, trade_date) NULLS NOT DISTINCT
    WHERE order_ref IS NULL AND (ib_perm_id IS NULL OR ib_perm_id <= 0);
CREATE INDEX broker_trades_account_last_idx ON broker_trades (account_id, last_executed_at DESC);
CREATE INDEX broker_trades_symbol_last_idx ON broker_trades (symbol, last_executed_at DESC);

CREATE TABLE broker_fills (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trade_id            BIGINT      NOT NULL REFERENCES broker_trades (id),
    account_id          TEXT        NOT NULL CHECK (account_id <> ''),
    exec_id             TEXT        NOT NULL CHECK (exec_id <> ''),
    exec_id_base        TEXT        NOT NULL CHECK (exec_id_base <> ''),
    exec_revision       INTEGER     NOT NULL DEFAULT 0 CHECK (exec_revision >= 0),
    ib_perm_id          BIGINT,
    ib_order_id         BIGINT,
    order_ref           TEXT,
    client_id           BIGINT,
    symbol              TEXT,
    sec_type            TEXT,
    side                TEXT        CHECK (side IN ('buy', 'sell')),
    exchange            TEXT,
    currency            TEXT,
    liquidity           TEXT,
    executed_at         TIMESTAMPTZ NOT NULL,
    quantity            NUMERIC     NOT NULL CHECK (quantity >= 0),
    price               NUMERIC     NOT NULL CHECK (price >= 0),
    cum_quantity        NUMERIC     CHECK (cum_quantity >= 0),
    avg_price           NUMERIC     CHECK (avg_price >= 0),
    commission          NUMERIC,
    commission_currency TEXT,
    realized_pnl        NUMERIC,
    is_canonical        BOOLEAN     NOT NULL DEFAULT true,
    raw                 JSONB       NOT NULL,
    fetched_at          TIMESTAMPTZ NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT broker_fills_exec_uidx UNIQUE (account_id, exec_id),
    CONSTRAINT broker_fills_revision_unique UNIQUE (account_id, exec_id_base, exec_revision)
);
-- exactly one canonical fill per (account, exec_id_base): a correction must first demote the
-- fill it corrects
CREATE UNIQUE INDEX broker_fills_one_canonical_uidx ON broker_fills (account_id, exec_id_base)
    WHERE is_canonical;
CREATE INDEX broker_fills_base_revision_idx ON broker_fills (account_id, exec_id_base, exec_revision DESC);
CREATE INDEX broker_fills_trade_executed_idx ON broker_fills (trade_id, executed_at);
CREATE INDEX broker_fills_symbol_executed_idx ON broker_fills (symbol, executed_at);

-- One row per executions sync of one account, so a sync is restartable and auditable.
CREATE TABLE sync_runs (
    id                      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id              TEXT        NOT NULL CHECK (account_id <> ''),
    status                  TEXT        NOT NULL DEFAULT 'running'
                            CHECK (status IN ('running', 'completed', 'failed')),
    window_start            TIMESTAMPTZ NOT NULL,
    window_end              TIMESTAMPTZ NOT NULL,
    fetched_count           INTEGER     NOT NULL DEFAULT 0 CHECK (fetched_count >= 0),
    inserted_count          INTEGER     NOT NULL DEFAULT 0 CHECK (inserted_count >= 0),
    updated_count           INTEGER     NOT NULL DEFAULT 0 CHECK (updated_count >= 0),
    canonical_changes_count INTEGER     NOT NULL DEFAULT 0 CHECK (canonical_changes_count >= 0),
    touched_trades_count    INTEGER     NOT NULL DEFAULT 0 CHECK (touched_trades_count >= 0),
    data_ingestion_run_id   BIGINT      REFERENCES data_ingestion_runs (id),
    error_message           TEXT,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at             TIMESTAMPTZ,
    CONSTRAINT sync_runs_window CHECK (window_start <= window_end)
);
CREATE INDEX sync_runs_account_started_idx ON sync_runs (account_id, started_at DESC);

-- Background jobs (e.g. trades.sync). dedupe_key makes enqueue idempotent: at most one pending
-- job per (type, key).
CREATE TABLE jobs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_type    TEXT        NOT NULL CHECK (job_type <> ''),
    dedupe_key  TEXT        NOT NULL DEFAULT '',
    payload     JSONB       NOT NULL DEFAULT '{}'::jsonb,
    status      TEXT        NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    attempts    INTEGER     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    run_after   TIMESTAMPTZ NOT NULL DEFAULT now(),
    error       TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at  TIMESTAMPTZ,
    finished_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX jobs_one_pending_uidx ON jobs (job_type, dedupe_key) WHERE status = 'pending';
CREATE INDEX jobs_status_run_after_idx ON jobs (status, run_after);
