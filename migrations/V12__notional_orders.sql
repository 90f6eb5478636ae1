-- Dollar orders: a decision orders a quantity or a notional (Alpaca's fractional, market, day
-- orders), never both and never neither.
ALTER TABLE trade_decisions ADD COLUMN notional NUMERIC CHECK (notional > 0);
ALTER TABLE trade_decisions ALTER COLUMN quantity DROP NOT NULL;
ALTER TABLE trade_decisions ADD CONSTRAINT trade_decisions_qty_xor_notional
    CHECK ((quantity IS NULL) <> (notional IS NULL));
ALTER TABLE trade_decisions ADD CONSTRAINT trade_decisions_notional_market_day
    CHECK (notional IS NULL OR (order_type = 'market' AND time_in_force = 'day'));
ALTER TABLE order_rejects ADD COLUMN notional NUMERIC;
