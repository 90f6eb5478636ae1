-- An api_response row's body is the broker's JSON exactly as received; what the HTTP exchange
-- carried around it (duration, rate-limit headers, the endpoint) is kept beside it here.
ALTER TABLE tradelog ADD COLUMN response_meta JSONB;
