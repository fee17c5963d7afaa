-- A trajectory's text is kept once, in the log. The projection kept a second copy in
-- `trajectories.response`: about 940 bytes a row, stored uncompressed (PostgreSQL compresses a
-- row's values only past 2 KB), which was most of what each trajectory cost on disk and in WAL,
-- where the log's copy sits in its event's batch, compressed with its neighbours.
--
-- Dropping the column is instant: rows written before keep their text on disk until they are
-- rewritten (`VACUUM FULL trajectories`, which locks the table while it runs).
ALTER TABLE trajectories DROP COLUMN response;

-- The text of trajectory `idx` of the event at `event_position`. It reads the event's whole
-- payload (a batch), so a query over many trajectories of one event should read the payload
-- once instead (the search endpoint does).
CREATE FUNCTION trajectory_text(event_position BIGINT, idx INTEGER) RETURNS TEXT
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT payload->'trajectories'->idx->>'text' FROM events WHERE position = event_position
$$;

-- `response` stays readable as a computed column: `t.response` (or `response(t)`) for a row `t`
-- of `trajectories`.
CREATE FUNCTION response(t trajectories) RETURNS TEXT
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT trajectory_text(t.position, t.idx)
$$;

-- Trajectory search finds a page's keys from this index alone: a run's rows in log order, with
-- every column the search filters by, so the filters cost no heap read and the planner has no
-- reason to prefer walking the primary key through the whole log (with 0013's narrower index it
-- sometimes did, its estimates a few percent apart: 96 ms for a page instead of 2). It replaces
-- 0013's index.
CREATE INDEX trajectories_search_idx ON trajectories (run_id, position, idx, step)
    INCLUDE (correct, blocks, exploration_blocks, verification_blocks, reward, benchmark);
DROP INDEX trajectories_run_position_idx;
