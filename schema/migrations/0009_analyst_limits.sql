-- The analyst may read everything but never stall the service: its statements and idle
-- transactions end after a while (an open transaction holds back the relay and the live feeds),
-- its connections are few, and it cannot take advisory locks (the log's appends serialise on one:
-- an analyst holding it would stop every write). Locks are revoked from PUBLIC, so the service's
-- own role is granted them first. Where the service's role may not change roles or functions, a
-- notice says what an administrator should run.
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
          AND p.proname LIKE 'pg%advisory%lock%' AND p.proname NOT LIKE '%unlock%'
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO CURRENT_USER', lock_fn);
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', lock_fn);
    END LOOP;
    IF has_function_privilege('public', 'pg_advisory_lock(bigint)', 'EXECUTE') THEN
        RAISE NOTICE 'advisory locks are still open to every role: an administrator should '
                     'REVOKE EXECUTE ON the pg_advisory_*lock* functions FROM PUBLIC';
    END IF;
END
$$;
