-- The step-row refresh finds a step's trajectories and blocks through its events: the step's
-- positions from trajectory_batches_run_idx (every trajectory's event has its row there, with the
-- same run and step, see 0016), then each event's rows from the primary keys, which lead with the
-- position. The two (run_id, step) indexes that only this refresh read are dropped: each cost an
-- index entry for every trajectory and every block written, about 80 bytes of WAL a trajectory
-- (8.5 % of it) and 10-20 % of the trajectories' insert time (800,000 rows of the analytics bench
-- inserted with and without it), against about 0.3 ms more a step refreshed (0.7 ms for 1,000
-- trajectories).
--
-- A sequential scan is never the right plan here (a step is a few of a table's millions of
-- rows), but the statistics lag the ingest: the rows refreshed were written in this transaction,
-- and an ANALYZE made when the tables held a few events counts few distinct positions. With them
-- the planner read the whole of trajectories for every step, 6-9 s a refresh in the analytics
-- bench. Sequential scans are off for the function, so each event's rows come from its key.
--
-- Queries by (run_id, step) elsewhere go through trajectories_search_idx (its run's range) or,
-- for evaluations, trajectories_benchmark_idx.

CREATE OR REPLACE FUNCTION refresh_strategy_steps(touched_runs UUID[], touched_steps BIGINT[])
RETURNS VOID
LANGUAGE sql
SET work_mem = '64MB'
SET jit = off
SET enable_seqscan = off
AS $$
DELETE FROM strategy_steps s
USING unnest(touched_runs, touched_steps) AS n(run_id, step)
WHERE s.run_id = n.run_id AND s.step = n.step;

INSERT INTO strategy_steps
SELECT n.run_id, n.step, t.trajectories, t.reward_sum, t.correct, t.parallel,
       t.correct_parallel, t.blocks_sum, t.block_share_sum, t.format_valid,
       t.response_tokens_sum, t.response_tokens_known, b.blocks,
       coalesce(b.rel_position_sum, 0), b.quartiles[1], b.quartiles[2], b.quartiles[3],
       b.exploration, b.verification
FROM (SELECT DISTINCT run_id, step FROM unnest(touched_runs, touched_steps) AS n(run_id, step)) AS n
CROSS JOIN LATERAL (
    SELECT count(*)                                           AS trajectories,
           sum(t.reward)                                      AS reward_sum,
           count(*) FILTER (WHERE t.correct)                  AS correct,
           count(*) FILTER (WHERE t.blocks > 0)               AS parallel,
           count(*) FILTER (WHERE t.blocks > 0 AND t.correct) AS correct_parallel,
           sum(t.blocks)                                      AS blocks_sum,
           sum(t.block_share)                                 AS block_share_sum,
           count(*) FILTER (WHERE t.format_valid)             AS format_valid,
           coalesce(sum(t.response_tokens), 0)                AS response_tokens_sum,
           count(t.response_tokens)                           AS response_tokens_known
    FROM trajectory_batches e
    JOIN trajectories t ON t.position = e.position
    WHERE e.run_id = n.run_id AND e.step = n.step AND t.benchmark IS NULL
) AS t
CROSS JOIN LATERAL (
    SELECT count(*)                                                  AS blocks,
           sum(b.rel_position)                                       AS rel_position_sum,
           percentile_cont(ARRAY[0.25, 0.5, 0.75]::float8[])
               WITHIN GROUP (ORDER BY b.rel_position)                AS quartiles,
           count(*) FILTER (WHERE b.role = 'exploration')            AS exploration,
           count(*) FILTER (WHERE b.role = 'verification')           AS verification
    FROM trajectory_batches e
    JOIN trajectory_blocks b ON b.position = e.position
    WHERE e.run_id = n.run_id AND e.step = n.step AND b.benchmark IS NULL
) AS b
-- A step without rollouts (all superseded, or only evaluations) has no row.
WHERE t.trajectories > 0;
$$;

DROP INDEX trajectories_run_step_idx;
DROP INDEX trajectory_blocks_run_step_idx;
