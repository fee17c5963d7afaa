-- One index a trajectory instead of two. `trajectories` kept a primary key on (position, idx)
-- beside trajectories_search_idx (run_id, position, idx, step) INCLUDE (...), and every row
-- written paid for both. The search index becomes the primary key: position determines run_id
-- and step (a trajectory's event belongs to one run and records one step), so it is unique
-- exactly when (position, idx) is, and it keeps guarding against a row written twice. COPY of
-- 1M of the analytics bench's rows into a table with both indexes against one with this key
-- alone: 3.3-3.5 s against 2.6-2.8 s, and 30 B a trajectory less on disk; in the analytics
-- bench's ingest, WAL 801 -> 726 B a trajectory at 10M.
--
-- A lookup by (position, idx) must now name the run too, or it reads the whole index: the
-- ingester's and the search's statements do, and so does the step refresh below. A psql user
-- joining `trajectory_blocks` to `trajectories` joins USING (run_id, position, idx).
--
-- On an existing database the new key is built from the table, which is locked meanwhile for
-- reads and writes (about 1.5 s per million trajectories on 2 cores, as 0014's index of the
-- same shape), then the old search index is dropped.
ALTER TABLE trajectories
    DROP CONSTRAINT trajectories_pkey,
    ADD CONSTRAINT trajectories_pkey PRIMARY KEY (run_id, position, idx, step)
        INCLUDE (correct, blocks, exploration_blocks, verification_blocks, reward, benchmark);
DROP INDEX trajectories_search_idx;

-- The step refresh of 0019, reading each event's trajectories by their run and position.
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
$$;
