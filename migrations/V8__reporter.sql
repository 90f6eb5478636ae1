-- The Reporter: its alert checks read API call errors by time, and payload retention asks
-- whether a payload is still referenced by an API call log.
CREATE INDEX api_call_logs_created_idx ON api_call_logs (created_at);

-- The reports count a symbol's decisions by status and group a year's failures by reason
-- from the indexes alone (index-only scans once vacuumed), without visiting the rows.
CREATE INDEX trade_decisions_symbol_report_idx ON trade_decisions (symbol, created_at)
    INCLUDE (status);
CREATE INDEX trade_decisions_failed_report_idx ON trade_decisions (created_at)
    INCLUDE (id, symbol, failure_reason) WHERE status = 'failed';
CREATE INDEX trade_decisions_symbol_failed_idx ON trade_decisions (symbol, created_at)
    INCLUDE (id, failure_reason) WHERE status = 'failed';
CREATE INDEX trade_executions_outcome_idx ON trade_executions (trade_decision_id)
    INCLUDE (status, http_status_code, error_code);
-- the existing (symbol, created_at) index is covered by the one above
DROP INDEX trade_decisions_symbol_created_idx;
