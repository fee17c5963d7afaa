-- Trajectory search reads a run's rows in log order. Without this index it walked the primary
-- key (the whole log in order) and filtered every earlier row of every run: a page of steps
-- 50-150 of one run scanned a quarter of the log. Here a run's rows are a range in log order,
-- and `step`, a key column, is filtered inside the index, so rows before the asked steps cost
-- no heap read. It is built while the API starts, before it serves (about 1.5 s per million
-- trajectories on 2 cores); see "Upgrades and migrations" in docs/operations.md.
CREATE INDEX trajectories_run_position_idx ON trajectories (run_id, position, idx, step);
