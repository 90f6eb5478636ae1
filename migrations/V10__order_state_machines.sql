-- The decision's and the execution's state machines, enforced by the database, with every
-- correction (a state the broker later contradicted) kept; and dollar (notional) orders.
--
-- trade_decisions:  pending -> executed | failed | cancelled
--                   executed -> failed (the broker rejected it after accepting)
--                            -> cancelled (the strategy's cancel completed)
--                   failed -> executed   correction: the broker holds or filled the order
-- trade_executions: submitted | accepted -> each other, partial_fill, filled, rejected, cancelled
--                   partial_fill -> filled | cancelled
--                   rejected -> partial_fill | filled   correction: the broker filled it
--                            -> any                     correction: the gateway had concluded
--                               the broker never received it (not_received_by_broker), and
--                               the broker shows the order
--                   filled, cancelled: final
-- Anything else is refused. A correction is written to order_state_corrections with the earlier
-- state, the new one and why (the row's status_reason).

ALTER TABLE trade_decisions ADD COLUMN status_reason TEXT;
ALTER TABLE trade_executions ADD COLUMN status_reason TEXT;

-- a rejected execution never carries a fill (a fill turns it into a fill, as a correction)
ALTER TABLE trade_executions ADD CONSTRAINT trade_executions_rejected_unfilled
    CHECK (status <> 'rejected' OR filled_quantity = 0) NOT VALID;

CREATE TABLE order_state_corrections (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity            TEXT        NOT NULL CHECK (entity IN ('decision', 'execution')),
    trade_decision_id BIGINT      NOT NULL REFERENCES trade_decisions (id),
    execution_id      BIGINT      REFERENCES trade_executions (id),
    from_status       TEXT        NOT NULL,
    to_status         TEXT        NOT NULL,
    reason            TEXT        NOT NULL,
    corrected_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX order_state_corrections_decision_idx
    ON order_state_corrections (trade_decision_id, id);

CREATE FUNCTION trade_decisions_guard_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.status, NEW.status) IN (('pending', 'executed'), ('pending', 'failed'),
                                    ('pending', 'cancelled'), ('executed', 'failed'),
                                    ('executed', 'cancelled')) THEN
        RETURN NEW;
    END IF;
    IF (OLD.status, NEW.status) = ('failed', 'executed') THEN
        INSERT INTO order_state_corrections (entity, trade_decision_id, from_status, to_status,
                                             reason)
        VALUES ('decision', NEW.id, OLD.status, NEW.status,
                COALESCE(NEW.status_reason, 'the broker contradicted the recorded state'));
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'trade decision %: illegal transition % -> %',
        OLD.decision_id, OLD.status, NEW.status
        USING ERRCODE = 'check_violation';
END;
$$;
CREATE TRIGGER trade_decisions_guard_transition
    BEFORE UPDATE OF status ON trade_decisions
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION trade_decisions_guard_transition();

CREATE FUNCTION trade_executions_guard_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IN ('submitted', 'accepted')
       OR (OLD.status = 'partial_fill' AND NEW.status IN ('filled', 'cancelled')) THEN
        RETURN NEW;
    END IF;
    IF OLD.status = 'rejected'
       AND ((NEW.status IN ('partial_fill', 'filled')
             AND NEW.filled_quantity > OLD.filled_quantity)
            OR OLD.error_code = 'not_received_by_broker') THEN
        INSERT INTO order_state_corrections (entity, trade_decision_id, execution_id,
                                             from_status, to_status, reason)
        VALUES ('execution', NEW.trade_decision_id, NEW.id, OLD.status, NEW.status,
                COALESCE(NEW.status_reason, 'the broker contradicted the recorded state'));
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'trade execution %: illegal transition % -> %',
        OLD.execution_id, OLD.status, NEW.status
        USING ERRCODE = 'check_violation';
END;
$$;
CREATE TRIGGER trade_executions_guard_transition
    BEFORE UPDATE OF status ON trade_executions
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION trade_executions_guard_transition();
