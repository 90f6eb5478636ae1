-- What a broker says an account holds. Each ask is one snapshot (so a flat account, with no
-- position rows, is on record too), with the broker's answer stored in api_payloads; each open
-- position is one row of its snapshot. Reconciliation compares the change between two
-- snapshots with the fills on record between them.
CREATE TABLE position_snapshots (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    broker              TEXT        NOT NULL CHECK (broker <> ''),
    account             TEXT        NOT NULL CHECK (account <> ''),
    -- when the broker's answer was received
    as_of               TIMESTAMPTZ NOT NULL,
    positions_count     INTEGER     NOT NULL CHECK (positions_count >= 0),
    request_payload_id  BIGINT,
    response_payload_id BIGINT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX position_snapshots_account_as_of_idx ON position_snapshots (broker, account, as_of);

CREATE TABLE broker_positions (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    snapshot_id  BIGINT      NOT NULL REFERENCES position_snapshots (id),
    broker       TEXT        NOT NULL CHECK (broker <> ''),
    account      TEXT        NOT NULL CHECK (account <> ''),
    symbol       TEXT        NOT NULL CHECK (symbol <> ''),
    -- signed: negative when short
    quantity     NUMERIC     NOT NULL,
    average_cost NUMERIC,
    as_of        TIMESTAMPTZ NOT NULL,
    -- the position as the broker sent it
    raw          JSONB       NOT NULL,
    UNIQUE (snapshot_id, symbol)
);
CREATE INDEX broker_positions_account_symbol_idx ON broker_positions (broker, account, symbol, as_of);
