-- What a broker says an account holds. Each ask is one snapshot (so a flat account, with no
-- position rows, is on record too), with the request and the broker's answer in api_payloads;
-- each open position is one row of its snapshot. The broker's state lies between when the
-- request was sent and when the answer came; reconciliation compares the change between two
-- snapshots with the fills on record between them.
CREATE TABLE position_snapshots (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    broker              TEXT        NOT NULL CHECK (broker <> ''),
    account             TEXT        NOT NULL CHECK (account <> ''),
    -- when the request was sent
    requested_at        TIMESTAMPTZ NOT NULL,
    -- when the broker's answer was received
    as_of               TIMESTAMPTZ NOT NULL,
    positions_count     INTEGER     NOT NULL CHECK (positions_count >= 0),
    request_payload_id  BIGINT      NOT NULL REFERENCES api_payloads (id),
    response_payload_id BIGINT      NOT NULL REFERENCES api_payloads (id),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (as_of >= requested_at),
    -- the key its positions repeat, so they cannot disagree with it
    UNIQUE (id, broker, account, as_of)
);
CREATE INDEX position_snapshots_account_as_of_idx ON position_snapshots (broker, account, as_of);
CREATE INDEX position_snapshots_account_id_idx ON position_snapshots (broker, account, id);
CREATE INDEX position_snapshots_request_idx ON position_snapshots (request_payload_id);
CREATE INDEX position_snapshots_response_idx ON position_snapshots (response_payload_id);

CREATE TABLE broker_positions (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    snapshot_id  BIGINT      NOT NULL,
    broker       TEXT        NOT NULL,
    account      TEXT        NOT NULL,
    symbol       TEXT        NOT NULL CHECK (symbol <> ''),
    -- signed: negative when short; a closed position is no row
    quantity     NUMERIC     NOT NULL CHECK (quantity <> 0),
    average_cost NUMERIC     CHECK (average_cost >= 0),
    as_of        TIMESTAMPTZ NOT NULL,
    -- the position as the broker sent it
    raw          JSONB       NOT NULL,
    UNIQUE (snapshot_id, symbol),
    FOREIGN KEY (snapshot_id, broker, account, as_of)
        REFERENCES position_snapshots (id, broker, account, as_of)
);
CREATE INDEX broker_positions_account_symbol_idx ON broker_positions (broker, account, symbol, as_of);
