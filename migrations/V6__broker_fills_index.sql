-- broker_fills_revision_unique (account_id, exec_id_base, exec_revision) already serves lookups
-- of a base's revisions in either direction; the second index on the same columns only slowed
-- every fill insert.
DROP INDEX broker_fills_base_revision_idx;
