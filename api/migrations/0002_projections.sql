-- Read models. Each is rebuilt from the log by `prl replay`; none holds anything the log lacks.

CREATE TABLE experiments (
    id             UUID        PRIMARY KEY,
    name           TEXT        NOT NULL,
    tags           TEXT[]      NOT NULL,
    model          TEXT        NOT NULL,
    spec           JSONB       NOT NULL,
    status         TEXT        NOT NULL,
    -- Why the experiment failed or was cancelled.
    status_reason  TEXT,
    version        BIGINT      NOT NULL,
    submitted_at   TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    finished_at    TIMESTAMPTZ
);
CREATE INDEX experiments_keyset_idx ON experiments (submitted_at DESC, id DESC);
CREATE INDEX experiments_tags_idx ON experiments USING GIN (tags);
CREATE INDEX experiments_status_idx ON experiments (status);

CREATE TABLE stages (
    experiment_id UUID    NOT NULL REFERENCES experiments (id),
    idx           INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    job_id        UUID,
    run_id        UUID,
    PRIMARY KEY (experiment_id, idx)
);

CREATE TABLE jobs (
    id               UUID        PRIMARY KEY,
    experiment_id    UUID        NOT NULL REFERENCES experiments (id),
    stage_idx        INTEGER     NOT NULL,
    kind             TEXT        NOT NULL,
    run_id           UUID        NOT NULL,
    status           TEXT        NOT NULL,
    attempt          INTEGER     NOT NULL,
    worker_id        TEXT,
    lease_until      TIMESTAMPTZ,
    max_attempts     INTEGER     NOT NULL,
    input_checkpoint JSONB,
    failure_reason   TEXT,
    version          BIGINT      NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX jobs_experiment_idx ON jobs (experiment_id);
CREATE INDEX jobs_leases_idx ON jobs (lease_until) WHERE status = 'running';

CREATE TABLE runs (
    id             UUID        PRIMARY KEY,
    job_id         UUID        NOT NULL,
    experiment_id  UUID        NOT NULL REFERENCES experiments (id),
    stage_idx      INTEGER     NOT NULL,
    status         TEXT        NOT NULL,
    attempt        INTEGER     NOT NULL,
    worker_id      TEXT,
    last_step      BIGINT,
    latest_metrics JSONB       NOT NULL DEFAULT '{}',
    checkpoint     JSONB,
    started_at     TIMESTAMPTZ,
    finished_at    TIMESTAMPTZ
);
CREATE INDEX runs_experiment_idx ON runs (experiment_id);

-- An index of metrics events by run and step; the values stay in the event's payload
-- (`events.payload->'values'`, joined on `position`), so they are stored once. A resumed run may
-- report a step again; `position` orders such rows.
CREATE TABLE run_metrics (
    run_id      UUID        NOT NULL,
    step        BIGINT      NOT NULL,
    position    BIGINT      NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX run_metrics_series_idx ON run_metrics (run_id, step);

CREATE TABLE checkpoints (
    run_id      UUID        NOT NULL,
    step        BIGINT      NOT NULL,
    uri         TEXT        NOT NULL,
    sha256      TEXT        NOT NULL,
    size_bytes  BIGINT      NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, step)
);

CREATE TABLE dead_letters (
    id                   UUID        PRIMARY KEY,
    subject              TEXT        NOT NULL,
    reason               TEXT        NOT NULL,
    dead_letter_sequence BIGINT      NOT NULL,
    bytes                BIGINT      NOT NULL,
    recorded_at          TIMESTAMPTZ NOT NULL
);
