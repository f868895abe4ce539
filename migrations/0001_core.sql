-- retryq core: the queue table, its state-change functions and its views.
--
-- Installs into the first schema of the deploying connection's search_path, so
-- that the integration guide's unqualified statements run as written. Every
-- function pins its search_path to that schema (see the DO block at the end).

-- The parent is what clients see. Rows live in one of two partitions: active
-- (pending, processing) and finished (completed, dead_letter). Rows never move
-- between partitions by UPDATE: a cross-partition UPDATE makes a concurrent
-- SELECT ... FOR UPDATE SKIP LOCKED fail with "tuple to be locked was already
-- moved to another partition". The functions DELETE from one and INSERT into the
-- other instead, which a concurrent locker simply skips.
CREATE SEQUENCE daz_retry_queue_id_seq AS bigint;

CREATE TABLE daz_retry_queue (
    id bigint NOT NULL DEFAULT nextval('daz_retry_queue_id_seq'),
    event_id uuid NOT NULL DEFAULT gen_random_uuid(),
    event_type text NOT NULL,
    channel_name text,
    plugin_name text,
    event_data jsonb NOT NULL,
    event_metadata jsonb NOT NULL DEFAULT '{}',
    retry_count integer NOT NULL DEFAULT 0,
    max_retries integer NOT NULL DEFAULT 3,
    retry_delay_seconds double precision NOT NULL DEFAULT 60,
    backoff_multiplier double precision NOT NULL DEFAULT 2.0,
    max_retry_delay_seconds double precision NOT NULL DEFAULT 86400,
    retry_jitter double precision NOT NULL DEFAULT 0,
    priority integer NOT NULL DEFAULT 5,
    correlation_id text,
    tags text[] NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'pending',
    error_message text,
    last_error_code text,
    error_history jsonb NOT NULL DEFAULT '[]',
    created_at timestamptz NOT NULL DEFAULT now(),
    next_retry_at timestamptz NOT NULL DEFAULT now(),
    last_attempted_at timestamptz,
    completed_at timestamptz,
    dead_lettered_at timestamptz,
    locked_by text,
    locked_until timestamptz,
    CONSTRAINT daz_retry_queue_status_check CHECK (
        status IN ('pending', 'processing', 'completed', 'dead_letter')
    ),
    -- not blank: tabs and newlines count as blank too, which btrim misses
    CONSTRAINT daz_retry_queue_event_type_check CHECK (
        length(event_type) <= 200 AND event_type ~ '[^[:space:]]'
    ),
    CONSTRAINT daz_retry_queue_priority_check CHECK (priority BETWEEN 1 AND 10),
    CONSTRAINT daz_retry_queue_max_retries_check CHECK (
        max_retries BETWEEN 0 AND 1000
    ),
    CONSTRAINT daz_retry_queue_retry_count_check CHECK (
        retry_count BETWEEN 0 AND max_retries
    ),
    CONSTRAINT daz_retry_queue_retry_delay_seconds_check CHECK (
        retry_delay_seconds BETWEEN 0 AND 31536000
    ),
    CONSTRAINT daz_retry_queue_backoff_multiplier_check CHECK (
        backoff_multiplier BETWEEN 1 AND 10
    ),
    CONSTRAINT daz_retry_queue_max_retry_delay_seconds_check CHECK (
        max_retry_delay_seconds BETWEEN 0 AND 31536000
    ),
    CONSTRAINT daz_retry_queue_retry_jitter_check CHECK (
        retry_jitter BETWEEN 0 AND 1
    ),
    CONSTRAINT daz_retry_queue_event_data_check CHECK (
        jsonb_typeof(event_data) <> 'null'
    ),
    CONSTRAINT daz_retry_queue_event_metadata_check CHECK (
        jsonb_typeof(event_metadata) = 'object'
    ),
    CONSTRAINT daz_retry_queue_lease_check CHECK (
        (status = 'processing') = (locked_by IS NOT NULL AND locked_until IS NOT NULL)
    ),
    CONSTRAINT daz_retry_queue_completed_at_check CHECK (
        (status = 'completed') = (completed_at IS NOT NULL)
    ),
    CONSTRAINT daz_retry_queue_dead_lettered_at_check CHECK (
        (status = 'dead_letter') = (dead_lettered_at IS NOT NULL)
    )
) PARTITION BY LIST (status);

ALTER SEQUENCE daz_retry_queue_id_seq OWNED BY daz_retry_queue.id;

COMMENT ON TABLE daz_retry_queue IS
'retryq: failed operations waiting to be retried. Insert freely; '
'change state only through the retryq functions.';

-- The hot partition. Only (priority, next_retry_at, id) is indexed besides the
-- key, and acquire leaves those columns alone, so taking a lease is a HOT update
-- that writes no index entry; fillfactor leaves room on each page for that.
CREATE TABLE _retryq_active PARTITION OF daz_retry_queue
FOR VALUES IN ('pending', 'processing')
WITH (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);

