-- Operator: sets a key's failure threshold (0: never trips), first cool-down
-- and longest cool-down. NULL leaves a setting as it is; p_reset first makes
-- the key follow the defaults again. With p_event_type NULL (and
-- p_plugin_name NULL) it sets the defaults that every key follows.
CREATE OR REPLACE FUNCTION retry_circuit_configure(
    p_event_type text,
    p_plugin_name text DEFAULT NULL,
    p_failure_threshold bigint DEFAULT NULL,
    p_cooldown_seconds double precision DEFAULT NULL,
    p_max_cooldown_seconds double precision DEFAULT NULL,
    p_reset boolean DEFAULT FALSE,
    p_now timestamptz DEFAULT now()
)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
BEGIN
    -- NULL means the default (a driver's unused argument: Go's nil, lib/pq's)
    p_reset := coalesce(p_reset, FALSE);
    -- the server's clock unless the owner moves it (see _retryq_clock)
    IF p_now IS NULL OR p_now = now() THEN
        p_now := clock_timestamp();
    ELSE
        p_now := _retryq_clock(p_now);
    END IF;
    PERFORM _retryq_check(
        p_failure_threshold IS NULL
        OR p_failure_threshold BETWEEN 0 AND 1000000,
        'failure_threshold', 'must be between 0 and 1000000'
    );
    PERFORM _retryq_check(
        p_cooldown_seconds IS NULL
        OR p_cooldown_seconds > 0::float8 AND p_cooldown_seconds <= 31536000::float8,
        'cooldown_seconds', 'must be above 0 and at most 31536000'
    );
    PERFORM _retryq_check(
        p_max_cooldown_seconds IS NULL
        OR p_max_cooldown_seconds > 0::float8 AND p_max_cooldown_seconds <= 31536000::float8,
        'max_cooldown_seconds', 'must be above 0 and at most 31536000'
    );
    PERFORM _retryq_check(
        p_reset IS NOT NULL, 'reset', 'must not be null'
    );
    IF p_event_type IS NULL THEN
        PERFORM _retryq_check(
            p_plugin_name IS NULL, 'event_type',
            'must be given with plugin_name (null sets the defaults)'
        );
        PERFORM _retryq_check(
            NOT p_reset, 'reset', 'the defaults cannot be reset'
        );
        PERFORM _retryq_check(
            coalesce(p_max_cooldown_seconds, d.max_cooldown_seconds)
            >= coalesce(p_cooldown_seconds, d.cooldown_seconds),
            'max_cooldown_seconds', 'must not be below cooldown_seconds'
        )
        FROM _retryq_circuit_defaults AS d;
        UPDATE _retryq_circuit_defaults AS d
        SET
            failure_threshold = coalesce(p_failure_threshold, d.failure_threshold),
            cooldown_seconds = coalesce(p_cooldown_seconds, d.cooldown_seconds),
            max_cooldown_seconds = coalesce(
                p_max_cooldown_seconds, d.max_cooldown_seconds
            );
        RETURN TRUE;
    END IF;
    PERFORM _retryq_check_circuit_key(p_event_type);
    PERFORM _retryq_check_plugin_name(p_plugin_name);
    -- lock order (see _retryq_circuit_lock): waits for the row only while
    -- this transaction holds nothing, else refuses rather than risk a deadlock
    IF NOT _retryq_circuit_lock(p_event_type, coalesce(p_plugin_name, '')) THEN
        RAISE EXCEPTION 'retryq: the circuit of (%, %) is held by another transaction',
            p_event_type, coalesce(p_plugin_name, '')
            USING ERRCODE = 'lock_not_available',
            HINT = 'Retry, or change circuits before anything else in the transaction.';
    END IF;
    UPDATE _retryq_circuit AS c
    SET
        failure_threshold = coalesce(
            p_failure_threshold,
            CASE WHEN NOT p_reset THEN c.failure_threshold END
        ),
        cooldown_seconds = coalesce(
            p_cooldown_seconds, CASE WHEN NOT p_reset THEN c.cooldown_seconds END
        ),
        max_cooldown_seconds = coalesce(
            p_max_cooldown_seconds,
            CASE WHEN NOT p_reset THEN c.max_cooldown_seconds END
        )
    WHERE c.event_type = p_event_type
        AND c.plugin_name = coalesce(p_plugin_name, '');
    -- the key's settings as they now resolve, held to the defaults' rule (a
    -- refusal undoes the statement: nothing is written)
    PERFORM _retryq_check(
        coalesce(c.max_cooldown_seconds, d.max_cooldown_seconds)
        >= coalesce(c.cooldown_seconds, d.cooldown_seconds),
        'max_cooldown_seconds', 'must not be below cooldown_seconds'
    )
    FROM _retryq_circuit AS c
    CROSS JOIN _retryq_circuit_defaults AS d
    WHERE c.event_type = p_event_type
        AND c.plugin_name = coalesce(p_plugin_name, '');
    RETURN TRUE;
END;
$$;

REVOKE EXECUTE ON FUNCTION retry_circuit_configure FROM public;
GRANT EXECUTE ON FUNCTION retry_circuit_configure TO retryq_admin;
