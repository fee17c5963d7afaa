-- The version of each run's strategy rows, so that the API can keep the strategy and comparison
-- answers it has served and tell, by one index lookup a run, whether they still hold (reading
-- and formatting the rows costs ten times as much: BENCHMARKS.md). The refresh of a run's steps
-- gives the run a new random version in the transaction that changes the rows, so a read
-- replica's versions are those of the rows it has replayed. Random rather than a counter or a
-- transaction id: after a failover to a standby that had not received the last commits, or a
-- restore to an earlier point, a counter would hand out a number already served for other rows.
--
-- Not a read model: a replay empties it with the projections and gives every run a new version.
-- A migration that changes what the views answer for rows already written must give every run
-- a new version too (`UPDATE strategy_versions SET generation = gen_random_uuid()`).
CREATE TABLE strategy_versions (
    run_id     UUID PRIMARY KEY,
    generation UUID NOT NULL
);

INSERT INTO strategy_versions (run_id, generation)
SELECT run_id, gen_random_uuid() FROM (SELECT DISTINCT run_id FROM strategy_steps) AS r;

-- The step refresh of 0020, then the versions of the runs it touched.
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
    JOIN trajectories t ON t.run_id = e.run_id AND t.position = e.position
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

-- The runs' new versions.
INSERT INTO strategy_versions (run_id, generation)
SELECT run_id, gen_random_uuid() FROM (SELECT DISTINCT unnest(touched_runs) AS run_id) AS r
ON CONFLICT (run_id) DO UPDATE SET generation = excluded.generation;
$$;
