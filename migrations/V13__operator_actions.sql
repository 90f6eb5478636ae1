-- Every change an operator makes through the API or the CLI (the kill switch, a sync trigger, a
-- job, a purge, ...), once, append-only: who (the name of the token used, never a name the
-- caller sends), when, from which peer, what, the value before and after, and the reason given.
CREATE TABLE operator_actions (
    id        BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor     TEXT        NOT NULL CHECK (actor <> '' AND length(actor) <= 256),
    peer      TEXT        CHECK (length(peer) <= 256),
    action    TEXT        NOT NULL CHECK (action <> '' AND length(action) <= 128),
    target    TEXT        CHECK (length(target) <= 256),
    previous  JSONB,
    new       JSONB,
    reason    TEXT        CHECK (length(reason) <= 4096)
);
CREATE INDEX operator_actions_at ON operator_actions (at DESC, id DESC);
CREATE INDEX operator_actions_actor ON operator_actions (actor, at DESC);

CREATE TRIGGER operator_actions_no_update
    BEFORE UPDATE ON operator_actions
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_change();
CREATE TRIGGER operator_actions_no_delete
    BEFORE DELETE ON operator_actions
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_change();
CREATE TRIGGER operator_actions_no_truncate
    BEFORE TRUNCATE ON operator_actions
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_change();

-- The kill switch's changes so far survive as its first history row.
-- Their names were whatever the caller sent then, so they are marked as such.
INSERT INTO operator_actions (at, actor, action, target, new, reason)
SELECT changed_at, 'legacy:' || COALESCE(NULLIF(left(changed_by, 240), ''), 'unknown'),
       'kill_switch.set', 'kill_switch', jsonb_build_object('state', state), left(reason, 4096)
FROM kill_switch WHERE changed_by IS NOT NULL;
