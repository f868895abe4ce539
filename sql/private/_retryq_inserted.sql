-- After every statement that inserts into daz_retry_queue (the guide's INSERT,
-- add_many's COPY, the enqueue functions), over the statement's new rows at
-- once: a refusal here undoes the whole statement, so nothing is written.
-- 0. A finished row (the owner's: only the owner may set a status) is held to
--    the table's rules by _retryq_finished_row_ok, refused (23514) under the
--    active partition's constraint names; the finished partition has no CHECK
--    of its own (see tables/_retryq_finished.sql). A pending row costs the
--    test of its status.
-- 1. Sizes, against _retryq_limits: event_data and event_metadata (54000
--    program_limit_exceeded), channel_name, plugin_name and correlation_id
--    (22001 string_data_right_truncation), tags: their count (54000), one
--    dimension and no NULL element (22023), each tag's length (22001). A
--    dedupe_key: at most 200 characters (22001) and not blank (22023); a
--    plugin_name other than '' not blank (22023, _retryq_check_plugin_name).
-- 2. Ids come from the server: an id above what daz_retry_queue_id_seq has
--    handed out, or not positive, is refused (22023), so that nobody can take
--    an id the sequence will give someone later. Only the owner may name an
--    id at all: a producer's rows take the default.
-- 3. An id is unique for the item's whole life: one already used by a finished
--    or an archived item (an explicit id, or a sequence that went back after
--    a restore) is refused with 23505 naming id. The active partition's
--    primary key refuses a live one. Each check is first one index probe over
--    the statement's id range, which new ids (above every finished one) pass.
-- 4. Wakes listening workers once per statement, not once per row.
-- SECURITY DEFINER: a producer reads neither the finished rows, the archive,
-- the sequence nor the limits.
CREATE OR REPLACE FUNCTION _retryq_inserted()
RETURNS trigger
LANGUAGE plpgsql
-- No JIT: the rules' estimate (function calls per row, the limits row
-- unanalyzed) passed jit_above_cost at 1,000 rows, and compiling took 340 ms
-- of a 370 ms COPY (add_many went from 19,000 to 4,400 items a second)
SET jit = off
-- Generic plans: the id probes below are key-range lookups whatever the
-- range, and a custom plan for them per inserting statement cost the guide's
-- INSERT 2.4% of its server work (callgrind, 100 rows per statement)
SET plan_cache_mode = force_generic_plan
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    v_lo bigint;
    v_hi bigint;
    v_field text;
    v_limit integer;
    v_last bigint;
    v_used bigint;
BEGIN
    SELECT pg_catalog.min(n.id), pg_catalog.max(n.id), pg_catalog.min(n.problem)
    INTO v_lo, v_hi, v_field
    FROM (
        SELECT a.id, p.problem
        FROM added AS a
        CROSS JOIN _retryq_limits AS l
        CROSS JOIN LATERAL (
            SELECT CASE
                -- raises for a row that breaks a rule, else goes on
                WHEN a.status <> 'pending'::text AND a.status <> 'processing'::text
                    AND NOT _retryq_finished_row_ok(
                        a.status, a.event_type, a.priority, a.max_retries,
                        a.retry_count, a.retry_delay_seconds, a.backoff_multiplier,
                        a.max_retry_delay_seconds, a.retry_jitter, a.event_data,
                        a.event_metadata, a.locked_by, a.locked_until,
                        a.completed_at, a.dead_lettered_at
                    ) THEN NULL
                WHEN pg_catalog.pg_column_size(a.event_data) > l.max_event_data_bytes
                    THEN 'event_data'
                WHEN pg_catalog.pg_column_size(a.event_metadata) > l.max_event_metadata_bytes
                    THEN 'event_metadata'
                WHEN pg_catalog.length(a.channel_name) > l.max_text_length
                    THEN 'channel_name'
                WHEN pg_catalog.length(a.plugin_name) > l.max_text_length THEN 'plugin_name'
                -- not blank (an ordinary name is decided by its first character)
                WHEN NOT pg_catalog.ascii(a.plugin_name) BETWEEN 33 AND 126
                    AND a.plugin_name <> ''::text AND _retryq_blank(a.plugin_name)
                    THEN 'plugin_name:blank'
                WHEN pg_catalog.length(a.correlation_id) > l.max_text_length
                    THEN 'correlation_id'
                WHEN pg_catalog.length(a.dedupe_key) > 200 THEN 'dedupe_key:length'
                WHEN _retryq_blank(a.dedupe_key) THEN 'dedupe_key:blank'
                WHEN pg_catalog.cardinality(a.tags) > l.max_tags THEN 'tags'
                WHEN pg_catalog.cardinality(a.tags) = 0 THEN NULL
                WHEN pg_catalog.array_ndims(a.tags) > 1 THEN 'tags:dimensions'
                WHEN pg_catalog.array_position(a.tags, NULL) IS NOT NULL THEN 'tags:null'
                -- no tag is longer than all of them together: the walk of
                -- the tags (a subquery per row, a twentieth of a COPY's
                -- work) only when they are long enough for one to be
                WHEN pg_catalog.length(pg_catalog.array_to_string(a.tags, ''::text))
                    > l.max_tag_length
                    AND EXISTS (
                        SELECT 1 FROM pg_catalog.unnest(a.tags) AS t (tag)
                        WHERE pg_catalog.length(t.tag) > l.max_tag_length
                    ) THEN 'tags:length'
            END AS problem
        ) AS p
    ) AS n;
    IF v_field IS NOT NULL THEN
        SELECT CASE v_field
            WHEN 'event_data' THEN l.max_event_data_bytes
            WHEN 'event_metadata' THEN l.max_event_metadata_bytes
            WHEN 'tags' THEN l.max_tags
            WHEN 'tags:length' THEN l.max_tag_length
            ELSE l.max_text_length
        END INTO v_limit
        FROM _retryq_limits AS l;
        CASE v_field
            WHEN 'event_data', 'event_metadata' THEN
                RAISE EXCEPTION
                    'retryq: invalid %: larger than % bytes (_retryq_limits.max_%_bytes)',
                    v_field, v_limit, v_field
                    USING ERRCODE = 'program_limit_exceeded', COLUMN = v_field;
            WHEN 'tags' THEN
                RAISE EXCEPTION
                    'retryq: invalid tags: more than % tags (_retryq_limits.max_tags)',
                    v_limit
                    USING ERRCODE = 'program_limit_exceeded', COLUMN = 'tags';
            WHEN 'tags:dimensions' THEN
                RAISE EXCEPTION
                    'retryq: invalid tags: must be a one-dimensional array'
                    USING ERRCODE = 'invalid_parameter_value', COLUMN = 'tags';
            WHEN 'dedupe_key:length' THEN
                RAISE EXCEPTION
                    'retryq: invalid dedupe_key: longer than 200 characters'
                    USING ERRCODE = 'string_data_right_truncation', COLUMN = 'dedupe_key';
            WHEN 'plugin_name:blank' THEN
                RAISE EXCEPTION
                    'retryq: invalid plugin_name: must not be blank (NULL or '''' for none)'
                    USING ERRCODE = 'invalid_parameter_value', COLUMN = 'plugin_name';
            WHEN 'dedupe_key:blank' THEN
                RAISE EXCEPTION 'retryq: invalid dedupe_key: must not be blank (NULL for none)'
                    USING ERRCODE = 'invalid_parameter_value', COLUMN = 'dedupe_key';
            WHEN 'tags:null' THEN
                RAISE EXCEPTION 'retryq: invalid tags: must not contain NULL'
                    USING ERRCODE = 'null_value_not_allowed', COLUMN = 'tags';
            WHEN 'tags:length' THEN
                RAISE EXCEPTION
                    'retryq: invalid tags: a tag is longer than % characters (_retryq_limits.max_tag_length)',
                    v_limit
                    USING ERRCODE = 'string_data_right_truncation', COLUMN = 'tags';
            ELSE
                RAISE EXCEPTION
                    'retryq: invalid %: longer than % characters (_retryq_limits.max_text_length)',
                    v_field, v_limit
                    USING ERRCODE = 'string_data_right_truncation', COLUMN = v_field;
        END CASE;
    END IF;
    IF v_lo IS NULL THEN
        -- no row: INSERT ... SELECT of nothing
        RETURN NULL;
    END IF;

    SELECT s.last_value - (NOT s.is_called)::integer INTO v_last
    FROM daz_retry_queue_id_seq AS s;
    IF v_lo < 1 OR v_hi > v_last THEN
        RAISE EXCEPTION
            'retryq: invalid id: % was not handed out by daz_retry_queue_id_seq (ids come from the server)',
            CASE WHEN v_lo < 1 THEN v_lo ELSE v_hi END
            USING ERRCODE = 'invalid_parameter_value', COLUMN = 'id',
                HINT = 'Leave id out: its default draws the next one.';
    END IF;

    -- (a finished row inserted directly, by the owner, finds itself in the
    -- first probe and is looked up in the active partition instead)
    IF EXISTS (
        SELECT 1 FROM _retryq_finished AS f WHERE f.id BETWEEN v_lo AND v_hi
    ) OR EXISTS (
        SELECT 1 FROM daz_retry_queue_archive AS r WHERE r.id BETWEEN v_lo AND v_hi
    ) THEN
        SELECT a.id INTO v_used
        FROM added AS a
        WHERE CASE
            WHEN a.status IN ('pending', 'processing') THEN EXISTS (
                SELECT 1 FROM _retryq_finished AS f WHERE f.id = a.id
            )
            -- the other leaf of the finished partition: each leaf's own key
            -- refuses a second row in it
            ELSE EXISTS (SELECT 1 FROM _retryq_active AS x WHERE x.id = a.id)
                OR EXISTS (
                    SELECT 1 FROM _retryq_finished AS f
                    WHERE f.id = a.id
                        AND (f.status = 'completed') <> (a.status = 'completed')
                )
        END
        OR EXISTS (SELECT 1 FROM daz_retry_queue_archive AS r WHERE r.id = a.id)
        LIMIT 1;
    END IF;
    IF v_used IS NOT NULL THEN
        RAISE EXCEPTION
            'retryq: duplicate id: % is the id of a finished or archived item',
            v_used
            USING ERRCODE = 'unique_violation', COLUMN = 'id',
                TABLE = 'daz_retry_queue', CONSTRAINT = 'daz_retry_queue_id_unique',
                HINT = 'If daz_retry_queue_id_seq went back (a restore), '
                || 'move it past every id: SELECT setval(''daz_retry_queue_id_seq'', '
                || '(SELECT max(id) FROM daz_retry_queue_archive) ...).';
    END IF;

    PERFORM pg_catalog.pg_notify(retry_queue_channel(), 'insert');
    RETURN NULL;
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_inserted FROM public;

CREATE OR REPLACE TRIGGER _retryq_inserted
AFTER INSERT ON daz_retry_queue
REFERENCING NEW TABLE AS added
FOR EACH STATEMENT EXECUTE FUNCTION _retryq_inserted();

-- retryq:undo
DROP TRIGGER _retryq_inserted ON daz_retry_queue;
DROP FUNCTION _retryq_inserted;
