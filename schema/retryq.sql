-- retryq: the current schema, readable top to bottom.
--
-- migrations/ is the append-only history that builds this; tests/test_install.py
-- proves that applying every migration to an empty database gives exactly what
-- this file gives. Edit both together: a new migration, and this file.

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
    locked_until timestamptz
) PARTITION BY LIST (status);

ALTER SEQUENCE daz_retry_queue_id_seq OWNED BY daz_retry_queue.id;

COMMENT ON TABLE daz_retry_queue IS
'retryq: failed operations waiting to be retried. Insert freely; '
'change state only through the retryq functions.';

-- The hot partition. Only (priority, next_retry_at, id) is indexed besides the
-- key, and acquire leaves those columns alone, so taking a lease is a HOT update
-- that writes no index entry, as long as the row's page has room for its new
-- version. Half of each page is left free: room for every row on it to take a
-- lease before the page must be pruned. At 70, a third of the leases in a
-- drain found no room, and each wrote a new row elsewhere and two index
-- entries.
-- The table's rules are its constraints, not the parent's: PostgreSQL prepares
-- every CHECK constraint anew in each statement that writes a row, which cost
-- the per-item completion's move into the finished partition a seventh of its
-- time. The finished partition checks the same rules with one constraint.
CREATE TABLE _retryq_active PARTITION OF daz_retry_queue (
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
)
FOR VALUES IN ('pending', 'processing')
WITH (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);

ALTER TABLE _retryq_active ADD CONSTRAINT _retryq_active_pkey PRIMARY KEY (id);

CREATE INDEX _retryq_active_due_idx
ON _retryq_active (priority, next_retry_at, id);

-- The rules of the active partition's constraints (the partition's bounds
-- stand in for the status one), for a finished row. True, or raises 23514
-- check_violation naming the constraint that gives the rule on the active
-- partition and its column. Like a CHECK, a rule that comes out NULL passes.
-- tests/test_validation.py proves both partitions refuse the same rows.
CREATE FUNCTION _retryq_finished_row_ok(
    p_status text,
    p_event_type text,
    p_priority integer,
    p_max_retries integer,
    p_retry_count integer,
    p_retry_delay_seconds double precision,
    p_backoff_multiplier double precision,
    p_max_retry_delay_seconds double precision,
    p_retry_jitter double precision,
    p_event_data jsonb,
    p_event_metadata jsonb,
    p_locked_by text,
    p_locked_until timestamptz,
    p_completed_at timestamptz,
    p_dead_lettered_at timestamptz
)
RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE
AS $$
DECLARE
    v_column text;
    v_name text;
BEGIN
    -- one expression, the cheapest form in PL/pgSQL: it runs for every row.
    -- In the order of the constraints' names, the order PostgreSQL checks
    -- them in, so that a row breaking two rules is refused with the same name
    -- by either partition.
    v_column := CASE
        WHEN NOT p_backoff_multiplier BETWEEN 1 AND 10
            THEN 'backoff_multiplier'
        WHEN NOT (p_status = 'completed') = (p_completed_at IS NOT NULL)
            THEN 'completed_at'
        WHEN NOT (p_status = 'dead_letter') = (p_dead_lettered_at IS NOT NULL)
            THEN 'dead_lettered_at'
        WHEN NOT jsonb_typeof(p_event_data) <> 'null' THEN 'event_data'
        WHEN NOT jsonb_typeof(p_event_metadata) = 'object'
            THEN 'event_metadata'
        WHEN NOT (
            length(p_event_type) <= 200 AND p_event_type ~ '[^[:space:]]'
        ) THEN 'event_type'
        WHEN NOT (p_status = 'processing')
            = (p_locked_by IS NOT NULL AND p_locked_until IS NOT NULL)
            THEN 'lease'
        WHEN NOT p_max_retries BETWEEN 0 AND 1000 THEN 'max_retries'
        WHEN NOT p_max_retry_delay_seconds BETWEEN 0 AND 31536000
            THEN 'max_retry_delay_seconds'
        WHEN NOT p_priority BETWEEN 1 AND 10 THEN 'priority'
        WHEN NOT p_retry_count BETWEEN 0 AND p_max_retries THEN 'retry_count'
        WHEN NOT p_retry_delay_seconds BETWEEN 0 AND 31536000
            THEN 'retry_delay_seconds'
        WHEN NOT p_retry_jitter BETWEEN 0 AND 1 THEN 'retry_jitter'
    END;
    IF v_column IS NULL THEN
        RETURN TRUE;
    END IF;
    v_name := 'daz_retry_queue_' || v_column || '_check';
    RAISE EXCEPTION
        'new row for relation "daz_retry_queue" violates check constraint "%"',
        v_name
        USING ERRCODE = 'check_violation', CONSTRAINT = v_name,
            TABLE = 'daz_retry_queue',
            COLUMN = CASE v_column WHEN 'lease' THEN 'locked_by' ELSE v_column END;
END;
$$;

-- Finished items stay visible through daz_retry_queue until cleanup removes
-- them, but never sit on the acquire path.
CREATE TABLE _retryq_finished PARTITION OF daz_retry_queue (
    CONSTRAINT _retryq_finished_row_check CHECK (
        _retryq_finished_row_ok(
            status, event_type, priority, max_retries, retry_count,
            retry_delay_seconds, backoff_multiplier, max_retry_delay_seconds,
            retry_jitter, event_data, event_metadata, locked_by, locked_until,
            completed_at, dead_lettered_at
        )
    )
)
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
-- Circuit breaker (0002): items whose circuit is not closed are skipped and
-- keep their budget; a circuit past its cool-down gets one probe item. With
-- every circuit closed the only extra cost is one look at an empty index.
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
-- Generic plans: planning the lease statement per call (the plan cache's
-- default) cost a third of the call. Its generic plan is the same index range
-- scan, checked at 1M due items (scripts/bench, acquire latency) and with due
-- times scattered across the heap. No JIT: the generic plan's cost estimate
-- (a tenth of the table for the LIMIT) passes jit_above_cost at 1M items, and
-- compiling it took 50 ms per call for a statement that runs in one.
SET plan_cache_mode = force_generic_plan
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    v_remaining integer := p_batch_size;
    v_taken integer;
    v_asked integer;
    v_priority integer;
    v_until timestamptz;
    v_gated boolean;
    v_c record;
    v_probe_events text[] := '{}';
    v_probe_plugins text[] := '{}';
    v_probe_event text;
    v_probe_plugin text;
    v_probed boolean;
