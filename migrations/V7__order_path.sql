-- The order path: the kill switch's persisted state, the events Alpaca pushes for our orders
-- (deduplicated on their execution id), and what recovery and the stream need to find orders.

-- One row: the kill switch, so a restarted OrderRouter (or gateway) resumes in the same state.
CREATE TABLE kill_switch (
    id         BOOLEAN     PRIMARY KEY DEFAULT TRUE CHECK (id),
    state      TEXT        NOT NULL DEFAULT 'active'
               CHECK (state IN ('active', 'halted', 'reduce_only')),
    reason     TEXT,
    changed_by TEXT,
    changed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO kill_switch (id) VALUES (TRUE);

-- Every trade_updates event of an order of ours, once: a redelivered execution_id is ignored.
-- Events recovered by listing orders after a reconnect carry a synthetic key
-- ("recovered:<order id>:<filled qty>") so a fill missed on the stream is recorded exactly once.
CREATE TABLE broker_order_events (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    broker            TEXT        NOT NULL CHECK (broker <> ''),
    account           TEXT        NOT NULL CHECK (account <> ''),
    event_key         TEXT        NOT NULL CHECK (event_key <> ''),
    trade_decision_id BIGINT      REFERENCES trade_decisions (id),
    broker_order_id   TEXT,
    event             TEXT        NOT NULL CHECK (event <> ''),
    order_status      TEXT,
    qty               NUMERIC,
    price             NUMERIC     CHECK (price >= 0),
    position_qty      NUMERIC,
    event_at          TIMESTAMPTZ,
    body              JSONB       NOT NULL,
    recorded_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT broker_order_events_once UNIQUE (broker, account, event_key)
);
CREATE INDEX broker_order_events_decision_idx ON broker_order_events (trade_decision_id, id);
CREATE INDEX broker_order_events_order_idx ON broker_order_events (broker_order_id);
CREATE INDEX broker_order_events_account_at_idx ON broker_order_events (broker, account, event_at);

-- A cancel the strategy asked for ends the decision as cancelled (a venue-side cancel does not).
ALTER TABLE trade_executions ADD COLUMN cancel_requested_at TIMESTAMPTZ;

-- recovery: the pending decisions of one account
CREATE INDEX trade_decisions_pending_account_idx ON trade_decisions (account, created_at)
    WHERE status = 'pending';

-- Orders refused before a decision was written (validation, risk checks, kill switch, routing,
-- an unavailable audit trail): the signal-side outcomes, kept apart from broker failures.
CREATE TABLE order_rejects (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    strategy_name    TEXT        NOT NULL,
    strategy_version TEXT        NOT NULL DEFAULT '',
    account          TEXT,
    symbol           TEXT,
    side             TEXT,
    quantity         NUMERIC,
    order_type       TEXT,
    limit_price      NUMERIC,
    stop_price       NUMERIC,
    signal_strength  NUMERIC,
    reason_code      TEXT        NOT NULL CHECK (reason_code <> ''),
    reason_message   TEXT        NOT NULL,
    request          JSONB       NOT NULL,
    rejected_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX order_rejects_strategy_idx ON order_rejects (strategy_name, rejected_at);
CREATE INDEX order_rejects_symbol_idx ON order_rejects (symbol, rejected_at);
CREATE INDEX order_rejects_code_idx ON order_rejects (reason_code, rejected_at);
