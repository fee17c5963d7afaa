-- Trajectory search bounds a run's scan of trajectories_search_idx by the positions of the asked
-- steps' events: their smallest and largest, from this index alone (a run of the paper's size
-- has a few thousand events, against millions of index entries of trajectories before a late
-- step). Every trajectory's event has its row here, with the same run and step: both tables are
-- written from the same events, in the same transaction, and both drop a superseded attempt's.
DROP INDEX trajectory_batches_run_idx;
CREATE INDEX trajectory_batches_run_idx ON trajectory_batches (run_id, step) INCLUDE (position);
