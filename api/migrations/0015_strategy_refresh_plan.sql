-- The step-row refresh of 0012, with a plan that does not depend on the statistics. During an
-- ingest the statistics lag the table: the rows the refresh reads were written in its own
-- transaction, so the planner expected one trajectory and one block per step. It then ran the
-- blocks' aggregate again for every step of the batch (a nested loop over it) and sorted on disk
-- in 4 MB of work_mem: 0.8-1.5 s of a 3.2 s ingest transaction of 64,000 trajectories, under the
-- log's lock. Here each aggregate runs once (MATERIALIZED), the three quartiles come from one
-- sort, and the sort has memory enough for a batch's blocks; the same refresh then takes tens of
-- milliseconds.

CREATE OR REPLACE FUNCTION refresh_strategy_steps(touched_runs UUID[], touched_steps BIGINT[])
RETURNS VOID
LANGUAGE sql
SET work_mem = '64MB'
AS $$
DELETE FROM strategy_steps s
USING unnest(touched_runs, touched_steps) AS n(run_id, step)
WHERE s.run_id = n.run_id AND s.step = n.step;

INSERT INTO strategy_steps
WITH touched AS MATERIALIZED (
    SELECT DISTINCT run_id, step FROM unnest(touched_runs, touched_steps) AS n(run_id, step)
), t AS MATERIALIZED (
    SELECT t.run_id, t.step,
           count(*)                                           AS trajectories,
           sum(t.reward)                                      AS reward_sum,
           count(*) FILTER (WHERE t.correct)                  AS correct,
           count(*) FILTER (WHERE t.blocks > 0)               AS parallel,
           count(*) FILTER (WHERE t.blocks > 0 AND t.correct) AS correct_parallel,
           sum(t.blocks)                                      AS blocks_sum,
           sum(t.block_share)                                 AS block_share_sum,
           count(*) FILTER (WHERE t.format_valid)             AS format_valid,
           coalesce(sum(t.response_tokens), 0)                AS response_tokens_sum,
           count(t.response_tokens)                           AS response_tokens_known
    FROM touched n
    JOIN trajectories t ON t.run_id = n.run_id AND t.step = n.step AND t.benchmark IS NULL
    GROUP BY t.run_id, t.step
), b AS MATERIALIZED (
    SELECT b.run_id, b.step,
           count(*)                                                  AS blocks,
           sum(b.rel_position)                                       AS rel_position_sum,
           percentile_cont(ARRAY[0.25, 0.5, 0.75]::float8[])
               WITHIN GROUP (ORDER BY b.rel_position)                AS quartiles,
           count(*) FILTER (WHERE b.role = 'exploration')            AS exploration,
           count(*) FILTER (WHERE b.role = 'verification')           AS verification
    FROM touched n
    JOIN trajectory_blocks b ON b.run_id = n.run_id AND b.step = n.step AND b.benchmark IS NULL
    GROUP BY b.run_id, b.step
)
SELECT t.run_id, t.step, t.trajectories, t.reward_sum, t.correct, t.parallel,
       t.correct_parallel, t.blocks_sum, t.block_share_sum, t.format_valid,
       t.response_tokens_sum, t.response_tokens_known, coalesce(b.blocks, 0),
       coalesce(b.rel_position_sum, 0), b.quartiles[1], b.quartiles[2], b.quartiles[3],
       coalesce(b.exploration, 0), coalesce(b.verification, 0)
FROM t LEFT JOIN b USING (run_id, step);
$$;
