-- Read models of RL and evaluation results. Like run_metrics, they index events by run and step;
-- the trajectories themselves stay in the event payload (stored once).
--
-- A resumed attempt redoes the steps after its checkpoint. The log keeps what every attempt did;
-- these tables keep, for each step, only the newest attempt's rows, so that no trajectory or
-- evaluation is counted twice.

-- One row per TrajectoriesRecorded event: where a step's trajectories are in the log.
CREATE TABLE trajectory_batches (
    position     BIGINT      PRIMARY KEY,
    run_id       UUID        NOT NULL,
    step         BIGINT      NOT NULL,
    attempt      INTEGER     NOT NULL,
    trajectories INTEGER     NOT NULL,
    correct      INTEGER     NOT NULL,
    parallel     INTEGER     NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX trajectory_batches_run_idx ON trajectory_batches (run_id, step);

-- One row per EvaluationReported event.
CREATE TABLE evaluations (
    position             BIGINT           PRIMARY KEY,
    run_id               UUID             NOT NULL,
    step                 BIGINT           NOT NULL,
    attempt              INTEGER          NOT NULL,
    benchmark            TEXT             NOT NULL,
    k                    INTEGER          NOT NULL,
    prompts              INTEGER          NOT NULL,
    mean_at_k            DOUBLE PRECISION NOT NULL,
    pass_at_k            DOUBLE PRECISION NOT NULL,
    parallel_ratio       DOUBLE PRECISION NOT NULL,
    format_valid_ratio   DOUBLE PRECISION NOT NULL,
    mean_response_tokens DOUBLE PRECISION NOT NULL,
    recorded_at          TIMESTAMPTZ      NOT NULL
);
CREATE INDEX evaluations_run_idx ON evaluations (run_id, step);

-- The newest evaluation of each benchmark in each experiment: from its latest stage that
-- evaluated it, the last one reported. A row of the paper's main table is one experiment here.
CREATE VIEW experiment_results AS
SELECT DISTINCT ON (r.experiment_id, e.benchmark)
       r.experiment_id, e.benchmark, e.run_id, r.stage_idx, e.step, e.k, e.prompts, e.mean_at_k,
       e.pass_at_k, e.parallel_ratio, e.format_valid_ratio, e.mean_response_tokens
FROM evaluations e
JOIN runs r ON r.id = e.run_id
ORDER BY r.experiment_id, e.benchmark, r.stage_idx DESC, e.position DESC;
