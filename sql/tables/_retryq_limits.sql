-- The size bounds, in one row, read once per inserting statement (and by a
-- function only when a value passes a bound every setting allows, so that the
-- hot path never reads it). The owner changes them with an UPDATE, e.g.
--   UPDATE _retryq_limits SET max_event_data_bytes = 4194304;
-- A value over its bound is refused with SQLSTATE 54000
-- (program_limit_exceeded) or 22001 (a text too long), naming the field.
CREATE TABLE _retryq_limits (
    singleton boolean PRIMARY KEY DEFAULT TRUE,
    -- event_data and event_metadata, in jsonb's binary size (pg_column_size)
    max_event_data_bytes integer NOT NULL DEFAULT 16777216,
    max_event_metadata_bytes integer NOT NULL DEFAULT 65536,
    -- channel_name, plugin_name, correlation_id, and fail's error_code
    max_text_length integer NOT NULL DEFAULT 1000,
    -- fail_retry_item's error_msg (the Python worker sends at most 4000)
    max_error_message_length integer NOT NULL DEFAULT 65536,
    max_tags integer NOT NULL DEFAULT 100,
    max_tag_length integer NOT NULL DEFAULT 200,
    -- the id arrays of complete, release, requeue, purge and list
    max_item_ids integer NOT NULL DEFAULT 100000,
    -- enqueue_retry_items' array
    max_items integer NOT NULL DEFAULT 100000,
    -- an item's error_history keeps its newest entries, at most this many
    -- (read only when a history is at the floor; see _retryq_history_add)
    max_error_history integer NOT NULL DEFAULT 100,
    CONSTRAINT _retryq_limits_singleton_check CHECK (singleton),
    -- the floors are what the functions check without reading this row
    -- (a batch of 1000 ids, an error code of 200 characters, ...)
    CONSTRAINT _retryq_limits_max_event_data_bytes_check CHECK (
        max_event_data_bytes BETWEEN 1024 AND 268435456
    ),
    CONSTRAINT _retryq_limits_max_event_metadata_bytes_check CHECK (
        max_event_metadata_bytes BETWEEN 1024 AND 268435456
    ),
    CONSTRAINT _retryq_limits_max_text_length_check CHECK (
        max_text_length BETWEEN 200 AND 1000000
    ),
    CONSTRAINT _retryq_limits_max_error_message_length_check CHECK (
        max_error_message_length BETWEEN 1000 AND 10000000
    ),
    CONSTRAINT _retryq_limits_max_tags_check CHECK (max_tags BETWEEN 1 AND 100000),
    CONSTRAINT _retryq_limits_max_tag_length_check CHECK (
        max_tag_length BETWEEN 1 AND 1000000
    ),
    CONSTRAINT _retryq_limits_max_item_ids_check CHECK (
        max_item_ids BETWEEN 1000 AND 100000000
    ),
    CONSTRAINT _retryq_limits_max_items_check CHECK (
        max_items BETWEEN 1 AND 100000000
    ),
    CONSTRAINT _retryq_limits_max_error_history_check CHECK (
        max_error_history BETWEEN 10 AND 100000
    )
);

INSERT INTO _retryq_limits (singleton) VALUES (TRUE);

-- retryq:undo
DROP TABLE _retryq_limits;