ALTER TABLE _retryq_active ADD CONSTRAINT _retryq_active_pkey PRIMARY KEY (id);

CREATE INDEX _retryq_active_due_idx
ON _retryq_active (priority, next_retry_at, id);

-- Finished items stay visible through daz_retry_queue until cleanup removes
-- them, but never sit on the acquire path.
CREATE TABLE _retryq_finished PARTITION OF daz_retry_queue
FOR VALUES IN ('completed', 'dead_letter');

ALTER TABLE _retryq_finished
ADD CONSTRAINT _retryq_finished_pkey PRIMARY KEY (id);

CREATE INDEX _retryq_finished_age_idx
ON _retryq_finished ((coalesce(completed_at, dead_lettered_at)));

CREATE INDEX _retryq_finished_dead_idx
ON _retryq_finished (event_type, dead_lettered_at)
WHERE status = 'dead_letter';

-- Dead letters that cleanup removed from the queue, kept for inspection.
CREATE TABLE daz_retry_queue_archive (
    LIKE daz_retry_queue INCLUDING DEFAULTS,
    archived_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT daz_retry_queue_archive_pkey PRIMARY KEY (id)
);

CREATE INDEX daz_retry_queue_archive_archived_at_idx
ON daz_retry_queue_archive (archived_at);

-- The LISTEN channel for "an item is due now": the install schema and the
-- table name, e.g. "public.daz_retry_queue". A channel name holds at most 63
-- bytes, so a schema name longer than 47 bytes gives "retryq.<schema oid>"
-- instead (pg_notify would refuse the long one, and every INSERT with it).
CREATE FUNCTION retry_queue_channel()
RETURNS text
-- PL/pgSQL, not SQL: a SQL function with a SET clause (the pinned
-- search_path) cannot be inlined and is planned anew in every transaction.
LANGUAGE plpgsql
STABLE
AS $$
BEGIN
    RETURN CASE
        WHEN octet_length(current_schema()) <= 47
            THEN current_schema() || '.daz_retry_queue'
        ELSE 'retryq.' || (
            SELECT n.oid FROM pg_namespace AS n
            WHERE n.nspname = current_schema()
        )
    END;
END;
$$;

-- Wakes listening workers once per inserting statement, not once per row.
CREATE FUNCTION _retryq_notify_insert()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify(retry_queue_channel(), 'insert');
    RETURN NULL;
END;
$$;

CREATE TRIGGER daz_retry_queue_notify
AFTER INSERT ON daz_retry_queue
FOR EACH STATEMENT EXECUTE FUNCTION _retryq_notify_insert();

