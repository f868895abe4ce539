-- Adds many items in one statement. p_items is a JSON array of objects whose
-- keys are enqueue_retry_item's parameter names without the p_ prefix; absent
-- keys, and keys whose value is JSON null, take the same defaults. A value of
-- the wrong JSON type (anything but a number for a numeric key, a fraction
-- such as 3.5 for max_retries or priority, an object, array or boolean for a
-- text key or among the tags; a number for a text key is taken as its text)
-- is refused with 22023 naming its key. JSON has one kind of number: 5.0 is
-- the integer 5, as 5 and 5e0 are. A number no column can hold (2^31 for
-- max_retries or priority, 1e400 for a float) is refused with 22003 naming
-- its key and the key's rule. At most _retryq_limits.max_items items.
-- Returns one row per item, in input order: the new item's id and event_id,
-- deduplicated false. An item with a dedupe_key (enqueue_retry_item's rule)
-- that a live item holds adds nothing and returns that item, deduplicated
-- true; of several items with one key in the batch, the first is added (or
-- deduplicated against the live one) and the later ones return it,
-- deduplicated true.
-- Every refusal of an element names it by its 0-based index: the message
-- starts 'retryq: item N: ' (then the usual text; SQLSTATE, column and
-- constraint stay those of the refusal). N is the first element that makes a
-- prefix of the batch fail (found on the refusal path only, by bisecting the
-- batch in rolled-back subtransactions), so a batch with several bad items
-- names the first.
CREATE OR REPLACE FUNCTION enqueue_retry_items(
    p_items jsonb,
    p_now timestamptz DEFAULT now()
)
RETURNS TABLE (id bigint, event_id uuid, deduplicated boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET jit = off
SET search_path FROM CURRENT
AS $$
DECLARE
    v_known constant text[] := ARRAY[
        'event_type', 'event_data', 'channel_name', 'plugin_name',
        'event_metadata', 'max_retries', 'retry_delay_seconds',
        'backoff_multiplier', 'priority', 'correlation_id', 'tags',
        'delay_seconds', 'max_retry_delay_seconds', 'retry_jitter',
        'dedupe_key'
    ];
    -- the text keys: a JSON string (or number, taken as its text) or null
    v_text_keys constant text[] := ARRAY[
        'event_type', 'channel_name', 'plugin_name', 'correlation_id',
        'dedupe_key', 'tags'
    ];
    -- the numeric keys: a JSON number or null; whole for the integer ones
    v_number_keys constant text[] := ARRAY[
        'max_retries', 'retry_delay_seconds', 'backoff_multiplier', 'priority',
        'delay_seconds', 'max_retry_delay_seconds', 'retry_jitter'
    ];
    v_problem text;
    v_unknown text;
    v_key text;
    v_value jsonb;
    v_ids bigint[];
    v_event_ids uuid[];
    v_deduplicated boolean[];
    v_constraint text;
    v_state text;
    v_message text;
    v_detail text;
    v_hint text;
    v_column text;
    v_table text;
    v_schema text;
    v_datatype text;
    v_lo integer;
    v_hi integer;
    v_mid integer;
BEGIN
    -- the server's clock unless the owner moves it (see _retryq_clock)
    IF p_now IS NULL OR p_now = now() THEN
        p_now := clock_timestamp();
    ELSE
        p_now := _retryq_clock(p_now);
    END IF;
    PERFORM _retryq_check(
        pg_catalog.jsonb_typeof(p_items) = 'array', 'items', 'must be a JSON array'
    );
    IF pg_catalog.jsonb_array_length(p_items) > 1000 THEN
        PERFORM _retryq_check_limit('items', pg_catalog.jsonb_array_length(p_items));
    END IF;
    -- The refusals of an element, from here on, are named by its index in
    -- the handler at the end of this block.
    BEGIN
        -- The values are converted to their columns' types below; a value that
        -- does not convert is named in the handler at the end, so that the usual
        -- call pays no pass over every key.
        -- One pass over the elements finds the first that is not an object, has
        -- a key we do not know (a misspelt key would silently fall back to its
        -- default), an object, array or boolean for a text key or among the tags
        -- (which the conversion would take as its JSON text: {"x": 1} as an event
        -- type), anything but a number for a numeric key (the conversion would
        -- take "5" and "NaN"), a fraction for an integer key, or an out-of-range
        -- delay; the table's constraints check the rest.
        SELECT
            CASE
                WHEN pg_catalog.jsonb_typeof(e.v) <> 'object' THEN 'not_object'
                WHEN e.v - v_known <> '{}' THEN 'unknown_key'
                WHEN w.key IS NOT NULL THEN 'not_text'
                WHEN x.key IS NOT NULL THEN x.problem
                ELSE 'delay_seconds'
            END,
            CASE
                WHEN pg_catalog.jsonb_typeof(e.v) = 'object' AND e.v - v_known <> '{}'
                    THEN (SELECT pg_catalog.min(k) FROM pg_catalog.jsonb_object_keys(e.v - v_known) AS k)
                ELSE coalesce(w.key, x.key)
            END
        INTO v_problem, v_unknown
        FROM pg_catalog.jsonb_array_elements(p_items) AS e (v)
        LEFT JOIN LATERAL (
            SELECT t.key
            FROM pg_catalog.unnest(v_text_keys) WITH ORDINALITY AS t (key, n)
            WHERE CASE
                WHEN t.key = 'tags' THEN
                    pg_catalog.jsonb_typeof(e.v -> t.key) = 'array'
                    AND EXISTS (
                        SELECT 1 FROM pg_catalog.jsonb_array_elements(e.v -> t.key) AS g (v)
                        WHERE pg_catalog.jsonb_typeof(g.v) IN ('object', 'array', 'boolean')
                    )
                ELSE pg_catalog.jsonb_typeof(e.v -> t.key) IN ('object', 'array', 'boolean')
            END
            ORDER BY t.n
            LIMIT 1
        ) AS w ON TRUE
        LEFT JOIN LATERAL (
            SELECT
                t.key,
                CASE
                    WHEN pg_catalog.jsonb_typeof(e.v -> t.key) = 'number' THEN 'not_whole'
                    ELSE 'not_number'
                END AS problem
            FROM pg_catalog.unnest(v_number_keys) WITH ORDINALITY AS t (key, n)
            WHERE CASE pg_catalog.jsonb_typeof(e.v -> t.key)
                WHEN 'null' THEN FALSE
                -- max_retries and priority: a whole number (5.0 is 5)
                WHEN 'number' THEN t.n IN (1, 4)
                    AND (e.v -> t.key)::numeric <> pg_catalog.trunc((e.v -> t.key)::numeric)
                ELSE (e.v -> t.key) IS NOT NULL
            END
            ORDER BY t.n
            LIMIT 1
        ) AS x ON TRUE
        WHERE pg_catalog.jsonb_typeof(e.v) <> 'object'
            OR e.v - v_known <> '{}'
            OR w.key IS NOT NULL
            OR x.key IS NOT NULL
            -- numeric: 1e400 is a JSON number, beyond double precision
            OR CASE
                WHEN pg_catalog.jsonb_typeof(e.v -> 'delay_seconds'::text) = 'number'
                    THEN (e.v -> 'delay_seconds'::text)::numeric NOT BETWEEN 0 AND 31536000
            END
        LIMIT 1;
        PERFORM _retryq_check(
            v_problem IS DISTINCT FROM 'not_object',
            'items', 'every element must be a JSON object'
        );
        PERFORM _retryq_check(
            v_problem IS DISTINCT FROM 'unknown_key',
            'items', pg_catalog.format('unknown key %L', v_unknown)
        );
        IF v_problem = 'not_text' THEN
            PERFORM _retryq_check(
                FALSE, v_unknown,
                CASE
                    WHEN v_unknown = 'tags' THEN 'must be an array of strings'
                    ELSE 'must be a string'
                END
            );
        END IF;
        IF v_problem IN ('not_number', 'not_whole') THEN
            PERFORM _retryq_check(
                FALSE, v_unknown,
                CASE
                    WHEN v_problem = 'not_whole' THEN 'must be a whole number'
                    ELSE 'must be a JSON number'
                END
            );
        END IF;
        PERFORM _retryq_check(
            v_problem IS DISTINCT FROM 'delay_seconds',
            'delay_seconds', 'must be between 0 and 31536000'
        );
        IF NOT EXISTS (
            SELECT 1 FROM pg_catalog.jsonb_array_elements(p_items) AS e (v)
            WHERE e.v ->> 'dedupe_key'::text IS NOT NULL
        ) THEN
            RETURN QUERY
            WITH src AS (
                SELECT r.*, o.n
                FROM pg_catalog.jsonb_array_elements(p_items) WITH ORDINALITY AS o (v, n),
                    pg_catalog.jsonb_to_record(o.v) AS r (
                        event_type text, event_data jsonb, channel_name text,
                        plugin_name text, event_metadata jsonb, max_retries numeric,
                        retry_delay_seconds double precision,
                        backoff_multiplier double precision, priority numeric,
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
                    coalesce(r.event_metadata, '{}'), coalesce(r.max_retries::integer, 3),
                    coalesce(r.retry_delay_seconds, 60),
                    coalesce(r.backoff_multiplier, 2.0), coalesce(r.priority::integer, 5),
                    r.correlation_id, coalesce(r.tags, '{}'),
                    coalesce(r.max_retry_delay_seconds, 86400),
                    coalesce(r.retry_jitter, 0), p_now,
                    p_now + pg_catalog.make_interval(secs => coalesce(r.delay_seconds, 0))
                FROM src AS r
                ORDER BY r.n
                RETURNING q.id, q.event_id
            )
            -- ids come from one sequence in insertion order, so sorting restores input order
            SELECT a.id, a.event_id, FALSE FROM added AS a ORDER BY a.id;
            RETURN;
        END IF;
        -- With keys: as enqueue_retry_item, the unique index decides between
        -- concurrent producers, and the round that lost to one (23505) runs again
        -- with a new snapshot, in which the winner's item is live.
        FOR v_round IN 1..3 LOOP
            BEGIN
                WITH src AS (
                    SELECT
                        r.*, o.n,
                        pg_catalog.row_number() OVER (
                            PARTITION BY r.dedupe_key ORDER BY o.n
                        ) AS key_rank
                    FROM pg_catalog.jsonb_array_elements(p_items) WITH ORDINALITY AS o (v, n),
                        pg_catalog.jsonb_to_record(o.v) AS r (
                            event_type text, event_data jsonb, channel_name text,
                            plugin_name text, event_metadata jsonb, max_retries numeric,
                            retry_delay_seconds double precision,
                            backoff_multiplier double precision, priority numeric,
                            correlation_id text, tags text[],
                            delay_seconds double precision,
                            max_retry_delay_seconds double precision,
                            retry_jitter double precision, dedupe_key text
                        )
                ),
                -- the live items that hold one of the batch's keys
                live AS (
                    SELECT a.dedupe_key, a.id, a.event_id
                    FROM _retryq_active AS a
                    WHERE a.dedupe_key = ANY(ARRAY(
                        SELECT r.dedupe_key FROM src AS r WHERE r.dedupe_key IS NOT NULL
                    ))
                ),
                -- the items to add: no key, or the first of its key in the batch
                -- while no live item holds it; k numbers them in input order
                fresh AS (
                    SELECT r.*, pg_catalog.row_number() OVER (ORDER BY r.n) AS k
                    FROM src AS r
                    WHERE r.dedupe_key IS NULL
                        OR (
                            r.key_rank = 1
                            AND NOT EXISTS (
                                SELECT 1 FROM live AS l WHERE l.dedupe_key = r.dedupe_key
                            )
                        )
                ),
                added AS (
                    INSERT INTO daz_retry_queue AS q (
                        event_type, channel_name, plugin_name, event_data,
                        event_metadata, max_retries, retry_delay_seconds,
                        backoff_multiplier, priority, correlation_id, tags,
                        max_retry_delay_seconds, retry_jitter, created_at,
                        next_retry_at, dedupe_key
                    )
                    SELECT
                        r.event_type, r.channel_name, r.plugin_name, r.event_data,
                        coalesce(r.event_metadata, '{}'), coalesce(r.max_retries::integer, 3),
                        coalesce(r.retry_delay_seconds, 60),
                        coalesce(r.backoff_multiplier, 2.0), coalesce(r.priority::integer, 5),
                        r.correlation_id, coalesce(r.tags, '{}'),
                        coalesce(r.max_retry_delay_seconds, 86400),
                        coalesce(r.retry_jitter, 0), p_now,
                        p_now + pg_catalog.make_interval(secs => coalesce(r.delay_seconds, 0)),
                        r.dedupe_key
                    FROM fresh AS r
                    ORDER BY r.n
                    RETURNING q.id, q.event_id, q.dedupe_key
                ),
                -- ids come from one sequence in insertion order: the k-th new id
                -- is the k-th fresh item's
                numbered AS (
                    SELECT a.*, pg_catalog.row_number() OVER (ORDER BY a.id) AS k
                    FROM added AS a
                ),
                -- per item: its new row, else the live holder of its key, else
                -- the new row of its key's first item in the batch
                outcome AS (
                    SELECT
                        r.n,
                        coalesce(m.id, l.id, h.id) AS id,
                        coalesce(m.event_id, l.event_id, h.event_id) AS event_id,
                        m.id IS NULL AS deduplicated
                    FROM src AS r
                    LEFT JOIN fresh AS f ON f.n = r.n
                    LEFT JOIN numbered AS m ON m.k = f.k
                    LEFT JOIN live AS l ON m.id IS NULL AND l.dedupe_key = r.dedupe_key
                    LEFT JOIN numbered AS h ON m.id IS NULL AND h.dedupe_key = r.dedupe_key
                )
                SELECT
                    pg_catalog.array_agg(o.id ORDER BY o.n),
                    pg_catalog.array_agg(o.event_id ORDER BY o.n),
                    pg_catalog.array_agg(o.deduplicated ORDER BY o.n)
                INTO v_ids, v_event_ids, v_deduplicated
                FROM outcome AS o;
                RETURN QUERY
                SELECT u.id, u.event_id, u.deduplicated
                FROM ROWS FROM (
                    pg_catalog.unnest(v_ids),
                    pg_catalog.unnest(v_event_ids),
                    pg_catalog.unnest(v_deduplicated)
                ) WITH ORDINALITY AS u (id, event_id, deduplicated, n)
                ORDER BY u.n;
                RETURN;
            EXCEPTION WHEN unique_violation THEN
                GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME;
                IF v_constraint IS DISTINCT FROM 'daz_retry_queue_dedupe_key_idx' THEN
                    RAISE;
                END IF;
            END;
        END LOOP;
        RAISE EXCEPTION
            'retryq: a dedupe_key of items is held by an item this transaction cannot see'
            USING ERRCODE = 'serialization_failure', COLUMN = 'dedupe_key',
                HINT = 'Retry the transaction (or enqueue under READ COMMITTED).';
    EXCEPTION
        WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded THEN
            GET STACKED DIAGNOSTICS
                v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
                v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT,
                v_column = COLUMN_NAME, v_constraint = CONSTRAINT_NAME,
                v_table = TABLE_NAME, v_schema = SCHEMA_NAME,
                v_datatype = PG_DATATYPE_NAME;
            IF v_state IN ('22P02', '22003') THEN
                -- The check above let through only JSON numbers for the
                -- numeric keys: one of them is beyond its column's type (2^31
                -- for an integer, 1e400 for a float), else a text key or the
                -- tags did not convert. The first such key of the first such
                -- item:
                SELECT k.key, k.value INTO v_key, v_value
                FROM pg_catalog.jsonb_array_elements(p_items) AS e (v)
                CROSS JOIN LATERAL pg_catalog.jsonb_each(e.v) AS k
                WHERE pg_catalog.jsonb_typeof(k.value) <> 'null'
                    AND NOT CASE
                        WHEN k.key IN (
                            'event_type', 'channel_name', 'plugin_name', 'correlation_id',
                            'dedupe_key'
                        ) THEN pg_catalog.jsonb_typeof(k.value) IN ('string', 'number')
                        WHEN k.key IN ('event_data', 'event_metadata') THEN TRUE
                        WHEN k.key = 'tags' THEN
                            CASE
                                WHEN pg_catalog.jsonb_typeof(k.value) <> 'array' THEN FALSE
                                ELSE NOT EXISTS (
                                    SELECT 1
                                    FROM pg_catalog.jsonb_array_elements(k.value) AS t (v)
                                    WHERE pg_catalog.jsonb_typeof(t.v)
                                        NOT IN ('string', 'number', 'null')
                                )
                            END
                        WHEN pg_catalog.jsonb_typeof(k.value) <> 'number' THEN FALSE
                        WHEN k.key IN ('max_retries', 'priority') THEN
                            k.value::numeric BETWEEN -2147483648 AND 2147483647
                        -- double precision's range (below 2.5e-324 a number
                        -- that is not 0 underflows, which PostgreSQL refuses too)
                        ELSE pg_catalog.abs(k.value::numeric) <= 1.7976931348623157e308
                            AND (
                                k.value::numeric = 0
                                OR pg_catalog.abs(k.value::numeric) >= 2.5e-324
                            )
                    END
                LIMIT 1;
                IF v_key IN (
                    'event_type', 'channel_name', 'plugin_name', 'correlation_id',
                    'dedupe_key', 'tags'
                ) THEN
                    v_state := '22023';  -- invalid_parameter_value
                    v_message := pg_catalog.format(
                        'retryq: invalid %s: must be %s', v_key,
                        CASE WHEN v_key = 'tags' THEN 'an array of strings' ELSE 'a string' END
                    );
                ELSIF v_key IS NOT NULL THEN
                    -- the key's rule, as its column's CHECK states it
                    v_state := '22003';  -- numeric_value_out_of_range
                    v_message := pg_catalog.format(
                        'retryq: invalid %s: %s (must be between %s)', v_key,
                        CASE
                            WHEN v_key NOT IN ('max_retries', 'priority')
                                AND pg_catalog.abs(v_value::numeric) < 1
                                THEN 'too close to 0 for double precision'
                            ELSE 'out of range'
                        END,
                        CASE v_key
                            WHEN 'priority' THEN '1 and 10'
                            WHEN 'max_retries' THEN '0 and 1000'
                            WHEN 'backoff_multiplier' THEN '1 and 10'
                            WHEN 'retry_jitter' THEN '0 and 1'
                            ELSE '0 and 31536000'
                        END
                    );
                END IF;
                IF v_key IS NOT NULL THEN
                    v_column := v_key;
                    v_detail := '';
                    v_hint := '';
                    v_constraint := '';
                    v_table := '';
                    v_schema := '';
                    v_datatype := '';
                END IF;
            END IF;
            IF pg_catalog.current_setting('retryq.bisecting', TRUE) = 'on' THEN
                -- a probe of the bisection below: the refusal as it is
                IF v_key IS NULL THEN
                    RAISE;
                END IF;
                RAISE EXCEPTION USING MESSAGE = v_message, ERRCODE = v_state, COLUMN = v_column;
            END IF;
            -- The first element that makes a prefix of the batch fail: a
            -- prefix fails, then so does every longer one, and its refusal is
            -- about its last element. Each probe is this function on a
            -- prefix, in a subtransaction undone by the probe's own refusal or
            -- by RQ000 when the prefix passes. Elements refused on their own
            -- rules are named so; the prefix, not the element alone, keeps
            -- the batch's meaning (a later item of a dedupe_key adds nothing
            -- and is not checked). Runs only on this refusal path.
            v_lo := 0;
            v_hi := pg_catalog.jsonb_array_length(p_items) - 1;
            WHILE v_lo < v_hi LOOP
                v_mid := (v_lo + v_hi) / 2;
                BEGIN
                    PERFORM pg_catalog.set_config('retryq.bisecting', 'on', TRUE);
                    -- both arguments: the exact signature, now() the server's clock
                    PERFORM enqueue_retry_items((
                        SELECT pg_catalog.jsonb_agg(o.v ORDER BY o.n)
                        FROM pg_catalog.jsonb_array_elements(p_items) WITH ORDINALITY AS o (v, n)
                        WHERE o.n <= v_mid + 1
                    ), now());
                    RAISE EXCEPTION USING ERRCODE = 'RQ000';
                EXCEPTION
                    WHEN SQLSTATE 'RQ000' THEN
                        v_lo := v_mid + 1;
                    WHEN data_exception OR integrity_constraint_violation
                        OR program_limit_exceeded THEN
                        v_hi := v_mid;
                        GET STACKED DIAGNOSTICS
                            v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
                            v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT,
                            v_column = COLUMN_NAME, v_constraint = CONSTRAINT_NAME,
                            v_table = TABLE_NAME, v_schema = SCHEMA_NAME,
                            v_datatype = PG_DATATYPE_NAME;
                END;
            END LOOP;
            v_message := pg_catalog.format(
                'retryq: item %s: %s', v_hi, pg_catalog.regexp_replace(v_message, '^retryq: ', '')
            );
            -- the refusal's own fields (an absent one stays absent where the
            -- refusal is one of retryq's: RAISE cannot set a field to NULL)
            IF v_detail = '' AND v_hint = '' AND v_schema = '' AND v_datatype = '' THEN
                IF v_constraint <> '' THEN
                    RAISE EXCEPTION USING MESSAGE = v_message, ERRCODE = v_state,
                        COLUMN = v_column, CONSTRAINT = v_constraint, TABLE = v_table;
                ELSIF v_table <> '' THEN
                    RAISE EXCEPTION USING MESSAGE = v_message, ERRCODE = v_state,
                        COLUMN = v_column, TABLE = v_table;
                ELSIF v_column <> '' THEN
                    RAISE EXCEPTION USING MESSAGE = v_message, ERRCODE = v_state,
                        COLUMN = v_column;
                END IF;
            END IF;
            RAISE EXCEPTION USING MESSAGE = v_message, ERRCODE = v_state,
                DETAIL = v_detail, HINT = v_hint, COLUMN = v_column,
                CONSTRAINT = v_constraint, TABLE = v_table, SCHEMA = v_schema,
                DATATYPE = v_datatype;
    END;
END;
$$;

REVOKE EXECUTE ON FUNCTION enqueue_retry_items FROM public;
GRANT EXECUTE ON FUNCTION enqueue_retry_items TO retryq_producer;
