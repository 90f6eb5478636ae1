-- Orders a broker works, or worked, for an account that no decision of the gateway explains
-- (placed in the broker's own app, by another program, by hand), found whenever the gateway
-- lists the account's orders: the catch-up after every stream connect and each positions.sync.
-- One row per order, with its state as last listed; first_seen_at says when it was found.
CREATE TABLE external_orders (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    broker          TEXT        NOT NULL CHECK (broker <> ''),
    account         TEXT        NOT NULL CHECK (account <> ''),
    broker_order_id TEXT        NOT NULL CHECK (broker_order_id <> ''),
    client_order_id TEXT,
    symbol          TEXT,
    side            TEXT,
    quantity        NUMERIC     CHECK (quantity >= 0),
    filled_quantity NUMERIC     CHECK (filled_quantity >= 0),
    order_type      TEXT,
    status          TEXT        NOT NULL CHECK (status <> ''),
    submitted_at    TIMESTAMPTZ,
    raw             JSONB       NOT NULL,
    first_seen_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT external_orders_order_uidx UNIQUE (broker, account, broker_order_id)
);
CREATE INDEX external_orders_account_seen_idx ON external_orders (account, first_seen_at);
