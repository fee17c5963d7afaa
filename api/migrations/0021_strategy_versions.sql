-- The version of each run's strategy rows, so that the API can keep the strategy and comparison
-- answers it has served and tell, by one index lookup a run, whether they still hold (reading
-- and formatting the rows costs ten times as much: BENCHMARKS.md). Every statement that writes
-- a run's rows in `strategy_steps` (the step refresh, a migration, a hand edit) gives the run a
-- new random version in its own transaction, through the triggers below, so a read replica's
-- versions are those of the rows it has replayed. Random rather than a counter or a transaction
-- id: after a failover to a standby that had not received the last commits, or a restore to an
-- earlier point, a counter would hand out a number already served for other rows.
--
-- Not a read model: a replay empties it with the projections (TRUNCATE fires no row-set
-- trigger) and the refresh gives every run a new version.
CREATE TABLE strategy_versions (
    run_id     UUID PRIMARY KEY,
    generation UUID NOT NULL
);

INSERT INTO strategy_versions (run_id, generation)
SELECT run_id, gen_random_uuid() FROM (SELECT DISTINCT run_id FROM strategy_steps) AS r;

-- Once per statement, over the rows it wrote (a refresh deletes, then inserts: two versions in
-- one transaction, of which readers see the last).
CREATE FUNCTION new_strategy_versions() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO strategy_versions (run_id, generation)
    SELECT run_id, gen_random_uuid() FROM (SELECT DISTINCT run_id FROM written) AS r
    ON CONFLICT (run_id) DO UPDATE SET generation = excluded.generation;
    RETURN NULL;
END;
$$;

-- A trigger with transition tables takes one kind of statement.
CREATE TRIGGER strategy_steps_inserted AFTER INSERT ON strategy_steps
    REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION new_strategy_versions();
CREATE TRIGGER strategy_steps_updated AFTER UPDATE ON strategy_steps
    REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION new_strategy_versions();
CREATE TRIGGER strategy_steps_deleted AFTER DELETE ON strategy_steps
    REFERENCING OLD TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION new_strategy_versions();
