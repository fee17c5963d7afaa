-- Evaluations record how they sampled (a protocol: k, temperature, top-p, length limit), with
-- standard errors and, when asked, the greedy accuracy; tables never mix two protocols. Their
-- generations are recorded like RL's trajectories, marked with their benchmark, and the strategy
-- views read RL's rollouts only.

ALTER TABLE evaluations
    ADD COLUMN mean_at_k_se        DOUBLE PRECISION,
    ADD COLUMN pass_at_k_se        DOUBLE PRECISION,
    ADD COLUMN greedy              DOUBLE PRECISION,
    ADD COLUMN temperature         DOUBLE PRECISION,
    ADD COLUMN top_p               DOUBLE PRECISION,
    ADD COLUMN max_response_tokens INTEGER;

-- NULL for RL rollouts; the benchmark (with " (greedy)" for its greedy pass) for an evaluation's.
ALTER TABLE trajectory_batches ADD COLUMN benchmark TEXT;
ALTER TABLE trajectories ADD COLUMN benchmark TEXT;
ALTER TABLE trajectory_blocks ADD COLUMN benchmark TEXT;

DROP INDEX trajectories_run_step_idx;
CREATE INDEX trajectories_run_step_idx ON trajectories (run_id, step)
    INCLUDE (reward, correct, blocks, block_share, format_valid, response_tokens)
    WHERE benchmark IS NULL;
CREATE INDEX trajectories_benchmark_idx ON trajectories (run_id, benchmark, step)
    WHERE benchmark IS NOT NULL;
DROP INDEX trajectory_blocks_run_step_idx;
CREATE INDEX trajectory_blocks_run_step_idx ON trajectory_blocks (run_id, step)
    INCLUDE (rel_position, role) WHERE benchmark IS NULL;

CREATE OR REPLACE VIEW strategy_evolution AS
WITH t AS (
    SELECT run_id, step,
           count(*)                                               AS trajectories,
           avg(reward)::float8                                    AS mean_reward,
           avg(correct::int)::float8                              AS accuracy,
           avg((blocks > 0)::int)::float8                         AS parallel_ratio,
           avg(blocks)::float8                                    AS mean_blocks,
           avg(block_share)::float8                               AS mean_block_share,
           avg(correct::int) FILTER (WHERE blocks > 0)::float8    AS accuracy_parallel,
           avg(correct::int) FILTER (WHERE blocks = 0)::float8    AS accuracy_sequential,
           avg(format_valid::int)::float8                         AS format_valid_ratio
    FROM trajectories WHERE benchmark IS NULL GROUP BY run_id, step
), b AS (
    SELECT run_id, step,
           count(*)                                               AS blocks,
           avg(rel_position)::float8                              AS rel_position_mean,
           percentile_cont(0.25) WITHIN GROUP (ORDER BY rel_position) AS rel_position_q1,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY rel_position) AS rel_position_median,
           percentile_cont(0.75) WITHIN GROUP (ORDER BY rel_position) AS rel_position_q3,
           avg((role = 'exploration')::int)::float8               AS exploration_share,
           avg((role = 'verification')::int)::float8              AS verification_share
    FROM trajectory_blocks WHERE benchmark IS NULL GROUP BY run_id, step
)
SELECT t.run_id, t.step, t.trajectories, t.mean_reward, t.accuracy, t.parallel_ratio,
       t.mean_blocks, t.mean_block_share, t.accuracy_parallel, t.accuracy_sequential,
       t.format_valid_ratio, coalesce(b.blocks, 0) AS blocks, b.rel_position_mean,
       b.rel_position_q1, b.rel_position_median, b.rel_position_q3, b.exploration_share,
       b.verification_share
FROM t LEFT JOIN b USING (run_id, step);

CREATE OR REPLACE VIEW run_comparison AS
WITH t AS (
    SELECT run_id,
           count(DISTINCT step)                                   AS steps,
           max(step)                                              AS last_step,
           count(*)                                               AS trajectories,
           avg(reward)::float8                                    AS mean_reward,
           avg(correct::int)::float8                              AS accuracy,
           avg((blocks > 0)::int)::float8                         AS parallel_ratio,
           avg(blocks)::float8                                    AS mean_blocks,
           avg(correct::int) FILTER (WHERE blocks > 0)::float8    AS accuracy_parallel,
           avg(correct::int) FILTER (WHERE blocks = 0)::float8    AS accuracy_sequential,
           avg(format_valid::int)::float8                         AS format_valid_ratio,
           avg(response_tokens)::float8                           AS mean_response_tokens
    FROM trajectories WHERE benchmark IS NULL GROUP BY run_id
), b AS (
    SELECT run_id,
           avg(rel_position)::float8                              AS rel_position_mean,
           avg((role = 'exploration')::int)::float8               AS exploration_share,
           avg((role = 'verification')::int)::float8              AS verification_share
    FROM trajectory_blocks WHERE benchmark IS NULL GROUP BY run_id
)
SELECT r.experiment_id, e.name AS experiment, r.stage_idx, s.name AS stage, t.*,
       b.rel_position_mean, b.exploration_share, b.verification_share
FROM t
JOIN runs r ON r.id = t.run_id
JOIN experiments e ON e.id = r.experiment_id
LEFT JOIN stages s ON s.experiment_id = r.experiment_id AND s.idx = r.stage_idx
LEFT JOIN b ON b.run_id = t.run_id;

-- The newest evaluation of each benchmark in each experiment: from its latest stage that
-- evaluated it, the last one reported (an experiment's eval stages come after the in-loop
-- evaluations of its RL stages). It carries its protocol, so that tables can keep apart rows
-- sampled differently.
DROP VIEW main_table;
DROP VIEW experiment_results;
CREATE VIEW experiment_results AS
SELECT DISTINCT ON (r.experiment_id, e.benchmark)
       r.experiment_id, e.benchmark, e.run_id, r.stage_idx, e.step, e.k, e.prompts, e.mean_at_k,
       e.pass_at_k, e.parallel_ratio, e.format_valid_ratio, e.mean_response_tokens,
       e.mean_at_k_se, e.pass_at_k_se, e.greedy, e.temperature, e.top_p, e.max_response_tokens
FROM evaluations e
JOIN runs r ON r.id = e.run_id
ORDER BY r.experiment_id, e.benchmark, r.stage_idx DESC, e.position DESC;

-- The paper's main table in long form: a row per experiment and benchmark (the latest
-- evaluation, with its protocol), and an 'Avg' row per experiment and sampling setting averaging
-- the benchmarks (whose k may differ, as Mean@16 and Mean@1 do in the paper's Avg).
CREATE VIEW main_table AS
SELECT e.id AS experiment_id, e.name AS method, x.benchmark, x.k, x.prompts, x.step,
       x.parallel_ratio, x.mean_at_k, x.pass_at_k, x.mean_at_k_se, x.pass_at_k_se, x.greedy,
       x.temperature, x.top_p, x.max_response_tokens
FROM experiment_results x JOIN experiments e ON e.id = x.experiment_id
UNION ALL
SELECT e.id, e.name, 'Avg', NULL, sum(x.prompts)::int, NULL, avg(x.parallel_ratio),
       avg(x.mean_at_k), avg(x.pass_at_k), NULL, NULL, avg(x.greedy), x.temperature, x.top_p,
       x.max_response_tokens
FROM experiment_results x JOIN experiments e ON e.id = x.experiment_id
GROUP BY e.id, e.name, x.temperature, x.top_p, x.max_response_tokens;
