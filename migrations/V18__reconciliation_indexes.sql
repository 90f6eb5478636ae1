-- The reduce-only check reads an account's position and working orders in one symbol on every
-- order while the kill switch is reduce-only, and reconciliation reads the executions of an
-- account: both find the account's decisions in a symbol by this index (account and symbol
-- never change, so status updates stay HOT).
CREATE INDEX trade_decisions_account_symbol_idx ON trade_decisions (account, symbol);
