-- The strategy-evolution analytics: every recorded trajectory flattened into a row, and every
-- parallel block into a row, projected from TrajectoriesRecorded events like any read model
-- (rebuilt by replay). docs/analytics.md documents the columns, the role rule and the views.
--
-- Offsets come in tokens where the trainer counted them and in characters always; imported runs
-- have characters only. `rel_position` uses tokens when known, characters otherwise.

-- Imported runs (the reference code's dumps) have no job, their experiments no spec but what they
-- were read from, and their evaluations no token counts.
ALTER TABLE runs ALTER COLUMN job_id DROP NOT NULL;
ALTER TABLE experiments ALTER COLUMN spec DROP NOT NULL, ADD COLUMN imported_from TEXT;
ALTER TABLE evaluations ALTER COLUMN mean_response_tokens DROP NOT NULL;

CREATE TABLE trajectories (
    -- The TrajectoriesRecorded event and the trajectory's index in it: the keyset of searches.
    position            BIGINT           NOT NULL,
    idx                 INTEGER          NOT NULL,
    run_id              UUID             NOT NULL,
    experiment_id       UUID             NOT NULL,
    step                BIGINT           NOT NULL,
    attempt             INTEGER          NOT NULL,
    prompt_id           TEXT             NOT NULL,
    group_idx           INTEGER          NOT NULL,
    sample              INTEGER          NOT NULL,
    reward              DOUBLE PRECISION NOT NULL,
    correct             BOOLEAN          NOT NULL,
    answer              TEXT,
    truth               TEXT             NOT NULL,
    prompt_tokens       INTEGER,
    response_tokens     INTEGER,
    response_chars      INTEGER          NOT NULL,
    format_valid        BOOLEAN          NOT NULL,
    clipped             BOOLEAN          NOT NULL,
    blocks              INTEGER          NOT NULL,
    paths               INTEGER          NOT NULL,
    exploration_blocks  INTEGER          NOT NULL,
    verification_blocks INTEGER          NOT NULL,
    -- The share of the response inside blocks (tokens when known, else characters).
    block_share         DOUBLE PRECISION NOT NULL,
    response            TEXT             NOT NULL,
    PRIMARY KEY (position, idx)
);
-- Covering: the views aggregate a run's steps from the index alone, however wide the rows.
CREATE INDEX trajectories_run_step_idx ON trajectories (run_id, step)
    INCLUDE (reward, correct, blocks, block_share, format_valid, response_tokens);

CREATE TABLE trajectory_blocks (
    position       BIGINT           NOT NULL,
    idx            INTEGER          NOT NULL,
    block_idx      INTEGER          NOT NULL,
    run_id         UUID             NOT NULL,
    step           BIGINT           NOT NULL,
    attempt        INTEGER          NOT NULL,
    start_token    INTEGER,
    end_token      INTEGER,
    start_char     INTEGER          NOT NULL,
    end_char       INTEGER          NOT NULL,
    rel_position   DOUBLE PRECISION NOT NULL,
    paths          INTEGER          NOT NULL,
    path_tokens    INTEGER[],
    path_chars     INTEGER[]        NOT NULL,
    summary_tokens INTEGER,
    summary_chars  INTEGER,
    role           TEXT             NOT NULL CHECK (role IN ('exploration', 'verification')),
    PRIMARY KEY (position, idx, block_idx)
);
CREATE INDEX trajectory_blocks_run_step_idx ON trajectory_blocks (run_id, step)
    INCLUDE (rel_position, role);

-- Trajectory texts are large and written at volume: compress them (and event payloads, which
-- carry them) with lz4 where the server has it, which costs a fraction of the default pglz.
DO $$
BEGIN
    ALTER TABLE events ALTER COLUMN payload SET COMPRESSION lz4;
    ALTER TABLE trajectories ALTER COLUMN response SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available; texts keep the default compression';
END
$$;

-- Per run and step: how the model uses parallel blocks, and whether it pays off.
CREATE VIEW strategy_evolution AS
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
    FROM trajectories GROUP BY run_id, step
), b AS (
    SELECT run_id, step,
           count(*)                                               AS blocks,
           avg(rel_position)::float8                              AS rel_position_mean,
           percentile_cont(0.25) WITHIN GROUP (ORDER BY rel_position) AS rel_position_q1,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY rel_position) AS rel_position_median,
           percentile_cont(0.75) WITHIN GROUP (ORDER BY rel_position) AS rel_position_q3,
           avg((role = 'exploration')::int)::float8               AS exploration_share,
           avg((role = 'verification')::int)::float8              AS verification_share
    FROM trajectory_blocks GROUP BY run_id, step
)
SELECT t.run_id, t.step, t.trajectories, t.mean_reward, t.accuracy, t.parallel_ratio,
       t.mean_blocks, t.mean_block_share, t.accuracy_parallel, t.accuracy_sequential,
       t.format_valid_ratio, coalesce(b.blocks, 0) AS blocks, b.rel_position_mean,
       b.rel_position_q1, b.rel_position_median, b.rel_position_q3, b.exploration_share,
       b.verification_share
FROM t LEFT JOIN b USING (run_id, step);

-- Per run, over all its steps: the numbers to compare runs by, with the experiment and stage.
CREATE VIEW run_comparison AS
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
    FROM trajectories GROUP BY run_id
), b AS (
    SELECT run_id,
           avg(rel_position)::float8                              AS rel_position_mean,
           avg((role = 'exploration')::int)::float8               AS exploration_share,
           avg((role = 'verification')::int)::float8              AS verification_share
    FROM trajectory_blocks GROUP BY run_id
)
SELECT r.experiment_id, e.name AS experiment, r.stage_idx, s.name AS stage, t.*,
       b.rel_position_mean, b.exploration_share, b.verification_share
FROM t
JOIN runs r ON r.id = t.run_id
JOIN experiments e ON e.id = r.experiment_id
LEFT JOIN stages s ON s.experiment_id = r.experiment_id AND s.idx = r.stage_idx
LEFT JOIN b ON b.run_id = t.run_id;

-- The paper's main table in long form: a row per experiment and benchmark (the latest
-- evaluation), and an 'Avg' row per experiment averaging Mean@k and the parallel ratio.
CREATE VIEW main_table AS
SELECT e.id AS experiment_id, e.name AS method, x.benchmark, x.k, x.prompts, x.step,
       x.parallel_ratio, x.mean_at_k, x.pass_at_k
FROM experiment_results x JOIN experiments e ON e.id = x.experiment_id
UNION ALL
SELECT e.id, e.name, 'Avg', NULL, sum(x.prompts)::int, NULL, avg(x.parallel_ratio),
       avg(x.mean_at_k), avg(x.pass_at_k)
FROM experiment_results x JOIN experiments e ON e.id = x.experiment_id
GROUP BY e.id, e.name;

-- Analysts read everything and write nothing. Roles are cluster-wide: create it once (databases
-- migrating side by side may race), and carry on without it where the service's user may not
-- create roles. `prl psql` logs in as this role; where the server asks for passwords, an
-- administrator gives it one (ALTER ROLE prl_analyst PASSWORD '...').
DO $$
BEGIN
    BEGIN
        CREATE ROLE prl_analyst LOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    GRANT USAGE ON SCHEMA public TO prl_analyst;
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO prl_analyst;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO prl_analyst;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'prl_analyst not set up: % (ask an administrator to create it)', SQLERRM;
END
$$;
