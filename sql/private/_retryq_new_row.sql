-- A new active row (the guide's INSERT, add_many's COPY, the enqueue
-- functions, a requeue), before PostgreSQL checks it; the trigger's WHEN calls
-- it only for a row that has a NULL where the table has a default, JSON null
-- metadata, a server's metadata key, tags not numbered from 1, or breaks one of the
-- table's rules, so a good row costs one expression and no call.
-- - NULL takes the column's default, so that a client sending NULL for an
--   optional field (Go's nil slice, lib/pq's nil) never loses the failed
--   operation it is enqueuing. The defaults are those of
--   tables/daz_retry_queue.sql (tests/sql/test_hostile.py proves each equal).
-- - Tags with other bounds than 1-based are renumbered from 1.
-- - JSON null metadata means "no metadata": '{}' (Go marshals a nil map as
--   null). JSON null event_data stays refused: the payload is required.
-- - The server's keys of event_metadata are dropped from a new item:
--   retryq_snoozes (a producer's value would count as snoozes the item never
--   had; a requeue drops it too, for a fresh budget) and retryq_former_id
--   (written at a burial; a requeued row keeps it: it was leased or has a
--   history, the burial's entry at least). A producer cannot write
--   last_attempted_at or error_history; the enqueue functions write neither.
-- - A row that breaks a rule is refused by _retryq_finished_row_ok under the
--   public table's constraint name, not the private partition's.
-- - A missing event_type or event_data is refused with 23502 naming the
--   column and daz_retry_queue.
-- SECURITY DEFINER: a producer may not call the private helpers itself.
CREATE OR REPLACE FUNCTION _retryq_new_row()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
BEGIN
    IF NEW.event_type IS NULL OR NEW.event_data IS NULL THEN
        RAISE EXCEPTION
            'null value in column "%" of relation "daz_retry_queue" violates not-null constraint',
            CASE WHEN NEW.event_type IS NULL THEN 'event_type' ELSE 'event_data' END
            USING ERRCODE = 'not_null_violation', TABLE = 'daz_retry_queue',
                COLUMN = CASE
                    WHEN NEW.event_type IS NULL THEN 'event_type' ELSE 'event_data'
                END;
    END IF;
    NEW.id := coalesce(NEW.id, pg_catalog.nextval('daz_retry_queue_id_seq'));
    NEW.event_id := coalesce(NEW.event_id, gen_random_uuid());
    IF NEW.event_metadata IS NULL OR pg_catalog.jsonb_typeof(NEW.event_metadata) = 'null' THEN
        NEW.event_metadata := '{}';
    END IF;
    IF pg_catalog.jsonb_typeof(NEW.event_metadata) = 'object' THEN
        NEW.event_metadata := NEW.event_metadata - CASE
            WHEN NEW.last_attempted_at IS NULL AND NEW.error_history = '[]'::jsonb
                THEN '{retryq_snoozes,retryq_former_id}'::text[]
            ELSE '{retryq_snoozes}'::text[]
        END;
    END IF;
    NEW.retry_count := coalesce(NEW.retry_count, 0);
    NEW.max_retries := coalesce(NEW.max_retries, 3);
    NEW.retry_delay_seconds := coalesce(NEW.retry_delay_seconds, 60);
    NEW.backoff_multiplier := coalesce(NEW.backoff_multiplier, 2.0);
    NEW.max_retry_delay_seconds := coalesce(NEW.max_retry_delay_seconds, 86400);
    NEW.retry_jitter := coalesce(NEW.retry_jitter, 0);
    NEW.priority := coalesce(NEW.priority, 5);
    NEW.tags := coalesce(NEW.tags, '{}');
    -- tags come back 1-based: '[5:6]={a,b}' is stored as {a,b} (drivers
    -- such as lib/pq cannot scan other bounds); more dimensions are refused
    -- by _retryq_inserted
    IF pg_catalog.array_ndims(NEW.tags) = 1 AND pg_catalog.array_lower(NEW.tags, 1) <> 1 THEN
        NEW.tags := NEW.tags[pg_catalog.array_lower(NEW.tags, 1):pg_catalog.array_upper(NEW.tags, 1)];
    END IF;
    NEW.error_history := coalesce(NEW.error_history, '[]');
    NEW.created_at := coalesce(NEW.created_at, statement_timestamp());
    NEW.next_retry_at := coalesce(NEW.next_retry_at, statement_timestamp());
    PERFORM _retryq_finished_row_ok(
        NEW.status, NEW.event_type, NEW.priority, NEW.max_retries,
        NEW.retry_count, NEW.retry_delay_seconds, NEW.backoff_multiplier,
        NEW.max_retry_delay_seconds, NEW.retry_jitter, NEW.event_data,
        NEW.event_metadata, NEW.locked_by, NEW.locked_until, NEW.completed_at,
        NEW.dead_lettered_at
    );
    RETURN NEW;
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_new_row FROM public;

-- Named to fire first (triggers fire in name order): _retryq_2_clock sees the
-- defaults filled in. The condition lists the NOT NULL columns that have a
-- default, then the active partition's CHECK constraints.
CREATE OR REPLACE TRIGGER _retryq_1_new_row
BEFORE INSERT ON _retryq_active
FOR EACH ROW
WHEN (
    new.id IS NULL OR new.event_id IS NULL OR new.event_type IS NULL
    OR new.event_data IS NULL OR new.event_metadata IS NULL
    OR new.retry_count IS NULL OR new.max_retries IS NULL
    OR new.retry_delay_seconds IS NULL OR new.backoff_multiplier IS NULL
    OR new.max_retry_delay_seconds IS NULL OR new.retry_jitter IS NULL
    OR new.priority IS NULL OR new.tags IS NULL OR new.error_history IS NULL
    OR new.created_at IS NULL OR new.next_retry_at IS NULL
    OR pg_catalog.array_lower(new.tags, 1) <> 1
    OR pg_catalog.jsonb_exists(new.event_metadata, 'retryq_snoozes')
    OR pg_catalog.jsonb_exists(new.event_metadata, 'retryq_former_id')
    OR NOT (
        new.backoff_multiplier BETWEEN 1::float8 AND 10::float8
        AND (new.status = 'completed') = (new.completed_at IS NOT NULL)
        AND (new.status = 'dead_letter') = (new.dead_lettered_at IS NOT NULL)
        AND pg_catalog.jsonb_typeof(new.event_data) <> 'null'
        AND pg_catalog.jsonb_typeof(new.event_metadata) = 'object'
        AND pg_catalog.length(new.event_type) <= 200
        AND (
            pg_catalog.ascii(new.event_type) BETWEEN 33 AND 126
            OR new.event_type ~ '[^[:space:]\u0085\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f\u2000-\u200f\u2028-\u202f\u205f-\u206f\u2800\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]'  -- noqa: LT05
        )
        AND (new.status = 'processing')
        = (new.locked_by IS NOT NULL AND new.locked_until IS NOT NULL)
        AND new.max_retries BETWEEN 0 AND 1000
        AND new.max_retry_delay_seconds BETWEEN 0::float8 AND 31536000::float8
        AND new.priority BETWEEN 1 AND 10
        AND new.retry_count BETWEEN 0 AND new.max_retries
        AND new.retry_delay_seconds BETWEEN 0::float8 AND 31536000::float8
        AND new.retry_jitter BETWEEN 0::float8 AND 1::float8
    )
)
EXECUTE FUNCTION _retryq_new_row();

-- retryq:undo
DROP TRIGGER _retryq_1_new_row ON _retryq_active;
DROP FUNCTION _retryq_new_row;
