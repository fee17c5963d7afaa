-- The strategy views read one row per run and step instead of every trajectory. A run's
-- strategy evolution and the comparison of runs cost what their steps cost, not their
-- trajectories: at 10M trajectories a run of 200 steps is 200 rows, not 200,000.
--
-- The analytics projection refreshes the rows of the steps each append touches, in the append's
-- transaction (appends take the log's lock, so no two refresh the same step at once), by
-- aggregating the step's trajectories and blocks again: a step's quartiles need all its blocks.
-- Counts and sums are kept rather than averages, so that the comparison adds steps up exactly
-- as it would add trajectories; the views divide.

CREATE TABLE strategy_steps (
    run_id                UUID             NOT NULL,
    step                  BIGINT           NOT NULL,
    trajectories          BIGINT           NOT NULL,
    reward_sum            DOUBLE PRECISION NOT NULL,
    correct               BIGINT           NOT NULL,
    -- Trajectories with at least one block, and those of them that are correct.
    parallel              BIGINT           NOT NULL,
    correct_parallel      BIGINT           NOT NULL,
    blocks_sum            BIGINT           NOT NULL,
    block_share_sum       DOUBLE PRECISION NOT NULL,
    format_valid          BIGINT           NOT NULL,
    -- Over the trajectories whose token count is known.
    response_tokens_sum   BIGINT           NOT NULL,
    response_tokens_known BIGINT           NOT NULL,
    -- The step's block rows.
    blocks                BIGINT           NOT NULL,
    rel_position_sum      DOUBLE PRECISION NOT NULL,
    rel_position_q1       DOUBLE PRECISION,
    rel_position_median   DOUBLE PRECISION,
    rel_position_q3       DOUBLE PRECISION,
    exploration           BIGINT           NOT NULL,
    verification          BIGINT           NOT NULL,
    PRIMARY KEY (run_id, step)
);

-- Recomputes the rows of the given (run, step) pairs from the analytics tables: RL rollouts
-- only (an evaluation's generations carry their benchmark). A pair without rollouts loses its
-- row.
CREATE FUNCTION refresh_strategy_steps(touched_runs UUID[], touched_steps BIGINT[]) RETURNS VOID
LANGUAGE sql AS $$
DELETE FROM strategy_steps s
USING unnest(touched_runs, touched_steps) AS n(run_id, step)
WHERE s.run_id = n.run_id AND s.step = n.step;

INSERT INTO strategy_steps
WITH touched AS (
    SELECT DISTINCT run_id, step FROM unnest(touched_runs, touched_steps) AS n(run_id, step)
), t AS (
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
), b AS (
    SELECT b.run_id, b.step,
           count(*)                                                     AS blocks,
           sum(b.rel_position)                                          AS rel_position_sum,
           percentile_cont(0.25) WITHIN GROUP (ORDER BY b.rel_position) AS rel_position_q1,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY b.rel_position)  AS rel_position_median,
           percentile_cont(0.75) WITHIN GROUP (ORDER BY b.rel_position) AS rel_position_q3,
           count(*) FILTER (WHERE b.role = 'exploration')               AS exploration,
           count(*) FILTER (WHERE b.role = 'verification')              AS verification
    FROM touched n
    JOIN trajectory_blocks b ON b.run_id = n.run_id AND b.step = n.step AND b.benchmark IS NULL
    GROUP BY b.run_id, b.step
)
SELECT t.run_id, t.step, t.trajectories, t.reward_sum, t.correct, t.parallel,
       t.correct_parallel, t.blocks_sum, t.block_share_sum, t.format_valid,
       t.response_tokens_sum, t.response_tokens_known, coalesce(b.blocks, 0),
       coalesce(b.rel_position_sum, 0), b.rel_position_q1, b.rel_position_median,
       b.rel_position_q3, coalesce(b.exploration, 0), coalesce(b.verification, 0)
FROM t LEFT JOIN b USING (run_id, step);
$$;

-- The views no longer aggregate from the indexes on (run_id, step): these only find a step's
-- rows for the refresh now, and no longer carry the columns the views read.
DROP INDEX trajectories_run_step_idx;
CREATE INDEX trajectories_run_step_idx ON trajectories (run_id, step) WHERE benchmark IS NULL;
DROP INDEX trajectory_blocks_run_step_idx;
CREATE INDEX trajectory_blocks_run_step_idx ON trajectory_blocks (run_id, step)
    WHERE benchmark IS NULL;

-- Under the log's lock (LOG_LOCK in store/append.rs, 0x0070726c5f6c6f67), so no append lands
-- between the backfill's reading and its commit. An API of the previous version does not refresh
-- the step rows: one still appending after this migration leaves its steps stale until `prl
-- replay`.
SELECT pg_advisory_xact_lock(31651007174569831);
SELECT refresh_strategy_steps(array_agg(run_id), array_agg(step))
FROM (SELECT DISTINCT run_id, step FROM trajectories) AS recorded;

-- The same columns as before, now divided out of the step rows.
CREATE OR REPLACE VIEW strategy_evolution AS
SELECT run_id, step, trajectories,
       reward_sum / trajectories                                           AS mean_reward,
       correct::float8 / trajectories                                      AS accuracy,
       parallel::float8 / trajectories                                     AS parallel_ratio,
       blocks_sum::float8 / trajectories                                   AS mean_blocks,
       block_share_sum / trajectories                                      AS mean_block_share,
       correct_parallel::float8 / nullif(parallel, 0)                      AS accuracy_parallel,
       (correct - correct_parallel)::float8 / nullif(trajectories - parallel, 0)
                                                                           AS accuracy_sequential,
       format_valid::float8 / trajectories                                 AS format_valid_ratio,
       blocks,
       rel_position_sum / nullif(blocks, 0)                                AS rel_position_mean,
       rel_position_q1, rel_position_median, rel_position_q3,
       exploration::float8 / nullif(blocks, 0)                             AS exploration_share,
       verification::float8 / nullif(blocks, 0)                            AS verification_share
FROM strategy_steps;

CREATE OR REPLACE VIEW run_comparison AS
WITH t AS (
    SELECT run_id,
           count(*)                                                        AS steps,
           max(step)                                                       AS last_step,
           sum(trajectories)::int8                                         AS trajectories,
           sum(reward_sum) / sum(trajectories)                             AS mean_reward,
           sum(correct)::float8 / sum(trajectories)                        AS accuracy,
           sum(parallel)::float8 / sum(trajectories)                       AS parallel_ratio,
           sum(blocks_sum)::float8 / sum(trajectories)                     AS mean_blocks,
           sum(correct_parallel)::float8 / nullif(sum(parallel), 0)        AS accuracy_parallel,
           sum(correct - correct_parallel)::float8
               / nullif(sum(trajectories - parallel), 0)                   AS accuracy_sequential,
           sum(format_valid)::float8 / sum(trajectories)                   AS format_valid_ratio,
           sum(response_tokens_sum)::float8 / nullif(sum(response_tokens_known), 0)
                                                                           AS mean_response_tokens,
           sum(rel_position_sum) / nullif(sum(blocks), 0)                  AS rel_position_mean,
           sum(exploration)::float8 / nullif(sum(blocks), 0)               AS exploration_share,
           sum(verification)::float8 / nullif(sum(blocks), 0)              AS verification_share
    FROM strategy_steps GROUP BY run_id
)
SELECT r.experiment_id, e.name AS experiment, r.stage_idx, s.name AS stage, t.run_id, t.steps,
       t.last_step, t.trajectories, t.mean_reward, t.accuracy, t.parallel_ratio, t.mean_blocks,
       t.accuracy_parallel, t.accuracy_sequential, t.format_valid_ratio, t.mean_response_tokens,
       t.rel_position_mean, t.exploration_share, t.verification_share
FROM t
JOIN runs r ON r.id = t.run_id
JOIN experiments e ON e.id = r.experiment_id
LEFT JOIN stages s ON s.experiment_id = r.experiment_id AND s.idx = r.stage_idx;