BEGIN
    -- the checks' conditions inline, their calls only to raise (see
    -- complete_retry_items)
    IF (length(btrim(p_worker_id)) BETWEEN 1 AND 200) IS NOT TRUE THEN
        PERFORM _retryq_check_worker(p_worker_id);
    END IF;
    IF (p_batch_size BETWEEN 1 AND 1000) IS NOT TRUE THEN
        PERFORM _retryq_check(FALSE, 'batch_size', 'must be between 1 and 1000');
    END IF;
    IF (p_lock_timeout_seconds BETWEEN 1 AND 86400) IS NOT TRUE THEN
        PERFORM _retryq_check(
            FALSE, 'lock_timeout_seconds', 'must be between 1 and 86400'
        );
    END IF;
    v_until := p_now + make_interval(secs => p_lock_timeout_seconds);

    v_gated := EXISTS (
        SELECT 1 FROM _retryq_circuit AS c WHERE c.state <> 'closed'
    );
    IF v_gated THEN
        -- Circuits ready for a probe: open past the cool-down, or half_open
        -- with no live probe lease. SKIP LOCKED: one worker probes a key at a
        -- time; the row lock lasts until this acquire commits, and by then the
        -- circuit says half_open with its probe_id.
        FOR v_c IN
            SELECT c.event_type, c.plugin_name, c.state, c.probe_id, a.locked_until
            FROM _retryq_circuit AS c
            LEFT JOIN _retryq_active AS a
                ON a.id = c.probe_id AND a.status = 'processing'
            WHERE c.state <> 'closed'
                AND NOT c.forced
                AND (c.next_probe_at IS NULL OR c.next_probe_at <= p_now)
                AND (c.state = 'half_open' OR c.open_until <= p_now)
                AND (a.locked_until IS NULL OR a.locked_until <= p_now)
            ORDER BY c.event_type, c.plugin_name
            FOR UPDATE OF c SKIP LOCKED
        LOOP
            PERFORM set_config('retryq.circuit_held', 'yes', TRUE);
            -- A circuit that another worker half-opened after this query's
            -- snapshot comes back re-checked against its new row, but still
            -- joined to the old probe (none): look at the probe's lease again.
            CONTINUE WHEN v_c.probe_id IS NOT NULL AND EXISTS (
                SELECT 1 FROM _retryq_active AS a
                WHERE a.id = v_c.probe_id
                    AND a.status = 'processing'
                    AND a.locked_until > p_now
            );
            IF v_c.state = 'half_open' AND v_c.locked_until IS NOT NULL THEN
                -- The probe's lease ran out: a hung dependency. That is a
                -- failed probe; the item itself is taken over later.
                PERFORM _retryq_circuit_failed(
                    v_c.event_type, v_c.plugin_name, 1, 0, FALSE, p_now
                );
            ELSE
                v_probe_events := v_probe_events || v_c.event_type;
                v_probe_plugins := v_probe_plugins || v_c.plugin_name;
            END IF;
        END LOOP;
    END IF;

    -- Probe passes first (one item per ready circuit), then the normal pass.
    FOR v_pass IN 1..coalesce(array_length(v_probe_events, 1), 0) + 1 LOOP
        v_probe_event := v_probe_events[v_pass];
        v_probe_plugin := v_probe_plugins[v_pass];
        v_probed := FALSE;
        v_priority := 10;
        -- One index range scan per priority, from most to least urgent: each
        -- stops at the first item not yet due, so items scheduled far ahead
        -- are never walked. Leased items keep their due time (so a lease is a
        -- HOT update); the scan filters out the unexpired ones.
        WHILE v_priority >= 1 AND v_remaining > 0 AND NOT v_probed LOOP
            -- Priorities without any item are skipped in one index descent
            -- (the highest one at or below this that has items) ...
            SELECT a.priority INTO v_priority
            FROM _retryq_active AS a
            WHERE a.priority <= v_priority
            ORDER BY a.priority DESC
            LIMIT 1;
            EXIT WHEN NOT FOUND;
            IF NOT v_gated AND v_probe_event IS NULL THEN
                -- The usual case, in a lighter statement: no circuit to heed,
                -- and no expired lease among the items it picks. If one is,
                -- it leases nothing, and the full statement below takes the
                -- same items in the same order.
                RETURN QUERY
                WITH picked AS MATERIALIZED (
                    SELECT a.id, a.status
                    FROM _retryq_active AS a
                    WHERE a.priority = v_priority
                        AND a.next_retry_at <= p_now
                        AND (a.locked_until IS NULL OR a.locked_until <= p_now)
                    ORDER BY a.next_retry_at, a.id
                    LIMIT v_remaining
                    FOR UPDATE SKIP LOCKED
                ),
                taken AS (
                    UPDATE _retryq_active AS a
                    SET
                        status = 'processing',
                        locked_by = p_worker_id,
                        locked_until = v_until,
                        last_attempted_at = p_now
                    WHERE a.id = ANY(ARRAY(SELECT p.id FROM picked AS p))
                        AND NOT EXISTS (
                            SELECT 1 FROM picked AS p
                            WHERE p.status = 'processing'
                        )
                    RETURNING a.*
                )
                SELECT
                    t.id, t.event_id, t.event_type,
                    coalesce(t.channel_name, ''), coalesce(t.plugin_name, ''),
                    t.event_data, t.retry_count, t.max_retries, t.priority,
                    coalesce(t.correlation_id, ''), t.event_metadata, t.tags,
                    t.created_at, t.next_retry_at, t.locked_until,
                    t.error_message, t.last_error_code
                FROM taken AS t
                ORDER BY t.next_retry_at, t.id;
                GET DIAGNOSTICS v_taken = ROW_COUNT;
                v_remaining := v_remaining - v_taken;
                CONTINUE WHEN v_remaining = 0;
            END IF;
            -- A priority with nothing (more) due is skipped after one more
            -- probe, instead of running the statement below for it.
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
            v_asked := CASE WHEN v_probe_event IS NULL THEN v_remaining ELSE 1 END;
            RETURN QUERY
            WITH picked AS (
                SELECT
                    a.id,
                    a.event_type,
                    a.plugin_name,
                    a.status = 'processing' AS expired,
                    a.status = 'processing' AND a.retry_count >= a.max_retries
                        AS spent
                FROM _retryq_active AS a
                WHERE a.priority = v_priority
                    AND a.next_retry_at <= p_now
                    AND (a.locked_until IS NULL OR a.locked_until <= p_now)
                    AND (
                        v_probe_event IS NULL
                        OR (
                            a.event_type = v_probe_event
                            AND coalesce(a.plugin_name, '') = v_probe_plugin
                        )
                    )
                    -- skip keys whose circuit is not closed
                    AND (
                        NOT v_gated
                        OR v_probe_event IS NOT NULL
                        OR NOT EXISTS (
                            SELECT 1 FROM _retryq_circuit AS c
                            WHERE c.state <> 'closed'
                                AND c.event_type = a.event_type
                                AND c.plugin_name = coalesce(a.plugin_name, '')
                        )
                    )
                ORDER BY a.next_retry_at, a.id
                LIMIT v_asked
                -- SKIP LOCKED: concurrent workers split the due items between
                -- them instead of queueing behind each other's row locks.
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
            -- lost leases count against their circuits (the probe pass keeps
            -- its own books in probed)
            expired AS (
                SELECT _retryq_circuit_expired(
                    array_agg(p.event_type), array_agg(p.plugin_name), p_now
                )
                FROM picked AS p
                WHERE p.expired AND v_probe_event IS NULL
                HAVING count(*) > 0
            ),
            taken AS (
                UPDATE _retryq_active AS a
                SET
                    status = 'processing',
                    locked_by = p_worker_id,
                    locked_until = v_until,
                    last_attempted_at = p_now,
                    retry_count = a.retry_count + (a.status = 'processing')::integer,
                    error_message = CASE
                        WHEN a.status = 'processing'
                            THEN 'lease expired: the worker did not finish in time'
                        ELSE a.error_message
                    END,
                    last_error_code = CASE
                        WHEN a.status = 'processing' THEN 'lease_expired'
                        ELSE a.last_error_code
                    END,
                    error_history = CASE
                        WHEN a.status = 'processing'
                            THEN a.error_history || jsonb_build_array(
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
                -- by primary key: a join with picked gets a hash join over the
                -- whole partition in the generic plan (LIMIT's estimate is a
                -- guess); a picked row that is processing is an expired lease
                WHERE a.id = ANY(
                    ARRAY(SELECT p.id FROM picked AS p WHERE NOT p.spent)
                )
                RETURNING a.*
            ),
            -- a data-modifying CTE always runs: in a probe pass it marks the
            -- circuit half_open with its probe item
            probed AS (
                UPDATE _retryq_circuit AS c
                SET
                    state = CASE
                        WHEN s.probe_id IS NULL THEN c.state ELSE 'half_open'
                    END,
                    open_until = CASE
                        WHEN s.probe_id IS NULL THEN c.open_until
                    END,
                    probe_id = coalesce(s.probe_id, c.probe_id),
                    next_probe_at = NULL,
                    lease_expiries = c.lease_expiries + s.expired_count
                FROM (
                    SELECT
                        (SELECT min(t.id) FROM taken AS t) AS probe_id,
                        (SELECT count(*) FROM picked AS p WHERE p.expired)
                            AS expired_count
                ) AS s
                WHERE v_probe_event IS NOT NULL
                    AND c.event_type = v_probe_event
                    AND c.plugin_name = v_probe_plugin
                    AND (s.probe_id IS NOT NULL OR s.expired_count > 0)
            )
            SELECT
                t.id, t.event_id, t.event_type,
                coalesce(t.channel_name, ''), coalesce(t.plugin_name, ''),
                t.event_data, t.retry_count, t.max_retries, t.priority,
                coalesce(t.correlation_id, ''), t.event_metadata, t.tags,
                t.created_at, t.next_retry_at, t.locked_until, t.error_message,
                t.last_error_code
            FROM taken AS t
            -- a plain CTE runs only when referenced: these one-time filters
            -- make buried and expired run, before taken returns its rows
            WHERE (SELECT count(*) FROM buried) >= 0
                AND (SELECT count(*) FROM expired) >= 0
            ORDER BY t.next_retry_at, t.id;
            GET DIAGNOSTICS v_taken = ROW_COUNT;
            v_remaining := v_remaining - v_taken;
            v_probed := v_probe_event IS NOT NULL AND v_taken > 0;
            -- Spent leases that this scan buried used up slots of its LIMIT:
            -- scan the same priority again rather than hand out a less urgent
            -- item.
            IF v_taken < v_asked
                AND current_setting('retryq.buried', TRUE) = 'yes' THEN
                PERFORM set_config('retryq.buried', '', TRUE);
            ELSE
                v_priority := v_priority - 1;
            END IF;
        END LOOP;
        IF v_probe_event IS NOT NULL AND NOT v_probed THEN
            -- Nothing of this key is due: look again in a few seconds rather
            -- than walk the due items on every call.
            UPDATE _retryq_circuit AS c
            SET next_probe_at = p_now + interval '5 seconds'
            WHERE c.event_type = v_probe_event
                AND c.plugin_name = v_probe_plugin;
        END IF;
    END LOOP;
END;
$$;

-- Marks an item done. True only for the worker holding the lease; false for
-- any other worker, after a takeover, and on a second call.
-- Its own body rather than a call to complete_retry_items: it runs once per
-- item on the per-item path, where the nested call and the array aggregation
-- cost a tenth of the statement.
CREATE FUNCTION complete_retry_item(
    p_item_id bigint,
    p_worker_id text,
    p_now timestamptz DEFAULT now()
)
RETURNS boolean
LANGUAGE plpgsql
-- Generic plans: a custom plan per call (the plan cache's default here) cost
-- more than the statement; the generic plan is the same key lookup at any
-- size.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_event_type text;
    v_plugin_name text;
    v_streaks boolean;
BEGIN
    IF (length(btrim(p_worker_id)) BETWEEN 1 AND 200) IS NOT TRUE THEN
        PERFORM _retryq_check_worker(p_worker_id);
    END IF;
    WITH gone AS (
        DELETE FROM _retryq_active AS a
        WHERE a.id = p_item_id
            AND a.status = 'processing'
            AND a.locked_by = p_worker_id
        RETURNING a.*
    )
    INSERT INTO _retryq_finished AS f (
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
        g.retry_delay_seconds, g.backoff_multiplier,
        g.max_retry_delay_seconds, g.retry_jitter, g.priority,
        g.correlation_id, g.tags, 'completed', g.error_message,
        g.last_error_code, g.error_history, g.created_at, g.next_retry_at,
        g.last_attempted_at, p_now, NULL, NULL, NULL
    FROM gone AS g
    -- whether any key has a streak, asked in the same statement: a statement
    -- of its own cost the call a thirtieth
    RETURNING
        f.event_type,
        f.plugin_name,
        EXISTS (
            SELECT 1 FROM _retryq_circuit AS c
            WHERE c.state <> 'closed' OR c.consecutive_failures > 0
        )
    INTO v_event_type, v_plugin_name, v_streaks;
    IF NOT FOUND THEN
        RETURN FALSE;
    END IF;
    -- the same books as complete_retry_items, skipped while no key has a streak
    IF v_streaks THEN
        PERFORM _retryq_circuit_succeeded(
            ARRAY[v_event_type], ARRAY[v_plugin_name], p_now
        );
    END IF;
    RETURN TRUE;
END;
$$;

-- Marks many items done in one statement; returns how many it completed. Ids
-- not leased to p_worker_id are skipped. A success ends its key's failure
-- streak and closes its circuit; that bookkeeping is skipped entirely while
-- no key has a streak.
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
    v_dirty boolean;
    v_event_types text[];
    v_plugin_names text[];
BEGIN
    -- the checks' conditions inline, their calls only to raise: a nested call
    -- per statement costs the hot path more than the rule itself
    IF p_item_ids IS NULL THEN
        PERFORM _retryq_check(FALSE, 'item_ids', 'must not be null');
    END IF;
    IF (length(btrim(p_worker_id)) BETWEEN 1 AND 200) IS NOT TRUE THEN
        PERFORM _retryq_check_worker(p_worker_id);
    END IF;
    v_dirty := EXISTS (
        SELECT 1 FROM _retryq_circuit AS c
        WHERE c.state <> 'closed' OR c.consecutive_failures > 0
    );
    WITH gone AS (
        DELETE FROM _retryq_active AS a
        WHERE a.id = ANY(p_item_ids)
            AND a.status = 'processing'
            AND a.locked_by = p_worker_id
        RETURNING a.*
    ),
    moved AS (
        INSERT INTO _retryq_finished AS f (
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
            g.retry_delay_seconds, g.backoff_multiplier,
            g.max_retry_delay_seconds, g.retry_jitter, g.priority,
            g.correlation_id, g.tags, 'completed', g.error_message,
            g.last_error_code, g.error_history, g.created_at, g.next_retry_at,
            g.last_attempted_at, p_now, NULL, NULL, NULL
        FROM gone AS g
        RETURNING f.event_type, f.plugin_name
    )
    SELECT
        count(*),
        array_agg(m.event_type) FILTER (WHERE v_dirty),
        array_agg(m.plugin_name) FILTER (WHERE v_dirty)
    INTO v_count, v_event_types, v_plugin_names
    FROM moved AS m;
    IF v_dirty AND v_count > 0 THEN
        PERFORM _retryq_circuit_succeeded(v_event_types, v_plugin_names, p_now);
    END IF;
    RETURN v_count;
END;
$$;

-- Records a failed attempt. While the retry budget lasts the item goes back to
-- pending, due after the backoff; the failure of attempt max_retries + 1, or
-- any failure with p_retryable false, makes it a dead letter. False when
-- p_worker_id does not hold the lease.
-- A retryable failure counts against the item's circuit. A permanent one
-- (p_retryable false) does not: it says the item is bad, not that the
-- dependency is down, so it neither extends nor ends a failure streak.
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

    IF p_retryable THEN
        -- after the item's row lock, like every other path: item, then circuit
        PERFORM _retryq_circuit_failed(
            v_item.event_type, v_item.plugin_name, 1, 0, FALSE, p_now
        );
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
                '_retryq_finished_row_ok',
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

-- ---- 0002_circuit_breaker (circuit breaker) ----

-- Settings every circuit follows unless retry_circuit_configure overrides
-- them for its key. Exactly one row.
CREATE TABLE _retryq_circuit_defaults (
    singleton boolean PRIMARY KEY DEFAULT TRUE,
    failure_threshold integer NOT NULL DEFAULT 5,
    cooldown_seconds double precision NOT NULL DEFAULT 30,
    max_cooldown_seconds double precision NOT NULL DEFAULT 1800,
    CONSTRAINT _retryq_circuit_defaults_singleton_check CHECK (singleton),
    CONSTRAINT _retryq_circuit_defaults_failure_threshold_check CHECK (
        failure_threshold BETWEEN 0 AND 1000000
    ),
    CONSTRAINT _retryq_circuit_defaults_cooldown_seconds_check CHECK (
        cooldown_seconds > 0 AND cooldown_seconds <= 31536000
    ),
    CONSTRAINT _retryq_circuit_defaults_max_cooldown_seconds_check CHECK (
        max_cooldown_seconds >= cooldown_seconds
        AND max_cooldown_seconds <= 31536000
    )
);

INSERT INTO _retryq_circuit_defaults (singleton) VALUES (TRUE);

-- One row per key that ever failed or was configured: a few rows, so that
-- acquire can afford to look at it. plugin_name '' stands for NULL (items
-- without a plugin share one circuit per event_type).
-- state: closed (items flow), open (items wait until open_until), half_open
-- (one probe item, probe_id, is out). trips counts the openings since the
-- last close and sets the next cool-down: cooldown * 2^trips, capped.
CREATE TABLE _retryq_circuit (
    event_type text NOT NULL,
    plugin_name text NOT NULL,
    state text NOT NULL DEFAULT 'closed',
    forced boolean NOT NULL DEFAULT FALSE,
    consecutive_failures integer NOT NULL DEFAULT 0,
    trips integer NOT NULL DEFAULT 0,
    open_until timestamptz,
    next_probe_at timestamptz,
    probe_id bigint,
    failure_threshold integer,
    cooldown_seconds double precision,
    max_cooldown_seconds double precision,
    opened_at timestamptz,
    closed_at timestamptz,
    last_failure_at timestamptz,
    times_opened bigint NOT NULL DEFAULT 0,
    lease_expiries bigint NOT NULL DEFAULT 0,
    CONSTRAINT _retryq_circuit_pkey PRIMARY KEY (event_type, plugin_name),
    CONSTRAINT _retryq_circuit_state_check CHECK (
        state IN ('closed', 'open', 'half_open')
    ),
    -- an open circuit reopens at open_until; a forced one has none
    CONSTRAINT _retryq_circuit_open_check CHECK (
        CASE
            WHEN state = 'open' THEN forced OR open_until IS NOT NULL
            ELSE open_until IS NULL AND NOT forced
        END
    ),
    CONSTRAINT _retryq_circuit_failure_threshold_check CHECK (
        failure_threshold BETWEEN 0 AND 1000000
    ),
    CONSTRAINT _retryq_circuit_cooldown_seconds_check CHECK (
        cooldown_seconds > 0 AND cooldown_seconds <= 31536000
    ),
    CONSTRAINT _retryq_circuit_max_cooldown_seconds_check CHECK (
        max_cooldown_seconds > 0 AND max_cooldown_seconds <= 31536000
    )
);

-- acquire asks "is any circuit not closed?" on every call: with every circuit
-- closed this partial index is empty and the answer costs one page read.
CREATE INDEX _retryq_circuit_not_closed_idx
ON _retryq_circuit (event_type, plugin_name)
WHERE state <> 'closed';

-- complete asks "does any key have a failure streak?" the same way.
CREATE INDEX _retryq_circuit_dirty_idx
ON _retryq_circuit (event_type, plugin_name)
WHERE state <> 'closed' OR consecutive_failures > 0;

-- The cool-down after p_trips earlier openings since the last close.
CREATE FUNCTION _retryq_circuit_cooldown(
    p_trips integer,
    p_cooldown double precision,
    p_max double precision
)
RETURNS interval
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT make_interval(secs => least(
        p_cooldown * power(2::double precision, least(p_trips, 60)), p_max
    ))
$$;

-- Counts p_failures failed attempts (p_lease_expiries of them lost leases)
-- against a key and trips its circuit: closed -> open at the threshold;
-- a failure while probing (half_open, or open past its cool-down) reopens it
-- with a doubled cool-down; a failure while cooling down only counts.
-- Waiting for a circuit row is safe only while this transaction holds no
-- other one (else two transactions could each hold a row the other wants,
-- e.g. a worker writing a batch of outcomes in one transaction). So it waits,
-- and counts exactly, on the first circuit row it touches (the setting
-- retryq.circuit_held remembers that for the rest of the transaction), and
-- after that, or with p_nowait (acquire, which holds many item locks), skips
-- the books when another transaction holds the row.
CREATE FUNCTION _retryq_circuit_failed(
    p_event_type text,
    p_plugin_name text,
    p_failures integer,
    p_lease_expiries integer,
    p_nowait boolean,
    p_now timestamptz
)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_plugin text := coalesce(p_plugin_name, '');
    v_c _retryq_circuit%ROWTYPE;
    v_d _retryq_circuit_defaults%ROWTYPE;
    v_threshold integer;
    v_trips integer;
BEGIN
    IF p_nowait OR current_setting('retryq.circuit_held', TRUE) = 'yes' THEN
        -- an existing row: lock it or give up; a new key: insert it (an INSERT
        -- over a row someone holds would wait for them)
        PERFORM 1 FROM _retryq_circuit AS c
        WHERE c.event_type = p_event_type AND c.plugin_name = v_plugin;
        IF FOUND THEN
            PERFORM 1 FROM _retryq_circuit AS c
            WHERE c.event_type = p_event_type AND c.plugin_name = v_plugin
            FOR UPDATE SKIP LOCKED;
        ELSE
            INSERT INTO _retryq_circuit (event_type, plugin_name)
            VALUES (p_event_type, v_plugin)
            ON CONFLICT DO NOTHING;
        END IF;
        IF NOT FOUND THEN
            RETURN;  -- someone else holds the row
        END IF;
    ELSE
        INSERT INTO _retryq_circuit (event_type, plugin_name)
        VALUES (p_event_type, v_plugin)
        ON CONFLICT DO NOTHING;
    END IF;
    PERFORM set_config('retryq.circuit_held', 'yes', TRUE);

    UPDATE _retryq_circuit AS c
    SET
        consecutive_failures = c.consecutive_failures + p_failures,
        lease_expiries = c.lease_expiries + p_lease_expiries,
        last_failure_at = p_now
    WHERE c.event_type = p_event_type AND c.plugin_name = v_plugin
    RETURNING c.* INTO v_c;

    IF v_c.forced THEN
        RETURN;
    END IF;
    SELECT d.* INTO v_d FROM _retryq_circuit_defaults AS d;
    v_threshold := coalesce(v_c.failure_threshold, v_d.failure_threshold);
    IF v_c.state = 'half_open'
        OR (v_c.state = 'open' AND v_c.open_until <= p_now) THEN
        v_trips := v_c.trips + 1;
    ELSIF v_c.state = 'closed' AND v_threshold > 0
        AND v_c.consecutive_failures >= v_threshold THEN
        v_trips := 0;
    ELSE
        RETURN;
    END IF;
    UPDATE _retryq_circuit AS c
    SET
        state = 'open',
        trips = v_trips,
        open_until = p_now + _retryq_circuit_cooldown(
            v_trips,
            coalesce(c.cooldown_seconds, v_d.cooldown_seconds),
            greatest(
                coalesce(c.cooldown_seconds, v_d.cooldown_seconds),
                coalesce(c.max_cooldown_seconds, v_d.max_cooldown_seconds)
            )
        ),
        next_probe_at = NULL,
        probe_id = NULL,
        opened_at = p_now,
        times_opened = c.times_opened + 1
    WHERE c.event_type = p_event_type AND c.plugin_name = v_plugin;
END;
$$;

-- acquire's books for leases it found expired: one count per key, keys in a
-- fixed order, never waiting (see _retryq_circuit_failed).
CREATE FUNCTION _retryq_circuit_expired(
    p_event_types text[],
    p_plugin_names text[],
    p_now timestamptz
)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    v_key record;
    v_total integer := 0;
BEGIN
    FOR v_key IN
        SELECT u.e, coalesce(u.p, '') AS p, count(*)::integer AS n
        FROM unnest(p_event_types, p_plugin_names) AS u (e, p)
        GROUP BY 1, 2
        ORDER BY 1, 2
    LOOP
        PERFORM _retryq_circuit_failed(
            v_key.e, v_key.p, v_key.n, v_key.n, TRUE, p_now
        );
        v_total := v_total + v_key.n;
    END LOOP;
    RETURN v_total;
END;
$$;

-- complete's books: a success ends the key's failure streak and closes its
-- circuit (unless an operator forced it open). Only keys with a streak are
-- written, in key order. As in _retryq_circuit_failed, it waits for the rows
-- only while the transaction holds no other circuit row, and otherwise skips
-- the ones another transaction holds (a missed success then costs one more
-- failure or probe).
CREATE FUNCTION _retryq_circuit_succeeded(
    p_event_types text[],
    p_plugin_names text[],
    p_now timestamptz
)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_keys text[];
BEGIN
    IF current_setting('retryq.circuit_held', TRUE) = 'yes' THEN
        SELECT array_agg(k.event_type || chr(31) || k.plugin_name) INTO v_keys
        FROM (
            SELECT c.event_type, c.plugin_name
            FROM _retryq_circuit AS c
            WHERE (c.event_type, c.plugin_name) IN (
                SELECT u.e, coalesce(u.p, '')
                FROM unnest(p_event_types, p_plugin_names) AS u (e, p)
            )
                AND (c.state <> 'closed' OR c.consecutive_failures > 0)
                AND NOT c.forced
            ORDER BY c.event_type, c.plugin_name
            FOR UPDATE SKIP LOCKED
        ) AS k;
    ELSE
        SELECT array_agg(k.event_type || chr(31) || k.plugin_name) INTO v_keys
        FROM (
            SELECT c.event_type, c.plugin_name
            FROM _retryq_circuit AS c
            WHERE (c.event_type, c.plugin_name) IN (
                SELECT u.e, coalesce(u.p, '')
                FROM unnest(p_event_types, p_plugin_names) AS u (e, p)
            )
                AND (c.state <> 'closed' OR c.consecutive_failures > 0)
                AND NOT c.forced
            ORDER BY c.event_type, c.plugin_name
            FOR UPDATE
        ) AS k;
    END IF;
    IF v_keys IS NULL THEN
        RETURN;
    END IF;
    PERFORM set_config('retryq.circuit_held', 'yes', TRUE);
    UPDATE _retryq_circuit AS c
    SET
        state = 'closed',
        consecutive_failures = 0,
        trips = 0,
        open_until = NULL,
        next_probe_at = NULL,
        probe_id = NULL,
        closed_at = CASE WHEN c.state = 'closed' THEN c.closed_at ELSE p_now END
    WHERE c.event_type || chr(31) || c.plugin_name = ANY(v_keys);
END;
$$;

-- Checks a circuit key given by an operator: event_type as in the queue's own
-- check; plugin_name NULL or '' both mean "items without a plugin".
CREATE FUNCTION _retryq_check_circuit_key(p_event_type text)
RETURNS void
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT _retryq_check(
        length(p_event_type) <= 200 AND p_event_type ~ '[^[:space:]]',
        'event_type', 'must be a non-blank string of at most 200 characters'
    )
$$;

-- Operator: opens a circuit now. With p_seconds NULL it stays open (forced,
-- no probes) until retry_circuit_close; with p_seconds it behaves as if it had
-- tripped: open that long, then probed. Returns TRUE.
CREATE FUNCTION retry_circuit_open(
    p_event_type text,
    p_plugin_name text DEFAULT NULL,
    p_seconds double precision DEFAULT NULL,
    p_now timestamptz DEFAULT now()
)
RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM _retryq_check_circuit_key(p_event_type);
    PERFORM _retryq_check(
        p_seconds IS NULL OR p_seconds > 0 AND p_seconds <= 31536000,
        'seconds', 'must be null (until closed) or between 0 and 31536000'
    );
    INSERT INTO _retryq_circuit AS c (
        event_type, plugin_name, state, forced, open_until, opened_at,
        times_opened
    ) VALUES (
        p_event_type, coalesce(p_plugin_name, ''), 'open', p_seconds IS NULL,
        p_now + make_interval(secs => p_seconds), p_now,
        1
    )
    ON CONFLICT (event_type, plugin_name) DO UPDATE
    SET
        state = 'open',
        forced = excluded.forced,
        open_until = excluded.open_until,
        next_probe_at = NULL,
        probe_id = NULL,
        opened_at = p_now,
        times_opened = c.times_opened + 1;
    RETURN TRUE;
END;
$$;

-- Operator: closes a circuit now and forgets its failure streak, whatever
-- its state (forced or not). False when the key has no circuit row.
CREATE FUNCTION retry_circuit_close(
    p_event_type text,
    p_plugin_name text DEFAULT NULL,
    p_now timestamptz DEFAULT now()
)
RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM _retryq_check_circuit_key(p_event_type);
    UPDATE _retryq_circuit AS c
    SET
        state = 'closed',
        forced = FALSE,
        consecutive_failures = 0,
        trips = 0,
        open_until = NULL,
        next_probe_at = NULL,
        probe_id = NULL,
        closed_at = CASE WHEN c.state = 'closed' THEN c.closed_at ELSE p_now END
    WHERE c.event_type = p_event_type
        AND c.plugin_name = coalesce(p_plugin_name, '');
    IF FOUND THEN
        PERFORM pg_notify(retry_queue_channel(), 'circuit');
    END IF;
    RETURN FOUND;
END;
$$;

-- Operator: sets a key's failure threshold (0: never trips), first cool-down
-- and longest cool-down. NULL leaves a setting as it is; p_reset first makes
-- the key follow the defaults again. With p_event_type NULL (and
-- p_plugin_name NULL) it sets the defaults that every key follows.
CREATE FUNCTION retry_circuit_configure(
    p_event_type text,
    p_plugin_name text DEFAULT NULL,
    p_failure_threshold integer DEFAULT NULL,
    p_cooldown_seconds double precision DEFAULT NULL,
    p_max_cooldown_seconds double precision DEFAULT NULL,
    p_reset boolean DEFAULT FALSE,
    p_now timestamptz DEFAULT now()
)
RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM _retryq_check(
        p_failure_threshold IS NULL
        OR p_failure_threshold BETWEEN 0 AND 1000000,
        'failure_threshold', 'must be between 0 and 1000000'
    );
    PERFORM _retryq_check(
        p_cooldown_seconds IS NULL
        OR p_cooldown_seconds > 0 AND p_cooldown_seconds <= 31536000,
        'cooldown_seconds', 'must be above 0 and at most 31536000'
    );
    PERFORM _retryq_check(
        p_max_cooldown_seconds IS NULL
        OR p_max_cooldown_seconds > 0 AND p_max_cooldown_seconds <= 31536000,
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
    INSERT INTO _retryq_circuit (event_type, plugin_name)
    VALUES (p_event_type, coalesce(p_plugin_name, ''))
    ON CONFLICT DO NOTHING;
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
    RETURN TRUE;
END;
$$;

-- One row per circuit with its settings resolved. state is what acquire
-- does now: an open circuit past its cool-down shows as half_open (its next
-- due item will be the probe).
CREATE VIEW daz_retry_queue_circuits AS
SELECT
    c.event_type,
    nullif(c.plugin_name, '') AS plugin_name,
    CASE
        WHEN c.state = 'open' AND NOT c.forced AND c.open_until <= now()
            THEN 'half_open'
        ELSE c.state
    END AS state,
    c.forced,
    c.consecutive_failures,
    coalesce(c.failure_threshold, d.failure_threshold) AS failure_threshold,
    coalesce(c.cooldown_seconds, d.cooldown_seconds) AS cooldown_seconds,
    coalesce(c.max_cooldown_seconds, d.max_cooldown_seconds)
        AS max_cooldown_seconds,
    c.trips,
    c.open_until,
    c.probe_id AS probe_item_id,
    c.opened_at,
    c.closed_at,
    c.last_failure_at,
    c.times_opened,
    c.lease_expiries
FROM _retryq_circuit AS c
CROSS JOIN _retryq_circuit_defaults AS d;

-- Pin the new and the replaced functions to the install schema, as 0001 did:
-- CREATE OR REPLACE drops a function's SET search_path.
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
                '_retryq_circuit_cooldown', '_retryq_circuit_failed',
                '_retryq_circuit_expired', '_retryq_circuit_succeeded',
                '_retryq_check_circuit_key', 'acquire_retry_items',
                'complete_retry_items', 'fail_retry_item', 'retry_circuit_open',
                'retry_circuit_close', 'retry_circuit_configure'
            )
    LOOP
        EXECUTE format(
            'ALTER FUNCTION %s SET search_path = %I, pg_temp',
            v_fn, current_schema()
        );
    END LOOP;
END;
$$;

-- ---- 0003_roles (least privilege) ----

-- retryq least privilege: three NOLOGIN group roles that deployers grant to
-- their login roles.
--   retryq_producer  the guide's INSERT (with its RETURNING id, event_id) and
--                    the enqueue functions; nothing else.
--   retryq_worker    acquire, complete, fail, extend, release; SELECT on the
--                    queue and the circuits view (the Python worker reads
--                    them); no UPDATE, DELETE, requeue or cleanup.
--   retryq_admin     requeue, cleanup, circuit control; reads the queue, the
--                    archive and the views.
-- Every function that touches the tables runs as its owner (SECURITY DEFINER,
-- search_path pinned by 0001/0002), so the roles need no table rights beyond
-- the above; PUBLIC loses EXECUTE on every retryq function.
-- Roles belong to the whole cluster: they are created only when missing, and
-- installing needs CREATEROLE unless a DBA created them beforehand.

DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY[
        'retryq_producer', 'retryq_worker', 'retryq_admin'
    ] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles AS r WHERE r.rolname = v_role) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                -- created meanwhile by an install into another database
                NULL;
            END;
        END IF;
    END LOOP;
END;
$$;

DO $$
DECLARE
    v_fn regprocedure;
    v_name text;
    v_schema text := current_schema();
BEGIN
    EXECUTE format(
        'GRANT USAGE ON SCHEMA %I TO retryq_producer, retryq_worker, retryq_admin',
        v_schema
    );
    FOR v_fn, v_name IN
        SELECT p.oid::regprocedure, p.proname
        FROM pg_proc AS p
        WHERE p.pronamespace = (
            SELECT n.oid FROM pg_namespace AS n WHERE n.nspname = v_schema
        )
            AND (
                p.proname LIKE '\_retryq\_%'
                OR p.proname IN (
                    'retry_queue_channel', 'enqueue_retry_item',
                    'enqueue_retry_items', 'acquire_retry_items',
                    'complete_retry_item', 'complete_retry_items',
                    'fail_retry_item', 'extend_retry_lock',
                    'release_retry_items', 'requeue_dead_letter_items',
                    'cleanup_retry_queue', 'retry_circuit_open',
                    'retry_circuit_close', 'retry_circuit_configure'
                )
            )
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', v_fn);
        -- the LISTEN channel's name; the insert trigger calls it too
        IF v_name = 'retry_queue_channel' THEN
            EXECUTE format(
                'GRANT EXECUTE ON FUNCTION %s'
                ' TO retryq_producer, retryq_worker, retryq_admin',
                v_fn
            );
        ELSIF v_name NOT LIKE '\_retryq\_%' THEN
            EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER', v_fn);
            EXECUTE format(
                'GRANT EXECUTE ON FUNCTION %s TO %I', v_fn,
                CASE
                    WHEN v_name IN ('enqueue_retry_item', 'enqueue_retry_items')
                        THEN 'retryq_producer'
                    WHEN v_name IN (
                        'acquire_retry_items', 'complete_retry_item',
                        'complete_retry_items', 'fail_retry_item',
                        'extend_retry_lock', 'release_retry_items'
                    ) THEN 'retryq_worker'
                    ELSE 'retryq_admin'
                END
            );
        END IF;
    END LOOP;
END;
$$;

-- The guide's INSERT ... RETURNING id, event_id needs SELECT on exactly those
-- two columns, and the id default needs the sequence.
GRANT INSERT ON daz_retry_queue TO retryq_producer;
GRANT SELECT (id, event_id) ON daz_retry_queue TO retryq_producer;
GRANT USAGE ON SEQUENCE daz_retry_queue_id_seq TO retryq_producer;

-- The queue and its circuits: the Python worker reads the queue to know how
-- long to sleep, and its --metrics-port serves the queue's metrics too.
GRANT SELECT ON daz_retry_queue, daz_retry_queue_circuits TO retryq_worker;

GRANT SELECT ON daz_retry_queue, daz_retry_queue_archive TO retryq_admin;
GRANT SELECT ON daz_retry_queue_stats, daz_retry_queue_alerts,
daz_retry_queue_circuits TO retryq_admin;

-- retryq: purge_dead_letter_items, so that deleting dead letters for good is
-- a function retryq_admin may call, like requeue, rather than a DELETE that
-- needs table rights.

-- Deletes dead letters for good (no archive copy), chosen by the same filters
-- as requeue_dead_letter_items; at least one filter is required. Pending,
-- processing and completed items are never touched. Rows another session holds
-- (a requeue or a cleanup under way) are skipped, not waited for. Returns how
-- many were deleted.
CREATE FUNCTION purge_dead_letter_items(
    p_item_ids bigint[] DEFAULT NULL,
    p_event_type text DEFAULT NULL,
    p_plugin_name text DEFAULT NULL,
    p_error_code text DEFAULT NULL,
    p_dead_before timestamptz DEFAULT NULL
)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
AS $$
DECLARE
    v_count integer;
BEGIN
    PERFORM _retryq_check(
        num_nonnulls(
            p_item_ids, p_event_type, p_plugin_name, p_error_code,
            p_dead_before
        ) > 0,
        'item_ids',
        'give item_ids, event_type, plugin_name, error_code or dead_before'
    );
    WITH doomed AS (
        SELECT f.id
        FROM _retryq_finished AS f
        WHERE f.status = 'dead_letter'
            AND (p_item_ids IS NULL OR f.id = ANY(p_item_ids))
            AND (p_event_type IS NULL OR f.event_type = p_event_type)
            AND (p_plugin_name IS NULL OR f.plugin_name = p_plugin_name)
            AND (p_error_code IS NULL OR f.last_error_code = p_error_code)
            AND (p_dead_before IS NULL OR f.dead_lettered_at < p_dead_before)
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM _retryq_finished AS f
    USING doomed AS d
    WHERE f.id = d.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

DO $$
BEGIN
    EXECUTE format(
        'ALTER FUNCTION purge_dead_letter_items('
        'bigint[], text, text, text, timestamptz) SET search_path = %I, pg_temp',
        current_schema()
    );
END;
$$;

REVOKE EXECUTE ON FUNCTION purge_dead_letter_items(
    bigint[], text, text, text, timestamptz
) FROM public;

GRANT EXECUTE ON FUNCTION purge_dead_letter_items(
    bigint[], text, text, text, timestamptz
) TO retryq_admin;
