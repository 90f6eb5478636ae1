-- A sync writes up to 100,000 fills in one COPY (`cargo bench --bench ibkr_sync`). The row-level
-- foreign key to broker_trades looked up and row-locked each fill's parent, a quarter of the
-- COPY's time. The same guarantee is kept with one check per statement (the pattern of V5):
--   * every inserted or updated fill names an existing trade (SQLSTATE 23503, as a foreign key);
--   * trades are history: never deleted or truncated, and a trade's id never changes (the
--     identity column refuses a value; the trigger refuses `SET id = DEFAULT`), so no fill can
--     lose its parent afterwards.

ALTER TABLE broker_fills DROP CONSTRAINT broker_fills_trade_id_fkey;

CREATE FUNCTION broker_fills_check_trades() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    missing BIGINT;
BEGIN
    SELECT n.trade_id INTO missing
    FROM (SELECT DISTINCT trade_id FROM written) n
    WHERE NOT EXISTS (SELECT 1 FROM broker_trades t WHERE t.id = n.trade_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'broker_fills: trade % does not exist', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER broker_fills_check_trades_insert
    AFTER INSERT ON broker_fills
    REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION broker_fills_check_trades();
CREATE TRIGGER broker_fills_check_trades_update
    AFTER UPDATE ON broker_fills
    REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION broker_fills_check_trades();

CREATE TRIGGER broker_trades_no_delete
    BEFORE DELETE ON broker_trades
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_change();
CREATE TRIGGER broker_trades_no_truncate
    BEFORE TRUNCATE ON broker_trades
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_change();
CREATE TRIGGER broker_trades_keep_id
    BEFORE UPDATE OF id ON broker_trades
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION refuse_history_change();
