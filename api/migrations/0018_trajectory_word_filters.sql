-- Full-text trajectory search skips what cannot match without reading texts from the log. Each
-- `trajectory_batches` row (an event's batch) and each `trajectories` row holds a Bloom filter of
-- its texts' words (`prl_schema::word_filter`, written by the ingester: tokenising in
-- PostgreSQL, `to_tsvector` at ~40 µs a text, would cost the ingest more than it has). Before,
-- a page read every candidate's text in log order until enough matched: a word that no
-- trajectory of a run holds read the whole run (1.1 s for 200,000 trajectories).
--
-- Rows written before this migration have no filter (NULL), which passes every query: they are
-- searched as before, and `prl replay` rebuilds them with filters.
ALTER TABLE trajectory_batches ADD COLUMN words BYTEA;
ALTER TABLE trajectories ADD COLUMN words BYTEA;
-- A filter's bits are random: compressing them only costs the ingest.
ALTER TABLE trajectory_batches ALTER COLUMN words SET STORAGE EXTERNAL;

-- Whether `filter` may hold every word of a query. `q` holds each word's placement (a, b, c),
-- from `word_filter::query_numbers`, which the API computes from the query's lexemes; `place`
-- is where the filter's row is in the log (a batch's position; a trajectory's position + idx +
-- 1), whose low 16 bits are the filter's salt s. Bit i of a word is (a + i*b + s*c) mod the
-- filter's size. True without a filter or without a query. One expression, so the planner
-- inlines it (a call per row would cost more than the test); `<> 0` of the bits' AND rather
-- than 12 comparisons, which the planner would take for 12 independent rare conditions,
-- estimate that almost nothing passes, and then sort every candidate before returning a page.
CREATE FUNCTION words_may_contain(filter BYTEA, place BIGINT, q BIGINT[]) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT q IS NULL OR filter IS NULL OR (
        get_bit(filter, (q[1] + (place & 65535) * q[3]) & (length(filter) * 8 - 1))
        & get_bit(filter, (q[1] + q[2] + (place & 65535) * q[3]) & (length(filter) * 8 - 1))
        & get_bit(filter, (q[1] + 2 * q[2] + (place & 65535) * q[3]) & (length(filter) * 8 - 1))
        & get_bit(filter, (q[4] + (place & 65535) * q[6]) & (length(filter) * 8 - 1))
        & get_bit(filter, (q[4] + q[5] + (place & 65535) * q[6]) & (length(filter) * 8 - 1))
        & get_bit(filter, (q[4] + 2 * q[5] + (place & 65535) * q[6]) & (length(filter) * 8 - 1))
        & get_bit(filter, (q[7] + (place & 65535) * q[9]) & (length(filter) * 8 - 1))
        & get_bit(filter, (q[7] + q[8] + (place & 65535) * q[9]) & (length(filter) * 8 - 1))
        & get_bit(filter, (q[7] + 2 * q[8] + (place & 65535) * q[9]) & (length(filter) * 8 - 1))
        & get_bit(filter, (q[10] + (place & 65535) * q[12]) & (length(filter) * 8 - 1))
        & get_bit(filter, (q[10] + q[11] + (place & 65535) * q[12]) & (length(filter) * 8 - 1))
        & get_bit(filter, (q[10] + 2 * q[11] + (place & 65535) * q[12]) & (length(filter) * 8 - 1))) <> 0
$$;

-- The text search walks a run's batches in log order, testing each batch's filter, and stops
-- once a page is full.
CREATE INDEX trajectory_batches_run_position_idx ON trajectory_batches (run_id, position);
