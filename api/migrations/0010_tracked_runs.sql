-- Runs tracked live from other tools (ExperimentTracked and what follows it on the experiment's
-- stream), the MLflow experiments MLflow clients log them into, and the artifacts stored for
-- runs. Read models like the others: `prl replay` rebuilds them from the log.

CREATE TABLE mlflow_experiments (
    id              UUID        PRIMARY KEY,
    -- Unique, as MLflow's: a create or rename to a taken name fails its transaction.
    name            TEXT        NOT NULL UNIQUE,
    tags            JSONB       NOT NULL,
    deleted         BOOLEAN     NOT NULL DEFAULT false,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE tracked_runs (
    experiment_id     UUID        PRIMARY KEY REFERENCES experiments (id),
    run_id            UUID        NOT NULL UNIQUE,
    source            TEXT        NOT NULL,
    mlflow_experiment UUID,
    name              TEXT        NOT NULL,
    user_id           TEXT,
    -- TrackedStatus: scheduled, running, finished, failed, killed.
    status            TEXT        NOT NULL,
    started_at        TIMESTAMPTZ NOT NULL,
    ended_at          TIMESTAMPTZ,
    deleted           BOOLEAN     NOT NULL DEFAULT false,
    params            JSONB       NOT NULL DEFAULT '{}',
    tags              JSONB       NOT NULL DEFAULT '{}',
    inputs            JSONB       NOT NULL DEFAULT '[]',
    -- Where a live client (a follower) was at its last recorded batch.
    cursor            JSONB,
    updated_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX tracked_runs_group_idx ON tracked_runs (mlflow_experiment, started_at DESC);

CREATE TABLE artifacts (
    run_id      UUID        NOT NULL,
    path        TEXT        NOT NULL,
    size_bytes  BIGINT      NOT NULL,
    sha256      TEXT        NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, path)
);
