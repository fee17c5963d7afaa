-- The step-row refresh reads each touched step through the run-step indexes. 0015's joins of the
-- touched steps to the analytics tables were planned as hash joins over sequential scans: the
-- planner expects thousands of rows a step, scattered over the heap by the interleaving of runs,
-- and chooses to read both tables whole. Midway through a 10M-trajectory bench (4.6M stored), a
-- refresh of 9 steps took 2.5-3.3 s (EXPLAIN ANALYZE), most of each ingest transaction, under
-- the log's lock, and it grew with the tables. Here each step is its own lookup (LATERAL), which only an index answers
-- cheaply: the cost follows the rows of the touched steps, not the size of the tables (113 ms
-- for the same 9 steps). JIT is off for it: compiling its expressions took 35 ms of a 100 ms
-- refresh, more than they then saved (60 ms without).

CREATE OR REPLACE FUNCTION refresh_strategy_steps(touched_runs UUID[], touched_steps BIGINT[])
RETURNS VOID
LANGUAGE sql
SET work_mem = '64MB'
SET jit = off
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
    FROM trajectories t
    WHERE t.run_id = n.run_id AND t.step = n.step AND t.benchmark IS NULL
) AS t
CROSS JOIN LATERAL (
    SELECT count(*)                                                  AS blocks,
           sum(b.rel_position)                                       AS rel_position_sum,
           percentile_cont(ARRAY[0.25, 0.5, 0.75]::float8[])
               WITHIN GROUP (ORDER BY b.rel_position)                AS quartiles,
           count(*) FILTER (WHERE b.role = 'exploration')            AS exploration,
           count(*) FILTER (WHERE b.role = 'verification')           AS verification
    FROM trajectory_blocks b
    WHERE b.run_id = n.run_id AND b.step = n.step AND b.benchmark IS NULL
) AS b
-- A step without rollouts (all superseded, or only evaluations) has no row.
WHERE t.trajectories > 0;
$$;
