-- Reconciliation: the change of each position a broker reports between two snapshots of an
-- account must be the sum of the fills on record for that account and symbol in between.
-- Each window (one snapshot to the next) is checked once; a difference is a break.

CREATE TABLE reconciliation_runs (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    broker           TEXT        NOT NULL CHECK (broker <> ''),
    account          TEXT        NOT NULL CHECK (account <> ''),
    from_snapshot_id BIGINT      NOT NULL REFERENCES position_snapshots (id),
    -- a snapshot closes one window, so a window is never checked twice
    to_snapshot_id   BIGINT      NOT NULL UNIQUE REFERENCES position_snapshots (id),
    -- the broker's answers that bound the window (when the earlier one was received, when the
    -- later one was received)
    window_start     TIMESTAMPTZ NOT NULL,
    window_end       TIMESTAMPTZ NOT NULL,
    symbols_checked  INTEGER     NOT NULL CHECK (symbols_checked >= 0),
    fills_considered INTEGER     NOT NULL CHECK (fills_considered >= 0),
    breaks_count     INTEGER     NOT NULL CHECK (breaks_count >= 0),
    -- what asked for it: positions.sync, start, reconnect, command, api
    trigger          TEXT        NOT NULL CHECK (trigger <> ''),
    checked_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (from_snapshot_id < to_snapshot_id),
    CHECK (window_start <= window_end)
);
CREATE INDEX reconciliation_runs_account_idx ON reconciliation_runs (broker, account, to_snapshot_id);
CREATE INDEX reconciliation_runs_checked_idx ON reconciliation_runs (checked_at);

CREATE TABLE reconciliation_breaks (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id           BIGINT      NOT NULL REFERENCES reconciliation_runs (id),
    broker           TEXT        NOT NULL,
    account          TEXT        NOT NULL,
    symbol           TEXT        NOT NULL CHECK (symbol <> ''),
    window_start     TIMESTAMPTZ NOT NULL,
    window_end       TIMESTAMPTZ NOT NULL,
    -- the broker's position at each end (0: no position)
    broker_before    NUMERIC     NOT NULL,
    broker_after     NUMERIC     NOT NULL,
    broker_change    NUMERIC     NOT NULL,
    -- the signed sum of the fills on record inside the window
    expected_change  NUMERIC     NOT NULL,
    -- fills that may fall on either side of a window's end (their time is within the clock
    -- tolerance of a snapshot): their signed sum, counted or not, could not explain the change
    uncertain_change NUMERIC     NOT NULL DEFAULT 0,
    fills_considered INTEGER     NOT NULL CHECK (fills_considered >= 0),
    -- the fills considered: [{"source", "id", "quantity", "at"}]
    fills            JSONB       NOT NULL,
    detected_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (run_id, symbol),
    CHECK (broker_change = broker_after - broker_before)
);
CREATE INDEX reconciliation_breaks_account_idx ON reconciliation_breaks (broker, account, detected_at);
CREATE INDEX reconciliation_breaks_detected_idx ON reconciliation_breaks (detected_at);

-- the fills of one IBKR account in a window
CREATE INDEX broker_fills_account_executed_idx ON broker_fills (account_id, executed_at);
