-- The append-only event log: the source of truth. Everything else is a projection of it.
CREATE TABLE events (
    position       BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_type    TEXT        NOT NULL,
    stream_id      UUID        NOT NULL,
    version        BIGINT      NOT NULL CHECK (version >= 1),
    event_id       UUID        NOT NULL,
    event_type     TEXT        NOT NULL,
    schema_version INTEGER     NOT NULL,
    payload        JSONB       NOT NULL,
    metadata       JSONB       NOT NULL DEFAULT '{}',
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The writing transaction: tailing readers stay below pg_snapshot_xmin(pg_current_snapshot()).
    tx_id          XID8        NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

-- The outbox relay's scan: small, since only job attempts are published.
CREATE INDEX events_job_queued_idx ON events (position) WHERE event_type = 'JobQueued';

CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only (% refused)', TG_OP;
END $$;

CREATE TRIGGER events_no_update_or_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();

-- How far each tailing reader (the outbox relay) has got.
CREATE TABLE reader_checkpoints (
    reader   TEXT   PRIMARY KEY,
    position BIGINT NOT NULL
);
