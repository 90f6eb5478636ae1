-- The Reporter: its alert checks read API call errors by time, and payload retention asks
-- whether a payload is still referenced by an API call log.
CREATE INDEX api_call_logs_created_idx ON api_call_logs (created_at);
