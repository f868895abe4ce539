-- Puts a leased item back to pending, due p_delay_seconds from now, without
-- spending an attempt and without recording a failure: retry_count,
-- error_message, last_error_code and error_history stay as they were, and the
-- item's circuit is not told. For a handler that is not ready yet (a resource
-- still being prepared, a window not yet open), not one that failed.
-- Bounded: the item's snoozes are counted in event_metadata.retryq_snoozes
-- (a number, carried into the finished row and reset by a requeue; a value
-- retryq did not write counts as 0, see snooze_retry_item_outcome). The
-- snooze after p_max_snoozes of them makes the item a dead letter with code
-- snooze_limit instead, so that an item snoozed forever ends where an
-- operator looks. True when p_worker_id held the lease (the item was snoozed,
-- or dead-lettered at the bound); false when it did not (a wrong id or
-- worker, a lease taken over, a second call), as complete and fail answer.
-- Refuses (22023, naming the field) a blank worker id, a delay outside 0 to
-- 31536000 seconds, and p_max_snoozes outside 0 to 10000.
-- p_leased_at: the lease fence (see complete_retry_item).
CREATE OR REPLACE FUNCTION snooze_retry_item(
    p_item_id bigint,
    p_worker_id text,
    p_delay_seconds double precision,
    p_max_snoozes bigint DEFAULT 100,
    p_now timestamptz DEFAULT now(),
    p_leased_at timestamptz DEFAULT NULL
)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
BEGIN
    -- p_now passes as given: the callee tells now() from a moved clock
    RETURN snooze_retry_item_outcome(
        p_item_id, p_worker_id, p_delay_seconds, p_max_snoozes, p_now, p_leased_at
    ) IS NOT NULL;
END;
$$;

REVOKE EXECUTE ON FUNCTION snooze_retry_item FROM public;
GRANT EXECUTE ON FUNCTION snooze_retry_item TO retryq_worker;
