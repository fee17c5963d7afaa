-- A resumed attempt redoes the steps after its checkpoint: each step's metrics are kept for its
-- newest attempt only, as trajectory_batches and evaluations already were.
ALTER TABLE run_metrics ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
UPDATE run_metrics m SET attempt = (e.payload->>'attempt')::int
FROM events e WHERE e.position = m.position AND e.payload ? 'attempt';
DELETE FROM run_metrics m USING run_metrics newer
WHERE newer.run_id = m.run_id AND newer.step = m.step AND newer.attempt > m.attempt;
ALTER TABLE run_metrics ALTER COLUMN attempt DROP DEFAULT;