-- Raises 22023 invalid_parameter_value naming the parameter when p_ok is not
-- true (NULL counts as not ok).
CREATE FUNCTION _retryq_check(p_ok boolean, p_field text, p_rule text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
AS $$
BEGIN
    IF p_ok IS NOT TRUE THEN
        RAISE EXCEPTION 'retryq: invalid %: %', p_field, p_rule
            USING ERRCODE = 'invalid_parameter_value', COLUMN = p_field;
    END IF;
END;
$$;

-- PL/pgSQL, not SQL: a SQL function with a SET clause is never inlined and
-- is parsed and planned again in every transaction, which cost the hot path
-- more than the rest of complete_retry_item.
CREATE FUNCTION _retryq_check_worker(p_worker_id text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
AS $$
BEGIN
    PERFORM _retryq_check(
        length(btrim(p_worker_id)) BETWEEN 1 AND 200,
        'worker_id', 'must be a non-empty string of at most 200 characters'
    );
END;
$$;

-- The wait before retry number p_retry (1-based): delay * multiplier^(retry-1),
-- capped, then shortened by up to p_jitter of itself. Computed in logarithms so
-- that a large exponent caps instead of overflowing.
CREATE FUNCTION _retryq_backoff(
    p_retry integer,
    p_delay double precision,
    p_multiplier double precision,
    p_cap double precision,
    p_jitter double precision
)
RETURNS interval
-- PL/pgSQL for the same reason as retry_queue_channel
LANGUAGE plpgsql
VOLATILE
AS $$
BEGIN
    RETURN make_interval(secs => (
        CASE
            WHEN p_delay = 0 OR p_cap = 0 THEN 0
            WHEN p_delay >= p_cap THEN p_cap
            WHEN ln(p_delay) + (p_retry - 1) * ln(p_multiplier) >= ln(p_cap)
                THEN p_cap
            ELSE p_delay * power(p_multiplier, p_retry - 1)
        END
    ) * (1 - p_jitter * random()));
END;
$$;

-- Moves the given active rows to the finished partition as dead letters,
-- appending p_entry (with its attempt number filled in) to each history.
-- Callers hold the row locks.
CREATE FUNCTION _retryq_bury(
    p_ids bigint[],
    p_entry jsonb,
    p_now timestamptz
)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    v_count integer;
BEGIN
    WITH gone AS (
        DELETE FROM _retryq_active AS a
        WHERE a.id = ANY(p_ids)
        RETURNING a.*
    )
    INSERT INTO _retryq_finished (
        id, event_id, event_type, channel_name, plugin_name, event_data,
        event_metadata, retry_count, max_retries, retry_delay_seconds,
        backoff_multiplier, max_retry_delay_seconds, retry_jitter, priority,
        correlation_id, tags, status, error_message, last_error_code,
        error_history, created_at, next_retry_at, last_attempted_at,
        completed_at, dead_lettered_at, locked_by, locked_until
    )
    SELECT
        g.id, g.event_id, g.event_type, g.channel_name, g.plugin_name,
        g.event_data, g.event_metadata, g.retry_count, g.max_retries,
        g.retry_delay_seconds, g.backoff_multiplier, g.max_retry_delay_seconds,
        g.retry_jitter, g.priority, g.correlation_id, g.tags, 'dead_letter',
        p_entry ->> 'error', p_entry ->> 'code',
        g.error_history || jsonb_build_array(
            p_entry || jsonb_build_object(
                'attempt', jsonb_array_length(g.error_history) + 1,
                'worker_id', coalesce(p_entry ->> 'worker_id', g.locked_by)
            )
        ),
        g.created_at, g.next_retry_at, g.last_attempted_at, NULL, p_now,
        NULL, NULL
    FROM gone AS g;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

-- Adds one item; the same as the guide's INSERT, with named, defaulted
-- parameters and an optional delay before the first attempt.
CREATE FUNCTION enqueue_retry_item(
    p_event_type text,
    p_event_data jsonb,
    p_channel_name text DEFAULT NULL,
    p_plugin_name text DEFAULT NULL,
    p_event_metadata jsonb DEFAULT '{}',
    p_max_retries integer DEFAULT 3,
    p_retry_delay_seconds double precision DEFAULT 60,
    p_backoff_multiplier double precision DEFAULT 2.0,
    p_priority integer DEFAULT 5,
    p_correlation_id text DEFAULT NULL,
    p_tags text[] DEFAULT '{}',
    p_delay_seconds double precision DEFAULT 0,
    p_max_retry_delay_seconds double precision DEFAULT 86400,
    p_retry_jitter double precision DEFAULT 0,
    p_now timestamptz DEFAULT now()
)
RETURNS TABLE (id bigint, event_id uuid)
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM _retryq_check(
        p_delay_seconds BETWEEN 0 AND 31536000,
        'delay_seconds', 'must be between 0 and 31536000'
    );
    RETURN QUERY
    INSERT INTO daz_retry_queue AS q (
        event_type, channel_name, plugin_name, event_data, event_metadata,
        max_retries, retry_delay_seconds, backoff_multiplier, priority,
        correlation_id, tags, max_retry_delay_seconds, retry_jitter,
        created_at, next_retry_at
    ) VALUES (
        p_event_type, p_channel_name, p_plugin_name, p_event_data,
        coalesce(p_event_metadata, '{}'), p_max_retries,
        p_retry_delay_seconds, p_backoff_multiplier, p_priority,
        p_correlation_id, coalesce(p_tags, '{}'), p_max_retry_delay_seconds,
        p_retry_jitter, p_now,
        p_now + make_interval(secs => p_delay_seconds)
    )
    RETURNING q.id, q.event_id;
END;
$$;

-- Adds many items in one statement. p_items is a JSON array of objects whose
-- keys are enqueue_retry_item's parameter names without the p_ prefix; absent
-- keys take the same defaults. Returns the new ids in input order.
CREATE FUNCTION enqueue_retry_items(
    p_items jsonb,
    p_now timestamptz DEFAULT now()
)
RETURNS TABLE (id bigint, event_id uuid)
LANGUAGE plpgsql
AS $$
DECLARE
    v_known constant text[] := ARRAY[
        'event_type', 'event_data', 'channel_name', 'plugin_name',
        'event_metadata', 'max_retries', 'retry_delay_seconds',
        'backoff_multiplier', 'priority', 'correlation_id', 'tags',
        'delay_seconds', 'max_retry_delay_seconds', 'retry_jitter'
    ];
    v_problem text;
    v_unknown text;
BEGIN
    PERFORM _retryq_check(
        jsonb_typeof(p_items) = 'array', 'items', 'must be a JSON array'
    );
    -- One pass over the elements finds the first that is not an object, has
    -- a key we do not know (a misspelt key would silently fall back to its
    -- default) or an out-of-range delay; the table's constraints check the rest.
    SELECT
        CASE
            WHEN jsonb_typeof(e.v) <> 'object' THEN 'not_object'
            WHEN e.v - v_known <> '{}' THEN 'unknown_key'
            ELSE 'delay_seconds'
        END,
        CASE
            WHEN jsonb_typeof(e.v) = 'object'
                THEN (SELECT min(k) FROM jsonb_object_keys(e.v - v_known) AS k)
        END
    INTO v_problem, v_unknown
    FROM jsonb_array_elements(p_items) AS e (v)
    WHERE jsonb_typeof(e.v) <> 'object'
        OR e.v - v_known <> '{}'
        OR (e.v ->> 'delay_seconds')::double precision
        NOT BETWEEN 0 AND 31536000
    LIMIT 1;
    PERFORM _retryq_check(
        v_problem IS DISTINCT FROM 'not_object',
        'items', 'every element must be a JSON object'
    );
    PERFORM _retryq_check(
        v_problem IS DISTINCT FROM 'unknown_key',
        'items', format('unknown key %L', v_unknown)
    );
    PERFORM _retryq_check(
        v_problem IS DISTINCT FROM 'delay_seconds',
        'delay_seconds', 'must be between 0 and 31536000'
    );
    RETURN QUERY
    WITH src AS (
        SELECT r.*, o.n
        FROM jsonb_array_elements(p_items) WITH ORDINALITY AS o (v, n),
            jsonb_to_record(o.v) AS r (
                event_type text, event_data jsonb, channel_name text,
                plugin_name text, event_metadata jsonb, max_retries integer,
                retry_delay_seconds double precision,
                backoff_multiplier double precision, priority integer,
                correlation_id text, tags text[],
                delay_seconds double precision,
                max_retry_delay_seconds double precision,
                retry_jitter double precision
            )
    ),
    added AS (
        INSERT INTO daz_retry_queue AS q (
            event_type, channel_name, plugin_name, event_data,
            event_metadata, max_retries, retry_delay_seconds,
            backoff_multiplier, priority, correlation_id, tags,
            max_retry_delay_seconds, retry_jitter, created_at, next_retry_at
        )
        SELECT
            r.event_type, r.channel_name, r.plugin_name, r.event_data,
            coalesce(r.event_metadata, '{}'), coalesce(r.max_retries, 3),
            coalesce(r.retry_delay_seconds, 60),
            coalesce(r.backoff_multiplier, 2.0), coalesce(r.priority, 5),
            r.correlation_id, coalesce(r.tags, '{}'),
            coalesce(r.max_retry_delay_seconds, 86400),
            coalesce(r.retry_jitter, 0), p_now,
            p_now + make_interval(secs => coalesce(r.delay_seconds, 0))
        FROM src AS r
        ORDER BY r.n
        RETURNING q.id, q.event_id
    )
    -- ids come from one sequence in insertion order, so sorting restores input order
    SELECT a.id, a.event_id FROM added AS a ORDER BY a.id;
END;
$$;

-- Leases up to p_batch_size due items to p_worker_id for
-- p_lock_timeout_seconds, most urgent first (priority descending, then due
-- time, then id). A lease that expired belongs to a worker that died or hung:
-- any worker takes it over, and the lost attempt counts against the item's
-- retry budget, so an item that kills every worker ends as a dead letter
-- instead of looping forever.
CREATE FUNCTION acquire_retry_items(
    p_worker_id text,
    p_batch_size integer DEFAULT 10,
    p_lock_timeout_seconds integer DEFAULT 300,
    p_now timestamptz DEFAULT now()
)
RETURNS TABLE (
    id bigint,
    event_id uuid,
    event_type text,
    channel_name text,
    plugin_name text,
    event_data jsonb,
    retry_count integer,
    max_retries integer,
    priority integer,
    correlation_id text,
    event_metadata jsonb,
    tags text[],
    created_at timestamptz,
    next_retry_at timestamptz,
    locked_until timestamptz,
    error_message text,
    last_error_code text
)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_remaining integer := p_batch_size;
    v_taken integer;
    v_asked integer;
    v_priority integer := 10;
    v_until timestamptz;
BEGIN
    PERFORM _retryq_check_worker(p_worker_id);
    PERFORM _retryq_check(
        p_batch_size BETWEEN 1 AND 1000,
        'batch_size', 'must be between 1 and 1000'
    );
    PERFORM _retryq_check(
        p_lock_timeout_seconds BETWEEN 1 AND 86400,
        'lock_timeout_seconds', 'must be between 1 and 86400'
    );
    v_until := p_now + make_interval(secs => p_lock_timeout_seconds);

    -- One index range scan per priority, from most to least urgent: each stops
    -- at the first item not yet due, so items scheduled far ahead are never
    -- walked. Leased items keep their due time (so a lease is a HOT update);
    -- the scan filters out the unexpired ones.
    WHILE v_priority >= 1 AND v_remaining > 0 LOOP
        -- A priority with nothing due is skipped after one index probe,
        -- instead of planning and running the statement below for it.
        PERFORM FROM _retryq_active AS a
        WHERE a.priority = v_priority
            AND a.next_retry_at <= p_now
            AND (a.locked_until IS NULL OR a.locked_until <= p_now)
        ORDER BY a.next_retry_at, a.id
        LIMIT 1;
        IF NOT FOUND THEN
            v_priority := v_priority - 1;
            CONTINUE;
        END IF;
        v_asked := v_remaining;
        RETURN QUERY
        WITH picked AS (
            SELECT
                a.id,
                a.status = 'processing' AS expired,
                a.status = 'processing' AND a.retry_count >= a.max_retries
                    AS spent
            FROM _retryq_active AS a
            WHERE a.priority = v_priority
                AND a.next_retry_at <= p_now
                AND (a.locked_until IS NULL OR a.locked_until <= p_now)
            ORDER BY a.next_retry_at, a.id
            LIMIT v_remaining
            -- SKIP LOCKED: concurrent workers split the due items between them
            -- instead of queueing behind each other's row locks.
            FOR UPDATE SKIP LOCKED
        ),
        buried AS (
            SELECT
                set_config('retryq.buried', 'yes', TRUE),
                _retryq_bury(
                    array_agg(p.id),
                    jsonb_build_object(
                        'failed_at', p_now,
                        'error',
                        'lease expired: the worker did not finish in time',
                        'code', 'lease_expired',
                        'retryable', TRUE
                    ),
                    p_now
                )
            FROM picked AS p
            WHERE p.spent
            HAVING count(*) > 0
        ),
        taken AS (
            UPDATE _retryq_active AS a
            SET
                status = 'processing',
                locked_by = p_worker_id,
                locked_until = v_until,
                last_attempted_at = p_now,
                retry_count = a.retry_count + p.expired::integer,
                error_message = CASE
                    WHEN p.expired
                        THEN 'lease expired: the worker did not finish in time'
                    ELSE a.error_message
                END,
                last_error_code = CASE
                    WHEN p.expired THEN 'lease_expired' ELSE a.last_error_code
                END,
                error_history = CASE
                    WHEN p.expired THEN a.error_history || jsonb_build_array(
                        jsonb_build_object(
                            'attempt', jsonb_array_length(a.error_history) + 1,
                            'failed_at', a.locked_until,
                            'worker_id', a.locked_by,
                            'error',
                            'lease expired: the worker did not finish in time',
                            'code', 'lease_expired',
                            'retryable', TRUE
                        )
                    )
                    ELSE a.error_history
                END
            FROM picked AS p
            WHERE a.id = p.id AND NOT p.spent
            RETURNING a.*
        )
        SELECT
            t.id, t.event_id, t.event_type,
            coalesce(t.channel_name, ''), coalesce(t.plugin_name, ''),
            t.event_data, t.retry_count, t.max_retries, t.priority,
            coalesce(t.correlation_id, ''), t.event_metadata, t.tags,
            t.created_at, t.next_retry_at, t.locked_until, t.error_message,
            t.last_error_code
        FROM taken AS t
        -- a plain CTE runs only when referenced: this one-time filter makes
        -- buried run, before taken returns its rows
        WHERE (SELECT count(*) FROM buried) >= 0
        ORDER BY t.next_retry_at, t.id;
        GET DIAGNOSTICS v_taken = ROW_COUNT;
        v_remaining := v_remaining - v_taken;
        -- Spent leases that this scan buried used up slots of its LIMIT: scan
        -- the same priority again rather than hand out a less urgent item.
        IF v_taken < v_asked AND current_setting('retryq.buried', TRUE) = 'yes' THEN
            PERFORM set_config('retryq.buried', '', TRUE);
        ELSE
            v_priority := v_priority - 1;
        END IF;
    END LOOP;
END;
$$;

-- Marks an item done. True only for the worker holding the lease; false for
-- any other worker, after a takeover, and on a second call.
CREATE FUNCTION complete_retry_item(
    p_item_id bigint,
    p_worker_id text,
    p_now timestamptz DEFAULT now()
)
RETURNS boolean
LANGUAGE plpgsql
-- Generic plans: a custom plan per call (the plan cache's default here) cost
-- more than the statement; the generic plan is the same key lookup at any
-- size. Not acquire_retry_items: its generic plan guesses a LIMIT of a tenth
-- of the table and leases by a sequential scan (250+ ms at 1M items).
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN complete_retry_items(ARRAY[p_item_id], p_worker_id, p_now) = 1;
END;
$$;

-- Marks many items done in one statement; returns how many it completed. Ids
-- not leased to p_worker_id are skipped.
CREATE FUNCTION complete_retry_items(
    p_item_ids bigint[],
    p_worker_id text,
    p_now timestamptz DEFAULT now()
)
RETURNS integer
LANGUAGE plpgsql
-- generic plans: see complete_retry_item
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_count integer;
BEGIN
    PERFORM _retryq_check(
        p_item_ids IS NOT NULL, 'item_ids', 'must not be null'
    );
    PERFORM _retryq_check_worker(p_worker_id);
    WITH gone AS (
        DELETE FROM _retryq_active AS a
        WHERE a.id = ANY(p_item_ids)
            AND a.status = 'processing'
            AND a.locked_by = p_worker_id
        RETURNING a.*
    )
    INSERT INTO _retryq_finished (
        id, event_id, event_type, channel_name, plugin_name, event_data,
        event_metadata, retry_count, max_retries, retry_delay_seconds,
        backoff_multiplier, max_retry_delay_seconds, retry_jitter, priority,
        correlation_id, tags, status, error_message, last_error_code,
        error_history, created_at, next_retry_at, last_attempted_at,
        completed_at, dead_lettered_at, locked_by, locked_until
    )
    SELECT
        g.id, g.event_id, g.event_type, g.channel_name, g.plugin_name,
        g.event_data, g.event_metadata, g.retry_count, g.max_retries,
        g.retry_delay_seconds, g.backoff_multiplier, g.max_retry_delay_seconds,
        g.retry_jitter, g.priority, g.correlation_id, g.tags, 'completed',
        g.error_message, g.last_error_code, g.error_history, g.created_at,
        g.next_retry_at, g.last_attempted_at, p_now, NULL, NULL, NULL
    FROM gone AS g;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

-- Records a failed attempt. While the retry budget lasts the item goes back to
-- pending, due after the backoff; the failure of attempt max_retries + 1, or
-- any failure with p_retryable false, makes it a dead letter. False when
-- p_worker_id does not hold the lease.
CREATE FUNCTION fail_retry_item(
    p_item_id bigint,
    p_worker_id text,
    p_error_msg text,
    p_error_code text DEFAULT NULL,
    p_retryable boolean DEFAULT TRUE,
    p_now timestamptz DEFAULT now()
)
RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    v_item _retryq_active%ROWTYPE;
    v_entry jsonb;
    v_due timestamptz;
BEGIN
    PERFORM _retryq_check_worker(p_worker_id);
    PERFORM _retryq_check(
        p_error_msg IS NOT NULL, 'error_msg', 'must not be null'
    );
    PERFORM _retryq_check(
        p_retryable IS NOT NULL, 'retryable', 'must not be null'
    );
    SELECT a.* INTO v_item
    FROM _retryq_active AS a
    WHERE a.id = p_item_id
        AND a.status = 'processing'
        AND a.locked_by = p_worker_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN FALSE;
    END IF;

    v_entry := jsonb_build_object(
        'failed_at', p_now,
        'worker_id', p_worker_id,
        'error', p_error_msg,
        'code', p_error_code,
        'retryable', p_retryable
    );
    IF NOT p_retryable OR v_item.retry_count >= v_item.max_retries THEN
        PERFORM _retryq_bury(ARRAY[p_item_id], v_entry, p_now);
        RETURN TRUE;
    END IF;

    v_due := p_now + _retryq_backoff(
        v_item.retry_count + 1,
        v_item.retry_delay_seconds,
        v_item.backoff_multiplier,
        v_item.max_retry_delay_seconds,
        v_item.retry_jitter
    );
    UPDATE _retryq_active AS a
    SET
        status = 'pending',
        retry_count = a.retry_count + 1,
        next_retry_at = v_due,
        error_message = p_error_msg,
        last_error_code = p_error_code,
        error_history = a.error_history || jsonb_build_array(
            v_entry || jsonb_build_object(
                'attempt', jsonb_array_length(a.error_history) + 1
            )
        ),
        locked_by = NULL,
        locked_until = NULL
    WHERE a.id = p_item_id;
    IF v_due <= p_now THEN
        PERFORM pg_notify(retry_queue_channel(), 'retry');
    END IF;
    RETURN TRUE;
END;
$$;

-- Heartbeat: moves the lease expiry to p_now + p_lock_timeout_seconds. False
-- when p_worker_id no longer holds the lease.
CREATE FUNCTION extend_retry_lock(
    p_item_id bigint,
    p_worker_id text,
    p_lock_timeout_seconds integer DEFAULT 300,
    p_now timestamptz DEFAULT now()
)
RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM _retryq_check_worker(p_worker_id);
    PERFORM _retryq_check(
        p_lock_timeout_seconds BETWEEN 1 AND 86400,
        'lock_timeout_seconds', 'must be between 1 and 86400'
    );
    UPDATE _retryq_active AS a
    SET locked_until = p_now + make_interval(secs => p_lock_timeout_seconds)
    WHERE a.id = p_item_id
        AND a.status = 'processing'
        AND a.locked_by = p_worker_id;
    RETURN FOUND;
END;
$$;

-- Gives leased items back unprocessed (a worker shutting down): they become
-- pending at their old due time, so another worker takes them at once, and no
-- retry is spent. Returns how many were released.
CREATE FUNCTION release_retry_items(
    p_item_ids bigint[],
    p_worker_id text
)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    v_count integer;
BEGIN
    PERFORM _retryq_check(
        p_item_ids IS NOT NULL, 'item_ids', 'must not be null'
    );
    PERFORM _retryq_check_worker(p_worker_id);
    UPDATE _retryq_active AS a
    SET status = 'pending', locked_by = NULL, locked_until = NULL
    WHERE a.id = ANY(p_item_ids)
        AND a.status = 'processing'
        AND a.locked_by = p_worker_id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF v_count > 0 THEN
        PERFORM pg_notify(retry_queue_channel(), 'release');
    END IF;
    RETURN v_count;
END;
$$;

-- Replays dead letters with a fresh retry budget, due at once. Chooses them by
-- ids and/or by event_type, plugin_name, last error code and dead-letter time;
-- at least one filter is required so that a slip never replays everything.
-- Their error history is kept. Returns how many were requeued.
CREATE FUNCTION requeue_dead_letter_items(
    p_item_ids bigint[] DEFAULT NULL,
    p_event_type text DEFAULT NULL,
    p_plugin_name text DEFAULT NULL,
    p_error_code text DEFAULT NULL,
    p_dead_before timestamptz DEFAULT NULL,
    p_now timestamptz DEFAULT now()
)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    v_count integer;
BEGIN
    PERFORM _retryq_check(
        num_nonnulls(
            p_item_ids, p_event_type, p_plugin_name, p_error_code,
            p_dead_before
        ) > 0,
        'item_ids', 'give item_ids, event_type, plugin_name, error_code or dead_before'
    );
    WITH gone AS (
        DELETE FROM _retryq_finished AS f
        WHERE f.status = 'dead_letter'
            AND (p_item_ids IS NULL OR f.id = ANY(p_item_ids))
            AND (p_event_type IS NULL OR f.event_type = p_event_type)
            AND (p_plugin_name IS NULL OR f.plugin_name = p_plugin_name)
            AND (p_error_code IS NULL OR f.last_error_code = p_error_code)
            AND (p_dead_before IS NULL OR f.dead_lettered_at < p_dead_before)
        RETURNING f.*
    )
    INSERT INTO _retryq_active (
        id, event_id, event_type, channel_name, plugin_name, event_data,
        event_metadata, retry_count, max_retries, retry_delay_seconds,
        backoff_multiplier, max_retry_delay_seconds, retry_jitter, priority,
        correlation_id, tags, status, error_message, last_error_code,
        error_history, created_at, next_retry_at, last_attempted_at,
        completed_at, dead_lettered_at, locked_by, locked_until
    )
    SELECT
        g.id, g.event_id, g.event_type, g.channel_name, g.plugin_name,
        g.event_data, g.event_metadata, 0, g.max_retries,
        g.retry_delay_seconds, g.backoff_multiplier, g.max_retry_delay_seconds,
        g.retry_jitter, g.priority, g.correlation_id, g.tags, 'pending',
        g.error_message, g.last_error_code, g.error_history, g.created_at,
        p_now, g.last_attempted_at, NULL, NULL, NULL, NULL
    FROM gone AS g;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF v_count > 0 THEN
        PERFORM pg_notify(retry_queue_channel(), 'requeue');
    END IF;
    RETURN v_count;
END;
$$;

-- Removes completed and dead-letter items that finished more than
-- p_retention_days ago, p_batch_size rows per statement, at most p_max_rows in
-- all (NULL: no limit). Dead letters are copied to daz_retry_queue_archive
-- first unless p_archive_dead_letters is false. Pending and processing items
-- are never touched: they live in another partition. Rows locked by someone
-- else (a requeue in progress) are skipped, never waited for. For the shortest
-- locks, call it repeatedly with a small p_max_rows, one transaction each.
CREATE FUNCTION cleanup_retry_queue(
    p_retention_days integer DEFAULT 7,
    p_batch_size integer DEFAULT 5000,
    p_max_rows bigint DEFAULT NULL,
    p_archive_dead_letters boolean DEFAULT TRUE,
    p_now timestamptz DEFAULT now()
)
RETURNS TABLE (deleted_count bigint, archived_count bigint)
LANGUAGE plpgsql
AS $$
DECLARE
    v_cutoff timestamptz;
    v_limit integer;
    v_deleted bigint := 0;
    v_archived bigint := 0;
    v_batch_deleted bigint;
    v_batch_archived bigint;
BEGIN
    PERFORM _retryq_check(
        p_retention_days BETWEEN 0 AND 36500,
        'retention_days', 'must be between 0 and 36500'
    );
    PERFORM _retryq_check(
        p_batch_size BETWEEN 1 AND 100000,
        'batch_size', 'must be between 1 and 100000'
    );
    PERFORM _retryq_check(
        p_max_rows IS NULL OR p_max_rows >= 1,
        'max_rows', 'must be at least 1 or null'
    );
    PERFORM _retryq_check(
        p_archive_dead_letters IS NOT NULL,
        'archive_dead_letters', 'must not be null'
    );
    v_cutoff := p_now - make_interval(days => p_retention_days);
    LOOP
        v_limit := least(
            p_batch_size::bigint, coalesce(p_max_rows - v_deleted, p_batch_size)
        );
        EXIT WHEN v_limit <= 0;
        WITH doomed AS (
            SELECT f.id
            FROM _retryq_finished AS f
            WHERE coalesce(f.completed_at, f.dead_lettered_at) < v_cutoff
            ORDER BY coalesce(f.completed_at, f.dead_lettered_at)
            LIMIT v_limit
            FOR UPDATE SKIP LOCKED
        ),
        gone AS (
            DELETE FROM _retryq_finished AS f
            USING doomed AS d
            WHERE f.id = d.id
            RETURNING f.*
        ),
        kept AS (
            INSERT INTO daz_retry_queue_archive
            SELECT g.*, p_now
            FROM gone AS g
            WHERE g.status = 'dead_letter' AND p_archive_dead_letters
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM kept)
        INTO v_batch_deleted, v_batch_archived;
        v_deleted := v_deleted + v_batch_deleted;
        v_archived := v_archived + v_batch_archived;
        EXIT WHEN v_batch_deleted < v_limit;
    END LOOP;
    RETURN QUERY SELECT v_deleted, v_archived;
END;
$$;

-- One row per (status, event_type, plugin_name) for dashboards.
CREATE VIEW daz_retry_queue_stats AS
SELECT
    q.status,
    q.event_type,
    q.plugin_name,
    count(*) AS item_count,
    avg(q.retry_count)::double precision AS avg_retry_count,
    max(q.retry_count) AS max_retry_count,
    min(q.created_at) AS oldest_created_at,
    max(q.created_at) AS newest_created_at,
    count(*) FILTER (
        WHERE q.status = 'processing' AND q.locked_until > now()
    ) AS leased_count
FROM daz_retry_queue AS q
GROUP BY q.status, q.event_type, q.plugin_name;

-- One row per item that needs a person's attention, with the reason.
CREATE VIEW daz_retry_queue_alerts AS
SELECT
    'dead_letter' AS alert,
    f.id,
    f.event_type,
    f.plugin_name,
    f.retry_count,
    f.max_retries,
    f.error_message,
    f.last_error_code,
    f.dead_lettered_at AS since
FROM _retryq_finished AS f
WHERE f.status = 'dead_letter'
UNION ALL
SELECT
    CASE
        WHEN a.status = 'processing' AND a.locked_until <= now()
            THEN 'lease_expired'
        WHEN a.retry_count > 0 AND a.retry_count >= a.max_retries - 1
            THEN 'near_retry_budget'
        ELSE 'stale_pending'
    END AS alert,
    a.id,
    a.event_type,
    a.plugin_name,
    a.retry_count,
    a.max_retries,
    a.error_message,
    a.last_error_code,
    CASE
        WHEN a.status = 'processing' AND a.locked_until <= now()
            THEN a.locked_until
        WHEN a.retry_count > 0 AND a.retry_count >= a.max_retries - 1
            THEN a.last_attempted_at
        ELSE a.created_at
    END AS since
FROM _retryq_active AS a
WHERE
    (a.status = 'processing' AND a.locked_until <= now())
    OR (a.retry_count > 0 AND a.retry_count >= a.max_retries - 1)
    OR (a.status = 'pending' AND a.created_at < now() - interval '1 day');

-- Pin every retryq function to the install schema (pg_temp last), so that a
-- caller's search_path can never redirect it to other tables.
DO $$
DECLARE
    v_fn regprocedure;
BEGIN
    FOR v_fn IN
        SELECT p.oid::regprocedure
        FROM pg_proc AS p
        WHERE p.pronamespace = (
            SELECT n.oid FROM pg_namespace AS n WHERE n.nspname = current_schema()
        )
            AND p.proname IN (
                'retry_queue_channel', '_retryq_notify_insert', '_retryq_check',
                '_retryq_check_worker', '_retryq_backoff', '_retryq_bury',
                'enqueue_retry_item', 'enqueue_retry_items',
                'acquire_retry_items', 'complete_retry_item',
                'complete_retry_items', 'fail_retry_item', 'extend_retry_lock',
                'release_retry_items', 'requeue_dead_letter_items',
                'cleanup_retry_queue'
            )
    LOOP
        EXECUTE format(
            'ALTER FUNCTION %s SET search_path = %I, pg_temp',
            v_fn, current_schema()
        );
    END LOOP;
END;
$$;
