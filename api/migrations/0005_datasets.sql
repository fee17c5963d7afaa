-- Registered datasets: the newest version of each name (the log keeps every version), and what
-- each experiment's registered references resolved to when it was accepted.

CREATE TABLE datasets (
    name          TEXT        PRIMARY KEY,
    stream_id     UUID        NOT NULL,
    version       BIGINT      NOT NULL,
    source        TEXT        NOT NULL,
    splits        JSONB       NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL
);

ALTER TABLE experiments ADD COLUMN datasets JSONB NOT NULL DEFAULT '{}';
