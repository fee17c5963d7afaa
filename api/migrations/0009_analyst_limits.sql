-- The analyst may read everything but never stall the service. Its statements and idle
-- transactions end after a while, and it has few connections (these are its defaults: a session
-- may change them). It cannot hold back the log either way it could: advisory locks (appends
-- serialise on one), and a transaction id (an open transaction that has one holds back
-- pg_snapshot_xmin, below which the relay and the feeds read), which only a write, a temporary
-- table or the xid functions give a read-only role. Those are revoked from PUBLIC, so the
-- service's role is granted them first (the log's tx_id column defaults to
-- pg_current_xact_id()). Migrations must run as the service's role. Where that role may not
-- change roles, functions or the database, a notice says what an administrator should run.
DO $$
DECLARE
    lock_fn regprocedure;
BEGIN
    -- Roles are cluster-wide: databases migrating side by side may race on the same catalog rows
    -- ("tuple concurrently updated"); whichever of them wins sets the same values.
    BEGIN
        ALTER ROLE prl_analyst SET statement_timeout = '5min';
        ALTER ROLE prl_analyst SET idle_in_transaction_session_timeout = '1min';
        ALTER ROLE prl_analyst CONNECTION LIMIT 20;
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'prl_analyst limits not set here: % (an administrator may need to)', SQLERRM;
    END;
    FOR lock_fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'pg_catalog'::regnamespace
          AND ((p.proname LIKE 'pg%advisory%lock%' AND p.proname NOT LIKE '%unlock%')
               OR p.proname IN ('txid_current', 'pg_current_xact_id'))
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO CURRENT_USER', lock_fn);
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', lock_fn);
    END LOOP;
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO CURRENT_USER', current_database());
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    IF has_function_privilege('public', 'pg_advisory_lock(bigint)', 'EXECUTE')
       OR has_database_privilege('public', current_database(), 'TEMPORARY') THEN
        RAISE NOTICE 'the analyst can still hold back the log: an administrator should GRANT '
                     'EXECUTE ON the pg_*advisory*lock*, txid_current and pg_current_xact_id '
                     'functions and TEMPORARY ON DATABASE to the service''s role, then REVOKE '
                     'them FROM PUBLIC';
    END IF;
END
$$;
